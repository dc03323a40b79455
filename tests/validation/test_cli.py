"""`onnxcompress compare` and `compress --validate`, run in-process (one subprocess test)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress import WeightIndex
from onnxcompress.cli import main
from onnxcompress.memory import report_excess
from onnxcompress.passes import registered_passes
from onnxcompress.passes.base import Pass, PassConfig, PassContext, PassResult, option
from tests import helpers as h
from tests.conftest import MODELS, REPO
from tests.validation._models import perturbed, reshape_model, sequence_model


@dataclass(frozen=True)
class NoiseConfig(PassConfig):
    scale: float = option(default=0.1, help="relative noise added to compute weights")


class AddNoise(Pass):
    """A test pass that damages the model on purpose (so --validate has something to catch)."""

    name = "test-validation-noise"
    config_class = NoiseConfig

    def apply(self, model, context: PassContext, result: PassResult):
        rng = context.rng("noise")
        for w in WeightIndex.build(model).select(roles={"weight"}):
            arr = w.numpy()
            w.set_numpy(
                arr
                + self.config.scale * np.abs(arr).mean() * rng.standard_normal(arr.shape).astype(arr.dtype)
            )
        return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    model = h.mlp((16, 32, 32, 10))
    paths = {
        "a": d / "a.onnx",
        "b": d / "b.onnx",
        "seq": d / "seq.onnx",
        "rs": d / "rs.onnx",
        "custom": d / "custom.onnx",
        "garbage": d / "garbage.onnx",
        "dir": d,
    }
    onnx.save(model, paths["a"])
    onnx.save(perturbed(model, "fc1.weight"), paths["b"])
    onnx.save(sequence_model(), paths["seq"])
    onnx.save(reshape_model(), paths["rs"])
    onnx.save(h.custom_domain_model(), paths["custom"])
    paths["garbage"].write_bytes(b"this is not a protobuf \x00\xff" * 10)
    return paths


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_identical_exits_0(capsys, files):
    code, out, _ = run(capsys, "compare", files["a"], files["a"])
    assert code == 0 and out.splitlines()[-1].startswith("PASS")


def test_perturbed_exits_1_and_names_the_output(capsys, files, tmp_path):
    code, out, _ = run(capsys, "compare", files["a"], files["b"], "--json", tmp_path / "r.json")
    assert (
        code == 1
        and "FAIL y [min_cosine]" in out
        and out.splitlines()[-1] == "FAIL: output(s) outside tolerance: y"
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False and report["failed_outputs"] == ["y"]
    code, out, _ = run(capsys, "compare", files["a"], files["b"], "--min-cosine", "0.1", "--quiet")
    assert code == 0 and out == ""


def test_layers_names_the_perturbed_layer_first(capsys, files):
    code, out, _ = run(capsys, "compare", files["a"], files["b"], "--layers", "--samples", "4")
    assert code == 1
    jumps = [line.strip() for line in out.splitlines() if line.strip()[:3] in ("1. ", "2. ")]
    assert jumps[0].startswith("1. mm1 (MatMul 'fc1/MatMul')")


def test_json_on_stdout(capsys, files):
    code, out, _ = run(
        capsys,
        "compare",
        files["a"],
        files["a"],
        "--json",
        "-",
        "--layers",
        "--latency",
        "--latency-runs",
        "3",
        "--samples",
        "2",
    )
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["layers"]["compared"] == 8
    assert report["latency"]["speedup"] > 0


def test_dynamic_shapes_from_the_command_line(capsys, files):
    code, out, _ = run(capsys, "compare", files["seq"], files["seq"], "--shape", "x:2x3x8", "--samples", "2")
    assert code == 0 and " 2x3x4 " in out


def test_per_output_tolerance_flag(capsys, files):
    code, _, _ = run(capsys, "compare", files["a"], files["b"], "--tol", "y:atol=100")
    assert code == 0
    code, _, err = run(capsys, "compare", files["a"], files["b"], "--tol", "y:speed=1")
    assert "unknown criterion speed" in one_line_error(code, err)


@pytest.mark.parametrize(
    "args, message",
    [
        (("{dir}/missing.onnx", "{a}"), "missing.onnx: no such file"),
        (("{garbage}", "{a}"), "not a valid ONNX model"),
        (("{a}", "{garbage}"), "not a valid ONNX model"),
        (("{custom}", "{custom}"), "onnxruntime cannot load the original model"),
        (("{rs}", "{rs}"), "--shape"),
        (("{a}", "{a}", "--data", "{dir}/none.npz"), "none.npz: no such file"),
        (("{a}", "{a}", "--data", "{garbage}"), "not a readable .npz"),
        (("{a}", "{a}", "--shape", "x"), "expected NAME:DIMS"),
        (("{a}", "{a}", "--min-top1", "2"), "fraction"),
        (("{a}", "{a}", "--classifier", "nope"), "unknown output"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(capsys, files, args, message):
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    code, _, err = run(capsys, "compare", *argv)
    assert message in one_line_error(code, err)


def test_usage_error_exits_2(capsys, files):
    with pytest.raises(SystemExit) as e:
        main(["compare", str(files["a"])])
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_subprocess_module_entry_point(files):
    """stderr at the file-descriptor level: onnxruntime's own logging must not leak either."""
    for bad, message in ((files["garbage"], "not a valid ONNX model"), (files["rs"], "--shape")):
        proc = subprocess.run(
            [sys.executable, "-m", "onnxcompress", "compare", str(bad), str(bad)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith("onnxcompress: error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not (MODELS / "digits_eval.npz").exists(), reason="models/ not built")
@pytest.mark.parametrize("model", ["digits_mlp.onnx", "digits_cnn.onnx"])
def test_digits_models_report_accuracy_against_labels(capsys, model, tmp_path):
    path = MODELS / model
    code, out, _ = run(
        capsys, "compare", path, path, "--data", MODELS / "digits_eval.npz", "--json", tmp_path / "r.json"
    )
    assert code == 0
    logits = json.loads((tmp_path / "r.json").read_text())["outputs"][0]
    assert logits["labelled"] == 360 and logits["accuracy_original"] == logits["accuracy_compressed"] > 0.95
    assert "accuracy on 360 labels: original" in out


def test_compress_validate_passes_and_fails(capsys, files, tmp_path):
    out_path = tmp_path / "s.onnx"
    code, out, _ = run(capsys, "compress", files["a"], "-o", out_path, "--simplify", "--validate",
                       "--no-memory")
    assert code == 0 and "PASS" in out
    recipe = tmp_path / "noise.json"
    recipe.write_text(json.dumps({"passes": [{"pass": "test-validation-noise", "scale": 0.5}]}))
    code, out, _ = run(
        capsys,
        "compress",
        files["a"],
        "-o",
        tmp_path / "n.onnx",
        "--recipe",
        recipe,
        "--validate", "--no-memory",
        "--report",
        tmp_path / "r.json",
    )
    assert code == 1 and "FAIL y [min_cosine]" in out
    validation = json.loads((tmp_path / "r.json").read_text())["validation"]
    # synthetic inputs: the default checks cosine (and a detection list's boxes), not top-1
    assert validation["passed"] is False and validation["outputs"][0]["tolerance"] == {
        "min_cosine": 0.99, "min_detection_f1": 0.99}
    code, out, err = run(
        capsys,
        "compress",
        files["a"],
        "-o",
        tmp_path / "n2.onnx",
        "--recipe",
        recipe,
        "--validate", "--no-memory",
        "--min-cosine",
        "0",
        "--validate-data",
        MODELS.parent / "nope.npz",
    )
    assert "nope.npz: no such file" in one_line_error(code, err)


def test_compress_tolerance_flags_need_validate(capsys, files, tmp_path):
    code, _, err = run(capsys, "compress", files["a"], "-o", tmp_path / "x.onnx", "--simplify", "--atol", "1")
    assert "--atol given without --validate" in one_line_error(code, err)


@pytest.mark.skipif(
    "kmeans" not in registered_passes() or not (MODELS / "digits_eval.npz").exists(),
    reason="needs the kmeans pass and models/",
)
def test_layers_names_the_one_layer_a_real_pass_compressed(capsys, tmp_path):
    out = tmp_path / "k.onnx"
    model, data = MODELS / "digits_mlp.onnx", MODELS / "digits_eval.npz"
    argv = ["compress", model, "-o", out, "--kmeans", "2", "--exclude", "fc1.*", "--exclude", "fc3.*", "-q"]
    assert run(capsys, *argv)[0] == 0
    code, text, _ = run(capsys, "compare", model, out, "--data", data, "--samples", "20", "--layers",
                        "--atol", "1e-4")
    assert code == 1 and "1. /fc2/Gemm_output_0 (Gemm '/fc2/Gemm')" in text


def test_compare_latency_has_spread_and_session_memory(capsys, tmp_path):
    model, data, out = MODELS / "digits_cnn.onnx", MODELS / "digits_eval.npz", tmp_path / "k.onnx"
    assert run(capsys, "compress", model, "-o", out, "--kmeans", "8", "-q")[0] == 0
    code, text, _ = run(capsys, "compare", model, out, "--data", data, "--samples", "8",
                        "--latency", "--latency-runs", "9", "--json", tmp_path / "c.json")
    report = json.loads((tmp_path / "c.json").read_text())
    lat = report["latency"]
    assert code == 0 and "p10-p90" in text and "session memory" in text
    assert lat["original_p10_ms"] <= lat["original_ms"] <= lat["original_p90_ms"]
    assert lat["compressed_p10_ms"] <= lat["compressed_ms"] <= lat["compressed_p90_ms"]
    assert 0 < lat["speedup_p10"] <= lat["speedup_p90"]
    assert report["memory"]["original"]["resident_bytes"] > 0 and report["memory"]["compressed"]["ran"]
    mem = report["memory"]
    assert mem["original"]["live_bytes"] > 0 and "live memory" in text
    more = report_excess(mem["original"]["live_bytes"], mem["compressed"]["live_bytes"])
    assert ("!! session memory: the compressed model needs" in text) == more
