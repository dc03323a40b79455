"""A per-layer plan (weight label -> option) and the recipe that applies it.

The recipe is one pipeline of the existing passes with per-layer options, so replaying it (with
the same ``--calibration`` file) reproduces the model byte for byte without searching again.
Auto mode writes it in its plan form (``{"plan": {"layers": {...}}}``: the most common option
as ``"*"`` and each other layer once), which the pipeline expands into those passes against the
model it runs on: the form the model's provenance stores. The passes' own form names every layer
each codec leaves alone in an ``exclude`` list, 250 bytes of a 2.2 KB classifier's file and
2.7 KB of a 37-layer one, more than a uniform run's recipe for the same tensors.
"""

from __future__ import annotations

import collections
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxcompress.auto.candidates import (
    FLOAT,
    KMEANS_CALIBRATION_SAMPLES,
    OBJECTIVES,
    Candidate,
    available_candidates,
    by_name,
    pass_steps,
    recipe_labels,
)
from onnxcompress.errors import ConfigError


@dataclass
class Plan:
    """The option chosen per candidate layer (layers not listed stay float)."""

    choices: dict[str, str] = field(default_factory=dict)

    def assignment(self) -> dict[str, Candidate]:
        return {label: by_name(name) for label, name in self.choices.items() if name != FLOAT.name}

    def to_recipe(self, all_labels: Sequence[str], *, seed: int = 0,
                  calibration_samples: int = KMEANS_CALIBRATION_SAMPLES,
                  objective: str = "size") -> dict[str, Any]:
        """The recipe for this plan. ``all_labels``: every weight label of the model (a codec
        limited by ``exclude`` must name the weights it leaves alone); ``calibration_samples``:
        how many of the first calibration samples the data-aware passes may read (the search's
        share of the data, so a replay with the same file sees the same samples); ``objective``:
        the form int8 weights are written in (``pass_steps``)."""
        steps = pass_steps(self.assignment(), all_labels, calibration_samples=calibration_samples,
                           objective=objective)
        if not steps:  # nothing compresses: an empty pipeline is not a recipe, so a no-op pass
            steps = [{"pass": "kmeans", "bits": 8, "layer_bits": {"*": 0}}]
        return {"seed": seed, "check": "each", "passes": steps}

    def to_plan_recipe(self, all_labels: Sequence[str], *, seed: int = 0,
                       calibration_samples: int = KMEANS_CALIBRATION_SAMPLES,
                       objective: str = "size") -> dict[str, Any]:
        """The recipe in its plan form (arguments as :meth:`to_recipe`): the pipeline expands it
        into :meth:`to_recipe`'s passes on the model it runs on (:func:`expand_plan`). Every
        label of ``all_labels`` reads the option it has here (absent: float), the most common one
        as ``"*"``; a label the plan gives an option outside ``all_labels`` is listed too."""
        effective = {label: self.choices.get(label, FLOAT.name) for label in all_labels}
        counts = collections.Counter(effective.values())
        common = max(counts, key=lambda name: (counts[name], name == FLOAT.name)) if counts else FLOAT.name
        if DEFAULT_LAYER in effective:  # a weight named "*": every label listed
            common = FLOAT.name
        layers = {label: name for label, name in effective.items() if name != common}
        layers.update({label: name for label, name in self.choices.items()
                       if label not in effective and name != FLOAT.name})
        if common != FLOAT.name:
            layers[DEFAULT_LAYER] = common
        plan: dict[str, Any] = {"layers": layers, "calibration_samples": calibration_samples}
        if objective != "size":
            plan["objective"] = objective
        return {"seed": seed, "plan": plan}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.choices.values():
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))


#: The plan form's key for every layer it does not name.
DEFAULT_LAYER = "*"


