"""Ctrl-C during the search: exit 130, no output, no temporary files left behind."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import pytest

from tests.auto._common import CALIB, MODELS, run_cli


def test_interrupt_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("onnxcompress.auto.search")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_measure", interrupted)
    out = tmp_path / "out.onnx"
    code = run_cli("compress", MODELS / "digits_mlp.onnx", "-o", out, "--auto", "--calibration", CALIB,
                   "--save-recipe", tmp_path / "r.json", "-q")
    assert code == 130
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
