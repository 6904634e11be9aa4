"""The study's grid: plan every stage (a job config and its directory), run the stages, gather the results.

Every stage writes its result atomically and is skipped when the grid is rerun, so an interrupted study resumes
where it stopped, and a finished one regenerates its report from its directories alone.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification

from minimoe.assets.resolve import load_pretrained
from minimoe.cache import cache_dir, content_key, weights_stamp
from minimoe.errors import RERUN_HINT, MiniMoEError, RecipeChanged, Stopped
from minimoe.files import atomic_write_text
from minimoe.flops import count_flops, count_parameters
from minimoe.latency import measure_latencies
from minimoe.recipe import dump_recipe
from minimoe.studies.config import MOE_ONLY, StudyConfig, check, parse_size
from minimoe.studies.results import REPORT_FILES, StudyResults, write_report
from minimoe.studies.statistics import (
    ablation_differences,
    expert_usage,
    final_relation_kl,
    final_train_loss,
    kl_rows,
    paired_differences,
    relation_kl_curve,
    student_kind,
    summary_row,
)
from minimoe.training.distillation import DistillConfig, run_distillation
from minimoe.training.finetuning import FinetuneConfig, run_finetuning
from minimoe.training.trainer import TrainConfig


def clock(seconds: float) -> str:
    """1h02m, 5m12s or 40s."""
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def kind_name(experts: int) -> str:
    """dense or MiniMoE E=4."""
    return "dense" if experts == 1 else f"MiniMoE E={experts}"


def short(teacher: str) -> str:
    """A directory-safe teacher name."""
    return Path(teacher).name or teacher.replace("/", "_")


@dataclass
class Stage:
    """One run of the grid: its directory under the study's, what its heading says, the job config it runs."""

    name: str
    what: str
    config: DistillConfig | FinetuneConfig

    @property
    def results_file(self) -> str:
        """The file that marks the stage done."""
        return "summary.json" if isinstance(self.config, DistillConfig) else "results.json"


@dataclass
class Student:
    """One student kind of the grid and its stages: seed -> distillation stage, seed -> task -> fine-tuning stages
    (one per point of the fine-tuning grid)."""

    teacher: str
    variant: str
    size: str
    experts: int
    tag: str
    distill: dict[int, str]
    finetune: dict[int, dict[str, list[str]]]

    @property
    def label(self) -> str:
        return f"{self.size} {kind_name(self.experts)}" + (f" [{self.variant}]" if self.variant else "")


