"""What the CPU offers int8 kernels: VNNI (or AMX) dot products, or the AVX2 path that saturates.

x86 CPUs without VNNI multiply u8 activations by s8 weights with ``vpmaddubsw``, which adds two
products into an int16 and saturates when both are large (255 * 127 * 2 > 32767). onnxruntime's
answer, and ours, is ``reduce_range``: 7-bit weights on such CPUs. VNNI (AVX512-VNNI, AVX-VNNI)
and AMX accumulate in int32 and need no reduction. ARM's int8 dot products do not saturate either.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

logger = logging.getLogger(__name__)

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})
# Set to 1/0 to override detection (for building models for another CPU than this one).
ENV_OVERRIDE = "ONNXCOMPRESS_CPU_VNNI"


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The x86 feature flags of the first CPU listed in ``cpuinfo`` (empty if unreadable)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@functools.lru_cache(maxsize=1)
def has_vnni() -> bool:
    """True if int8 dot products cannot saturate on this CPU (VNNI/AMX, or not x86)."""
    override = os.environ.get(ENV_OVERRIDE)
    if override in ("0", "1"):
        return override == "1"
    if not is_x86():
        return True
    flags = cpu_flags()
    if not flags:
        # Unknown (no /proc/cpuinfo, e.g. macOS/Windows x86): assume the safe answer.
        logger.debug("CPU flags unknown; assuming no VNNI (reduce_range on).")
        return False
    return bool(flags & VNNI_FLAGS)


def default_reduce_range() -> bool:
    """onnxruntime's advice: 7-bit weights on x86 CPUs without VNNI, full 8 bits elsewhere."""
    return not has_vnni()


# Float16 arithmetic: x86's AVX512-FP16 / AMX-FP16, ARM's half-precision FP (``fphp``/``asimdhp``).
# Without it onnxruntime's CPU kernels convert each fp16 op's inputs and outputs, and fp16
# compute runs slower than float32 (BodyPix 1.11x, madmom's beat TCN 2.42x, HiFi-GAN 1.13-1.19x,
# where a 0.6 s timing had read 0.87-1.11x from run to run).
FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16", "fphp", "asimdhp"})
ENV_FP16 = "ONNXCOMPRESS_CPU_FP16"


def has_fp16_arithmetic() -> bool | None:
    """True if this CPU computes in float16 natively, False if it does not, None if unknown
    (no feature flags to read: then timing decides). Read each time (one small file a run)."""
    override = os.environ.get(ENV_FP16)
    if override in ("0", "1"):
        return override == "1"
    flags = cpu_flags()
    return bool(flags & FP16_FLAGS) if flags else None
