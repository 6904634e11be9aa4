"""`minimoe inspect` as users run it: table, JSON and PNG; the moefy init found from the run; dense students."""

import json

import pytest

from minimoe.cli import main
from minimoe.distill.teachers import load_teacher
from minimoe.modeling import init_student
from minimoe.recipe import dump_recipe
from minimoe.saving import save_model
from minimoe.training.distillation import DistillConfig, StudentConfig, student_config
from minimoe.training.trainer import TrainConfig


def fresh_run(teacher_dir, tmp_path, experts=4, init="moefy"):
    """A distill run directory whose student is still its initialisation (recipe.yaml + student/)."""
    from transformers import AutoTokenizer

    shape = StudentConfig(layers=2, hidden=32, heads=4, intermediate=32, experts=experts, init=init)
    cfg = DistillConfig(teacher=str(teacher_dir), student=shape, train=TrainConfig(output_dir=str(tmp_path), seed=3))
    student = init_student(student_config(load_teacher(teacher_dir), shape), seed=3, init=init)
    save_model(student, AutoTokenizer.from_pretrained(teacher_dir), tmp_path / "student")
    (tmp_path / "recipe.yaml").write_text(dump_recipe(cfg))
    return tmp_path / "student"


def vocabulary_words(teacher_dir):
    """The tiny teacher's words (its vocabulary without the special tokens and punctuation)."""
    return (teacher_dir / "vocab.txt").read_text().split()[7:]


@pytest.fixture
def texts(tiny_teacher_dir, tmp_path):
    words = vocabulary_words(tiny_teacher_dir)
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(" ".join(words[i : i + 7]) for i in range(20)) + "\n\n")
    return path


def test_cli_writes_table_json_png_and_finds_the_moefy_init(tiny_teacher_dir, tmp_path, texts, capsys):
    student = fresh_run(tiny_teacher_dir, tmp_path / "run")
    assert main(["inspect", "--model", str(student), "--texts", str(texts), "--output_dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "load per expert" in out and "top tokens" in out and "== inspect done ==" in out
    report = json.loads((tmp_path / "o" / "inspect.json").read_text())
    assert report["sequences"] == 20 and len(report["layers"]) == 2
    for layer in report["layers"]:
        assert sum(layer["load"]) == pytest.approx(1.0)
        assert layer["init_distance"] == [0.0] * 4  # the student is its own rebuilt init
        assert 0.3 < layer["mean_cosine_w_in"] < 1  # moefy: experts share 2/3 of their neurons
    assert (tmp_path / "o" / "inspect.png").stat().st_size > 5000


def test_independent_init_experts_are_dissimilar(tiny_teacher_dir, tmp_path, texts):
    student = fresh_run(tiny_teacher_dir, tmp_path / "run", init="independent")
    assert main(["inspect", "--model", str(student), "--texts", str(texts)]) == 0
    report = json.loads((student / "inspect.json").read_text())
    assert all(abs(layer["mean_cosine_w_in"]) < 0.1 for layer in report["layers"])


def test_dense_student_and_missing_texts_are_one_clear_line(tiny_teacher_dir, tmp_path, capsys):
    dense = fresh_run(tiny_teacher_dir, tmp_path / "dense", experts=1)
    assert main(["inspect", "--model", str(dense)]) == 2
    assert "dense student" in capsys.readouterr().err
    moe = fresh_run(tiny_teacher_dir, tmp_path / "moe")
    assert main(["inspect", "--model", str(moe), "--texts", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_task_dev_texts(tiny_teacher_dir, tmp_path):
    task = tmp_path / "data" / "sst2"
    task.mkdir(parents=True)
    words = vocabulary_words(tiny_teacher_dir)
    lines = ["sentence\tlabel"] + [f"{' '.join(words[i : i + 5])}\t{i % 2}" for i in range(30)]
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    student = fresh_run(tiny_teacher_dir, tmp_path / "run")
    args = ["--model", str(student), "--task", "sst2", "--data_root", str(tmp_path / "data"), "--max_texts", "12"]
    assert main(["inspect", *args]) == 0
    assert json.loads((student / "inspect.json").read_text())["sequences"] == 12


def test_distill_writes_inspection_of_its_student(tiny_teacher_dir, tiny_corpus, tmp_path):
    shape = ["--student.layers", "1", "--student.hidden", "32", "--student.heads", "4", "--student.intermediate", "32"]
    train = ["--train.output_dir", str(tmp_path / "d"), "--train.max_steps", "3", "--train.batch_size", "4"]
    args = ["--teacher", str(tiny_teacher_dir), "--corpus", str(tiny_corpus), "--relation_heads", "4"]
    assert main(["distill", *args, *shape, *train, "--max_length", "24", "--train.lr", "1e-2"]) == 0
    report = json.loads((tmp_path / "d" / "inspect.json").read_text())
    assert report["sequences"] > 0 and (tmp_path / "d" / "inspect.png").is_file()
    assert all(min(layer["init_distance"]) > 0 for layer in report["layers"])  # trained away from the moefy init
    assert (tmp_path / "d" / "summary.json").is_file()


def test_long_texts_fit_the_model(tiny_teacher_dir, tmp_path, capsys):
    student = fresh_run(tiny_teacher_dir, tmp_path / "run")  # 64 positions, as its teacher
    words = vocabulary_words(tiny_teacher_dir)
    (tmp_path / "long.txt").write_text("\n".join(" ".join(words) * 3 for _ in range(4)) + "\n")
    args = ["inspect", "--model", str(student), "--texts", str(tmp_path / "long.txt"), "--output_dir", str(tmp_path)]
    assert main(args) == 0
    assert "max_length 128 (the default) is more than the 64 tokens" in capsys.readouterr().err
    assert main([*args, "--max_length", "100"]) == 2
    assert "--max_length 100 is more than the 64 tokens" in capsys.readouterr().err
