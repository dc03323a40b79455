"""onnx_ir without sympy at import: sympy is loaded the first time something reads from it.

onnx_ir imports sympy at module level (``onnx_ir._core``, and ``onnx_ir._symbolic_shapes``
reads ``sympy.Max`` at import), for the arithmetic of symbolic dimensions (``SymbolicDim("N") +
1``), which a compression run never does: sympy was 0.2 s and 34 MB of every run's 0.5 s / 105 MB
of imports (onnxruntime's whole ``quantize_dynamic`` of bert_tiny takes 0.33 s / 158 MB).

Importing this module (the package's first import) imports onnx_ir with stand-ins for those two
modules in ``sys.modules``: modules whose every attribute read imports the real module and reads
it there. The stand-ins leave ``sys.modules`` once onnx_ir is imported, so only onnx_ir's own
references go through them (anyone importing sympy afterwards gets sympy itself).
"""

from __future__ import annotations

import importlib
import sys
import types

DEFERRED = ("sympy", "onnx_ir._symbolic_shapes")


class _StandIn(types.ModuleType):
    """A module that imports the real one on the first attribute it does not have."""

    def __getattr__(self, attr: str):  # noqa: ANN204 - called only for attributes it lacks
        if attr.startswith("__") and attr.endswith("__") and attr != "__path__":
            raise AttributeError(attr)  # import machinery probing (__spec__ is set): not a use
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        module = importlib.import_module(name)
        return getattr(module, attr)


def import_onnx_ir() -> types.ModuleType:
    """onnx_ir, imported with sympy deferred (as it is when onnx_ir or sympy was imported
    already)."""
    if "onnx_ir" in sys.modules:
        return sys.modules["onnx_ir"]
    installed = {}
    for name in DEFERRED:
        if name not in sys.modules:
            stand_in = _StandIn(name)
            stand_in.__spec__ = None
            installed[name] = sys.modules[name] = stand_in
    try:
        import onnx_ir
    except Exception:  # an onnx_ir that imports sympy otherwise (a submodule): import it as it is
        for name in [n for n in sys.modules if n == "onnx_ir" or n.startswith("onnx_ir.")]:
            del sys.modules[name]
        onnx_ir = None
    finally:
        for name, stand_in in installed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    return onnx_ir if onnx_ir is not None else importlib.import_module("onnx_ir")


import_onnx_ir()  # on import: the package imports this module before anything imports onnx_ir
