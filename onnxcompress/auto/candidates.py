"""Per-layer options for auto mode, taken from the existing passes' per-layer knobs, and their
pricing.

An option (a :class:`Candidate`) is a codec at one setting: ``kmeans4`` (k-means weight sharing,
16 values per layer codebook: ``layer_bits``), ``int8`` (quantize ``mode=weights``, restricted to
its layers with ``exclude``), ``int4`` (the ``blockq`` pass when it is registered), ``fp16``
(float16 storage + Cast: the bfloat16 pass with ``dtype=float16``), and pruning followed by
k-means on the same layer (``prune50+kmeans4``, ``prune70+kmeans3``, ``nm24+kmeans4``: the prune
pass limited by ``exclude``, then the layer's ``layer_bits``). ``float`` leaves the layer alone.

Pruning is priced like every option (measured bytes, latency or memory, measured output error),
but its zeros are stored as an index like any other value and onnxruntime's CPU kernels do not
skip them, so a pruned option costs what its k-means width costs with more error: it never lies
on a layer's lower hull, and measuring it costs one more pipeline run. It is therefore offered
only when asked for (``PRUNING_CANDIDATES``, ``search(candidates="all")``); channel pruning changes
neighbouring layers too, so it is no choice one layer can make alone.

Pricing measures instead of modelling: one *uniform* run per option (the pass applied to every
candidate layer at once, with the pass's own layer statistics giving each layer's bytes), the
decoded weights read back from that model through onnxruntime, and the sensitivity probe telling
how far the outputs move when only that layer takes its decoded value. One pipeline run and one
probe session per option, whatever the number of layers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxcompress.passes import registered_passes
from onnxcompress.passes._float_rest import REST_ROLES
from onnxcompress.weights import COMPUTE_ROLES, Weight, WeightIndex

logger = logging.getLogger(__name__)

KMEANS_BITS = (2, 3, 4, 5, 6, 7, 8)
#: Layers below this many values stay float: an option would save less than its decode nodes cost.
MIN_CANDIDATE_SIZE = 64
#: k-means statistics use at most this many calibration feeds (the first ones), so a recipe
#: replayed with the same --calibration file uses exactly the samples the search used.
KMEANS_CALIBRATION_SAMPLES = 64
OBJECTIVES = ("size", "latency", "memory")


@dataclass(frozen=True)
class Candidate:
    """One per-layer option: a name used in plans, the pass that applies it and its setting.
    ``pass_name`` "prune": ``setting`` is the sparsity in percent, or ``pattern`` an N:M pattern,
    and ``then_bits`` the k-means width applied to the pruned layer (0: none)."""

    name: str
    pass_name: str
    setting: int = 0
    pattern: str = "unstructured"
    then_bits: int = 0

    @property
    def is_float(self) -> bool:
        return self.pass_name == ""

    @property
    def kmeans_bits(self) -> int:
        """The layer's k-means width in the recipe (0: k-means leaves it alone)."""
        if self.pass_name == "kmeans":
            return self.setting
        return self.then_bits if self.pass_name == "prune" else 0


FLOAT = Candidate("float", "")
#: Pruning + k-means on one layer: offered with ``candidates="all"`` (see the module docstring).
PRUNING_CANDIDATES = (
    Candidate("prune50+kmeans4", "prune", 50, "unstructured", 4),
    Candidate("prune70+kmeans3", "prune", 70, "unstructured", 3),
    Candidate("nm24+kmeans4", "prune", 50, "2:4", 4),
)


def available_candidates(which: str = "default") -> list[Candidate]:
    """The options this installation offers, most compressed first within each codec.
    ``which``: "default", or "all" (adds :data:`PRUNING_CANDIDATES`)."""
    if which not in ("default", "all"):
        raise ValueError(f"candidates must be 'default' or 'all', got {which!r}")
    passes = registered_passes()
    out = [Candidate(f"kmeans{b}", "kmeans", b) for b in KMEANS_BITS] if "kmeans" in passes else []
    if "quantize" in passes:
        out.append(Candidate("int8", "quantize", 8))
    if "blockq" in passes:  # 4-bit block quantization (MatMulNBits), merged on some builds
        out.append(Candidate("int4", "blockq", 4))
    if "bfloat16" in passes:
        out.append(Candidate("fp16", "bfloat16", 16))
    if which == "all" and "prune" in passes and "kmeans" in passes:
        out.extend(PRUNING_CANDIDATES)
    return out


