"""Teacher x student-size x {dense, MiniMoE} x seed grids: distil, fine-tune, tabulate, plot.

`minimoe study` (the paper's capacity-gap experiment at CPU scale), and the engine of `minimoe demo`
(one teacher, one size, one seed). Every stage writes its result atomically and is skipped when
the grid is rerun, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import get_args

import torch
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification

from minimoe.assets.resolve import load_pretrained
from minimoe.cache import cache_dir
from minimoe.errors import RERUN_HINT, MiniMoEError, RecipeChanged, Stopped
from minimoe.files import atomic_write_text
from minimoe.flops import count_flops, count_parameters
from minimoe.jobs import distill, finetune
from minimoe.latency import measure_latencies
from minimoe.modeling.moefy import ExpertInit
from minimoe.recipe import dump_recipe
from minimoe.report import markdown_table, plot_curve_panels, plot_score_vs_flops, read_metrics
from minimoe.training.objectives import RelationSource
from minimoe.training.trainer import Precision, TrainConfig

GRID_AXES = ("student_lr", "student_batch_size", "student_epochs")  # the students' fine-tuning grid
TEACHER_BATCH = 32  # sequences a teacher fine-tuning step, over all processes


@dataclass
class StudyConfig:
    """The grid and the budget of every stage."""

    output_dir: str = "runs/study"
    """where every stage writes its run directory, and the table and plot"""
    teachers: list[str] = field(default_factory=lambda: ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    """teachers compared"""
    sizes: list[str] = field(default_factory=lambda: ["2L-128H", "4L-192H"])
    """student sizes, LAYERSL-HIDDENH"""
    experts: list[int] = field(default_factory=lambda: [1, 4])
    """experts per student; 1 = dense (MiniLM-style)"""
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    """seeds of every student (distillation and fine-tuning)"""
    tasks: list[str] = field(default_factory=lambda: ["movie-sentiment", "snli"])
    """fine-tuning tasks"""
    data_root: str = ""
    """GLUE-style tasks live in DATA_ROOT/TASK; hub = GLUE through the `datasets` library; empty = packaged tasks"""
    corpus: list[str] = field(default_factory=lambda: ["wiki-summaries"])
    """distillation corpus (as distill --corpus)"""
    max_length: int = 64
    """tokens per sequence, distillation and fine-tuning"""
    distill_steps: int = 300
    """optimizer steps of each distillation; 0 = distill_epochs passes over the corpus"""
    distill_epochs: float = 1.0
    """passes over the corpus when distill_steps is 0"""
    distill_sequences: int = 9600
    """corpus segment pairs (= distill_steps x 32: one pass, teacher Q/K/V cached once)"""
    distill_batch_size: int = 32
    """sequences a distillation step over all processes (= per-process batch x distill_grad_accum x processes)"""
    distill_grad_accum: int = 1
    """micro-batches each process accumulates into one distillation step"""
    distill_lr: float = 0.0005
    """distillation learning rate"""
    distill_warmup: float = 0.05
    """fraction of the distillation steps spent warming up"""
    distill_save_every: int = 100
    """distillation steps between checkpoints"""
    cache_teacher: bool = True
    """run each teacher once over the corpus and reuse its Q/K/V (float16: ~4.6 KB a token at 768 wide)"""
    mixed_precision: Precision = "no"
    """every stage's precision: no (float32), or bf16 / fp16 autocast"""
    relation_heads: int = 32
    """MiniLMv2 relation heads (the largest divisor of both widths not above this)"""
    train_examples: int = 6000
    """training examples per task, the same subset for every model; 0 = all"""
    eval_examples: int = 2000
    """dev examples per task; 0 = all"""
    student_epochs: list[float] = field(default_factory=lambda: [3.0])
    """fine-tuning epochs of students (an axis of the fine-tuning grid)"""
    student_lr: list[float] = field(default_factory=lambda: [0.0002])
    """fine-tuning learning rates of students (an axis of the fine-tuning grid)"""
    student_batch_size: list[int] = field(default_factory=lambda: [32])
    """fine-tuning batch sizes of students over all processes: every lr x batch x epochs point runs, the best dev
    score is kept"""
    teacher_epochs: float = 1.0
    """fine-tuning epochs of teachers"""
    teacher_lr: float = 5e-05
    """fine-tuning learning rate of teachers"""
    kd_alpha: float = 0.0
    """> 0: fine-tune students with logit KD from the fine-tuned teacher"""
    measure_latency: bool = True
    """time every model at batch 32 x 128 for the table (once the grid is done, the models taking turns)"""
    router_noise: float = 0.1
    """MiniMoE students' router noise in training (the paper's eps)"""
    balance_coef: float = 0.01
    """weight of MiniMoE students' load-balance loss"""
    expert_init: ExpertInit = "moefy"
    """how MiniMoE students' experts start: moefy (the paper) | independent"""
    relation_source: RelationSource = "head"
    """head (the paper's extra Q/K/V head) | last_layer (the student's own Q/K/V)"""
    variants: list[str] = field(default_factory=list)
    """ablations run beside the base grid: NAME:KNOB=VALUE[,KNOB=VALUE] over the four knobs above"""

    def __post_init__(self) -> None:
        for name in GRID_AXES:  # a single value (as Python callers pass it) is a one-point axis
            if not isinstance(getattr(self, name), (list, tuple)):
                setattr(self, name, [getattr(self, name)])


