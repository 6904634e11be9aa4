"""Atomic writes (a file or directory appears complete or not at all, so a killed run loses nothing) and
the lock file that gives a run directory to one run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import time
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


_HELD: set[int] = set()  # descriptors of the lock files this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a data or tokenising worker) close the lock descriptors it inherited: the lock then
    goes with the run's own process, not with workers that outlive a killed run for a moment."""
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> tuple[int, str]:
    """The (pid, host) a lock file names; (0, "") for an empty or unreadable one."""
    try:
        pid, _, host = path.read_text().partition(" ")
        return int(pid), host.strip()
    except (OSError, ValueError):
        return 0, ""


def _busy(path: Path, pid: int, host: str) -> MiniMoEError:
    """The one line for a run directory another run holds."""
    return MiniMoEError(
        f"{path.parent} is in use by another run (pid {pid} on {host}, lock file {path}); wait for it, use "
        f"another output directory, or delete the lock file if that run is gone"
    )


def _acquire(path: Path) -> int:
    """Open lock file `path`, hold an exclusive flock on it and write "pid host" into it; returns the descriptor.

    The flock decides between runs racing for the same (stale) lock: exactly one gets it. A lock file that
    names a live process on this host, or any process on another host (it cannot be checked from here),
    counts as held even without a flock (written by an older version, or on a file system without flock).
    """
    host = socket.gethostname()
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise MiniMoEError(
                f"cannot create the lock file {path} ({err.strerror}): {path.parent} must be writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid, owner = _owner(path)
            if owner == host and not _pid_alive(pid):  # its new holder took it over and has not yet written its pid
                time.sleep(0.2)
                pid, owner = _owner(path)
            raise _busy(path, pid, owner) from None
        except OSError:  # a file system without flock (some network ones): the pid check below still applies
            pass
        if not path.exists() or not os.path.samestat(os.fstat(fd), path.stat()):
            os.close(fd)  # its holder removed it between our open and our flock: lock the new one
            continue
        pid, owner = _owner(path)
        if pid and pid != os.getpid() and (owner != host or _pid_alive(pid)):
            os.close(fd)
            raise _busy(path, pid, owner)
        if pid and pid != os.getpid():
            print(f"taking over the stale lock {path} (pid {pid} has ended)", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {host}\n".encode(), 0)
        return fd


@contextlib.contextmanager
def lock_file(path: str | Path) -> Iterator[None]:
    """Hold lock file `path` while the block runs, on every exit path; refuse if another live run holds it.

    A dead run's lock (a kill) is taken over with a message.
    """
    path = Path(path)
    fd = _acquire(path)
    _HELD.add(fd)
    try:
        yield
    finally:
        if path.exists() and os.path.samestat(os.fstat(fd), path.stat()):
            path.unlink()  # while still locked: a run that opened it meanwhile finds it gone once locked, and retries
        _HELD.discard(fd)
        os.close(fd)
