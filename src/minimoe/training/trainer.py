"""The one training loop, on accelerate: DDP, mixed precision, accumulation, atomic checkpoints, resume.

Both jobs (task-agnostic distillation and fine-tuning) hand it an `nn.Module` whose forward takes a
batch and returns a dict with "loss" (and any scalars to log). Frozen teachers live outside that module,
so they are never wrapped for distributed training nor saved in checkpoints.

A job runs inside `run_directory`, the one owner of its output_dir: a lock file (a second run refuses at
once), taken before the job loads anything and released on every exit path; a fresh run refuses a
directory holding another run unless told to move it aside. The trainer keeps the recipe in every
checkpoint (a resume with another recipe refuses unless forced, fallbacks included), falls back to the
previous checkpoint when the newest is unreadable, writes nothing before the resume is settled, and on
SIGTERM saves a checkpoint and stops (the CLI exits with 143). The process group outlives the run: the
job tears it down after its own last collective.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from minimoe.errors import MiniMoEError, RecipeChanged, Stopped
from minimoe.files import atomic_write_text
from minimoe.recipe import dump_recipe
from minimoe.training.run_dir import CHECKPOINTS, STATE_FILE, RunDirectory, checkpoints, latest_checkpoint, write_failed

BIAS_NAMES = ("bias", "b_in", "b_out")  # parameter names of bias vectors (b_in/b_out: the stacked expert biases)
# Recipe fields a resume may change: they do not change what is trained.
RESUMABLE = {
    "train.resume",
    "train.force_resume",
    "train.overwrite",
    "train.output_dir",
    "train.threads",
    "train.num_workers",
    "train.log_every",
    "train.save_every",
    "train.keep_checkpoints",
    "corpus_workers",
}
Precision = Literal["no", "bf16", "fp16"]
"""Precision of the forward passes: no (float32), or bf16 / fp16 autocast with float32 weights."""


@dataclass
class TrainConfig:
    """The optimisation loop shared by distillation and fine-tuning (the `train:` section of a recipe)."""

    output_dir: str = "runs/minimoe"
    """run directory: recipe, metrics, TensorBoard, checkpoints, the model"""
    seed: int = 42
    """seeds weights, data order, dropout and router noise"""
    batch_size: int = 32
    """sequences per process and step (before accumulation)"""
    grad_accum: int = 1
    """micro-batches accumulated into one optimizer step"""
    lr: float = 0.0003
    """peak AdamW learning rate (linear warmup, then linear decay to 0)"""
    weight_decay: float = 0.01
    """AdamW weight decay; never applied to biases and LayerNorm weights"""
    adam_epsilon: float = 1e-8
    """AdamW epsilon: torch's default; the authors' transformers.AdamW used 1e-6 (the paper recipes set it)"""
    warmup_ratio: float = 0.01
    """fraction of the steps spent warming up"""
    epochs: float = 1.0
    """passes over the data (fractions allowed)"""
    max_steps: int = 0
    """optimizer steps; > 0 overrides epochs"""
    grad_clip: float = 5.0
    """max gradient norm; 0 = no clipping"""
    mixed_precision: Precision = "no"
    """precision of the forward passes: no (float32), or bf16 / fp16 autocast with float32 weights"""
    log_every: int = 10
    """optimizer steps between logged training metrics"""
    save_every: int = 100
    """optimizer steps between checkpoints; 0 = only at the end"""
    keep_checkpoints: int = 2
    """newest checkpoints kept on disk"""
    eval_every: int = 0
    """optimizer steps between evaluations; 0 = once per epoch (fine-tuning) / never (distillation)"""
    resume: bool = False
    """continue from the newest complete checkpoint in output_dir"""
    force_resume: bool = False
    """resume even if the recipe differs from the checkpoint's (the differences are printed)"""
    overwrite: bool = False
    """a fresh run into a directory holding another run first moves that run to DIR.old-<time>"""
    threads: int = 0
    """torch intra-op threads per process; 0 = torch's default"""
    num_workers: int = -1
    """DataLoader worker processes per process; -1 = min(4, its share of the cores), 0 = load in the main process"""

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise MiniMoEError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.adam_epsilon <= 0:
            raise MiniMoEError(f"train.adam_epsilon must be positive, got {self.adam_epsilon}")
        for name in ("max_steps", "save_every", "eval_every", "threads", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise MiniMoEError(f"train.{name} must not be negative, got {getattr(self, name)}")
        if self.num_workers < -1:
            raise MiniMoEError(f"train.num_workers must be -1 (automatic) or more, got {self.num_workers}")
        if not self.lr > 0:
            raise MiniMoEError(f"train.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise MiniMoEError(f"train.warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if not self.epochs > 0 and not self.max_steps:
            raise MiniMoEError(f"train.epochs must be positive (or set train.max_steps), got {self.epochs}")
        if self.resume and self.overwrite:
            raise MiniMoEError(
                "train.resume continues the run in train.output_dir; train.overwrite moves it aside: pick one"
            )


@dataclass
class TrainResult:
    """What a finished run reports."""

    steps: int
    seconds: float
    last_metrics: dict
    best_metric: float | None
    resumed_from: int


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as in the paper: decay on weights and embeddings, none on biases (by name, stacked
    expert biases included) and LayerNorm parameters (by module type)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # tied weights appear under several modules
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, nn.LayerNorm) or name in BIAS_NAMES else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module, weight_decay: float, lr: float, device: torch.device, eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW over `param_groups`, fused on CPU and CUDA: one kernel over all tensors instead of a Python loop
    over them. On CPU that made the step ~7x faster; it had been over a quarter of a 4L-192H fine-tuning step."""
    fused = device.type in ("cpu", "cuda") or None
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, eps=eps, fused=fused)


def loader_workers(requested: int) -> int:
    """DataLoader workers per training process: `requested`, or for -1 min(4, this process's share of the cores
    it shares with the other processes on its machine (LOCAL_WORLD_SIZE, set by accelerate launch / torchrun))."""
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def make_loader(data: Dataset, collate: Callable, cfg: TrainConfig, device: torch.device) -> DataLoader:
    """The training DataLoader: shuffled by its own seeded generator, batches padded in `train.num_workers` worker
    processes (kept across epochs) and, on CUDA, collated into pinned memory so the copy to the GPU is asynchronous.

    The loader's own generator keeps its per-epoch seed draw off the global RNG (dropout, router noise), so a resumed
    run draws the same random numbers as an uninterrupted one; workers only pad, so they change no batch.
    """
    workers = loader_workers(cfg.num_workers)
    return DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def make_accelerator(cfg: TrainConfig, find_unused_parameters: bool = False) -> Accelerator:
    """An Accelerator for this run (TensorBoard under output_dir, seedable data order); it writes nothing.

    `find_unused_parameters` is for objectives that leave some weights off the loss path under DDP.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Accelerator(
        # With no GPU, accelerate only joins a multi-process (gloo) group when told it runs on CPU.
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(
            project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / "tensorboard")
        ),
        # non_blocking: batches come in pinned memory on CUDA (make_loader), so their copy overlaps compute.
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=cfg.seed, non_blocking=torch.cuda.is_available()
        ),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )


