"""SIGKILL at exact points (during checkpoint and feature-store writes): earlier artifacts stay valid,
re-running / --resume ends identical to an uninterrupted run (scripts/stress_kill.py does many more)."""
from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import pytest

from audiocomp.runs import Run, atomic_write_json

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stress_kill.py"


@pytest.mark.slow
def test_killed_prepare_and_train_resume_to_identical_results(tmp_path):
    stress = runpy.run_path(str(SCRIPT))
    summary = stress["run_points"](0, 0, tmp_path, workers=1,
                                   points=[("prepare", "items.json:1"), ("train", "last.pt:2")])
    for r in summary["results"]:
        assert r["killed"], r  # the process really died at that point ...
        assert r["ok"], r  # ... nothing invalid was visible, and the end result is identical


def test_crash_point_kills_between_temp_write_and_rename(tmp_path):
    """In a child process: the old file survives, the new one stays a hidden temp that no reader opens."""
    import subprocess
    import sys

    from .conftest import subprocess_env

    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"v": 1})
    code = ("from audiocomp.runs import atomic_write_json; import sys; "
            f"atomic_write_json({str(target)!r}, {{'v': 2}}); print('survived')")
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(AUDIOCOMP_CRASH_AT="metrics.json:1"),
                          capture_output=True, text=True)
    assert proc.returncode == -9 and "survived" not in proc.stdout
    assert json.loads(target.read_text()) == {"v": 1}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "metrics.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".metrics.json.") and leftovers[0].endswith(".tmp")


def test_reopening_a_killed_run_removes_stale_temp_files(tmp_path):
    run = Run.create("r", "train", tmp_path)
    (run.path / "checkpoints").mkdir()
    stale = run.path / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    run.unlock()
    Run.create("r", "train", tmp_path, resume=True).unlock()
    assert not stale.exists()


def test_torn_jsonl_line_is_skipped_and_the_next_record_survives(tmp_path):
    run = Run.create("r", "train", tmp_path)
    run.append_jsonl("metrics.jsonl", {"epoch": 1})
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_lo')  # killed mid-line
    run.append_jsonl("metrics.jsonl", {"epoch": 2})
    assert run.read_jsonl("metrics.jsonl") == [{"epoch": 1}, {"epoch": 2}]
    run.unlock()


def test_abandoned_store_builds_are_cleaned_but_live_ones_are_not(tmp_path, tiny_args):
    import shutil
    import socket

    from .conftest import cli

    runs = tmp_path / "runs"
    assert cli("prepare", *tiny_args, "--runs-dir", runs, "--name", "p", "-q").exit_code == 0
    (store,) = [p for p in (runs / ".store").iterdir()]
    shutil.rmtree(store)
    host = socket.gethostname()
    dead = runs / ".store" / f".{store.name}.tmp-{host}-99999999"
    live = runs / ".store" / f".{store.name}.tmp-{host}-{os.getppid()}"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "features.npy").write_bytes(b"half")
    assert cli("prepare", *tiny_args, "--runs-dir", runs, "--name", "p", "--force", "-q").exit_code == 0
    assert not dead.exists() and live.exists() and (store / "COMPLETE").is_file()


@pytest.mark.slow
def test_a_killed_feature_worker_is_a_clear_error(tmp_path, tiny_args):
    import subprocess
    import sys

    from .conftest import audiocomp_cmd, subprocess_env

    args = ["prepare", *tiny_args, "--set", "features.workers=2", "--runs-dir", str(tmp_path / "runs"), "-q"]
    proc = subprocess.run(audiocomp_cmd(*args), env=subprocess_env(AUDIOCOMP_CRASH_AT="featurize:1"),
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and err[-1].startswith("error: a feature worker process died"), proc.stderr
    assert not any((tmp_path / "runs" / ".store").iterdir())
