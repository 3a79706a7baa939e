"""The demo, end to end, through the installed console script, on a tiny synthetic set."""
import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_the_pipeline_and_prints_the_table(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "audiocomp", "demo", "--out", str(out), "--per-class", "6", "-q",
           "--set", "train.epochs=1", "--set", "features.n_mels=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo-train" in proc.stdout and "Test acc" in proc.stdout
    report = out / "report" / "report.md"
    assert report.exists() and "demo-train" in report.read_text()
    runs = {p.name: json.loads((p / "manifest.json").read_text()) for p in (out / "runs").iterdir()
            if (p / "manifest.json").exists()}
    assert all(m["status"] == "done" for m in runs.values())
    assert {m["stage"] for m in runs.values()} >= {"prepare", "train", "eval"}
    # a second demo reuses the synthetic data and the feature store, and replaces its runs
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "generating synthetic audio" not in again.stdout
