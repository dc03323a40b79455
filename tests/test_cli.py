from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress.cli import main
from tests import helpers as h


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def model_files(tmp_path):
    paths = {}
    for name, proto in {
        "mlp": h.mlp(),
        "const": h.constant_node_weights(h.cnn()),
        "if": h.if_subgraph_model(),
        "custom": h.custom_domain_model(),
    }.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(proto.SerializeToString())
    (tmp_path / "ext").mkdir()
    paths["ext"] = h.save_with_external_data(h.mlp(), tmp_path / "ext" / "m.onnx")
    return paths


@pytest.mark.parametrize(
    "name, expected",
    [
        ("const", ["conv0.weight", "constant", "bn1.var"]),
        ("if", ["branch/then_branch/W_then", "branch/else_branch/W_else"]),
        ("ext", ["fc0.weight", "external initializer"]),
    ],
)
def test_inspect_lists_every_weight(capsys, model_files, name, expected):
    code, out, _ = run_cli(capsys, "inspect", model_files[name])
    assert code == 0
    for text in expected:
        assert text in out


def test_inspect_json(capsys, model_files):
    code, out, _ = run_cli(capsys, "inspect", model_files["const"], "--json")
    info = json.loads(out)
    assert code == 0 and info["opset"] == 13 and len(info["weights"]) == 14
    conv = next(w for w in info["weights"] if w["name"] == "conv0.weight")
    assert conv["shape"] == [8, 3, 3, 3] and conv["distinct"] > 100 and conv["sparsity"] == 0


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), (b"", "empty"), (b"\x08\x07garbage\xff\xff", "not a valid ONNX"), ("dir", "directory")],
)
def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    out_path = tmp_path / "out.onnx"
    for args in (["inspect", path], ["compress", path, "-o", out_path, "--simplify"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out_path.exists()


def test_tensor_shape_mismatch_exits_2(capsys, tmp_path):
    proto = h.mlp()
    proto.graph.initializer[0].raw_data = proto.graph.initializer[0].raw_data[:-4]
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    code, _, err = run_cli(capsys, "compress", path, "-o", tmp_path / "o.onnx", "--simplify")
    assert code == 2 and "declares shape" in err and not (tmp_path / "o.onnx").exists()


def test_unwritable_output_exits_2(capsys, model_files, tmp_path):
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "nope" / "o.onnx", "--simplify")
    assert code == 2 and "does not exist" in err


def test_refuses_to_overwrite_input(capsys, model_files):
    before = model_files["mlp"].read_bytes()
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", model_files["mlp"], "--simplify")
    assert code == 2 and "refusing to overwrite" in err
    assert model_files["mlp"].read_bytes() == before


def test_no_pass_compresses_with_dynamic_int8(capsys, model_files, tmp_path):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", out)
    assert code == 0 and "no pass given: compressing with --quantize dynamic" in err
    model = onnx.load(out)
    assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)
    assert out.stat().st_size < model_files["mlp"].stat().st_size
    # the same file as asking for it
    asked = tmp_path / "asked.onnx"
    assert run_cli(capsys, "compress", model_files["mlp"], "-o", asked, "--quantize", "dynamic")[0] == 0
    assert asked.read_bytes() == out.read_bytes()


def test_bad_recipe_exits_2(capsys, model_files, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[[passes]]\npass = 'nope'\n")
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "o.onnx", "--recipe", recipe)
    assert code == 2 and "unknown pass 'nope'" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compress"])
    assert e.value.code == 2


def test_compress_simplify_report_and_custom_domain(capsys, model_files, tmp_path):
    out = tmp_path / "o.onnx"
    report = tmp_path / "r.json"
    code, stdout, _ = run_cli(capsys, "compress", model_files["custom"], "-o", out, "--simplify",
                              "--report", report)
    assert code == 0 and out.exists() and "file size" in stdout
    data = json.loads(report.read_text())
    assert data["recipe"]["passes"][0]["pass"] == "simplify"
    kept = [n for n in onnx.load(str(out)).graph.node if n.domain == "com.example"]
    assert len(kept) == 1


