"""Mutation check of the numerical code: do the fast tests notice a subtly wrong number?

A dev tool for engineers (not CI, not a runtime or test dependency). Two parts:

``planted``  Each named bug of issue #19 (and a few of the same kind) is written into a temporary
             copy of the repository by an exact text substitution; the relevant fast test files
             run against that copy; a bug is *killed* when at least one test fails, and the
             report names the first failing test and its message.
``mutmut``   The generic mutants of mutmut (https://github.com/boxed/mutmut, ``pip install
             mutmut`` into the dev venv) over the numerical functions named in MUTMUT_FUNCTIONS,
             with the fast test files of ``[tool.mutmut]`` in pyproject.toml, also in a
             temporary copy (the ``mutants/`` folder never lands in the worktree).

Usage (CPU heavy: run it niced, it takes minutes):
    nice -n 10 python scripts/mutation_check.py planted [--all-failures] [--only NAME]
    nice -n 10 python scripts/mutation_check.py mutmut [--max-children 1] [--sample 10]
    nice -n 10 python scripts/mutation_check.py all --report docs/mutation_report.md
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPY_ITEMS = ("onnxcompress", "tests", "models", "pyproject.toml")

METRICS_TESTS = ("tests/validation/test_metrics_reference.py", "tests/validation/test_compare.py")
PRUNE_TESTS = ("tests/passes/test_pruning_reference.py", "tests/passes/test_pruning.py")
INT8_TESTS = ("tests/passes/test_quantization_reference.py", "tests/passes/test_quantization.py",
              "tests/test_calibration.py")
KMEANS_TESTS = ("tests/test_kmeans_reference.py", "tests/passes/test_weight_sharing_reference.py",
                "tests/test_kmeans.py", "tests/passes/test_weight_sharing.py")


@dataclass(frozen=True)
class Bug:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    issue: bool = False  # named in issue #19


BUGS: tuple[Bug, ...] = (
    # -- validation metrics (issue #19: 0 of 109 tests caught the first two) ----------------------
    Bug("relative L2 divided by the compressed norm", "onnxcompress/validation/metrics.py",
        "return math.sqrt(self.sum_d2 / self.sum_a2)", "return math.sqrt(self.sum_d2 / self.sum_b2)",
        METRICS_TESTS, issue=True),
    Bug("SNR as 20*log10 of the power ratio", "onnxcompress/validation/metrics.py",
        "return 10 * math.log10(self.sum_a2 / self.sum_d2)",
        "return 20 * math.log10(self.sum_a2 / self.sum_d2)",
        METRICS_TESTS, issue=True),
    Bug("square-rooted cosine", "onnxcompress/validation/metrics.py",
        "return max(-1.0, min(1.0, self.sum_ab / math.sqrt(self.sum_a2 * self.sum_b2)))",
        "c = self.sum_ab / math.sqrt(self.sum_a2 * self.sum_b2)\n"
        "        return max(-1.0, min(1.0, math.copysign(math.sqrt(abs(c)), c)))",
        METRICS_TESTS, issue=True),
    Bug("mean abs over all elements counted twice", "onnxcompress/validation/metrics.py",
        "return self.sum_abs / self.finite_elements if",
        "return self.sum_abs / (2 * self.finite_elements) if",
        METRICS_TESTS),
    Bug("top-k agreement counts the compressed top-1 only", "onnxcompress/validation/metrics.py",
        "top_k_b = np.argpartition(-b, k - 1, axis=-1)[:, :k]", "top_k_b = top_b[:, None]", METRICS_TESTS),
    Bug("accuracy of the compressed model scored with the original's predictions",
        "onnxcompress/validation/metrics.py",
        "self.correct_compressed += int(np.count_nonzero(top_b == labels))",
        "self.correct_compressed += int(np.count_nonzero(top_a == labels))", METRICS_TESTS),
    # -- pruning ----------------------------------------------------------------------------------
    Bug("random mask at the right sparsity", "onnxcompress/passes/_prune_select.py",
        "mask[np.argpartition(flat, k - 1)[:k]] = False",
        "mask[np.random.default_rng(0).permutation(flat.size)[:k]] = False", PRUNE_TESTS, issue=True),
    Bug("bias correction reports success but adds zero", "onnxcompress/layerwise/bias.py",
        "(b.astype(np.float64) + delta.reshape(b.shape)).astype(b.dtype)",
        "(b.astype(np.float64) + 0 * delta.reshape(b.shape)).astype(b.dtype)", PRUNE_TESTS, issue=True),
    Bug("bias correction of a bias-less Conv/Gemm adds zero", "onnxcompress/layerwise/bias.py",
        'value = w.add_constant(f"{w.name}_bias", delta.astype(w.numpy().dtype))',
        'value = w.add_constant(f"{w.name}_bias", (0 * delta).astype(w.numpy().dtype))', PRUNE_TESTS),
    Bug("channel importance ignores the BatchNorm scale (magnitude)", "onnxcompress/passes/_prune_select.py",
        "            t = t * scale\n", "            t = t\n", PRUNE_TESTS, issue=True),
    Bug("channel importance ignores the BatchNorm scale (BN statistics)", "onnxcompress/passes/_channels.py",
        "params[1].astype(np.float64)[:, None] + np.abs(params[0].astype(np.float64))[:, None] * z",
        "params[1].astype(np.float64)[:, None] + z", PRUNE_TESTS),
    Bug("Wanda importance uses E[x^2] instead of its square root", "onnxcompress/passes/_prune_select.py",
        "np.sqrt(np.maximum(energy.astype(np.float32), 0))",
        "np.maximum(energy.astype(np.float32), 0)", PRUNE_TESTS),
    Bug("N:M keeps the smallest weights of each group", "onnxcompress/passes/_prune_select.py",
        'drop = np.argsort(groups, axis=1, kind="stable")[:, : m - n]',
        'drop = np.argsort(groups, axis=1, kind="stable")[:, n:]', PRUNE_TESTS),
    Bug("global scope applies the threshold per tensor", "onnxcompress/passes/pruning.py",
        "masks.update(_global_masks([(w, scores[w.label]) for w, _ in global_pool], cfg.sparsity))",
        "masks.update({w.label: _layer_mask(scores[w.label], cfg.sparsity, None) for w, _ in global_pool})",
        PRUNE_TESTS),
    Bug("channel scores keep the lowest-ranked channels", "onnxcompress/passes/_prune_select.py",
        'keep[group.root] = np.sort(np.argsort(-s, kind="stable")[:n])',
        'keep[group.root] = np.sort(np.argsort(s, kind="stable")[:n])', PRUNE_TESTS),
    Bug("bias correction uses the mean of the wrong input channel", "onnxcompress/layerwise/bias.py",
        "        return per_pair @ table\n", "        return per_pair @ table[::-1]\n", PRUNE_TESTS),
    Bug("BatchNorm folding forgets epsilon", "onnxcompress/passes/_folding.py",
        "factor = gamma / np.sqrt(var + eps)", "factor = gamma / np.sqrt(var)", PRUNE_TESTS),
    Bug("BatchNorm folding drops the running mean", "onnxcompress/passes/_folding.py",
        "new_bias = ((bias - mean) * factor + beta)", "new_bias = (bias * factor + beta)", PRUNE_TESTS),
    # -- int8 -------------------------------------------------------------------------------------
    Bug("int32 bias 5% too large", "onnxcompress/passes/_qdq.py",
        "q = np.round(b / np.where(s > 0, s, 1.0))", "q = np.round(1.05 * b / np.where(s > 0, s, 1.0))",
        INT8_TESTS, issue=True),
    Bug("int32 bias truncated instead of rounded", "onnxcompress/passes/_qdq.py",
        "q = np.round(b / np.where(s > 0, s, 1.0))", "q = np.trunc(b / np.where(s > 0, s, 1.0))", INT8_TESTS),
    Bug("weight scale max|w|/128", "onnxcompress/passes/_qdq.py",
        "scale = np.where(amax > 0, amax / qmax, 1.0)", "scale = np.where(amax > 0, amax / (qmax + 1), 1.0)",
        INT8_TESTS),
    Bug("weights truncated instead of rounded", "onnxcompress/passes/_qdq.py",
        "np.round(t, out=t)", "np.trunc(t, out=t)", INT8_TESTS),
    Bug("activation zero point floored", "onnxcompress/passes/_qdq.py",
        "zp = int(np.clip(round(-low / scale), 0, 255))", "zp = int(np.clip(int(-low / scale), 0, 255))",
        INT8_TESTS),
    Bug("activation scale over 256 steps", "onnxcompress/passes/_qdq.py",
        "scale = float(np.float32(span / 255.0))", "scale = float(np.float32(span / 256.0))", INT8_TESTS),
    Bug("bias scale 2% off s_x * s_w", "onnxcompress/passes/_int8.py",
        "scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), bias.shape).copy()",
        "scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), bias.shape).copy() * 1.02",
        INT8_TESTS),
    # -- k-means ----------------------------------------------------------------------------------
    Bug("k-means centroid is not the weighted mean (weights ignored)", "onnxcompress/kmeans.py",
        "sw = np.diff(pw[g, bounds]) if pw is not None else counts.astype(np.float64)",
        "sw = counts.astype(np.float64)\n"
        "            sx = np.diff(np.concatenate([[0.0], np.cumsum(row)])[bounds])",
        KMEANS_TESTS),
    Bug("k-means assigns by shifted midpoints", "onnxcompress/kmeans.py",
        "mids_all = 0.5 * (centroids[:, 1:] + centroids[:, :-1])",
        "mids_all = 0.45 * centroids[:, 1:] + 0.55 * centroids[:, :-1]", KMEANS_TESTS),
    Bug("k-means final means skipped (centroids of the previous step kept)", "onnxcompress/kmeans.py",
        "        if exact[g]:\n            means = centroids[g]",
        "        if True:\n            means = centroids[g]", KMEANS_TESTS),
    Bug("k-means bias correction adds zero", "onnxcompress/layerwise/bias.py",  # shared with prune
        "(b.astype(np.float64) + delta.reshape(b.shape)).astype(b.dtype)",
        "(b.astype(np.float64) + 0 * delta.reshape(b.shape)).astype(b.dtype)",
        KMEANS_TESTS),
    Bug("sensitivity weights use the RMS instead of the energy", "onnxcompress/passes/_kmeans_fit.py",
        "    return np.maximum(imp / mean, 1e-2)", "    return np.maximum(np.sqrt(imp / mean), 1e-2)",
        KMEANS_TESTS),
)


def _copy_repo(dest: Path) -> None:
    for item in COPY_ITEMS:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "mutants"))
        elif src.exists():
            shutil.copy2(src, dest / item)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["COLUMNS"] = "500"  # pytest cuts the failure message to the terminal width
    return env


_FAILED = re.compile(r"^FAILED (\S+)(?: - (.*))?$", re.M)


def run_planted(bugs: tuple[Bug, ...], all_failures: bool) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="onnxcompress-mut-") as tmp:
        root = Path(tmp)
        _copy_repo(root)
        for bug in bugs:
            path = root / bug.file
            original = path.read_text()
            count = original.count(bug.old)
            if count != 1:
                results.append({"bug": bug, "status": "NOT PLANTED",
                                "detail": f"the text to replace occurs {count} times in {bug.file}"})
                print(f"[not planted] {bug.name}: {count} matches", flush=True)
                continue
            path.write_text(original.replace(bug.old, bug.new))
            start = time.monotonic()
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow",
                   "-rf", "--tb=short", *([] if all_failures else ["-x"]), *bug.tests]
            proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True)
            path.write_text(original)
            failed = _FAILED.findall(proc.stdout)
            summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            if proc.returncode == 1 and failed:
                status = "killed"
                test = failed[0][0]
                detail = f"{test}: {_first_message(proc.stdout)[:260]}"
            elif proc.returncode == 0:
                status, detail = "SURVIVED", summary
            else:
                status, detail = "ERROR", (proc.stderr or proc.stdout).strip()[-300:]
            results.append({"bug": bug, "status": status, "detail": detail, "failed": len(failed),
                            "summary": summary, "seconds": time.monotonic() - start})
            took = time.monotonic() - start
            print(f"[{status}] {bug.name} ({len(failed)} failing, {took:.0f} s): {detail}", flush=True)
    return results


def _first_message(stdout: str) -> str:
    """The first failure's assertion message: its first few non-empty ``E`` lines, joined."""
    lines = [ln[1:].strip() for ln in stdout.splitlines() if ln.startswith("E ")]
    useful = [ln for ln in lines if ln and ln not in ("AssertionError:", "Arrays are not equal")][:3]
    return " / ".join(useful)


