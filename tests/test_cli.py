"""The `minimoe` command end to end on tiny models: jobs run, bad input is one clear line, kills resume."""

import errno
import importlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from minimoe.cli import main
from minimoe.modeling import MiniMoEConfig, MiniMoEForSequenceClassification
from minimoe.saving import save_model
from minimoe.training import distillation as distill_job
from minimoe.training.run_dir import checkpoints

from .conftest import cli_signalled, same_run

DISTILL = [
    "--student.layers",
    "1",
    "--student.hidden",
    "32",
    "--student.heads",
    "4",
    "--student.intermediate",
    "32",
    "--max_length",
    "24",
    "--relation_heads",
    "4",
    "--train.batch_size",
    "4",
    "--train.threads",
    "1",
]


def distill(teacher, corpus, out, *extra):
    return main(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--corpus",
            str(corpus),
            "--train.output_dir",
            str(out),
            *DISTILL,
            *extra,
        ]
    )


def test_distill_then_finetune_with_kd(tiny_teacher_dir, tiny_corpus, task_dir, tmp_path, capsys):
    assert distill(tiny_teacher_dir, tiny_corpus, tmp_path / "d", "--train.max_steps", "4") == 0
    assert "== distill done ==" in capsys.readouterr().out
    student = tmp_path / "d" / "student"
    assert not any("relation" in k or "pooler" in k for k in load_file(student / "model.safetensors"))
    assert (student / "modeling_minimoe.py").is_file() and "base_model:" in (student / "README.md").read_text()
    assert (tmp_path / "d" / "recipe.yaml").is_file() and (tmp_path / "d" / "metrics.jsonl").is_file()
    assert (tmp_path / "d" / "curves.png").stat().st_size > 1000  # the job plots its own curves

    common = [
        "--task",
        "sst2",
        "--data_dir",
        str(task_dir),
        "--train.epochs",
        "2",
        "--train.batch_size",
        "8",
        "--max_length",
        "16",
        "--train.threads",
        "1",
    ]
    assert main(["finetune", "--model", str(tiny_teacher_dir), "--train.output_dir", str(tmp_path / "t"), *common]) == 0

    def student_run(name, *kd):
        assert (
            main(["finetune", "--model", str(student), "--train.output_dir", str(tmp_path / name), *kd, *common]) == 0
        )
        return load_file(tmp_path / name / "checkpoints" / "step-6" / "model.safetensors")

    teacher = ["--teacher", str(tmp_path / "t" / "best")]
    with_kd, without, kd_weight_zero = (
        student_run("s", *teacher),
        student_run("plain"),
        student_run("a0", *teacher, "--kd_alpha", "0"),
    )
    assert all(torch.equal(without[k], kd_weight_zero[k]) for k in without)  # same seed, same run: deterministic
    assert any(not torch.allclose(without[k], with_kd[k]) for k in without)  # and KD changes what is learnt

    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["kd_teacher"] and results["final"]
    # the reported best accuracy is the saved best model's accuracy on the dev file
    best = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s" / "best").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "s" / "best")
    texts, labels = zip(*(line.split("\t") for line in (task_dir / "dev.tsv").read_text().splitlines()[1:]))
    with torch.no_grad():
        preds = best(**tokenizer(list(texts), padding=True, truncation=True, max_length=16, return_tensors="pt")).logits
    accuracy = (preds.argmax(-1) == torch.tensor([int(label) for label in labels])).float().mean().item()
    assert results["best"]["accuracy"] == round(accuracy, 4)
    metrics = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/accuracy" in m for m in metrics) and any("train/balance" in m for m in metrics)
    assert (tmp_path / "s" / "curves.png").stat().st_size > 1000


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "minimoe", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def assert_one_clear_line(run, pattern):
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("minimoe: error:")]
    assert len(errors) == 1 and pattern in errors[0], run.stderr[-2000:]