def end_distributed() -> None:
    """Tear down the process group of a multi-process run, once the job's last collective has run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class Trainer:
    """Runs `objective` over `data` for the configured steps; evaluation and best-model export optional.

    `evaluate(model) -> dict` is called every `eval_every` steps (and at the end); `on_best(model,
    metrics)` runs on the main process whenever `metrics[best_metric]` improves. `config` is the job's
    config as it runs (its recipe: kept in every checkpoint, checked on resume, written to recipe.yaml);
    without it, the recipe is the train settings alone. It runs inside `run_directory` and writes
    nothing until `train()` has settled where it starts.
    """

    def __init__(
        self,
        run: RunDirectory,
        objective: nn.Module,
        data: Dataset,
        collate: Callable,
        evaluate: Callable[[nn.Module], dict] | None = None,
        best_metric: str | None = None,
        on_best: Callable[[nn.Module, dict], None] | None = None,
        config=None,
    ):
        self.run, self.cfg, self.accelerator, self.out = run, run.cfg, run.accelerator, run.path
        cfg = self.cfg
        self.recipe = _flat(asdict(config) if config is not None else {"train": asdict(cfg)})
        self.recipe_text = dump_recipe(config) if config is not None else None
        set_seed(cfg.seed)
        self.evaluate, self.best_metric, self.on_best = evaluate, best_metric, on_best
        loader = make_loader(data, collate, cfg, self.accelerator.device)
        optimizer = make_optimizer(objective, cfg.weight_decay, cfg.lr, self.accelerator.device, cfg.adam_epsilon)
        self.model, self.optimizer, self.loader = self.accelerator.prepare(objective, optimizer, loader)
        per_epoch = max(1, math.ceil(len(self.loader) / cfg.grad_accum))
        self.total_steps = cfg.max_steps or max(1, math.ceil(per_epoch * cfg.epochs))
        self.steps_per_epoch = per_epoch
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * self.total_steps), self.total_steps
        )
        self.scheduler = self.accelerator.prepare(scheduler)
        self.step, self.best = 0, None
        # what a checkpoint carries beside the weights, so a resumed run logs and reports as an uninterrupted one:
        # the training metrics last logged, the ones averaged since, and the final evaluation (None before it)
        self.last: dict = {}
        self.window: list[tuple[int, dict]] = []  # (step, scalar outputs) of each micro-batch since the last log
        self.final: dict | None = None
        self.metrics_file = self.out / "metrics.jsonl"

    def read_window(self) -> list[dict[str, float]]:
        """The scalars of every micro-batch since the last log, on the host (one device sync for them all).

        Raises at the first non-finite loss: the loop checks here (at logging and before each checkpoint) instead of
        on every micro-batch, so the step never waits for the device, and no checkpoint holds a diverged run.
        """
        if not self.window:
            return []
        values = torch.stack([torch.stack([v.float() for v in m.values()]) for _, m in self.window]).cpu()  # [n, k]
        rows = [dict(zip(m, row)) for (_, m), row in zip(self.window, values.tolist())]
        for (step, _), row in zip(self.window, rows):
            if not math.isfinite(row["loss"]):
                raise MiniMoEError(
                    f"loss became {row['loss']} at step {step}: lower train.lr, check the data, or disable fp16; "
                    f"resume from the last good checkpoint with --train.resume"
                )
        return rows

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write step-N atomically (temp dir, then rename) and prune old ones; refuses a run whose loss diverged.

        A kill or a failed write (disk full) leaves the previous checkpoints as they were.
        """
        window = [[step, row] for (step, _), row in zip(self.window, self.read_window())]
        acc = self.accelerator
        root = self.out / CHECKPOINTS
        final, tmp = root / f"step-{self.step}", root / f".tmp-step-{self.step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            acc.wait_for_everyone()  # every rank's files (its RNG state) are in tmp before the rename
            if acc.is_main_process:
                state = {"step": self.step, "best": self.best, "recipe": self.recipe}
                state |= {"last": self.last, "window": window, "final": self.final}
                (tmp / STATE_FILE).write_text(json.dumps(state))
                old = root / f".old-step-{self.step}"
                if final.exists():  # the same step saved again (a resume that had nothing left to do)
                    final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
        except Exception as err:  # noqa: BLE001  (a full disk shows as OSError, SafetensorError or RuntimeError)
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_failed(final, err, self.out) from None
        if acc.is_main_process:
            for stale in [*root.glob(".tmp-step-*"), *checkpoints(self.out)[self.cfg.keep_checkpoints :]]:
                shutil.rmtree(stale, ignore_errors=True)
        acc.wait_for_everyone()

    def check_recipe(self, ckpt: Path, saved: dict) -> None:
        """Refuse to resume a checkpoint written under another recipe (unless forced), naming the fields."""
        old = saved.get("recipe")
        if old is None:  # a checkpoint from before recipes were stored
            return
        new = self.recipe
        changed = sorted(k for k in old.keys() | new.keys() if k not in RESUMABLE and old.get(k) != new.get(k))
        if not changed:
            return
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        if not self.cfg.force_resume:
            raise RecipeChanged(
                f"cannot resume from {ckpt}: the recipe changed ({diff}); rerun with the original recipe, "
                f"or pass --train.force_resume to continue anyway",
                diff,
            )
        self.say(f"resuming from {ckpt} with a changed recipe (forced): {diff}")

    def say(self, message: str) -> None:
        """A one-line notice on stderr (main process), where it stays apart from a job's output."""
        if self.accelerator.is_main_process:
            print(message, file=sys.stderr, flush=True)

    def maybe_resume(self) -> int:
        """Load the newest readable checkpoint when resuming; returns the step it holds (0 = fresh).

        An unreadable checkpoint (truncated or corrupt files) is reported and the previous one used; every
        checkpoint is checked against the recipe before it is loaded.
        """
        if not self.cfg.resume:
            return 0
        found = checkpoints(self.out)
        if not found:
            self.say(f"no checkpoint under {self.out / CHECKPOINTS}; starting fresh")
            return 0
        first_error = None
        for i, ckpt in enumerate(found):
            try:
                state = json.loads((ckpt / STATE_FILE).read_text())
                self.check_recipe(ckpt, state)
                self.accelerator.load_state(str(ckpt))
            except MiniMoEError:
                raise
            except Exception as err:  # noqa: BLE001  (torch, safetensors and json each raise their own)
                first_error = first_error or err
                fallback = f"falling back to {found[i + 1].name}" if i + 1 < len(found) else "no older checkpoint left"
                self.say(f"checkpoint {ckpt} is unreadable ({type(err).__name__}: {err}); {fallback}")
                continue
            self.step, self.best = state["step"], state["best"]
            self.last, self.final = state.get("last", {}), state.get("final")
            device = self.accelerator.device
            self.window = [
                (s, {k: torch.tensor(v, device=device) for k, v in m.items()}) for s, m in state.get("window", [])
            ]
            self.say(f"resumed from step {self.step} ({ckpt})")
            return self.step
        raise MiniMoEError(
            f"cannot resume from {found[0]}: no checkpoint fits this run's model/recipe ({first_error})"
        ) from None

    def start_logs(self) -> None:
        """Start writing, from the step the run starts at: recipe.yaml, metrics.jsonl cut back to that step
        and TensorBoard, which hides the events an interrupted attempt logged after it (purge_step)."""
        if self.accelerator.is_main_process:
            if self.recipe_text is not None:
                atomic_write_text(self.out / "recipe.yaml", self.recipe_text)
            if self.metrics_file.exists():
                atomic_write_text(self.metrics_file, "".join(_records_until(self.metrics_file, self.step)))
        purge = {"tensorboard": {"purge_step": self.step + 1}}
        self.accelerator.init_trackers("run", config=self.recipe, init_kwargs=purge)

    # ---- logging -----------------------------------------------------------------------------
    def log(self, metrics: dict) -> None:
        """Metrics to TensorBoard and to metrics.jsonl (main process only)."""
        self.accelerator.log(metrics, step=self.step)
        if self.accelerator.is_main_process:
            with self.metrics_file.open("a") as f:
                f.write(json.dumps({"step": self.step, **metrics}) + "\n")

    def run_eval(self) -> dict:
        """Evaluate, log, and export the model when the tracked metric improves."""
        if self.evaluate is None:
            return {}
        self.model.eval()
        metrics = self.evaluate(self.model)
        self.model.train()
        self.log({f"eval/{k}": v for k, v in metrics.items()})
        value = metrics.get(self.best_metric) if self.best_metric else None
        if value is not None and math.isfinite(value):  # a NaN (e.g. constant predictions) is never best
            if self.best is None or not math.isfinite(self.best) or value > self.best:
                self.best = value
                if self.on_best is not None and self.accelerator.is_main_process:
                    self.on_best(self.accelerator.unwrap_model(self.model), metrics)
                self.accelerator.wait_for_everyone()
        return metrics

    # ---- the loop ----------------------------------------------------------------------------
    def loop(self, bar: tqdm) -> None:
        """Optimizer steps until total_steps, resuming mid-epoch where a checkpoint left off."""
        acc, cfg = self.accelerator, self.cfg
        eval_every = cfg.eval_every or (self.steps_per_epoch if self.evaluate else 0)
        self.model.train()
        while self.step < self.total_steps:
            epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
            self.loader.set_epoch(epoch)
            skip = done_in_epoch * cfg.grad_accum
            batches = acc.skip_first_batches(self.loader, skip) if skip else self.loader
            for batch in batches:
                with acc.accumulate(self.model):
                    out = self.model(**batch)
                    acc.backward(out["loss"])
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                scalars = {k: v.detach() for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}
                self.window.append((self.step + 1, scalars))  # kept on the device: no host sync in the step
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    rows = self.read_window()
                    self.last = {f"train/{k}": sum(r[k] for r in rows) / len(rows) for k in rows[0]}
                    self.last["train/lr"] = self.scheduler.get_last_lr()[0]
                    self.window = []
                    self.log(self.last)
                    bar.set_postfix(loss=f"{self.last['train/loss']:.4f}")
                if eval_every and self.step % eval_every == 0 and self.step != self.total_steps:
                    self.run_eval()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step != self.total_steps:
                    self.save_checkpoint()
                if self.stop_requested():
                    self.save_checkpoint()
                    raise self.stopped()
                if self.step >= self.total_steps:
                    break

    # ---- stopping on a signal -----------------------------------------------------------------
    def stop_requested(self) -> bool:
        """Whether any process got a stop signal (all processes agree, so they checkpoint together)."""
        asked = self.run.stop_signal is not None
        if self.accelerator.num_processes == 1:
            return asked
        flag = torch.tensor([float(asked)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def stopped(self) -> Stopped:
        """The stop, once the checkpoint that resumes it is saved."""
        by = self.run.stop_signal or "a signal to another process"
        return Stopped(f"stopped by {by} at step {self.step}: checkpoint saved in {latest_checkpoint(self.out)}")

    def train(self) -> TrainResult:
        """Resume if asked, run the loop under a progress bar, evaluate and checkpoint at the end.

        Nothing is written before the resume is settled, so a refused one changes no file. A stop signal
        (SIGTERM, sent by schedulers before a kill; see `run_directory`) checkpoints and raises `Stopped`,
        also when it comes during the final evaluation or save. A run resumed from its final checkpoint
        only returns what that checkpoint recorded.
        """
        acc, start = self.accelerator, time.time()
        resumed = self.maybe_resume()
        self.start_logs()
        try:
            self.run.training = True  # a stop signal now waits for the next step's checkpoint
            with tqdm(
                total=self.total_steps,
                initial=self.step,
                desc="train",
                unit="step",
                disable=not acc.is_local_main_process,
                dynamic_ncols=True,
            ) as bar:
                self.loop(bar)
            if self.final is None:
                self.final = {f"eval/{k}": v for k, v in self.run_eval().items()}
                self.save_checkpoint()
            if self.stop_requested():
                raise self.stopped()
        finally:
            self.run.training = False
            for tracker in acc.trackers:  # flush TensorBoard; the process group stays up for the job
                tracker.finish()
        return TrainResult(self.step, time.time() - start, {**self.last, **self.final}, self.best, resumed)


def _records_until(metrics_file: Path, step: int) -> list[str]:
    """The lines of metrics.jsonl logged at or before `step` (a line cut off by a kill is dropped)."""
    kept = []
    for line in metrics_file.read_text().splitlines(keepends=True):
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    return kept


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested config flattened for TensorBoard's hparams (scalars and strings only)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