# -- mutmut -------------------------------------------------------------------------------------

# The numerical functions the issue names: metrics, the k-means core, pruning importance and
# selection, int8 arithmetic. Orchestration (graph rewiring, reports) is left to the other tests.
MUTMUT_FUNCTIONS = (
    "onnxcompress.validation.metrics.*",
    "onnxcompress.kmeans.*",
    "onnxcompress._kmeans_init.*",
    *(f"onnxcompress.passes._prune_select.x_{f}__mutmut_*" for f in (
        "_weight_scores", "_layer_mask", "_global_masks", "_nm_mask", "_norms", "_consumer_channel_terms",
        "_channel_scores", "_n_keep", "_choose_channels")),
    *(f"onnxcompress.layerwise.bias.x_{f}__mutmut_*"
      for f in ("bias_delta", "correct_bias", "add_to_bias", "bias_of")),
    *(f"onnxcompress.layerwise.channels.x_{f}__mutmut_*" for f in ("channel_table", "per_element")),
    *(f"onnxcompress.passes._qdq.x_{f}__mutmut_*" for f in (
        "activation_qparams", "quantize_weight", "dequantize_weight", "quantize_bias", "_along",
        "relative_error")),
    "onnxcompress.passes._qdq.xǁQParamsǁ*",
)