def test_compress_external_data_model(capsys, model_files, tmp_path):
    out = tmp_path / "o.onnx"
    code, _, _ = run_cli(capsys, "compress", model_files["ext"], "-o", out, "--simplify", "--quiet")
    assert code == 0
    x = np.ones((1, 16), np.float32)
    np.testing.assert_allclose(h.run(str(out), {"x": x})[0], h.run(h.mlp(), {"x": x})[0], rtol=1e-5)


def test_python_dash_m_entry_point(tmp_path, model_files):
    proc = subprocess.run([sys.executable, "-m", "onnxcompress", "inspect", str(model_files["mlp"])],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "fc0.weight" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "onnxcompress", "inspect", str(tmp_path / "missing.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_validation_data_fails_before_writing(capsys, model_files, tmp_path):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", out, "--simplify", "--validate",
                           "--validate-data", tmp_path / "nope.npz")
    assert code == 2 and "no such file" in err and not out.exists()


def test_report_path_is_checked_before_writing_the_model(capsys, model_files, tmp_path):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", out, "--simplify",
                           "--report", tmp_path / "nodir" / "r.json")
    assert code == 2 and "does not exist" in err and not out.exists()


def test_bare_command_prints_usage(capsys):
    code, _, err = run_cli(capsys)
    assert code == 2 and "usage:" in err and "compress" in err


def test_option_errors_name_the_flag(capsys, model_files, tmp_path):
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "o.onnx", "--prune", "1.5")
    assert code == 2 and "--prune" in err and "Traceback" not in err


def test_broken_pipe_is_not_an_error(tmp_path, model_files):
    proc = subprocess.run(f"{sys.executable} -m onnxcompress inspect {model_files['const']} | head -1",
                          shell=True, capture_output=True, text=True)
    assert "internal error" not in proc.stderr and "Broken" not in proc.stderr


# -- failures, exit codes and the files we write -------------------------------------------------


def _save(tmp_path, proto, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString())
    return path


def _break_kmeans(monkeypatch):
    """Make the k-means pass emit a dangling input (a node reading a value nothing provides)."""
    import onnx_ir as ir

    from onnxcompress.passes.weight_sharing import WeightSharing

    real = WeightSharing.apply

    def broken(self, model, context, result):
        model = real(self, model, context, result)
        node = next(n for n in model.graph if n.op_type == "Add")
        node.replace_input_with(1, ir.Value(name="ghost"))
        return model

    monkeypatch.setattr(WeightSharing, "apply", broken)


@pytest.mark.parametrize("debug", [False, True])
def test_a_pass_producing_an_invalid_model_exits_2_and_writes_nothing(capsys, monkeypatch, tmp_path, debug):
    _break_kmeans(monkeypatch)
    model, out, report = _save(tmp_path, h.mlp((64, 64, 64, 64))), tmp_path / "o.onnx", tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "compress", model, "-o", out, "--prune", "0.5", "--kmeans", "4",
                                "--report", report, *(["--debug"] if debug else []))
    assert code == 2 and not out.exists() and not report.exists() and stdout == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("onnxcompress: error: pass kmeans produced an invalid model: node 'fc0/Add' (Add) "
                           "reads 'ghost', which no node")
    if debug:  # the traceback comes first, the exit code stays
        assert "Traceback" in err
    else:
        assert len(err.strip().splitlines()) == 1


