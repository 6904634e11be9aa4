"""A study's recipe: sections are the job configs, variants are dotted overrides checked as recipes, and the fields
the grid owns are refused."""

import pytest

from minimoe.cli import main
from minimoe.errors import MiniMoEError
from minimoe.recipe import load_recipe
from minimoe.studies.config import StudyConfig, check, parse_size, variants
from minimoe.studies.grid import Study


def study(**overrides) -> StudyConfig:
    return load_recipe(StudyConfig, None, overrides)


def test_parse_size():
    assert parse_size("4L-192H") == (4, 192)
    with pytest.raises(MiniMoEError, match="4L-192H"):
        parse_size("big")


def test_a_variant_is_the_base_grid_with_its_overrides():
    cfg = study(variants={"nonoise": {"distill.student.router_noise": 0}, "short": {"finetune.train.epochs": 1}})
    (_, base, _), (name, nonoise, fields), (_, short, _) = variants(cfg)
    assert name == "nonoise" and fields == {"distill.student.router_noise"}
    assert nonoise.distill.student.router_noise == 0.0 and base.distill.student.router_noise == 0.1
    assert nonoise.distill.train == base.distill.train and short.finetune.train.epochs == 1.0


def test_a_dense_student_shares_the_base_run_unless_its_variant_changes_it(tmp_path):
    cfg = study(
        output_dir=str(tmp_path),
        teachers=["t"],
        sizes=["1L-32H"],
        seeds=[1],
        tasks=["sst2"],
        variants={"nonoise": {"distill.student.router_noise": 0}, "own": {"distill.relation_source": "last_layer"}},
    )
    grid = Study(cfg)
    distilled = [s for s in grid.stages if s.endswith("/distill")]
    assert distilled == ["t/1L-32H-E1-s1/distill", "t/1L-32H-E4-s1/distill", "t/1L-32H-E4-nonoise-s1/distill"] + [
        "t/1L-32H-E1-own-s1/distill",
        "t/1L-32H-E4-own-s1/distill",
    ]
    assert grid.plan["t/1L-32H-E4-nonoise-s1/distill"].config.student.router_noise == 0.0
    assert grid.plan["t/1L-32H-E1-own-s1/distill"].config.relation_source == "last_layer"
    assert [s.label for s in grid.students][-2:] == ["1L-32H dense [own]", "1L-32H MiniMoE E=4 [own]"]


@pytest.mark.parametrize(
    "variants_, message",
    [
        ({"x": {"distill.student.router_nois": 0}}, "unknown field.*router_nois"),
        ({"x": {"distill.student.router_noise": "lots"}}, "router_noise must be float"),
        ({"x": {"distill.student.init": "copy"}}, "must be one of moefy, independent"),
        ({"x": {"distill.student.dropout": 1.5}}, r"student.dropout must be in \[0, 1\)"),
        ({"x": {"seeds": [3]}}, "seeds is not a distill. or finetune. field"),
        ({"x": {"distill.teacher": "bert-base-uncased"}}, "distill.teacher is set by the study.*teachers"),
        ({"x": {"distill.student.router_noise": 0.1}}, "changes nothing"),
        ({"x": {}}, "mapping of dotted fields"),
        ({"a/b": {"distill.student.router_noise": 0}}, "names run directories"),
    ],
)
def test_a_bad_variant_fails_before_any_stage(tmp_path, variants_, message):
    with pytest.raises(MiniMoEError, match=message):
        Study(study(output_dir=str(tmp_path / "s"), variants=variants_)).run()
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sizes": ["4L-192H", "big"]}, "big"),
        ({"seeds": []}, "seeds needs at least one value"),
        ({"distill.student.experts": 8}, "distill.student.experts is set by the study.*experts"),
        ({"finetune.task": "sst2"}, "finetune.task is set by the study.*tasks"),
        ({"teacher_finetune.train.seed": 3}, "teacher_finetune.train.seed is set by the study.*seeds"),
    ],
)
def test_bad_grid_settings_are_named(overrides, message):
    with pytest.raises(MiniMoEError, match=message):
        check(study(**overrides))


def test_section_fields_are_checked_as_the_jobs_check_them():
    with pytest.raises(MiniMoEError, match="relation_heads must be at least 1"):
        study(**{"distill.relation_heads": 0})


def test_variants_and_sections_from_the_command_line(capsys):
    args = ["study", "--distill.train.max_steps", "7", "--variants", "{nonoise: {distill.student.router_noise: 0}}"]
    assert main([*args, "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "distill.student.router_noise: 0" in out
    assert main(["study", "--variants", "[1, 2]"]) == 2
    assert "field variants must be a mapping" in capsys.readouterr().err


def test_a_studys_batch_sizes_say_they_are_global(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--distill.train.batch_size BATCH_SIZE sequences a step over all processes" in help_text
    assert "--finetune_grid.lr LR [LR ...] learning rates; empty = finetune.train.lr" in help_text
