"""The int8 fidelity guard's measuring helpers: the bisection search that finds the weights whose
int8 rounding alone moves the outputs, the choice of their steps within a byte budget, the top-1
flip rate of sequence outputs, and a model's size as it will be saved (``_int8_guard`` uses them).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.outputs import CLASS_AXIS_MIN, CLASS_POSITIONS, head_op
from onnxcompress.passes._bit_allocation import output_deviation
from onnxcompress.passes._half_store import fits_half_finite
from onnxcompress.passes._qdq import ZEROED_SHARE, zeroed_share

if TYPE_CHECKING:
    from onnxcompress.passes._int8_guard import Guard
    from onnxcompress.weights import Weight

# Samples each search run measures (fewer for a heavy model: see PROBE_MACS).
PROBE_SAMPLES = 2
# The search stops after this much work (~2-4 s on one core at 15-30 GMAC/s; at least one
# split): ppocr_det (1.7 GMAC a sample) gets ~35 runs of 1 sample, bert_tiny every weight.
PROBE_MACS = 6e10
# ... but at least this many runs, whatever a sample costs: enough to bisect 16-64 weights down
# to two or three outliers. SPyNet (15.7 GMAC a pair) stopped after its first split, no weight
# measured alone, and its data-free int8 moved 2.6% of the flow's pixels by over 1 px.
PROBE_MIN_RUNS = 16

# A step that refines a weight already stepped (int8 blocks -> float16) must cut at least this
# share of the deviation estimated to be left (synthetic guard samples): superres' last conv in
# blocks of 32 keeps 9.7% of its alone deviation, 8.5% of what is left, and float16 takes it
# (PSNR vs fp32 36.5 -> 40.9 dB); sre_embed's five attention weights in blocks keep 1-3% of what
# is left each, and 590 KB of float16 apiece bought nothing measurable (3.87x -> 3.54x, mean
# cosine 0.99977 -> 0.99962 on 32 sentences).
MIN_REFINE_GAIN = 0.05


def choose(probed: Mapping[str, float], threshold: float, deviation: float,
           options: Mapping[str, Sequence[tuple[str, int, float]]],
           budget: int, floor: float = 0.0) -> tuple[dict[str, str], int]:
    """The outliers' steps within ``budget`` extra bytes. ``options``: per outlier its steps
    as (kind, extra bytes over the int8 codes, the share of its alone deviation estimated to
    be left: its decoded error's squared norm over int8 per channel's). Greedy on deviation
    bought per byte (the lower convex hull of each weight's steps, taken in order): a stem
    conv of 432 weights in float16 before a 230k-weight neck conv, int8 blocks (1/8 of the
    int8 bytes) before float16 where blocks buy most of a weight's error back; a weight already
    stepped refines only for ``MIN_REFINE_GAIN`` of the deviation left (``deviation``: the
    int8 model's, less what the steps taken bought) and while that is over ``floor`` (the
    guard's ``DEVIATION_FLOOR``, under which it searches for nothing: sre_embed with calibration
    data, 2.8e-4 -> 7e-5 with blocks, spent 1.5 MB more on float16 for cosine 0.99992 ->
    0.99993). Returns (label -> kind, bytes left)."""
    outliers = sorted(k for k, d in probed.items() if d >= threshold and options.get(k))
    taken: dict[str, tuple[str, int, float]] = {}  # label -> (kind, bytes, residual share)
    left, remaining = budget, deviation
    while True:
        best = None
        for label in outliers:
            kind, spent, residual = taken.get(label, ("", 0, 1.0))
            for step, cost, share in options[label]:
                extra, gain = cost - spent, probed[label] * (residual - share)
                if extra <= 0 or gain <= 0 or extra > left:
                    continue
                if kind and (gain < MIN_REFINE_GAIN * remaining or remaining <= floor):
                    continue
                if best is None or gain / extra > best[0]:
                    best = (gain / extra, label, (step, cost, share), extra, gain)
        if best is None:
            break
        _, label, chosen, extra, gain = best
        taken[label] = chosen
        left -= extra
        remaining = max(remaining - gain, 0.0)
    return {k: v[0] for k, v in taken.items()}, left


def step_options(outliers: list[Weight], int8_values: Mapping[str, np.ndarray],
                 block_values: Callable[[str], tuple[np.ndarray, int] | None], half: bool,
                 ) -> tuple[dict[str, list[tuple[str, int, float]]], dict[tuple[str, str], np.ndarray]]:
    """Each outlier's steps for ``_int8_search.choose`` (kind, extra bytes, the share of its
    int8 error's squared norm left: what its alone deviation is estimated to keep) and their
    decoded values: int8 blocks where the layout allows, then float16 (``half`` and
    ``halves``) or float."""
    options: dict[str, list[tuple[str, int, float]]] = {}
    decoded: dict[tuple[str, str], np.ndarray] = {}
    for w in outliers:
        arr = w.numpy()
        error = _squared(int8_values[w.label], arr)
        if error <= 0:
            continue
        steps = []
        blocked = block_values(w.label)
        if blocked is not None:
            decoded[w.label, "block"] = blocked[0]
            steps.append(("block", blocked[1], _squared(blocked[0], arr) / error))
        if half and halves(w):
            decoded[w.label, "half"] = value = arr.astype(np.float16).astype(arr.dtype)
            steps.append(("half", float_step(w, True), _squared(value, arr) / error))
        else:
            steps.append(("float", float_step(w), 0.0))
        options[w.label] = steps
    return options, decoded


def _squared(decoded: np.ndarray, arr: np.ndarray) -> float:
    return float(np.sum(np.square(decoded.astype(np.float64) - arr)))


def float_step(w: Weight, half: bool = False) -> int:
    """The bytes ``w`` keeps over its int8 codes where it stays float (3/4 of a float32
    weight's, 1/2 of a float16 one's); ``half``: a float32 weight stored float16 (the caller
    found ``halves``), 1/2 of its bytes over the codes."""
    return (w.nbytes // 2 if half else w.nbytes) - w.size


def halves(w: Weight) -> bool:
    """Whether a float step of ``w`` is stored float16 (a float32 weight within float16's
    range): its values move 2^-11 of themselves at most, 1/16 of int8's step at its largest
    value, so the guard's outliers keep what they stepped down for at a third of the bytes.
    superres' last conv (9 x 32 x 3 x 3, heavy-tailed: max 12x its RMS): int8 per channel
    alone PSNR 29 dB against fp32, in blocks of 32 42 dB, float16 88 dB."""
    return w.dtype == ir.DataType.FLOAT and fits_half_finite(w.numpy())


def half_steps(labels: Sequence[str], weights: Mapping[str, Weight], left: int,
               half: bool) -> tuple[dict[str, str], int]:
    """float16 (float where ``half`` does not allow it: ``halves``) for ``labels``, in that order,
    while each fits in ``left`` bytes: (label -> "half" | "float", the bytes left)."""
    steps: dict[str, str] = {}
    for label in labels:
        step = "half" if half and halves(weights[label]) else "float"
        cost = float_step(weights[label], step == "half")
        if cost <= left:
            steps[label], left = step, left - cost
    return steps, left


def block_steps(labels: Sequence[str], block_values: Callable[[str], tuple[np.ndarray, int] | None],
                left: int) -> tuple[dict[str, str], dict[str, np.ndarray], int]:
    """int8 blocks for ``labels``, in that order, while their scales fit in ``left`` bytes:
    (label -> "block", label -> blocked decoded value, the bytes left)."""
    steps: dict[str, str] = {}
    blocks: dict[str, np.ndarray] = {}
    for label in labels:
        blocked = block_values(label)
        if blocked is not None and blocked[1] <= left:
            steps[label], left = "block", left - blocked[1]
            blocks[label] = blocked[0]
    return steps, blocks, left


def probe_samples(guard: Guard) -> list[int]:
    """The samples each probe runs: PROBE_SAMPLES, fewer for a heavy model (never 0)."""
    n = min(PROBE_SAMPLES, len(guard.references))
    while n > 1 and guard.macs * n * 8 > PROBE_MACS:
        n -= 1
    return list(range(n))


def search(guard: Guard, fed: Mapping[str, np.ndarray], labels: list[str], total: float,
            threshold: float, samples: list[int]) -> tuple[dict[str, float], int, int]:
    """Deviation alone of every weight that can reach ``threshold``, by bisection: a group of
    weights int8 together (the rest float) moves the outputs about as far as its members alone
    added up, so a group below the threshold holds no outlier and is not split. The worst group
    is split first, in halves (graph order), until every group left is under the threshold or
    PROBE_MACS (or PROBE_MIN_RUNS runs) is spent. Cost: about 2 runs x log2(weights) per
    outlier, on ``samples``. Returns (label -> deviation alone, for the weights measured alone;
    sample runs taken; weights left in groups over the threshold when the budget ran out)."""
    refs = guard.references

    def measure(group: list[str]) -> float:
        over = {k: fed[k] for k in group}
        return float(np.mean([output_deviation(guard.run(over, i),
                                               refs[i][:guard.n_final]) for i in samples]))

    probed: dict[str, float] = {}
    order = 0
    heap: list[tuple[float, int, list[str]]] = [(-total, order, labels)]
    runs, unexamined = 0, 0
    budget = max(PROBE_MACS, PROBE_MIN_RUNS * max(guard.macs, 1))
    while heap:
        d, _, group = heapq.heappop(heap)
        if -d < threshold:
            break  # every group left is under the threshold: no outlier in it
        if len(group) == 1:
            probed[group[0]] = -d
            continue
        if runs and max(guard.macs, 1) * (runs + 2 * len(samples)) > budget:
            # a heavy model's search stops early (compress time), worst groups done
            unexamined = len(group) + sum(len(g) for dev, _, g in heap if -dev >= threshold)
            break
        half = (len(group) + 1) // 2
        for part in (group[:half], group[half:]):
            dev = measure(part)
            runs += len(samples)
            order += 1
            if len(part) == 1:
                probed[part[0]] = dev
            if len(part) > 1 or dev >= threshold:
                heapq.heappush(heap, (-dev, order, part))
    return probed, runs, unexamined


#: A Sigmoid output within this of 0 or 1 everywhere on every sample is saturated there: the
#: samples show nothing of it (ppocr_det's text map on synthetic pictures peaks at 2.8e-5, and
#: the guard's relative deviation, ~1 of that, was noise: 0 or 39 steps from a 2^-11 change).
SATURATED = 1e-3


def saturated_note(model: ir.Model, references: list[list[np.ndarray]]) -> str | None:
    """A headline when every float output of ``model`` is a Sigmoid's and saturated on every
    sample of ``references`` (the float model's outputs, per sample), else None."""
    peaks = []
    for i, value in enumerate(model.graph.outputs):
        refs = [np.asarray(sample[i]) for sample in references if i < len(sample)]
        if not refs or not all(np.issubdtype(r.dtype, np.floating) and r.size for r in refs):
            continue
        if head_op(value) != "Sigmoid":
            return None
        peaks.append(max(float(np.minimum(r, 1 - r).max()) for r in refs))
    if not peaks or max(peaks) > SATURATED:
        return None
    return (f"fidelity guard: its synthetic samples leave every output saturated (within "
            f"{max(peaks):.1e} of 0 or 1), so what it measured says little of real inputs; "
            "--calibration measures those")


def top1_flips(outs: list[np.ndarray], refs: list[np.ndarray],
               scores: list[bool] | None = None, heatmaps: Mapping[int, int] | None = None) -> float:
    """Share of positions whose top-1 class changes, over the outputs that are sequences of
    class scores (see CLASS_AXIS_MIN: logits, probabilities, vocabulary scores); positions where
    the reference's top two are exactly equal (saturated maps) do not count. What a top-1, CTC
    or token-agreement metric sees, which a mean squared deviation averages away (bert_tiny's
    token agreement moves through near-ties of its vocabulary logits). ``scores``: which
    outputs are class scores (``class_score_outputs``); None: every output of that shape.
    ``heatmaps``: output index -> channel axis of keypoint heat maps (``heatmap_outputs``),
    whose present peaks count, each by how near it came to moving past a neighbouring cell
    (its flip ratio, at most 1: ``keypoint_ratios``). The guard's few samples hold few peaks
    (bodypix_s8: 2 samples, ~20 joints), where a count of moves reads 0 for the 2-5% that move
    on real data; the ratios see how far each peak's lead fell."""
    flipped, total = 0.0, 0
    if heatmaps:
        from onnxcompress.validation.keypoints import keypoint_ratios
    for i, axis in (heatmaps or {}).items():
        if i < len(outs) and np.shape(outs[i]) == np.shape(refs[i]):
            ratios = keypoint_ratios(refs[i], outs[i], axis)
            flipped, total = flipped + float(np.minimum(ratios, 1.0).sum()), total + len(ratios)
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        if scores is not None and not (i < len(scores) and scores[i]):
            continue
        r = np.asarray(r)
        if not np.issubdtype(r.dtype, np.floating) or np.shape(o) != r.shape or r.ndim != 3 \
                or r.shape[-1] < CLASS_AXIS_MIN or r.shape[0] * r.shape[1] > CLASS_POSITIONS:
            continue
        r2 = r.reshape(-1, r.shape[-1])
        top = np.partition(r2, -2, axis=-1)[:, -2:]
        clear = top[:, 1] > top[:, 0]
        flipped += int(np.sum((np.asarray(o).reshape(r2.shape).argmax(-1) != r2.argmax(-1))
                              & clear))
        total += int(clear.sum())
    return flipped / total if total else 0.0


def heatmap_outputs(model: ir.Model, references: list[list[np.ndarray]]) -> dict[int, int]:
    """Output index -> channel axis of the outputs that are keypoint heat maps
    (``validation.keypoints``) over every sample of ``references`` (the float model's outputs,
    per sample), for ``top1_flips``: batch 27's bodypix_s8 static int8 moved twice weight-only's
    share of its joints (PCK 94.9 against 97.0), and the compute check counted none of them."""
    from onnxcompress.validation.keypoints import heatmap_heads, keypoint_heatmaps

    heads = heatmap_heads(model)
    names = [v.name for v in model.graph.outputs]
    stacked = {}
    for i in range(min(map(len, references), default=0)):
        shapes = {np.shape(sample[i])[1:] for sample in references}
        if len(shapes) == 1 and i < len(names) and names[i] in heads:
            stacked[i] = np.concatenate([np.asarray(sample[i]) for sample in references])
    return keypoint_heatmaps(stacked)


def written_bytes(model: ir.Model) -> int:
    """:func:`model_bytes` of a model a pass built, as the pipeline writes it after the passes:
    the intermediate annotations shape inference gives back dropped, long names hashed
    (``graph.names.shorten_names``). Handpose static (batch 12): 1.19 MB before writing, against
    3.5x's 1.17 MB, so two weight steps went back to int8 (1 of 32 hands changed) for a file
    written at 1.02 MB, 3.81x."""
    from onnxcompress.graph.names import shorten_names

    return model_bytes(model, annotations=False) - shorten_names(model, dry_run=True)


def model_bytes(model: ir.Model, *, annotations: bool = True) -> int:
    """Serialized size of ``model`` as it will be saved: external data inlined, initializers no
    node reads and the debug info the pipeline strips after the passes (the dynamo exporter's
    per-node stack traces: 82 KB of ssd_detector's 1.5 MB int8 file) left out; ``annotations``
    False: the intermediate values' types too."""
    from onnxcompress.model import to_proto

    unused = sum(v.const_value.nbytes for v in model.graph.initializers.values()
                 if v.const_value is not None and not v.uses() and not v.is_graph_output())
    proto = to_proto(model)
    for node in proto.graph.node:
        node.ClearField("doc_string")
        del node.metadata_props[:]
    for v in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        v.ClearField("doc_string")
        del v.metadata_props[:]
    if not annotations:
        del proto.graph.value_info[:]
    return proto.ByteSize() - unused


#: How the weight steps' headline starts (rewritten when steps are given back for size).
STEPS_HEADLINE = "fidelity guard (weights): "
#: ... and that of the steps no sample measured (``unscaled_headline``: dropped with them).
UNSCALED_HEADLINE = "fidelity guard: no calibration data, and "


def unscaled_headline(labels: list[str], steps: Mapping[str, str],
                      unscaled: Mapping[str, tuple[str, int, float]]) -> str:
    """What the guard did to input layers of unknown feature scales (``synthetic.unscaled_features``)."""
    inputs = sorted({unscaled[k][0] for k in labels})
    kept = "float16" if all(steps[k] == "half" for k in labels) else "float"
    return (f"{UNSCALED_HEADLINE}{name_list(labels)} read(s) {', '.join(repr(i) for i in inputs)} as "
            f"features its weights scale up to {max(unscaled[k][2] for k in labels):.0f}x apart (raw "
            f"values of unlike units): int8's error there follows their real spreads, which synthetic "
            f"samples do not have, so it is stored {kept} (--calibration measures it)")


def name_list(labels: list[str], limit: int = 6) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def restate_steps(result, steps: Mapping[str, str], compounding: Collection[str],  # noqa: ANN001
                  unscaled: Collection[str]) -> None:
    """Replace the steps' headline, which told of a model the built one no longer is (steps
    given back for size: superres' "conv4 steps down to float" above a table listing it at 8
    bits; LSTM weights rewritten to DynamicQuantizeLSTM), by one naming the outlier steps that
    stayed (``steps`` past the recurrent and data-free ones), or none."""
    result.headlines[:] = [h for h in result.headlines if not h.startswith(STEPS_HEADLINE)]
    named = [k for k in steps if k not in compounding and k not in unscaled]
    if named:
        result.headline(f"{STEPS_HEADLINE}{name_list(named)} step down from int8 per channel "
                        "(their output error an outlier); --no-fidelity-guard keeps them")


#: How the note on recurrent weights in blocks starts (``compounding_note``).
COMPOUNDING_NOTE = "fidelity guard: recurrent weights"


def compounding_note(labels: list[str]) -> str:
    """The note naming recurrent weights stored in int8 blocks whatever was measured."""
    from onnxcompress.passes._int8_fine import BLOCK

    return (f"{COMPOUNDING_NOTE} (a cell's error compounds over its time steps) stored int8 in "
            f"blocks of {BLOCK}: {name_list(labels)}")


def zeroed_weights(weights: Sequence[Weight], int8_values: Mapping[str, np.ndarray],
                   taken: Collection[str]) -> dict[str, float]:
    """Labels (largest weight first, not in ``taken``) whose ``int8_values`` are zero for
    ``_qdq.ZEROED_SHARE`` or more of their nonzero float values, with that share: stepped to
    int8 in blocks whatever was measured (the guard's samples did not show it)."""
    out = {}
    for w in sorted(weights, key=lambda w: -w.size):
        if w.label in int8_values and w.label not in taken \
                and (share := zeroed_share(w.numpy(), int8_values[w.label])) >= ZEROED_SHARE:
            out[w.label] = share
    return out


def zeroed_note(zeroed: Mapping[str, float]) -> str:
    """The note naming weights stored in int8 blocks because per channel rounds them to zero."""
    from onnxcompress.passes._int8_fine import BLOCK, NBITS_BLOCK

    return (f"fidelity guard: int8 per channel rounds {max(zeroed.values()):.0%} of "
            f"{name_list(list(zeroed))}'s nonzero weights to zero (one scale a channel over weights "
            f"decades apart), so it is stored int8 in blocks (a MatMul/Gemm weight in MatMulNBits, "
            f"{NBITS_BLOCK} inputs a block; else {BLOCK})")


def unmeasured(metrics: Mapping[str, Any]) -> set[str]:
    """The guard's steps taken whatever was measured: input layers of unknown feature scales
    (``unscaled``) and weights int8 per channel zeroes (``zeroed``)."""
    return set(metrics.get("unscaled", ())) | set(metrics.get("zeroed", ()))


def within_size(metrics: dict[str, Any], out: ir.Model, limit: float, keep: dict[str, str],
                 chosen: list[str], rebuild: Callable[[list[str]], ir.Model],
                 result) -> ir.Model:  # noqa: ANN001
    """The weight steps' byte budget is estimated before anything is built (Q/DQ pairs, scales
    and graph add 1-6% the estimate cannot see: ppocr_rec static 3.36x with its steps): measure
    the built model, and while it is over ``limit`` bytes give back the steps that bought the
    least deviation per byte, enough of them to cover the excess, and rebuild (3 rounds)."""
    probed = metrics.get("probed", {})
    sizes = metrics.get("step_bytes", {})
    unscaled = unmeasured(metrics)  # given back last: no sample measured them
    dropped: list[str] = []
    for _ in range(3):
        excess = written_bytes(out) - limit
        if excess <= 0 or not keep or excess > sum(sizes.get(k, 0) for k in keep):
            break  # within the limit, or over it with no step at all: steps stay (budgeted)
        for label in sorted(keep, key=lambda k: (k in unscaled, probed.get(k, 0.0) / max(sizes.get(k, 1), 1),
                                                 k)):
            excess -= sizes.get(label, 0)
            dropped.append(label)
            del keep[label]
            if excess <= 0:
                break
        out = rebuild(chosen)
    if dropped:
        metrics["steps"] = dict(keep)
        metrics["steps_dropped_for_size"] = dropped
        if set(metrics.get("unscaled", ())) & set(dropped):
            result.headlines[:] = [h for h in result.headlines if not h.startswith(UNSCALED_HEADLINE)]
        for key in ("unscaled", "zeroed"):
            if set(metrics.get(key, ())) & set(dropped):
                metrics[key] = [k for k in metrics[key] if k in keep]
        restate_steps(result, keep, metrics.get("compounding", ()), unscaled)
        result.note(f"fidelity guard: {len(dropped)} weight step(s) given back to int8 per "
                    f"channel to keep the model {limit:.0f} bytes or smaller: {name_list(dropped)}")
    return out