def run_mutmut(max_children: int, sample: int, only: list[str] | None = None,
               ) -> tuple[Counter, list[tuple[str, str]], str]:
    """mutmut over MUTMUT_FUNCTIONS; ``sample`` > 1 runs every sample-th mutant (names sorted, so
    each function keeps its share) to bound the time on a shared machine."""
    with tempfile.TemporaryDirectory(prefix="onnxcompress-mutmut-") as tmp:
        root = Path(tmp)
        _copy_repo(root)
        mutmut = [sys.executable, "-m", "mutmut"]
        env = _env(root)
        env.pop("PYTHONPATH")  # mutmut puts its mutants/ copy first on the path itself
        start = time.monotonic()
        # First run: generates every mutant and the test-coverage stats, runs one cheap mutant.
        first = subprocess.run([*mutmut, "run", "--max-children", str(max_children),
                                "onnxcompress.validation.metrics.x_is_float__mutmut_1"],
                               cwd=root, env=env, capture_output=True, text=True)
        log = (first.stdout + first.stderr)[-1500:]
        names = sorted(n for n in _mutant_names(root) if any(_fn_match(n, p) for p in MUTMUT_FUNCTIONS))
        chosen = [n for n in names if n in set(only)] if only else names[::sample]
        log += f"\n{len(names)} mutants in scope, running {len(chosen)} (every {sample})"
        for i in range(0, len(chosen), 200):  # in batches: a bounded command line
            proc = subprocess.run([*mutmut, "run", "--max-children", str(max_children), *chosen[i:i + 200]],
                                  cwd=root, env=env, capture_output=True, text=True)
            log += (proc.stdout + proc.stderr)[-300:]
            print(f"mutmut: {min(i + 200, len(chosen))}/{len(chosen)} ({time.monotonic() - start:.0f} s)",
                  flush=True)
        res = subprocess.run([*mutmut, "results", "--all", "true"], cwd=root, env=env,
                             capture_output=True, text=True)
        statuses: Counter = Counter()
        survivors: list[tuple[str, str]] = []
        wanted = set(chosen)
        for line in res.stdout.splitlines():
            name, _, status = line.strip().rpartition(":")
            name, status = name.strip(), status.strip()
            if name not in wanted:
                continue
            statuses[status] += 1
            if status not in ("killed", "timeout"):
                diff = subprocess.run([*mutmut, "show", name], cwd=root, env=env, capture_output=True,
                                      text=True).stdout
                survivors.append((f"{name} ({status})", _diff_lines(diff)))
        log += f"\n(mutmut ran {time.monotonic() - start:.0f} s)"
        return statuses, survivors, log


