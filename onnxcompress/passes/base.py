"""The pass framework: a frozen config, one method that does the work, a result with statistics.

A pass subclasses :class:`Pass`, names itself, declares its config dataclass and implements
``apply``. Config fields carry their CLI flag in ``metadata`` (see :func:`option`), so the CLI,
the Python API and recipe files share one set of names and defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

from onnxcompress.data import FeedSource
from onnxcompress.errors import ConfigError
from onnxcompress.layerwise.collection import Request, Statistics

logger = logging.getLogger(__name__)
#: Attribute set on the log record of a headline (see PassResult.headline).
HEADLINE_RECORD = "onnxcompress_headline"

_REGISTRY: dict[str, type[Pass]] = {}


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - mirrors argparse
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    enables: bool = False,
    metavar: str | None = None,
    type: Any = None,  # noqa: A002 - the CLI value type where the default does not show it
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A config field with its documentation and, if ``flag`` is given, its CLI flag.

    ``enables``: giving this flag on the command line adds the pass to the pipeline (e.g.
    ``--prune 0.5``). List-typed fields become repeatable flags.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "enables": enables,
                "metavar": metavar, "type": type}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass config: options shared by all passes."""

    exclude: tuple[str, ...] = option(
        default=(),
        help="tensor or node names (or shell patterns) this pass leaves alone",
    )

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> PassConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(names)
        if unknown:
            raise ConfigError(
                f"{where}: unknown option(s) {', '.join(sorted(unknown))}.",
                hint=f"valid options: {', '.join(sorted(names))}.",
            )
        hints = _field_types(cls)
        kwargs = {}
        for k, v in values.items():
            # Checked before the config sees it: a recipe's bits = "four" must not reach a
            # comparison in __post_init__ (a Python TypeError naming nothing the user wrote).
            expected = _type_problem(v, hints.get(k))
            if expected is not None:
                raise ConfigError(f"{where}: {k} must be {expected}, got {_describe(v)}.")
            # The flag's choices hold in a recipe too (kmeans rest = "bogus" ran as float32).
            choices = names[k].metadata.get("choices")
            if choices and v not in choices:
                raise ConfigError(f"{where}: {k} must be one of {', '.join(map(str, choices))}, "
                                  f"got {_describe(v)}.")
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        cls.check_given(kwargs, where=where)
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from e

    @classmethod
    def check_given(cls, given: dict[str, Any], *, where: str) -> None:
        """Checks that depend on which options the user gave explicitly (``given``, the
        options of a recipe step or the flags on the command line), which ``__post_init__``
        cannot tell from defaults. Raise ConfigError; the default accepts everything."""

    def _require(self, condition: bool, message: str) -> None:
        """For ``__post_init__`` checks: raise ConfigError naming the pass, as users know it."""
        if not condition:
            raise ConfigError(f"{_pass_name_of(type(self))}: {message}")


def _pass_name_of(config_class: type) -> str:
    for pass_class in _REGISTRY.values():
        if pass_class.config_class is config_class:
            return pass_class.name
    return config_class.__name__


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve is simply not checked
        return {}


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          dict: "a table", tuple: "a list", list: "a list"}


