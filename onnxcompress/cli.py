"""The ``onnxcompress`` command: a thin layer over the Python API.

Pass flags are generated from the pass configs (see ``onnxcompress.passes.base.option``), so the
CLI, the API and recipe files share names and defaults. Exit codes: 0 success; 1 the output is
not what was asked for (compared outputs differ, or with --best-effort a pass was rolled back);
2 an error, nothing written (one line on stderr; ``--debug`` adds the traceback, same code).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxcompress import __version__
from onnxcompress.errors import ConfigError, OnnxCompressError, Terminated, terminate_as_interrupt
from onnxcompress.passes import registered_passes
from onnxcompress.passes.base import Pass
from onnxcompress.pipeline import Pipeline

if TYPE_CHECKING:
    from onnxcompress.report import CompressionReport

EXIT_OK, EXIT_DIFFER, EXIT_ERROR = 0, 1, 2
# With --best-effort: written, but a pass the user asked for was rolled back.
EXIT_INCOMPLETE = 1

logger = logging.getLogger("onnxcompress")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other error
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_ERROR)


# -- pass flags generated from the configs ------------------------------------------------------


def _flag_fields(pass_class: type[Pass]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(pass_class.config_class) if f.metadata.get("flag")]


def _parse_mapping(item: str) -> tuple[str, Any]:
    key, sep, value = item.rpartition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected PATTERN=VALUE, got '{item}'")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def add_pass_arguments(parser: argparse.ArgumentParser) -> None:
    for pass_class in sorted(registered_passes().values(), key=lambda c: c.cli_order):
        group = parser.add_argument_group(f"{pass_class.name}: {pass_class.summary}")
        for f in _flag_fields(pass_class):
            meta = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs: dict[str, Any] = {"dest": f"{pass_class.name}__{f.name}", "default": None,
                                      "help": meta["help"]}
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            if isinstance(default, bool) or meta.get("type") is bool:  # bool, or bool | "auto"
                kwargs["action"] = argparse.BooleanOptionalAction
            elif isinstance(default, tuple):
                kwargs["action"] = "append"
                kwargs["type"] = meta.get("type") or str
            elif isinstance(default, dict) or f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                kwargs["action"] = "append"
                kwargs["type"] = _parse_mapping
                kwargs.setdefault("metavar", "PATTERN=VALUE")
            else:
                kwargs["type"] = meta.get("type") or (type(default) if default is not None else str)
                if meta.get("choices"):
                    kwargs["choices"] = meta["choices"]
            if default not in (None, (), {}) and not isinstance(default, bool) and not meta.get("enables"):
                kwargs["help"] += f" (default: {default})"
            group.add_argument(meta["flag"], **kwargs)


def pipeline_from_args(args: argparse.Namespace) -> Pipeline | None:
    """The pipeline the pass flags describe, or None if no pass flag was given."""
    passes = []
    if getattr(args, "quantize__mode", None) == "int4":
        # --quantize int4 is the blockq pass (its --quantize-bits/--block-size... apply).
        args.quantize__mode = None
        if getattr(args, "blockq__bits", None) is None:
            args.blockq__bits = 4
    for pass_class in sorted(registered_passes().values(), key=lambda c: c.cli_order):
        given: dict[str, Any] = {}
        enabled = False
        for f in _flag_fields(pass_class):
            value = getattr(args, f"{pass_class.name}__{f.name}", None)
            if value is None:
                continue
            if isinstance(f.default, tuple):
                value = tuple(value)
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                value = dict(value)
            given[f.name] = value
            if f.metadata.get("enables") and value is not False:
                enabled = True
        if not given:
            continue
        flags = [f.metadata["flag"] for f in _flag_fields(pass_class) if f.name in given]
        if not enabled:
            needs = [f for f in _flag_fields(pass_class) if f.metadata.get("enables")]
            usage = " or ".join(
                f"{f.metadata['flag']} {f.metadata.get('metavar') or ''}".strip() for f in needs
            )
            raise ConfigError(
                f"{', '.join(flags)} given without {' or '.join(f.metadata['flag'] for f in needs)}: "
                f"alone it enables nothing.",
                hint=f"add {usage} to run the {pass_class.name} pass.",
            )
        if args.exclude and "exclude" in {f.name for f in dataclasses.fields(pass_class.config_class)}:
            given["exclude"] = tuple(args.exclude)
        if getattr(args, "reconstruct", False) and "reconstruct" in {
            f.name for f in dataclasses.fields(pass_class.config_class)
        }:
            given.setdefault("reconstruct", True)
        where = " ".join(flags)
        try:
            config = pass_class.config_class.from_dict(given, where=where)
        except ConfigError as e:
            if e.message.startswith(where):
                raise
            raise ConfigError(f"{where}: {e.message}", hint=e.hint) from e
        passes.append(pass_class(config))
    if not passes:
        return None
    return Pipeline(passes, seed=args.seed if args.seed is not None else 0)


# -- progress -----------------------------------------------------------------------------------


def _progress_printer(enabled: bool):  # noqa: ANN202
    """A live line on a terminal; elsewhere None, and compress_file logs progress at INFO
    (``onnxcompress.progress``, shown unless --quiet) so that logs and CI show it too."""
    # (set every time: an earlier command in the same process must not leak its level)
    log_lines = enabled and not sys.stderr.isatty()
    logging.getLogger("onnxcompress.progress").setLevel(logging.INFO if log_lines else logging.NOTSET)
    if not enabled or log_lines:
        return None

    def show(stage: str, done: int, total: int) -> None:
        sys.stderr.write(f"\r\033[K{stage} [{done}/{total}]")
        sys.stderr.flush()

    return show


def _clear_progress(progress) -> None:  # noqa: ANN001
    if progress is not None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


# -- subcommands --------------------------------------------------------------------------------


def cmd_compress(args: argparse.Namespace) -> int:
    from onnxcompress.api import compress_file

    pipeline = pipeline_from_args(args)
    if args.auto:
        return _cmd_auto(args, pipeline)
    if args.recipe is not None:
        if pipeline is not None:
            raise ConfigError("give either --recipe or pass flags, not both.")
        pipeline = Pipeline.from_recipe(args.recipe)
        if args.seed is not None:  # an explicit --seed wins over the recipe's
            pipeline.seed = args.seed
    if pipeline is None:
        pipeline = _default_pipeline(args)
    if args.max_calibration_samples is not None:
        if args.max_calibration_samples < 1:
            raise ConfigError(f"--max-calibration-samples must be a positive integer, got "
                              f"{args.max_calibration_samples}.")
        pipeline.max_calibration_samples = args.max_calibration_samples
    if args.check:
        pipeline.check = args.check
    if args.keep_debug_info:
        pipeline.keep_debug_info = True
    if args.best_effort:
        pipeline.best_effort = True
    _check_output_paths(args)
    from onnxcompress.validation.cli import report_paths

    # --json PATH / --report PATH (.json or .html): checked before the long work
    report_files = report_paths(args, html=True)
    validator = None
    if args.validate:
        validator = _validator(args)
    elif hasattr(args, "min_cosine"):
        from onnxcompress.validation.cli import check_validate_arguments

        check_validate_arguments(args)
    progress = _progress_printer(not args.quiet)
    from onnxcompress.synthetic import parse_shape_overrides

    memory = args.memory if args.memory is not None else bool(args.validate)
    try:
        report = compress_file(
            args.model, args.output, pipeline, calibration=args.calibration,
            overwrite=args.overwrite, validator=validator, progress=progress,
            validation_data=getattr(args, "validation_data", None), keep_failed=args.keep_failed,
            memory=memory, shapes=parse_shape_overrides(getattr(args, "validation_shape", None) or []),
            check_fidelity=args.check_fidelity,
        )
    finally:
        _clear_progress(progress)
    for path, fmt in report_files:
        _write_text(path, report.to_format(fmt))
    if args.json == "-":
        print(report.to_json())
    elif not args.quiet:
        print(report.render())
        if report.validation is not None:
            from onnxcompress.validation import render_report

            print()
            print(render_report(report.validation))
        if report.output is not None:
            print(f"wrote {_written(report)}")
    if report.output is None:
        sys.stderr.write(f"onnxcompress: validation failed: {args.output} not written "
                         "(--keep-failed keeps it)\n")
    for failed in report.result.failed:
        sys.stderr.write(f"onnxcompress: {failed.pass_name} was rolled back: {failed.reason}\n")
    if report.validation is not None and report.validation.get("passed") is False:
        return EXIT_DIFFER
    if report.result.failed:
        return EXIT_INCOMPLETE
    return EXIT_OK


#: What `compress MODEL -o OUT` does when no pass is named: dynamic int8 needs no data, keeps
#: every labelled real model measured within a point at 3.5-3.9x (benchmarks/results/
#: real_models_large_eval.md), and its speed guard keeps int8 compute only where it is faster.
DEFAULT_PASS_FLAGS = "--quantize dynamic"


def _default_pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline of DEFAULT_PASS_FLAGS (with --exclude and --seed as given), said on stderr."""
    args.quantize__mode = "dynamic"
    pipeline = pipeline_from_args(args)
    assert pipeline is not None
    if not args.quiet:
        sys.stderr.write(f"note: no pass given: compressing with {DEFAULT_PASS_FLAGS} (int8 weights; "
                         "int8 compute where it is faster); choose others with pass flags, --recipe "
                         "or --auto\n")
    return pipeline


