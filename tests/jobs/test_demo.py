"""`minimoe demo`'s grid: both sizes plan their stages (the full demo runs in `make demo`, not in the suite)."""

import pytest

from minimoe.jobs.demo import DemoConfig, study_config
from minimoe.jobs.study import Study


@pytest.mark.parametrize("quick, steps, epochs", [(False, 400, [2.0]), (True, 40, [1.0])])
def test_the_demo_grid_plans_its_eight_stages(tmp_path, quick, steps, epochs):
    cfg = study_config(DemoConfig(output_dir=str(tmp_path), quick=quick))
    stages = Study(cfg).stages  # plans the grid: a field a study cannot take fails here
    assert (cfg.distill_steps, cfg.student_epochs, cfg.experts) == (steps, epochs, [4, 1])
    assert len(stages) == 8  # the teacher on 2 tasks; 2 students x (distil + 2 tasks)
    assert [s.rsplit("/", 1)[-1] for s in stages[2:5]] == ["distill", *(f"finetune-{t}" for t in cfg.tasks)]