def by_name(name: str) -> Candidate:
    if name == FLOAT.name:
        return FLOAT
    for c in available_candidates("all"):
        if c.name == name:
            return c
    raise KeyError(name)


def candidate_weights(model: Any) -> list[Weight]:
    """Weights auto mode may choose for: float compute weights large enough to be worth a decode
    node. Those inside If/Loop/Scan bodies (``scope``) cannot be fed to the probe: their output
    error is estimated from their weight error (see ``search._fill_unprobed``). Constants only
    overlapping Slices read (an LSTM's gates sliced from one matrix, silero_vad) are weights too:
    k-means compresses them in place, the other codecs leave them alone."""
    out = []
    for w in _weights(model):
        if w.role not in COMPUTE_ROLES or not w.is_float or w.size < MIN_CANDIDATE_SIZE:
            continue
        out.append(w)
    return out


def recipe_labels(model: Any) -> list[str]:
    """The labels a plan's recipe limits each codec by (``exclude``: every label not given to
    it): not biases and norm parameters, which the last weight pass then stores in float16 as the
    uniform passes do (transformer_digits: 8 KB of its 56 KB plan had stayed float32)."""
    return [w.label for w in WeightIndex.build(model) if w.role not in REST_ROLES]


def _weights(model: Any) -> list[Weight]:
    """The weight index plus the constants the k-means pass takes where they are
    (``_kmeans_select._shape_read``: shape-read weights, PReLU slope tables), labelled as
    k-means labels them; a slope table the index holds as an elementwise constant is the
    k-means pass's weight (MEGnet: 22% of the weights, left float by auto at 3.29x)."""
    from onnxcompress.passes._kmeans_select import _shape_read

    in_place = {w.label: w for w in _shape_read(model)}
    found = [in_place.pop(w.label, w) for w in WeightIndex.build(model)]
    return found + list(in_place.values())


def _read_in_subgraphs(w: Weight) -> bool:
    """Whether every reader of ``w`` sits in a subgraph of the graph that holds ``w``."""
    return bool(w.uses) and all(u.node.graph is not w.graph for u in w.uses)


def escape(label: str) -> str:
    """``label`` as a shell pattern matching only itself (``[`` ``*`` ``?`` are pattern syntax)."""
    return "".join(f"[{ch}]" if ch in "[]*?" else ch for ch in label)


