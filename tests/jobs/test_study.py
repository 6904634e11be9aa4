"""The study grid on tiny models: every cell runs, the table has mean and spread, a rerun resumes, every score is
what `minimoe evaluate` gives the stage's best model, and a killed study reruns to the results of an
uninterrupted one."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from minimoe.cli import main
from minimoe.errors import MiniMoEError
from minimoe.jobs.evaluate import EvaluateConfig
from minimoe.jobs.evaluate import run as run_evaluate
from minimoe.jobs.study import run as run_study
from minimoe.recipe import load_recipe
from minimoe.report import read_metrics
from minimoe.studies.config import StudyConfig
from minimoe.training.run_dir import checkpoints

from ..conftest import cli_signalled


def tiny_study(tmp_path, teacher_dir, corpus, **fields) -> StudyConfig:
    """A 1L-32H dense vs E=4 grid on the tiny teacher, 3 distillation steps; tasks under tmp_path/data. `fields` are
    dotted overrides, as the CLI's flags."""
    base = {
        "output_dir": str(tmp_path / "study"),
        "teachers": [str(teacher_dir)],
        "sizes": ["1L-32H"],
        "experts": [1, 4],
        "data_root": str(tmp_path / "data"),
        "distill.corpus": [str(corpus)],
        "distill.max_length": 24,
        "distill.max_sequences": 24,
        "distill.relation_heads": 2,
        "distill.train.max_steps": 3,
    }
    for section in ("finetune", "teacher_finetune"):
        base |= {f"{section}.max_length": 24, f"{section}.max_train_examples": 0, f"{section}.max_eval_examples": 0}
    return load_recipe(StudyConfig, None, base | fields)


