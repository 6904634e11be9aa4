"""The run lock: one holder at a time (in one process too), gone on every exit, a dead holder's taken over."""

import os
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
