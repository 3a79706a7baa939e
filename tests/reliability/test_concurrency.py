"""Two processes on one run or one feature store: serialised or refused with a clear message, never torn."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from audiocomp.features.store import FeatureStore
from audiocomp.runs import Run, RunError, read_json

from .conftest import audiocomp_cmd, subprocess_env

EPOCHS = 40  # a few seconds of training after the first epoch: time to pause it


def test_a_locked_run_is_refused_to_a_second_process(tmp_path):
    code = ("import sys; from audiocomp.runs import Run; "
            f"run = Run.create('shared', 'train', {str(tmp_path)!r}); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match="in use by another process"):
            Run.create("shared", "train", tmp_path, resume=True)
    finally:
        holder.communicate("", timeout=30)  # closing stdin ends the holder, and the kernel drops its lock
    Run.create("shared", "train", tmp_path, resume=True).unlock()  # free again once the holder is gone


def _start(args, log):
    return subprocess.Popen(audiocomp_cmd(*args), env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_trainings_into_one_run_one_wins_the_other_is_refused(tmp_path, trained, tiny_args):
    args = ["train", *tiny_args, "--set", f"train.epochs={EPOCHS}",
            "--from", str(trained / "p"), "--runs-dir", str(tmp_path / "runs"), "--name", "same", "--force", "-q"]
    logs = [open(tmp_path / f"log{i}", "w+") for i in range(2)]
    first = _start(args, logs[0])
    deadline = time.time() + 120
    while not (tmp_path / "runs" / "same" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)  # the first one is training (and holds the lock)
    first.send_signal(signal.SIGSTOP)  # paused mid-training, lock held: the overlap does not depend on timing
    try:
        assert first.poll() is None, "the first training ended before it could be paused"
        second = _start(args, logs[1])  # --force too: even a forced replace must wait for the lock
        second_code = second.wait(180)
    finally:
        first.send_signal(signal.SIGCONT)
    codes = [first.wait(300), second_code]
    out = [(log.seek(0), log.read())[1] for log in logs]
    assert codes == [0, 2], (codes, out)
    assert "in use by another process" in out[1] and "Traceback" not in out[1]
    run = Run.open("same", tmp_path / "runs")  # the winner's run is complete and consistent
    assert run.status == "done" and len(read_json(run / "metrics.json")["history"]) == EPOCHS


@pytest.mark.slow
def test_two_prepares_of_the_same_data_share_one_intact_store(tmp_path, tiny_args):
    runs = tmp_path / "runs"
    logs = [open(tmp_path / f"log{i}", "w+") for i in range(2)]
    procs = [_start(["prepare", *tiny_args, "--runs-dir", str(runs), "--name", f"p{i}", "-q"], logs[i]) for i in range(2)]
    codes = [p.wait(180) for p in procs]
    assert codes == [0, 0], [(log.seek(0), log.read())[1] for log in logs]
    stores = [p for p in (runs / ".store").iterdir()]
    assert len(stores) == 1 and not stores[0].name.startswith("."), stores  # one store, no temp left
    store = FeatureStore.open(stores[0])
    store.verify()  # checksum matches: no interleaved writes
    assert np.isfinite(np.asarray(store.features, np.float32)).all()
    assert {read_json(runs / f"p{i}" / "data.json")["store"] for i in range(2)} == {str(stores[0].resolve())}