def pass_steps(assignment: dict[str, Candidate], all_labels: Sequence[str], *,
               calibration_samples: int = KMEANS_CALIBRATION_SAMPLES,
               pricing: bool = False, objective: str = "size") -> list[dict[str, Any]]:
    """The recipe steps that give each label its candidate and leave every other weight alone.

    Pruning goes first (one prune pass per sparsity or pattern, limited by ``exclude``: the zeros
    it makes are kept exact by k-means), then k-means (it folds BatchNorm into the Conv before it,
    as the pricing base did), one ``layer_bits`` entry per layer and ``*=0`` for the rest; each
    other codec is one pass limited to its layers by ``exclude`` (every other weight label).
    ``pricing``: the form the pricing run needs to read decoded weights back (4-bit blocks as
    standard DequantizeLinear instead of MatMulNBits: the same values and bytes, but a constant
    subgraph onnxruntime can evaluate; int8 as DequantizeLinear, whose input is the decoded
    weight). ``objective``: int8 Conv weights are written folded (a Cast onnxruntime folds at
    load, as k-means 8's int8-exact form is) unless the objective is memory, where a
    DequantizeLinear keeps them int8 in the session: next to folded layers an unfolded Conv
    weight leaves onnxruntime's blocked layout, and the reordered copies of its activations cost
    more session memory than the layer saved (PP-OCRv6 tiny det: int8 + k-means 8 alternating
    57.0 MB live against fp32's 48.9)."""
    steps: list[dict[str, Any]] = []
    prunes: dict[tuple[int, str], set[str]] = {}
    for label, c in assignment.items():
        if c.pass_name == "prune":
            prunes.setdefault((c.setting, c.pattern), set()).add(label)
    for (setting, pattern), mine in sorted(prunes.items()):
        others = [escape(label) for label in all_labels if label not in mine]
        # Every layer it is given, whatever its place or size (the search chose them), by
        # magnitude: deterministic and free of the calibration data's share.
        steps.append({"pass": "prune", "sparsity": setting / 100, "pattern": pattern,
                      "importance": "magnitude", "min_size": 1, "keep_first": False,
                      "keep_last": False, "bias_correction": False, "exclude": others})
    kmeans = {label: c.kmeans_bits for label, c in assignment.items() if c.kmeans_bits}
    if kmeans:
        layer_bits = {escape(label): bits for label, bits in kmeans.items()}
        layer_bits["*"] = 0
        steps.append({
            "pass": "kmeans", "bits": 8, "layer_bits": layer_bits, "allocation": "uniform",
            "codebook": "layer", "min_size": 1, "calibration_samples": calibration_samples,
            # Pricing reads a layer's decoded weight at its consumer's input, which the int8-exact
            # form leaves unscaled (its channel scales go on the consumer's output): pricing
            # decodes through the codebook. The written model takes the pass's own choice, the
            # int8-exact form for large 8-bit weights: a codebook decode's fold holds an int32
            # copy of every index while the session is created (kmeans8 on captcha_crnn: session
            # memory 2.10x fp32's). Both forms store a byte a weight and the int8 form is chosen
            # only within 2x the codebook's error; every plan is judged as the written model.
            "decode": "codebook" if pricing else "auto",
        })
    # The speed guard times the model on this machine: off, so the recipe replays anywhere.
    # (auto times its plans itself: speed_guard)
    blockq: dict[str, Any] = {"bits": 4, "calibration_samples": calibration_samples, "speed_note": False}
    if pricing:
        blockq["target"] = "portable"
    int8_form = "dequantize" if pricing or objective == "memory" else "folded"
    # Every codec that reads calibration data reads the samples the search measured it on: the
    # CLI replays the recipe on the whole file (int8's rounding from 24 samples, not 18: the
    # digits MLP's written plan read 0.99820 where the search had judged 0.99828).
    codecs = (("quantize", {"mode": "weights", "speed_check": False, "weight_form": int8_form,
                            "calibration_samples": calibration_samples}),
              ("blockq", blockq),
              ("bfloat16", {"dtype": "float16", "min_size": 1}))
    for pass_name, options in codecs:
        mine = {label for label, c in assignment.items() if c.pass_name == pass_name}
        if mine:
            others = [escape(label) for label in all_labels if label not in mine]
            steps.append({"pass": pass_name, **options, "exclude": others})
    return steps


# -- measuring one option on every layer ----------------------------------------------------------


@dataclass
class Measured:
    """What one uniform run of a candidate tells about each layer."""

    candidate: str
    bytes_before: dict[str, int]
    bytes_after: dict[str, int]
    deviation: dict[str, float]
    cost_total: float = 0.0  # the objective measured on the whole uniform model (latency, memory)
    seconds: float = 0.0
    skipped: dict[str, str] | None = None
    weight_error: dict[str, float] | None = None  # ||dW||^2 / ||W||^2 per layer
    latency: dict[str, float] | None = None  # seconds of each layer's op + decode (latency objective)
    float_latency: dict[str, float] | None = None  # the same op in the float model
    #: the uniform model's outputs on ``task['outputs']`` (the search data): whether the uniform
    #: setting can meet the target is known before any plan is built
    outputs: dict[str, np.ndarray] | None = None


