"""PassResult bookkeeping: what a guard's rebuild reports replaces what the first build did."""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.passes.base import LayerStat, PassResult


def _stat(name: str) -> LayerStat:
    return LayerStat(name=name, op_type="Conv", shape=(8, 8), bytes_before=256, bytes_after=64)


def test_a_rebuild_replaces_layers_and_the_skips_of_what_it_built():
    model = ir.Model(ir.Graph([], [], nodes=[]), ir_version=8)
    first = PassResult(pass_name="quantize", config={}, model=model)
    for name in ("small.w", "big.w"):  # the first build: both int8 (int8 compute)
        first.add_layer(_stat(name))
    first.skip("conv3", "int8 compute measured slower")  # a node the rebuild does not touch
    first.skip("big2.w", "kept float by the fidelity guard")  # the rebuild writes it after all
    rebuilt = PassResult(pass_name="quantize", config={}, model=model)
    rebuilt.add_layer(_stat("big.w"))
    rebuilt.add_layer(_stat("big2.w"))
    rebuilt.skip("small.w", "under 512 values: kept float")  # float again, its op computes float
    rebuilt.metrics["x"] = 1
    first.adopt_rebuild(rebuilt)
    assert [s.name for s in first.layers] == ["big.w", "big2.w"]
    assert first.skipped == {"int8 compute measured slower": ["conv3"],
                             "under 512 values: kept float": ["small.w"]}
    reported = {s.name for s in first.layers} | {n for v in first.skipped.values() for n in v}
    assert reported == {"small.w", "big.w", "big2.w", "conv3"}  # every tensor once, none lost
    assert first.metrics["x"] == 1
