"""`minimoe demo`'s grid: both recipes plan their stages (the full demo runs in `make demo`, not in the suite)."""

import pytest

from minimoe.jobs.demo import DemoConfig, study_config
from minimoe.studies.grid import Study


@pytest.mark.parametrize("quick, steps, epochs", [(False, 400, 2.0), (True, 40, 1.0)])
def test_the_demo_grid_plans_its_eight_stages(tmp_path, quick, steps, epochs):
    cfg = study_config(DemoConfig(output_dir=str(tmp_path), quick=quick))
    study = Study(cfg)  # plans the grid: a field a study cannot take fails here
    assert (cfg.distill.train.max_steps, cfg.finetune.train.epochs, cfg.experts) == (steps, epochs, [4, 1])
    assert cfg.output_dir == str(tmp_path) and cfg.finetune.kd_alpha == 0.5
    assert len(study.stages) == 8  # the teacher on 2 tasks; 2 students x (distil + 2 tasks)
    assert [s.rsplit("/", 1)[-1] for s in study.stages[2:5]] == ["distill", *(f"finetune-{t}" for t in cfg.tasks)]
    kd = study.plan[study.stages[3]].config.teacher  # the students' KD teacher is the fine-tuned one
    assert kd == str(tmp_path / study.stages[0] / "best")
