"""`minimoe predict`: any input format in, one JSON line per input out, in input order whatever the batching."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from minimoe.cli import main
from minimoe.jobs.predict import predict

TEXTS = ["the film", "people found the new album in the north", "a river", "the team played music and sang far"]


def test_length_sorted_batches_keep_input_order(save_classifier):
    path = save_classifier(["negative", "positive"])
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    texts = [(t,) for t in TEXTS]
    one_by_one = predict(model, tokenizer, texts, 1, 32, False)
    batched = predict(model, tokenizer, texts, 3, 32, False)
    assert all(a.allclose(b, atol=1e-5) for a, b in zip(one_by_one, batched))
    assert not one_by_one[0].allclose(one_by_one[1])  # distinct inputs, so an order mix-up would show
    bf16 = predict(model, tokenizer, texts, 3, 32, True)
    assert all(a.allclose(b, atol=0.05) for a, b in zip(one_by_one, bf16))


def test_stdin_text_lines_to_stdout(save_classifier):
    run = subprocess.run(
        [sys.executable, "-m", "minimoe", "predict", "--model", str(save_classifier(["neg", "pos"])), "--input", "-"],
        input="\n".join(TEXTS) + "\n\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]  # stdout holds only the predictions
    assert [p["text"] for p in lines] == TEXTS
    assert all(
        p["label"] in ("neg", "pos") and sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-4) for p in lines
    )
    assert "== predict done ==" in run.stderr


def test_pairs_from_jsonl_and_tsv_and_regression_scores(save_classifier, tmp_path, capsys):
    model = save_classifier([])  # regression
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"a": t, "b": t[::-1]}) + "\n" for t in TEXTS))
    (tmp_path / "pairs.tsv").write_text("a\tb\n" + "".join(f"{t}\t{t[::-1]}\n" for t in TEXTS))
    outputs = []
    for name in ("pairs.jsonl", "pairs.tsv"):
        out = tmp_path / f"{name}.out"
        args = ["predict", "--model", str(model), "--input", str(tmp_path / name), "--text_columns", "a", "b"]
        assert main([*args, "--output", str(out)]) == 0
        outputs.append([json.loads(line) for line in out.read_text().splitlines()])
    assert outputs[0] == outputs[1] and set(outputs[0][0]) == {"text", "text_pair", "score"}
    assert main(["predict", "--model", str(model), "--input", str(tmp_path / "pairs.tsv"), "--text_columns", "x"]) == 2
    assert "pairs.tsv:2: no column 'x'" in capsys.readouterr().err