def test_best_effort_writes_the_passes_that_succeeded_and_exits_1(capsys, monkeypatch, tmp_path):
    _break_kmeans(monkeypatch)
    proto = h.mlp((64, 64, 64, 64))
    model, out, report = _save(tmp_path, proto), tmp_path / "o.onnx", tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "compress", model, "-o", out, "--prune", "0.5", "--kmeans", "4",
                                "--best-effort", "--report", report)
    assert code == 1 and out.exists()
    assert stdout.startswith("!! kmeans: rolled back (pass kmeans produced an invalid model: node 'fc0/Add'")
    assert "kmeans was rolled back" in err
    data = json.loads(report.read_text())
    assert [p["status"] for p in data["passes"]] == ["applied", "rolled_back"]
    assert data["headlines"][0].startswith("kmeans: rolled back (") and "ghost" in data["passes"][1]["reason"]
    # What was written is the pruned model: valid, sparse fc1, dense (unclustered) weights otherwise.
    onnx.checker.check_model(str(out))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    assert np.mean(weights["fc1.weight"] == 0) == pytest.approx(0.5, abs=0.02)
    assert len(np.unique(weights["fc0.weight"])) == 64 * 64
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    want, got = h.run(proto, {"x": x})[0], h.run(str(out), {"x": x})[0]
    assert got.shape == want.shape and 0 < np.linalg.norm(got - want) / np.linalg.norm(want) < 0.5


def test_unexpected_exception_in_a_pass_names_it_and_exits_2_either_way(capsys, monkeypatch, tmp_path):
    from onnxcompress.passes.weight_sharing import WeightSharing

    def explode(self, model, context, result):
        with context.working_on("fc1.weight"):
            raise ValueError("boom\nsecond line")

    monkeypatch.setattr(WeightSharing, "apply", explode)
    model, out = _save(tmp_path, h.mlp((64, 64, 64, 64))), tmp_path / "o.onnx"
    for debug in ([], ["--debug"]):
        code, _, err = run_cli(capsys, "compress", model, "-o", out, "--kmeans", "4", *debug)
        assert code == 2 and not out.exists()
        assert err.strip().splitlines()[-1].startswith(
            "onnxcompress: error: pass kmeans failed on fc1.weight: ValueError: boom Hint:")
        assert ("Traceback" in err) == bool(debug) and ("ValueError: boom" in err)


@pytest.mark.parametrize("command", ["inspect", "compress"])
def test_exit_codes_do_not_depend_on_debug(capsys, tmp_path, command):
    extra = ["-o", tmp_path / "o.onnx", "--simplify"] if command == "compress" else []
    codes = []
    for debug in ([], ["--debug"]):
        code, _, err = run_cli(capsys, command, tmp_path / "missing.onnx", *extra, *debug)
        codes.append(code)
        assert "no such file" in err.strip().splitlines()[-1]
    assert codes == [2, 2]


@pytest.mark.parametrize("mutate, message", h.INVALID_INPUTS, ids=h.INVALID_INPUT_IDS)
def test_invalid_input_model_is_refused_up_front(capsys, tmp_path, mutate, message):
    proto = h.mlp()
    mutate(proto)
    model, out = _save(tmp_path, proto), tmp_path / "o.onnx"
    code, stdout, err = run_cli(capsys, "compress", model, "-o", out, "--quantize", "dynamic")
    assert code == 2 and not out.exists() and stdout == ""
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"onnxcompress: error: {model}: not a valid ONNX model: {message}")


