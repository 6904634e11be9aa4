"""Atomic writes: a file or directory appears complete or not at all, so a killed run loses nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@contextlib.contextmanager
def atomic_path(dest: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temp sibling of `dest`; the caller creates a file or directory there.

    On success it is renamed onto `dest`; on error it is removed and `dest` is untouched. Without
    `replace`, an existing `dest` (e.g. a cache entry a concurrent process finished first) is kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if replace and dest.exists():
            old = tmp.with_name(tmp.name + ".old")
            dest.rename(old)
            tmp.rename(dest)
            _remove(old)
        else:
            try:
                os.replace(tmp, dest)
            except OSError:
                if not dest.exists():
                    raise
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_directory(dest: str | Path) -> Iterator[Path]:
    """A temp directory that replaces `dest` when the block succeeds."""
    with atomic_path(dest, replace=True) as tmp:
        tmp.mkdir()
        yield tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write (or replace) a text file atomically."""
    with atomic_path(path, replace=True) as tmp:
        tmp.write_text(text)


def save_model(model, tokenizer, path: str | Path, card=None) -> Path:
    """A complete model directory at `path`, atomically: weights, tokenizer, model card (README.md) and, for
    MiniMoE models, the remote code that loads it with stock transformers. `card`: a minimoe.card.CardInfo.
    """
    from minimoe.card import CardInfo, write_card
    from minimoe.modeling.portable import write_remote_code

    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if model.config.model_type == "minimoe":
            write_remote_code(tmp)
        write_card(tmp, model, card or CardInfo(), directory_name=str(path))
    return Path(path)