@pytest.mark.slow
def test_tiny_grid_runs_and_resumes(tiny_teacher_dir, tiny_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path / "home"))
    task = tmp_path / "data" / "sst2"
    task.mkdir(parents=True)
    rows = ["the film was new and known", "the game was large", "people found the album", "the team played music"]
    lines = ["sentence\tlabel"] + [f"{r}\t{i % 2}" for i, r in enumerate(rows * 4)]
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    cfg = tiny_study(
        tmp_path,
        tiny_teacher_dir,
        tiny_corpus,
        seeds=[1, 2],
        tasks=["sst2"],
        measure_latency=True,
        variants={"nonoise": {"distill.student.router_noise": 0}},
        **{"finetune.train.epochs": 1, "teacher_finetune.train.epochs": 1, "finetune.kd_alpha": 0.5},
    )
    rows = run_study(cfg)
    headings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("== stage ")]
    assert len(headings) == 13 and headings[0].startswith("== stage 1/13: fine-tune ")  # 1 + 4 x 2 + 2 x 2 stages
    assert "stage 2/13: distil 1L-32H dense, seed 1 (elapsed " in headings[1] and "ETA" in headings[1]
    assert "stage 13/13: fine-tune " in headings[-1] and "-nonoise-s2 on sst2" in headings[-1]
    assert "stage 10/13: distil 1L-32H MiniMoE E=4 [nonoise], seed 1 (" in headings[9]
    models = ["teacher", "1L-32H dense", "1L-32H MiniMoE E=4", "1L-32H MiniMoE E=4 [nonoise]"]
    assert [r["model"] for r in rows] == models  # the variant's dense student is the base one, run once
    assert rows[0]["% of teacher"] == 100 and all(r["seeds"] == 2 for r in rows[1:])
    assert all(r["ms @32x128"] > 0 for r in rows)  # timed once the grid is done, every model in the same rounds
    assert "distill KL" not in rows[0] and all(0 < r["distill KL"] < 10 for r in rows[1:])
    assert all(0 < r["train loss"] < 10 for r in rows[1:])
    assert rows[2]["params (M)"] > rows[1]["params (M)"] and rows[2]["paper GMACs"] == pytest.approx(
        rows[1]["paper GMACs"], rel=0.01
    )
    out = tmp_path / "study"
    assert (out / "score_vs_flops.png").stat().st_size > 1000 and "MiniMoE" in (out / "study.md").read_text()
    assert (out / "kl_curves.png").stat().st_size > 1000 and "Paired by seed" in (out / "study.md").read_text()
    assert "Relation KL during distillation" in (out / "study.md").read_text()
    assert 0 < rows[2]["router top p"] <= 1 and rows[2]["forced change"] > 0 and "router top p" not in rows[1]
    report = json.loads((out / "study.json").read_text())
    base, nonoise = report["paired"]
    assert (base["variant"], nonoise["variant"], base["seeds"]) == ("base", "nonoise", 2)
    dense, moe = (next(r for r in report["runs"] if r["experts"] == e and not r["variant"]) for e in (1, 4))
    diffs = [moe["per_seed"][s]["average"] - dense["per_seed"][s]["average"] for s in ("1", "2")]
    assert base["average diff"] == pytest.approx(sum(diffs) / 2)
    (ablation,) = report["ablations"]  # the variant's MiniMoE student against the base one; its dense is the base
    assert (ablation["variant"], ablation["student"]) == ("nonoise", "E=4") and "Ablations" in (
        out / "study.md"
    ).read_text()
    variant = next(r for r in report["runs"] if r["experts"] == 4 and r["variant"])
    diffs = [variant["per_seed"][s]["average"] - moe["per_seed"][s]["average"] for s in ("1", "2")]
    assert ablation["average diff"] == pytest.approx(sum(diffs) / 2)
    kl = [r["student"] for r in report["relation_kl"]]  # the dense student the variant shares shows once
    assert kl == ["1L-32H dense", "1L-32H MiniMoE E=4", "1L-32H MiniMoE E=4 [nonoise]"]
    assert (out / tiny_teacher_dir.name / "1L-32H-E4-nonoise-s1" / "distill" / "inspect.json").is_file()
    summary = out / tiny_teacher_dir.name / "1L-32H-E4-s2" / "distill" / "summary.json"
    assert json.loads(summary.read_text())["relation_heads"] == 2
    stamp = summary.stat().st_mtime_ns
    again = run_study(cfg)  # every stage is found done
    kept = {line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line.endswith("(done, kept)")}
    assert kept == {f"stage {i}/13" for i in range(1, 14)}
    assert summary.stat().st_mtime_ns == stamp
    assert json.loads((out / "study.json").read_text())["rows"] == json.loads(json.dumps(again))
    assert [r["ms @32x128"] for r in again] == [r["ms @32x128"] for r in rows]  # kept in latency.json: same report
    key = json.loads((out / "latency.json").read_text())["key"]
    weights = next((out / tiny_teacher_dir.name / "1L-32H-E1-s2" / "finetune-sst2" / "best").glob("*.safetensors"))
    os.utime(weights, ns=(stamp, stamp + 1))  # a model changed: its latency is stale, every model is timed again
    run_study(cfg)
    assert json.loads((out / "latency.json").read_text())["key"] != key


def sts_task(directory, seed: int) -> None:
    """An STS-B-layout regression task in the tiny teacher's words: the score (0-5) counts the sentences holding a "yes"
    cue word, give or take 0.5. Pearson is continuous: a model that differs scores differently."""
    rng = random.Random(seed)
    filler = "the a of and to in is was for on that with as by at from".split()
    cues = (["war", "river", "north", "south"], ["new", "known", "large", "found"])
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 160), ("dev", 48)):
        rows = ["sentence1\tsentence2\tscore"]
        for _ in range(n):
            kinds = rng.randint(0, 1), rng.randint(0, 1)
            pair = [" ".join([rng.choice(filler), rng.choice(cues[k]), rng.choice(filler)]) for k in kinds]
            rows.append(f"{pair[0]}\t{pair[1]}\t{2.5 * sum(kinds) + rng.uniform(-0.5, 0.5):.2f}")
        (directory / f"{split}.tsv").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_every_stage_score_is_what_evaluate_gives_its_best_model(tiny_teacher_dir, tiny_corpus, tmp_path, monkeypatch):
    """Stages evaluate once per epoch and AdamW steps in place (fused): the table holds what best/ scores."""
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path / "home"))
    sts_task(tmp_path / "data" / "stsb", seed=0)
    cfg = tiny_study(
        tmp_path,
        tiny_teacher_dir,
        tiny_corpus,
        seeds=[1],
        tasks=["stsb"],
        measure_latency=False,
        **{
            f"{section}.train.{k}": v
            for section in ("finetune", "teacher_finetune")
            for k, v in (("epochs", 8), ("lr", 1e-2))
        },
    )
    rows = run_study(cfg)
    stages = tmp_path / "study" / tiny_teacher_dir.name
    evaluated = []
    for stage in ("teacher-stsb", "1L-32H-E1-s1/finetune-stsb", "1L-32H-E4-s1/finetune-stsb"):
        scores = [m["eval/score"] for m in read_metrics(stages / stage / "metrics.jsonl") if "eval/score" in m]
        assert len(scores) == 8 and max(scores) > scores[0]  # one per epoch; the best after the first
        data = str(tmp_path / "data" / "stsb")
        config = EvaluateConfig(
            str(stages / stage / "best"), "stsb", data, max_length=24, output=str(tmp_path / "e.json")
        )
        evaluated.append(100 * run_evaluate(config)["score"])
    assert [r["model"] for r in rows] == ["teacher", "1L-32H dense", "1L-32H MiniMoE E=4"]
    assert [r["stsb"] for r in rows] == evaluated


