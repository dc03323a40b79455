"""A per-layer plan (weight label -> option) and the recipe that applies it.

The recipe is one pipeline of the existing passes with per-layer options, so replaying it (with
the same ``--calibration`` file) reproduces the model byte for byte without searching again.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxcompress.auto.candidates import FLOAT, KMEANS_CALIBRATION_SAMPLES, Candidate, by_name, pass_steps
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

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.choices.values():
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))


def plan_from_recipe(recipe: dict[str, Any], labels: Sequence[str]) -> Plan:
    """Read the per-layer plan back from a recipe written by :meth:`Plan.to_recipe`."""
    choices = {label: FLOAT.name for label in labels}
    pruned: dict[str, str] = {}  # label -> the prune candidate's prefix ("prune50", "nm24")
    for step in recipe.get("passes", []):
        name = step.get("pass")
        excluded = step.get("exclude") or []
        mine = [label for label in labels if not any(fnmatch.fnmatchcase(label, p) for p in excluded)]
        if name == "kmeans":
            for label in labels:
                for pattern, bits in (step.get("layer_bits") or {}).items():
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
