"""Fine-tuning a student (or a teacher) on a task, with optional logit KD: the run behind `minimoe finetune` and
every fine-tuning stage of `minimoe study`.

KD teacher logits are computed once per training example and cached on disk (training/teacher_cache.py),
so the teacher never runs inside the training loop and several students can share one pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from accelerate.utils import set_seed
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from minimoe.assets.resolve import load_pretrained, resolve_model, resolve_task
from minimoe.card import CardInfo, measure_cost, read_card_meta
from minimoe.data.encode import TaskDataset, encode_task, pad_collator
from minimoe.data.tasks import TaskSpec, subsample
from minimoe.errors import MiniMoEError
from minimoe.evaluation import eval_splits, make_evaluator, read_split
from minimoe.files import atomic_write_text
from minimoe.lengths import fit_max_length, token_limit
from minimoe.recipe import dump_recipe
from minimoe.report import plot_curves
from minimoe.saving import save_model
from minimoe.training.objectives import TaskObjective
from minimoe.training.run_dir import RunDirectory, run_directory
from minimoe.training.teacher_cache import check_same_tokenizer, teacher_logits
from minimoe.training.trainer import TrainConfig, Trainer, make_accelerator


@dataclass
class FinetuneConfig:
    """Fine-tuning a student or a teacher on a task, with optional logit KD (`minimoe finetune`)."""

    model: str = ""
    """a MiniMoE student directory, or any HF encoder (a teacher's own score)"""
    task: str = ""
    """a GLUE or packaged task (snli, movie-sentiment); with --train_file a name (default: the file's)"""
    data_dir: str = ""
    """GLUE-layout directory; empty = the packaged task's cache; hub = the datasets library"""
    train_file: str = ""
    """your own CSV/TSV/JSONL training file (with dev_file, text_columns, label_column, labels)"""
    dev_file: str = ""
    """your own dev file; empty = evaluate on the training file"""
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])
    """the 1 or 2 text columns of your files"""
    label_column: str = "label"
    """the label column of your files"""
    labels: list[str] = field(default_factory=list)
    """label values of your files, in id order; empty = read them"""
    regression: bool = False
    """your files' labels are scores to predict (e.g. 1-5 ratings), not classes"""
    teacher: str = ""
    """a fine-tuned teacher directory for logit KD; empty = no KD"""
    kd_alpha: float = 0.5
    """weight of the KD loss (the rest is the task loss)"""
    kd_temperature: float = 1.0
    """softmax temperature of the KD loss"""
    max_length: int = 128
    """tokens per example"""
    max_train_examples: int = 0
    """a fixed random subset of the training set; 0 = all"""
    max_eval_examples: int = 0
    """a fixed random subset of the dev set; 0 = all"""
    metric_for_best: str = ""
    """dev metric that picks the best checkpoint; empty = the task's main score"""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            output_dir="runs/finetune", lr=5e-5, warmup_ratio=0.1, epochs=3.0, grad_clip=1.0, save_every=0
        )
    )

    def __post_init__(self) -> None:
        if not 0 <= self.kd_alpha <= 1:
            raise MiniMoEError(f"kd_alpha must be between 0 and 1, got {self.kd_alpha}")
        if not self.kd_temperature > 0:
            raise MiniMoEError(f"kd_temperature must be positive, got {self.kd_temperature}")
        if self.max_length < 8:
            raise MiniMoEError(f"max_length must be at least 8, got {self.max_length}")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) < 0:
                raise MiniMoEError(f"{name} must not be negative, got {getattr(self, name)}")


def load_splits(cfg: FinetuneConfig) -> tuple[TaskSpec, list, dict[str, list]]:
    """The task spec, its train examples and each evaluation split's (MNLI: matched and mismatched)."""
    files = {"train": cfg.train_file, "dev": cfg.dev_file or cfg.train_file} if cfg.train_file else {}
    spec, where = resolve_task(
        cfg.task, cfg.data_dir, files, cfg.text_columns, cfg.label_column, cfg.labels, cfg.regression
    )
    train = subsample(read_split(spec, where, "train"), cfg.max_train_examples)
    dev = {split: subsample(read_split(spec, where, split), cfg.max_eval_examples) for split in eval_splits(spec)}
    return spec, train, dev


def load_task_model(path: str, spec: TaskSpec) -> nn.Module:
    """Any HF encoder (MiniMoE included) with a matching classification head for the task, or a fresh one
    (none yet, or one trained for another label count).
    """
    return load_pretrained(
        AutoModelForSequenceClassification,
        path,
        ignore_mismatched_sizes=True,
        num_labels=spec.num_labels,
        id2label=dict(enumerate(spec.names)),
        label2id={label: i for i, label in enumerate(spec.names)},
    )