def test_the_paper_recipe_prints_as_shipped(capsys):
    from minimoe.cli import main

    assert main(["study", "--config", "study-paper-bert-base", "--print_config"]) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    distill, finetune = recipe["distill"], recipe["finetune"]
    assert recipe["teachers"] == ["bert-base-uncased"] and distill["corpus"] == ["hf:wikimedia/wikipedia:20231101.en"]
    assert (recipe["sizes"], recipe["experts"], recipe["data_root"]) == (["3L-384H"], [1, 4], "hub")
    assert (distill["train"]["epochs"], distill["train"]["batch_size"], distill["train"]["lr"]) == (5, 1024, 3e-4)
    assert (distill["train"]["warmup_ratio"], distill["train"]["mixed_precision"], distill["cache_teacher"]) == (
        0.01,
        "bf16",
        False,
    )
    sections = (distill, finetune, recipe["teacher_finetune"])
    assert all(s["train"]["adam_epsilon"] == 1e-6 for s in sections)  # the authors' transformers.AdamW default
    assert (
        len(recipe["tasks"]) == 8
        and len(recipe["finetune_grid"]["lr"]) * len(recipe["finetune_grid"]["batch_size"]) > 1
    )


def test_a_batch_the_processes_cannot_split_fails_before_any_stage(tmp_path):
    with pytest.raises(MiniMoEError, match="not 3 accumulated micro-batches"):
        run_study(load_recipe(StudyConfig, None, {"output_dir": str(tmp_path / "s"), "distill.train.grad_accum": 3}))
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_the_paper_recipe_dry_runs_on_local_stand_ins(tiny_teacher_dir, tiny_corpus, task_dir, tmp_path, monkeypatch):
    # The shipped recipe through the CLI with only its data, sizes and budget replaced by stand-ins: bf16, epochs of
    # distillation at a global batch accumulated per process, the Q/K/V cache off, a fine-tuning grid. In its own
    # process: accelerate keeps one precision per process, and earlier tests ran in full precision.
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path / "home"))
    (tmp_path / "glue" / "sst2").mkdir(parents=True)
    for split in ("train.tsv", "dev.tsv"):  # a GLUE layout for the tiny task (task_dir is tmp_path itself)
        shutil.copy(task_dir / split, tmp_path / "glue" / "sst2" / split)
    out = tmp_path / "study"
    args = ["study", "--config", "study-paper-bert-base", "--output_dir", str(out), "--teachers", str(tiny_teacher_dir)]
    args += [
        "--distill.corpus",
        str(tiny_corpus),
        "--data_root",
        str(tmp_path / "glue"),
        "--tasks",
        "sst2",
        "--sizes",
        "1L-32H",
    ]
    for section in ("distill", "finetune", "teacher_finetune"):
        args += [f"--{section}.max_length", "24"]
    args += ["--distill.relation_heads", "2", "--distill.train.epochs", "2", "--distill.train.batch_size", "8"]
    args += ["--distill.train.grad_accum", "2", "--distill.train.save_every", "2", "--finetune_grid.lr", "1e-4", "5e-5"]
    args += ["--finetune_grid.batch_size", "8", "--finetune_grid.epochs", "1", "--teacher_finetune.train.epochs", "1"]
    args += ["--no-measure_latency"]
    run = subprocess.run([sys.executable, "-m", "minimoe", *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    distill = out / tiny_teacher_dir.name / "1L-32H-E4-s1" / "distill"
    recipe = yaml.safe_load((distill / "recipe.yaml").read_text())
    assert recipe["train"]["mixed_precision"] == "bf16" and not recipe["cache_teacher"]
    assert (recipe["train"]["batch_size"], recipe["train"]["grad_accum"], recipe["train"]["max_steps"]) == (4, 2, 0)
    pairs = json.loads((distill / "summary.json").read_text())["sequences"]
    assert json.loads((distill / "summary.json").read_text())["steps"] == 2 * -(-pairs // 8)  # 2 epochs of 8 a step
    grid = sorted(p.name for p in (out / tiny_teacher_dir.name / "1L-32H-E1-s1" / "finetune-sst2").iterdir())
    assert grid == ["lr0.0001-bs8-ep1", "lr5e-05-bs8-ep1"]
    report = json.loads((out / "study.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["teacher", "1L-32H dense", "1L-32H MiniMoE E=4"]
    assert report["paired"] and "Relation KL during distillation" in (out / "study.md").read_text()


@pytest.fixture
def one_torch_thread(monkeypatch):
    """One torch thread in this process and in the ones it starts (`--train.threads` of an earlier test stays set
    in this process, and a study takes no thread count): float sums then add up in the same order in both."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_killed_study_reruns_to_the_same_results(
    tiny_teacher_dir, tiny_corpus, tmp_path, monkeypatch, one_torch_thread
):
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path / "home"))
    task = tmp_path / "data" / "sst2"
    task.mkdir(parents=True)
    lines = ["sentence\tlabel"] + [
        f"{r}\t{i % 2}" for i, r in enumerate(["the film was new", "the game was large"] * 6)
    ]
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    grid = ["study", "--teachers", tiny_teacher_dir, "--sizes", "1L-32H", "--experts", "4", "--seeds", "1"]
    grid += ["--tasks", "sst2", "--data_root", tmp_path / "data", "--distill.corpus", tiny_corpus]
    grid += ["--distill.train.max_steps", "3", "--distill.max_sequences", "24", "--distill.relation_heads", "2"]
    for section in ("distill", "finetune", "teacher_finetune"):
        grid += [f"--{section}.max_length", "24"]
    for section in ("finetune", "teacher_finetune"):
        grid += [f"--{section}.max_train_examples", "0", f"--{section}.max_eval_examples", "0"]
        grid += [f"--{section}.train.epochs", "1"]
    grid = [*map(str, grid), "--finetune.kd_alpha", "0.5", "--no-measure_latency"]
    assert main([*grid, "--output_dir", str(tmp_path / "straight")]) == 0
    out = tmp_path / "study"
    # killed (SIGKILL) as the student's distillation saves the student: its final checkpoint is written, the model not
    run = cli_signalled("SIGKILL", "minimoe.training.distillation:save_model", 1, *grid, "--output_dir", out)
    assert run.returncode == -signal.SIGKILL
    stage = out / tiny_teacher_dir.name / "1L-32H-E4-s1" / "distill"
    assert checkpoints(stage) and not (stage / "student").exists() and not (stage / "summary.json").exists()
    teacher = out / tiny_teacher_dir.name / "teacher-sst2" / "results.json"
    stamp = teacher.stat().st_mtime_ns

    assert main([*grid, "--output_dir", str(out)]) == 0  # the same command again
    assert teacher.stat().st_mtime_ns == stamp  # a finished stage is kept
    report, straight = (json.loads((d / "study.json").read_text()) for d in (out, tmp_path / "straight"))
    assert {k: v for k, v in report.items() if k != "config"} == {k: v for k, v in straight.items() if k != "config"}