def measure_candidate(task: dict[str, Any]) -> Measured:
    """Executor task: apply ``task['candidate']`` to every label of ``task['labels']`` in the
    pricing base (``task['base']``, a file), read each layer's bytes from the pass's statistics
    and its decoded weight from the result, and probe each decoded weight alone on
    ``task['probe']`` (an .npz of feeds; with ``task['probe_layers']`` False only the relative
    weight errors are returned, and the search prices the option from another option's probe).
    Pure function of its inputs (a worker process or Ray)."""
    from onnxcompress.auto.measure import decode_weight, objective_cost, probe_feeds
    from onnxcompress.model import load_model, save_model, to_proto
    from onnxcompress.passes._bit_allocation import probe_sensitivity
    from onnxcompress.pipeline import Pipeline

    start = time.perf_counter()
    cand = by_name(task["candidate"])
    base = load_model(task["base"])
    labels = list(task["labels"])
    steps = pass_steps({label: cand for label in labels}, [w.label for w in WeightIndex.build(base)],
                       calibration_samples=task["calibration_samples"], pricing=True)
    pipeline = Pipeline.from_recipe({"passes": steps, "seed": task.get("seed", 0), "check": "none"})
    result = pipeline.run(base, calibration=task.get("calibration"))
    stats = {s.name: s for r in result.passes for s in r.layers}
    skipped = {k: v for r in result.passes for k, v in r.skipped.items() if k in labels}
    proto = to_proto(result.model)
    index = {w.label: w for w in _weights(base)}
    degraded: dict[str, np.ndarray] = {}
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    werr = {}
    for label in labels:
        s = stats.get(label)
        if s is None or s.bytes_after >= s.bytes_before:
            continue
        if index[label].scope or _read_in_subgraphs(index[label]):
            # A subgraph weight, or an outer weight only a Loop/Scan/If body reads (a scripted
            # time loop: its decode goes in front of the reader, in the body): not decodable
            # here nor feedable to the probe; the pass's own
            # relative RMS error squared is ||dW||^2 / ||W||^2 (checked against decoded values
            # on main-graph weights for k-means and int8).
            if s.error is not None:
                before[label], after[label] = int(s.bytes_before), int(s.bytes_after)
                werr[label] = float(f"{float(s.error) ** 2:.6g}")
            continue
        value = decode_weight(proto, index[label])
        if value is None:
            skipped[label] = "its decoded value could not be computed"
            continue
        degraded[label] = value
        before[label], after[label] = int(s.bytes_before), int(s.bytes_after)
    delta = _bytes_without_provenance(proto) - _bytes_without_provenance(to_proto(base))
    _spread_overhead(before, after, delta)
    for label, value in degraded.items():
        ref = index[label].numpy().astype(np.float64)
        norm = float(np.square(ref).sum())
        werr[label] = float(f"{float(np.square(value - ref).sum()) / norm:.6g}") if norm > 0 else 0.0
    feeds = probe_feeds(task["probe"])
    deviation: dict[str, float] = {}
    if task.get("probe_layers", True):
        probe = probe_sensitivity(base, degraded, feeds)
        # Rounded so that summation order or thread count in a worker cannot flip a later choice.
        # A changed layer that moves nothing the probe reads is unseen, not free (RetinaFace's
        # coarse-level heads when the probe's faces are all small: k-means 2 on those 16 layers
        # "moved nothing" and broke every large face); the search prices it as it prices a
        # layer the probe cannot feed.
        deviation = {k: float(f"{v:.6g}") for k, v in probe.deviation.items() if v > 0 or not werr.get(k)}
    cost_total = 0.0
    latency = float_latency = None
    if task.get("objective", "size") == "memory":
        with tempfile.TemporaryDirectory(prefix="onnxcompress-auto-") as tmp:
            path = Path(tmp) / "uniform.onnx"
            save_model(result.model, path)
            cost_total = objective_cost(path, task["objective"], feeds[0])
    elif task.get("objective") == "latency":
        if cand.pass_name in ("blockq", "quantize"):  # priced in the form the recipe writes
            steps = pass_steps({label: cand for label in labels}, list(index),  # (MatMulNBits, folded)
                               calibration_samples=task["calibration_samples"], objective="latency")
            replay = Pipeline.from_recipe({"passes": steps, "seed": task.get("seed", 0), "check": "none"})
            proto = to_proto(replay.run(base, calibration=task.get("calibration")).model)
        latency, float_latency = _latencies(base, proto, [k for k in labels if k in after], index, feeds[0])
    outputs = (_uniform_outputs(proto, task["outputs"], task.get("rows"))
               if task.get("outputs") and after else None)
    return Measured(cand.name, before, after, deviation, cost_total,
                    time.perf_counter() - start, skipped or None, werr, latency, float_latency, outputs)


