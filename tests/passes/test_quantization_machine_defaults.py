"""A machine-dependent default (reduce_range) is resolved when the pass runs and recorded resolved:
a model quantized on a VNNI CPU reads back as reduce_range=false on a CPU without VNNI, and
replaying its recorded recipe there reproduces the file byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from onnxcompress.passes.quantization import QuantizeConfig

MODELS = Path(__file__).resolve().parents[2] / "models"
REPO = MODELS.parent


def _run(code: str, vnni: str) -> str:
    env = {**os.environ, "ONNXCOMPRESS_CPU_VNNI": vnni}  # the decision cache: conftest's private one
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reduce_range_default_is_auto_until_the_pass_runs():
    assert QuantizeConfig().reduce_range == "auto"


def test_resolved_reduce_range_is_recorded_and_replays_byte_for_byte(tmp_path):
    first, replay = tmp_path / "vnni.onnx", tmp_path / "replay.onnx"
    quantize = (
        "from onnxcompress.pipeline import compress; from onnxcompress.model import save_model\n"
        f"r = compress({str(MODELS / 'digits_mlp.onnx')!r}, {{'passes': [{{'pass': 'quantize', "
        "'mode': 'dynamic', 'speed_check': False}]})\n"
        f"save_model(r.model, {str(first)!r})\n"
        "print(r.passes[0].metrics['reduce_range'])\n"
    )
    assert _run(quantize, "1").strip() == "False"  # a VNNI CPU: full 8-bit weights
    read = (
        "import json; from onnxcompress.model import load_model; "
        "from onnxcompress.pipeline import read_provenance\n"
        f"p = read_provenance(load_model({str(first)!r}))\n"
        "print(json.dumps(p['history'][-1]['recipe']))\n"
    )
    recipe = json.loads(_run(read, "0"))  # read back on a CPU without VNNI
    assert recipe["passes"][0]["reduce_range"] is False
    recipe_path = tmp_path / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    replay_code = (
        "from onnxcompress.pipeline import compress; from onnxcompress.model import save_model\n"
        f"r = compress({str(MODELS / 'digits_mlp.onnx')!r}, {str(recipe_path)!r})\n"
        f"save_model(r.model, {str(replay)!r})\n"
    )
    _run(replay_code, "0")
    assert replay.read_bytes() == first.read_bytes()
