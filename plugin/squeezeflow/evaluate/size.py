"""File size, raw and gzip-compressed (zeros and shared values only shrink under compression)."""

from __future__ import annotations

import gzip
from pathlib import Path


def sizes(path: str | Path) -> dict[str, float]:
    """size_mb and size_gzip_mb (1e6 bytes), plus the raw byte count."""
    raw = Path(path).read_bytes()
    return {"bytes": len(raw), "size_mb": len(raw) / 1e6, "size_gzip_mb": len(gzip.compress(raw, compresslevel=9, mtime=0)) / 1e6}
