"""The real commands under `accelerate launch` with two CPU (gloo) processes: they exit 0, save their
artefacts, two processes train the same student as one process on the same global batch, a killed
two-process run resumes to exactly the student of an uninterrupted one, and two "nodes" with node-local
caches build each cache once per node."""

import json
import os
import random
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from minimoe.cli import main
from minimoe.training.run_dir import checkpoints

from ..conftest import WORDS

# Deterministic across processes: no router noise or dropout (each rank draws its own), no balance loss
# and sequences of one length (both are averaged per process, as in Switch and MiniLMv2), so 2 x 4
# sequences per step equal 1 x 8.
STUDENT = ["--student.layers", "1", "--student.hidden", "32", "--student.heads", "4", "--student.intermediate", "32"]
STUDENT += ["--student.router_noise", "0", "--student.dropout", "0", "--student.router_aux_loss_coef", "0"]
FLAGS = ["--max_length", "24", "--relation_heads", "4", "--train.max_steps", "3", "--train.log_every", "1"]
FLAGS += ["--train.lr", "1e-3", "--train.warmup_ratio", "0", "--train.threads", "1", "--train.seed", "3"]


def launch(*args, script=("-m", "minimoe"), **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """`accelerate launch --multi_gpu --num_processes 2 -m minimoe ARGS` (gloo on a CPU-only machine); with
    `popen` keywords, the launch is started and returned, not waited for."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *script]
    if popen:
        return subprocess.Popen([*cmd, *map(str, args)], **popen)
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """Sentences longer than max_length: every sequence is cut to exactly 24 tokens."""
    rng = random.Random(0)
    corpus = tmp_path_factory.mktemp("corpus") / "long.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(30)) + " ." for _ in range(40)))
    return corpus


@pytest.fixture(scope="module")
def two_process_run(tiny_teacher_dir, long_corpus, tmp_path_factory):
    """An uninterrupted two-process distillation: (its directory, its flags)."""
    common = ["--teacher", str(tiny_teacher_dir), "--corpus", str(long_corpus), *STUDENT, *FLAGS]
    two = tmp_path_factory.mktemp("launch") / "two"
    run = launch("distill", *common, "--train.batch_size", "4", "--train.output_dir", two)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "error" not in run.stderr.lower()
    return two, common


@pytest.mark.slow
def test_two_process_distill_and_finetune_exit_zero_and_match_one_process(
    two_process_run, tiny_teacher_dir, task_dir, tmp_path
):
    two, common = two_process_run
    assert (two / "summary.json").is_file() and (two / "recipe.yaml").is_file()
    assert [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # the same global batch in one process
    assert main(["distill", *common, "--train.batch_size", "8", "--train.output_dir", str(tmp_path / "one")]) == 0
    a = load_file(two / "student" / "model.safetensors")
    b = load_file(tmp_path / "one" / "student" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)

    # fine-tuning with KD from a fine-tuned teacher, in two processes
    task = ["--task", "sst2", "--data_dir", str(task_dir), "--max_length", "16", "--train.threads", "1"]
    task += ["--train.epochs", "1", "--train.batch_size", "4"]
    assert main(["finetune", "--model", str(tiny_teacher_dir), "--train.output_dir", str(tmp_path / "t"), *task]) == 0
    kd = ["--model", two / "student", "--teacher", tmp_path / "t" / "best", "--train.output_dir", tmp_path / "s"]
    run = launch("finetune", *kd, *task)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["kd_teacher"] and results["dev_examples"] == 24 and "accuracy" in results["best"]
    assert (tmp_path / "s" / "best" / "model.safetensors").is_file()
    assert not (tmp_path / "s" / "run.lock").exists() and not (two / "run.lock").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_node_local_caches_build_each_cache_once_per_node(tiny_teacher_dir, tmp_path):
    """Two "nodes" on this host (two accelerate launches, two gloo processes each), each with its own cache."""
    rng = random.Random(0)  # over 1 MiB of text: more than one shard, so each build forks its tokenising workers
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(20)) + " ." for _ in range(12000)))
    port, nodes = free_port(), []
    common = ["--teacher", tiny_teacher_dir, "--corpus", corpus, "--cache_teacher", "--max_sequences", "64"]
    common += [*STUDENT, *FLAGS, "--train.batch_size", "4", "--train.output_dir", tmp_path / "run"]
    common += ["--inspect_sequences", "0"]
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]
        cmd += ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
        cmd += ["--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
        env = {**os.environ, "MINIMOE_HOME": str(tmp_path / f"node{rank}")}
        nodes.append(
            subprocess.Popen(
                [*cmd, "-m", "minimoe", "distill", *map(str, common)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    for rank, (_, err) in enumerate(outputs):
        lines = err.splitlines()
        for what in ("the distillation corpus", "the teacher Q/K/V cache"):
            assert sum(line.startswith(f"building {what}") for line in lines) == 1, (rank, what, err[-3000:])
        assert len(list((tmp_path / f"node{rank}" / "corpus-cache").glob("pairs-*"))) == 1
        assert len(list((tmp_path / f"node{rank}" / "teacher-qkv").glob("[!.]*"))) == 1  # (locks are hidden files)
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_the_paper_study_recipe_splits_its_global_batches_over_two_processes(
    tiny_teacher_dir, tiny_corpus, task_dir, tmp_path
):
    glue = tmp_path / "glue" / "sst2"
    glue.mkdir(parents=True)
    for split in ("train.tsv", "dev.tsv"):
        (glue / split).write_text((task_dir / split).read_text())
    out = tmp_path / "study"
    args = ["study", "--config", "study-paper-bert-base", "--output_dir", out, "--teachers", tiny_teacher_dir]
    args += ["--distill.corpus", tiny_corpus, "--data_root", glue.parent, "--tasks", "sst2", "--sizes", "1L-32H"]
    for section in ("distill", "finetune", "teacher_finetune"):
        args += [f"--{section}.max_length", "24"]
    args += ["--distill.relation_heads", "2", "--distill.train.epochs", "1", "--distill.train.batch_size", "8"]
    args += ["--distill.train.grad_accum", "2", "--finetune_grid.batch_size", "8", "--finetune_grid.lr", "1e-4"]
    args += ["--finetune_grid.epochs", "1", "--teacher_finetune.train.epochs", "1", "--no-measure_latency"]
    run = launch(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    distill = yaml.safe_load((out / tiny_teacher_dir.name / "1L-32H-E4-s1" / "distill" / "recipe.yaml").read_text())
    finetune = yaml.safe_load(
        (out / tiny_teacher_dir.name / "1L-32H-E4-s1" / "finetune-sst2" / "recipe.yaml").read_text()
    )
    assert (distill["train"]["batch_size"], distill["train"]["grad_accum"]) == (2, 2)  # 8 = 2 x 2 accumulated x 2
    assert finetune["train"]["batch_size"] == 4  # a global fine-tuning batch of 8 over 2 processes
    assert run.stdout.count("wrote ") == 1 and (out / "study.md").is_file()  # the tables come from one process


# The CLI, for `accelerate launch`, whose processes stop right after writing checkpoint step-2 and wait there
# (touching $STOPPED_AT_STEP_2) for the test to kill them all.
STOPS_AFTER_STEP_2 = """
import os, sys, time
from pathlib import Path
from minimoe.training.trainer import Trainer
save = Trainer.save_checkpoint

def save_then_wait(self):
    save(self)
    if self.step == 2:
        Path(os.environ["STOPPED_AT_STEP_2"]).touch()
        time.sleep(600)

Trainer.save_checkpoint = save_then_wait
from minimoe.cli import main
sys.exit(main())
"""


@pytest.mark.slow
def test_a_killed_two_process_distill_resumes_to_the_uninterrupted_student(two_process_run, tmp_path):
    two, common = two_process_run
    script, marker, out = tmp_path / "stops.py", tmp_path / "stopped", tmp_path / "killed"
    script.write_text(STOPS_AFTER_STEP_2)
    args = ["distill", *common, "--train.batch_size", "4", "--train.save_every", "1", "--train.output_dir", out]
    env = {**os.environ, "STOPPED_AT_STEP_2": str(marker)}
    proc = launch(*args, script=[str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the launch never reached step 2"
    everything = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    for process in everything:  # the launcher and both workers (each in a session of its own): no cleanup at all
        process.kill()
    psutil.wait_procs(everything, timeout=60)
    assert [p.name for p in checkpoints(out)] == ["step-2", "step-1"] and not (out / "summary.json").exists()

    run = launch(*args, "--train.resume")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed from step 2" in run.stderr and f"taking over the stale lock {out / 'run.lock'}" in run.stderr
    assert (out / "metrics.jsonl").read_text() == (two / "metrics.jsonl").read_text()
    a, b = (load_file(d / "student" / "model.safetensors") for d in (out, two))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise what no kill gives
