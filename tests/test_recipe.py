"""Recipes: every shipped YAML loads, CLI flags override it, bad fields are named."""

import argparse
from pathlib import Path

import pytest

from minimoe.errors import MiniMoEError
from minimoe.recipe import DistillConfig, FinetuneConfig, add_flags, dump_recipe, load_recipe, recipe_from_args

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    cls = FinetuneConfig if path.name.startswith("finetune") else DistillConfig
    config = load_recipe(cls, path)
    assert config.train.output_dir.startswith("runs/")


def test_paper_recipe_matches_the_paper():
    cfg = load_recipe(DistillConfig, next(p for p in CONFIGS if p.name == "bert-base-minimoe-3L-384H.yaml"))
    assert (cfg.student.layers, cfg.student.hidden, cfg.student.experts, cfg.student.intermediate) == (3, 384, 4, 1536)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.grad_clip, cfg.relation_heads) == (3e-4, 128, 5.0, 32)


def test_flags_override_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("student: {layers: 2, experts: 8}\ntrain: {lr: 0.001}\n")
    parser = argparse.ArgumentParser()
    add_flags(parser, DistillConfig)
    args = parser.parse_args(["--config", str(recipe), "--train.lr", "0.5", "--corpus", "a.txt", "b.txt",
                              "--train.resume"])
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
