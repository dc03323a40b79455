"""Accuracy-aware auto mode: give a fidelity target, get the smallest (or fastest, or leanest in
memory) model that meets it, with per-layer choices across the passes' codecs.

``search`` finds the plan; its recipe replays with :class:`onnxcompress.pipeline.Pipeline`.
"""

from onnxcompress.auto.default_targets import DEFAULT_TARGET
from onnxcompress.auto.executor import Executor, LocalExecutor, RayExecutor, SerialExecutor, make_executor
from onnxcompress.auto.paths import fidelity_text
from onnxcompress.auto.plan import Plan, plan_from_recipe
from onnxcompress.auto.search import AutoResult, search
from onnxcompress.auto.targets import Fidelity, Target, parse_target

__all__ = [
    "DEFAULT_TARGET",
    "AutoResult",
    "Executor",
    "Fidelity",
    "LocalExecutor",
    "Plan",
    "RayExecutor",
    "SerialExecutor",
    "Target",
    "fidelity_text",
    "make_executor",
    "parse_target",
    "plan_from_recipe",
    "search",
]
