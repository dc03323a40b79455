from __future__ import annotations

import json
import subprocess
import sys

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


def test_no_pass_selected(capsys, model_files, tmp_path):
    code, _, err = run_cli(capsys, "compress", model_files["mlp"], "-o", tmp_path / "o.onnx")
    assert code == 2 and "no pass selected" in err


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