def test_issue_17_shapeless_output_compresses_with_quantize_dynamic(capsys, tmp_path):
    from tests.test_pipeline import shapeless_output_model

    proto = shapeless_output_model(256)
    model, out = _save(tmp_path, proto), tmp_path / "o.onnx"
    code, stdout, err = run_cli(capsys, "compress", model, "-o", out, "--quantize", "dynamic", "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["size_ratio"] >= 3.5 and report["passes"][0]["status"] == "applied"
    # The only decision that may change what was asked is the speed guard's, which depends on
    # this machine's speed (int8 compute kept only where it is not slower).
    assert all("measured slower than float" in line for line in report["headlines"])
    onnx.checker.check_model(str(out))
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    want, got = h.run(proto, {"x": x})[0], h.run(str(out), {"x": x})[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05


@pytest.mark.parametrize("keep", [False, True])
def test_failed_validation_leaves_no_output_unless_kept(capsys, tmp_path, keep):
    model, out = _save(tmp_path, h.mlp((64, 64, 64, 64))), tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "compress", model, "-o", out, "--kmeans", "2", "--validate",
                           "--max-rel-error", "1e-6", *(["--keep-failed"] if keep else []))
    assert code == 1 and out.exists() == keep
    assert ("not written" in err) != keep
    if keep:
        onnx.checker.check_model(str(out))


def test_compare_json_path_is_checked_before_comparing(capsys, monkeypatch, model_files, tmp_path):
    import onnxcompress.validation.cli as vcli

    monkeypatch.setattr(vcli, "compare_models",
                        lambda *a, **k: pytest.fail("compared before checking --json"))
    code, _, err = run_cli(capsys, "compare", model_files["mlp"], model_files["mlp"],
                           "--json", tmp_path / "nodir" / "x.json")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target", ["dir", "same-as-output", "input"])
def test_report_path_problems_exit_2_before_work(capsys, model_files, tmp_path, target):
    out = tmp_path / "o.onnx"
    report = {"dir": tmp_path, "same-as-output": out, "input": model_files["mlp"]}[target]
    before = model_files["mlp"].read_bytes()
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", out, "--simplify",
                           "--report", report)
    assert code == 2 and not out.exists() and len(err.strip().splitlines()) == 1
    assert model_files["mlp"].read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_folder_exits_2(capsys, model_files, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", folder / "o.onnx", "--simplify")
    assert code == 2 and "not writable" in err


def test_recipe_value_of_the_wrong_type_is_one_line(capsys, model_files, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[passes]]\npass = "kmeans"\nbits = "four"\n')
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "o.onnx",
                           "--recipe", recipe)
    assert code == 2 and err.strip().splitlines() == [
        f"onnxcompress: error: {recipe}: passes[0] (kmeans): bits must be an integer, got 'four' (a string)."]


def test_recipe_value_outside_the_flags_choices_is_one_line(capsys, model_files, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[passes]]\npass = "kmeans"\nbits = 8\nrest = "bogus"\n')
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "o.onnx",
                           "--recipe", recipe)
    assert code == 2 and not (tmp_path / "o.onnx").exists() and err.strip().splitlines() == [
        f"onnxcompress: error: {recipe}: passes[0] (kmeans): rest must be one of float16, float32, "
        "got 'bogus' (a string)."]


def test_recipe_best_effort_key_matches_the_flag(capsys, monkeypatch, tmp_path):
    _break_kmeans(monkeypatch)
    model, out = _save(tmp_path, h.mlp((64, 64, 64, 64))), tmp_path / "o.onnx"
    recipe = tmp_path / "r.toml"
    recipe.write_text('best_effort = true\n[[passes]]\npass = "prune"\n[[passes]]\npass = "kmeans"\n')
    code, _, _ = run_cli(capsys, "compress", model, "-o", out, "--recipe", recipe, "-q")
    assert code == 1 and out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prune-pattern", "2:4"], "--prune-pattern given without --prune: alone it enables nothing. "
                                     "Hint: add --prune SPARSITY to run the prune pass."),
        (["--prune", "0.3", "--prune-pattern", "2:4"],
         "--prune --prune-pattern: sparsity 0.3 conflicts with pattern 2:4, which fixes the sparsity at "
         "1 - N/M = 0.5."),
        (["--prune", "1.5"], "--prune: prune: sparsity must be in [0, 1), got 1.5"),
    ],
)
def test_prune_flag_combinations(capsys, model_files, tmp_path, flags, message):
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "o.onnx", *flags)
    assert code == 2 and err.startswith(f"onnxcompress: error: {message}") and "Config" not in err


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_we_write_get_the_users_umask(capsys, model_files, tmp_path, umask):
    out, report, cmp = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "c.json"
    old = os.umask(umask)
    try:
        assert run_cli(capsys, "compress", model_files["mlp"], "-o", out, "--kmeans", "4", "--report", report,
                       "-q")[0] == 0
        code, _, _ = run_cli(capsys, "compare", model_files["mlp"], out, "--json", cmp,
                             "--max-rel-error", "1")
        assert code == 0
    finally:
        os.umask(old)
    for path in (out, report, cmp):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxcompress-")]


# -- one flag vocabulary, progress in logs, memory and latency spread, tables that add up -------

