"""The README's examples run as written on a fresh clone.

The quick start's commands (``onnxcompress ...`` after the ``pip install``, which the test
environment already did) run in a temporary copy of the repository's ``models/``; then every
```python block runs there in order, and the ``test_*`` functions a block defines are called, so
an example that names a file the quick start did not make, or an API that changed, fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(language: str, text: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def quick_start_commands() -> list[list[str]]:
    """The commands of the quick start's first bash block, split at ``&&`` and line ends."""
    block = _blocks("bash", _section(README.read_text(), "Quick start"))[0]
    commands = []
    for line in block.splitlines():
        for part in line.split("&&"):
            argv = shlex.split(part)
            if argv:
                commands.append(argv)
    return commands


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """A folder laid out like a fresh clone for the examples: models/ (and nothing written yet)."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(ROOT / "models", root / "models")
    return root


def test_quick_start_runs_as_written(fresh_clone):
    commands = quick_start_commands()
    ran = 0
    for argv in commands:
        if argv[0] == "mkdir":
            for folder in argv[1:]:
                if not folder.startswith("-"):
                    (fresh_clone / folder).mkdir(parents=True, exist_ok=True)
        elif argv[0] == "onnxcompress":
            proc = subprocess.run(
                [sys.executable, "-m", "onnxcompress", *argv[1:]], cwd=fresh_clone, capture_output=True,
                text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600,
            )
            assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}"
            assert "PASS" in proc.stdout and "session memory" in proc.stdout
            ran += 1
        else:  # environment setup (venv, pip install): done by the test environment
            assert argv[0] in ("python", "python3", ".", "source", "pip"), argv
    assert ran == 1
    # written where the README says, not into the repository root
    out = fresh_clone / "out" / "digits_cnn.int8.onnx"
    onnx.checker.check_model(str(out))
    assert sorted(p.name for p in fresh_clone.iterdir()) == ["models", "out"]
    assert "out/" in (ROOT / ".gitignore").read_text().splitlines()


def test_python_examples_run_as_written(fresh_clone, monkeypatch):
    if not (fresh_clone / "out" / "digits_cnn.int8.onnx").exists():
        test_quick_start_runs_as_written(fresh_clone)
    monkeypatch.chdir(fresh_clone)
    blocks = _blocks("python", README.read_text())
    assert len(blocks) >= 2
    called = []
    for i, code in enumerate(blocks):
        namespace: dict = {"__name__": f"readme_block_{i}"}
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
        for name, value in list(namespace.items()):
            if name.startswith("test_") and callable(value):
                value()
                called.append(name)
    assert called == ["test_int8_model_still_classifies"]
    for name in ("digits_cnn.small.onnx", "digits_cnn.q.onnx"):
        onnx.checker.check_model(str(fresh_clone / "out" / name))
