"""minimoe's cache directory, the content stamps that key its entries, and the lock that builds each entry once."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout


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


def build_once(entry: Path, what: str, build: Callable[[], object]) -> None:
    """Run `build` (which creates `entry` atomically) unless `entry` exists, holding a lock file beside it.

    Each cache entry is so built once per filesystem: other processes, the ranks of this node or of nodes
    sharing the filesystem, wait for the lock and then find the entry. The lock dies with its holder, so a
    killed build is taken over (and resumed, where `build` can) by the next process.
    """
    if entry.exists():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(entry.parent / f".{entry.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process building {what} in {entry}", file=sys.stderr)
        lock.acquire()
    try:
        if not entry.exists():
            print(f"building {what} in {entry}", file=sys.stderr)
            build()
    finally:
        lock.release()
