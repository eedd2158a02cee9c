"""File size, raw and gzip-compressed (zeros and shared values only shrink under compression)."""

from __future__ import annotations

import zlib
from pathlib import Path

from squeezeflow.data.artifacts import model_files


def file_bytes(path: str | Path) -> int:
    """Bytes of a model file with its external data file, if it has one."""

    return sum(f.stat().st_size for f in model_files(path))


def sizes(path: str | Path) -> dict[str, float]:
    """size_mb and size_gzip_mb (1e6 bytes), plus the raw byte count, of a model with its external
    data file if it has one; read in blocks, so a model never has to fit in memory."""

    raw = packed = 0
    for f in model_files(path):
        deflate = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip format, level 9
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                raw += len(block)
                packed += len(deflate.compress(block))
        packed += len(deflate.flush())
    return {"bytes": raw, "size_mb": raw / 1e6, "size_gzip_mb": packed / 1e6}
