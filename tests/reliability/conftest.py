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
