"""Dynamic int8 compute for ONNX LSTMs: onnxruntime's ``DynamicQuantizeLSTM`` (int8 ``W``/``R``
per gate row kept packed, the inputs quantized per call), as ``quantize_dynamic`` writes an LSTM
and as the k-means pass writes one at 8 bits (:func:`._kmeans_lstm.rewrite`, the one writer).

Without it dynamic int8 stored an LSTM's weights and computed it in float (batch 30's ECG LSTM
autoencoder: 1.00x fp32's latency where this form runs 0.62x and ``quantize_dynamic``'s 0.36x).
An LSTM is one more int8 compute candidate of the dynamic mode: the speed guard times it, and the
fidelity guard's compute check holds its output deviation to 4x int8 weight-only's (whose
recurrent weights take int8 blocks) and its top-1 flips, backing it off to that weight-only form
otherwise (a speaker encoder's LSTMs over log-mels lost 19 points of embedding cosine this way
under k-means: ``_kmeans_lstm.MAX_DEVIATION``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import onnx_ir as ir

from onnxcompress.passes._int8_search import (
    COMPOUNDING_NOTE,
    STEPS_HEADLINE,
    compounding_note,
    name_list,
    restate_steps,
    unmeasured,
)
from onnxcompress.passes._kmeans_lstm import lstm_pairs, rewrite, rewritten_weights
from onnxcompress.passes.base import PassResult
from onnxcompress.weights import ROLE_RECURRENT, Weight, WeightIndex


def lstm_units(model: ir.Model, key: Callable[[ir.Node, Weight], str],
               ) -> list[tuple[str, int, ir.Node, Weight, Weight]]:
    """The LSTMs that can take the form: (key, W + R values, node, W, R)."""
    recurrent = [(w, 8) for w in WeightIndex.build(model).select(roles={ROLE_RECURRENT})]
    return [(key(node, ww), ww.size + rw.size, node, ww, rw)
            for node, ww, rw in lstm_pairs(recurrent, "int8", "auto")]


#: Why an LSTM computes in float where ``lstm_compute`` says no.
SEQUENCE_REASON = ("LSTM computes in float: an output is a class-score sequence, whose strings the "
                   "fidelity guard's frame flips do not see (int8 inputs err at every step)")


def lstm_compute(guard: Any) -> bool:
    """Whether LSTMs are offered int8 compute: not where an output is a class-score sequence
    (the guard's ``scores``: a CTC recogniser's frames), whose strings one flipped frame
    changes while the guard's bar counts frames: ddddocr_ocr's LSTMs in this form passed it and
    lost 1.1 points of its 448 strings (1.8 with calibration). Without the guard, as asked."""
    return guard is None or not any(guard.scores)


def lstm_candidates(model: ir.Model, key: Callable[[ir.Node, Weight], str],
                    excluded: Callable[[ir.Node], str | None], result: PassResult,
                    allowed: bool = True) -> list[tuple[str, int]]:
    """The dynamic mode's LSTM candidates (key, W + R values); ``excluded(node)`` gives why the
    user's options leave a node out, else None; none where not ``allowed`` (``lstm_compute``).
    Each one left out is a skip."""
    out = []
    for label, size, node, _, _ in lstm_units(model, key):
        why = excluded(node) or (None if allowed else SEQUENCE_REASON)
        if why is None:
            out.append((label, size))
        else:
            result.skip(label, why)
    return out


def rewrite_lstms(model: ir.Model, chosen: Collection[str], key: Callable[[ir.Node, Weight], str],
                  result: PassResult) -> int:
    """Rewrite the LSTMs of ``model`` whose keys are in ``chosen`` (counted in the result's
    ``int8_nodes``); returns how many. Their weights leave the weight index: the storage step
    after it sees int8 constants only."""
    done = 0
    for label, _, node, ww, rw in lstm_units(model, key):
        if label in chosen:
            for stat in rewrite(model, node, ww, rw, 8):
                result.add_layer(stat)
            done += 1
    if done:
        result.metrics.setdefault("int8_nodes", {})["DynamicQuantizeLSTM"] = done
    return done


def amend_guard_messages(result: PassResult, model: ir.Model) -> ir.Model:
    """The fidelity guard spoke of LSTM weights (stepped to int8 blocks, outliers or recurrent)
    before the LSTMs of the final ``model`` became DynamicQuantizeLSTM, which stores them int8 per
    gate row instead (batch 32's DTLN: "lstm_5_R steps down to blocks of 32" above a file that
    has no block): its notes, headline and steps now name the weights still stored so, and a note
    the rewritten ones. Returns ``model``."""
    rewritten = rewritten_weights(model)
    if not rewritten:
        return model
    guard = result.metrics.get("fidelity_guard", {})
    steps = {k: v for k, v in guard.get("steps", {}).items() if k not in rewritten}
    compounding = [k for k in guard.get("compounding", []) if k not in rewritten]
    if guard:
        guard["steps"], guard["compounding"] = steps, compounding
    result.notes[:] = [n for n in result.notes if not n.startswith(COMPOUNDING_NOTE)]
    if compounding:
        result.notes.append(compounding_note(compounding))
    if any(h.startswith(STEPS_HEADLINE) and any(k in h for k in rewritten) for h in result.headlines):
        restate_steps(result, steps, compounding, unmeasured(guard))
    result.note(f"{len(rewritten) // 2} LSTM(s) compute in int8 as DynamicQuantizeLSTM (W and R int8 "
                f"per gate row, held by the fidelity guard's compute check): {name_list(rewritten)}")
    return model