def clock(seconds: float) -> str:
    """1h02m, 5m12s or 40s."""
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def kind_name(experts: int) -> str:
    """dense or MiniMoE E=4."""
    return "dense" if experts == 1 else f"MiniMoE E={experts}"


def parse_size(size: str) -> tuple[int, int]:
    """ "4L-192H" -> (4, 192)."""
    try:
        layers, hidden = size.upper().split("-")
        return int(layers.rstrip("L")), int(hidden.rstrip("H"))
    except ValueError:
        raise MiniMoEError(f"student size {size!r} must look like 4L-192H") from None


def short(teacher: str) -> str:
    """A directory-safe teacher name."""
    return Path(teacher).name or teacher.replace("/", "_")


def relation_kl_curve(distill_dir: Path) -> list[tuple[int, float]]:
    """(step, relation KL) at every logged distillation step."""
    records = read_metrics(distill_dir / "metrics.jsonl")
    return [(m["step"], m["train/relation_kl"]) for m in records if "train/relation_kl" in m]


def final_relation_kl(distill_dir: Path) -> float:
    """The relation KL at the last logged distillation step: how closely the student fits the teacher."""
    curve = relation_kl_curve(distill_dir)
    return curve[-1][1] if curve else float("nan")


KL_MARKS, KL_WINDOW = 6, 0.4  # relation KL is tabulated at 6 evenly spaced steps, each over 40% of the interval


def kl_marks(curves: list[list[tuple[int, float]]], steps: int) -> tuple[list[int], float]:
    """The steps to tabulate relation KL at (KL_MARKS evenly spaced ones, fewer when fewer steps were logged)
    and the window before each to average over: KL_WINDOW of the interval, but at least the logging interval,
    so every window holds a logged value."""
    logged = sorted({s for curve in curves for s, _ in curve})
    spacing = steps / max(1, min(KL_MARKS, len(logged)))
    interval = min((b - a for a, b in zip(logged, logged[1:])), default=steps)
    return [round(k * spacing) for k in range(1, round(steps / spacing) + 1)], max(KL_WINDOW * spacing, interval)


def kl_at_marks(curves: list[list[tuple[int, float]]], steps: int) -> dict[int, float]:
    """Relation KL at the `kl_marks` steps, mean over seeds. Each value is the mean of the logged ones in the
    window before its mark, so one batch's noise decides no comparison."""
    marks, window = kl_marks(curves, steps)
    out = {}
    for mark in marks:
        windows = [[v for s, v in curve if mark - window < s <= mark] for curve in curves]
        means = [statistics.mean(w) for w in windows if w]
        out[mark] = statistics.mean(means) if means else float("nan")
    return out


