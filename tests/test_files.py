"""The run lock: one holder at a time (in one process too), gone on every exit, a dead holder's taken over."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from minimoe.errors import MiniMoEError
from minimoe.files import lock_file


def test_a_lock_has_one_holder_and_goes_on_every_exit(tmp_path):
    lock = tmp_path / "run.lock"
    with pytest.raises(RuntimeError), lock_file(lock):
        assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        with pytest.raises(MiniMoEError, match=f"{tmp_path} is in use by another run \\(pid {os.getpid()} "):
            with lock_file(lock):  # the flock refuses a second holder, even in the same process
                pass
        raise RuntimeError  # an error in the run
    assert not lock.exists()


def test_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "run.lock"
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")  # left by a SIGKILL: no flock held any more
    with lock_file(lock):
        assert lock.read_text().split()[0] == str(os.getpid())
    assert f"taking over the stale lock {lock} (pid {dead.pid} has ended)" in capsys.readouterr().err
    lock.write_text(f"{dead.pid} another-host\n")  # cannot be checked from here: held
    with pytest.raises(MiniMoEError, match=f"pid {dead.pid} on another-host"):
        with lock_file(lock):
            pass
    assert lock.exists()  # a refused run leaves the holder's lock alone


# Holds the lock, forks a worker (it writes its pid to argv[2] and lives on), then dies by SIGKILL (argv[1]: the lock).
LOCK_FORK_AND_DIE = """
import os, signal, sys, time
from minimoe.files import lock_file
with lock_file(sys.argv[1]):
    if os.fork() == 0:
        open(sys.argv[2], "w").write(str(os.getpid()))
        time.sleep(60)
        os._exit(0)
    while not os.path.exists(sys.argv[2]) or not open(sys.argv[2]).read():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_lock_is_free_while_its_forked_workers_live_on(tmp_path, capsys):
    lock, worker = tmp_path / "run.lock", tmp_path / "worker.pid"
    run = subprocess.run([sys.executable, "-c", LOCK_FORK_AND_DIE, str(lock), str(worker)], timeout=120)
    assert run.returncode == -signal.SIGKILL
    orphan = int(worker.read_text())
    try:
        os.kill(orphan, 0)  # the worker is still alive ...
        with lock_file(lock):  # ... and the lock is its dead run's: taken over
            pass
        assert "taking over the stale lock" in capsys.readouterr().err
    finally:
        os.kill(orphan, signal.SIGKILL)
