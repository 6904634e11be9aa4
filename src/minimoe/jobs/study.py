"""Teacher x student-size x {dense, MiniMoE} x seed grids: distil, fine-tune, tabulate, plot.

`minimoe study` (the paper's capacity-gap experiment at CPU scale), and the engine of `minimoe demo`
(one teacher, one size, one seed). Every stage writes its result atomically and is skipped when
the grid is rerun, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification

from minimoe.assets.cache import cache_dir
from minimoe.assets.resolve import load_pretrained
from minimoe.distill.trainer import TrainConfig
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text
from minimoe.flops import count_flops, count_parameters
from minimoe.jobs import distill, finetune
from minimoe.latency import measure_latency
from minimoe.recipe import dump_recipe
from minimoe.report import markdown_table, plot_score_vs_flops, read_metrics


@dataclass
class StudyConfig:
    """The grid and the budget of every stage."""

    output_dir: str = "runs/study"  # where every stage writes its run directory, and the table and plot
    teachers: list[str] = field(default_factory=lambda: ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])  # teachers compared
    sizes: list[str] = field(default_factory=lambda: ["2L-128H", "4L-192H"])  # student sizes, LAYERSL-HIDDENH
    experts: list[int] = field(default_factory=lambda: [1, 4])  # experts per student; 1 = dense (MiniLM-style)
    seeds: list[int] = field(default_factory=lambda: [1, 2])  # seeds of every student (distillation and fine-tuning)
    tasks: list[str] = field(default_factory=lambda: ["movie-sentiment", "snli"])  # fine-tuning tasks
    data_root: str = ""  # GLUE-style tasks live in DATA_ROOT/TASK; empty = packaged tasks
    corpus: list[str] = field(default_factory=lambda: ["wiki-summaries"])  # distillation corpus (as distill --corpus)
    max_length: int = 64  # tokens per sequence, distillation and fine-tuning
    distill_steps: int = 300  # optimizer steps of each distillation
    distill_sequences: int = 9600  # corpus segment pairs (= distill_steps x 32: one pass, teacher Q/K/V cached once)
    distill_lr: float = 5e-4  # distillation learning rate
    relation_heads: int = 32  # MiniLMv2 relation heads (the largest divisor of both widths not above this)
    train_examples: int = 6000  # training examples per task, the same subset for every model; 0 = all
    eval_examples: int = 2000  # dev examples per task; 0 = all
    student_epochs: float = 3.0  # fine-tuning epochs of students
    student_lr: float = 2e-4  # fine-tuning learning rate of students
    teacher_epochs: float = 1.0  # fine-tuning epochs of teachers
    teacher_lr: float = 5e-5  # fine-tuning learning rate of teachers
    kd_alpha: float = 0.0  # > 0: fine-tune students with logit KD from the fine-tuned teacher
    measure_latency: bool = True  # time every model at batch 32 x 128 for the table


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


def final_relation_kl(distill_dir: Path) -> float:
    """The relation KL at the last logged distillation step: how closely the student fits the teacher."""
    logged = [m["train/relation_kl"] for m in read_metrics(distill_dir / "metrics.jsonl") if "train/relation_kl" in m]
    return logged[-1] if logged else float("nan")


def _once(results_file: Path, run) -> dict:
    """Run a stage unless its results file exists."""
    return json.loads(results_file.read_text()) if results_file.is_file() else run()


class Study:
    """Runs the grid of a `StudyConfig` stage by stage."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.out = cfg, Path(cfg.output_dir)

    def train_config(self, name: str, **kw) -> TrainConfig:
        return TrainConfig(output_dir=str(self.out / name), batch_size=32, log_every=10, **kw)

    def distill(self, teacher: str, size: str, experts: int, seed: int) -> Path:
        """Task-agnostic distillation of one student; returns its directory."""
        layers, hidden = parse_size(size)
        name = f"{short(teacher)}/{size}-E{experts}-s{seed}/distill"
        cfg = distill.DistillConfig(
            teacher=teacher,
            corpus=self.cfg.corpus,
            max_length=self.cfg.max_length,
            max_sequences=self.cfg.distill_sequences,
            cache_teacher=True,
            relation_heads=self.cfg.relation_heads,
            student=distill.StudentConfig(layers=layers, hidden=hidden, experts=experts),
            train=self.train_config(
                name,
                seed=seed,
                lr=self.cfg.distill_lr,
                warmup_ratio=0.05,
                max_steps=self.cfg.distill_steps,
                save_every=100,
            ),
        )
        _once(self.out / name / "summary.json", lambda: distill.run(cfg))
        return self.out / name / "student"

    def finetune(self, model: str, name: str, task: str, seed: int, teacher_dir: str = "") -> dict:
        """Fine-tune one model on one task; teachers get their own lr/epochs, students optional KD."""
        is_teacher = name.endswith("/teacher")
        cfg = finetune.FinetuneConfig(
            model=model,
            task=task,
            teacher="" if is_teacher or not self.cfg.kd_alpha else teacher_dir,
            data_dir=str(Path(self.cfg.data_root) / task) if self.cfg.data_root else "",
            kd_alpha=self.cfg.kd_alpha,
            max_length=self.cfg.max_length,
            max_train_examples=self.cfg.train_examples,
            max_eval_examples=self.cfg.eval_examples,
            train=self.train_config(
                f"{name}-{task}",
                seed=seed,
                warmup_ratio=0.1,
                grad_clip=1.0,
                save_every=0,
                lr=self.cfg.teacher_lr if is_teacher else self.cfg.student_lr,
                epochs=self.cfg.teacher_epochs if is_teacher else self.cfg.student_epochs,
            ),
        )
        return _once(self.out / f"{name}-{task}" / "results.json", lambda: finetune.run(cfg))

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
        if self.cfg.measure_latency:
            cost["ms @32x128"] = measure_latency(model, 32, seq)
        atomic_write_text(cache, json.dumps(cost))
        return cost

    def run(self) -> list[dict]:
        """Every stage of the grid, then the table (mean and spread over seeds) and the plot."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "study.yaml").write_text(dump_recipe(self.cfg))
        rows = []
        for teacher in self.cfg.teachers:
            teacher_scores, teacher_dir = {}, {}
            for task in self.cfg.tasks:
                result = self.finetune(teacher, f"{short(teacher)}/teacher", task, seed=self.cfg.seeds[0])
                teacher_scores[task], teacher_dir[task] = [100 * result["best"]["score"]], result["best_dir"]
            rows.append(self.row(teacher, "teacher", teacher_scores, teacher_dir[self.cfg.tasks[0]]))
            for size in self.cfg.sizes:
                for experts in self.cfg.experts:
                    scores: dict[str, list[float]] = {t: [] for t in self.cfg.tasks}
                    kls = []
                    for seed in self.cfg.seeds:
                        student = self.distill(teacher, size, experts, seed)
                        kls.append(final_relation_kl(student.parent))
                        for task in self.cfg.tasks:
                            name = f"{short(teacher)}/{size}-E{experts}-s{seed}/finetune"
                            result = self.finetune(str(student), name, task, seed, teacher_dir[task])
                            scores[task].append(100 * result["best"]["score"])
                            best = result["best_dir"]
                    kind = "dense" if experts == 1 else f"MiniMoE E={experts}"
                    rows.append(
                        self.row(teacher, f"{size} {kind}", scores, best) | {"distill KL": statistics.mean(kls)}
                    )
        self.add_relative(rows)
        self.write(rows)
        return rows

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

    def write(self, rows: list[dict]) -> None:
        """study.md (table), study.json (rows) and score_vs_flops.png."""
        columns = ["teacher", "model", "params (M)", "active (M)", "paper GMACs", "GFLOPs"]
        columns += ["ms @32x128"] if self.cfg.measure_latency else []
        columns += ["distill KL"]
        spread = len(self.cfg.seeds) > 1  # std columns only when there is a spread to show
        columns += [c for t in self.cfg.tasks for c in (t, f"{t} sd")[: 1 + spread]]
        columns += ["average", "average sd"][: 1 + spread] + ["% of teacher", "seeds"]
        atomic_write_text(self.out / "study.md", markdown_table(rows, columns) + "\n")
        atomic_write_text(self.out / "study.json", json.dumps({"config": asdict(self.cfg), "rows": rows}, indent=2))
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
        print("\n" + markdown_table(rows, columns))
        print(f"\nwrote {self.out / 'study.md'}, {self.out / 'study.json'}, {self.out / 'score_vs_flops.png'}")


def run(cfg: StudyConfig) -> list[dict]:
    """Check the grid's settings (before hours of teacher fine-tuning), then run it."""
    for size in cfg.sizes:
        parse_size(size)
    if cfg.relation_heads < 1:
        raise MiniMoEError(f"relation_heads must be at least 1, got {cfg.relation_heads}")
    cache_dir().mkdir(parents=True, exist_ok=True)
    return Study(cfg).run()
