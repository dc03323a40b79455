"""Pipelines: passes run in order, each result checked, provenance recorded, recipes round-trip.

A recipe is the pipeline written as data (TOML or JSON)::

    seed = 0
    [[passes]]
    pass = "prune"
    sparsity = 0.5
    [[passes]]
    pass = "kmeans"
    bits = 5

The report and the compressed model's metadata carry the exact recipe that ran (every option
spelled out, defaults included), so any result can be reproduced from it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from onnxcompress import __version__, checking, runtime
from onnxcompress.data import FeedSource, feed_source
from onnxcompress.errors import ConfigError, ModelLoadError, OnnxCompressError, PassError
from onnxcompress.graph.annotations import drop_inferable_annotations
from onnxcompress.graph.foreign import foreign_note
from onnxcompress.graph.functions import INLINED_CALLS
from onnxcompress.graph.maps import DETACHED_MAPS
from onnxcompress.graph.random import random_note
from onnxcompress.model import (
    INITIALIZER_INPUTS,
    QUANTIZE_FOLDED,
    ModelLike,
    copy_model,
    load_model,
    strip_debug_info,
    tensor_bytes,
)
from onnxcompress.passes.base import Pass, PassContext, PassResult, get_pass_class
from onnxcompress.synthetic import first_feed
from onnxcompress.weights import WeightIndex, all_graphs, has_quantized_ops, matches, unread_integer_constants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

logger = logging.getLogger(__name__)

PROVENANCE_KEY = "onnxcompress"
CHECK_MODES = ("each", "end", "none")
# Above this, a pass's input is not copied for rollback (with best_effort, a failing pass
# then stops the pipeline as without it).
ROLLBACK_MAX_BYTES = 512 * 1024 * 1024
# A handed-over model (compress_file) above this is not loaded in onnxruntime after each pass:
# that load is a second full copy of the weights beside the pass's output (prune at 2.4 GB: 2x
# the model). compress_file checks the written file instead, once the in-memory model is gone.
DEFER_ORT_CHECK_BYTES = 256 * 1024 * 1024
RECIPE_KEYS = {"passes", "plan", "seed", "check", "keep_debug_info", "best_effort", "max_calibration_samples",
               "onnxcompress_version"}
_BUG_HINT = ("this is a bug in onnxcompress, please report it; --exclude can leave the layer "
             "alone, and --best-effort keeps the passes that succeed.")


@dataclass
class PipelineResult:
    """The compressed model and what every pass did."""

    model: ir.Model
    passes: list[PassResult]
    recipe: dict[str, Any]
    # Set when the original model loads in onnxruntime but a step could not use it.
    notes: list[str] = field(default_factory=list)
    # Set when the model is large and was handed over (Pipeline.run's source_path): onnxruntime's
    # load check is left to whoever writes the file (compress_file checks the written file once
    # the in-memory model is gone, instead of loading a second full copy beside it). Call it to
    # know whether the input loads in onnxruntime (a failure is the output's only if it does).
    pending_ort_check: Callable[[], bool] | None = field(default=None, repr=False)
    # Bytes of the exporter's per-node debug metadata the run removed (not compression).
    debug_bytes: int = 0

    @property
    def headlines(self) -> list[str]:
        """Every decision that changes what the user asked for, each prefixed with its pass."""
        return [f"{p.pass_name}: {h}" for p in self.passes for h in p.headlines]

    @property
    def failed(self) -> list[PassResult]:
        """Passes the pipeline rolled back (only with ``best_effort``; otherwise it raises)."""
        return [p for p in self.passes if p.status == "rolled_back"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "headlines": self.headlines,
            "recipe": self.recipe,
            "passes": [p.to_dict() for p in self.passes],
            "notes": self.notes,
            "debug_bytes_removed": self.debug_bytes,
        }


class Pipeline:
    """Passes run in order on one model.

    The input is checked first: a model onnx.checker refuses raises ModelLoadError before any
    work. ``check``: "each" runs ``onnx.checker`` and an onnxruntime load after every pass; "end"
    checks once at the end; "none" skips every check, the input's included.

    A pass that raises (other than for the user's options or data) or whose output fails the
    check is a failure: PassError naming the pass (and the layer, when the pass said which with
    ``context.working_on``). With ``best_effort`` the failing pass is rolled back instead, its
    result says why (``status == "rolled_back"``, a headline), and the next passes run.
    """

    def __init__(
        self, passes: Sequence[Pass], *, seed: int = 0, check: str = "each", keep_debug_info: bool = False,
        best_effort: bool = False, max_calibration_samples: int | None = None,
        plan: dict[str, Any] | None = None,
    ) -> None:
        if check not in CHECK_MODES:
            raise ConfigError(f"pipeline: check must be one of {', '.join(CHECK_MODES)}.")
        if max_calibration_samples is not None and (
                isinstance(max_calibration_samples, bool)
                or not isinstance(max_calibration_samples, int) or max_calibration_samples < 1):
            raise ConfigError(f"pipeline: max_calibration_samples must be a positive integer, got "
                              f"{max_calibration_samples!r}.")
        self.passes = list(passes)
        # auto mode's plan form (auto.plan): each run makes its passes from it on the model
        self.plan = plan
        self.seed = seed
        self.check = check
        # Exporters' per-node debug metadata is dropped from the output unless kept.
        self.keep_debug_info = keep_debug_info
        self.best_effort = best_effort
        # The run's one sample-count setting: caps the calibration samples every pass's
        # statistics use (None: each pass's own count).
        self.max_calibration_samples = max_calibration_samples

    # -- recipes ------------------------------------------------------------------------------

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any] | str | os.PathLike) -> Pipeline:
        """Build a pipeline from a recipe dict or a .toml/.json file."""
        where = "recipe"
        if not isinstance(recipe, dict):
            path = Path(recipe)
            where = str(path)
            recipe = read_recipe(path)
        unknown = set(recipe) - RECIPE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.",
                              hint="a recipe has 'seed', 'check', 'keep_debug_info', 'best_effort', "
                              "'max_calibration_samples' and a list 'passes' (or auto mode's 'plan').")
        plan = None
        if "plan" in recipe:  # auto mode's per-layer plan: its passes are made on the model
            from onnxcompress.auto.plan import check_plan

            if "passes" in recipe:
                raise ConfigError(f"{where}: a recipe has 'passes' or a 'plan', not both.")
            plan = check_plan(recipe["plan"], where)
        steps = recipe.get("passes") if plan is None else []
        if plan is None and (not isinstance(steps, list) or not steps):
            raise ConfigError(f"{where}: 'passes' must be a non-empty list of tables.")
        passes = []
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or "pass" not in step:
                raise ConfigError(f"{where}: passes[{i}] must be a table with a 'pass' name.")
            options = {k: v for k, v in step.items() if k != "pass"}
            try:
                pass_class = get_pass_class(str(step["pass"]))
            except ConfigError as e:
                raise ConfigError(f"{where}: passes[{i}]: {e}") from e
            config = pass_class.config_class.from_dict(
                options, where=f"{where}: passes[{i}] ({step['pass']})"
            )
            passes.append(pass_class(config))
        seed = recipe.get("seed", 0)
        if not isinstance(seed, int):
            raise ConfigError(f"{where}: seed must be an integer.")
        if isinstance(seed, bool):
            raise ConfigError(f"{where}: seed must be an integer, got {seed!r}.")
        flags = {}
        for key in ("keep_debug_info", "best_effort"):
            flags[key] = recipe.get(key, False)
            if not isinstance(flags[key], bool):
                raise ConfigError(f"{where}: {key} must be true or false, got {flags[key]!r}.")
        check = recipe.get("check", "each")
        if check not in CHECK_MODES:
            raise ConfigError(f"{where}: check must be one of {', '.join(CHECK_MODES)}, got {check!r}.")
        samples = recipe.get("max_calibration_samples")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                    or samples < 1):
            raise ConfigError(f"{where}: max_calibration_samples must be a positive integer, got "
                              f"{samples!r}.")
        return cls(passes, seed=seed, check=check, max_calibration_samples=samples,
                   plan=plan, **flags)

    def to_recipe(self) -> dict[str, Any]:
        """The full recipe: every option of every pass, defaults spelled out."""
        return {
            "onnxcompress_version": __version__,
            "seed": self.seed,
            "check": self.check,
            "keep_debug_info": self.keep_debug_info,
            "best_effort": self.best_effort,
            # only when set: recipes (and provenance) of runs without it stay as they were
            **({"max_calibration_samples": self.max_calibration_samples}
               if self.max_calibration_samples is not None else {}),
            **({"plan": self.plan} if self.plan is not None else
               {"passes": [{"pass": p.name, **p.config.to_dict()} for p in self.passes]}),
        }

    # -- running ------------------------------------------------------------------------------

    def run(
        self,
        model: ModelLike,
        *,
        calibration: Any = None,
        progress: Callable[[str, int, int], None] | None = None,
        label: str | None = None,
        source_path: str | os.PathLike | None = None,
    ) -> PipelineResult:
        """Run every pass on ``model`` (not modified if given as a path or proto).

        ``calibration``: any data source :func:`onnxcompress.data.feed_source` accepts.
        ``label``: how errors name the model (default: its path, else "the input model").
        ``source_path``: ``model`` (an ``ir.Model``) was loaded from this file and the caller
        hands it over: it is rewritten in place instead of copied, and the original is reread
        from the file when a pass needs it (one model in memory instead of three).
        """
        handed_over = isinstance(model, ir.Model) and source_path is not None
        # Passes rewrite in place: never touch the caller's object, work on a copy of it.
        if handed_over:
            ir_model = model
        else:
            ir_model = copy_model(model) if isinstance(model, ir.Model) else load_model(model)
        # what load_model set aside (a classifier's ZipMap), for api.save_model to put back
        maps = (model if isinstance(model, ir.Model) else ir_model).meta.get(DETACHED_MAPS, ())
        if label is None:
            label = str(model) if isinstance(model, (str, os.PathLike)) else "the input model"
        notes = self._check_input(ir_model, label)
        if handed_over:
            original_loader = lambda: load_model(source_path)  # noqa: E731 - reread lazily
        elif isinstance(model, (ir.Model, onnx.ModelProto)):
            pristine = copy_model(ir_model)
            original_loader = lambda: pristine  # noqa: E731
        else:
            original_loader = lambda: load_model(model)  # noqa: E731 - reread the file lazily
        source: FeedSource | None = None
        if calibration is not None:
            source = feed_source(calibration, ir_model, name="calibration data")
        context = PassContext(calibration=source, seed=self.seed, progress=progress,
                              original_loader=original_loader,
                              calibration_samples=self.max_calibration_samples,
                              input_quantized=has_quantized_ops(ir_model))
        loads: list[bool] = []

        def runs_in_ort() -> bool:
            """Whether onnxruntime loads the input. Asked only when an output does not load (an
            onnxruntime session of the input costs as much as the check itself: on a 150 MB
            model, 1.5 s of the 3.5 s onnxruntime's quantize_dynamic takes in all)."""
            if not loads:
                ok, why_not = runtime.loadable(context.original)
                loads.append(ok)
                if not ok:
                    notes.append(f"onnxruntime cannot run the input model ({why_not}); data-driven "
                                 "steps are skipped and outputs are only checked with onnx.checker")
            return loads[0]

        inputs_of = ir_model  # passes keep the graph inputs: its specs make the synthetic sample
        finite = checking.FiniteOutputs(lambda: first_feed(inputs_of, source, seed=self.seed)[0],
                                        lambda: context.original)
        passes = self.passes
        if self.plan is not None:  # auto mode's plan: its passes on this model
            from onnxcompress.auto.plan import expand_plan

            passes = Pipeline.from_recipe({"passes": expand_plan(self.plan, ir_model)}).passes
        notes += _unmatched_excludes(ir_model, passes) + _attribute_parameters(ir_model) \
            + _integer_weights(ir_model)
        results: list[PassResult] = []
        deferred = False
        for i, p in enumerate(passes):
            if progress is not None:
                progress(f"pass {p.name}", i, len(passes))
            context.running, context.planned = p, tuple(passes[i + 1:])  # one collection
            defer = handed_over and tensor_bytes(ir_model) > DEFER_ORT_CHECK_BYTES
            result = self._run_pass(p, ir_model, context, False if defer else runs_in_ort, finite)
            deferred = deferred or (defer and result.modified)
            ir_model = result.model
            results.append(result)
        if self.check == "end":
            deferred = handed_over and tensor_bytes(ir_model) > DEFER_ORT_CHECK_BYTES
            problem = checking.model_problem(ir_model, need_ort=False if deferred else runs_in_ort,
                                             stub=deferred, probe=finite)
            if problem is not None:
                raise PassError(f"the compressed model failed the final check: {problem.rstrip('.')}.",
                               hint=_BUG_HINT)
        removed = 0
        if not self.keep_debug_info:
            removed = strip_debug_info(ir_model)
            if removed:
                notes.append(f"removed the exporter's per-node debug metadata ({removed:,} bytes; "
                             "keep it with --keep-debug-info)")
            dropped = drop_inferable_annotations(ir_model)
            if dropped:
                notes.append(f"dropped {dropped:,} intermediate value type(s) that shape inference "
                             "gives back (onnxruntime infers them at load; keep them with "
                             "--keep-debug-info)")
        recipe = self.to_recipe()
        if any(r.modified for r in results):
            # a run that changed nothing adds nothing: 156 bytes made a 2.3 KB tree ensemble
            # (skl2onnx, nothing any pass compresses) 7% larger than its input
            record_provenance(ir_model, recipe, results)
        ir_model.meta[DETACHED_MAPS] = maps
        return PipelineResult(model=ir_model, passes=results, recipe=recipe, notes=notes, debug_bytes=removed,
                              pending_ort_check=runs_in_ort if deferred and self.check != "none" else None)

    def _check_input(self, model: ir.Model, label: str) -> list[str]:
        """Refuse an input onnx.checker rejects, before any work (a pass's output could never
        pass the checks either, and onnxruntime may not load it); returns notes."""
        notes = []
        if listed := model.meta.get(INITIALIZER_INPUTS):
            notes.append(f"the input model lists its {listed:,} initializer(s) as graph inputs too "
                         "(IR < 4 style); the output lists only the inputs a caller feeds, its "
                         "weights are constants, which onnxruntime folds and prepacks: faster than "
                         "the input as given, and more resident memory (BodyPix: 0.5x the latency, "
                         "1.15x the memory with no compression)")
        if quantized := model.meta.get(QUANTIZE_FOLDED):
            notes.append(f"folded {quantized:,} QuantizeLinear node(s) of float weights into the int8 "
                         "weights they compute (exact, as onnxruntime folds them at load): the input's "
                         "own quantization, 1/4 of the bytes")
        if calls := model.meta.get(INLINED_CALLS):
            notes.append(f"inlined {calls:,} call(s) of model-local functions that carry weights, as "
                         "onnxruntime does at load (inside a function a weight is an argument no pass "
                         "can compress)")
        if foreign := foreign_note(model):
            notes.append(foreign)
        if drawn := random_note(model):
            notes.append(drawn)
        completed = checking.complete_io_shapes(model)
        if completed:
            notes.append(f"graph input/output(s) {', '.join(completed)} declared no shape "
                         "(onnx.checker requires one): their inferred shape is declared")
        if self.check != "none":
            problem = checking.model_problem(model, need_ort=False)
            if problem is not None:
                raise ModelLoadError(f"{label}: not a valid ONNX model: {problem.rstrip('.')}.",
                                     hint="fix the model or its export; onnx.checker.check_model "
                                     "reports the same problem.")
        return notes

    def _run_pass(self, p: Pass, model: ir.Model, context: PassContext,
                  runs_in_ort: bool | Callable[[], bool],
                  finite: checking.FiniteOutputs | None = None) -> PassResult:
        """Run one pass and check its output; a failure raises PassError, or with best_effort
        rolls the pass back."""
        # A copy to roll back to: only needed when a failure does not end the run.
        backup = (
            copy_model(model)
            if self.best_effort and tensor_bytes(model) <= ROLLBACK_MAX_BYTES
            else None
        )
        logger.info("Running pass %s", p.name)
        context.current_layer = None
        failure: PassError | None = None
        result: PassResult | None = None
        try:
            result = p.run(model, context)
        except PassError as e:
            failure = e
        except OnnxCompressError:
            raise  # the user's options, data or model: reported as they are
        except Exception as e:  # a bug in the pass: attributed to it (and to its layer if known)
            on = f" on {context.current_layer}" if context.current_layer else ""
            failure = PassError(f"pass {p.name} failed{on}: {type(e).__name__}: {runtime.first_line(e)}",
                                hint=_BUG_HINT, pass_name=p.name, layer=context.current_layer)
            failure.__cause__ = e
        if result is not None and result.modified:
            # A graph output a pass rewrote may come back typed but shapeless (a new value):
            # its inferred shape is declared, so onnx.checker does not refuse it.
            checking.complete_io_shapes(result.model)
        if result is not None and self.check == "each" and result.modified:
            problem = checking.model_problem(result.model, need_ort=runs_in_ort,
                                             stub=runs_in_ort is False, probe=finite)
            if problem is not None:
                failure = PassError(f"pass {p.name} produced an invalid model: {problem.rstrip('.')}.",
                                    hint=_BUG_HINT, pass_name=p.name)
        if failure is None:
            assert result is not None
            return result
        if backup is None:
            raise failure
        if result is None:
            result = PassResult(pass_name=p.name, config=p.config.to_dict(), model=backup)
        changed = len(result.layers)
        result.model = backup
        result.modified = False
        result.layers = []
        result.headlines.clear()  # its decisions are not in the output
        result.rolled_back = failure.message
        result.headline(f"rolled back ({failure.message}); the output has none of its changes"
                        + (f" (it had changed {changed} tensor(s))" if changed else ""))
        return result


def _unmatched_excludes(model: ir.Model, passes: Sequence[Pass]) -> list[str]:
    """A note for every exclude pattern that names no tensor or node (likely a typo)."""
    patterns = {p for ps in passes for p in getattr(ps.config, "exclude", ())}
    if not patterns:
        return []
    names = [w.label for w in WeightIndex.build(model)]
    names += [n.name for _, g in all_graphs(model) for n in g if n.name]
    notes = []
    for pattern in sorted(patterns):
        if not any(matches(name, [pattern]) for name in names):
            notes.append(f"--exclude '{pattern}' matches no tensor or node in the model")
            logger.warning("exclude pattern '%s' matches no tensor or node", pattern)
    return notes


#: Parameters held in node attributes (a tree ensemble's thresholds and leaf values) of at least
#: this many bytes, more than the weights: said, since no pass reads them.
ATTRIBUTE_PARAMETER_BYTES = 64 * 1024
# numbers under 1 KB and subgraphs (whose weights are weights) are not looked at
_SKIPPED_ATTRIBUTES = frozenset({ir.AttributeType.FLOAT, ir.AttributeType.INT, ir.AttributeType.GRAPH,
                                 ir.AttributeType.GRAPHS})


def _integer_weights(model: ir.Model) -> list[str]:
    """A note when most of the model's constant bytes are integer tensors already (an embedding
    table its authors stored int8 and dequantize after the Gather), which no pass compresses:
    silero-stress's int8 n-gram table took every setting to 1.02-1.04x with only a "not a float
    tensor (INT8)" line among the skipped. (Codes a quantized op reads have the passes' own
    "already quantized" headline.)"""
    total, held = unread_integer_constants(model)
    ints = sum(n for n, _, _ in held)
    if not held or ints < ATTRIBUTE_PARAMETER_BYTES or 2 * ints <= total:
        return []
    n, name, dtype = held[0]
    return [f"{ints / 2**20:.1f} of the model's {total / 2**20:.1f} MB of constants are integer tensors "
            f"already (largest: {name}, {dtype.name.lower()}, {n / 2**20:.1f} MB), which no pass "
            "compresses: only the float rest shrinks"]


def _attribute_parameters(model: ir.Model) -> list[str]:
    """A note when most of the model's parameters are node attributes, which no pass compresses
    (batch 8's LightGBM TreeEnsemble: 1.6 MB of attributes, reported as "weight bytes 0 B")."""
    sizes: dict[str, int] = {}
    for _, graph in all_graphs(model):
        for node in graph:
            if node.op_type == "Constant":  # a Constant's value is a weight the passes read
                continue
            # per node: skl2onnx writes an IsolationForest as a node a tree, ~430 B an attribute
            # (each under 1 KB: 0.1 MB of cancer_iforest's 995 KB were counted)
            n = sum(ir.serde.serialize_attribute(attr).ByteSize()  # as the file holds it
                    for attr in node.attributes.values() if attr.type not in _SKIPPED_ATTRIBUTES)
            if n >= 1024:
                sizes[node.op_type] = sizes.get(node.op_type, 0) + n
    total = sum(sizes.values())
    if total < ATTRIBUTE_PARAMETER_BYTES or total <= sum(w.nbytes for w in WeightIndex.build(model)):
        return []
    ops = ", ".join(sorted(sizes, key=lambda k: -sizes[k])[:3])
    return [f"most of the model's parameters ({total / 2**20:.1f} MB) are attributes of its {ops} "
            "node(s), which no pass compresses"]


def finish_for_writing(result: PipelineResult, *, keep_debug_info: bool = False) -> None:
    """What writing a pipeline's model does to it first (``api.compress_file``, and auto mode's
    pricing of the files it would write): long names shortened to hashes unless debug information
    is kept, then constants equal to another merged into it and, unless debug information is
    kept, the graph compacted (``graph.compact``) when a pass changed the model."""
    from onnxcompress.graph.compact import compact
    from onnxcompress.graph.constants import merge_duplicates
    from onnxcompress.graph.names import shorten_names

    if not keep_debug_info:
        saved = shorten_names(result.model)
        if saved:
            result.notes.append(f"shortened long tensor and node names to hashes ({saved:,} bytes; "
                                "compare --layers still finds them; keep them with --keep-debug-info)")
    if any(p.modified for p in result.passes):  # after the names: their share counts these
        merged, _ = merge_duplicates(result.model)
        if merged:
            result.notes.append(f"merged {merged} constant(s) equal to another (same type, shape "
                                "and values) into it")
        if not keep_debug_info:
            before, after = compact(result.model)
            if after < before:
                result.notes.append(
                    f"removed {before - after} of {before} nodes: repeats of an earlier node and the "
                    "shape arithmetic of Reshape targets, as onnxruntime does at load (keep them with "
                    "--keep-debug-info)")


def record_provenance(model: ir.Model, recipe: dict[str, Any], results: list[PassResult]) -> None:
    """Write what was done into the model's metadata (no timestamps: output stays deterministic)."""
    history = []
    previous = model.metadata_props.get(PROVENANCE_KEY)
    if previous:
        try:
            history = json.loads(previous).get("history", [])
        except (json.JSONDecodeError, AttributeError):
            history = []
    entry = {
        "recipe": _without_defaults(recipe),
        # tensors each pass changed (the full statistics are in the report, not in the model)
        "changed": [len(r.layers) for r in results],
    }
    model.metadata_props[PROVENANCE_KEY] = json.dumps(
        {"version": __version__, "history": [*history, entry]}, sort_keys=True, separators=(",", ":")
    )


def _without_defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as stored in the model: options at their default are left out (with the
    version recorded, the defaults are known; a small model's file is 1% smaller without them).
    :func:`read_provenance` spells them out again."""
    top_defaults = {"check": "each", "keep_debug_info": False, "best_effort": False}
    skip = {"passes", "onnxcompress_version"}  # the provenance's own "version" says it
    compact = {k: v for k, v in recipe.items() if k not in skip and top_defaults.get(k, ...) != v}
    if "plan" in recipe:  # auto mode's plan form is as short as it gets
        return compact
    compact["passes"] = []
    for step in recipe.get("passes", []):
        try:
            defaults = get_pass_class(step["pass"]).config_class().to_dict()
        except (ConfigError, TypeError, KeyError):
            defaults = {}
        compact["passes"].append(
            {k: v for k, v in step.items() if k == "pass" or k not in defaults or defaults[k] != v}
        )
    return compact


def read_provenance(model: ir.Model) -> dict[str, Any] | None:
    """The compression history in ``model``'s metadata, each recipe with its defaults spelled
    out again (as far as this version knows the passes)."""
    raw = model.metadata_props.get(PROVENANCE_KEY)
    if not raw:
        return None
    try:
        provenance = json.loads(raw)
    except json.JSONDecodeError:
        return None
    for entry in provenance.get("history", []) if isinstance(provenance, dict) else []:
        # A version with other passes or options wrote it: shown as stored.
        with contextlib.suppress(ConfigError, KeyError, TypeError):
            entry["recipe"] = Pipeline.from_recipe(entry["recipe"]).to_recipe() | {
                "onnxcompress_version": provenance.get("version")
            }
    return provenance


def read_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file.")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a valid recipe ({e}).") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a table/object.")
    return data


def compress(
    model: ModelLike,
    passes: Sequence[Pass] | dict[str, Any] | str | os.PathLike,
    *,
    calibration: Any = None,
    seed: int = 0,
) -> PipelineResult:
    """One-call API: run ``passes`` (a list of passes, or a recipe dict/file) on ``model``."""
    if isinstance(passes, (dict, str, os.PathLike)):
        pipeline = Pipeline.from_recipe(passes)
    else:
        pipeline = Pipeline(passes, seed=seed)
    return pipeline.run(model, calibration=calibration)
