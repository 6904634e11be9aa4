"""The training loop: it learns, an interrupted run resumes to the same weights, NaN stops cleanly, and
faults (kills and full disks while saving, corrupt checkpoints, SIGTERM, a second run, a changed recipe)
leave a resumable run."""

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from minimoe.distill.teachers import load_teacher
from minimoe.errors import MiniMoEError, Stopped
from minimoe.modeling import init_student
from minimoe.training.distillation import StudentConfig, student_config
from minimoe.training.objectives import RelationDistillation
from minimoe.training.run_dir import checkpoints, latest_checkpoint, run_directory
from minimoe.training.trainer import (
    TrainConfig,
    Trainer,
    loader_workers,
    make_accelerator,
    param_groups,
)


class RandomIds(Dataset):
    """Random token sequences with some padding; can simulate a kill after `die_after` items."""

    def __init__(self, n=48, vocab=60, length=12, die_after=None, sigterm_after=None):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=g)
        self.lengths = torch.randint(4, length + 1, (n,), generator=g)
        self.die_after, self.sigterm_after, self.served = die_after, sigterm_after, 0

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        self.served += 1
        if self.die_after is not None and self.served > self.die_after:
            raise KeyboardInterrupt  # what a Ctrl-C or a kill mid-epoch looks like to the loop
        if self.served == self.sigterm_after:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before it kills the job
        mask = (torch.arange(self.ids.shape[1]) < self.lengths[i]).long()
        return {"input_ids": self.ids[i] * mask, "attention_mask": mask}


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def objective(teacher_dir, experts=4):
    teacher = load_teacher(teacher_dir)
    shape = StudentConfig(layers=2, hidden=32, heads=4, experts=experts, intermediate=32)
    student = init_student(student_config(teacher, shape), seed=0)
    return RelationDistillation(student, teacher, relation_heads=4, teacher_layer=-1, source="head")


@contextlib.contextmanager
def trainer(cfg, obj, data, **kw):
    """A Trainer in its run directory (which holds the lock while the block runs)."""
    with run_directory(cfg, make_accelerator(cfg)) as run:
        yield Trainer(run, obj, data, collate, **kw)


def train(cfg, obj, data, **kw):
    with trainer(cfg, obj, data, **kw) as t:
        return t.train()


def config(tmp_path, **kw):
    fields = dict(
        output_dir=str(tmp_path),
        batch_size=8,
        lr=2e-3,
        max_steps=12,
        warmup_ratio=0.1,
        log_every=1,
        save_every=4,
        threads=1,
        num_workers=0,  # RandomIds simulates kills and signals from inside the loading process
    )
    fields.update(kw)
    return TrainConfig(**fields)


def test_distillation_loss_goes_down(tiny_teacher_dir, tmp_path):
    result = train(config(tmp_path, max_steps=30), objective(tiny_teacher_dir), RandomIds())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/relation_kl"] for r in records if "train/relation_kl" in r]
    assert result.steps == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents*"))
    assert latest_checkpoint(tmp_path).name == "step-30"


