"""`minimoe compare` on hand-written study reports: the target rule, names, the plot, and bad input."""

import json

import pytest

from minimoe.cli import main
from minimoe.errors import MiniMoEError
from minimoe.jobs.compare import CompareConfig, run


def write_study(directory, cells):
    directory.mkdir(parents=True)
    paired = [
        {"variant": variant, "size": "2L-128H", "pair": "E=4 - dense", "average diff": diff, "average diff sd": sd}
        | {"average diffs": "", "distill KL diff": -0.002, "seeds": 3}
        for variant, diff, sd in cells
    ]
    (directory / "study.json").write_text(json.dumps({"config": {}, "rows": [], "paired": paired}))
    return directory


def test_a_cell_counts_only_at_the_target_and_above_twice_its_spread(tmp_path):
    a = write_study(tmp_path / "study-a", [("base", 1.2, 0.3), ("no-noise", 1.2, 0.7)])
    b = write_study(tmp_path / "study-b", [("base", 0.9, 0.1)])
    result = run(CompareConfig(studies=[f"long={a}", str(b)], output_dir=str(tmp_path / "out"), target=1.0))
    assert result["cells"] == 3 and result["target met"] == 1  # 1.2 +- 0.7 is within 2 sd; 0.9 is short
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| long | 2L-128H E=4 - dense | 1.20 | 0.300 |" in table and "[no-noise]" in table
    assert "| study-b | 2L-128H E=4 - dense |" in table  # unnamed studies go by their directory
    assert (tmp_path / "out" / "compare.png").stat().st_size > 1000


def test_a_directory_without_a_study_report_is_named(tmp_path):
    with pytest.raises(MiniMoEError, match="nowhere/study.json not found"):
        run(CompareConfig(studies=[str(tmp_path / "nowhere")], output_dir=str(tmp_path / "out")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "study.json").write_text("{}")
    with pytest.raises(MiniMoEError, match="not a study report"):
        run(CompareConfig(studies=[str(tmp_path / "bad")], output_dir=str(tmp_path / "out")))


def test_cli_compare_prints_one_error_line(tmp_path, capsys):
    assert main(["compare", "--studies", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.json not found" in err[0]