class Study:
    """The stages of a `StudyConfig` in run order, with the teachers and students they make up."""

    def __init__(self, cfg: StudyConfig):
        grid_variants = check(cfg)
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        state = PartialState(cpu=not torch.cuda.is_available())  # the processes of an `accelerate launch`, if any
        self.processes, self.is_main = state.num_processes, state.is_main_process
        self.plan: dict[str, Stage] = {}
        self.teachers: dict[str, dict[str, str]] = {}  # teacher -> task -> its fine-tuning stage
        self.students: list[Student] = []
        for teacher in cfg.teachers:
            self.teachers[teacher] = {task: self.add_teacher(teacher, task) for task in cfg.tasks}
            for variant, vcfg, overrides in grid_variants:
                for size, experts in itertools.product(cfg.sizes, cfg.experts):
                    own = bool(variant) and (experts > 1 or not overrides <= MOE_ONLY)  # else the base student
                    self.students.append(self.add_student(teacher, variant, vcfg if own else cfg, size, experts, own))
        self.stages = list(self.plan)
        self.started, self.ran = time.monotonic(), 0

    def add(self, stage: Stage) -> str:
        """Plan a stage once (a dense student shared by variants is planned by the base grid)."""
        self.plan.setdefault(stage.name, stage)
        return stage.name

    def add_teacher(self, teacher: str, task: str) -> str:
        """The teacher's own fine-tuning on a task (the first seed), the KD teacher of the students."""
        name = f"{short(teacher)}/teacher-{task}"
        cfg = replace(self.cfg.teacher_finetune, model=teacher, task=task, data_dir=self.data_dir(task))
        cfg = replace(cfg, train=self.train(cfg.train, name, self.cfg.seeds[0]))
        return self.add(Stage(name, f"fine-tune {teacher} on {task}", cfg))

    def add_student(self, teacher: str, variant: str, cfg: StudyConfig, size: str, experts: int, own: bool) -> Student:
        """Every seed's distillation and fine-tuning stages of one student kind (`own`: the variant's own student,
        not the base one it shares)."""
        layers, hidden = parse_size(size)
        tag = f"-{variant}" if own else ""
        student = Student(short(teacher), variant, size, experts, tag, {}, {})
        for seed in self.cfg.seeds:
            base = f"{short(teacher)}/{size}-E{experts}{tag}-s{seed}"
            shape = replace(cfg.distill.student, layers=layers, hidden=hidden, experts=experts)
            distill = replace(cfg.distill, teacher=teacher, student=shape)
            distill = replace(distill, train=self.train(distill.train, f"{base}/distill", seed))
            what = f"distil {size} {kind_name(experts)}" + (f" [{variant}]" if own else "") + f", seed {seed}"
            student.distill[seed] = self.add(Stage(f"{base}/distill", what, distill))
            model = str(self.out / base / "distill" / "student")
            student.finetune[seed] = {
                task: self.add_finetuning(cfg.finetune, base, task, seed, model, self.teachers[teacher][task])
                for task in self.cfg.tasks
            }
        return student

    def add_finetuning(
        self, section: FinetuneConfig, base: str, task: str, seed: int, model: str, teacher: str
    ) -> list[str]:
        """A student's fine-tuning on one task at every point of the grid (one point keeps the stage's own
        directory), with KD from the fine-tuned teacher (its stage `teacher`) when finetune.kd_alpha > 0."""
        grid = self.cfg.finetune_grid
        points = list(
            itertools.product(
                grid.lr or [section.train.lr],
                grid.batch_size or [section.train.batch_size],
                grid.epochs or [section.train.epochs],
            )
        )
        kd = str(self.out / teacher / "best") if section.kd_alpha else ""
        names = []
        for lr, batch, epochs in points:
            name = f"{base}/finetune-{task}"
            what = f"fine-tune {base} on {task}"
            if len(points) > 1:
                name += f"/lr{lr:g}-bs{batch}-ep{epochs:g}"
                what += f" (lr {lr:g}, batch {batch}, {epochs:g} epochs)"
            train = replace(section.train, lr=lr, batch_size=batch, epochs=epochs)
            cfg = replace(section, model=model, task=task, teacher=kd, data_dir=self.data_dir(task))
            names.append(self.add(Stage(name, what, replace(cfg, train=self.train(train, name, seed)))))
        return names

    def train(self, section: TrainConfig, name: str, seed: int) -> TrainConfig:
        """A stage's training settings: its directory and seed, the section's global batch split over the processes."""
        per_process = section.batch_size // (section.grad_accum * self.processes)
        if per_process * section.grad_accum * self.processes != section.batch_size:
            raise MiniMoEError(
                f"a batch of {section.batch_size} is not {section.grad_accum} accumulated micro-batches on each of "
                f"{self.processes} processes: choose a batch size and train.grad_accum whose product with the "
                f"processes divides it"
            )
        return replace(section, output_dir=str(self.out / name), seed=seed, batch_size=per_process)

    def data_dir(self, task: str) -> str:
        """Where fine-tuning reads a task: "hub" (GLUE through `datasets`), DATA_ROOT/TASK, or "" (packaged)."""
        if self.cfg.data_root in ("", "hub"):
            return self.cfg.data_root
        return str(Path(self.cfg.data_root) / task)

    def stage(self, name: str) -> dict:
        """Run a stage unless its results file exists, under a heading with its position and the grid's ETA.

        A stop or a half-done stage from another recipe gets a study-level message (the trainer's names trainer
        flags, which `minimoe study` does not take).
        """
        stage = self.plan[name]
        done = self.out / name / stage.results_file
        heading = f"stage {self.stages.index(name) + 1}/{len(self.stages)}: {stage.what}"
        if done.is_file():
            print(f"{heading} (done, kept)", flush=True)
            return json.loads(done.read_text())
        left = len(self.stages) - self.stages.index(name)
        elapsed = time.monotonic() - self.started
        eta = f", ETA {clock(elapsed / self.ran * left)}" if self.ran else ""
        print(f"\n== {heading} (elapsed {clock(elapsed)}{eta}) ==", flush=True)
        # a stage stopped mid-way (SIGTERM, a kill) resumes from its last checkpoint, or starts again when it had none
        cfg = replace(stage.config, train=replace(stage.config.train, resume=(self.out / name).exists()))
        try:
            result = run_distillation(cfg) if isinstance(cfg, DistillConfig) else run_finetuning(cfg)
        except Stopped as e:
            raise Stopped(e.detail, RERUN_HINT) from None
        except RecipeChanged as e:
            raise MiniMoEError(
                f"{done.parent} was started under another recipe ({e.diff}); rerun the study with its "
                f"original settings, or delete that directory to redo the stage"
            ) from None
        self.ran += 1
        return result

    def run(self) -> list[dict]:
        """Every stage of the grid, then the tables (mean and spread over seeds; paired differences) and plots."""
        self.out.mkdir(parents=True, exist_ok=True)
        cache_dir().mkdir(parents=True, exist_ok=True)
        if self.is_main:
            (self.out / "study.yaml").write_text(dump_recipe(self.cfg))
        for name in self.stages:
            self.stage(name)
        rows, dirs, runs = self.gather()
        teacher_avg = {r["teacher"]: r["average"] for r in rows if r["model"] == "teacher"}
        for r in rows:
            r["% of teacher"] = 100 * r["average"] / teacher_avg[r["teacher"]]
        if self.is_main:  # under `accelerate launch` the other processes have nothing left to do
            if self.cfg.measure_latency:
                for row, ms in zip(rows, self.latencies(dirs)):
                    row["ms @32x128"] = ms
            self.report(rows, runs)
        return rows

    def best(self, stages: list[str]) -> tuple[dict, str]:
        """The results and directory of the fine-tuning grid point with the best dev score (the first of equals)."""
        results = [(json.loads((self.out / s / "results.json").read_text()), s) for s in stages]
        return max(results, key=lambda r: r[0]["best"]["score"])

    def gather(self) -> tuple[list[dict], list[str], list[dict]]:
        """From the stages' directories: the table rows (teacher, then every student kind once), the model directory
        of each row, and every student kind's per-seed results."""
        rows, dirs, runs, seen = [], [], [], set()
        for teacher, tasks in self.teachers.items():
            results = {task: self.best([stage])[0] for task, stage in tasks.items()}
            dirs.append(results[self.cfg.tasks[0]]["best_dir"])
            scores = {task: [100 * r["best"]["score"]] for task, r in results.items()}
            rows.append(
                {"teacher": short(teacher), "model": "teacher", **self.describe(dirs[-1])} | summary_row(scores)
            )
            for student in (s for s in self.students if s.teacher == short(teacher)):
                runs.append(self.student_run(student))
                if student_kind(runs[-1]) in seen:
                    continue  # a dense student the variant leaves unchanged: already a row
                seen.add(student_kind(runs[-1]))
                seeds = runs[-1]["per_seed"].values()
                extra = {
                    k: statistics.mean(s[k] for s in seeds)
                    for k in ("distill KL", "train loss", "router top p", "forced change")
                    if all(k in s for s in seeds)
                }
                scores = {t: [s[t] for s in seeds] for t in self.cfg.tasks}
                row = {"teacher": student.teacher, "model": student.label, **self.describe(runs[-1]["best_dir"])}
                rows.append(row | summary_row(scores) | extra)
                dirs.append(runs[-1]["best_dir"])
        return rows, dirs, runs

    def student_run(self, student: Student) -> dict:
        """One student kind over the seeds: scores, relation KL, train loss and router statistics per seed, the KL
        curves, and the model directory its table row describes (the last seed's last task)."""
        per_seed, curves, best_dir = {}, [], ""
        for seed in self.cfg.seeds:
            distill_dir = self.out / student.distill[seed]
            scores, losses = {}, []
            for task, stages in student.finetune[seed].items():
                result, stage = self.best(stages)
                scores[task], best_dir = 100 * result["best"]["score"], result["best_dir"]
                losses.append(final_train_loss(self.out / stage))
            scores["average"] = statistics.mean(scores[t] for t in self.cfg.tasks)
            per_seed[seed] = scores | {"distill KL": final_relation_kl(distill_dir)}
            per_seed[seed] |= {"train loss": statistics.mean(losses)} | expert_usage(distill_dir)
            curves.append(relation_kl_curve(distill_dir))
        where = {"teacher": student.teacher, "variant": student.variant, "size": student.size}
        return (
            where
            | {"experts": student.experts, "per_seed": per_seed, "curves": curves, "best_dir": best_dir}
            | {
                "tag": student.tag,
                "label": student.label,
            }
        )

    def describe(self, model_dir: str) -> dict:
        """Params, active params and FLOPs (measured and the paper's convention), measured once (cost.json)."""
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

    def latencies(self, dirs: list[str]) -> list[float]:
        """'ms @32x128' of every row's model, timed once the grid is done in interleaved rounds (paired, as the
        benchmarks measure), so a busy moment of the machine does not land on one model only. Kept in latency.json,
        keyed by the models' weights, so a rerun reports the same figures until a model changes."""
        cache, key = self.out / "latency.json", content_key(dirs, [weights_stamp(d) for d in dirs])
        kept = json.loads(cache.read_text()) if cache.is_file() else {}
        if kept.get("key") == key:
            return kept["ms"]
        models = [load_pretrained(AutoModelForSequenceClassification, d) for d in dirs]
        seq = min(128, *(m.config.max_position_embeddings for m in models))
        ms = measure_latencies(models, 32, seq, repeats=7)
        atomic_write_text(cache, json.dumps({"key": key, "models": dirs, "ms": ms}))
        return ms

    def report(self, rows: list[dict], runs: list[dict]) -> None:
        """The statistics over seeds, then study.md, study.json and the plots."""
        tasks = self.cfg.tasks
        steps = self.cfg.distill.train.max_steps or max((s for r in runs for c in r["curves"] for s, _ in c), default=1)
        results = StudyResults(
            config=asdict(self.cfg),
            rows=rows,
            paired=paired_differences(runs, tasks),
            ablations=ablation_differences(runs, tasks),
            relation_kl=kl_rows(runs, steps),
            runs=runs,
        )
        table = write_report(results, self.out, tasks, self.cfg.measure_latency, steps)
        print("\n" + table.rstrip("\n"))
        print(f"\nwrote {', '.join(str(self.out / f) for f in REPORT_FILES)}")


def run_study(cfg: StudyConfig) -> list[dict]:
    """Check the grid (before hours of teacher fine-tuning), run it, report; the table's rows."""
    return Study(cfg).run()