ROOT = Path(__file__).resolve().parents[1]
DIGITS_CNN = ROOT / "models" / "digits_cnn.onnx"
DIGITS_EVAL = DIGITS_CNN.with_name("digits_eval.npz")


def test_compress_and_compare_share_shape_json_and_report_flags(capsys, model_files, tmp_path):
    mlp, out = model_files["mlp"], tmp_path / "o.onnx"
    # compress --json PATH writes the file and still prints the table; --json - prints JSON only
    code, text, _ = run_cli(capsys, "compress", mlp, "-o", out, "--kmeans", "6", "--validate",
                            "--shape", "x:3x16", "--json", tmp_path / "c.json", "--no-memory")
    report = json.loads((tmp_path / "c.json").read_text())
    assert code == 0 and "file size" in text and report["after"]["file_bytes"] == out.stat().st_size
    assert report["validation"]["passed"] and report["validation"]["outputs"][0]["shape"] == [3, 10]
    code, text, _ = run_cli(capsys, "compress", mlp, "-o", tmp_path / "p.onnx", "--kmeans", "6",
                            "--json", "-", "--report", tmp_path / "r.json")
    assert code == 0 and json.loads(text)["passes"][0]["pass"] == "kmeans"
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(tmp_path / "p.onnx")
    # the earlier spelling still works, but is not advertised
    code, _, _ = run_cli(capsys, "compress", mlp, "-o", tmp_path / "q.onnx", "--kmeans", "6", "--validate",
                         "--validate-shape", "x:2x16", "--json", tmp_path / "q.json", "-q", "--no-memory")
    validation = json.loads((tmp_path / "q.json").read_text())["validation"]
    assert code == 0 and validation["outputs"][0]["shape"] == [2, 10]
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    help_text = capsys.readouterr().out
    assert "--shape NAME:DIMS" in help_text and "--validate-shape" not in help_text
    assert "--json PATH" in help_text and "--report PATH" in help_text
    # --shape also shapes the passes' synthetic samples: fine without --validate; a name the
    # model does not have fails before any work
    code, _, _ = run_cli(capsys, "compress", mlp, "-o", tmp_path / "s.onnx", "--kmeans", "6",
                         "--shape", "x:1x16", "--no-memory")
    assert code == 0
    code, _, err = run_cli(capsys, "compress", mlp, "-o", tmp_path / "s2.onnx", "--kmeans", "6",
                           "--shape", "y:1x16")
    assert code == 2 and "--shape names unknown input(s) y" in err and not (tmp_path / "s2.onnx").exists()
    # compare: the same --json PATH / --report PATH / --shape
    code, text, _ = run_cli(capsys, "compare", mlp, out, "--shape", "x:4x16",
                            "--report", tmp_path / "cmp.json")
    cmp_report = json.loads((tmp_path / "cmp.json").read_text())
    assert code == 0 and "PASS" in text and cmp_report["outputs"][0]["shape"] == [4, 10]
    # --json is a path on both commands: a missing folder fails before any work
    for command in (["compress", mlp, "-o", tmp_path / "t.onnx", "--kmeans", "6"], ["compare", mlp, out]):
        code, _, err = run_cli(capsys, *command, "--json", tmp_path / "nodir" / "x.json")
        assert code == 2 and "does not exist" in err
    assert not (tmp_path / "t.onnx").exists()


