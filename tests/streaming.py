"""An instrument for issue 18's streaming property: while a pass reads one weight's float data,
no other weight's data may still be alive.

Every read of a tensor's data from external storage (``ir.ExternalTensor.numpy``, which every
weight read of an external-data model goes through: ``Weight.numpy`` and direct
``const_value.numpy()`` alike) is tracked by weakref, and so is every array ``Weight.numpy``
returns. When a tensor is read, an array read from another tensor that is still referenced (in a
list, a dict, or cached by its memory-mapped tensor, which keeps the whole file mapped and the
pages it touched resident) is an overlap. Used by tests/test_streaming.py and the k-means
streaming test.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import pytest

from onnxcompress.weights import Weight


@dataclass
class ReadTracker:
    """What the instrument saw: ``reads`` (names in order), ``overlaps`` [(name, [alive...])]."""

    live: dict[str, list[weakref.ref]] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    overlaps: list[tuple[str, list[str]]] = field(default_factory=list)

    def seen(self, key: str, array: np.ndarray) -> None:
        gc.collect()
        alive = [k for k, refs in self.live.items() if k != key and any(r() is not None for r in refs)]
        if alive:
            self.overlaps.append((key, alive))
        self.reads.append(key)
        self.live.setdefault(key, []).append(weakref.ref(array))


def track_weight_reads(monkeypatch: pytest.MonkeyPatch) -> ReadTracker:
    """Install the instrument for the rest of the test (monkeypatch undoes it)."""
    tracker = ReadTracker()
    read_weight: Callable[[Weight], np.ndarray] = Weight.numpy
    read_external = ir.ExternalTensor.numpy

    # Matrices and kernels only: a bias or norm vector is the square root of its layer's size.
    def weight_numpy(self: Weight) -> np.ndarray:
        array = read_weight(self)
        if array.ndim >= 2:
            tracker.seen(self.name, array)
        return array

    def external_numpy(self: ir.ExternalTensor) -> np.ndarray:
        array = read_external(self)
        if array.ndim >= 2:
            tracker.seen(self.name or "?", array)
        return array

    monkeypatch.setattr(Weight, "numpy", weight_numpy)
    monkeypatch.setattr(ir.ExternalTensor, "numpy", external_numpy)
    return tracker
