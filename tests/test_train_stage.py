"""`audiocomp train` end to end on the synthetic set: kill -9 and --resume, cross-validation, DDP on gloo."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocomp.config import load_config
from audiocomp.models import load_model
from audiocomp.runs import Run
from audiocomp.train.loop import TIMING_KEYS

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1"}


def _cli(args: list[str], runs: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "audiocomp", "train", "--runs-dir", str(runs), "-q", *args],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def read_json_file(path: Path) -> dict:
    return json.loads(path.read_text())


def _final(metrics: dict) -> dict:
    return _untimed([{k: v for k, v in metrics.items() if k != "history"}])[0] | {"history": _untimed(metrics["history"])}


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path, tiny_overrides):
    from typer.testing import CliRunner

    from audiocomp.cli import app

    epochs = 6
    args = _sets(tiny_overrides + [f"train.epochs={epochs}", "train.batch_size=8", "model.kwargs.channels=[16,32]",
                                   "train.threads=1", "train.scheduler=cosine", "train.augment.spec_time_mask=4",
                                   "train.augment.mixup_alpha=0.2", "train.ema_decay=0.9"])
    runs = tmp_path / "runs"
    cli = CliRunner()
    straight = cli.invoke(app, ["train", "--runs-dir", str(runs), "-q", "--name", "straight", *args])
    assert straight.exit_code == 0, straight.output

    killed = _cli(args + ["--name", "killed"], runs)
    log = runs / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:  # two epochs checkpointed
            break
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    done = len(log.read_text().splitlines())
    assert 2 <= done < epochs, "the run finished before it could be killed"
    assert Run(runs / "killed").status == "running"  # what kill -9 leaves behind

    resumed = cli.invoke(app, ["train", "--runs-dir", str(runs), "-q", "--resume", "killed"])
    assert resumed.exit_code == 0, resumed.output
    a, b = Run(runs / "straight"), Run(runs / "killed")
    assert b.status == "done" and b.manifest["attempts"] == 2
    assert _untimed(b.read_jsonl("metrics.jsonl")) == _untimed(a.read_jsonl("metrics.jsonl"))
    assert len(a.read_jsonl("metrics.jsonl")) == epochs
    assert _final(b.metrics()) == _final(a.metrics())
    wa, wb = torch.load(a / "model" / "model.pt"), torch.load(b / "model" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (b / "curves.png").stat().st_size > 1000


def test_cross_validation_trains_one_model_per_fold(tmp_path, tiny_overrides):
    from audiocomp.stages import evaluate, train

    cfg = load_config([], tiny_overrides + ["split.kind=folds", "split.test_fold=all", "train.epochs=1"])
    run = train.run(cfg, tmp_path, name="cv", progress=False)
    m = run.metrics()
    folds = m["folds"]
    assert m["cross_validation"] == 5 and [f["fold"] for f in folds] == [f"fold{i}" for i in range(1, 6)]
    acc = np.array([f["test_accuracy"] for f in folds])
    assert m["test_accuracy"] == pytest.approx(acc.mean()) and m["test_accuracy_std"] == pytest.approx(acc.std(ddof=1))
    assert sum(f["test_items"] for f in folds) == 80  # every item tested exactly once
    for f in folds:
        d = run.path / "folds" / f["fold"]
        assert len(Run(d).read_jsonl("metrics.jsonl")) == 1 and (d / "model" / "model.pt").exists()
    # model/ is fold 1's model, and eval (which tests on the first split) reproduces fold 1's test accuracy
    assert m["model_dir_fold"] == "fold1"
    assert (run.path / "model" / "model.pt").read_bytes() == (run.path / "folds/fold1/model/model.pt").read_bytes()
    ev = evaluate.run(cfg, run, tmp_path, progress=False).metrics()
    assert ev["accuracy"] == pytest.approx(folds[0]["test_accuracy"])
    load_model(run.path / "model")


def test_seeds_train_independent_models_summarised_as_mean_and_std(tmp_path, tiny_overrides):
    from typer.testing import CliRunner

    from audiocomp.cli import app
    from audiocomp.stages import train

    runs = tmp_path / "runs"
    sets = _sets(tiny_overrides + ["train.epochs=1"])
    result = CliRunner().invoke(app, ["train", *sets, "--seeds", "3", "--runs-dir", str(runs), "--name", "s3", "-q"])
    assert result.exit_code == 0, result.output
    assert "3 seeds: test accuracy" in result.output and "+-" in result.output
    run = Run(runs / "s3")
    m = run.metrics()
    assert m["seed_runs"] == 3 and m["model_dir_seed"] == 0 and [s["seed"] for s in m["seeds"]] == [0, 1, 2]
    assert m["selection"] == "best val_accuracy" and run.config().train.seeds == 3
    for key in ("test_accuracy", "val_accuracy", "train_loss", "test_macro_f1"):
        values = np.array([s[key] for s in m["seeds"]])
        assert m[key] == pytest.approx(values.mean()) and m[f"{key}_std"] == pytest.approx(values.std(ddof=1)), key
    weights = [torch.load(run.path / f"seeds/{k}/model/model.pt") for k in range(3)]
    assert not torch.equal(weights[0]["backbone.0.0.weight"], weights[1]["backbone.0.0.weight"])  # other seeds
    # model/ is the first seed's, and that seed trained exactly as a plain run with the same seed does
    assert (run.path / "model/model.pt").read_bytes() == (run.path / "seeds/0/model/model.pt").read_bytes()
    plain = CliRunner().invoke(app, ["train", *sets, "--runs-dir", str(runs), "--name", "one", "-q"])
    assert plain.exit_code == 0, plain.output
    assert _final(Run(runs / "one").metrics()) == _final(read_json_file(run.path / "seeds/0/metrics.json"))
    assert (runs / "one/model/model.pt").read_bytes() == (run.path / "model/model.pt").read_bytes()

    # --resume skips the seeds already finished: seed 2 "interrupted" after its checkpoint
    first = (run.path / "seeds/0/metrics.json").stat().st_mtime_ns
    (run.path / "seeds/2/metrics.json").unlink()
    shutil.rmtree(run.path / "seeds/2/model")
    train.run(run.config(), runs, name="s3", resume=True, from_run=run.parent("prepare"), progress=False)
    assert (run.path / "seeds/0/metrics.json").stat().st_mtime_ns == first
    assert Run(runs / "s3").metrics() == m

    folds = CliRunner().invoke(app, ["train", *_sets(tiny_overrides + ["split.kind=folds", "split.test_fold=all"]),
                                     "--seeds", "2", "--runs-dir", str(runs), "-q"])
    assert folds.exit_code == 2 and "train.seeds=2 with 5 folds" in folds.output


@pytest.mark.slow
def test_torchrun_two_cpu_processes_on_gloo(tmp_path, tiny_overrides):
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "audiocomp",
            "train", "--runs-dir", str(runs), "--name", "ddp", "-q",
            *_sets(tiny_overrides + ["train.device=cpu", "train.threads=1", "train.epochs=2"])]
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("trained cnn") == 1  # rank 0 alone reports (and writes)
    run = Run(runs / "ddp")
    assert run.status == "done" and run.manifest["world_size"] == 2 and run.manifest["backend"] == "gloo"
    records = run.read_jsonl("metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    split = json.loads((runs / run.parent("prepare").name / "splits.json").read_text())["splits"][0]
    n_train = len(split["train"])
    assert records[0]["train_samples"] == n_train + n_train % 2  # each rank one half (padded), summed
    m = run.metrics()
    assert m["train_items"] == n_train and 0 <= m["test_accuracy"] <= 1
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["ddp", run.parent("prepare").name]
    load_model(run / "model")


def test_pitch_shift_reaches_training_and_pruning_fine_tunes(trained_run, tmp_path):
    """The log-mel band frequencies come from the prepared store to every fit that augments: a training run
    and a prune stage's fine-tuning (without them, pitch_shift is a config error)."""
    from audiocomp.stages import prune, train

    _, model_run, cfg = trained_run
    shifted = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "augment": cfg.train.augment.model_copy(update={"pitch_shift": 2.0})})})
    trained = train.run(shifted, tmp_path, from_run=model_run.parent("prepare"), progress=False)
    assert trained.status == "done" and trained.name != model_run.name
    pruning = shifted.prune.model_copy(update={"method": "taylor", "channel_ratio": 0.5, "finetune_epochs": 1})
    pruned = prune.run(shifted.model_copy(update={"prune": pruning}), model_run, tmp_path, progress=False)
    assert pruned.metrics()["history"]


def test_pitch_shift_on_other_features_fails_before_the_run_exists(tmp_path, tiny_overrides):
    from audiocomp.config import ConfigError
    from audiocomp.stages import train

    cfg = load_config([], tiny_overrides + ["features.kind=mfcc", "features.n_mfcc=13", "train.augment.pitch_shift=2"])
    with pytest.raises(ConfigError, match="pitch_shift: the features of .* are not log-mel .features.kind: mfcc"):
        train.run(cfg, tmp_path, name="mfcc", progress=False)
    assert not (tmp_path / "mfcc").exists()
