"""The HTML report: well-formed, self-contained, every section for real compressions of digits_cnn,
escaped names, tables without matplotlib, the format chosen by extension, and a headless-Chromium render."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress import _report_weights
from onnxcompress._report_plots import matplotlib_available
from onnxcompress.cli import main
from onnxcompress.report import _fmt_bytes
from onnxcompress.report_html import PLOTS_HINT, render_html

MODELS = Path(__file__).resolve().parents[1] / "models"
CNN, CALIB, EVAL = MODELS / "digits_cnn.onnx", MODELS / "digits_calib.npz", MODELS / "digits_eval.npz"
ALL_SECTIONS = ("headlines", "summary", "passes", "layers", "weights", "validation", "recipe")
needs_plots = pytest.mark.skipif(
    not matplotlib_available(), reason='matplotlib is not installed: pip install "onnxcompress[report]"'
)
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed"}


class _Checker(HTMLParser):
    """Tag balance, section ids and every src/href, from the page's own markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: list[str] = []
        self.links: list[str] = []
        self.images = 0
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "img":
            self.images += 1
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_page(page: str) -> _Checker:
    """Assert the page is well-formed and self-contained; return what it holds."""
    assert page.startswith("<!DOCTYPE html>")
    c = _Checker()
    c.feed(page)
    c.close()
    assert not c.errors and not c.stack, (c.errors, c.stack)
    assert not {"script", "link", "iframe", "object"} & c.tags  # nothing to fetch, nothing to run
    assert all(v.startswith("data:") or v.startswith("#") for v in c.links), c.links
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    return c


def section(page: str, ident: str) -> str:
    m = re.search(rf'<section id="{ident}">(.*?)</section>', page, re.S)
    assert m, f"no section {ident}"
    return m.group(1)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """digits_cnn compressed by the CLI with k-means and with int8: the HTML report, and the same
    report as JSON (``--json -`` on stdout, and saved for the ``report`` subcommand)."""
    tmp = tmp_path_factory.mktemp("report_html")
    runs = {"kmeans": ["--kmeans", "4"], "quantize": ["--quantize", "static", "--prune", "0.5"]}
    out = {}
    for name, flags in runs.items():
        model, page = tmp / f"{name}.onnx", tmp / f"{name}.html"
        args = [str(CNN), "-o", str(model), *flags, "--calibration", str(CALIB), "--validate"]
        args += ["--validate-data", str(EVAL), "--report", str(page), "--json", "-", "--keep-failed"]
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            code = main(["compress", *args])
        assert code in (0, 1)  # 1: int8 + pruning may miss the default tolerance; still a report
        onnx.checker.check_model(onnx.load(str(model)))
        (tmp / f"{name}.json").write_text(stdout.getvalue())
        out[name] = (model, json.loads(stdout.getvalue()), page.read_text())
    return tmp, out


@pytest.mark.parametrize(
    "name, levels", [("kmeans", "k-means centroids"), ("quantize", "int8 grid levels used")]
)
@needs_plots
def test_cli_html_report_has_every_section(compressed, name, levels):
    _, runs = compressed
    _, report, page = runs[name]
    c = check_page(page)
    assert c.sections == list(ALL_SECTIONS)
    assert c.images >= 4  # summary, per-pass layer charts, histograms
    summary = section(page, "summary")
    for key in ("file_bytes", "gzip_bytes", "weight_bytes"):  # the report's numbers, formatted
        assert _fmt_bytes(report["before"][key]) in summary and _fmt_bytes(report["after"][key]) in summary
    # the page divides the bytes itself (size_ratio is rounded to 4 places first: 3.64496 -> 3.645)
    assert f"{report['before']['file_bytes'] / report['after']['file_bytes']:.2f}x" in summary
    layers = section(page, "layers")
    for p in report["passes"]:
        assert f"{p['pass']}: {len(p['layers'])} tensor(s)" in layers
        for s in p["layers"]:
            assert f">{s['name']}<" in layers
    weights = section(page, "weights")
    assert weights.count("<img") >= 1 and levels in page
    out = report["validation"]["outputs"][0]
    validation = section(page, "validation")
    assert (
        f"{out['cosine']:.6f}" in validation
        and ("PASS" if report["validation"]["passed"] else "FAIL") in validation
    )
    recipe = json.loads(
        re.search(r"<pre>(\{.*?)</pre>", section(page, "recipe"), re.S).group(1).replace("&quot;", '"')
    )
    assert recipe == report["recipe"]