AUTO_LOG_SECONDS = 10.0


def _cmd_auto(args: argparse.Namespace, pipeline: Pipeline | None) -> int:
    """compress --auto: search a plan, write the model its recipe makes; exit 1 when the target
    does not hold on the held-apart data (the best model found is still written)."""
    from onnxcompress.api import compress_file
    from onnxcompress.auto import fidelity_text, make_executor, parse_target, search
    from onnxcompress.model import check_output_path

    if pipeline is not None or args.recipe is not None:
        raise ConfigError("--auto chooses the passes: give no pass flags or --recipe with it.")
    if not args.calibration:
        raise ConfigError("--auto needs calibration data.", hint="add --calibration DATA.npz")
    if args.auto_target:
        parse_target(args.auto_target)  # a bad expression fails before the long work
    from onnxcompress.validation.cli import report_paths

    _check_output_paths(args)
    report_files = report_paths(args, html=True)  # --json PATH / --report PATH, as without --auto
    if args.save_recipe:
        check_output_path(args.save_recipe, protect=(args.model,))
    tty = not args.quiet and args.json != "-" and sys.stderr.isatty()
    # CI logs: a progress line (INFO, the progress logger's, as compress_file's) when a stage
    # starts and every AUTO_LOG_SECONDS within it (rxnmap's refinement ran minutes unannounced).
    progress_log = logging.getLogger("onnxcompress.progress")
    progress_log.setLevel(logging.INFO if not args.quiet and not tty else logging.NOTSET)
    last: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if tty:
            sys.stderr.write(f"\r\033[K{stage} [{done}/{total}]")
            sys.stderr.flush()
            return
        now = time.monotonic()
        if stage not in last or now - last[stage] >= AUTO_LOG_SECONDS:
            last[stage] = now
            progress_log.info("auto: %s [%d/%d]", stage, done, total)

    with make_executor(args.ray) as executor:
        try:
            found = search(args.model, args.calibration, target=args.auto_target, objective=args.objective,
                           validate_data=getattr(args, "validation_data", None), time_budget=args.time_budget,
                           executor=executor, seed=args.seed or 0, progress=progress,
                           candidates=args.auto_candidates,
                           allow_more_memory=args.auto_allow_more_memory,
                           allow_slower=args.auto_allow_slower)
        finally:
            _clear_progress(progress if tty else None)
    report = compress_file(args.model, args.output, Pipeline.from_recipe(found.recipe),
                           calibration=args.calibration, overwrite=args.overwrite)
    report.extra["auto"] = found.to_report()
    if args.save_recipe:
        _write_text(Path(args.save_recipe), json.dumps(found.recipe, indent=2) + "\n")
    for path, fmt in report_files:
        _write_text(path, report.to_format(fmt))
    values = fidelity_text(found.fidelity)
    if args.json == "-":
        print(report.to_json())
    elif not args.quiet:
        print(report.render())
        print(f"auto: {found.plan.counts()} in {found.seconds.get('total', 0):.0f} s; verification {values}")
        for note in found.notes:
            print(f"  note: {note}")
        print(f"wrote {_written(report)}")
    if not found.met:
        sys.stderr.write(f"onnxcompress: target {found.target} not met on the held-apart data ({values}; "
                         f"{-found.fidelity.margin:.4g} short); wrote the best model found\n")
        return EXIT_DIFFER
    return EXIT_OK


