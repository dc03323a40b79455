"""Keypoint heat maps: which outputs are ones (and their layout), and how far their peaks moved."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.validation.keypoints import (
    heatmap_axis,
    heatmap_layout,
    keypoint_heatmaps,
    keypoint_ratios,
    moved_keypoints,
)


def _joints(n: int = 6, k: int = 17, h: int = 30, w: int = 40, *, logits: bool = True,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps [N, K, H, W] with one Gaussian blob a channel (a pose network's joints), as
    logits (BodyPix: about -8 away from the joint, up to +4 at it) or as [0, 1] targets (HRNet),
    and the peaks' cells [N, K, 2]."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    peaks = np.stack([r.integers(3, h - 3, (n, k)), r.integers(3, w - 3, (n, k))], axis=-1)
    blob = np.exp(-((y - peaks[..., 0, None, None]) ** 2 + (x - peaks[..., 1, None, None]) ** 2) / 4.0)
    maps = (12.0 * blob - 8.0) if logits else blob
    maps = maps + r.normal(0, 0.05, maps.shape)
    return maps.astype(np.float32), peaks


def test_finds_heat_maps_and_their_layout() -> None:
    maps, _ = _joints()
    assert heatmap_axis(maps) == 1
    assert heatmap_axis(np.moveaxis(maps, 1, 3)) == 3  # channels-last, as tf2onnx writes BodyPix
    assert heatmap_axis(_joints(logits=False)[0]) == 1
    assert keypoint_heatmaps({"heatmaps": np.moveaxis(maps, 1, 3), "other": maps[:, 0]}) == {"heatmaps": 3}


def test_other_maps_are_no_heat_maps() -> None:
    r = np.random.default_rng(1)
    y, x = np.mgrid[0:30, 0:40]
    # a segmentation's logits: each class a large region (BodyPix's body parts, its person mask)
    regions = np.stack([np.where((x // 10 + y // 10 + c) % 4 == 0, 4.0, -4.0) for c in range(8)])
    seg = (regions[None] + r.normal(0, 0.1, (4, 8, 30, 40))).astype(np.float32)
    assert heatmap_layout(seg) == 1 and heatmap_axis(seg) is None
    # a softmax over the channels: a class map read per pixel
    e = np.exp(r.normal(0, 1, (4, 5, 30, 40)))
    assert heatmap_axis((e / e.sum(1, keepdims=True)).astype(np.float32)) is None
    # smooth offset fields and a picture: nothing rough across the channels, or no blobs
    field = np.sin(x / 7.0 + np.arange(6)[:, None, None])[None] * np.ones((4, 1, 1, 1))
    assert heatmap_axis(field.astype(np.float32)) is None
    assert heatmap_axis(r.uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)) is None
    # one channel, too small a map, the wrong rank, integers
    maps, _ = _joints()
    assert heatmap_axis(maps[:, :1]) is None
    assert heatmap_axis(maps[:, :, :4, :4]) is None
    assert heatmap_axis(maps[0]) is None and heatmap_axis(maps.astype(np.int32)) is None


def test_absent_joints_do_not_count() -> None:
    maps, _ = _joints(n=1, k=4)
    maps[0, 2:] -= 20.0  # two joints nobody sees: every logit negative
    assert moved_keypoints(maps, maps, 1) == (0, 2)
    assert len(keypoint_ratios(maps, maps, 1)) == 2


def test_a_peak_moving_to_a_neighbour_is_no_change_but_further_is() -> None:
    maps, peaks = _joints(n=2, k=3)
    ratios = keypoint_ratios(maps, maps, 1)
    assert len(ratios) == 6 and np.all(ratios == 0)
    shifted = maps.copy()
    n, k = 0, 1
    py, px = peaks[n, k]
    shifted[n, k, py, px + 1] = maps[n, k].max() + 1.0  # the peak one cell over
    assert moved_keypoints(shifted, maps, 1) == (0, 6)
    assert np.all(keypoint_ratios(maps, shifted, 1) <= 1.0)
    far = maps.copy()
    far[n, k, (py + 10) % 30, px] = maps[n, k].max() + 1.0  # a second candidate wins, 10 cells away
    assert moved_keypoints(far, maps, 1) == (1, 6)
    ratios = keypoint_ratios(maps, far, 1)
    assert (ratios > 1).sum() == 1
    # a near tie: the far candidate comes within a tenth of the lead it had
    close = maps.copy()
    lead = maps[n, k].max() - np.sort(maps[n, k].ravel())[-10]
    close[n, k, (py + 10) % 30, px] = maps[n, k].max() - 0.1 * lead
    assert 0.5 < keypoint_ratios(maps, close, 1).max() <= 1.0


@pytest.mark.parametrize("axis", [1, 3])
def test_ratios_read_either_layout(axis: int) -> None:
    maps, _ = _joints(n=2, k=3)
    noisy = maps + np.random.default_rng(3).normal(0, 0.01, maps.shape).astype(np.float32)
    if axis == 3:
        maps, noisy = np.moveaxis(maps, 1, 3), np.moveaxis(noisy, 1, 3)
    ratios = keypoint_ratios(maps, noisy, axis)
    assert len(ratios) == 6 and 0 < ratios.max() < 0.1


def test_compare_counts_the_joints_a_compressed_model_moved(tmp_path) -> None:
    import onnx
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    from onnxcompress.validation import compare_models

    maps, peaks = _joints(n=4, k=5)
    # a model that gives out its input (heat maps, through a Conv head) plus a bias: joint 2 jumps to a spike the bias
    # puts 11 rows from sample 0's joint, in each of the 4 samples (4 of 20 present joints)
    bias = np.zeros((1, 5, 30, 40), np.float32)
    py, px = peaks[0, 2]
    bias[0, 2, (py + 11) % 30, px] = maps[0, 2].max() - maps[0, 2, (py + 11) % 30, px] + 1.0

    def model(b: np.ndarray, path, last: str | None = None) -> str:
        eye = np.eye(5, dtype=np.float32).reshape(5, 5, 1, 1)  # a 1x1 Conv head passing x on
        nodes = [oh.make_node("Conv", ["x", "w"], ["y"]),
                 oh.make_node("Add", ["y", "b"], ["heatmaps" if last is None else "z"])]
        if last is not None:
            nodes.append(oh.make_node(last, ["z"], ["heatmaps"]))
        graph = oh.make_graph(
            nodes, "g",
            [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5, 30, 40])],
            [oh.make_tensor_value_info("heatmaps", onnx.TensorProto.FLOAT, [1, 5, 30, 40])],
            [nh.from_array(eye, "w"), nh.from_array(b, "b")])
        onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
        return str(path)

    data = {"x": maps[:, None]}  # 4 samples of [1, 5, 30, 40]
    np.savez(tmp_path / "d.npz", **data)
    a, b = model(np.zeros_like(bias), tmp_path / "a.onnx"), model(bias, tmp_path / "b.onnx")
    report = compare_models(a, b, data=str(tmp_path / "d.npz"))
    out = report.output("heatmaps")
    assert out.top1_agreement == pytest.approx(16 / 20)
    assert not report.passed and out.cosine > 0.99  # the cosine alone would pass it
    # the same maps given out by an activation, not a linear layer (YOLO11-seg's mask prototypes
    # are a SiLU's) are not read as heat maps
    a, b = model(np.zeros_like(bias), tmp_path / "ra.onnx", "Relu"), model(bias, tmp_path / "rb.onnx", "Relu")
    assert compare_models(a, b, data=str(tmp_path / "d.npz")).output("heatmaps").top1_agreement is None
