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

from onnxcompress.passes._int8_search import STEPS_HEADLINE, name_list
from onnxcompress.passes._kmeans_lstm import MS_DOMAIN, lstm_pairs, rewrite
from onnxcompress.passes.base import PassResult
from onnxcompress.weights import ROLE_RECURRENT, Weight, WeightIndex


def lstm_units(model: ir.Model, key: Callable[[ir.Node, Weight], str],
               excluded: Callable[[ir.Node], str | None],
               result: PassResult) -> list[tuple[str, int, ir.Node, Weight, Weight]]:
    """The LSTMs that can take the form: (key, W + R values, node, W, R); ``excluded(node)``
    gives why a node is left out by the user's options (a skip), else None."""
    recurrent = [(w, 8) for w in WeightIndex.build(model).select(roles={ROLE_RECURRENT})]
    units = []
    for node, ww, rw in lstm_pairs(recurrent, "int8", "auto"):
        label = key(node, ww)
        why = excluded(node)
        if why is not None:
            result.skip(label, why)
            continue
        units.append((label, ww.size + rw.size, node, ww, rw))
    return units


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
    """The dynamic mode's LSTM candidates (key, W + R values); none (each a skip) where not
    ``allowed`` (``lstm_compute``)."""
    def why(node: ir.Node) -> str | None:
        return excluded(node) or (None if allowed else SEQUENCE_REASON)

    return [(label, size) for label, size, *_ in lstm_units(model, key, why, result)]


def rewrite_lstms(model: ir.Model, chosen: Collection[str],
                  key: Callable[[ir.Node, Weight], str],
                  excluded: Callable[[ir.Node], str | None], result: PassResult) -> int:
    """Rewrite the LSTMs of ``model`` whose keys are in ``chosen`` (counted in the result's
    ``int8_nodes``); returns how many. Their weights leave the weight index: the storage step
    after it sees int8 constants only."""
    done = 0
    quiet = PassResult(pass_name=result.pass_name, config=result.config, model=model)
    for label, _, node, ww, rw in lstm_units(model, key, excluded, quiet):
        if label in chosen:
            for stat in rewrite(model, node, ww, rw, 8):
                result.add_layer(stat)
            done += 1
    if done:
        result.metrics.setdefault("int8_nodes", {})["DynamicQuantizeLSTM"] = done
    return done


#: How the guard's note on recurrent weights in blocks starts (``_int8_guard.guard_weights``).
COMPOUNDING_NOTE = "fidelity guard: recurrent weights"


def amend_guard_messages(result: PassResult, model: ir.Model) -> ir.Model:
    """The fidelity guard spoke of LSTM weights (stepped to int8 blocks, outliers or recurrent)
    before the LSTMs of the final ``model`` became DynamicQuantizeLSTM, which stores them int8 per
    gate row instead (batch 32's DTLN: "lstm_5_R steps down to blocks of 32" above a file that
    has no block): its notes, headline and steps now name the weights still stored so, and a note
    the rewritten ones. Returns ``model``."""
    rewritten = [v.name.removesuffix(".q") for node in model.graph
                 if node.op_type == "DynamicQuantizeLSTM" and node.domain == MS_DOMAIN
                 for v in node.inputs[1:3] if v is not None and v.name]
    if not rewritten:
        return model
    guard = result.metrics.get("fidelity_guard", {})
    steps = {k: v for k, v in guard.get("steps", {}).items() if k not in rewritten}
    compounding = [k for k in guard.get("compounding", []) if k not in rewritten]
    unscaled = set(guard.get("unscaled", ()))
    if guard:
        guard["steps"], guard["compounding"] = steps, compounding
    notes = [n for n in result.notes if not n.startswith(COMPOUNDING_NOTE)]
    if compounding:
        notes.append(f"{COMPOUNDING_NOTE} stored int8 in blocks of 32: {name_list(compounding)}")
    result.notes[:] = notes
    if any(h.startswith(STEPS_HEADLINE) and any(k in h for k in rewritten) for h in result.headlines):
        result.headlines[:] = [h for h in result.headlines if not h.startswith(STEPS_HEADLINE)]
        named = [k for k in steps if k not in compounding and k not in unscaled]
        if named:
            result.headline(f"{STEPS_HEADLINE}{name_list(named)} step down from int8 per channel "
                            "(their output error an outlier); --no-fidelity-guard keeps them")
    result.note(f"{len(rewritten) // 2} LSTM(s) compute in int8 as DynamicQuantizeLSTM (W and R int8 "
                f"per gate row, held by the fidelity guard's compute check): {name_list(rewritten)}")
    return model
