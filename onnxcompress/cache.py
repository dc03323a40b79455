"""A small on-disk cache of decisions measured on this machine.

The quantize pass's speed guard times int8 against float and keeps what runs faster. Timings are
noisy, so measuring again could flip a close decision and change the output file. The first
measurement for a given graph structure (ops, connections, shapes; not weight values, which do not
change speed), options, CPU and onnxruntime version is therefore stored here with the latencies it
measured and reused without timing again: the same input, options and seed give a byte-identical
file on the same machine.

Location: ``$ONNXCOMPRESS_CACHE_DIR``, else ``~/.cache/onnxcompress``. Delete it to re-measure.
Any problem reading or writing it only loses the cache; it never fails a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_FILE = "decisions.json"


def cache_dir() -> Path:
    env = os.environ.get("ONNXCOMPRESS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "onnxcompress"


def machine_id() -> str:
    """CPU model and instruction-set features that change which int8 kernels are fast."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                    present = set(line.split(":", 1)[1].split())
                    flags = ",".join(f for f in wanted if f in present)
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{flags}"


def decision_key(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def get_decision(key: str) -> Any | None:
    try:
        data = json.loads((cache_dir() / _FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def put_decision(key: str, value: Any) -> None:
    folder = cache_dir()
    path = folder / _FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[key] = value
        fd, tmp = tempfile.mkstemp(prefix=".decisions-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as e:
        logger.debug("could not write the decision cache %s: %s", path, e)