def test_missing_and_corrupt_inputs_are_one_line(tiny_teacher_dir, tmp_path, task_dir):
    assert_one_clear_line(run_cli("distill", "--teacher", tmp_path / "nope", "--corpus", "x.txt"), "nope")
    assert_one_clear_line(
        run_cli("distill", "--teacher", tiny_teacher_dir, "--corpus", tmp_path / "none.txt"), "none.txt"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_clear_line(run_cli("distill", "--teacher", tiny_teacher_dir, "--corpus", empty, *DISTILL), "empty.txt")
    (task_dir / "dev.tsv").write_text("sentence\tlabel\nonly one column\n")
    assert_one_clear_line(
        run_cli("finetune", "--model", tiny_teacher_dir, "--task", "sst2", "--data_dir", task_dir), "dev.tsv"
    )
    bad_recipe = tmp_path / "r.yaml"
    bad_recipe.write_text("student: {layerz: 1}\n")
    assert_one_clear_line(run_cli("distill", "--config", bad_recipe), "layerz")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert_one_clear_line(run_cli("convert", broken, tmp_path / "out"), "config.json")


def test_tokenizer_that_does_not_fit_the_teacher(tiny_teacher_dir, tmp_path, tiny_corpus):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for f in tiny_teacher_dir.iterdir():
        (teacher / f.name).write_bytes(f.read_bytes())
    words = (teacher / "vocab.txt").read_text().splitlines()
    (teacher / "vocab.txt").write_text("\n".join(words + [f"extra{i}" for i in range(500)]) + "\n")
    (teacher / "tokenizer.json").unlink()
    assert_one_clear_line(run_cli("distill", "--teacher", teacher, "--corpus", tiny_corpus, *DISTILL), "tokenizer")


def test_nan_loss_is_one_line(tiny_teacher_dir, tmp_path, tiny_corpus):
    teacher = tmp_path / "nan-teacher"
    teacher.mkdir()
    for f in tiny_teacher_dir.iterdir():
        (teacher / f.name).write_bytes(f.read_bytes())
    weights = load_file(teacher / "model.safetensors")
    weights = {k: torch.full_like(v, float("nan")) if "word_embeddings" in k else v for k, v in weights.items()}
    save_file(weights, teacher / "model.safetensors")
    run = run_cli(
        "distill",
        "--teacher",
        teacher,
        "--corpus",
        tiny_corpus,
        "--train.output_dir",
        tmp_path / "o",
        "--train.max_steps",
        "3",
        *DISTILL,
    )
    assert_one_clear_line(run, "loss became nan at step 1")


@pytest.mark.slow
def test_killed_distillation_resumes_to_the_planned_steps(tiny_teacher_dir, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "minimoe",
        "distill",
        "--teacher",
        str(tiny_teacher_dir),
        "--corpus",
        str(tiny_corpus),
        "--train.output_dir",
        str(out),
        "--train.max_steps",
        "400",
        "--train.save_every",
        "5",
        "--train.log_every",
        "1",
        *DISTILL,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("step-*")):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # no cleanup of any kind
    proc.wait()
    done = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    assert done and not (out / "summary.json").exists()
    killed_at = int(done[-1].name.split("-")[1])
    assert killed_at < 400
    run = run_cli(*args[3:], "--train.resume")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 400
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 400 and min(s for s in steps if s > killed_at) == killed_at + 1


def test_a_second_run_on_a_busy_output_dir_is_one_line_before_loading_anything(tiny_corpus, tmp_path):
    (tmp_path / "o").mkdir()
    lock = f"{os.getpid()} {socket.gethostname()}\n"  # this test is alive
    (tmp_path / "o" / "run.lock").write_text(lock)
    teacher = tmp_path / "no-teacher-here"  # refused at the lock, before the teacher would fail to load
    run = run_cli("distill", "--teacher", teacher, "--corpus", tiny_corpus, "--train.output_dir", tmp_path / "o")
    assert_one_clear_line(run, f"in use by another run (pid {os.getpid()} ")
    assert files_of(tmp_path / "o") == {"run.lock": lock.encode()}  # refused before writing anything


def test_model_without_tokenizer_files_and_unknown_names_are_one_line(
    tiny_teacher_dir, tiny_corpus, task_dir, tmp_path
):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_teacher_dir / name).read_bytes())
    run = run_cli("finetune", "--model", bare, "--task", "sst2", "--data_dir", task_dir, "--train.output_dir", tmp_path)
    assert_one_clear_line(run, f"{bare} has no tokenizer files (one of tokenizer.json, vocab.txt")
    assert len(run.stderr.strip().splitlines()) == 1
    offline = {"HF_HUB_OFFLINE": "1"}
    run = run_cli("distill", "--teacher", "no-such-teacher", "--corpus", tiny_corpus, env=offline)
    assert_one_clear_line(run, "no-such-teacher: it is not a packaged teacher (all-MiniLM-L6-v2, all-mpnet-base-v2)")
    assert "not a local model directory, and the hub did not provide it" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_resumes(tiny_teacher_dir, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    args = ["distill", "--teacher", tiny_teacher_dir, "--corpus", tiny_corpus, "--train.output_dir", out]
    args += ["--train.max_steps", "300", "--train.save_every", "0", "--train.log_every", "1", *DISTILL]
    proc = subprocess.Popen([sys.executable, "-m", "minimoe", *map(str, args)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends before it kills the job
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, stderr[-2000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("minimoe: stopped by SIGTERM at step ")]
    assert len(stopped) == 1 and "rerun with --train.resume" in stopped[0] and "Traceback" not in stderr
    step = int(stopped[0].split("at step ")[1].split(":")[0])
    assert (out / "checkpoints" / f"step-{step}" / "trainer_state.json").is_file() and step < 300
    assert not (out / "run.lock").exists() and not (out / "summary.json").exists()
    run = run_cli(*args, "--train.resume")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 300
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 301))


@pytest.mark.parametrize(
    "command, hint",
    [
        ("distill", "; rerun with --train.resume to continue from the last checkpoint"),
        ("study", "; rerun the same command to continue (finished stages are kept)"),
        ("evaluate", ""),  # nothing to resume: no hint naming a flag the command does not take
    ],
)
def test_ctrl_c_says_how_to_go_on_for_that_command(command, hint, monkeypatch, capsys):
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"minimoe.jobs.{command}"), "run", interrupted)
    assert main([command]) == 130
    assert capsys.readouterr().err == f"minimoe: interrupted{hint}\n"


