"""What every stage shares: opening its run directory, recording start/finish/failure, finding parents."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, Optional

from .. import tracking
from ..config import Config
from ..models import load_model
from ..models.io import load_spec
from ..runs import Run, RunError, runs_root


def default_name(stage: str, cfg: Config) -> str:
    return f"{stage}-{cfg.model.name}-{cfg.section_hash()[:8]}"


@contextlib.contextmanager
def stage_run(stage: str, cfg: Config, name: str, runs_dir: Optional[str | Path] = None, *, force: bool = False,
              resume: bool = False, parents: list[Run] = (), device: str = "cpu") -> Iterator[Run]:
    """Create/lock the run, mark it running, and mark it done or failed (with the error) at the end; the
    `tracking:` section's trackers (none by default) mirror it from start to finish."""
    run = Run.create(name, stage, runs_dir, force=force, resume=resume)
    tracker = None
    try:
        run.start(stage, cfg, parents, device=device)
        tracker = tracking.start(stage, cfg, run, parents, resume)
        yield run
        run.finish()
        tracker.finish(run, "FINISHED")
    except BaseException as exc:
        with contextlib.suppress(Exception):
            run.fail(exc if not isinstance(exc, KeyboardInterrupt) else "interrupted (KeyboardInterrupt)")
        if tracker is not None:
            tracker.finish(run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        run.unlock()


def find_done(name: str, runs_dir: Optional[str | Path]) -> Optional[Run]:
    path = runs_root(runs_dir) / name
    if (path / "manifest.json").is_file():
        run = Run(path)
        if run.status == "done":
            return run
    return None


def model_run_parent(run: Run) -> Run:
    """The prepare run that a model run's data came from."""
    prep = run if run.stage == "prepare" else run.parent("prepare")
    if prep is None:
        raise RunError(f"run {run.path}: no prepare run among its parents")
    return prep


def check_rows(prepared, n: int, index: int = 0) -> list[int]:
    """Up to `n` real items for checking a model's outputs: validation rows, then training rows; never test."""
    split = prepared.split(index)
    return (list(split["val"]) + list(split["train"]))[:n]


def onnx_quantized(spec) -> bool:
    """The model is an ONNX Runtime INT8 graph (its outputs are checked against its float parent)."""
    step = spec.compression[-1] if spec.compression else {}
    return step.get("stage") == "quantize" and step.get("backend") == "onnxruntime"


def float_parent(run: Run):
    """(model, spec) of the float model a quantized run was made from: the model of its manifest parent."""
    for p in run.manifest.get("parents", []):
        folder = Path(p["path"]) / "model"
        if (folder / "arch.json").is_file() and not any(s.get("stage") == "quantize"
                                                        for s in load_spec(folder).compression):
            return load_model(folder)
    raise RunError(f"run {run.path}: no float parent model among its parents in {run.manifest_path} "
                   "(the run it was quantized from, needed to check the INT8 graph)")


def print_fn(quiet: bool) -> Callable[..., None]:
    return (lambda *a, **k: None) if quiet else print
