"""A run's output directory: `run_directory`, the one context that owns it for a whole job (lock, refusals,
SIGTERM, cleanup), and its layout: checkpoints, whether it holds another run, moving that run aside, and the
one-line message when a write into it fails."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate import Accelerator

from minimoe.errors import MiniMoEError, Stopped
from minimoe.files import lock_file

if TYPE_CHECKING:  # for annotations only: the trainer imports this module
    from minimoe.training.trainer import TrainConfig

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


@dataclass
class RunDirectory:
    """A run's output_dir while the run owns it (see `run_directory`)."""

    cfg: TrainConfig
    accelerator: Accelerator
    stop_signal: str | None = None  # the name of a stop signal received (SIGTERM), if any
    training: bool = False  # inside the trainer's loop, which stops at its next step, checkpointed
    pid: int = field(default_factory=os.getpid)  # the run's process (a forked worker inherits the handler below)

    @property
    def path(self) -> Path:
        """The run directory."""
        return Path(self.cfg.output_dir)

    def on_signal(self, signum: int, frame) -> None:
        """SIGTERM handler: in the trainer's loop, ask it to stop at the next step (it checkpoints first, every
        process together); elsewhere in a one-process run (a corpus or teacher-cache build, the final save), stop
        at once: those write atomically and resume, so an hour-long build does not hold a stop back.

        A process forked from the run (a tokenising or data worker) inherits this handler; there the signal
        does what it does by default, end the process, so a pool that terminates its workers is not kept waiting.
        """
        if os.getpid() != self.pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stop_signal = signal.Signals(signum).name
        if not self.training and self.accelerator.num_processes == 1:
            raise self.stopped_outside_training()

    def stopped_outside_training(self) -> Stopped:
        """The stop of a run signalled before or after its training loop, naming what a rerun resumes from."""
        last = latest_checkpoint(self.path)
        return Stopped(
            f"stopped by {self.stop_signal} outside the training loop: "
            + (f"its last checkpoint is {last}" if last else "no checkpoint yet")
        )

    @contextlib.contextmanager
    def writing(self, what: Path) -> Iterator[None]:
        """Turn a failed write of the run's results (a full disk, ...) into one line naming what is intact."""
        try:
            yield
        except Exception as err:  # noqa: BLE001  (a full disk shows as OSError, SafetensorError or RuntimeError)
            raise write_failed(what, err, self.path) from err


@contextlib.contextmanager
def run_directory(cfg: TrainConfig, accelerator: Accelerator, outputs: tuple[str, ...] = ()) -> Iterator[RunDirectory]:
    """Own cfg.output_dir for the block: the whole job, from before it loads anything to its last write.

    The main process creates the directory and takes its lock (a second run refuses at once; the lock
    goes on every exit path). A fresh run (no train.resume) refuses a directory holding another run, its
    checkpoints or the job's `outputs`, unless train.overwrite, which first moves that run aside. A
    directory created here is removed again if the job fails before writing into it. SIGTERM is noted
    (see `RunDirectory.stop_signal`); one that came after training ends the job with `Stopped` all the same.
    """
    run = RunDirectory(cfg, accelerator)
    main = accelerator.is_main_process
    created = create_dirs(run.path) if main else []
    in_main_thread = threading.current_thread() is threading.main_thread()
    try:
        with lock_file(run.path / LOCK_FILE) if main else contextlib.nullcontext():
            found = previous_run(run.path, outputs) if main and not cfg.resume else []
            if found and not cfg.overwrite:
                raise MiniMoEError(
                    f"{run.path} holds another run ({', '.join(found)}): continue it with --train.resume, choose "
                    f"another --train.output_dir, or pass --train.overwrite to move it aside to {run.path}.old-<time>"
                )
            if found:
                move_aside(run.path)
            previous = signal.signal(signal.SIGTERM, run.on_signal) if in_main_thread else None
            try:
                accelerator.wait_for_everyone()
                yield run
            finally:
                if in_main_thread:
                    signal.signal(signal.SIGTERM, previous)
            if run.stop_signal:
                raise run.stopped_outside_training()
    except BaseException:
        remove_if_empty(created)
        raise