def tiny_classifier(teacher_dir, path) -> str:
    """A saved random 2-expert MiniMoE classifier (labels a, b) with the tiny teacher's tokenizer and positions."""
    teacher = AutoConfig.from_pretrained(teacher_dir)
    config = MiniMoEConfig.for_student(1, 32, 2, 4, 32, teacher=teacher, num_labels=2, id2label={0: "a", 1: "b"})
    save_model(MiniMoEForSequenceClassification(config), AutoTokenizer.from_pretrained(teacher_dir), path)
    return str(path)


SHAPE = ["--student.layers", "1", "--student.hidden", "32", "--student.heads", "4", "--student.intermediate", "32"]


def test_long_sentences_distil_on_a_64_position_teacher(tiny_teacher_dir, tmp_path, capsys):
    """Pairs of the default 128 tokens would overrun the teacher's 64 positions: the default is lowered, with a
    notice and in the recorded recipe; an explicit longer --max_length is one usage error naming both numbers.
    """
    words = (tiny_teacher_dir / "vocab.txt").read_text().split()[7:]
    corpus = tmp_path / "long.txt"
    corpus.write_text("\n\n".join("\n".join(" ".join(words) + " ." for _ in range(3)) for _ in range(4)) + "\n")
    args = ["distill", "--teacher", str(tiny_teacher_dir), "--corpus", str(corpus), *SHAPE, "--relation_heads", "4"]
    args += ["--train.batch_size", "4", "--train.threads", "1", "--train.max_steps", "2"]
    assert main([*args, "--train.output_dir", str(tmp_path / "d")]) == 0
    assert "max_length 128 (the default) is more than the 64 tokens" in capsys.readouterr().err
    assert "max_length: 64\n" in (tmp_path / "d" / "recipe.yaml").read_text()
    assert main([*args, "--train.output_dir", str(tmp_path / "e"), "--max_length", "100"]) == 2
    assert "--max_length 100 is more than the 64 tokens" in capsys.readouterr().err