def final_train_loss(run_dir: Path, fraction: float = 0.1) -> float:
    """Mean fine-tuning task loss over the last 10% of logged steps: how closely the model fits its training set
    (a model that scores lower with a higher loss underfits; with a lower loss, it overfits)."""
    losses = [m["train/task_loss"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/task_loss" in m]
    return statistics.mean(losses[-max(1, int(len(losses) * fraction)) :]) if losses else float("nan")


def expert_usage(distill_dir: Path) -> dict:
    """The student's mean router top probability and forced-expert change over layers (its inspect.json)."""
    path = distill_dir / "inspect.json"
    if not path.is_file():
        return {}
    layers = json.loads(path.read_text())["layers"]
    return {
        "router top p": statistics.mean(x["top_prob"] for x in layers),
        "forced change": statistics.mean(statistics.mean(x["forced_change"]) for x in layers),
    }


# Ablation knobs: StudyConfig field -> run-directory tag. MOE_KNOBS leave a dense student unchanged, so
# a dense student of a variant that only turns them is the base one (run once, paired with every variant).
KNOBS = {"router_noise": "noise", "balance_coef": "bal", "expert_init": "init", "relation_source": "rel"}
MOE_KNOBS = ("router_noise", "balance_coef", "expert_init")
CHOICES = {"expert_init": get_args(ExpertInit), "relation_source": get_args(RelationSource)}


def student_kind(run: dict) -> tuple:
    """What makes two grid runs the same students: a dense student of a variant that only turns MoE knobs is
    the base one (same tag), run once and shown once."""
    return run["teacher"], run["size"], run["experts"], run["tag"]


def parse_variants(cfg: StudyConfig) -> list[tuple[str, dict]]:
    """(name, knob settings) of the base grid ("") and of every `NAME:KNOB=VALUE[,KNOB=VALUE]` variant."""
    base = {knob: getattr(cfg, knob) for knob in KNOBS}
    variants = [("", base)]
    for spec in cfg.variants:
        name, _, assignments = spec.partition(":")
        settings = dict(base)
        for assignment in filter(None, assignments.split(",")):
            knob, _, value = assignment.partition("=")
            knob = knob.strip()
            if knob not in KNOBS or not value:
                raise MiniMoEError(f"variant {spec!r}: use NAME:KNOB=VALUE with KNOB one of {', '.join(KNOBS)}")
            try:
                settings[knob] = type(base[knob])(value.strip())
            except ValueError:
                raise MiniMoEError(f"variant {spec!r}: {knob} must be a {type(base[knob]).__name__}") from None
        if not name.strip() or settings == base:
            raise MiniMoEError(f"variant {spec!r} needs a name and at least one knob that differs from the base grid")
        variants.append((name.strip(), settings))
    for name, settings in variants:
        for knob, allowed in CHOICES.items():
            if settings[knob] not in allowed:
                raise MiniMoEError(f"{knob} of {name or 'the base grid'} must be one of {', '.join(allowed)}")
    return variants


def run_tag(settings: dict, experts: int) -> str:
    """Run-directory tag of the knobs that differ from the paper's and matter to this student ('' for the paper's)."""
    paper = StudyConfig()
    return "".join(
        f"-{tag}{settings[knob]}"
        for knob, tag in KNOBS.items()
        if settings[knob] != getattr(paper, knob) and (experts > 1 or knob not in MOE_KNOBS)
    )


def seed_differences(a: dict, b: dict, tasks: list[str]) -> dict:
    """`a` - `b` over the seeds both ran: mean and std per task, on the average, of the final relation KL and of
    the fine-tuning train loss; the per-seed average differences; the seed count."""
    seeds = [s for s in a["per_seed"] if s in b["per_seed"]]
    row = {}
    for key in [*tasks, "average", "distill KL", "train loss"]:
        diffs = [a["per_seed"][s][key] - b["per_seed"][s][key] for s in seeds]
        row[f"{key} diff"] = statistics.mean(diffs)
        row[f"{key} diff sd"] = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    row["average diffs"] = " ".join(f"{a['per_seed'][s]['average'] - b['per_seed'][s]['average']:+.2f}" for s in seeds)
    row["seeds"] = len(seeds)
    return row


def paired_differences(runs: list[dict], tasks: list[str]) -> list[dict]:
    """MiniMoE - dense per seed, for every MiniMoE run set with a dense one of the same teacher, variant and size.

    Mean and std over the seeds both have, per task and on the average (and the final relation KL).
    """
    rows = []
    for moe in (r for r in runs if r["experts"] > 1):
        dense = next(
            (r for r in runs if r["experts"] == 1 and all(r[k] == moe[k] for k in ("teacher", "variant", "size"))), None
        )
        if dense is None:
            continue
        row = {"teacher": moe["teacher"], "variant": moe["variant"] or "base", "size": moe["size"]}
        row["pair"] = f"E={moe['experts']} - dense"
        rows.append(row | seed_differences(moe, dense, tasks))
    return rows


def ablation_differences(runs: list[dict], tasks: list[str]) -> list[dict]:
    """Each variant - the base student of the same teacher, size and experts, per seed: what turning a knob
    does to that student (a dense student the variant leaves unchanged is the base one, so it has no row)."""
    rows, same = [], ("teacher", "size", "experts")
    for variant in (r for r in runs if r["variant"]):
        base = next((r for r in runs if not r["variant"] and all(r[k] == variant[k] for k in same)), None)
        if base is None or student_kind(base) == student_kind(variant):
            continue
        row = {"teacher": variant["teacher"], "variant": variant["variant"], "size": variant["size"]}
        row["student"] = "dense" if variant["experts"] == 1 else f"E={variant['experts']}"
        rows.append(row | seed_differences(variant, base, tasks))
    return rows


class Study:
    """Runs the grid of a `StudyConfig` stage by stage."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        state = PartialState(cpu=not torch.cuda.is_available())  # the processes of an `accelerate launch`, if any
        self.processes, self.is_main = state.num_processes, state.is_main_process
        self.stages = self.plan()
        self.started, self.ran = time.monotonic(), 0

    def plan(self) -> list[str]:
        """Every stage's directory, in the order run() reaches it (a dense student shared by variants once)."""
        names = []
        for teacher in self.cfg.teachers:
            names += [f"{short(teacher)}/teacher-{task}" for task in self.cfg.tasks]
            for _, settings in parse_variants(self.cfg):
                for size, experts, seed in itertools.product(self.cfg.sizes, self.cfg.experts, self.cfg.seeds):
                    base = f"{short(teacher)}/{size}-E{experts}{run_tag(settings, experts)}-s{seed}"
                    names += [f"{base}/distill"]
                    names += [point for task in self.cfg.tasks for point, _ in self.grid(f"{base}/finetune-{task}")]
        return list(dict.fromkeys(names))

    def grid(self, name: str) -> list[tuple[str, tuple[float, int, float]]]:
        """A student's fine-tuning stages on one task: (directory, (lr, batch, epochs)) for every grid point; one
        point keeps the stage's own directory (the layout before the grid)."""
        points = list(itertools.product(self.cfg.student_lr, self.cfg.student_batch_size, self.cfg.student_epochs))
        if len(points) == 1:
            return [(name, points[0])]
        return [(f"{name}/lr{lr:g}-bs{batch}-ep{epochs:g}", (lr, batch, epochs)) for lr, batch, epochs in points]

    def stage(self, name: str, what: str, results_file: str, run) -> dict:
        """Run a stage unless its results file exists, under a heading with its position and the grid's ETA.

        A stop or a half-done stage from another recipe gets a study-level message (the trainer's names trainer
        flags, which `minimoe study` does not take).
        """
        done = self.out / name / results_file
        heading = f"stage {self.stages.index(name) + 1}/{len(self.stages)}: {what}"
        if done.is_file():
            print(f"{heading} (done, kept)", flush=True)
            return json.loads(done.read_text())
        left = len(self.stages) - self.stages.index(name)
        elapsed = time.monotonic() - self.started
        eta = f", ETA {clock(elapsed / self.ran * left)}" if self.ran else ""
        print(f"\n== {heading} (elapsed {clock(elapsed)}{eta}) ==", flush=True)
        try:
            result = run()
        except Stopped as e:
            raise Stopped(e.detail, RERUN_HINT) from None
        except RecipeChanged as e:
            raise MiniMoEError(
                f"{done.parent} was started under another recipe ({e.diff}); rerun the study with its "
                f"original settings, or delete that directory to redo the stage"
            ) from None
        self.ran += 1
        return result

    def train_config(self, name: str, batch: int, grad_accum: int = 1, **kw) -> TrainConfig:
        """A stage's training settings, `batch` sequences a step over all processes; a stage stopped mid-way
        (SIGTERM, a kill) resumes from its last checkpoint, or starts again in its own directory when it had none."""
        per_process = batch // (grad_accum * self.processes)
        if per_process * grad_accum * self.processes != batch:
            raise MiniMoEError(
                f"a batch of {batch} is not {grad_accum} accumulated micro-batches on each of {self.processes} "
                f"processes: choose a batch size and distill_grad_accum whose product with the processes divides it"
            )
        out = self.out / name
        return TrainConfig(
            output_dir=str(out),
            batch_size=per_process,
            grad_accum=grad_accum,
            log_every=10,
            resume=out.exists(),
            mixed_precision=self.cfg.mixed_precision,
            **kw,
        )

    def distill(self, teacher: str, size: str, experts: int, seed: int, settings: dict) -> Path:
        """Task-agnostic distillation of one student (ablation knobs in `settings`); returns its directory."""
        layers, hidden = parse_size(size)
        name = f"{short(teacher)}/{size}-E{experts}{run_tag(settings, experts)}-s{seed}/distill"
        cfg = distill.DistillConfig(
            teacher=teacher,
            corpus=self.cfg.corpus,
            max_length=self.cfg.max_length,
            max_sequences=self.cfg.distill_sequences,
            cache_teacher=self.cfg.cache_teacher,
            relation_heads=self.cfg.relation_heads,
            relation_source=settings["relation_source"],
            student=distill.StudentConfig(
                layers=layers,
                hidden=hidden,
                experts=experts,
                router_noise=settings["router_noise"],
                router_aux_loss_coef=settings["balance_coef"],
                init=settings["expert_init"],
            ),
            train=self.train_config(
                name,
                self.cfg.distill_batch_size,
                self.cfg.distill_grad_accum,
                seed=seed,
                lr=self.cfg.distill_lr,
                warmup_ratio=self.cfg.distill_warmup,
                max_steps=self.cfg.distill_steps,
                epochs=self.cfg.distill_epochs,
                save_every=self.cfg.distill_save_every,
            ),
        )
        what = f"distil {size} {kind_name(experts)}{run_tag(settings, experts)}, seed {seed}"
        self.stage(name, what, "summary.json", lambda: distill.run(cfg))
        return self.out / name / "student"

    def finetune(self, model: str, name: str, task: str, seed: int, teacher_dir: str = "") -> tuple[dict, Path]:
        """Fine-tune one model on one task: a teacher once at its own lr/epochs; a student (optionally with KD) at
        every point of the lr x batch x epochs grid, keeping the best dev score. Returns the result and its
        directory."""
        is_teacher = name.endswith("/teacher")
        points = [(f"{name}-{task}", (self.cfg.teacher_lr, TEACHER_BATCH, self.cfg.teacher_epochs))]
        best = None
        for stage, (lr, batch, epochs) in points if is_teacher else self.grid(f"{name}-{task}"):
            cfg = finetune.FinetuneConfig(
                model=model,
                task=task,
                teacher="" if is_teacher or not self.cfg.kd_alpha else teacher_dir,
                data_dir=self.data_dir(task),
                kd_alpha=self.cfg.kd_alpha,
                max_length=self.cfg.max_length,
                max_train_examples=self.cfg.train_examples,
                max_eval_examples=self.cfg.eval_examples,
                train=self.train_config(
                    stage, batch, seed=seed, warmup_ratio=0.1, grad_clip=1.0, save_every=0, lr=lr, epochs=epochs
                ),
            )
            what = f"fine-tune {model if is_teacher else name.removesuffix('/finetune')} on {task}"
            what += f" (lr {lr:g}, batch {batch}, {epochs:g} epochs)" if stage != f"{name}-{task}" else ""
            result = self.stage(stage, what, "results.json", lambda cfg=cfg: finetune.run(cfg))
            if best is None or result["best"]["score"] > best[0]["best"]["score"]:
                best = (result, self.out / stage)
        return best

    def data_dir(self, task: str) -> str:
        """Where fine-tuning reads a task: "hub" (GLUE through `datasets`), DATA_ROOT/TASK, or "" (packaged)."""
        if self.cfg.data_root in ("", "hub"):
            return self.cfg.data_root
        return str(Path(self.cfg.data_root) / task)

    def describe(self, model_dir: str) -> dict:
        """Params, active params, FLOPs (measured and the paper's convention) and latency, measured here."""
        cache = Path(model_dir) / "cost.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        model = load_pretrained(AutoModelForSequenceClassification, model_dir)
        seq = min(128, model.config.max_position_embeddings)  # 128 as the paper; tiny test models hold fewer
        params, flops = count_parameters(model), count_flops(model, batch_size=1, seq_len=seq)
        cost = {
            "params (M)": params.total / 1e6,
            "active (M)": params.active / 1e6,
            "GFLOPs": flops.gflops,
            "paper GMACs": flops.paper_gmacs,
        }
        atomic_write_text(cache, json.dumps(cost))
        return cost

    def student_runs(self, teacher: str, size: str, experts: int, settings: dict, teacher_dir: dict) -> dict:
        """Distil and fine-tune one student kind over the seeds: scores and relation KL per seed, KL curves."""
        per_seed, curves, best = {}, [], ""
        for seed in self.cfg.seeds:
            student = self.distill(teacher, size, experts, seed, settings)
            scores, losses = {}, []
            for task in self.cfg.tasks:
                name = f"{short(teacher)}/{size}-E{experts}{run_tag(settings, experts)}-s{seed}/finetune"
                result, run_dir = self.finetune(str(student), name, task, seed, teacher_dir[task])
                scores[task], best = 100 * result["best"]["score"], result["best_dir"]
                losses.append(final_train_loss(run_dir))
            scores["average"] = statistics.mean(scores[t] for t in self.cfg.tasks)
            per_seed[seed] = scores | {"distill KL": final_relation_kl(student.parent)}
            per_seed[seed] |= {"train loss": statistics.mean(losses)} | expert_usage(student.parent)
            curves.append(relation_kl_curve(student.parent))
        return {"per_seed": per_seed, "curves": curves, "best_dir": best, "tag": run_tag(settings, experts)}

    def run(self) -> list[dict]:
        """Every stage of the grid, then the tables (mean and spread over seeds; paired differences) and plots."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            (self.out / "study.yaml").write_text(dump_recipe(self.cfg))
        rows, runs, seen, dirs = [], [], set(), []
        for teacher in self.cfg.teachers:
            teacher_scores, teacher_dir = {}, {}
            for task in self.cfg.tasks:
                result, _ = self.finetune(teacher, f"{short(teacher)}/teacher", task, seed=self.cfg.seeds[0])
                teacher_scores[task], teacher_dir[task] = [100 * result["best"]["score"]], result["best_dir"]
            rows.append(self.row(teacher, "teacher", teacher_scores, teacher_dir[self.cfg.tasks[0]]))
            dirs.append(teacher_dir[self.cfg.tasks[0]])
            for variant, settings in parse_variants(self.cfg):
                for size in self.cfg.sizes:
                    for experts in self.cfg.experts:
                        kind = kind_name(experts)
                        run = self.student_runs(teacher, size, experts, settings, teacher_dir)
                        runs.append(
                            {"teacher": short(teacher), "variant": variant, "size": size, "experts": experts}
                            | run
                            | {"label": f"{size} {kind}" + (f" [{variant}]" if variant else "")}
                        )
                        if student_kind(runs[-1]) in seen:
                            continue  # a dense student the variant leaves unchanged: already a row
                        seen.add(student_kind(runs[-1]))
                        seeds = run["per_seed"].values()
                        scores = {t: [s[t] for s in seeds] for t in self.cfg.tasks}
                        extra = {
                            k: statistics.mean(s[k] for s in seeds)
                            for k in ("distill KL", "train loss", "router top p", "forced change")
                            if all(k in s for s in seeds)
                        }
                        rows.append(self.row(teacher, runs[-1]["label"], scores, run["best_dir"]) | extra)
                        dirs.append(run["best_dir"])
        self.add_relative(rows)
        if self.is_main:  # under `accelerate launch` the other processes have nothing left to do
            if self.cfg.measure_latency:
                self.add_latency(rows, dirs)
            self.write(rows, runs)
        return rows

    def add_latency(self, rows: list[dict], dirs: list[str]) -> None:
        """'ms @32x128': every row's model timed once the grid is done, in interleaved rounds (paired, as the
        benchmarks measure), so a busy moment of the machine does not land on one model only."""
        models = [load_pretrained(AutoModelForSequenceClassification, d) for d in dirs]
        seq = min(128, *(m.config.max_position_embeddings for m in models))
        for row, ms in zip(rows, measure_latencies(models, 32, seq, repeats=7)):
            row["ms @32x128"] = ms

    def row(self, teacher: str, model: str, scores: dict[str, list[float]], model_dir: str) -> dict:
        """One table row: cost of the model, per-task mean (and std over seeds), average."""
        row = {"teacher": short(teacher), "model": model, **self.describe(model_dir)}
        for task, values in scores.items():
            row[task] = statistics.mean(values)
            row[f"{task} sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["average"] = statistics.mean(row[t] for t in scores)
        per_seed = [statistics.mean(vals) for vals in zip(*scores.values())]
        row["average sd"] = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        row["seeds"] = len(per_seed)
        return row

    def add_relative(self, rows: list[dict]) -> None:
        """'% of teacher': each student's average over its own teacher's."""
        teacher_avg = {r["teacher"]: r["average"] for r in rows if r["model"] == "teacher"}
        for r in rows:
            r["% of teacher"] = 100 * r["average"] / teacher_avg[r["teacher"]]

    def write(self, rows: list[dict], runs: list[dict]) -> None:
        """study.md (the table, the paired differences, the ablations against the base grid, relation KL during
        distillation), study.json, score_vs_flops.png and kl_curves.png."""
        paired, ablations = paired_differences(runs, self.cfg.tasks), ablation_differences(runs, self.cfg.tasks)
        columns = ["teacher", "model", "params (M)", "active (M)", "paper GMACs", "GFLOPs"]
        columns += ["ms @32x128"] if self.cfg.measure_latency else []
        columns += ["distill KL", "train loss", "router top p", "forced change"]
        spread = len(self.cfg.seeds) > 1  # std columns only when there is a spread to show
        columns += [c for t in self.cfg.tasks for c in (t, f"{t} sd")[: 1 + spread]]
        columns += ["average", "average sd"][: 1 + spread] + ["% of teacher", "seeds"]
        diff_columns = [c for k in [*self.cfg.tasks, "average"] for c in (f"{k} diff", f"{k} diff sd")]
        diff_columns += ["average diffs", "distill KL diff", "train loss diff", "seeds"]
        table = markdown_table(rows, columns)
        if paired:
            table += "\n\nPaired by seed (MiniMoE - dense, points; sd over seeds):\n\n"
            table += markdown_table(paired, ["teacher", "variant", "size", "pair", *diff_columns])
        if ablations:
            table += "\n\nAblations against the base grid (variant - base student with the same experts, paired by "
            table += "seed; points; sd over seeds):\n\n"
            table += markdown_table(ablations, ["teacher", "variant", "size", "student", *diff_columns])
        kl_rows = self.kl_rows(runs)
        if kl_rows:
            window = round(kl_marks(runs[0]["curves"], self.distill_steps(runs))[1])
            table += f"\n\nRelation KL during distillation (mean of the logged values over the {window} steps "
            table += "before each step, then over seeds):\n\n"
            table += markdown_table(
                [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in kl_rows],
                list(kl_rows[0]),
            )
        atomic_write_text(self.out / "study.md", table + "\n")
        per_seed = [{k: v for k, v in r.items() if k not in ("curves", "best_dir")} for r in runs]
        atomic_write_text(
            self.out / "study.json",
            json.dumps(
                {
                    "config": asdict(self.cfg),
                    "rows": rows,
                    "paired": paired,
                    "ablations": ablations,
                    "relation_kl": kl_rows,
                    "runs": per_seed,
                },
                indent=2,
            ),
        )
        points = [
            {
                "label": r["model"].split()[0] if r["model"] != "teacher" else "teacher",
                "gflops": r["GFLOPs"],
                "score": r["average"],
                "err": r["average sd"],
                "series": f"{r['teacher']} / "
                + ("teacher" if r["model"] == "teacher" else r["model"].split(" ", 1)[1]),
            }
            for r in rows
        ]
        bars = "; bars: std over seeds" if spread else ""
        plot_score_vs_flops(points, self.out / "score_vs_flops.png", f"average dev score vs FLOPs (seq 128{bars})")
        panels: dict[str, dict[str, list]] = {}
        for r in runs:  # one panel per teacher / variant / size; dense and MiniMoE together
            panel = f"{r['teacher']} {r['size']}" + (f" [{r['variant']}]" if r["variant"] else "")
            panels.setdefault(panel, {})[r["label"].split(" ", 1)[1].split(" [")[0]] = r["curves"]
        plot_curve_panels(panels, self.out / "kl_curves.png", "relation KL", "distillation step")
        print("\n" + table)
        written = ", ".join(
            str(self.out / f) for f in ("study.md", "study.json", "score_vs_flops.png", "kl_curves.png")
        )
        print(f"\nwrote {written}")

    def distill_steps(self, runs: list[dict]) -> int:
        """Steps of each distillation: distill_steps, or (distilling for epochs) the last logged step."""
        return self.cfg.distill_steps or max((s for r in runs for c in r["curves"] for s, _ in c), default=1)

    def kl_rows(self, runs: list[dict]) -> list[dict]:
        """Relation KL of every student kind at evenly spaced distillation steps (mean over seeds): where the
        dense curve flattens and whether MiniMoE goes lower. A dense student shared by variants shows once."""
        rows, seen = [], set()
        for r in runs:
            if student_kind(r) not in seen:
                seen.add(student_kind(r))
                marks = kl_at_marks(r["curves"], self.distill_steps(runs))
                rows.append({"teacher": r["teacher"], "student": r["label"]} | {str(m): v for m, v in marks.items()})
        return rows


def run(cfg: StudyConfig) -> list[dict]:
    """Check the grid's settings (before hours of teacher fine-tuning), then run it."""
    for size in cfg.sizes:
        parse_size(size)
    if cfg.relation_heads < 1:
        raise MiniMoEError(f"relation_heads must be at least 1, got {cfg.relation_heads}")
    parse_variants(cfg)
    for name in GRID_AXES:
        if not getattr(cfg, name):
            raise MiniMoEError(f"{name} needs at least one value (an axis of the fine-tuning grid)")
    study = Study(cfg)
    study.train_config("", cfg.distill_batch_size, cfg.distill_grad_accum)  # splits over the processes
    for batch in [*cfg.student_batch_size, TEACHER_BATCH]:
        study.train_config("", batch)
    cache_dir().mkdir(parents=True, exist_ok=True)
    return study.run()
