"""`minimoe predict`: any input format in, one JSON line per input out, in input order whatever the batching."""

import json
import random
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
    assert [p["text"] for p in lines] == [*TEXTS, ""] and lines[-1] == {"text": "", "label": None, "empty": True}
    assert all(
        p["label"] in ("neg", "pos") and sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        for p in lines[:-1]
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


# Characters that str.splitlines() or a text-mode stdin would end a line at, and other bytes users' text holds.
HOSTILE = ["\u2028", "\u2029", "\x85", "\f", "\v", "\x1c", "\x1d", "\x1e", "\r", "\x00", "\ufeff", "\U0001f600", "\t"]


def hostile_lines(n: int = 2000) -> list[str]:
    """Text lines holding every HOSTILE character; blank and whitespace-only lines; five 100k-character lines."""
    rng = random.Random(0)
    words = " ".join(TEXTS).split()
    lines = []
    for i in range(n):
        if i % 97 == 5:
            lines.append(rng.choice(["", " ", "\f\v", "\t "]))
        elif i % 400 == 11:
            lines.append(("the film " * 11200)[:100_000])
        else:
            tokens = [rng.choice(words) for _ in range(rng.randint(1, 12))]
            tokens.insert(rng.randint(0, len(tokens) - 1), rng.choice(HOSTILE) * rng.randint(1, 3))
            lines.append(" ".join(tokens))
    return lines


def test_one_output_line_per_input_line_from_a_file_and_from_stdin(save_classifier, tmp_path):
    """2,000 hostile lines (\\n and \\r\\n ends, a BOM first) give 2,000 outputs in order, the same for both sources."""
    model, lines = save_classifier(["neg", "pos"]), hostile_lines()
    data = "\ufeff".encode() + b"".join(line.encode() + (b"\r\n" if i % 3 else b"\n") for i, line in enumerate(lines))
    (tmp_path / "in.txt").write_bytes(data)
    assert (
        main(["predict", "--model", str(model), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out")])
        == 0
    )
    from_file = (tmp_path / "out").read_text().split("\n")
    run = subprocess.run(
        [sys.executable, "-m", "minimoe", "predict", "--model", str(model)],
        input=data,
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    from_stdin = run.stdout.decode().split("\n")
    assert from_file == from_stdin and len(from_file) == len(lines) + 1 and from_file[-1] == ""  # a final newline
    outputs = [json.loads(line) for line in from_file[:-1]]
    assert [o["text"] for o in outputs] == lines
    for line, output in zip(lines, outputs):
        if line.strip():
            assert output["label"] in ("neg", "pos") and "empty" not in output
        else:
            assert output == {"text": line, "label": None, "empty": True}


def test_null_and_blank_texts_are_marked_empty(save_classifier, tmp_path):
    rows = [
        {"a": "the film", "b": None},
        {"a": None, "b": "a river"},
        {"a": "the team", "b": " "},
        {"a": "x", "b": "y"},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["predict", "--model", str(save_classifier([])), "--input", str(tmp_path / "in.jsonl")]
    assert main([*args, "--text_columns", "a", "b", "--output", str(tmp_path / "out")]) == 0
    outputs = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert outputs[:3] == [{"text": r["a"], "text_pair": r["b"], "score": None, "empty": True} for r in rows[:3]]
    assert isinstance(outputs[3]["score"], float)  # not a prediction for the text "None"