def test_non_utf8_inputs_are_one_line_naming_the_file(tiny_teacher_dir, tmp_path, monkeypatch, capsys):
    latin = "text,label\ncliché,a\n".encode("latin-1")
    for name in ("data.csv", "texts.txt", "recipe.yaml"):
        (tmp_path / name).write_bytes(latin)
    (tmp_path / "nul.txt").write_bytes(b"\0" * 1000)  # UTF-8, but no text at all
    model = tiny_classifier(tiny_teacher_dir, tmp_path / "models" / "classifier")
    cases = [
        (
            ["finetune", "--model", str(tiny_teacher_dir), "--train_file", str(tmp_path / "data.csv")],
            "data.csv:2: not UTF-8 text (byte 0xe9",
        ),
        (
            ["evaluate", "--model", model, "--dev_file", str(tmp_path / "data.csv"), "--text_columns", "text"],
            "data.csv:2: not UTF-8 text (byte 0xe9",
        ),
        (
            ["predict", "--model", model, "--input", str(tmp_path / "texts.txt")],
            "texts.txt:2: not UTF-8 text (byte 0xe9",
        ),
        (["predict", "--model", model], "stdin:2: not UTF-8 text (byte 0xe9"),
        (["distill", "--config", str(tmp_path / "recipe.yaml")], "recipe.yaml is not UTF-8 text"),
        (
            ["inspect", "--model", model, "--texts", str(tmp_path / "texts.txt")],
            "texts.txt:2: not UTF-8 text (byte 0xe9",
        ),
    ]
    for argv, message in cases:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(latin)))
        assert main(argv) == 2, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("minimoe: error:")]
        assert len(errors) == 1 and message in errors[0], (argv, errors)
    assert main(["distill", "--teacher", str(tiny_teacher_dir), "--corpus", str(tmp_path / "nul.txt")]) == 2
    assert "nul.txt: corpus source holds no text" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--batch_size", "0"], "batch_size must be at least 1, got 0"),
        (["predict", "--max_length", "1"], "max_length must be at least 8, got 1"),
        (["predict", "--text_columns", "a", "b", "c"], "text_columns must name 1 or 2 columns"),
        (["predict", "--output", ""], "input and output must name a file"),
        (["evaluate", "--batch_size", "0"], "batch_size must be at least 1, got 0"),
        (["evaluate", "--max_length", "4"], "max_length must be at least 8, got 4"),
        (["evaluate", "--max_eval_examples", "-1"], "max_eval_examples must not be negative, got -1"),
        (["inspect", "--max_texts", "0"], "max_texts must be at least 1, got 0"),
        (["inspect", "--top_tokens", "0"], "top_tokens must be at least 1, got 0"),
        (["inspect", "--max_length", "2"], "max_length must be at least 8, got 2"),
        (["export", "--opset", "3"], "opset must be at least 7"),
        (["export", "--tolerance", "0"], "tolerance must be positive, got 0.0"),
        (["flops", "MODEL", "--seq", "0"], "--batch and --seq must be at least 1, got 1 and 0"),
        (["flops", "MODEL", "--batch", "0"], "--batch and --seq must be at least 1, got 0 and 128"),
        (["flops", "MODEL", "--seq", "100000"], "--seq 100000 is more than the 64 tokens"),
    ],
)
def test_bad_flags_are_one_line(argv, message, tiny_teacher_dir, capsys):
    assert main([str(tiny_teacher_dir) if a == "MODEL" else a for a in argv]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("minimoe: error:")]
    assert len(errors) == 1 and message in errors[0], errors


def test_an_unreachable_hub_fails_at_once_without_retries(tiny_corpus):
    """Nothing listens on port 9: transformers alone would retry each file for ~30 s, printing each retry."""
    unreachable = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    run = run_cli("distill", "--teacher", "no-such/model", "--corpus", tiny_corpus, env=unreachable)
    assert_one_clear_line(run, "no-such/model: it is not a packaged teacher")
    assert "http://127.0.0.1:9 cannot be reached and no copy is cached" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1  # no retry lines


def files_of(directory):
    """Every file under `directory` with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def error_line(stderr):
    (line,) = [line for line in stderr.splitlines() if line.startswith("minimoe: error:")]
    return line


def test_a_fresh_run_never_damages_an_earlier_one(tiny_teacher_dir, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    steps = ["--train.save_every", "2", "--train.log_every", "1"]
    assert distill(tiny_teacher_dir, tiny_corpus, out, "--train.max_steps", "6", *steps) == 0
    before = files_of(out)
    capsys.readouterr()
    assert distill(tiny_teacher_dir, tiny_corpus, out, "--train.max_steps", "3", *steps) == 2  # no --train.resume
    line = error_line(capsys.readouterr().err)
    assert f"{out} holds another run (checkpoints/step-6, student, summary.json)" in line
    assert all(way in line for way in ("--train.resume", "another --train.output_dir", "--train.overwrite"))
    assert files_of(out) == before  # nothing mixed, appended or pruned

    # --train.overwrite first moves the earlier run aside, whole; the new run starts clean
    assert distill(tiny_teacher_dir, tiny_corpus, out, "--train.max_steps", "3", *steps, "--train.overwrite") == 0
    (old,) = tmp_path.glob("run.old-*")
    assert f"moved the previous run in {out} to {old}" in capsys.readouterr().err
    assert files_of(old) == before
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]  # its own, kept
    assert distill(tiny_teacher_dir, tiny_corpus, out, "--train.max_steps", "3", *steps, "--train.resume") == 0
    assert "resumed from step 3" in capsys.readouterr().err  # the new run, not the old one


def test_a_refused_resume_changes_no_file(tiny_teacher_dir, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--train.max_steps", "4", "--train.save_every", "2", "--train.log_every", "1"]
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args) == 0
    before = files_of(out)
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args, "--train.resume", "--train.lr", "1e-2") == 2
    assert "the recipe changed (train.lr: 0.0003 -> 0.01)" in error_line(capsys.readouterr().err)
    assert files_of(out) == before  # recipe.yaml, TensorBoard events and metrics.jsonl included


def test_a_fallback_checkpoint_passes_the_recipe_check_too(tiny_teacher_dir, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--train.max_steps", "6", "--train.save_every", "2", "--train.log_every", "1"]
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args) == 0
    (out / "checkpoints" / "step-6" / "trainer_state.json").write_text("{")  # the newest is corrupt
    before = files_of(out)
    capsys.readouterr()
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args, "--train.resume", "--train.lr", "1e-2") == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {out / 'checkpoints' / 'step-4'}: the recipe changed (train.lr" in error_line(err)
    assert files_of(out) == before
    # with the run's own recipe it resumes from the fallback, and says so on stderr (stdout is the summary's)
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args, "--train.resume") == 0
    captured = capsys.readouterr()
    assert f"checkpoint {out / 'checkpoints' / 'step-6'} is unreadable" in captured.err
    assert "falling back to step-4" in captured.err and "resumed from step 4 " in captured.err
    assert "unreadable" not in captured.out and "resumed" not in captured.out


def test_a_run_that_fails_leaves_no_lock_and_no_directory_behind(tiny_teacher_dir, tmp_path):
    missing = ["distill", "--teacher", str(tiny_teacher_dir), "--corpus", str(tmp_path / "none.txt")]
    assert main([*missing, "--train.output_dir", str(tmp_path / "new" / "run")]) == 2  # fails after the lock
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert main([*missing, "--train.output_dir", str(tmp_path / "kept")]) == 2
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


def mount_tmpfs(directory, options):
    """Mount a tmpfs with `options` on `directory` if this process may (root); whether it did."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True).returncode
        == 0
    )


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory no run can write into: a read-only tmpfs as root (root ignores file modes), else mode 555."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if mount_tmpfs(directory, "ro,size=1m"):
        yield directory
        subprocess.run(["umount", str(directory)], check=True)
    elif os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
    else:
        pytest.skip("root, and no read-only tmpfs could be mounted")


def test_a_read_only_output_directory_is_one_line_naming_it(tiny_teacher_dir, tiny_corpus, read_only_dir, capsys):
    assert distill(tiny_teacher_dir, tiny_corpus, read_only_dir) == 2
    assert f"cannot create the lock file {read_only_dir / 'run.lock'} (" in error_line(capsys.readouterr().err)
    assert distill(tiny_teacher_dir, tiny_corpus, read_only_dir / "run") == 2
    assert f"cannot use {read_only_dir / 'run'} as the run directory (" in error_line(capsys.readouterr().err)


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a 16 MB tmpfs (as root) that `fill()` leaves without space and `free()` frees again.
    Where no tmpfs can be mounted, `fill()` raises the ENOSPC the next write on a full disk would."""
    directory = tmp_path / "disk"
    directory.mkdir()
    mounted = mount_tmpfs(directory, "size=16m")
    ballast = directory / "ballast"

    def fill():
        if not mounted:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, bytes(1 << 16)):
                pass
        except OSError as err:
            assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)

    yield SimpleNamespace(path=directory, fill=fill, free=lambda: ballast.unlink(missing_ok=True))
    if mounted:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_full_disk_during_the_final_model_save_is_one_line_and_resumable(
    tiny_teacher_dir, tiny_corpus, small_disk, tmp_path, monkeypatch, capsys
):
    args = ["--train.max_steps", "4", "--train.save_every", "2", "--train.log_every", "1"]
    assert distill(tiny_teacher_dir, tiny_corpus, tmp_path / "straight", *args) == 0
    out, real_save = small_disk.path / "run", distill_job.save_model

    def save_on_a_full_disk(*a, **kw):
        small_disk.fill()
        return real_save(*a, **kw)

    monkeypatch.setattr(distill_job, "save_model", save_on_a_full_disk)
    capsys.readouterr()
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args) == 2
    line = error_line(capsys.readouterr().err)
    assert f"could not write {out / 'student'} (" in line and "No space left on device" in line
    assert f"the last good checkpoint {out / 'checkpoints' / 'step-4'} is intact" in line
    assert [p.name for p in checkpoints(out)] == ["step-4", "step-2"]
    assert not (out / "student").exists() and not list(out.glob(".*"))  # no half-written model, no temp files
    small_disk.free()
    monkeypatch.setattr(distill_job, "save_model", real_save)
    assert distill(tiny_teacher_dir, tiny_corpus, out, *args, "--train.resume") == 0
    same_run(out, tmp_path / "straight")


# The CLI with both runs held between reading a stale lock and taking it over, until both have read it; the
# "late" one then waits a second, so the other takes it first (argv: barrier directory, early|late, CLI args).
RACING_RESTART = """
import os, sys, time
from pathlib import Path
import minimoe.files
barrier, late, args = Path(sys.argv[1]), sys.argv[2] == "late", sys.argv[3:]
pid_alive = minimoe.files._pid_alive

def when_both_read_the_lock(pid):
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(late)
    return pid_alive(pid)

