"""`minimoe finetune`: label names saved with the model, MNLI scored on both dev sets, tasks named sensibly."""

import json

from minimoe.cli import main
from minimoe.data.tasks import get_task
from minimoe.jobs.finetune import load_task_model


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
