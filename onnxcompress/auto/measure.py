"""Measurements auto mode makes: model outputs on data, decoded weights, latency and memory."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxcompress._report_weights import _decode
from onnxcompress.weights import Weight

#: Feeds per layer and option for the sensitivity probe (one forward pass each).
PROBE_SAMPLES = 8
LATENCY_RUNS = 20


def save_feeds(path: Path, feeds: list[Mapping[str, np.ndarray]]) -> None:
    """Feeds as one .npz (``i/name`` keys), for tasks that run in other processes."""
    np.savez(path, **{f"{i}/{k}": np.asarray(v) for i, feed in enumerate(feeds) for k, v in feed.items()})


def probe_feeds(path: str | Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as data:
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            i, name = key.split("/", 1)
            feeds.setdefault(int(i), {})[name] = data[key]
    return [feeds[i] for i in sorted(feeds)]


def decode_weight(proto: onnx.ModelProto, weight: Weight) -> np.ndarray | None:
    """The value ``weight``'s first consumer reads in ``proto`` (the compressed model), computed
    by onnxruntime from the constant subgraph that decodes it; None if it is not constant or its
    shape changed."""
    for use in weight.uses:
        value = _decode(proto, use.node.name or "", use.index, int(weight.dtype))
        if value is not None:
            return value if value.shape == tuple(weight.shape) else None
    return None


def run_outputs(model: Any, feeds: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every output of ``model`` (a path or model) on each feed, stacked on axis 0."""
    from onnxcompress.runtime import create_session

    session = create_session(model, label="the auto-mode candidate")
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        outs = session.run(None, {k: v for k, v in feed.items() if k in inputs})
        for n, o in zip(names, outs, strict=True):
            rows[n].append(np.asarray(o))
    return {n: _stack(v) for n, v in rows.items()}


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    # A batch of 1 per feed stacks along its batch axis; scalars and unbatched outputs get one.
    if all(p.ndim >= 1 and p.shape[0] == 1 for p in parts):
        return np.concatenate(parts, axis=0)
    return np.stack(parts, axis=0)


def objective_cost(path: Path, objective: str, feed: Mapping[str, np.ndarray]) -> float:
    """The model at ``path`` measured on this machine: median seconds per run (latency) or
    resident session memory in bytes (memory)."""
    if objective == "memory":
        from onnxcompress.memory import session_memory

        m = session_memory(path, dict(feed), threads=1)
        return float(m.resident_bytes or 0)
    from onnxcompress.runtime import create_session

    session = create_session(str(path), label="the latency probe")
    inputs = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in inputs}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
