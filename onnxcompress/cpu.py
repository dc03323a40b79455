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