def test_progress_lines_in_a_log_that_is_not_a_terminal(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "onnxcompress", "compress", str(DIGITS_CNN), "-o", str(tmp_path / "o.onnx"),
         "--kmeans", "4"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "INFO onnxcompress.progress: pass kmeans [0/1]" in lines
    assert any(line.startswith("INFO onnxcompress.progress: k-means [") for line in lines)
    assert "\r" not in proc.stderr and "\033[" not in proc.stderr  # no terminal control codes


def test_progress_log_throttles_and_beats(caplog):
    from onnxcompress.progress import ProgressLog

    now = [0.0]
    progress = ProgressLog(interval=2.0, heartbeat=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="onnxcompress.progress"):
        for t, done in ((0.0, 1), (1.0, 2), (2.5, 3), (3.0, 4)):
            now[0] = t
            progress("k-means", done, 10)
        assert progress.beat() is None  # 3 s since the last line: not yet
        now[0] = 8.0
        assert progress.beat() == "still working: k-means [4/10] (8 s)"
        now[0] = 9.0
        assert progress.beat() is None
        progress("k-means", 10, 10)  # the last of a stage always shows
        progress("speed check", 0, 3)  # so does the first of a new one
    assert [r.getMessage() for r in caplog.records] == [
        "k-means [1/10]", "k-means [3/10]", "still working: k-means [4/10] (8 s)", "k-means [10/10]",
        "speed check [0/3]",
    ]


def test_compress_reports_session_memory(capsys, tmp_path):
    out = tmp_path / "k.onnx"
    code, text, _ = run_cli(capsys, "compress", DIGITS_CNN, "-o", out, "--kmeans", "8", "--memory",
                            "--json", tmp_path / "r.json")
    memory = json.loads((tmp_path / "r.json").read_text())["memory"]
    assert code == 0 and "session memory" in text and "peak memory" in text
    for role in ("original", "compressed"):
        assert memory[role]["ran"] and memory[role]["resident_bytes"] > 0 and memory[role]["error"] is None
    assert memory["resident_ratio"] == pytest.approx(
        memory["original"]["resident_bytes"] / memory["compressed"]["resident_bytes"], rel=1e-3)


def test_per_tensor_table_adds_up_with_a_shared_codebook(capsys, tmp_path):
    out = tmp_path / "k8.onnx"
    code, text, _ = run_cli(capsys, "compress", DIGITS_CNN, "-o", out, "--kmeans", "8", "--kmeans-codebook",
                            "model", "--json", tmp_path / "r.json")
    p = json.loads((tmp_path / "r.json").read_text())["passes"][0]
    layers = p["layers"]
    assert code == 0 and len(layers) >= 2 and all(s["extra"]["codebooks"] == "model" for s in layers)
    assert sum(s["bytes_after"] for s in layers) == p["metrics"]["weight_bytes_after"]
    # the codebook (256 floats) is spread by size: no tensor pays for it alone
    assert sum(s["extra"]["shared_bytes"] for s in layers) == 1024
    assert all(s["bits"] < 8.6 for s in layers), [s["bits"] for s in layers]
    assert set(s["name"] for s in layers).isdisjoint(n for names in p["skipped"].values() for n in names)
    onnx.checker.check_model(str(out))
    x = np.load(DIGITS_EVAL)["image"][:4]
    a = np.concatenate([h.run(DIGITS_CNN, {"image": s[None]})[0] for s in x])
    b = np.concatenate([h.run(out, {"image": s[None]})[0] for s in x])
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_a_name_both_changed_and_skipped_is_listed_once():
    from onnxcompress.passes.base import LayerStat, PassResult
    from onnxcompress.pipeline import PipelineResult
    from onnxcompress.report import CompressionReport, SizeInfo

    r = PassResult(pass_name="kmeans", config={}, model=None)
    r.add_layer(LayerStat(name="fc.weight", op_type="Gemm", shape=(4, 4), bytes_before=64, bytes_after=16))
    r.skip("fc.weight", "second use in a Loop body left float")
    r.skip("fc.bias", "bias: kept in full precision")
    size = SizeInfo(file_bytes=1, gzip_bytes=1, parameters=1, weight_bytes=1, sparsity=0.0, nodes=1)
    text = CompressionReport("a", "b", size, size, PipelineResult(model=None, passes=[r], recipe={})).render()
    assert "1 tensor(s) changed, 1 skipped" in text
    assert "skipped 1: bias: kept in full precision (fc.bias)" in text
    assert "changed, with a remark, 1: second use in a Loop body left float (fc.weight)" in text


def test_names_are_elided_in_the_middle():
    from onnxcompress._text import elide_middle

    names = [f"/backbone/stage{i}/block2/bn/BatchNormalization_output_0" for i in (1, 3)]
    shown = [elide_middle(n, 35, op_type="BatchNormalization") for n in names]
    assert shown == ["/backbone/stage1/block2/bn/~", "/backbone/stage3/block2/bn/~"]
    long = "/model/encoder/layers.11/self_attn/q_proj/weight_quantized"
    cut = elide_middle(long, 30)
    assert len(cut) == 30 and cut.startswith("/model/") and cut.endswith("weight_quantized")
    assert "..." in cut and elide_middle("short", 30) == "short"


DIGITS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("flags, misses", [(["--prune", "0.97"], True), (["--quantize", "dynamic"], False)])
def test_calibration_runs_say_when_the_output_misses_the_default_tolerance(capsys, tmp_path, flags, misses):
    """With calibration data and no --validate, the output is compared on a few calibration
    samples: a model that no longer does its job gets a headline, never another exit code."""
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    code, stdout, _ = run_cli(capsys, "compress", DIGITS / "digits_mlp.onnx", "-o", out, *flags,
                              "--calibration", DIGITS / "digits_calib.npz", "--json", report)
    assert code == 0 and out.exists()
    data = json.loads(report.read_text())
    assert data["fidelity"]["samples"] == 8 and data["fidelity"]["passed"] is (not misses)
    headline = [h for h in data["headlines"] if h.startswith("fidelity:")]
    assert bool(headline) is misses and ("!! fidelity:" in stdout) is misses
    if misses:
        assert "logits: top-1 agreement" in headline[0]  # names the output and the criterion
    assert "fidelity      8 calibration samples" in stdout


def test_fidelity_check_can_be_turned_off_and_skips_without_calibration(capsys, tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    args = ["compress", DIGITS / "digits_mlp.onnx", "-o", out, "--prune", "0.97", "--json", report]
    assert run_cli(capsys, *args, "--calibration", DIGITS / "digits_calib.npz", "--no-check-fidelity")[0] == 0
    assert json.loads(report.read_text())["fidelity"] is None
    assert run_cli(capsys, *args, "--overwrite")[0] == 0  # no calibration: nothing measured
    assert json.loads(report.read_text())["fidelity"] is None


def test_fidelity_check_that_cannot_run_is_noted_not_raised(capsys, monkeypatch, tmp_path):
    from onnxcompress.errors import DataError
    from onnxcompress.validation import compare

    def broken(*a, **k):
        raise DataError("sample 0 of input 'x' cannot run")

    monkeypatch.setattr(compare, "compare_models", broken)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    code, stdout, _ = run_cli(capsys, "compress", DIGITS / "digits_mlp.onnx", "-o", out, "--kmeans", "4",
                              "--calibration", DIGITS / "digits_calib.npz", "--json", report)
    assert code == 0 and out.exists()
    assert json.loads(report.read_text())["fidelity"] == {"error": "sample 0 of input 'x' cannot run"}
    assert "fidelity      not checked: sample 0" in stdout


def test_a_headline_is_printed_once(tmp_path):
    """Headlines are logged for API users and printed in the CLI's report ("!!"): the CLI drops
    the log record, which showed every headline twice."""
    model = tmp_path / "cnn.onnx"
    onnx.save(h.cnn(channels=(3, 64, 128)), model)
    proc = subprocess.run([sys.executable, "-m", "onnxcompress", "compress", str(model), "-o",
                           str(tmp_path / "o.onnx"), "--quantize", "int4"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "4-bit blocks do not cover" in line]
    assert len(lines) == 1 and lines[0].startswith("!! "), proc.stdout + proc.stderr


def test_sigterm_stops_like_ctrl_c(monkeypatch, tmp_path) -> None:
    """A CI timeout's SIGTERM killed the run outright: auto's worker processes outlived it
    holding 1.3 GB each. It is raised where Ctrl-C is (Terminated, a KeyboardInterrupt), so the
    same clean-up runs and the exit code says why (143); the handler is restored after."""
    import os
    import signal
    import time

    from onnxcompress import cli

    def killed(args):  # noqa: ANN001, ARG001
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(cli, "cmd_inspect", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["inspect", str(tmp_path / "m.onnx")]) == 143
    assert signal.getsignal(signal.SIGTERM) is before
