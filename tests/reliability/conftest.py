"""Helpers for the reliability tests: the CLI in-process (CliRunner) and as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def cli(*args: str):
    """Run `audiocomp ARGS` in this process; returns typer's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from audiocomp.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result, *needles: str) -> str:
    """Exit code 2 and one 'error: ...' line naming what is wrong; never a traceback."""
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.stdout, err, result.exception)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def audiocomp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "audiocomp", *[str(a) for a in args]]


def subprocess_env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


@pytest.fixture
def tiny_args(tiny_overrides) -> list[str]:
    """The tiny config as repeated --set options."""
    return [a for o in tiny_overrides for a in ("--set", o)]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_root):
    """A finished prepare run and a finished 1-epoch train run ('p' and 't') in a runs dir, made once."""
    from audiocomp.config import load_config
    from audiocomp.stages import prepare, train

    overrides = [f"data.root={synth_root}", "data.dataset=synth", "features.sample_rate=8000",
                 "features.duration=1.0", "features.n_fft=256", "features.hop_length=128", "features.n_mels=32",
                 "features.workers=1", "model.name=cnn", "model.kwargs.channels=[8,16]", "train.epochs=1",
                 "train.batch_size=16", "split.val_fraction=0.2"]
    runs = tmp_path_factory.mktemp("trained") / "runs"
    cfg = load_config([], overrides)
    prepared = prepare.run(cfg, runs, name="p", progress=False)
    train.run(cfg, runs, name="t", from_run=prepared.run, progress=False)
    return runs


def copy_run(runs: Path, name: str, new: str) -> Path:
    """A copy of a finished run under a new name, to tamper with."""
    import shutil

    dst = runs / new
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(runs / name, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst
