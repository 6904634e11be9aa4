"""Recipes: every shipped YAML loads, CLI flags override it, bad fields are named."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from minimoe.errors import MiniMoEError
from minimoe.recipe import add_flags, dump_recipe, load_recipe, recipe_from_args
from minimoe.studies.config import StudyConfig, check
from minimoe.training.distillation import DistillConfig
from minimoe.training.finetuning import FinetuneConfig

CONFIGS = sorted((Path(__file__).parents[1] / "src" / "minimoe" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    if path.name.startswith(("study", "demo")):
        config = load_recipe(StudyConfig, path)
        assert config.output_dir == f"runs/{path.stem}" or path.stem.startswith("demo")
        # The capacity regimes need a seed spread; the paper's experiment runs each student once, as the paper did.
        assert len(config.seeds) >= 3 or path.stem in ("study-paper-bert-base", "demo", "demo-quick")
        check(config)  # no section field the grid owns, and the variants are well formed
        return
    cls = FinetuneConfig if path.name.startswith("finetune") else DistillConfig
    config = load_recipe(cls, path)
    assert config.train.output_dir.startswith("runs/")


def test_paper_recipe_matches_the_paper():
    cfg = load_recipe(DistillConfig, next(p for p in CONFIGS if p.name == "bert-base-minimoe-3L-384H.yaml"))
    assert (cfg.student.layers, cfg.student.hidden, cfg.student.experts, cfg.student.intermediate) == (3, 384, 4, 1536)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.grad_clip, cfg.relation_heads) == (3e-4, 128, 5.0, 32)
    assert (cfg.train.adam_epsilon, cfg.train.warmup_ratio, cfg.student.heads) == (1e-6, 0.01, 12)  # as the authors


def test_flags_override_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("student: {layers: 2, experts: 8}\ntrain: {lr: 0.001}\n")
    parser = argparse.ArgumentParser()
    add_flags(parser, DistillConfig)
    args = parser.parse_args(
        ["--config", str(recipe), "--train.lr", "0.5", "--corpus", "a.txt", "b.txt", "--train.resume"]
    )
    cfg = recipe_from_args(DistillConfig, args)
    assert cfg.student.layers == 2 and cfg.student.experts == 8  # from YAML
    assert cfg.train.lr == 0.5 and cfg.corpus == ["a.txt", "b.txt"] and cfg.train.resume is True  # flags
    assert cfg.student.hidden == 384  # default
    assert load_recipe(DistillConfig, None, {"student.layers": 5}).student.layers == 5
    assert "layers: 2" in dump_recipe(cfg)


def test_bad_recipes_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {layerz: 2}\n")
    with pytest.raises(MiniMoEError, match=r"bad.yaml.*layerz"):
        load_recipe(DistillConfig, bad)
    bad.write_text("train: {lr: fast}\n")
    with pytest.raises(MiniMoEError, match=r"field lr must be float"):
        load_recipe(DistillConfig, bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(MiniMoEError, match="not valid YAML"):
        load_recipe(DistillConfig, bad)
    with pytest.raises(MiniMoEError, match="does not exist"):
        load_recipe(DistillConfig, tmp_path / "missing.yaml")


def test_a_shipped_recipe_is_found_by_name_and_an_unknown_one_lists_them():
    cfg = load_recipe(DistillConfig, "bert-large-minimoe-4L-384H")
    assert (cfg.teacher, cfg.student.layers) == ("bert-large-uncased", 4)
    assert load_recipe(DistillConfig, "configs/bert-large-minimoe-4L-384H.yaml") == cfg  # the README's path form
    with pytest.raises(MiniMoEError, match="shipped recipes: .*bert-base-minimoe-3L-384H"):
        load_recipe(DistillConfig, "no-such-recipe")


def test_a_nested_flag_keeps_the_jobs_own_section_defaults():
    """finetune's train section has its own defaults (lr 5e-5, 3 epochs); one train flag must not reset them."""
    cfg = load_recipe(FinetuneConfig, None, {"train.lr": 1e-4})
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.warmup_ratio, cfg.train.output_dir) == (
        1e-4,
        3.0,
        0.1,
        "runs/finetune",
    )


def job_flags(job: str) -> list:
    from minimoe.cli import build_parser

    return [a for a in build_parser()._subparsers._group_actions[0].choices[job]._actions if a.dest != "help"]


JOB_NAMES = ["distill", "finetune", "evaluate", "predict", "study", "demo", "inspect", "export", "compare"]


