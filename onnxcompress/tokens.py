"""Token models' inputs: whether a model's feeds are a language model's token ids
(:func:`token_inputs`), an encoder's states a decoder reads beside them (:func:`encoder_states`),
a source and a target sequence fed to one encoder-decoder (:func:`source_and_target`),
and the padding mask beside them (:func:`padding_mask`), whose padded positions neither auto's
measurements nor ``compare`` count (:func:`kept_positions`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np


def token_inputs(feeds: list, caches: Collection[str] = ()) -> bool:
    """Whether the inputs are a language model's: token ids (integer), beside them only flags
    (bool: a merged decoder's ``use_cache_branch``) and ``caches`` (``auto.measure.state_inputs``).
    A decoder run with its cache held each prefill to every position keeping its arg-max: auto
    left a merged GPT all float."""
    if not feeds:
        return False
    dtypes = {k: np.asarray(v).dtype for k, v in feeds[0].items()}
    return any(np.issubdtype(d, np.integer) for d in dtypes.values()) and all(
        np.issubdtype(d, np.integer) or d == np.bool_ or k in caches for k, d in dtypes.items())


def id_inputs(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feed's integer inputs [N, T]: token ids (and a padding mask, segment ids beside them)."""
    arrays = {k: np.asarray(v) for k, v in feed.items()}
    return {k: a for k, a in arrays.items() if np.issubdtype(a.dtype, np.integer) and a.ndim == 2}


def _zeros_and_ones(a: np.ndarray) -> bool:
    """A mask's values (a padding mask, a 0/1 flag per token), not token ids."""
    return bool(np.isin(np.asarray(a), (0, 1)).all())


def padding_mask(feeds: list) -> str | None:
    """A token model's padding mask, where its samples are padded: an integer input [N, T] of
    ones then zeros (the first position kept), some zeros on the feeds, beside token ids of the
    same shape. (A segment-id input starts with zeros.) Outputs [N, T, ...] are measured on the
    positions it keeps (``auto.measure.run_outputs``, ``validation.compare``): batch 40's
    Japanese tagger pads 31 characters a sentence to 256, and auto's per-position top-1 at 0.9977
    changed 2.4% of its characters."""
    if not feeds or not token_inputs(feeds):
        return None
    shaped = id_inputs(feeds[0])
    for name, value in shaped.items():
        ids = [k for k, v in shaped.items()
               if k != name and v.shape == value.shape and not _zeros_and_ones(v)]
        masks = [np.asarray(f.get(name)) for f in feeds] if ids else []
        if masks and all(m.ndim == 2 and _zeros_and_ones(m) and (m[:, 0] == 1).all()
                         and (np.diff(m, axis=1) <= 0).all() for m in masks) \
                and any((m == 0).any() for m in masks):
            return name
    return None


def encoder_states(feeds: list) -> set[str]:
    """Float inputs [N, S, H] read beside token ids [N, T] (integer, rank 2): an encoder's states
    a decoder reads (cross-attention's memory; Whisper's, a transliterator's). Such a decoder is a
    token model whose per-position scores pick the next token (batch 41's no-cache decoder: its 43
    logits a position held by plain cosine, auto changed 12.75% of its names)."""
    if not feeds:
        return set()
    first = {k: np.asarray(v) for k, v in feeds[0].items()}
    if not id_inputs(first):
        return set()
    # a sequence of states, longer than one on some sample (a speaker's or style's [N, 1, D]
    # vector beside a TTS model's phoneme ids is none)
    return {k for k, v in first.items() if np.issubdtype(v.dtype, np.floating) and v.ndim == 3
            and any(np.ndim(f.get(k)) == 3 and np.shape(f.get(k))[1] > 1 for f in feeds)}


def source_and_target(feeds: list) -> bool:
    """Two sequences of token ids of different lengths (integer [N, T] inputs that are not 0/1
    masks, each longer than one, their lengths apart on some sample): an encoder-decoder fed its
    source and, teacher-forced, the target so far in one graph (pyfrspell's lemmatiser: ``src``
    [N, 9], ``tgt_in`` [N, 6]). Its per-position scores pick the next token, as those of a
    decoder beside an encoder's states do (``encoder_states``): auto held them at top-1 0.99 and
    its k-means 8 changed 1.1% of the lemmas. (A tagger's or cross-encoder's ids, mask and
    segment ids are one length.)"""
    if not feeds or not token_inputs(feeds):
        return False
    names = [k for k in id_inputs(feeds[0])
             if not all(_zeros_and_ones(f[k]) for f in feeds if k in f)]
    for feed in feeds:
        lengths = {np.shape(feed[k])[1] for k in names if np.ndim(feed.get(k)) == 2}
        if len(lengths) > 1 and min(lengths) > 1:
            return True
    return False


def kept_positions(output: np.ndarray, feed: Mapping[str, np.ndarray], mask: str | None) -> np.ndarray | None:
    """``output`` [N, T, ...] at the positions the padding mask input ``mask`` of ``feed`` keeps,
    as [K, ...] (None where it is not shaped so, or there is no mask)."""
    if mask is None or mask not in feed:
        return None
    keep = np.asarray(feed[mask]) != 0
    output = np.asarray(output)
    return output[keep] if output.shape[:2] == keep.shape else None