def _type_problem(value: Any, annotation: Any) -> str | None:
    """None if ``value`` fits ``annotation`` (as far as recipes and flags can express it), else
    the expected type in words. Annotations we do not model are not checked."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        if any(p is None for p in problems):
            return None
        return " or ".join(p for p in problems if p) or None
    if annotation is bool:
        return None if isinstance(value, bool) else _WORDS[bool]
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else _WORDS[int]
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else _WORDS[float]
    if annotation is str:
        return None if isinstance(value, str) else _WORDS[str]
    if annotation is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _WORDS[tuple] + (f" of {_plural(args[0])}" if args else "")
        homogeneous = len(args) == 2 and args[1] is Ellipsis
        if homogeneous and any(_type_problem(v, args[0]) for v in value):
            return f"a list of {_plural(args[0])}"
        return None
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            return _WORDS[dict] + (f" of {_plural(args[1])}" if len(args) == 2 else "")
        if len(args) == 2 and any(_type_problem(k, args[0]) or _type_problem(v, args[1])
                                  for k, v in value.items()):
            return f"a table of {_plural(args[1])}"
        return None
    return None


def _plural(annotation: Any) -> str:
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(annotation, "values")


def _describe(value: Any) -> str:
    kind = "a boolean" if isinstance(value, bool) else next(
        (w for t, w in _WORDS.items() if type(value) is t), type(value).__name__)
    return f"{value!r} ({kind})"


@dataclass
class LayerStat:
    """What a pass did to one tensor."""

    name: str
    op_type: str
    shape: tuple[int, ...]
    bytes_before: int
    bytes_after: int
    sparsity: float | None = None  # fraction of exact zeros after the pass
    bits: float | None = None  # bits per weight as stored
    error: float | None = None  # relative L2 error of the weight, ||W' - W|| / ||W||
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class PassResult:
    """The model a pass produced, and statistics of what it did and did not do."""

    pass_name: str
    config: dict[str, Any]
    model: ir.Model
    modified: bool = False
    layers: list[LayerStat] = field(default_factory=list)
    # reason -> names of the tensors or nodes skipped for it
    skipped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # Decisions that change what the user asked for (shown at the top of the report and in
    # its JSON); add them with headline().
    headlines: list[str] = field(default_factory=list)
    # Why the pipeline undid this pass (its output failed the checks, or it raised); None if kept.
    rolled_back: str | None = None

    def headline(self, message: str) -> None:
        """Record a decision that changes what the user asked for (e.g. an operator kept in
        float, a pass rolled back). Shown first in the report, prefixed with the pass name."""
        self.headlines.append(message)
        # flagged: the CLI prints headlines in its report, and drops this record (shown twice)
        logger.warning("%s: %s", self.pass_name, message, extra={HEADLINE_RECORD: True})

    @property
    def status(self) -> str:
        """"applied" (the model changed), "rolled_back" (the pipeline undid it), "skipped"
        (nothing changed, with reasons in ``skipped``) or "unchanged" (nothing to do)."""
        if self.rolled_back is not None:
            return "rolled_back"
        if self.modified:
            return "applied"
        return "skipped" if self.skipped else "unchanged"

    @property
    def reason(self) -> str:
        """Why the status is what it is ("" for a pass applied as asked)."""
        if self.rolled_back is not None:
            return self.rolled_back
        if self.modified:
            return ""
        if self.skipped:
            parts = [f"{reason} ({len(names)})" for reason, names in self.skipped.items()]
            return "; ".join(parts[:3]) + (f"; and {len(parts) - 3} more reasons" if len(parts) > 3 else "")
        return "nothing to change"

    def skip(self, name: str, reason: str) -> None:
        names = self.skipped.setdefault(reason, [])
        if name in names:  # a pass may look at a tensor twice (its guard, then its writer)
            return
        names.append(name)
        logger.debug("%s: skipped %s: %s", self.pass_name, name, reason)

    def note(self, message: str) -> None:
        self.notes.append(message)
        logger.info("%s: %s", self.pass_name, message)

    def add_layer(self, stat: LayerStat) -> None:
        self.layers.append(stat)
        self.modified = True

    def adopt_rebuild(self, rebuilt: PassResult) -> None:
        """Take the layers, and the skips of the tensors it built, from a rebuild of this pass's
        model (a guard's): a weight the rebuild keeps float is reported skipped, not lost, and
        none is both rewritten and skipped. Skips of tensors it did not build stay."""
        self.layers[:] = rebuilt.layers
        self.modified = self.modified or rebuilt.modified
        built = {s.name for s in rebuilt.layers} | {n for v in rebuilt.skipped.values() for n in v}
        for reason in list(self.skipped):
            self.skipped[reason] = [n for n in self.skipped[reason] if n not in built]
            if not self.skipped[reason]:
                del self.skipped[reason]
        for reason, names in rebuilt.skipped.items():
            self.skipped.setdefault(reason, []).extend(names)
        self.metrics.update(rebuilt.metrics)

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass": self.pass_name,
            "status": self.status,
            "reason": self.reason,
            "headlines": self.headlines,
            "config": self.config,
            "modified": self.modified,
            "seconds": round(self.seconds, 4),
            "metrics": self.metrics,
            "layers": [s.to_dict() for s in self.layers],
            "skipped": self.skipped,
            "notes": self.notes,
        }


@dataclass
class PassContext:
    """What a pass may use besides the model: data, seed, the original model, progress."""

    calibration: FeedSource | None = None
    seed: int = 0
    progress: Callable[[str, int, int], None] | None = None
    # Loads the uncompressed model on first use (it is not copied unless a pass asks for it).
    original_loader: Callable[[], ir.Model] | None = field(default=None, repr=False)
    _original: ir.Model | None = field(default=None, init=False, repr=False)
    # The tensor or node the running pass works on (set with working_on); named in the error
    # when the pass raises.
    current_layer: str | None = field(default=None, init=False)
    # The run's one sample-count setting: caps every pass's statistics (None: each pass's own).
    calibration_samples: int | None = None
    # The passes after the running one (set by the pipeline): the first statistics request of
    # the run also collects what they and the running pass (``running``) declare
    # (Pass.statistics): static int8's histograms joined its own input means' pass over the data
    # (HiFi-GAN: two passes of 24 samples, 20 s each, where one did).
    planned: tuple[Pass, ...] = field(default=(), repr=False)
    running: Pass | None = field(default=None, repr=False)
    # Whether the input model (before any pass of the run) computes with int8 ops, set by the
    # pipeline: an earlier pass's DequantizeLinear is not the user's int8 model. None: unknown.
    input_quantized: bool | None = None
    _stats: Statistics | None = field(default=None, init=False, repr=False)

    @property
    def stats(self) -> Statistics:
        """The run's statistics service: one collection over ``calibration`` shared by every
        pass (see :mod:`onnxcompress.layerwise.collection`)."""
        if self._stats is None:
            self._stats = Statistics(self.calibration, samples=self.calibration_samples,
                                     declared=self._declared, progress=self.progress,
                                     data=getattr(self.calibration, "description", None)
                                     or "the calibration data")
        return self._stats

    def _declared(self, model: ir.Model) -> list[Request]:
        wanted: list[Request] = []
        for p in (p for p in (self.running, *self.planned) if p is not None):
            try:
                wanted += p.statistics(model, self)
            except Exception as e:  # noqa: BLE001 - a declaration only saves a later collection
                logger.info("pass %s could not declare its statistics (%s); it collects its own.",
                            p.name, e)
        return wanted

    @contextlib.contextmanager
    def working_on(self, layer: str) -> Iterator[None]:
        """``with context.working_on(weight.label): ...``: if the pass raises inside, the
        pipeline's error says "pass NAME failed on LAYER"."""
        previous = self.current_layer
        self.current_layer = layer
        yield
        # Not reached when the body raises: the pipeline reads where the pass failed.
        self.current_layer = previous

    @property
    def original(self) -> ir.Model | None:
        """The uncompressed model (the teacher for reconstruction); never modify it."""
        if self._original is None and self.original_loader is not None:
            self._original = self.original_loader()
        return self._original

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded from the pipeline seed and ``salt`` (stable across runs)."""
        return np.random.default_rng([self.seed, *salt.encode()])

    def report_progress(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


class Pass(ABC):
    """One model transformation. Subclasses set ``name``, ``config_class`` and ``apply``."""

    name: ClassVar[str]
    config_class: ClassVar[type[PassConfig]]
    # Short description for the CLI's --help.
    summary: ClassVar[str] = ""
    # Position when the CLI builds a pipeline from flags (Deep Compression order: simplify,
    # prune, share, quantize).
    cli_order: ClassVar[int] = 50

    def __init__(self, config: PassConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError(f"{self.name}: give either a config or keyword options, not both.")
        if config is None:
            config = self.config_class.from_dict(options, where=f"pass '{self.name}'")
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{self.name}: expected a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None) and not getattr(cls, "__abstractmethods__", None):
            _REGISTRY[cls.name] = cls

    def run(self, model: ir.Model, context: PassContext | None = None) -> PassResult:
        """Apply the pass and time it. The returned result holds the (possibly new) model."""
        context = context or PassContext()
        result = PassResult(pass_name=self.name, config=self.config.to_dict(), model=model)
        start = time.perf_counter()
        result.model = self.apply(model, context, result)
        result.seconds = time.perf_counter() - start
        if not result.modified:
            _say_already_quantized(model, result)
        return result

    def statistics(self, model: ir.Model, context: PassContext) -> list[Request]:
        """What this pass will ask ``context.stats`` for on ``model`` (as an earlier pass sees
        it), so the run's one collection covers it; nothing by default."""
        return []

    @abstractmethod
    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        """Rewrite ``model`` (in place or into a new one), record stats in ``result``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def _say_already_quantized(model: ir.Model, result: PassResult) -> None:
    """A pass that changed nothing on a model whose weights are integer codes says why: the
    user asked for compression and got the input back (1.00x), with no reason among its skips
    (the index holds float weights only)."""
    from onnxcompress.weights import already_quantized

    held = already_quantized(model)
    if held is not None:
        result.headline(f"the model is already quantized: {held}; this pass compresses float "
                        "weights, so they stay as they are")


def registered_passes() -> dict[str, type[Pass]]:
    """Pass name -> class, for every pass module imported (see ``onnxcompress.passes``)."""
    return dict(_REGISTRY)


def get_pass_class(name: str) -> type[Pass]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown pass '{name}'.", hint=f"known passes: {', '.join(sorted(_REGISTRY))}."
        ) from None