def test_killed_run_resumes_to_the_same_weights(tiny_teacher_dir, tmp_path):
    straight = objective(tiny_teacher_dir)
    train(config(tmp_path / "a"), straight, RandomIds())

    with pytest.raises(KeyboardInterrupt):  # dies in step 7, after the step-4 checkpoint
        train(config(tmp_path / "b"), objective(tiny_teacher_dir), RandomIds(die_after=52))
    assert latest_checkpoint(tmp_path / "b").name == "step-4"
    resumed_obj = objective(tiny_teacher_dir)
    result = train(config(tmp_path / "b", resume=True), resumed_obj, RandomIds())
    assert result.resumed_from == 4 and result.steps == 12
    for (name, p), q in zip(straight.named_parameters(), resumed_obj.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_a_resumed_run_logs_what_an_uninterrupted_one_logs(tiny_teacher_dir, tmp_path):
    # logged every 3 steps, saved every 4: the step-4 checkpoint falls inside the window logged at step 6
    train(config(tmp_path / "a", log_every=3), objective(tiny_teacher_dir), RandomIds())
    with pytest.raises(KeyboardInterrupt):  # dies in step 7, after logging step 6
        train(config(tmp_path / "b", log_every=3), objective(tiny_teacher_dir), RandomIds(die_after=52))
    train(config(tmp_path / "b", log_every=3, resume=True), objective(tiny_teacher_dir), RandomIds())
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()


def test_loader_workers_change_no_batch_and_a_run_resumes_with_them(tiny_teacher_dir, tmp_path):
    # 6 batches an epoch: the resume at step 4 skips into the first epoch, then a second epoch follows.
    straight = objective(tiny_teacher_dir)
    train(config(tmp_path / "a", keep_checkpoints=5), straight, RandomIds())
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for step in (8, 12):
        shutil.rmtree(tmp_path / "b" / "checkpoints" / f"step-{step}")
    resumed = objective(tiny_teacher_dir)
    with trainer(config(tmp_path / "b", resume=True, num_workers=2), resumed, RandomIds()) as t:
        assert t.loader.num_workers == 2 and t.loader.persistent_workers
        result = t.train()  # num_workers may change on resume: it changes nothing that is trained
    assert result.resumed_from == 4 and result.steps == 12
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


def test_loader_workers_default_to_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(-1) == 4 and loader_workers(0) == 0 and loader_workers(7) == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 processes on the machine: 2 cores each
    assert loader_workers(-1) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert loader_workers(-1) == 1
    with pytest.raises(MiniMoEError, match="num_workers"):
        TrainConfig(num_workers=-2)


@pytest.mark.parametrize("log_every", [1, 10])
def test_nan_loss_is_a_clear_error_and_never_checkpointed(tiny_teacher_dir, tmp_path, log_every):
    # The loop reads losses at logging and before checkpoints (not every step): with log_every 10 the NaN of
    # step 1 is caught at the step-4 checkpoint, which is not written.
    obj = objective(tiny_teacher_dir)
    with torch.no_grad():
        obj.student.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(MiniMoEError, match="loss became nan at step 1"):
        train(config(tmp_path, log_every=log_every), obj, RandomIds())
    assert latest_checkpoint(tmp_path) is None


PER_LAYER_NO_DECAY = [
    "attention.query.bias",
    "attention.key.bias",
    "attention.value.bias",
    "attention.dense.bias",
    "attention.LayerNorm.weight",
    "attention.LayerNorm.bias",
    "ffn.b_in",  # the stacked expert biases [E, I] and [E, H]: 2-D, still biases
    "ffn.b_out",
    "ffn.router.bias",
    "ffn.LayerNorm.weight",
    "ffn.LayerNorm.bias",
]


def test_weight_decay_spares_exactly_the_biases_and_layernorms(tiny_teacher_dir):
    obj = objective(tiny_teacher_dir)
    names = {id(p): n for n, p in obj.named_parameters()}
    decay, no_decay = param_groups(obj, 0.01)
    expected = ["student.embeddings.LayerNorm.weight", "student.embeddings.LayerNorm.bias"]
    expected += [f"student.encoder.layer.{i}.{n}" for i in (0, 1) for n in PER_LAYER_NO_DECAY]
    expected += [f"relation_head.{m}.bias" for m in ("query", "key", "value")]
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(expected)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(set(names.values()) - set(expected))


def test_nan_first_evaluation_does_not_stay_best(tiny_teacher_dir, tmp_path):
    scores, saved = iter([float("nan"), 0.25, 0.1]), []
    result = train(
        config(tmp_path, max_steps=3, eval_every=1, save_every=0),
        objective(tiny_teacher_dir),
        RandomIds(),
        evaluate=lambda model: {"score": next(scores)},
        best_metric="score",
        on_best=lambda model, metrics: saved.append(metrics["score"]),
    )
    assert result.best_metric == 0.25 and saved == [0.25]


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tiny_teacher_dir, tmp_path, monkeypatch):
    straight = objective(tiny_teacher_dir)
    train(config(tmp_path / "a"), straight, RandomIds())

    with (
        pytest.raises(KeyboardInterrupt),
        trainer(config(tmp_path / "b"), objective(tiny_teacher_dir), RandomIds()) as t,
    ):
        real_save = t.accelerator.save_state

        def killed_while_saving(path):
            real_save(path)
            if path.endswith("step-8"):
                (Path(path) / "model.safetensors").write_bytes(b"half")  # the write was cut off ...
                raise KeyboardInterrupt  # ... by a kill

        monkeypatch.setattr(t.accelerator, "save_state", killed_while_saving)
        t.train()
    assert latest_checkpoint(tmp_path / "b").name == "step-4"
    resumed = objective(tiny_teacher_dir)
    result = train(config(tmp_path / "b", resume=True), resumed, RandomIds())
    assert result.resumed_from == 4 and result.steps == 12
    assert not list((tmp_path / "b" / "checkpoints").glob(".tmp-*"))  # the half-written one is cleaned up
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_teacher_dir, tmp_path, capsys):
    straight = objective(tiny_teacher_dir)
    train(config(tmp_path / "a"), straight, RandomIds())
    with pytest.raises(KeyboardInterrupt):  # dies in step 11, after the step-8 checkpoint
        train(config(tmp_path / "b"), objective(tiny_teacher_dir), RandomIds(die_after=84))
    assert [p.name for p in checkpoints(tmp_path / "b")] == ["step-8", "step-4"]
    weights = tmp_path / "b" / "checkpoints" / "step-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a failing disk
    resumed = objective(tiny_teacher_dir)
    result = train(config(tmp_path / "b", resume=True), resumed, RandomIds())
    err = capsys.readouterr().err  # notices go to stderr, apart from a job's output
    assert "step-8" in err.split("unreadable")[0] and result.resumed_from == 4
    assert (
        "falling back to step-4" in err and f"resumed from step 4 ({tmp_path / 'b' / 'checkpoints' / 'step-4'})" in err
    )
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_sigterm_saves_a_checkpoint_and_stops(tiny_teacher_dir, tmp_path):
    with pytest.raises(Stopped, match="stopped by SIGTERM at step 2: checkpoint saved in .*step-2"):
        # item 20 is read during step 2 (the loader reads one batch of 8 ahead)
        train(config(tmp_path, save_every=0), objective(tiny_teacher_dir), RandomIds(sigterm_after=20))
    assert latest_checkpoint(tmp_path).name == "step-2" and not (tmp_path / "run.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    assert train(config(tmp_path, resume=True), objective(tiny_teacher_dir), RandomIds()).steps == 12


def test_a_second_run_on_one_output_dir_refuses_and_a_dead_ones_lock_is_taken_over(tiny_teacher_dir, tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (tmp_path / "run.lock").write_text(f"{other.pid} {socket.gethostname()}\n")
    try:
        with pytest.raises(MiniMoEError, match=f"in use by another run \\(pid {other.pid} "):
            train(config(tmp_path), objective(tiny_teacher_dir), RandomIds())
    finally:
        other.kill()
        other.wait()
    train(config(tmp_path, max_steps=2), objective(tiny_teacher_dir), RandomIds())
    assert f"taking over the stale lock {tmp_path / 'run.lock'} (pid {other.pid} has ended)" in capsys.readouterr().err
    assert not (tmp_path / "run.lock").exists()


def test_resume_with_a_changed_recipe_refuses_unless_forced(tiny_teacher_dir, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path), objective(tiny_teacher_dir), RandomIds(die_after=52))
    changed = config(tmp_path, resume=True, lr=1e-3, weight_decay=0.1, threads=2)  # threads may change
    with pytest.raises(
        MiniMoEError, match=r"recipe changed \(train.lr: 0.002 -> 0.001; train.weight_decay: 0.01 -> 0.1\)"
    ):
        train(changed, objective(tiny_teacher_dir), RandomIds())
    forced = config(tmp_path, resume=True, lr=1e-3, weight_decay=0.1, force_resume=True)
    assert train(forced, objective(tiny_teacher_dir), RandomIds()).resumed_from == 4


def test_disk_full_while_saving_keeps_the_last_good_checkpoint(tiny_teacher_dir, tmp_path, monkeypatch):
    full = r"step-8 \(No space left on device\); the last good checkpoint .*step-4 is"
    with (
        pytest.raises(MiniMoEError, match=full),
        trainer(config(tmp_path), objective(tiny_teacher_dir), RandomIds()) as t,
    ):
        real_save = t.accelerator.save_state

        def disk_full_at_step_8(path):
            real_save(path)
            if path.endswith("step-8"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

        monkeypatch.setattr(t.accelerator, "save_state", disk_full_at_step_8)
        t.train()
    assert [p.name for p in checkpoints(tmp_path)] == ["step-4"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    result = train(config(tmp_path, resume=True), objective(tiny_teacher_dir), RandomIds())
    assert result.resumed_from == 4 and result.steps == 12


def test_model_and_batches_follow_the_accelerator_device(tiny_teacher_dir, tmp_path, monkeypatch):
    # On a CPU-only machine every device is the CPU, so this guards the wiring (prepare moves both);
    # tests/distill/test_teacher_cache.py checks the teacher paths against a stand-in device.
    obj, seen = objective(tiny_teacher_dir), []
    real_forward = type(obj).forward

    def spy(self, **batch):
        seen.append({t.device for t in batch.values()} | {p.device for p in self.parameters()})
        return real_forward(self, **batch)

    monkeypatch.setattr(type(obj), "forward", spy)
    with trainer(config(tmp_path, max_steps=2, save_every=0), obj, RandomIds()) as t:
        t.train()
    assert seen and all(devices == {t.accelerator.device} for devices in seen)


def test_a_process_forked_during_a_run_still_ends_on_sigterm(tmp_path):
    """A worker pool (the corpus build's) terminates its forked workers with SIGTERM: they must not catch it."""
    cfg = config(tmp_path)
    with run_directory(cfg, make_accelerator(cfg)) as run:
        child = os.fork()
        if child == 0:  # the forked worker
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            os._exit(0)
        _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM and run.stop_signal is None
