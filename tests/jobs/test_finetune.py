"""`minimoe finetune`: label names saved with the model, MNLI scored on both dev sets, tasks named sensibly, the
reported best scores are what `minimoe evaluate` gives the saved best model, and a killed run keeps its best
model and resumes to the results of an uninterrupted one."""

import json
import random
import signal

import pytest
from transformers import AutoModelForSequenceClassification

from minimoe.cli import main
from minimoe.data.tasks import get_task
from minimoe.training.finetuning import load_task_model
from minimoe.training.run_dir import checkpoints

from ..conftest import cli_signalled, same_run


def test_packaged_tasks_save_their_label_names(tiny_teacher_dir):
    config = load_task_model(str(tiny_teacher_dir), get_task("movie-sentiment")).config
    assert config.id2label == {0: "negative", 1: "positive"} and config.label2id["positive"] == 1
    snli = load_task_model(str(tiny_teacher_dir), get_task("snli")).config
    assert list(snli.id2label.values()) == ["entailment", "neutral", "contradiction"]


def test_mnli_reports_matched_and_mismatched(save_classifier, mnli_dir, tmp_path):
    train = ["--train.epochs", "1", "--train.batch_size", "6", "--train.threads", "1", "--max_length", "16"]
    model = save_classifier(["entailment", "neutral", "contradiction"])
    args = ["finetune", "--model", str(model), "--task", "mnli", "--data_dir", str(mnli_dir), *train]
    assert main([*args, "--train.output_dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"accuracy", "accuracy_mismatched", "score", "score_mismatched"} <= set(results["best"])


def test_finetune_needs_a_task_or_files(tiny_teacher_dir, capsys):
    assert main(["finetune", "--model", str(tiny_teacher_dir)]) == 2
    assert "name a --task" in capsys.readouterr().err


def cue_task(path, n: int, seed: int) -> None:
    """A learnable regression task in the tiny teacher's words: the score (0.0-1.0) says which kind of cue word the
    sentence holds, give or take 0.3. A continuous metric (Pearson), so a model that differs scores differently."""
    rng = random.Random(seed)
    filler = "the a of and to in is was for on that with as by at from".split()
    cues = (["war", "river", "north", "south"], ["new", "known", "large", "found"])
    rows = []
    for _ in range(n):
        words, label = [rng.choice(filler) for _ in range(rng.randint(3, 7))], rng.randint(0, 1)
        words.insert(rng.randrange(len(words) + 1), rng.choice(cues[label]))
        rows.append(f"{' '.join(words)},{min(1.0, max(0.0, label + rng.uniform(-0.3, 0.3))):.2f}")
    path.write_text("text,label\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("experts", [1, 4])
def test_reported_best_scores_are_what_evaluate_gives_the_best_model(save_classifier, tmp_path, experts):
    """Eight evaluations in one run, every optimizer step in place (fused AdamW): best/ scores as reported."""
    cue_task(tmp_path / "train.csv", 96, seed=0)
    cue_task(tmp_path / "dev.csv", 64, seed=1)
    dev = ["--dev_file", str(tmp_path / "dev.csv"), "--text_columns", "text", "--max_length", "16"]
    train = ["--train.epochs", "4", "--train.batch_size", "16", "--train.eval_every", "3", "--train.lr", "5e-3"]
    run = tmp_path / "run"
    model = save_classifier([], experts=experts)
    finetune = ["finetune", "--model", str(model), "--train_file", str(tmp_path / "train.csv"), "--regression", *dev]
    assert main([*finetune, *train, "--train.threads", "1", "--train.output_dir", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    evals = [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/score" in m]
    best_step = next(m["step"] for m in evals if round(m["eval/score"], 4) == results["best"]["score"])
    assert len(evals) == 8 and best_step > evals[0]["step"]  # the best model is from after the first evaluation

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(run / "best"), *dev, "--output", str(out)]) == 0
    assert {k: v for k, v in json.loads(out.read_text()).items() if k in results["best"]} == results["best"]


def test_long_texts_train_on_a_64_position_model(save_classifier, tmp_path, capsys):
    """The default max_length (128) is lowered to the model's 64 positions and recorded so; a longer flag is refused."""
    words = "the film was new people found the album".split()
    rows = [f"{' '.join(words[(i + j) % len(words)] for j in range(150))},{i % 2}" for i in range(8)]
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    args = ["finetune", "--model", str(save_classifier(["a", "b"])), "--train_file", str(tmp_path / "train.csv")]
    args += ["--text_columns", "text", "--train.max_steps", "2", "--train.batch_size", "4", "--train.threads", "1"]
    assert main([*args, "--train.output_dir", str(tmp_path / "run")]) == 0
    assert "max_length 128 (the default) is more than the 64 tokens" in capsys.readouterr().err
    assert "max_length: 64\n" in (tmp_path / "run" / "recipe.yaml").read_text()
    assert main([*args, "--train.output_dir", str(tmp_path / "other"), "--max_length", "65"]) == 2
    assert "--max_length 65 is more than the 64 tokens" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_finetune_keeps_its_best_model_and_evaluations_and_resumes_to_the_same_results(
    tiny_teacher_dir, task_dir, tmp_path
):
    args = ["finetune", "--model", tiny_teacher_dir, "--task", "sst2", "--data_dir", task_dir, "--max_length", "16"]
    args += ["--train.epochs", "3", "--train.batch_size", "8", "--train.save_every", "3", "--train.log_every", "1"]
    args = [*map(str, args), "--train.threads", "1"]
    assert main([*args, "--train.output_dir", str(tmp_path / "straight")]) == 0
    out = tmp_path / "run"
    # killed (SIGKILL: no cleanup of any kind) as the evaluation after epoch 2 starts, after step-3's checkpoint
    run = cli_signalled("SIGKILL", "minimoe.training.trainer:Trainer.run_eval", 2, *args, "--train.output_dir", out)
    assert run.returncode == -signal.SIGKILL and not (out / "results.json").exists()
    assert [p.name for p in checkpoints(out)] == ["step-3"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [r for r in records if "eval/score" in r]  # the evaluation of epoch 1 is kept ...
    best = json.loads((out / "best" / "dev_metrics.json").read_text())
    assert evaluation["step"] == 3 and best == {
        k.removeprefix("eval/"): v for k, v in evaluation.items() if k != "step"
    }
    assert AutoModelForSequenceClassification.from_pretrained(out / "best").config.num_labels == 2  # ... and its model

    assert main([*args, "--train.output_dir", str(out), "--train.resume"]) == 0
    same_run(out, tmp_path / "straight", "results.json", "best")
