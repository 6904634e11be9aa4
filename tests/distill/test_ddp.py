"""Two real CPU processes (gloo) through accelerate train the same model as one process on the same data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def launch(processes: int, teacher_dir, out: Path, batch_size: int) -> str:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    if processes > 1:
        cmd += ["--multi_gpu"]  # with no GPU present accelerate runs MULTI_CPU over gloo
    cmd += [str(WORKER), str(teacher_dir), str(out), str(batch_size)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_teacher_dir, tmp_path):
    two = launch(2, tiny_teacher_dir, tmp_path / "two", batch_size=4)  # 2 x 4 per step
    assert "world_size=2 backend=DistributedType.MULTI_CPU" in two
    launch(1, tiny_teacher_dir, tmp_path / "one", batch_size=8)  # 1 x 8 per step, same sequences
    a = torch.load(tmp_path / "two" / "student.pt")
    b = torch.load(tmp_path / "one" / "student.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6
    initial = torch.load(tmp_path / "two" / "initial.pt")  # training really moved the weights
    assert max((initial[k] - a[k]).abs().max() for k in a) > 1e-3
