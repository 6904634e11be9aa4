"""build_once: concurrent processes build a cache entry once, the others wait and find it; a dead holder's lock frees."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from minimoe.cache import build_once
from minimoe.files import atomic_path


def slow_build(entry: Path, log: Path) -> None:
    """Log the build, take a while, then create the entry atomically."""
    with log.open("a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    with atomic_path(entry) as tmp:
        tmp.write_text("built")


def build_and_read(entry: Path, log: Path) -> None:
    build_once(entry, "a test entry", lambda: slow_build(entry, log))
    assert entry.read_text() == "built"  # every process finds the entry once its call returns


def test_concurrent_processes_build_an_entry_once(tmp_path: Path, capfd):
    entry, log = tmp_path / "cache" / "entry", tmp_path / "log"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=build_and_read, args=(entry, log)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert sum(line.startswith("building a test entry in") for line in lines) == 1
    assert any(line.startswith("waiting for another process building a test entry") for line in lines)


def hold_forever(entry: Path) -> None:
    build_once(entry, "a test entry", lambda: time.sleep(600))


def test_the_lock_of_a_killed_build_is_taken_over(tmp_path: Path):
    entry, log = tmp_path / "entry", tmp_path / "log"
    holder = multiprocessing.get_context("fork").Process(target=hold_forever, args=(entry,))
    holder.start()
    while not (tmp_path / ".entry.lock").exists():
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    build_once(entry, "a test entry", lambda: slow_build(entry, log))
    assert entry.read_text() == "built" and len(log.read_text().split()) == 1
