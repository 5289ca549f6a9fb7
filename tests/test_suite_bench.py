"""bench/suite.py end to end on one small UCR set: results, table, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UCR = REPO.parent / "shared" / "data" / "ucr"


def _run(out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "bench" / "suite.py"), "--datasets", "Chinatown",
           "--seeds", "0", "--detectors", "knn=knn", "iforest=iforest", "--jobs", "1",
           "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_suite_runs_writes_the_table_and_resumes(tmp_path: Path) -> None:
    if not (UCR / "Chinatown").is_dir():
        pytest.skip(f"UCR data not found at {UCR} (checkout ../shared beside the repo)")
    out = tmp_path / "suite"
    first = _run(out)
    assert first.returncode == 0, first.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    recs = [json.loads(line) for line in lines]
    assert {r["detector"] for r in recs} == {"knn", "iforest"}
    for r in recs:
        assert "error" not in r
        full, ref = r["protocols"]["full"], r["protocols"]["reference"]
        assert full["n_test"] == 343 and ref["n_test"] < full["n_test"]
        assert 0.0 <= full["roc_auc"] <= 1.0 and 0.0 <= ref["false_alarm"] <= 1.0
        assert r["n_train"] == r["n_reference"] > 0 and r["n_normal_test"] > 0
    assert "[2/2]" in first.stderr
    table = (out / "table.md").read_text()
    assert "## Protocol `reference`" in table and "## Protocol `full`" in table
    assert "| Chinatown |" in table and "wins vs knn" in table
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["protocols"]) == {"reference", "full"}
    assert summary["command"].startswith(".venv/bin/python bench/suite.py")
    assert "cpu" in summary["machine"]
    second = _run(out)  # resume: nothing left to run
    assert second.returncode == 0, second.stderr
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert "0 of 2 jobs to run" in second.stderr