def _check_output_paths(args: argparse.Namespace) -> None:
    """The model output checked before the long work (report files: validation.cli.report_paths)."""
    from onnxcompress.errors import SaveError
    from onnxcompress.model import check_output_path

    check_output_path(args.output, protect=(args.model,), overwrite=args.overwrite)
    for flag, path in (("--report", args.report), ("--json", args.json)):
        if path and path != "-" and Path(path).resolve() in (Path(args.output).resolve(),
                                                             Path(args.model).resolve()):
            raise SaveError(f"{path}: {flag} names the model file.", hint="write reports to their own file.")


def _validator(args: argparse.Namespace):  # noqa: ANN202
    try:
        from onnxcompress.validation import validator_for_cli
    except ImportError as e:
        raise ConfigError("--validate needs the validation module, which is not installed.") from e
    return validator_for_cli(args)


def cmd_inspect(args: argparse.Namespace) -> int:
    from onnxcompress.inspection import describe, render
    from onnxcompress.model import load_model

    info = describe(load_model(args.model))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(render(info))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Render a saved JSON report as HTML (with weight histograms when its models still exist)."""
    from onnxcompress.errors import DataError
    from onnxcompress.model import check_output_path
    from onnxcompress.report import report_format
    from onnxcompress.report_html import models_from_report, render_html

    source = Path(args.report)
    out = Path(args.output) if args.output else source.with_suffix(".html")
    if report_format(out) != "html":
        raise ConfigError(f"{out}: the report command writes HTML.", hint="name the output file .html.")
    check_output_path(out, protect=(source,))
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{source}: cannot read the report: {getattr(e, 'strerror', None) or e}.") from e
    if not isinstance(data, dict) or not ({"before", "passes"} & set(data)):
        raise DataError(f"{source}: not an onnxcompress report (no 'before' or 'passes').",
                        hint="give a file written by `onnxcompress compress ... --report r.json`.")
    original, compressed = models_from_report(data, source.parent)
    _write_text(out, render_html(data, original_model=original, compressed_model=compressed))
    if not args.quiet:
        print(f"wrote {out}")
    return EXIT_OK


def _written(report: CompressionReport) -> str:
    """The output path, and the external-data files written beside it."""
    data = [p.name for p in report.after.files[1:]]
    return f"{report.output} (+ {', '.join(data)})" if data else str(report.output)


def _write_text(path: Path, text: str) -> None:
    """Write a report atomically, with the user's umask permissions."""
    from onnxcompress.model import write_text_atomic

    write_text_atomic(path, text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxcompress",
                     description="Make ONNX models smaller and faster, and prove they still work.")
    parser.add_argument("--version", action="version", version=f"onnxcompress {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("compress", parents=[common], help="compress a model",
                       description="Compress MODEL into OUT with the passes the flags (or --recipe, "
                       f"or --auto) select; with none of them, {DEFAULT_PASS_FLAGS}.")
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--recipe", help="a TOML or JSON recipe file describing the pipeline")
    p.add_argument("--calibration", metavar="PATH",
                   help="an .npz with arrays named after the inputs (samples stacked on a new "
                        "leading axis) or a folder of .npz feeds; data-aware passes use it")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME_OR_PATTERN",
                   help="leave tensors/nodes matching this name or shell pattern alone (repeatable)")
    p.add_argument("--reconstruct", action="store_true",
                   help="refit what every pass that supports it changed against the original model, "
                        "layer by layer, on the calibration data (needs --calibration)")
    p.add_argument("--validate", action="store_true",
                   help="compare the output with the input through onnxruntime after compressing")
    try:
        from onnxcompress.validation.cli import add_validate_arguments
    except ImportError:
        pass
    else:
        add_validate_arguments(p)
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the onnxruntime session memory of the input and the output "
                        "(a child process each, a few seconds; default: with --validate)")
    p.add_argument("--check-fidelity", action=argparse.BooleanOptionalAction, default=True,
                   help="with --calibration and no --validate, compare the output with the input on "
                        "up to 8 calibration samples under the default tolerance and say when it "
                        "misses (a headline; the exit code does not change). Default: on")
    try:
        from onnxcompress.validation.cli import add_report_arguments
    except ImportError:
        pass
    else:
        add_report_arguments(p, html=True)
    p.add_argument("--seed", type=int, default=None,
                   help="seed for every random choice (default: the recipe's, else 0)")
    p.add_argument("--max-calibration-samples", type=int, default=None, metavar="N",
                   help="use at most N calibration samples in every pass's statistics and "
                   "measurements (default: each pass's own count; recipe key "
                   "max_calibration_samples)")
    p.add_argument("--check", choices=("each", "end", "none"),
                   help="when to check the model with onnx.checker and onnxruntime (default: each)")
    p.add_argument("--overwrite", action="store_true", help="allow OUT to be the input file")
    p.add_argument("--best-effort", action="store_true",
                   help="if a pass fails, roll it back, keep the others, write the result and "
                   "exit 1 (default: exit 2, nothing written); recipe key best_effort = true")
    p.add_argument("--keep-failed", action="store_true",
                   help="keep OUT when --validate fails (default: it is deleted; "
                   "the exit code is 1 either way)")
    p.add_argument("--keep-debug-info", action="store_true",
                   help="keep the exporter's per-node debug metadata (module paths, stack traces), "
                   "long names, value types, and the nodes onnxruntime would merge or fold at load")
    auto = p.add_argument_group(
        "auto: per-layer choices found by search (--validate-data is the held-apart check data; "
        "without it the last quarter of --calibration)")
    auto.add_argument("--auto", action="store_true",
                      help="search per-layer options for the smallest (--objective) model meeting --target")
    auto.add_argument("--auto-target", metavar="EXPR",
                      help="fidelity to keep, e.g. top1>=0.99, cosine>=0.999, within(30)>=0.99 (none moved "
                           "past 30), accuracy>=-0.5pt, OUTPUT:cosine>=0.999, comma-joined (default: "
                           "top1>=0.99 where an output is class scores [N, C], values>=0.9995 on values [N, "
                           "K] with no clear top-1 (landmarks) or made by arithmetic (angles), else "
                           "cosine>=0.999 (0.999995 on a detector's per-anchor outputs [N, >=256, <=128] or "
                           "[N, <=128, >=256], 0.9999 on a picture [N, <=4, >=32, >=32] such as a depth map, "
                           "gains [N, >=32, >=32] in [0, 1], if soft; closer on an offset), detections>=0.99 "
                           "on a detector's boxes (a detection list, or a split head's score and box outputs "
                           "at their positive anchors), mask>=0.995 (Dice at 0.5) on probability maps [N, C, "
                           "H, W] such as a DB text detector's (at 0 on a logit map, one score a position: "
                           "[N, T, 1]), top1>=0.99 on a probability per sample (a sigmoid's decision at "
                           "0.5), and sequence>=0.99 (samples whose decoded sequence keeps every position's "
                           "arg-max but for a run's edge moving) on per-position probabilities or "
                           "log-probabilities such as a CTC recogniser's; top1 over every position instead "
                           "when every input is integer (token ids: a language model's predictions); a "
                           "decoder step fed back its state: top1>=0.998 a step, its states and a recurrent "
                           "text encoder's outputs cosine>=0.9999; top1, sequence and accuracy are held to a "
                           "flip rate estimated from how close each sample comes to a flip, not to a count "
                           "of flips; an output held so keeps compare's cosine>=0.99 too)")
    auto.add_argument("--objective", choices=("size", "latency", "memory"), default="size",
                      help="what to minimise (default: size, bytes on disk)")
    auto.add_argument("--auto-candidates", choices=("default", "all"), default="default",
                      help="per-layer options: default (k-means 2-8 bits, int8, int4, fp16), or all "
                           "(adds pruning then k-means per layer, which costs more search time and "
                           "rarely pays: zeros are stored and computed like any value)")
    auto.add_argument("--auto-allow-more-memory", action="store_true",
                      help="with --objective size: keep the smallest file even where onnxruntime needs "
                           "more session memory for it than for the original (by default the layers "
                           "whose decode costs memory back off until it fits)")
    auto.add_argument("--auto-allow-slower", action="store_true",
                      help="with --objective size: keep the smallest file even where it runs slower "
                           "than the original on this machine (by default the layers on decodes that "
                           "run every call, 4-bit blocks then int8, move to faster ones until it does not)")
    auto.add_argument("--time-budget", type=float, metavar="SECONDS",
                      help="stop searching after this long and keep the best plan found")
    auto.add_argument("--save-recipe", metavar="PATH.json",
                      help="write the chosen plan as a recipe (replays byte for byte with --recipe "
                           "and the same --calibration)")
    auto.add_argument("--ray", metavar="ADDRESS|auto|local",
                      help="run candidate evaluations on a Ray cluster (the [distributed] extra)")
    add_pass_arguments(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("inspect", parents=[common], help="show a model's ops, inputs and weights")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("report", parents=[common], help="render a saved JSON report as an HTML page",
                       description="Render REPORT.json (from compress --report) as one HTML page.")
    p.add_argument("report", help="a report written by compress --report PATH.json")
    p.add_argument("-o", "--output", help="the .html file to write (default: REPORT with .html)")
    p.set_defaults(func=cmd_report)

    try:
        from onnxcompress.validation.cli import add_compare_parser
    except ImportError:
        pass
    else:
        add_compare_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    args = parser.parse_args(argv)
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.ERROR if args.quiet else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        # onnx_ir warns about what our own checks report in one line (an invalid input).
        logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    from onnxcompress.passes.base import HEADLINE_RECORD
    for handler in root.handlers:  # ours: the report shows headlines (its "!!" lines)
        if handler not in before:
            handler.addFilter(lambda record: not getattr(record, HEADLINE_RECORD, False))
    try:
        with terminate_as_interrupt():
            return int(args.func(args))
    except OnnxCompressError as e:
        _traceback(e, args.debug)
        sys.stderr.write(f"onnxcompress: error: {_one_line(str(e))}\n")
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        sys.stderr.write("onnxcompress: interrupted\n")
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:
        # The reader went away (`onnxcompress inspect m.onnx | head`): not an error of ours.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # a bug: still one line; --debug adds the traceback, same exit code
        _traceback(e, args.debug)
        sys.stderr.write(
            f"onnxcompress: internal error: {type(e).__name__}: {_one_line(str(e))} "
            "(rerun with --debug for the traceback, and please report it)\n"
        )
        return EXIT_ERROR


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)


def _traceback(error: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(error, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
