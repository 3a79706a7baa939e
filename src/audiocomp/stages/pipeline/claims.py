"""Claim locks: two pipelines on one runs dir (two sweeps, `--jobs N`) never make the same run at once."""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from ...runs import RunError


@contextlib.contextmanager
def claim(runs_dir: Path, name: str, wait: float, say: Callable[..., None]) -> Iterator[None]:
    """Hold `<runs>/.claims/<name>` while checking and making a run, so two pipelines never build the same
    run at once: the second waits (up to `wait` seconds) and then reuses what the first made."""
    folder = runs_dir / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a+") as fh:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    raise RunError(f"run {runs_dir / name} is being made by another process "
                                   f"({fh.read().strip() or 'unknown'}); gave up after {wait:.0f} s") from None
                if not told:
                    say(f"waiting for run {name}: another process is making it")
                    told = True
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
