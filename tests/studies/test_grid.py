"""The grid: `minimoe demo` runs the stages it ran before the study's rework; a stage that cannot go on says what to
do at the study's level."""

import json
from pathlib import Path

import pytest

from minimoe.errors import MiniMoEError, RecipeChanged, Stopped
from minimoe.jobs.demo import DemoConfig, study_config
from minimoe.recipe import dump_recipe
from minimoe.studies.config import StudyConfig
from minimoe.studies.grid import Study


def test_the_demo_runs_the_stage_configs_it_ran_before_the_study_rework(tmp_path):
    """demo_stages.json holds every stage's job config of `minimoe demo` as the study code before its rework
    (issue 23) planned them, but for the teacher stages' kd_alpha (0.0 now: a teacher has no KD teacher). The same
    configs on the same seed make the same table."""
    study = Study(study_config(DemoConfig(output_dir=str(tmp_path))))
    planned = {name: dump_recipe(study.plan[name].config).replace(str(tmp_path), "OUT") for name in study.stages}
    assert planned == json.loads((Path(__file__).parent / "demo_stages.json").read_text())


def test_a_half_done_stage_from_another_recipe_names_the_stage_not_a_trainer_flag(tmp_path, capsys, monkeypatch):
    def run(cfg):
        assert cfg.train.resume  # its directory exists: the stage resumes
        raise RecipeChanged("cannot resume ...; pass --train.force_resume", "train.lr: 0.001 -> 0.002")

    monkeypatch.setattr("minimoe.studies.grid.run_finetuning", run)
    study = Study(StudyConfig(output_dir=str(tmp_path)))
    name = study.stages[0]
    (tmp_path / name).mkdir(parents=True)
    with pytest.raises(MiniMoEError, match=f"{name} was started under another recipe") as err:
        study.stage(name)
    assert "train.lr: 0.001 -> 0.002" in str(err.value) and "force_resume" not in str(err.value)
    heading = f"== stage 1/{len(study.stages)}: fine-tune all-MiniLM-L6-v2 on movie-sentiment (elapsed "
    assert heading in capsys.readouterr().out
    (tmp_path / name / "results.json").write_text('{"score": 1}')
    assert study.stage(name) == {"score": 1}  # a finished stage is not rerun
    assert "(done, kept)" in capsys.readouterr().out


def test_a_stopped_stage_tells_to_rerun_the_study_not_a_trainer_flag(tmp_path, monkeypatch):
    def run(cfg):
        raise Stopped("stopped by SIGTERM at step 7: checkpoint saved in ckpt/step-7")

    monkeypatch.setattr("minimoe.studies.grid.run_finetuning", run)
    study = Study(StudyConfig(output_dir=str(tmp_path)))
    with pytest.raises(Stopped) as err:
        study.stage(study.stages[0])
    message = str(err.value)
    assert "step 7" in message and "rerun the same command" in message and "--train" not in message
