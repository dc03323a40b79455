"""onnxcompress.runtime: the sessions every measuring step runs."""

from __future__ import annotations

import numpy as np
import onnx.parser
import pytest

from onnxcompress.runtime import create_session


def test_a_failing_run_leaves_no_onnxruntime_line_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """The caller reports every error onnxruntime raises; onnxruntime's own red line (auto on
    MiniMol printed "[E:onnxruntime:...] Non-zero status code returned while running Expand
    node", batch 11) stays out of the user's terminal."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N] x, int64[2] shape) => (float[M, K] y) {
            y = Expand (x, shape)
        }
    """)
    session = create_session(model)
    with pytest.raises(Exception, match="(?i)expand"):
        session.run(None, {"x": np.ones(3, np.float32), "shape": np.array([2, 5], np.int64)})
    assert "onnxruntime" not in capfd.readouterr().err