minimoe.files._pid_alive = when_both_read_the_lock
from minimoe.cli import main
sys.exit(main(args))
"""


@pytest.mark.slow
def test_two_restarts_racing_for_the_same_stale_lock_one_wins(tiny_teacher_dir, tiny_corpus, tmp_path):
    out, barrier = tmp_path / "run", tmp_path / "barrier"
    out.mkdir()
    barrier.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")  # left by a killed run
    args = ["distill", "--teacher", tiny_teacher_dir, "--corpus", tiny_corpus, "--train.output_dir", out]
    args += ["--train.max_steps", "2", *DISTILL]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RACING_RESTART, str(barrier), role, *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("early", "late")
    ]
    stderrs = [run.communicate(timeout=300)[1] for run in runs]
    assert sorted(run.returncode for run in runs) == [0, 2], stderrs
    winner, loser = sorted(zip(runs, stderrs), key=lambda r: r[0].returncode)
    assert f"taking over the stale lock {out / 'run.lock'} (pid {dead.pid} has ended)" in winner[1]
    assert f"{out} is in use by another run" in error_line(loser[1])
    assert json.loads((out / "summary.json").read_text())["steps"] == 2 and not (out / "run.lock").exists()


@pytest.mark.slow
def test_sigterm_before_training_stops_at_once_and_the_rerun_finishes(tiny_teacher_dir, tiny_corpus, tmp_path):
    """A stop during a corpus or teacher-cache build (hours at paper scale) does not wait for the training loop."""
    args = ["distill", "--teacher", tiny_teacher_dir, "--corpus", tiny_corpus, *DISTILL, "--train.max_steps", "2"]
    args += ["--cache_teacher"]
    out = tmp_path / "run"
    run = cli_signalled(
        "SIGTERM", "minimoe.training.distillation:build_teacher_cache", 1, *args, "--train.output_dir", out
    )
    assert run.returncode == 143, run.stderr[-2000:]
    (stopped,) = [line for line in run.stderr.splitlines() if line.startswith("minimoe: stopped by SIGTERM")]
    assert "outside the training loop: no checkpoint yet; rerun with --train.resume" in stopped
    assert "Traceback" not in run.stderr and not (out / "run.lock").exists()
    assert main([*map(str, args), "--train.output_dir", str(out), "--train.resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "job, target, nth",
    [
        ("finetune", "minimoe.training.trainer:Trainer.run_eval", 2),  # the final evaluation (the 1st ends epoch 1)
        ("finetune", "accelerate:Accelerator.save_state", 1),  # the final checkpoint (save_every 0: the only one)
        ("distill", "minimoe.training.distillation:save_model", 1),  # the model, after training
    ],
)
def test_sigterm_at_the_end_exits_143_and_resumes_to_the_same_run(
    job, target, nth, tiny_teacher_dir, tiny_corpus, task_dir, tmp_path
):
    if job == "finetune":
        args = ["finetune", "--model", tiny_teacher_dir, "--task", "sst2", "--data_dir", task_dir, "--max_length", "16"]
        args += ["--train.epochs", "2", "--train.batch_size", "8", "--train.threads", "1", "--train.log_every", "1"]
        done, model = "results.json", "best"
    else:
        args = ["distill", "--teacher", tiny_teacher_dir, "--corpus", tiny_corpus, *DISTILL]
        args += ["--train.max_steps", "6", "--train.log_every", "1"]
        done, model = "summary.json", "student"
    assert main([*map(str, args), "--train.output_dir", str(tmp_path / "straight")]) == 0
    out = tmp_path / "run"
    run = cli_signalled("SIGTERM", target, nth, *args, "--train.output_dir", out)
    assert run.returncode == 143, run.stderr[-2000:]
    (stopped,) = [line for line in run.stderr.splitlines() if line.startswith("minimoe: stopped by SIGTERM")]
    assert f"{out / 'checkpoints' / 'step-6'}; rerun with --train.resume" in stopped and "Traceback" not in run.stderr
    assert [p.name for p in checkpoints(out)][:1] == ["step-6"] and not (out / "run.lock").exists()
    assert not [p for p in out.rglob("*") if "tmp" in p.name]  # nothing half-written
    assert main([*map(str, args), "--train.output_dir", str(out), "--train.resume"]) == 0
    same_run(out, tmp_path / "straight", done, model)