def _mutant_names(root: Path) -> list[str]:
    import json

    names: list[str] = []
    for meta in (root / "mutants").rglob("*.meta"):
        names += list(json.loads(meta.read_text())["exit_code_by_key"])
    return names


def _fn_match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(name, pattern)


def _diff_lines(diff: str) -> str:
    lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return " / ".join(ln.strip() for ln in lines)[:240]


# -- report -------------------------------------------------------------------------------------


def render(planted: list[dict] | None, mutmut: tuple | None) -> str:
    out = ["# Mutation check report", "",
           f"Made by `scripts/mutation_check.py` on {time.strftime('%Y-%m-%d %H:%M')} "
           f"(a dev tool: see the script's docstring).", ""]
    if planted is not None:
        killed = sum(r["status"] == "killed" for r in planted)
        named = [r for r in planted if r["bug"].issue]
        out += ["## Planted bugs", "",
                f"{killed} of {len(planted)} killed; {sum(r['status'] == 'killed' for r in named)} of "
                f"{len(named)} bugs named in issue #19 killed.", "",
                "| bug | issue #19 | result | first failing test: message |", "|---|---|---|---|"]
        for r in planted:
            detail = r["detail"].replace("|", "\\|").replace("\n", " ")
            out.append(f"| {r['bug'].name} | {'yes' if r['bug'].issue else ''} | {r['status']} | {detail} |")
        out.append("")
    if mutmut is not None:
        statuses, survivors, _ = mutmut
        total = sum(statuses.values())
        killed = statuses.get("killed", 0) + statuses.get("timeout", 0)
        out += ["## mutmut", "",
                f"{killed} of {total} mutants run killed ({killed / max(total, 1):.1%}); by status: "
                + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())), "",
                "Survivors:", ""]
        out += [f"- `{name}`: `{diff}`" for name, diff in survivors] or ["- none"]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("planted", "mutmut", "all"))
    ap.add_argument("--only", help="planted bugs whose name contains this text")
    ap.add_argument("--all-failures", action="store_true", help="run every test file fully (count failures)")
    ap.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1: shared machine)")
    ap.add_argument("--sample", type=int, default=1, help="run every N-th mutmut mutant (default: all)")
    ap.add_argument("--names", type=Path, help="run only the mutmut mutants named in this file (one a line), "
                    "e.g. the survivors of a previous run after adding tests")
    ap.add_argument("--report", type=Path, help="write the markdown report here")
    args = ap.parse_args(argv)
    bugs = tuple(b for b in BUGS if not args.only or args.only.lower() in b.name.lower())
    planted = run_planted(bugs, args.all_failures) if args.what in ("planted", "all") else None
    only = args.names.read_text().split() if args.names else None
    mm = run_mutmut(args.max_children, args.sample, only) if args.what in ("mutmut", "all") else None
    if mm is not None:
        print(mm[2])
    text = render(planted, mm)
    print(text)
    if args.report:
        args.report.write_text(text)
    survived = [r for r in planted or [] if r["status"] != "killed"]
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
