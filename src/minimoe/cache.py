"""minimoe's cache directory and the content stamps that key its entries."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of minimoe's cache: $MINIMOE_HOME, else ~/.cache/minimoe."""
    return Path(os.environ.get("MINIMOE_HOME") or Path.home() / ".cache" / "minimoe").expanduser()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_stamp(model_dir: str | Path) -> list[str]:
    """What identifies a model's weights for a cache key: each safetensors file's path and mtime (or the name)."""
    weights = sorted(Path(model_dir).glob("*.safetensors"))
    return [f"{w.resolve()}:{w.stat().st_mtime_ns}" for w in weights] or [str(model_dir)]


def content_key(*parts) -> str:
    """A short hex key for JSON-serialisable parts (weights stamps, layers, token ids)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
