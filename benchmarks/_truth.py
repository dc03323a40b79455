"""Ground truth of the real-model eval sets: the task metric itself, next to agreement with fp32.

Agreement with the fp32 model counts every changed answer, including answers fp32 got wrong and
changes no user sees (a CTC recogniser's trailing space on a padded line). Where an eval set holds
what was drawn (``labels`` for classifiers, ``texts`` for recognisers, written by
``scripts/real_models.py``), the model's accuracy against it is the task metric the issues' bars are
about, and a compressed model is judged on how many points of it it keeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def charset(root: Path, entry: dict[str, Any]) -> list[str] | None:
    """Class index -> text for a CTC recogniser, from the manifest's ``charset`` spec:
    ``metadata:KEY+space`` (blank, the model metadata's lines, a space: PaddleOCR's layout),
    ``file:NAME.json`` (a list, blank included) or the characters themselves."""
    spec = entry["metric"].get("charset")
    if not spec:
        return None
    if spec.startswith("metadata:"):
        import onnx

        key = spec.removeprefix("metadata:").removesuffix("+space")
        model = onnx.load(str(root / entry["file"]), load_external_data=False)
        chars = next(p.value for p in model.metadata_props if p.key == key).split("\n")
        return ["", *chars] + ([" "] if spec.endswith("+space") else [])
    if spec.startswith("file:"):
        return json.loads((root / spec.removeprefix("file:")).read_text())
    return list(spec)


def load_truth(root: Path, entry: dict[str, Any], evaluation: str, n: int) -> dict[str, Any] | None:
    """The first ``n`` samples' ground truth of an eval file, or None where it has none."""
    with np.load(root / evaluation) as data:
        files = set(data.files)
        if "texts" in files:
            chars = charset(root, entry)
            if chars is None:
                return None
            return {"texts": [str(t) for t in data["texts"][:n]], "charset": chars}
        if "labels" in files and entry["metric"]["kind"] == "top1":
            return {"labels": np.asarray(data["labels"][:n])}
    return None


def _text(s: str, casefold: bool) -> str:
    s = " ".join(s.split())  # leading, trailing and repeated spaces are not read text
    return s.casefold() if casefold else s


def accuracy(entry: dict[str, Any], truth: dict[str, Any], decoded: list[Any]) -> float:
    """Fraction of samples right: ``decoded`` is per sample a tuple of CTC indices (recognisers)
    or a top-1 class (classifiers)."""
    if "texts" in truth:
        chars, fold = truth["charset"], bool(entry["metric"].get("casefold"))
        read = ["".join(chars[i] if i < len(chars) else "?" for i in seq) for seq in decoded]
        pairs = zip(read, truth["texts"], strict=True)
        return float(np.mean([_text(r, fold) == _text(t, fold) for r, t in pairs]))
    labels = np.asarray(truth["labels"])
    known = labels >= 0  # -1: no ground truth for this sample (magika: an extension no class owns)
    return float(np.mean(np.asarray(decoded)[known] == labels[known])) if known.any() else float("nan")