@pytest.mark.parametrize("job", JOB_NAMES)
def test_every_flag_of_every_job_has_a_description_and_its_default(job):
    """A description is text before "(default: ...)": a help lost to a wrapped line would show the default only."""
    flags = job_flags(job)
    assert len(flags) >= 4
    for action in flags:
        description = (action.help or "").split("(default: ")[0].strip()
        assert len(description) >= 8, f"{job} {action.option_strings[0]} has no description: {action.help!r}"
        if action.dest not in ("config", "print_config"):
            assert "(default: " in action.help, f"{job} {action.option_strings[0]} shows no default"


def test_field_help_is_the_attribute_docstring_even_when_wrapped():
    from dataclasses import dataclass

    from minimoe.recipe import field_docs

    @dataclass
    class Probe:
        plain: int = 1
        """the plain one"""
        wrapped: list[str] = dataclasses.field(
            default_factory=lambda: ["a", "b"],
        )
        """a field the formatter
        wrapped, with a docstring over two lines"""
        bare: int = 0

    assert field_docs(Probe) == {
        "plain": "the plain one",
        "wrapped": "a field the formatter wrapped, with a docstring over two lines",
    }


@pytest.mark.parametrize(
    "job, flag, value, choices",
    [
        ("distill", "--student.init", "random", "moefy, independent"),
        ("distill", "--relation_source", "both", "head, last_layer"),
        ("distill", "--train.mixed_precision", "fp8", "no, bf16, fp16"),
        ("export", "--format", "tflite", "onnx, pt2"),
        ("export", "--dispatch", "grouped", "masked, dense"),
    ],
)
def test_a_choice_outside_its_literal_is_one_line_naming_the_choices(job, flag, value, choices, capsys, tmp_path):
    from minimoe.cli import main

    assert main([job, flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert f"must be one of {choices}, got {value!r}" in err and len(err.splitlines()) == 1
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"{flag.removeprefix('--').replace('.', ': {', 1)}: {value}" + ("}" if "." in flag else ""))
    assert main([job, "--config", str(recipe)]) == 2
    assert f"must be one of {choices}" in capsys.readouterr().err


def test_negative_numbers_in_scientific_notation_reach_the_field_check(capsys):
    """argparse alone reads `-1e-4` as an option ("expected one argument"); the range check must see it."""
    from minimoe.cli import main

    assert main(["distill", "--train.lr", "-1e-4"]) == 2
    assert "train.lr must be positive" in capsys.readouterr().err
    assert main(["distill", "--teacher_layer", "-2", "--print_config"]) == 0
    assert "teacher_layer: -2" in capsys.readouterr().out


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path, capsys):
    from minimoe.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("student:\n  layers: 2\n train: [1, 2\n")
    assert main(["distill", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml is not valid YAML" in err and "line " in err and len(err.splitlines()) == 1
    bad.write_bytes(b"student: {layers: 2}\n# caf\xe9\n")
    assert main(["distill", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not UTF-8" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--train.batch_size", "0", "train.batch_size must be at least 1"),
        ("--train.lr", "-1e-4", "train.lr must be positive"),
        ("--train.lr", "-0.5", "train.lr must be positive"),
        ("--train.warmup_ratio", "1.5", "train.warmup_ratio must be between 0 and 1"),
        ("--student.layers", "0", "student.layers must be at least 1"),
        ("--student.experts", "0", "student.experts must be at least 1"),
        ("--student.dropout", "1.0", "student.dropout must be in [0, 1)"),
        ("--max_length", "4", "max_length must be at least 8"),
        ("--relation_dropout", "-0.1", "relation_dropout must be in [0, 1)"),
        ("finetune --kd_alpha", "1.5", "kd_alpha must be between 0 and 1"),
        ("finetune --kd_temperature", "0", "kd_temperature must be positive"),
        ("finetune --max_length", "2", "max_length must be at least 8"),
    ],
)
def test_out_of_range_flags_are_one_line_usage_errors(flag, value, message, capsys):
    from minimoe.cli import main

    job, _, flag = flag.rpartition(" ")
    assert main([job or "distill", f"{flag}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_print_config_prints_the_effective_recipe(capsys):
    import yaml

    from minimoe.cli import main

    assert main(["finetune", "--config", "finetune-snli", "--train.lr", "1e-4", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["task"] == "snli" and printed["train"]["lr"] == 1e-4
