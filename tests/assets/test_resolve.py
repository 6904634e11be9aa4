"""Model references: packaged teacher names, local directories and hub ids, each resolved or refused clearly."""

import json
from pathlib import Path

import pytest
from transformers import AutoModel, AutoModelForSequenceClassification

from minimoe.assets.fetch import TEACHERS
from minimoe.assets.resolve import load_pretrained, resolve_corpus, resolve_model
from minimoe.errors import MiniMoEError


@pytest.mark.parametrize("name", TEACHERS)
def test_packaged_teacher_names_resolve_to_their_cache_directory(name, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path))
    fetched = tmp_path / "teachers" / name  # already in the cache: resolving must not download
    fetched.mkdir(parents=True)
    (fetched / "config.json").write_text("{}")
    assert resolve_model(name) == str(fetched)


def test_local_directory_resolves_to_itself(tiny_teacher_dir: Path):
    assert resolve_model(tiny_teacher_dir) == str(tiny_teacher_dir)


def test_directory_without_config_is_refused(tmp_path: Path):
    with pytest.raises(MiniMoEError, match="is not a model directory"):
        resolve_model(tmp_path)


def test_missing_local_path_is_refused(tmp_path: Path):
    with pytest.raises(MiniMoEError, match="does not exist"):
        resolve_model(tmp_path / "nowhere")
    with pytest.raises(MiniMoEError, match="does not exist"):
        resolve_model("./runs/not-there")


def test_hub_ids_pass_through():
    assert resolve_model("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"


def test_load_failure_is_one_line(tmp_path: Path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MiniMoEError, match=f"cannot load {tmp_path} with AutoModel") as err:
        load_pretrained(AutoModel, tmp_path)
    assert "\n" not in str(err.value)


def test_corpus_sources_other_than_packaged_names_pass_through(tmp_path: Path):
    for source in (str(tmp_path), "dump/*.jsonl.zst", "hf:wikimedia/wikipedia:20231101.en", "./later.txt"):
        assert resolve_corpus(source) == source
    with pytest.raises(MiniMoEError, match="'books' is neither a packaged corpus .* a directory, a glob"):
        resolve_corpus("books")


def test_a_model_that_fails_to_load_is_explained_naming_the_file_and_the_field(tiny_teacher_dir: Path, tmp_path: Path):
    """transformers' own report is a table our quiet logging hides; ours is one line (here a KD teacher's load)."""
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_teacher_dir.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"intermediate_size": 65}))
    with pytest.raises(MiniMoEError, match=rf"^{model}/config.json field intermediate_size = 65 does not fit"):
        load_pretrained(AutoModelForSequenceClassification, model)
    (model / "config.json").write_text(json.dumps(config))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(MiniMoEError, match=rf"^{weights} is not a readable safetensors file"):
        load_pretrained(AutoModelForSequenceClassification, model)
