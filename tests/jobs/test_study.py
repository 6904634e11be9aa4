"""The study grid on tiny models: every cell runs, the table has mean and spread, a rerun resumes."""

import json

import pytest

from minimoe.errors import MiniMoEError
from minimoe.jobs.study import StudyConfig, parse_size
from minimoe.jobs.study import run as run_study


def test_parse_size():
    assert parse_size("4L-192H") == (4, 192)
    with pytest.raises(MiniMoEError, match="4L-192H"):
        parse_size("big")


@pytest.mark.parametrize(
    "bad, message", [({"sizes": ["4L-192H", "big"]}, "big"), ({"relation_heads": 0}, "relation_heads")]
)
def test_bad_grid_settings_fail_before_any_stage(tmp_path, bad, message):
    with pytest.raises(MiniMoEError, match=message):
        run_study(StudyConfig(output_dir=str(tmp_path / "study"), **bad))
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_tiny_grid_runs_and_resumes(tiny_teacher_dir, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path / "home"))
    task = tmp_path / "data" / "sst2"
    task.mkdir(parents=True)
    rows = ["the film was new and known", "the game was large", "people found the album", "the team played music"]
    lines = ["sentence\tlabel"] + [f"{r}\t{i % 2}" for i, r in enumerate(rows * 4)]
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    cfg = StudyConfig(
        output_dir=str(tmp_path / "study"),
        teachers=[str(tiny_teacher_dir)],
        sizes=["1L-32H"],
        experts=[1, 4],
        seeds=[1, 2],
        tasks=["sst2"],
        data_root=str(tmp_path / "data"),
        corpus=[str(tiny_corpus)],
        max_length=24,
        distill_steps=3,
        distill_sequences=24,
        train_examples=0,
        eval_examples=0,
        student_epochs=1,
        teacher_epochs=1,
        kd_alpha=0.5,
        relation_heads=2,
        measure_latency=False,
    )
    rows = run_study(cfg)
    assert [r["model"] for r in rows] == ["teacher", "1L-32H dense", "1L-32H MiniMoE E=4"]
    assert rows[0]["% of teacher"] == 100 and all(r["seeds"] == 2 for r in rows[1:])
    assert "distill KL" not in rows[0] and all(0 < r["distill KL"] < 10 for r in rows[1:])
    assert rows[2]["params (M)"] > rows[1]["params (M)"] and rows[2]["paper GMACs"] == pytest.approx(
        rows[1]["paper GMACs"], rel=0.01
    )
    out = tmp_path / "study"
    assert (out / "score_vs_flops.png").stat().st_size > 1000 and "MiniMoE" in (out / "study.md").read_text()
    summary = out / tiny_teacher_dir.name / "1L-32H-E4-s2" / "distill" / "summary.json"
    assert json.loads(summary.read_text())["relation_heads"] == 2
    stamp = summary.stat().st_mtime_ns
    again = run_study(cfg)  # every stage is found done
    assert summary.stat().st_mtime_ns == stamp
    assert json.loads((out / "study.json").read_text())["rows"] == json.loads(json.dumps(again))
