"""`benchmarks/corpus_build.py --smoke` end to end in a subprocess, and how it writes its section of the page."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "corpus_build.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("corpus_build", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_run_prints_the_table_and_writes_the_page(tmp_path: Path, bench):
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\n{bench.NOTES_END.replace('end', 'begin')}\nnotes\n{bench.NOTES_END}\n")
    command = [sys.executable, str(SCRIPT), "--smoke", "--doc", str(page), "--scratch", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0.")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "2", "2"]  # workers
    assert all(float(row.split(" | ")[-2]) > 0 for row in rows)  # disk bytes per token of the corpus
    assert "peak memory, large / small corpus" in result.stdout and "SMOKE RUN" in result.stdout
    text = page.read_text()
    assert text.index(bench.SECTION_BEGIN) < text.index(bench.NOTES_END) and "notes\n" in text
    assert list(tmp_path.iterdir()) == [page]  # the generated text and the caches are deleted


def test_the_section_is_replaced_not_repeated(tmp_path: Path, bench):
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n{bench.NOTES_END}\n")
    for run in ("first", "second"):
        bench.write_section(page, f"{bench.SECTION_BEGIN}\n{run}\n{bench.SECTION_END}")
    assert page.read_text() == f"# Performance\n{bench.SECTION_BEGIN}\nsecond\n{bench.SECTION_END}\n{bench.NOTES_END}\n"