def check_plan(plan: Any, where: str = "recipe") -> dict[str, Any]:
    """``plan`` (a recipe's ``"plan"`` table) checked without a model: the error names the key."""
    if not isinstance(plan, dict):
        raise ConfigError(f"{where}: 'plan' must be a table with 'layers'.")
    unknown = set(plan) - {"layers", "calibration_samples", "objective"}
    if unknown:
        raise ConfigError(f"{where}: plan: unknown key(s) {', '.join(sorted(unknown))}.",
                          hint="a plan has 'layers', 'calibration_samples' and 'objective'.")
    layers = plan.get("layers")
    if not isinstance(layers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in layers.items()):
        raise ConfigError(f"{where}: plan: 'layers' must map weight names (or \"*\") to option names.")
    for label, name in layers.items():
        try:
            by_name(name)
        except KeyError:
            names = [FLOAT.name] + [c.name for c in available_candidates("all")]
            raise ConfigError(f"{where}: plan: layer '{label}': no option '{name}'.",
                              hint=f"options: {', '.join(names)}") from None
    samples = plan.get("calibration_samples", KMEANS_CALIBRATION_SAMPLES)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"{where}: plan: calibration_samples must be a positive integer, got {samples!r}.")
    if plan.get("objective", "size") not in OBJECTIVES:
        raise ConfigError(f"{where}: plan: objective must be one of {', '.join(OBJECTIVES)}, "
                          f"got {plan.get('objective')!r}.")
    return plan


def expand_plan(plan: dict[str, Any], model: Any) -> list[dict[str, Any]]:
    """The passes (recipe steps) of a checked plan-form ``plan`` on ``model``: what
    :meth:`Plan.to_recipe` writes for the plan it was made from."""
    from onnxcompress.auto.candidates import _weights

    labels = recipe_labels(model)
    known = set(labels) | {w.label for w in _weights(model)}
    if missing := sorted(set(plan["layers"]) - known - {DEFAULT_LAYER}):
        raise ConfigError(f"recipe: plan: the model has no weight '{missing[0]}'"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") + ".",
                          hint="a plan replays on the model auto mode searched it for")
    return Plan(plan_choices(plan, labels)).to_recipe(
        labels, calibration_samples=plan.get("calibration_samples", KMEANS_CALIBRATION_SAMPLES),
        objective=plan.get("objective", "size"))["passes"]


def plan_choices(plan: dict[str, Any], labels: Sequence[str]) -> dict[str, str]:
    """Each label's option under a plan-form ``plan`` (labels it names outside ``labels`` too)."""
    layers = plan["layers"]
    default = layers.get(DEFAULT_LAYER, FLOAT.name)
    choices = {label: layers.get(label, default) for label in labels}
    choices.update({label: name for label, name in layers.items()
                    if label != DEFAULT_LAYER and label not in choices})
    return choices


def plan_from_recipe(recipe: dict[str, Any], labels: Sequence[str]) -> Plan:
    """Read the per-layer plan back from a recipe written by :meth:`Plan.to_recipe` or
    :meth:`Plan.to_plan_recipe`."""
    if "plan" in recipe:
        return Plan(plan_choices(recipe["plan"], labels))
    choices = {label: FLOAT.name for label in labels}
    pruned: dict[str, str] = {}  # label -> the prune candidate's prefix ("prune50", "nm24")
    for step in recipe.get("passes", []):
        name = step.get("pass")
        excluded = step.get("exclude") or []
        mine = [label for label in labels if not any(fnmatch.fnmatchcase(label, p) for p in excluded)]
        if name == "kmeans":  # without layer_bits: a uniform run (auto.settings)
            for label in mine:
                for pattern, bits in (step.get("layer_bits") or {"*": step.get("bits", 8)}).items():
                    if fnmatch.fnmatchcase(label, pattern):
                        if bits:
                            choices[label] = f"kmeans{int(bits)}"
                        break
        elif name == "prune":
            pattern = str(step.get("pattern", "unstructured"))
            prefix = (f"prune{round(100 * float(step.get('sparsity', 0.5)))}" if pattern == "unstructured"
                      else "nm" + pattern.replace(":", "").replace(" ", ""))
            pruned.update(dict.fromkeys(mine, prefix))
        elif name in _EXCLUDE_CODECS:
            for label in mine:
                choices[label] = _EXCLUDE_CODECS[name]
        else:
            raise ConfigError(f"recipe: pass '{name}' is not one auto mode writes.")
    for label, prefix in pruned.items():
        choices[label] = f"{prefix}+{choices[label]}" if choices[label] != FLOAT.name else prefix
    return Plan(choices)


#: Codecs limited to their layers by ``exclude`` -> the option name they give them.
_EXCLUDE_CODECS = {"quantize": "int8", "blockq": "int4", "bfloat16": "fp16"}