def test_histogram_levels_are_the_decoded_codebook(compressed):
    """The centroids drawn are what onnxruntime decodes from the compressed model: one per cluster."""
    _, runs = compressed
    model, report, _ = runs["kmeans"]
    views, notes = _report_weights.weight_views(CNN, model, report["passes"], 3)
    stats = {s["name"]: s for s in report["passes"][0]["layers"]}
    assert not notes and [v.name for v in views] == [
        s[0] for s in _report_weights.worst_layers(report["passes"], 3)
    ]
    for v in views:
        assert v.channel is None and len(v.levels) == stats[v.name]["extra"]["clusters_used"]
        err = np.linalg.norm(v.original - v.decoded) / np.linalg.norm(v.original)
        assert err == pytest.approx(stats[v.name]["error"], rel=0.05)


@needs_plots
def test_report_subcommand_renders_saved_json(compressed, capsys):
    tmp, runs = compressed
    code = main(["report", str(tmp / "kmeans.json"), "-o", str(tmp / "again.html")])
    assert code == 0 and "again.html" in capsys.readouterr().out
    page = (tmp / "again.html").read_text()
    assert check_page(page).sections == list(ALL_SECTIONS) and "k-means centroids" in page
    # Not a report, a wrong output extension: one line, exit 2.
    (tmp / "other.json").write_text('{"a": 1}')
    for args in (
        ["report", str(tmp / "other.json")],
        ["report", str(tmp / "kmeans.json"), "-o", str(tmp / "x.pdf")],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err


def test_unknown_report_extension_fails_before_work(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code = main(["compress", str(CNN), "-o", str(out), "--kmeans", "4", "--report", str(tmp_path / "r.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'.txt'" in err and ".html" in err
    assert not out.exists() and not (tmp_path / "r.txt").exists()


EVIL = '<script>alert("x")</script>&<evil attr="1">'


def _synthetic_report() -> dict:
    """A report with every optional key other branches are adding, and hostile names everywhere."""
    layer = {
        "name": f"conv{EVIL}.weight",
        "op_type": "Conv",
        "shape": [8, 4, 3, 3],
        "bytes_before": 1152,
        "bytes_after": 200,
        "sparsity": 0.25,
        "bits": 4.0,
        "error": 0.05,
        "extra": {"output_error_before": 0.2, "output_error_after": 0.04, "note": EVIL},
    }
    return {
        "input": f"in{EVIL}.onnx",
        "output": "out.onnx",
        "headlines": [f"4.1x smaller {EVIL}", "accuracy 99.1% -> 99.0%"],
        "before": {
            "file_bytes": 5000,
            "gzip_bytes": 4600,
            "parameters": 1200,
            "weight_bytes": 4800,
            "sparsity": 0.0,
            "nodes": 3,
            "macs": 90000,
        },
        "after": {
            "file_bytes": 1200,
            "gzip_bytes": 1000,
            "parameters": 1200,
            "weight_bytes": 900,
            "sparsity": 0.25,
            "nodes": 7,
            "macs": 90000,
        },
        "memory": {
            "before": {"resident_bytes": 3 * 2**20, "peak_bytes": 5 * 2**20},
            "after": {"resident_bytes": 2**20, "peak_bytes": 6 * 2**20},
        },
        "recipe": {"passes": [{"pass": "kmeans", "bits": 4}]},
        "passes": [
            {
                "pass": "kmeans",
                "status": "applied",
                "modified": True,
                "seconds": 0.5,
                "metrics": {},
                "layers": [layer],
                "skipped": {f"reason {EVIL}": [f"bias{EVIL}"]},
                "notes": [EVIL],
            },
            {
                "pass": "quantize",
                "status": "rolled back",
                "reason": f"checker failed on node {EVIL}",
                "modified": False,
                "seconds": 0.1,
                "metrics": {},
                "layers": [],
                "skipped": {},
                "notes": [],
            },
        ],
        "notes": [],
        "validation": {
            "passed": True,
            "samples": 10,
            "data": "eval.npz",
            "notes": [],
            "latency": {
                "runs": 50,
                "original_ms": 2.0,
                "compressed_ms": 1.6,
                "original_p25_ms": 1.9,
                "original_p75_ms": 2.2,
                "compressed_p25_ms": 1.5,
                "compressed_p75_ms": 1.7,
            },
            "layers": {
                "samples": 2,
                "compared": 2,
                "only_original": 0,
                "only_compressed": 0,
                "first_divergent": f"t{EVIL}",
                "notes": [],
                "jumps": [{"name": f"t{EVIL}", "op_type": "Conv", "input_error": 0.0, "rel_l2": 0.1}],
                "layers": [{"name": f"t{EVIL}", "rel_l2": 0.1}, {"name": "y", "rel_l2": 0.08}],
            },
            "outputs": [
                {
                    "name": f"y{EVIL}",
                    "dtype": "float32",
                    "shape": [1, 10],
                    "passed": True,
                    "max_abs": 0.1,
                    "mean_abs": 0.01,
                    "rel_l2": 0.02,
                    "cosine": 0.9995,
                    "snr_db": 33.0,
                    "top1_agreement": 1.0,
                    "accuracy_original": 0.991,
                    "accuracy_compressed": 0.99,
                    "checks": [{"criterion": "min_cosine", "passed": True, "detail": EVIL}],
                    "notes": [],
                }
            ],
        },
        "auto": {
            "front": [
                {"objective": 1200, "fidelity": 0.999, "chosen": True, "plan": EVIL},
                {"objective": 900, "fidelity": 0.98, "chosen": False},
            ],
            "plan": {f"conv{EVIL}.weight": {"method": "kmeans", "bits": 4}},
        },
    }


@needs_plots
def test_every_optional_key_rendered_and_escaped():
    page = render_html(_synthetic_report())
    c = check_page(page)
    assert c.sections == [
        "headlines",
        "summary",
        "passes",
        "layers",
        "weights",
        "validation",
        "auto",
        "recipe",
    ]
    assert "<script" not in page and "<evil" not in page and "alert" in page  # present, escaped
    assert html_escaped(EVIL) in page
    summary = section(page, "summary")
    assert "3.0 MB" in summary and "1.0 MB" in summary and "3.00x" in summary  # resident memory
    assert "0.83x" in summary  # peak memory grew: 5 MB -> 6 MB
    assert "90,000" in summary and "1.25x" in summary and "1.9&ndash;2.2" in summary  # MACs, latency spread
    assert "rolled back" in section(page, "passes") and "badge bad" in section(page, "passes")
    assert "out err. before refit" in section(page, "layers") and "0.04" in section(page, "layers")
    assert "without the original and compressed models" in section(page, "weights")
    assert section(page, "auto").count("<img") == 1 and section(page, "validation").count("<img") == 1


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_without_matplotlib_tables_and_a_hint(monkeypatch, compressed):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    _, runs = compressed
    model, report, _ = runs["kmeans"]
    page = render_html(report, original_model=CNN, compressed_model=model)
    c = check_page(page)
    assert c.images == 0 and PLOTS_HINT.replace('"', "&quot;") in page
    assert c.sections == list(ALL_SECTIONS)
    assert all(f">{s['name']}<" in section(page, "layers") for s in report["passes"][0]["layers"])


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@needs_plots
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(compressed, tmp_path):
    tmp, runs = compressed
    page_path = tmp / "kmeans.html"
    base = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,2400", page_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1280, 2400)
    assert len(data) > 100_000  # charts and text, not a blank page (a blank one is a few KB)
    dom = subprocess.run(
        [*base, "--dump-dom", page_path.as_uri()], capture_output=True, text=True, timeout=120, env=env
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for ident in ALL_SECTIONS:
        assert f'<section id="{ident}">' in dom.stdout
    assert dom.stdout.count('<img src="data:image/png;base64,') >= 4
    for log in (proc.stderr, dom.stderr):
        assert "Uncaught" not in log and "CONSOLE" not in log and "Failed to load resource" not in log
    if os.environ.get("ONNXCOMPRESS_KEEP_SCREENSHOT"):  # for looking at it
        shutil.copy(shot, os.environ["ONNXCOMPRESS_KEEP_SCREENSHOT"])


def test_folded_batchnorm_original_scaled_per_channel():
    """A weight BatchNorm was folded into is compared after the per-channel scale, not before."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    scale = np.array([0.5, 2.0, 1.0, 3.0]).reshape(4, 1, 1, 1)
    centroids = np.linspace(-6, 6, 16)
    d = centroids[np.abs((w * scale)[..., None] - centroids).argmin(-1)]  # 4-bit k-means-like decode
    plain = _report_weights._view("w", "kmeans", 0.1, w, d, 0, folded=False)
    view = _report_weights._view("w", "kmeans", 0.1, w, d, 0, folded=True)
    assert not plain.rescaled and view.rescaled and len(view.levels) <= 16
    rel = np.linalg.norm(view.original - view.decoded) / np.linalg.norm(view.decoded)
    assert rel < 0.15 < np.linalg.norm(plain.original - plain.decoded) / np.linalg.norm(plain.decoded)
