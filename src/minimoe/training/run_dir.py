"""A run directory's layout and the checks on it: its checkpoints, whether it holds another run, moving that
run aside, and the one-line message when a write into it fails."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from minimoe.errors import MiniMoEError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
LOCK_FILE = "run.lock"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, newest first (only fully written ones carry their state file)."""
    root = Path(output_dir) / CHECKPOINTS
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(done, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    return next(iter(checkpoints(output_dir)), None)


def create_dirs(path: Path) -> list[Path]:
    """Create directory `path` (and missing parents) for a run; returns the ones created, deepest first."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MiniMoEError(f"cannot use {path} as the run directory ({err.strerror})") from None
    return created


def remove_if_empty(created: list[Path]) -> None:
    """Remove the directories `create_dirs` made, deepest first, as long as they are empty."""
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return


def previous_run(path: Path, outputs: tuple[str, ...]) -> list[str]:
    """What of another run `path` holds: its newest complete checkpoint and the job's outputs found there."""
    found = [f"{CHECKPOINTS}/{newest.name}" for newest in checkpoints(path)[:1]]
    return found + [name for name in outputs if (path / name).exists()]


def move_aside(path: Path) -> Path:
    """Move everything in run directory `path` but its lock file to a new sibling `path`.old-<time>; returns it.

    Each entry is renamed, so a kill part-way leaves the old run split between the two, never lost.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = path.resolve()
    for n in itertools.count():
        old = base.with_name(f"{base.name}.old-{stamp}" + (f"-{n}" if n else ""))
        try:
            old.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise MiniMoEError(f"cannot move the previous run in {path} aside to {old} ({err.strerror})") from None
    try:
        for entry in path.iterdir():
            if entry.name != LOCK_FILE:
                entry.rename(old / entry.name)
    except OSError as err:
        raise MiniMoEError(
            f"cannot move the previous run in {path} aside to {old} ({err.strerror}); move or delete it yourself"
        ) from None
    print(f"moved the previous run in {path} to {old}", file=sys.stderr)
    return old


def write_failed(what: Path, err: Exception, output_dir: Path) -> MiniMoEError:
    """One line for a write into the run directory that failed (a full disk, ...), naming what is intact.

    A full disk shows as an OSError, a SafetensorError or a torch RuntimeError depending on the writer, so
    the line keeps the writer's own message.
    """
    reason = err.strerror if isinstance(err, OSError) and err.strerror else f"{type(err).__name__}: {err}"
    last = latest_checkpoint(output_dir)
    kept = f"the last good checkpoint {last} is intact" if last else "there is no earlier checkpoint"
    return MiniMoEError(f"could not write {what} ({reason}); {kept}: free space, then rerun with --train.resume")
