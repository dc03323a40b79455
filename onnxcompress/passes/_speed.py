"""The quantize pass's speed guard: int8 compute is kept only where it measures faster.

``with_speed_guard`` builds the int8 model on every candidate op, then on the heavier half, then
on none (int8 storage, float compute) and keeps the first attempt that is not slower than float;
``first_fast_enough`` is the attempt loop (decisions cached per machine in ``onnxcompress.cache``
so reruns are byte-identical); ``_Timer`` and ``alternate_latency`` do the timing, and
``structure_digest`` keys the cache on the graph's structure, not its weight values.

``latency_ratio`` times one written model against its input the same way for the passes that
only note or fall back (the float16 pass's fp16 compute, blockq's 4-bit blocks): one sample, one
thread, alternated, cached per machine and graph structure.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir
import onnxruntime as ort

from onnxcompress import __version__, cache, runtime
from onnxcompress.activations import quiet_run_options, run
from onnxcompress.data import Feed
from onnxcompress.errors import OnnxCompressError
from onnxcompress.memory import confirm_excess, guard_limit, guard_reading
from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, save_model, tensor_bytes
from onnxcompress.passes._int8_rows import fold_gathered_rows, gathered_rows, row_tables
from onnxcompress.passes._kmeans_int8 import FOLDED_TABLE_BYTES
from onnxcompress.passes._quant_plan import dynamic_ops, op_key
from onnxcompress.passes.base import PassContext, PassResult
from onnxcompress.stats import timing_section
from onnxcompress.synthetic import first_feed

if TYPE_CHECKING:
    from onnxcompress.passes._quant_config import QuantizeConfig

# int8 compute is kept only if it measures at least this much faster than float: marginal wins
# are within the noise of a shared machine, and the fallback (int8 storage, float compute) is
# exactly as fast as float and as small.
SPEED_MARGIN = 0.03
# DequantizeLinear weights (weights mode) may cost this much before the folded form takes over.
SPEED_TOLERANCE = 0.03


def with_speed_guard(cfg: QuantizeConfig, float_model: ir.Model | None, base: ir.Model,
                     candidates: list[tuple[str, int]], context: PassContext,
                     result: PassResult, build, fallback: list[tuple[str, int]] = ()) -> ir.Model:  # noqa: ANN001
    """Build with int8 compute on every candidate; while slower than float, on fewer.

    Attempts: all candidates, the heavier half (by multiply-adds per output), ``fallback`` (static
    mode: its MatMuls in dynamic's form, ``_int8_dynamic.static_fallback``), none (int8 storage
    only, which onnxruntime folds back to float weights at load: float speed). Without a
    measurement, every candidate: they are already chosen by op type and shape
    (``MIN_CONV_REDUCTION``, ``MIN_MATMUL_WEIGHTS``) as the ops where int8 pays.
    """
    ranked = [name for name, _ in sorted(candidates, key=lambda c: -c[1])]
    attempts = [ranked]
    if len(ranked) > 1:
        attempts.append(ranked[: len(ranked) // 2])
    if fallback and (spec := [n for n, _ in sorted(fallback, key=lambda c: -c[1])]) not in attempts:
        attempts.append(spec)
    if ranked:
        attempts.append([])
    model, chosen = first_fast_enough(
        cfg, float_model, base, attempts, context, result, build,
        describe=lambda c: f"{len(c)} int8 ops" + (
            f" ({n} MatMul/Gemm in dynamic int8)" if (n := dynamic_ops(c)) else ""),
        limit=lambda c: 1 - SPEED_MARGIN if c else 1 + SPEED_TOLERANCE)
    memory = result.metrics.get("int8_compute_memory_ratio")
    why = (f"int8 compute needed {memory:.2f}x the float model's session memory" if memory
           else "int8 compute measured slower than float on this CPU")
    kept = {op_key(name) for name in chosen}
    for name in ranked:
        if name not in kept:
            result.skip(name, f"{why}; weights stored in int8, compute float")
    result.metrics["int8_compute_ops"] = len(chosen)
    flag = "--quantize-allow-more-memory" if memory else "--allow-slower"
    if ranked and not chosen:
        result.headline(f"{why}: {result.metrics['mode']} int8 became weight-only int8 (float "
                        f"compute; {flag} keeps int8 compute)")
    elif moved := dynamic_ops(chosen):
        result.headline(f"{why.replace('int8 compute', 'static int8 (QDQ)')}: {moved} MatMul/Gemm "
                        f"compute in dynamic int8 instead (activations quantized at run time, as "
                        f"--quantize dynamic does; {flag} keeps the QDQ form)")
    return model


def first_fast_enough(cfg: QuantizeConfig, float_model: ir.Model | None, base: ir.Model,
                      attempts: list, context: PassContext, result: PassResult, build,  # noqa: ANN001
                      describe, limit=None,  # noqa: ANN001
                      unmeasured: int = 0) -> tuple[ir.Model, object]:
    """The first attempt whose int8/float latency is within ``limit(attempt)`` (default:
    not slower than float, with noise tolerance), or the last attempt, which is float speed
    by construction and is not timed. ``unmeasured``: the attempt taken when the model
    cannot be timed (it cannot run on the data at hand), chosen from op types and shapes.

    ``float_model`` (None: ``base`` before any build) is timed through one session shared by
    every attempt; only attempts that may be rejected are built on a copy of ``base``.
    """
    if not cfg.speed_check or cfg.allow_slower:
        attempts = attempts[:1]
        unmeasured = 0
    reference = float_model if float_model is not None else base
    key = None
    # int8 embedding rows decode a call (a float Gather copies): measured, even alone
    rows = cfg.speed_check and not cfg.allow_slower and row_tables(base)
    if len(attempts) > 1 or rows:
        # A close call measured twice can flip; reuse this machine's first measurement so
        # the same input and options give the same file (see onnxcompress.cache). Speed
        # depends on the graph and the shapes, not on weight values: the key is the
        # structure, so it costs no serialization of the weights.
        key = cache.decision_key(
            "quantize-speed-memory-guard", __version__, ort.__version__, cache.machine_id(),
            cfg.to_dict(),
            [sorted(map(str, a)) if isinstance(a, list) else str(a) for a in attempts],
            structure_digest(reference),
        )
        cached = cache.get_decision(key)
        if isinstance(cached, dict) and isinstance(cached.get("choice"), int) and \
                0 <= cached["choice"] < len(attempts):
            spec = attempts[cached["choice"]]
            model = build(base, spec, result)
            if cached.get("rows_folded"):
                _fold_rows(model, result, None)
            result.metrics.update(cached.get("metrics") or {})
            result.note(f"speed guard: {describe(spec)}, as measured on this machine before "
                        f"(cached in {cache.cache_dir()}; delete it to measure again)")
            return model, spec
    if not cfg.speed_check or (len(attempts) == 1 and not cfg.allow_slower and not rows):
        return build(base, attempts[0], result), attempts[0]  # nothing to decide
    timer = _Timer(reference, context)
    # Static int8 only: its Q/DQ activations between float ops are what needs more memory.
    # Dynamic int8 compute keeps its weights int8 in the session (bert_tiny: 31.9 MB live against
    # fp32's 37.9) and would pay ~1.8 s of measuring children on a first run for nothing.
    memory = _MemoryCheck(reference, timer.feed) if (
        timer.feed is not None and cfg.mode == "static" and not cfg.allow_more_memory) else None
    if timer.why_not is not None:
        spec = attempts[unmeasured]
        result.note(f"speed guard did not measure ({timer.why_not}): {describe(spec)}, "
                    "chosen from op types and shapes")
        return build(base, spec, result), spec
    history = []
    try:
        for i, spec in enumerate(attempts):
            context.report_progress("quantize: speed check", i, len(attempts))
            last = i == len(attempts) - 1
            scratch = _scratch(result, base)
            model = build(base if last else _copy(base), spec, scratch)
            bound = limit(spec) if limit is not None else 1 + SPEED_TOLERANCE
            folded = False
            if last and rows and gathered_rows(model):  # not float speed by construction
                ratio = timer.confirmed(model, scratch, 1 + SPEED_TOLERANCE)
                folded = ratio is not None and ratio > 1 + SPEED_TOLERANCE
            else:
                ratio = None if last and i > 0 else (
                    timer.ratio(model, scratch) if last else timer.confirmed(model, scratch, bound))
            if ratio is not None:
                history.append((describe(spec) + (" and int8 rows" if folded else ""), ratio))
            if folded and _fold_rows(model, scratch, ratio):  # not the model timed any more
                for k in ("latency_int8_ms", "latency_ratio"):
                    scratch.metrics.pop(k, None)
            ratio = None if folded else ratio
            if not last and ratio is not None and ratio > bound:
                continue
            # (static's dynamic-form attempt has no Q/DQ activations: not measured, as in dynamic mode)
            more = memory.excess(model) if memory is not None and not last and spec \
                and not dynamic_ops(spec) else None
            if more is not None:
                result.metrics["int8_compute_memory_ratio"] = round(more, 3)
                result.note(f"memory check: {describe(spec)} need {more:.2f}x the float model's "
                            "session memory (live, after one run): fewer int8 compute ops "
                            "(--quantize-allow-more-memory keeps them)")
                continue
            if ratio is None and timer.float_ms is not None:
                scratch.metrics["latency_float_ms"] = timer.float_ms
            _merge(result, scratch)
            if key is not None and (ratio is not None or last):
                timed = {k: scratch.metrics[k] for k in _LATENCY_METRICS if k in scratch.metrics}
                if "int8_compute_memory_ratio" in result.metrics:  # why int8 compute was given up
                    timed["int8_compute_memory_ratio"] = result.metrics["int8_compute_memory_ratio"]
                cache.put_decision(key, {"choice": i, "metrics": timed, "rows_folded": folded})
            if len(history) > 1 or (history and last):
                tried = ", ".join(f"{d}: {r:.2f}x" for d, r in history)
                result.note(f"speed guard (int8/float latency on this CPU): {tried}")
            if ratio is not None and ratio > 1 + SPEED_TOLERANCE:
                result.note(f"the int8 model measures {ratio:.2f}x the float latency"
                            + (" (kept: allow_slower)" if cfg.allow_slower else ""))
            return model, spec
    finally:
        timer.close()
        if memory is not None:
            memory.close()
    raise AssertionError("unreachable")


def _scratch(result: PassResult, base: ir.Model) -> PassResult:
    return PassResult(pass_name=result.pass_name, config=result.config, model=base)


def _fold_rows(model: ir.Model, result: PassResult, ratio: float | None) -> bool:
    """Fold the int8 embedding rows of ``model`` (measured ``ratio`` x float's) where a table's
    float copy is within what a fold may hold while loading, and say so; whether any folded."""
    folded, kept = fold_gathered_rows(model, result, FOLDED_TABLE_BYTES)
    ran = f"ran {ratio:.2f}x the float latency" if ratio is not None else "measured slower than float before"
    if folded:
        result.headline(f"int8 embedding rows ({_names(folded)}) {ran} on this CPU: tables stored in "
                        "int8, decoded at load (float speed; --allow-slower keeps int8 rows)")
    if kept:
        result.headline(f"int8 embedding rows ({_names(kept)}) {ran} on this CPU: kept, for session "
                        f"memory (a table over {FOLDED_TABLE_BYTES >> 20} MB as float, decoded at load, "
                        "would hold its float copy beside the int8 one)")
    return bool(folded)


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


class _MemoryCheck:
    """Whether an int8-compute attempt needs more onnxruntime session memory than the float
    model, read as auto's memory guard reads it (``memory.guard_reading``: live memory after one
    run on the timing feed, each in its own child with glibc's mmap threshold pinned) and an
    excess counted once a second reading of each side confirms it (``memory.confirm_excess``).
    Measured: seal_det static int8 (9 QLinearConv islands in float compute) 60.4 MB against fp32
    53.6; its weight-only form 54.0."""

    READINGS = 2  # per side, when the first says too much

    def __init__(self, reference: ir.Model, feed: Feed) -> None:
        self._reference = reference
        self._feed = dict(feed)
        self._dir = tempfile.TemporaryDirectory(prefix="onnxcompress-memcheck-")
        self._bases: list[int] = []

    def _measure(self, model: ir.Model | None, name: str) -> int | None:
        """The reading of ``model`` written as ``name`` (None: the file written last time)."""
        path = Path(self._dir.name) / name
        if model is not None:
            save_model(model, path, overwrite=True)
        return guard_reading(path, self._feed)

    def excess(self, model: ir.Model) -> float | None:
        """used / float when the attempt needs more than the float model beyond the guards'
        slack (confirmed), else None (also when it cannot be measured)."""
        if not self._bases:
            base = self._measure(self._reference, "float.onnx")
            if base is None:
                return None
            self._bases.append(base)
        used = self._measure(model, "int8.onnx")
        if used is None:
            return None
        confirmed = confirm_excess(lambda p: self._measure(None, Path(p).name), "float.onnx", "int8.onnx",
                                   self._bases, used, self.READINGS)
        if confirmed is None:
            return None
        base, used = confirmed
        return used / base if used > guard_limit(base) else None

    def close(self) -> None:
        self._dir.cleanup()


_LATENCY_METRICS = ("latency_float_ms", "latency_int8_ms", "latency_ratio")
# The speed guard times each attempt for about this long (alternating float and int8 runs).
# Decisions are cached, and int8 compute must win by SPEED_MARGIN: a short timing suffices.
GUARD_SECONDS = 0.6


class _Timer:
    """int8/float latency for the speed guard: one feed and one float session for every attempt.

    The feed is the first calibration sample, else one synthetic sample; when the float model
    cannot run on it (a reflect Pad longer than a guessed axis, a Concat whose widths must
    match...) ``why_not`` says so and nothing is timed.
    """

    def __init__(self, float_model: ir.Model, context: PassContext) -> None:
        self.why_not: str | None = None
        self.float_ms: float | None = None  # the last measured float latency
        self.session: ort.InferenceSession | None = None
        self.feed: Feed | None = None
        if tensor_bytes(float_model) > EXTERNAL_DATA_THRESHOLD:
            # Its float session and each int8 attempt's session held 4.6x a 0.3 GB external-data
            # model (issue 18); like the fidelity guard, large models are not measured (external
            # data alone is no reason: see _int8_guard.guard_weights).
            self.why_not = "the model is large (over 2 GB)"
            return
        feed, source = one_feed(float_model, context)
        if feed is None:
            self.why_not = source
            return
        try:
            self.session = runtime.create_session(float_model)
            names = {i.name for i in self.session.get_inputs()}
            self.feed = {k: v for k, v in feed.items() if k in names}
            run(self.session, None, self.feed, what=source)
        except OnnxCompressError as e:
            self.why_not = str(e).split(" Hint:")[0]
            self.session = None

    def ratio(self, model: ir.Model, result: PassResult) -> float | None:
        assert self.session is not None and self.feed is not None
        try:
            t_float, t_int8 = alternate_latency([self.session, model], self.feed,
                                                budget=GUARD_SECONDS)
        except OnnxCompressError as e:
            result.note(f"latency not measured: {str(e).split(' Hint:')[0]}")
            return None
        ratio = t_int8 / t_float if t_float > 0 else 1.0
        self.float_ms = round(t_float * 1e3, 3)
        result.metrics["latency_float_ms"] = self.float_ms
        result.metrics["latency_int8_ms"] = round(t_int8 * 1e3, 3)
        result.metrics["latency_ratio"] = round(ratio, 3)
        return ratio

    def confirmed(self, model: ir.Model, result: PassResult, bound: float) -> float | None:
        """``ratio``, and where that is within ``bound`` a second reading: the slower of the
        two. A reading within it is taken and cached for this machine, and one 0.6 s timing of
        a 66 ms model on a busy machine read 0.90 for a DequantizeLinear form that runs 1.12x
        (batch 23's style_mosaic, weight-only int8)."""
        first = self.ratio(model, result)
        if first is None or first > bound:
            return first
        kept = {k: result.metrics[k] for k in _LATENCY_METRICS if k in result.metrics}
        second = self.ratio(model, result)
        if second is None or second < first:
            result.metrics.update(kept)
            return first
        return second

    def close(self) -> None:
        self.session = None


def structure_digest(model: ir.Model) -> str:
    """A digest of the graph's structure: ops, attributes, connections, tensor types and shapes,
    and the values of small tensors (shapes, axes). Large weight values are left out: they do
    not change which kernels run or how fast, and hashing them would cost a pass over the file."""
    h = hashlib.sha256(repr(sorted(model.opset_imports.items())).encode())

    def tensor(t: ir.TensorProtocol) -> str:
        text = f"{t.dtype}{tuple(t.shape)}"
        if t.size <= _SMALL_TENSOR:
            text += t.tobytes().hex()
        return text

    def graph(g: ir.Graph) -> None:
        for v in (*g.inputs, *g.outputs):
            h.update(f"io {v.name} {v.dtype} {v.shape};".encode())
        for name, v in g.initializers.items():
            if v.const_value is not None:
                h.update(f"init {name} {tensor(v.const_value)};".encode())
        for n in g:
            ins = ",".join(v.name or "" if v is not None else "" for v in n.inputs)
            outs = ",".join(v.name or "" for v in n.outputs)
            h.update(f"{n.domain}::{n.op_type}({ins})->{outs}".encode())
            for k in sorted(n.attributes):
                a = n.attributes[k]
                if a.type == ir.AttributeType.GRAPH:
                    graph(a.value)
                elif a.type == ir.AttributeType.GRAPHS:
                    for sub in a.value:
                        graph(sub)
                elif a.type == ir.AttributeType.TENSOR:
                    h.update(f"{k}={tensor(a.value)}".encode())
                else:
                    h.update(f"{k}={a.value!r}".encode())
            h.update(b";")

    graph(model.graph)
    return h.hexdigest()


_SMALL_TENSOR = 1024


def _merge(result: PassResult, scratch: PassResult) -> None:
    for stat in scratch.layers:
        result.add_layer(stat)
    for reason, names in scratch.skipped.items():
        for name in names:
            result.skip(name, reason)
    for note in scratch.notes:
        result.note(note)
    result.headlines.extend(h for h in scratch.headlines if h not in result.headlines)  # logged once
    result.metrics.update(scratch.metrics)
    result.modified = result.modified or scratch.modified


def _copy(model: ir.Model) -> ir.Model:
    """A copy to build one speed-guard attempt on. It shares the weight tensors (no float copy
    of the model): building replaces a weight's tensor, never writes into it."""
    return model.clone()


def one_feed(model: ir.Model, context: PassContext) -> tuple[Feed | None, str]:
    """The first calibration sample, else one synthetic sample (``synthetic.first_feed``); with where
    it came from (or why there is none)."""
    return first_feed(model, context.calibration, seed=context.seed)


def alternate_latency(models: list[ir.Model | ort.InferenceSession], feed: Feed, *,
                      budget: float = 2.0, min_rounds: int = 7,
                      max_rounds: int = 5000) -> list[float]:
    """Median seconds per run of each model; runs alternate so load changes hit all alike.

    The first entry is the reference: every other entry is returned as the reference's median
    times the median of the per-round ratios, which is robust to load that drifts during timing.
    Entries may be sessions already created (the speed guard reuses the float one). Raises
    :class:`RuntimeUnavailableError` when a model cannot run on ``feed``.
    """
    with timing_section():  # background gzip waits: it would take a core from the runs
        return _alternate_latency(models, feed, budget=budget, min_rounds=min_rounds,
                                  max_rounds=max_rounds)


def _alternate_latency(models: list[ir.Model | ort.InferenceSession], feed: Feed, *,
                       budget: float, min_rounds: int, max_rounds: int) -> list[float]:
    sessions = [m if isinstance(m, ort.InferenceSession) else runtime.create_session(m)
                for m in models]
    names = [[i.name for i in s.get_inputs()] for s in sessions]
    feeds = [{k: feed[k] for k in n if k in feed} for n in names]
    quiet = quiet_run_options()
    for s, f in zip(sessions, feeds, strict=True):
        run(s, None, f, what="the timing sample", run_options=quiet)
        first = time.perf_counter()
        run(s, None, f, what="the timing sample", run_options=quiet)
        # A slow model gets fewer rounds: the budget is a time cap, not a round count.
        if time.perf_counter() - first > budget / (2 * min_rounds):
            min_rounds = 3
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget):
        order = range(len(sessions)) if rounds % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            t = time.perf_counter()
            sessions[i].run(None, feeds[i], quiet)
            times[i].append(time.perf_counter() - t)
        rounds += 1
    ref = statistics.median(times[0])
    out = [ref]
    for t in times[1:]:
        ratio = statistics.median(b / a for a, b in zip(times[0], t, strict=True) if a > 0)
        out.append(ref * ratio)
    return out


#: Why a model is not timed for its size: its fp16 compute is kept (a fallback would hold the
#: float32 model beside the fp16 one, two copies of a model this large).
TOO_LARGE_TO_TIME = "the model is large (over 2 GB)"


def latency_ratio(original: ir.Model, converted: ir.Model, context: PassContext,
                  config: dict, kind: str = "float16") -> tuple[float | None, str]:
    """converted / original latency on one sample (the first calibration sample, else a
    synthetic one), or None with the reason it was not measured; cached per machine and graph
    structure. ``kind``: the pass asking (fp16 compute here, blockq's 4-bit blocks)."""
    if tensor_bytes(original) > EXTERNAL_DATA_THRESHOLD:  # external data alone: see _int8_guard.guard_weights
        return None, TOO_LARGE_TO_TIME
    key = cache.decision_key(f"{kind}-speed-guard", "1 thread", __version__, ort.__version__,
                             cache.machine_id(), config, structure_digest(original),
                             structure_digest(converted))
    cached = cache.get_decision(key)
    if isinstance(cached, dict) and isinstance(cached.get("ratio"), (int, float)):
        return float(cached["ratio"]), "cached"
    feed, source = one_feed(original, context)
    if feed is None:
        return None, source
    context.report_progress(f"{kind}: speed check", 0, 1)
    try:
        # One thread: on a loaded 2-core machine, two-thread timings of nudenet moved 0.9-1.07x
        # between runs; single-thread ratios held (1.06-1.07x) and kernels rank alike.
        sessions = [runtime.create_session(m, threads=1) for m in (original, converted)]
        t_float, t_half = alternate_latency(sessions, feed, budget=GUARD_SECONDS)
    except OnnxCompressError as e:
        return None, str(e).split(" Hint:")[0]
    ratio = round(t_half / t_float, 3) if t_float > 0 else 1.0
    cache.put_decision(key, {"ratio": ratio})
    return ratio, source


def too_slow(ratio: float) -> bool:
    return ratio > 1 + SPEED_TOLERANCE


def kept_compute_pays(model: ir.Model, chosen: list[str], weight_only: Callable[[], ir.Model],
                      context: PassContext, result: PassResult) -> bool:
    """Whether ``model``, with int8 compute on ``chosen`` only (what the fidelity guard's
    compute check kept of the set the speed guard timed), is still SPEED_MARGIN faster than
    ``weight_only()`` (its float-compute build, made only when the speed check runs), and in
    static mode no heavier in session memory (``_MemoryCheck``: the guard measured the set it
    timed, not this one). A few isolated int8 ops, each with its own Q/DQ, can cost more than
    they save: FastDepth static (batch 27) timed 18 int8 convs at 0.97x, kept 6 and ran 1.07x
    its weight-only form; mrz_seg static (batch 39) kept 3 of 7 at 1.17x fp32's live memory.
    True when it cannot be measured (the guard's choice stands)."""
    cfg = result.config or {}
    if not cfg.get("speed_check", True):
        return True
    mode = result.metrics.get("mode") or cfg.get("mode")
    if not cfg.get("allow_slower"):
        ratio, _ = latency_ratio(weight_only(), model, context, cfg, kind=f"int8-compute-{len(chosen)}")
        if ratio is not None and ratio > 1 - SPEED_MARGIN:
            result.headline(f"speed guard: the {len(chosen)} int8 compute op(s) the fidelity guard kept "
                            f"measure {ratio:.2f}x the latency of float compute: {mode} "
                            "int8 became weight-only int8 (float compute; --allow-slower keeps them)")
            return False
    feed = one_feed(model, context)[0] if mode == "static" and not cfg.get("allow_more_memory") else None
    if feed is None:
        return True
    check = _MemoryCheck(weight_only(), feed)
    try:
        more = check.excess(model)
    finally:
        check.close()
    if more is None:
        return True
    result.metrics["int8_compute_memory_ratio"] = round(more, 3)
    result.headline(f"memory check: the {len(chosen)} int8 compute op(s) the fidelity guard kept need "
                    f"{more:.2f}x the session memory of float compute (live, after one run): static "
                    "int8 became weight-only int8 (--quantize-allow-more-memory keeps them)")
    return False