def _uniform_outputs(proto: Any, feeds_path: str, rows: list[str] | None) -> dict[str, np.ndarray] | None:
    """The uniform model's outputs on the feeds at ``feeds_path``, or None when it does not run
    (the search then builds the uniform plan to find out)."""
    from onnxcompress.auto.measure import probe_feeds, run_outputs

    try:
        return run_outputs(proto, probe_feeds(feeds_path), rows=rows)
    except Exception as e:  # onnxruntime's run errors are not RuntimeErrors; a screen only
        logger.info("auto: the uniform model's outputs are unavailable: %s", e)
        return None


def _bytes_without_provenance(proto: Any) -> int:
    """``proto``'s serialized size less its provenance entry: the pricing run's recipe (its
    exclude lists) is no layer's cost, and spread over iris_mlp's 3 layers it priced float16
    above float32 on a 72-value Gemm (286 B against 288; stored, 173 B with its Cast)."""
    import onnx

    from onnxcompress.pipeline import PROVENANCE_KEY

    entries = [p for p in proto.metadata_props if p.key == PROVENANCE_KEY]
    return proto.ByteSize() - onnx.ModelProto(metadata_props=entries).ByteSize()


def _spread_overhead(before: dict[str, int], after: dict[str, int], file_delta: int) -> None:
    """Add to each changed layer's bytes an equal share of what the pass's layer statistics do
    not count: its decode nodes, codebooks and names (k-means 7 on ppocr_cls: 340 B a layer, so
    48 layers that its statistics put 11 KB below int8 made a file 15 KB above it). Then the
    summed layer prices of a uniform plan are its file's size change, and the allocation and
    the uniform check compare codecs as the files will."""
    if not after:
        return
    counted = sum(after[k] - before[k] for k in after)
    share = (file_delta - counted) / len(after)
    for k in after:
        after[k] = max(1, int(round(after[k] + share)))


def _latencies(base: Any, proto: Any, labels: list[str], index: dict[str, Weight],
               feed: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """Each layer's op latency in ``proto`` and in the float ``base`` (op type and shape cached)."""
    from onnxcompress.activations import iter_intermediates
    from onnxcompress.auto.latency import activation_inputs, consumer, layer_latencies
    from onnxcompress.errors import RuntimeUnavailableError
    from onnxcompress.model import to_proto

    base_proto = to_proto(base)
    uses = {k: index[k].uses[0].node.name or "" for k in labels if index[k].uses}
    names: set[str] = set()
    for node_name in uses.values():
        node = consumer(base_proto, node_name)
        if node is not None:
            names.update(activation_inputs(base_proto, node))
    acts = {k: np.asarray(v) for k, v in feed.items() if k in names}
    try:
        for values in iter_intermediates(base, sorted(names - set(acts)), [feed]):
            acts.update(values)
    except RuntimeUnavailableError as e:  # unpriced layers stay float under this objective
        logger.info("auto: layer latencies unavailable: %s", e.message)
    return layer_latencies(proto, uses, acts), layer_latencies(base_proto, uses, acts)


def layer_costs(measured: Measured, base_cost: float, objective: str) -> dict[str, int]:
    """Each layer's price under ``objective`` for ``measured``'s candidate.

    size: the layer's bytes. latency: its op's measured time with its decode nodes, in
    nanoseconds (:mod:`onnxcompress.auto.latency`). memory: the uniform model's measured total,
    spread over its layers in proportion to their float bytes (what the codec changed is what
    they hold). ``base_cost`` is the float model's measured total."""
    if objective == "size":
        return dict(measured.bytes_after)
    if objective == "latency":
        return {k: max(1, round(v * 1e9)) for k, v in (measured.latency or {}).items()}
    change = measured.cost_total / max(base_cost, 1e-12)
    return {k: max(1, int(round(b * change))) for k, b in measured.bytes_before.items()}

