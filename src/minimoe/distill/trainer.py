"""The one training loop, on accelerate: DDP, mixed precision, accumulation, atomic checkpoints, resume.

Both jobs (task-agnostic distillation and fine-tuning) hand it an `nn.Module` whose forward takes a
batch and returns a dict with "loss" (and any scalars to log). Frozen teachers live outside that module,
so they are never wrapped for distributed training nor saved in checkpoints.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from minimoe.errors import MiniMoEError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainConfig:
    """The optimisation loop shared by distillation and fine-tuning (the `train:` section of a recipe)."""

    output_dir: str = "runs/minimoe"  # run directory: recipe, metrics, TensorBoard, checkpoints, the model
    seed: int = 42  # seeds weights, data order, dropout and router noise
    batch_size: int = 32  # sequences per process and step (before accumulation)
    grad_accum: int = 1  # micro-batches accumulated into one optimizer step
    lr: float = 3e-4  # peak AdamW learning rate (linear warmup, then linear decay to 0)
    weight_decay: float = 0.01  # AdamW weight decay; never applied to biases and LayerNorm weights
    warmup_ratio: float = 0.01  # fraction of the steps spent warming up
    epochs: float = 1.0  # passes over the data (fractions allowed)
    max_steps: int = 0  # optimizer steps; > 0 overrides epochs
    grad_clip: float = 5.0  # max gradient norm; 0 = no clipping
    mixed_precision: str = "no"  # no | bf16 | fp16
    log_every: int = 10  # optimizer steps between logged training metrics
    save_every: int = 100  # optimizer steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    eval_every: int = 0  # optimizer steps between evaluations; 0 = once per epoch (fine-tuning) / never (distillation)
    resume: bool = False  # continue from the newest complete checkpoint in output_dir
    threads: int = 0  # torch intra-op threads per process; 0 = torch's default

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise MiniMoEError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_every", "eval_every", "threads", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise MiniMoEError(f"train.{name} must not be negative, got {getattr(self, name)}")
        if not self.lr > 0:
            raise MiniMoEError(f"train.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise MiniMoEError(f"train.warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if not self.epochs > 0 and not self.max_steps:
            raise MiniMoEError(f"train.epochs must be positive (or set train.max_steps), got {self.epochs}")
        if self.mixed_precision not in {"no", "bf16", "fp16"}:
            raise MiniMoEError(f"train.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")


@dataclass
class TrainResult:
    """What a finished run reports."""

    steps: int
    seconds: float
    last_metrics: dict
    best_metric: float | None
    resumed_from: int


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices, none on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_accelerator(cfg: TrainConfig, find_unused_parameters: bool = False) -> Accelerator:
    """An Accelerator for this run: TensorBoard under output_dir, seedable (resumable) data order.

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
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (only fully written ones carry their state file)."""
    root = Path(output_dir) / CHECKPOINTS
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


class Trainer:
    """Runs `objective` over `data` for the configured steps; evaluation and best-model export optional.

    `evaluate(model) -> dict` is called every `eval_every` steps (and at the end); `on_best(model,
    metrics)` runs on the main process whenever `metrics[best_metric]` improves.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        objective: nn.Module,
        data: Dataset,
        collate: Callable,
        evaluate: Callable[[nn.Module], dict] | None = None,
        best_metric: str | None = None,
        on_best: Callable[[nn.Module, dict], None] | None = None,
        accelerator: Accelerator | None = None,
        run_config: dict | None = None,
    ):
        self.cfg = cfg
        self.accelerator = accelerator or make_accelerator(cfg)
        set_seed(cfg.seed)
        self.out = Path(cfg.output_dir)
        self.evaluate, self.best_metric, self.on_best = evaluate, best_metric, on_best
        # The loader's own generator keeps its per-epoch seed draw off the global RNG (dropout, router
        # noise), so a resumed run draws the same random numbers as an uninterrupted one.
        loader = DataLoader(
            data,
            batch_size=cfg.batch_size,
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        optimizer = torch.optim.AdamW(param_groups(objective, cfg.weight_decay), lr=cfg.lr)
        self.model, self.optimizer, self.loader = self.accelerator.prepare(objective, optimizer, loader)
        per_epoch = max(1, math.ceil(len(self.loader) / cfg.grad_accum))
        self.total_steps = cfg.max_steps or max(1, math.ceil(per_epoch * cfg.epochs))
        self.steps_per_epoch = per_epoch
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * self.total_steps), self.total_steps
        )
        self.scheduler = self.accelerator.prepare(scheduler)
        self.step, self.best = 0, None
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        self.accelerator.init_trackers("run", config=_flat(run_config or {}))
        self.metrics_file = self.out / "metrics.jsonl"

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write step-N atomically (temp dir, then rename) and prune old ones; a kill never corrupts."""
        acc = self.accelerator
        root = self.out / CHECKPOINTS
        final, tmp = root / f"step-{self.step}", root / f".tmp-step-{self.step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps({"step": self.step, "best": self.best}))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            done = sorted((p for p in root.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))
            for old in done[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def maybe_resume(self) -> int:
        """Load the newest complete checkpoint when resuming; returns the step it holds (0 = fresh)."""
        if not self.cfg.resume:
            return 0
        ckpt = latest_checkpoint(self.out)
        if ckpt is None:
            self.accelerator.print(f"no checkpoint under {self.out / CHECKPOINTS}; starting fresh")
            return 0
        try:
            self.accelerator.load_state(str(ckpt))
        except Exception as err:  # a checkpoint from another recipe: say so instead of a state-dict dump
            raise MiniMoEError(f"cannot resume from {ckpt}: it does not fit this run's model/recipe ({err})") from None
        state = json.loads((ckpt / STATE_FILE).read_text())
        self.step, self.best = state["step"], state["best"]
        return self.step

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
        if self.best_metric and metrics.get(self.best_metric) is not None:
            if self.best is None or metrics[self.best_metric] > self.best:
                self.best = metrics[self.best_metric]
                if self.on_best is not None and self.accelerator.is_main_process:
                    self.on_best(self.accelerator.unwrap_model(self.model), metrics)
                self.accelerator.wait_for_everyone()
        return metrics

    # ---- the loop ----------------------------------------------------------------------------
    def loop(self, bar: tqdm) -> dict:
        """Optimizer steps until total_steps, resuming mid-epoch where a checkpoint left off.

        Returns the last logged training metrics.
        """
        acc, cfg = self.accelerator, self.cfg
        eval_every = cfg.eval_every or (self.steps_per_epoch if self.evaluate else 0)
        last, window = {}, []
        self.model.train()
        while self.step < self.total_steps:
            epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
            self.loader.set_epoch(epoch)
            skip = done_in_epoch * cfg.grad_accum
            batches = acc.skip_first_batches(self.loader, skip) if skip else self.loader
            for batch in batches:
                with acc.accumulate(self.model):
                    out = self.model(**batch)
                    loss = out["loss"]
                    if not torch.isfinite(loss.detach()):
                        raise MiniMoEError(
                            f"loss became {loss.item()} at step {self.step + 1}: lower train.lr, check the "
                            f"data, or disable fp16; resume from the last good checkpoint with --train.resume"
                        )
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                window.append({k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0})
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    last = {f"train/{k}": sum(w[k] for w in window) / len(window) for k in window[0]}
                    last["train/lr"] = self.scheduler.get_last_lr()[0]
                    window = []
                    self.log(last)
                    bar.set_postfix(loss=f"{last['train/loss']:.4f}")
                if eval_every and self.step % eval_every == 0 and self.step != self.total_steps:
                    self.run_eval()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step != self.total_steps:
                    self.save_checkpoint()
                if self.step >= self.total_steps:
                    break
        return last

    def train(self) -> TrainResult:
        """Resume if asked, run the loop under a progress bar, evaluate and checkpoint at the end."""
        acc, start = self.accelerator, time.time()
        resumed = self.maybe_resume()
        with tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not acc.is_local_main_process,
            dynamic_ncols=True,
        ) as bar:
            last = self.loop(bar)
        final = {f"eval/{k}": v for k, v in self.run_eval().items()}
        self.save_checkpoint()
        acc.end_training()
        return TrainResult(self.step, time.time() - start, {**last, **final}, self.best, resumed)


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested config flattened for TensorBoard's hparams (scalars and strings only)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
