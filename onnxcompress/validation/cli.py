"""``onnxcompress compare`` and the tolerance flags of ``compress --validate``.

The flags map one-to-one onto :func:`onnxcompress.validation.compare_models` keywords, with the
defaults defined there. Exit codes: 0 within tolerance, 1 outside, 2 error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from onnxcompress.errors import ConfigError
from onnxcompress.synthetic import parse_shape_overrides
from onnxcompress.validation.compare import (
    DEFAULT_SYNTHETIC_SAMPLES,
    DEFAULT_TOP_K,
    ComparisonReport,
    compare_models,
    render_report,
)
from onnxcompress.validation.latency import DEFAULT_LATENCY_RUNS
from onnxcompress.validation.layers import DEFAULT_MEMORY_BUDGET
from onnxcompress.validation.tolerance import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    DEFAULT_TOLERANCE,
    Tolerance,
    parse_output_tolerance,
)

EXIT_OK, EXIT_DIFFER = 0, 1


def add_tolerance_arguments(parser: argparse.ArgumentParser, *, defaults: str) -> None:
    group = parser.add_argument_group("tolerances", defaults)
    group.add_argument(
        "--atol",
        type=float,
        metavar="X",
        help=f"absolute tolerance, numpy allclose semantics (with --rtol; default rtol {DEFAULT_RTOL:g})",
    )
    group.add_argument(
        "--rtol",
        type=float,
        metavar="X",
        help=f"relative tolerance, times |original| (with --atol; default atol {DEFAULT_ATOL:g})",
    )
    group.add_argument(
        "--min-cosine", type=float, metavar="X", help="minimum cosine similarity of each output, e.g. 0.999"
    )
    group.add_argument(
        "--max-rel-error",
        type=float,
        metavar="X",
        help="maximum relative L2 error ||compressed-original||/||original||",
    )
    group.add_argument(
        "--min-top1",
        type=float,
        metavar="FRACTION",
        help="minimum top-1 agreement of classifier outputs, e.g. 0.99",
    )
    group.add_argument(
        "--min-detection-f1",
        type=float,
        metavar="FRACTION",
        help="minimum F1 of the boxes a detection list reports (an NMS-free detector's [N, K, 6]: "
        "score >= 0.25, matched by class and IoU >= 0.5), e.g. 0.99",
    )
    group.add_argument(
        "--tol",
        action="append",
        default=[],
        metavar="OUTPUT:KEY=X[,KEY=X]",
        help="criteria for one output, replacing the defaults for it "
        "(e.g. 'boxes:atol=1e-2,rtol=0'; repeatable)",
    )


def tolerances_from_args(args: argparse.Namespace) -> tuple[Tolerance | None, dict[str, Tolerance]]:
    given = {
        key: getattr(args, key, None)
        for key in ("atol", "rtol", "min_cosine", "max_rel_error", "min_top1", "min_detection_f1")
        if getattr(args, key, None) is not None
    }
    default = Tolerance.from_dict(given, where="tolerance flags") if given else None
    per_output = dict(parse_output_tolerance(item) for item in getattr(args, "tol", None) or [])
    return default, per_output


def add_compare_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "compare",
        parents=[common],
        help="compare a compressed model with the original",
        description="Run ORIGINAL and COMPRESSED on the same inputs through onnxruntime and check "
        "that every output stays within tolerance. Exit 0 within, 1 outside, 2 error.",
    )
    p.add_argument("original", help="the reference .onnx model")
    p.add_argument("compressed", help="the .onnx model to check")
    g = p.add_argument_group("inputs")
    g.add_argument(
        "--data",
        metavar="PATH",
        help="an .npz with arrays named after the inputs (samples stacked on a new leading "
        "axis) or a folder of .npz feeds; default: seeded synthetic inputs",
    )
    g.add_argument(
        "--labels",
        metavar="NAME",
        help="the array of the .npz holding class labels (default: 'labels' if present)",
    )
    g.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="shape of a synthetic input with dynamic dims, e.g. input:1x3x224x224 (repeatable)",
    )
    g.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help=f"use the first N samples of --data, or N synthetic ones "
        f"(default: all / {DEFAULT_SYNTHETIC_SAMPLES})",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs (default: 0)")
    add_tolerance_arguments(
        p,
        defaults=f"With none given: {DEFAULT_TOLERANCE.describe()} (top-1 for class-score outputs "
        "on real data only). Any given replaces the default; several given: all must hold.",
    )
    g = p.add_argument_group("metrics")
    g.add_argument(
        "--classifier",
        action="append",
        default=[],
        metavar="OUTPUT",
        help="treat OUTPUT's last axis as class scores (rank-2 outputs are detected)",
    )
    g.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"also report whether the original's top-1 is in the compressed top-K "
        f"(default: {DEFAULT_TOP_K})",
    )
    g.add_argument(
        "--layers",
        action="store_true",
        help="compare every intermediate tensor both models share and name the layers where the error jumps",
    )
    g.add_argument(
        "--layers-memory",
        type=int,
        default=DEFAULT_MEMORY_BUDGET // 2**20,
        metavar="MB",
        help="with --layers, expose at most this many MB of intermediate tensors per model and run; "
        f"more are compared in several passes over the data (default: {DEFAULT_MEMORY_BUDGET // 2**20})",
    )
    g.add_argument(
        "--max-layers",
        type=int,
        default=30,
        metavar="N",
        help="rows of the per-layer table (default: 30; --json has all)",
    )
    g.add_argument(
        "--latency",
        action="store_true",
        help="measure the median time per inference of both models (alternated runs)",
    )
    g.add_argument(
        "--latency-runs",
        type=int,
        default=DEFAULT_LATENCY_RUNS,
        metavar="N",
        help=f"runs per model for --latency (default: {DEFAULT_LATENCY_RUNS})",
    )
    g.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="onnxruntime intra-op threads for both models (default: onnxruntime's)",
    )
    add_report_arguments(p)
    p.set_defaults(func=cmd_compare)


def add_report_arguments(parser: argparse.ArgumentParser, *, html: bool = False) -> None:
    """``--json PATH`` and ``--report PATH``: the same flags on ``compress`` and ``compare``."""
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="write the report as JSON to PATH; '-' prints it on stdout instead of the table",
    )
    parser.add_argument(
        "--report",
        metavar="PATH",
        help="write the report to PATH and still print the table: "
        + (".json (data) or .html (a page with tables and plots)" if html else "JSON (PATH.json)"),
    )


def report_paths(args: argparse.Namespace, *, html: bool = False) -> list[tuple[Path, str]]:
    """(path, "json" | "html") for every file --json/--report ask for, each checked before the
    work starts (an unknown extension, a missing folder), not after it."""
    from onnxcompress.model import check_output_path
    from onnxcompress.report import report_format

    files: list[tuple[Path, str]] = []
    json_path = getattr(args, "json", None)
    if json_path and json_path != "-":
        files.append((Path(json_path), "json"))
    report = getattr(args, "report", None)
    if report:
        fmt = report_format(report)
        if fmt != "json" and not html:
            raise ConfigError(f"{report}: this command writes JSON reports.", hint="name it .json.")
        files.append((Path(report), fmt))
    for path, _ in files:
        check_output_path(path)
    return files


def cmd_compare(args: argparse.Namespace) -> int:
    report_paths(args)  # before the comparison, not after it
    tolerance, per_output = tolerances_from_args(args)
    report = compare_models(
        args.original,
        args.compressed,
        args.data,
        tolerance=tolerance,
        per_output=per_output,
        classifiers=args.classifier,
        top_k=args.top_k,
        label_key=args.labels,
        shapes=parse_shape_overrides(args.shape),
        samples=args.samples,
        seed=args.seed,
        layers=args.layers,
        layers_memory=args.layers_memory * 2**20,
        latency=args.latency,
        latency_runs=args.latency_runs,
        threads=args.threads,
    )
    _emit(report, args)
    return EXIT_OK if report.passed else EXIT_DIFFER


def _emit(report: ComparisonReport, args: argparse.Namespace) -> None:
    for path, _ in report_paths(args):
        _write_text(path, report.to_json() + "\n")
    if args.json == "-":
        print(report.to_json())
    elif not args.quiet:
        print(report.render(max_layers=args.max_layers))


def _write_text(path: Path, text: str) -> None:
    from onnxcompress.model import write_text_atomic

    write_text_atomic(path, text)


# -- compress --validate ------------------------------------------------------------------------


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``compress`` that tune ``--validate``."""
    parser.add_argument(
        "--validate-data",
        dest="validation_data",
        metavar="PATH",
        help="data for --validate (default: --calibration, else synthetic inputs)",
    )
    parser.add_argument(
        "--shape",
        dest="validation_shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="shape of a synthetic input with dynamic dims, e.g. input:1x3x224x224 (repeatable; as "
        "for compare): the passes' checks without --calibration, --validate and --memory",
    )
    # The earlier spelling, kept working but no longer advertised.
    parser.add_argument(
        "--validate-shape", dest="validation_shape", action="append", help=argparse.SUPPRESS
    )
    add_tolerance_arguments(
        parser,
        defaults=f"For --validate. With none given: {DEFAULT_TOLERANCE.describe()} (top-1 for "
        "class-score outputs on real data only), as for compare. Any given replaces the default; "
        "several given: all must hold.",
    )


def check_validate_arguments(args: argparse.Namespace) -> None:
    """Tolerance or validation-data flags given to ``compress`` without ``--validate``."""
    if getattr(args, "validate", False):
        return
    given = [
        flag
        for flag, dest in (
            ("--validate-data", "validation_data"),
            ("--atol", "atol"),
            ("--rtol", "rtol"),
            ("--min-cosine", "min_cosine"),
            ("--max-rel-error", "max_rel_error"),
            ("--min-top1", "min_top1"),
            ("--min-detection-f1", "min_detection_f1"),
            ("--tol", "tol"),
        )
        if getattr(args, dest, None) not in (None, [])
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} given without --validate.",
            hint="add --validate.",
        )


def validator_for_cli(args: argparse.Namespace | None = None):  # noqa: ANN201 - api.Validator
    """The ``compress --validate`` hook: compares the saved output with the input file."""
    # None: compare_models applies DEFAULT_TOLERANCE, the same policy as `compare`.
    tolerance, per_output = tolerances_from_args(args) if args is not None else (None, {})
    shapes = parse_shape_overrides(getattr(args, "validation_shape", None) or [])

    def validate(input_path: Path, output_path: Path, data: Any) -> dict[str, Any]:
        report = compare_models(
            input_path, output_path, data, tolerance=tolerance, per_output=per_output, shapes=shapes
        )
        return report.to_dict()

    return validate


def render_validation(validation: dict[str, Any]) -> str:
    """The table for a ``compress --validate`` result (the dict the validator returned)."""
    return render_report(validation)


def print_validation(validation: dict[str, Any] | None) -> None:
    if validation is not None:
        sys.stdout.write("\n" + render_validation(validation) + "\n")
