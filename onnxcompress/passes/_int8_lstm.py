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

from onnxcompress.passes._kmeans_lstm import lstm_pairs, rewrite
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
