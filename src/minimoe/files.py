"""Atomic writes: a file or directory appears complete or not at all, so a killed run loses nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from minimoe.errors import MiniMoEError


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


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def acquire_lock(path: str | Path) -> None:
    """Create lock file `path` holding "pid host"; refuse if a live process holds it, take over a dead one's.

    A lock from another host cannot be checked, so it counts as held (delete the file if that run is gone).
    """
    path, host = Path(path), socket.gethostname()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid_text, _, owner = path.read_text().partition(" ") if path.exists() else ("", "", "")
            pid, owner = int(pid_text or 0), owner.strip()
            if pid != os.getpid() and (owner != host or _pid_alive(pid)):
                raise MiniMoEError(
                    f"{path.parent} is in use by another run (pid {pid} on {owner}, lock file {path}); wait for "
                    f"it, use another output directory, or delete the lock file if that run is gone"
                ) from None
            if pid != os.getpid():
                print(f"taking over the stale lock {path} (pid {pid} has ended)", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {host}\n")
        return


def release_lock(path: str | Path) -> None:
    """Remove lock file `path` if this process holds it."""
    path = Path(path)
    if path.is_file() and path.read_text().split(" ")[0] == str(os.getpid()):
        path.unlink(missing_ok=True)
