"""`minimoe evaluate`: the metrics finetune reports, on GLUE layouts (MNLI both dev sets), your files, teachers."""

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from minimoe.cli import main

SENTENCES = ["the film was new", "people found the album", "the team played music", "a river in the north"]
NLI = ("entailment", "neutral", "contradiction")


def test_mnli_scores_matched_and_mismatched(save_classifier, mnli_dir, capsys, tmp_path):
    model = save_classifier(list(NLI))
    out = tmp_path / "m.json"
    args = ["evaluate", "--model", str(model), "--task", "mnli", "--data_dir", str(mnli_dir)]
    assert main([*args, "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["task"] == "mnli" and metrics["examples"] == {"dev": 12, "dev_mismatched": 12}
    assert 0 <= metrics["accuracy"] <= 1 and metrics["accuracy_mismatched"] == metrics["accuracy"]  # same rows
    table = capsys.readouterr().out
    assert "| split | examples | accuracy | score |" in table and "| dev_mismatched | 12 |" in table


def test_teacher_on_a_glue_layout_and_label_mismatch(tiny_teacher_dir, save_classifier, tmp_path):
    teacher = tmp_path / "teacher"
    config = BertConfig.from_pretrained(tiny_teacher_dir, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(teacher)
    lines = ["#1 String\t#2 String\tQuality"] + [f"{a}\t{a}\t{i % 2}" for i, a in enumerate(SENTENCES)]
    (tmp_path / "dev.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "t.json"
    assert (
        main(["evaluate", "--model", str(teacher), "--task", "mrpc", "--data_dir", str(tmp_path), "--output", str(out)])
        == 0
    )
    assert set(json.loads(out.read_text())) >= {"accuracy", "f1", "score"}  # every GLUE metric of the task

    run = subprocess.run(
        [sys.executable, "-m", "minimoe", "evaluate", "--model", str(save_classifier(list(NLI))), "--task", "mrpc",
         "--data_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (
        run.returncode == 2 and "minimoe: error: model" in run.stderr and "has 3 outputs; task mrpc has 2" in run.stderr
    )


def test_finetune_string_labels_then_evaluate_and_predict(save_classifier, tmp_path):
    """The user's path: a CSV with string labels, no --task, then evaluate and predict the fine-tuned model."""
    labels = ["positive", "neutral", "negative"]
    rows = [f'"{s}",{labels[i % 3]}' for i, s in enumerate(SENTENCES * 3)]
    data = tmp_path / "reviews.csv"
    data.write_text("text,sentiment\n" + "\n".join(rows) + "\n")
    columns = ["--text_columns", "text", "--label_column", "sentiment"]
    student = save_classifier(["a", "b"])  # a student whose old head gets replaced
    train = ["--train.epochs", "1", "--train.batch_size", "4", "--train.threads", "1", "--max_length", "16"]
    run_dir = tmp_path / "run"
    finetune = ["finetune", "--model", str(student), "--train_file", str(data), *columns, *train]
    assert main([*finetune, "--train.output_dir", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    best = run_dir / "best"
    assert results["task"] == "reviews"
    assert json.loads((best / "config.json").read_text())["id2label"] == {
        "0": "negative",
        "1": "neutral",
        "2": "positive",
    }
    assert (best / "README.md").is_file() and (best / "modeling_minimoe.py").is_file()

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(best), "--dev_file", str(data), *columns, "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["task"] == "reviews" and metrics["accuracy"] == results["best"]["accuracy"]  # one evaluator

    preds = tmp_path / "preds.jsonl"
    assert (
        main(["predict", "--model", str(best), "--input", str(data), "--text_columns", "text", "--output", str(preds)])
        == 0
    )
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [p["text"] for p in lines] == SENTENCES * 3 and all(p["label"] in labels for p in lines)
    correct = sum(p["label"] == labels[i % 3] for i, p in enumerate(lines)) / len(lines)
    assert correct == pytest.approx(metrics["accuracy"], abs=1e-4)


def test_a_model_without_a_trained_head_is_refused(tiny_teacher_dir, capsys):
    assert main(["predict", "--model", str(tiny_teacher_dir), "--input", "x.txt"]) == 2
    assert "has no classification head" in capsys.readouterr().err


def test_integer_ratings_are_classes_unless_regression_is_asked(tmp_path):
    from minimoe.errors import MiniMoEError
    from minimoe.jobs.evaluate import resolve_task

    ratings = tmp_path / "ratings.csv"
    ratings.write_text("text,stars\n" + "".join(f"{s},{i % 5 + 1}\n" for i, s in enumerate(SENTENCES * 3)))
    files, columns = {"train": str(ratings), "dev": str(ratings)}, (["text"], "stars")
    spec, _ = resolve_task("", "", files, *columns, None)
    assert spec.labels == ("1", "2", "3", "4", "5") and spec.name == "ratings"
    spec, _ = resolve_task("", "", files, *columns, None, regression=True)
    assert spec.labels is None and spec.metrics == ("pearson", "spearman")
    with pytest.raises(MiniMoEError, match="regression task"):
        resolve_task("", "", files, *columns, ["1", "2"], regression=True)


@pytest.mark.slow
def test_an_onnx_export_scores_as_the_model_and_a_bare_encoder_is_refused(save_classifier, mnli_dir, tmp_path, capsys):
    """`evaluate --onnx`: the export runs in onnxruntime with the model directory's tokenizer and labels."""
    model = save_classifier(list(NLI))
    args = ["evaluate", "--model", str(model), "--task", "mnli", "--data_dir", str(mnli_dir)]
    scores = {}
    for name, extra in (("torch", []), ("onnx", ["--onnx", str(tmp_path / "m.onnx")])):
        if extra:
            assert main(["export", "--model", str(model), "--output", extra[1]]) == 0
        assert main([*args, *extra, "--output", str(tmp_path / f"{name}.json")]) == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["onnx"]["onnx"] == str(tmp_path / "m.onnx")
    for key in ("accuracy", "accuracy_mismatched"):
        assert scores["onnx"][key] == scores["torch"][key]

    encoder = tmp_path / "encoder.onnx"
    assert main(["export", "--model", str(tiny_bare_encoder(model, tmp_path)), "--output", str(encoder)]) == 0
    capsys.readouterr()
    assert main([*args, "--onnx", str(encoder)]) == 2
    assert "is not a classifier export" in capsys.readouterr().err
    assert main([*args, "--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err


def tiny_bare_encoder(classifier_dir, tmp_path):
    """The classifier's encoder alone, saved (an export of it outputs hidden states, not logits)."""
    from minimoe.modeling import MiniMoEForSequenceClassification

    path = tmp_path / "encoder"
    MiniMoEForSequenceClassification.from_pretrained(classifier_dir).minimoe.save_pretrained(path)
    return path


def test_long_texts_fit_the_model_and_a_longer_max_length_is_refused(save_classifier, tmp_path, capsys):
    """A 64-position model: the default 128 tokens is lowered to 64 with a notice and longer texts are truncated;
    an explicit --max_length above 64 is one usage error naming both numbers.
    """
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\n" + "".join(f"{s * 40},{('neg', 'pos')[i % 2]}\n" for i, s in enumerate(SENTENCES)))
    args = ["evaluate", "--model", str(save_classifier(["neg", "pos"])), "--dev_file", str(dev)]
    args += ["--text_columns", "text", "--output", str(tmp_path / "m.json")]
    assert main(args) == 0
    assert "max_length 128 (the default) is more than the 64 tokens" in capsys.readouterr().err
    assert main([*args, "--max_length", "100"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("minimoe: error:")]
    assert len(errors) == 1 and "--max_length 100 is more than the 64 tokens" in errors[0]