def finetune_card(cfg: FinetuneConfig, model_path: str, spec: TaskSpec) -> CardInfo:
    """Provenance for the fine-tuned model's card: a student's teacher and data come from its own card."""
    source = read_card_meta(model_path)
    kd = f", with logit KD from {cfg.teacher}" if cfg.teacher else ""
    return CardInfo(
        teacher=source.get("base_model") or cfg.model,
        datasets=[*source.get("datasets", []), spec.name],
        task=spec.name,
        recipe=dump_recipe(cfg),
        how=f"fine-tuned on {spec.name} from {cfg.model}{kd}",
    )


def run_finetuning(cfg: FinetuneConfig) -> dict:
    """Fine-tune, keep the best dev checkpoint under output_dir/best, write results.json; return it."""
    if not cfg.model:
        raise MiniMoEError("finetune needs --model (a student directory, a packaged teacher name, or a hub name)")
    accelerator = make_accelerator(cfg.train)
    with run_directory(cfg.train, accelerator, outputs=("best", "results.json")) as run:
        return fine_tune(cfg, run)


def fine_tune(cfg: FinetuneConfig, run: RunDirectory) -> dict:
    """The job in its run directory: load the task, the model (and KD logits), train, write results.json."""
    out, accelerator = run.path, run.accelerator
    spec, train, dev = load_splits(cfg)
    model_path = resolve_model(cfg.model)
    tokenizer = load_pretrained(AutoTokenizer, model_path)
    configs = [load_pretrained(AutoConfig, path) for path in (model_path, cfg.teacher) if path]  # KD reads them too
    cfg = replace(cfg, max_length=fit_max_length(cfg, token_limit(*configs, tokenizer=tokenizer), cfg.model))
    collate = pad_collator(tokenizer)
    train_data = encode_task(train, tokenizer, cfg.max_length)
    dev_data = {split: encode_task(examples, tokenizer, cfg.max_length) for split, examples in dev.items()}

    if cfg.teacher:
        check_same_tokenizer(tokenizer, load_pretrained(AutoTokenizer, cfg.teacher), cfg.teacher)
        names = None if spec.labels is None else spec.names  # what a teacher fine-tuned here saved as id2label
        logits = teacher_logits(cfg.teacher, names, train_data, collate, cfg.train.batch_size * 2, accelerator)
        if logits.shape != (len(train_data), spec.num_labels):
            raise MiniMoEError(
                f"KD teacher {cfg.teacher} gives {logits.shape[1]} outputs; task {spec.name} has {spec.num_labels}"
            )
        train_data = TaskDataset([f | {"teacher_logits": lg.tolist()} for f, lg in zip(train_data.features, logits)])

    set_seed(cfg.train.seed)  # a new classification head starts from the seed, the same in any process
    objective = TaskObjective(load_task_model(model_path, spec), spec.labels is None, cfg.kd_alpha, cfg.kd_temperature)
    evaluate = make_evaluator(accelerator, spec, dev_data, collate, cfg.train.batch_size * 2)
    best_metric = cfg.metric_for_best or "score"
    best_file = out / "best" / "dev_metrics.json"

    card = finetune_card(cfg, model_path, spec)
    if accelerator.is_main_process:  # the cost of every best checkpoint, measured once on the untrained model
        card.cost = measure_cost(objective.model)

    def on_best(objective: TaskObjective, metrics: dict) -> None:
        with run.writing(out / "best"):
            save_model(objective.model, tokenizer, out / "best", replace(card, scores=metrics))
            atomic_write_text(best_file, json.dumps(metrics))

    trainer = Trainer(
        run, objective, train_data, collate, evaluate=evaluate, best_metric=best_metric, on_best=on_best, config=cfg
    )
    result = trainer.train()
    final = {k.removeprefix("eval/"): round(v, 4) for k, v in result.last_metrics.items() if k.startswith("eval/")}
    summary = {
        "task": spec.name,
        "model": cfg.model,
        "kd_teacher": cfg.teacher or None,
        "train_examples": len(train_data),
        "dev_examples": len(dev_data["dev"]),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "best": {k: round(v, 4) for k, v in json.loads(best_file.read_text()).items()}
        if best_file.is_file()
        else final,
        "final": final,
        "best_dir": str(out / "best"),
    }
    if accelerator.is_main_process:
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
        plot_curves(out / "metrics.jsonl", out / "curves.png", ("train/loss", "train/balance", "eval/score"))
    return summary
