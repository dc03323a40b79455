"""Auto mode's default target: what each output of a model is held to when no ``--target`` is given.

``default_target(outputs, ...)`` reads each output's kind off a sample of the original model's
outputs and the graph's hints (class scores, plain values, decoder states, heat maps) and writes a
target expression in ``targets``' vocabulary; the constants below are the thresholds, each with
the measurements that set it. ``applicable(metric, outputs)`` is the outputs an unnamed term reads.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from onnxcompress.auto.output_kinds import (
    anchor_outputs,
    binary_probabilities,
    generated_waveforms,
    grid_heads,
    grid_positions,
    logit_maps,
    long_runs,
    measurement_map,
    one_value_each,
    picture_target,
    probability_maps,
)
from onnxcompress.graph.outputs import SCORES_NAME
from onnxcompress.validation.detections import anchor_score_rows, detection_columns, split_anchor_heads
from onnxcompress.validation.keypoints import keypoint_heatmaps
from onnxcompress.validation.metrics import (
    distribution_rows,
    picture_outputs,
    row_winners,
    tied_rows,
    top1_leads,
)
from onnxcompress.validation.tolerance import DEFAULT_TOLERANCE

Outputs = Mapping[str, np.ndarray]  # output name -> samples stacked on axis 0

#: Stated in ``--help``: top-1 agreement on outputs that look like class scores ([N, C], C > 1),
#: else cosine similarity of every float output.
DEFAULT_TARGET = "top1>=0.99"
DEFAULT_TARGET_NON_CLASSIFIER = "cosine>=0.999"
#: ... and every output held by a count keeps compare's default cosine too (``_with_cosine_floor``)
COSINE_FLOOR = DEFAULT_TOLERANCE.min_cosine
#: Rows that are frames of one input (``measure.frame_output_names``) flip together within a
#: sample, so rows held at 0.99 lost more on other samples (thai_oskut_ws: held-out 0.9917, eval
#: 98.5; at 0.995 held-out 0.9965, eval 99.3 at 6.31x, where sequences gave 5.29x at 99.0).
#: Then 0.997: pyannote's speaker frames (batch 28) read 0.9963 held out at 0.995 and lost 1.21
#: points of DER on the eval set (3.85x); at 0.997, 0.29 at 3.56x. thai_oskut_ws keeps its plan
#: (5.91x, 99.6), the seizure detector's states 5.90x -> 4.31x (99.6 -> 99.9; uniform int8 3.96x).
DEFAULT_TARGET_FRAMES = "top1>=0.997"
#: An image's class map [N, H, W, C] per pixel (``grid_positions``), measured at 0.995 (road_seg).
DEFAULT_TARGET_GRID = "top1>=0.995"
#: Per-position class probabilities ([N, T, C] softmax or log_softmax, e.g. a CTC recogniser): a
#: sample is kept only when every position keeps its arg-max (one flip changes a string; cosine
#: 0.999 changed 5% of ppocr_rec's, per-position top-1 0.999 4.4% of ddddocr_ocr's at 0.14%).
DEFAULT_SEQUENCE = 0.99
#: Per-anchor detector heads ([N, P, F] or YOLOv8's [N, F, P]: ``output_kinds.ANCHOR_POSITIONS``
#: positions or more, ANCHOR_FEATURES box/score features or fewer): the task keeps a few top-
#: scoring anchors after a threshold or NMS, which a deviation small over thousands of anchors
#: moves. Measured on uniform models (calibration cosine vs eval detection F1): ddddocr_det k-means
#: 8 1-cos 2.2e-5 -> F1 98.8, k-means 6 4.8e-5 -> 97.6; ssd_detector int8 2.0e-5 -> 98.1, k-means 8
#: 3.2e-5 -> 97.5, fp16 1.9e-7 -> 99.5. cosine>=0.999 gave 94.6 and 86.7; auto at 0.99999 ended at
#: 98.8 on both (1e-5 is still too far), at 0.999995 at 99.1 (3.70x) and 99.2 (3.60x).
DEFAULT_TARGET_ANCHORS = "cosine>=0.999995"
#: One value per sample that is not a probability (a regressor's prediction) is the task's answer
#: itself, compared across samples (``_measure``: 1 - |b - a|^2 / (2 |a - mean a|^2)). skl2onnx's
#: MLP surrogate (a CV score, range 0.65): int8 and k-means 8 read 0.99998 on the search data and
#: keep every eval prediction within 0.005; a plan at 0.9996 moved eval predictions by up to 0.107.
DEFAULT_TARGET_SCALAR = "cosine>=0.99995"
#: ... and values [N, K] with no top-1 (``metrics.tied_rows``; PFLD's landmarks: cosine let auto move
#: them 43 px of 112 at 0.9995; int8 reads 0.99968, within 2 px): ``values``, the same per column.
DEFAULT_TARGET_VALUES = "values>=0.9995"
#: ... also on plain outputs (``graph.outputs.plain_output_names``) of at most this many values a
#: row: a few regressed quantities (FSA-Net's yaw, pitch, roll; MTCNN's box offsets and 10
#: landmark coordinates), where a cosine of 0.9997 between angle vectors allowed 3.8 degrees;
#: wider plain rows are embeddings, held by their direction.
VALUES_MAX_COLUMNS = 16
#: Probability maps ([N, C, H, W] in [0, 1], :func:`probability_maps`) are binarised by their
#: task: mask>=X is the Dice (F1) of the maps binarised at MASK_THRESHOLD, pooled over samples.
#: Measured on PP-OCR DB detectors (uniform k-means 8 and dynamic int8 of PP-OCRv6 tiny det and
#: v5 det, calibration vs eval): the text mask's F1 is the same at 0.3 (DB's threshold), 0.5
#: and 0.7 within 0.1 pt, and cosine does not follow it (v5 det: 1-cos 4.0e-3 at F1 99.05,
#: 8.6e-3 at 98.2). Where a map is nearly empty its cosine is noise: PP-OCRv4 seal det on
#: document pages (600-1000 text pixels of 230k) failed cosine>=0.999 on the held-apart samples
#: with 61 of 64 layers float (exit 1, 1.0x); mask>=0.995 met, 1.55x, eval F1 99.6. Calibration
#: and eval F1 of the four uniform files differ by up to 0.55 pt, hence 0.995 for the eval's
#: 1 point.
DEFAULT_TARGET_MAP = "mask>=0.995"
#: Audio a model generates (``output_kinds.generated_waveforms``: a vocoder's, a TTS model's) is
#: held by its log spectrum: int8 and k-means 8 read 0.9985-0.9986 on HiFi-GAN with its log-mel
#: within 0.18 dB of fp32's, a plan at +0.9 dB 0.9885, k-means 4 0.963 at +2.5 dB.
DEFAULT_TARGET_WAVEFORM = "spectrum>=0.997"
#: A keypoint heat map (``validation.keypoints``: a pose network's joints) is held to the share of
#: its present peaks that stay within a cell of the original's, estimated from their margins as
#: top-1 is: under cosine>=0.999 auto kept BodyPix's heat maps at cosine 0.9999 and moved 4% of
#: its joints (PCK 96.0, nearly all at near ties two candidates apart).
DEFAULT_TARGET_KEYPOINTS = "keypoints>=0.99"
#: An NMS-free detector's list of boxes ([N, K, 6]: validation/detections.py) is held to the F1
#: of the boxes it reports (batch 5's ISBN YOLO26n: held to its whole tensor's cosine as an
#: anchor head, auto stayed at 1.07x; int8 keeps every box at cosine 0.82).
DEFAULT_TARGET_DETECTIONS = "detections>=0.99"
#: A decoder step (``measure.loop_states``: its recurrent state given back as its next input) run
#: greedily decides a token a call, and a change changes the rest of the sequence: its class scores
#: are held to DEFAULT_TARGET_STEP and its states to DEFAULT_TARGET_STATE. At top1>=0.99 alone auto
#: changed 4.0% of e2k's words (decoder 7.61x) and 7.7% of the Arabic romanizer's names (6.38x);
#: so held, 99.3% (4.28x) and 100% (3.93x, = k-means 8). Steps alone at 0.998 let e2k's states
#: drift (97.3%), states alone let the romanizer's steps flip (96.3%); steps at 0.999 read k-means
#: 8's 0 flips in 2,400 steps as 0.9985 on 18 samples (float16, 2.00x).
DEFAULT_TARGET_STEP = "top1>=0.998"
DEFAULT_TARGET_STATE = "cosine>=0.9999"
#: ... as is a recurrent text encoder's memory (``encoded``), read at every step: at cosine 0.999
#: auto's encoders changed 2.7% of e2k's words (7.54x) and 2.3% of the romanizer's names (5.10x);
#: at 0.9999, 0.7% (5.72x) and none (4.08x; k-means 8: 3.97x and 3.9x, 100%).


def spellable(name: str) -> bool:
    """Whether an output name can be written in a target expression (no ``=<>,``; a ``:`` is
    read up to the last one, tf2onnx's ``Identity:0:mask>=0.995``)."""
    return not set(name) & set("=<>,")


def default_target(outputs: Outputs | None, class_scores: Sequence[str] = (), *,
                   token_inputs: bool = False, image_inputs: bool = True,
                   plain: Sequence[str] = (), colour_inputs: bool = False,
                   heatmaps: Collection[str] | None = None, longest_input: int = 0,
                   states: Collection[str] = (), decoder: bool = False) -> str:
    """The target used when none is given: top1>=0.99 when an output is class scores [N, C]
    (and on every frame of outputs scoring the same classes per frame, :func:`frame_scores`);
    else cosine>=0.999 on every float output, and per-position top-1 agreement of whole samples
    (``sequence>=DEFAULT_SEQUENCE``) on per-position probabilities and on
    ``class_scores`` (outputs the graph shows to be per-position class scores, e.g. a CTC
    recogniser's logits: ``graph.outputs.class_score_outputs``, the rule the int8 guard's flip
    check uses). ``token_inputs`` (every input is integer: token ids): per-position scores are a
    language model's token predictions, each judged on its own (``top1>=0.99`` over every
    position), not a decoded string. ``image_inputs`` False (no input is an image [N, C, H, W]):
    no output is a detector's per-anchor head (whisper's log-mel features [N, 128, 3000] from a
    waveform are shaped like YOLOv8's [N, 84, 8400]). ``plain``: outputs the graph shows are plain
    values (``graph.outputs.plain_output_names``), judged by cosine; values [N, K] with no top-1
    by ``values`` (DEFAULT_TARGET_VALUES). ``colour_inputs`` (an input is a colour image): a
    one-channel picture of values past 1 is a measurement (``output_kinds.measurement_map``).
    ``states``: outputs a decoder step gives back as its next input (DEFAULT_TARGET_STEP).
    ``decoder`` (token ids read beside an encoder's states, ``tokens.encoder_states``): its
    per-position scores decide the next token, held at DEFAULT_TARGET_STEP too."""
    if outputs is None:
        return DEFAULT_TARGET
    given_back = [k for k in states if k in outputs and spellable(k)]
    if given_back:
        rest = {k: v for k, v in outputs.items() if k not in given_back}
        expr = default_target(rest, class_scores, token_inputs=token_inputs, image_inputs=image_inputs,
                              plain=plain, colour_inputs=colour_inputs, heatmaps=heatmaps,
                              longest_input=longest_input, decoder=decoder)
        # a step deciding a token among classes (a two-class probability, VAD's, is not fed back)
        terms, two = expr.split(","), set(binary_probabilities(rest))
        named = {f"{k}:{DEFAULT_TARGET}": f"{k}:{DEFAULT_TARGET_STEP}" for k in rest if k not in two}
        steps = [f"{k}:{DEFAULT_TARGET_STEP}" for k in applicable("top1", rest)
                 if k not in two and spellable(k)] if DEFAULT_TARGET in terms else []
        if steps or named.keys() & set(terms):
            return ",".join(steps + [named.get(t, t) for t in terms if t != DEFAULT_TARGET]
                            + [f"{k}:{DEFAULT_TARGET_STATE}" for k in given_back])
    if not all(map(spellable, outputs)):
        scored = {k: v for k, v in outputs.items() if k not in plain}
        return DEFAULT_TARGET if applicable("top1", scored) else DEFAULT_TARGET_NON_CLASSIFIER
    if any(k in outputs for k in plain):
        # each output on its own, every term named: an unnamed top1 would hold the plain ones too
        terms = []
        for k, v in outputs.items():
            if k in plain:
                few = np.ndim(v) == 2 and np.shape(v)[-1] <= VALUES_MAX_COLUMNS
                terms.append(f"{k}:{DEFAULT_TARGET_VALUES if few else DEFAULT_TARGET_NON_CLASSIFIER}")
            elif np.issubdtype(np.asarray(v).dtype, np.floating):
                own = default_target({k: v}, class_scores, token_inputs=token_inputs, decoder=decoder,
                                     image_inputs=image_inputs, colour_inputs=colour_inputs)
                terms += [t if t.startswith(f"{k}:") else f"{k}:{t}" for t in own.split(",")]
        return ",".join(terms)
    # an SSD/RetinaFace detector's scores and box rows: held at its positive anchors
    heads = split_anchor_heads(outputs) if image_inputs else {}
    probabilities = set(sequence_probabilities(outputs))  # once: it exponentiates every output
    sequences = [k for k in outputs if (k in probabilities or k in class_scores) and k not in heads]
    # A token model's positions are predictions of their own (one near-tie among 64 x 8192 logits
    # failed a whole sample: bert_tiny); so are an image's pixels in a class map [N, H, W, C], held
    # as frames are (road_seg's 512 x 896 as a sequence: auto 1.04x; at 0.99, 2.55x, 97.2 road IoU).
    per_position = {k: DEFAULT_TARGET_STEP if decoder else DEFAULT_TARGET if token_inputs
                    else DEFAULT_TARGET_GRID if image_inputs and grid_positions(outputs[k])
                    else DEFAULT_TARGET_FRAMES if long_runs(outputs[k]) else f"sequence>={DEFAULT_SEQUENCE:g}"
                    for k in sequences}
    # A probability of its own per sample (a sigmoid: silero VAD's speech_probs) is a two-class
    # decision; its per-sample cosine is 1 whatever the value (one positive number).
    binary = [k for k in binary_probabilities(outputs) if k not in sequences and k not in heads]
    scored = applicable("top1", outputs)  # once (it reads every output's rows); PFLD's landmarks:
    vectors = [k for k in applicable("sequence", outputs) if np.ndim(outputs[k]) == 2 and k not in scored
               and k not in sequences and k not in binary and k not in heads]
    if scored:
        frames = frame_scores(outputs)
        # a prediction a sample beside the scores is held too (batch 25's CHGNet: its per-atom
        # magnetic moments [N, 8] read as class scores, and its energy, the answer, went unheld)
        scalars = [k for k in outputs if k not in scored and k not in binary and k not in sequences
                   and one_value_each(outputs[k])]
        return ",".join([DEFAULT_TARGET] + [f"{k}:{DEFAULT_TARGET}" for k in frames]
                        + [f"{k}:{per_position[k]}" for k in sequences if k not in frames]
                        + [f"{k}:{DEFAULT_TARGET}" for k in binary] + [f"{k}:{DEFAULT_TARGET_VALUES}"
                                                                          for k in vectors]
                        + [f"{k}:{DEFAULT_TARGET_SCALAR}" for k in scalars])
    terms = [f"{k}:{per_position[k]}" for k in sequences] + [f"{k}:{DEFAULT_TARGET}" for k in binary]
    rest = [k for k in applicable("cosine", outputs) if k not in sequences and k not in binary]
    # a pose network's joints: each heat map's peaks (``validation.keypoints``)
    joints = [k for k in applicable("keypoints", {k: outputs[k] for k in rest if k not in heads})
              if image_inputs and (heatmaps is None or k in heatmaps)]
    terms += [f"{k}:{DEFAULT_TARGET_KEYPOINTS}" for k in joints]  # and compare's cosine floor
    # audio the model generates (a vocoder's, a TTS model's): heard as its spectrum
    waves = generated_waveforms({k: outputs[k] for k in rest if k not in joints}, longest_input)
    terms += [f"{k}:{DEFAULT_TARGET_WAVEFORM}" for k in waves]
    rest = [k for k in rest if k not in joints and k not in waves]
    listed = [k for k in rest if k in heads] + applicable("detections", {k: outputs[k] for k in rest
                                                                          if k not in heads})
    terms += [f"{k}:{DEFAULT_TARGET_DETECTIONS}" for k in listed]
    rest = [k for k in rest if k not in listed]
    # per-anchor heads: a detector's rows, and (no colour image in: features) a split head's
    # maps over one grid
    anchors = set(anchor_outputs({k: outputs[k] for k in rest}) if image_inputs else ())
    anchors |= set(grid_heads({k: outputs[k] for k in rest}) if not colour_inputs else ())
    # A probability map is binarised by its task (a DB text detector's text mask): held as a mask
    candidates = {k: outputs[k] for k in rest if k not in anchors}
    maps = probability_maps(candidates) + logit_maps(candidates)
    terms += [f"{k}:{DEFAULT_TARGET_MAP}" for k in maps]
    rest = [k for k in rest if k not in maps]
    scalars = {k for k in rest if one_value_each(outputs[k])}
    pictures = set(picture_outputs({k: outputs[k] for k in rest if k not in anchors}, image_inputs))
    cosine = {k: DEFAULT_TARGET_ANCHORS if k in anchors else DEFAULT_TARGET_SCALAR if k in scalars
              else DEFAULT_TARGET_VALUES if k in vectors
              else picture_target(outputs[k], measured=colour_inputs and measurement_map(outputs[k]))
              if k in pictures else DEFAULT_TARGET_NON_CLASSIFIER for k in rest}
    if not terms and len(set(cosine.values())) == 1:
        return next(iter(cosine.values()), DEFAULT_TARGET_NON_CLASSIFIER)
    return ",".join(terms + [f"{k}:{v}" for k, v in cosine.items()])


def frame_scores(outputs: Outputs) -> list[str]:
    """Float outputs of rank >= 3 whose last axis is as wide as a class-score output's: the same
    classes per frame or position (audio_kws: clip logits [N, 12] and frame logits [N, 101, 12];
    the clip's top-1 on the search data alone let 2 of 32 eval clips change)."""
    widths = {np.shape(outputs[k])[-1] for k in applicable("top1", outputs)}
    return [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
            and np.ndim(v) >= 3 and np.shape(v)[-1] in widths]


def sequence_probabilities(outputs: Outputs) -> list[str]:
    """Float outputs of rank >= 3 whose last axis (> 1 wide) holds probabilities summing to 1, or
    their logarithms (a CTC recogniser's log_softmax: crnn_lstm kept cosine 0.9999 on its
    log-probabilities while every decoded string changed)."""
    return [k for k, v in outputs.items() if np.ndim(v) >= 3 and distribution_rows(np.asarray(v))]


def applicable(metric: str, outputs: Outputs) -> list[str]:
    floats = [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    if metric in ("cosine", "values", "within"):
        return floats
    if metric == "keypoints":
        return list(keypoint_heatmaps({k: outputs[k] for k in floats}))
    if metric == "spectrum":  # whatever the inputs: every waveform long enough
        return generated_waveforms({k: outputs[k] for k in floats}, longest_input=1)
    if metric == "detections":  # a detection list, a YOLOv8-style raw head, an SSD/RetinaFace head
        heads = split_anchor_heads({k: outputs[k] for k in floats})
        return [k for k in floats if k in heads or detection_columns(np.asarray(outputs[k])) is not None
                or anchor_score_rows(np.asarray(outputs[k])) is not None]
    if metric == "sequence":  # class scores per position: [N, ..., C]
        return [k for k in floats if np.ndim(outputs[k]) >= 2 and np.shape(outputs[k])[-1] > 1]
    # Class scores: [N, C] with C > 1 (a detector's [N, boxes, 5 + C] is not one) whose rows
    # have a top-1 to keep (not PFLD's landmark coordinates: ``tied_rows``)
    return [k for k in floats if np.ndim(outputs[k]) == 2 and np.shape(outputs[k])[-1] > 1
            and (distribution_rows(np.asarray(outputs[k])) or not tied_rows(
                top1_leads(outputs[k]), None if SCORES_NAME.search(k) else row_winners(outputs[k])))]
