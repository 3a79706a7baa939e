"""Running a planned pipeline: each stage through the registry, finished runs reused, crashed ones continued
(a training run with a checkpoint) or replaced, and `<out>/pipeline.json` written whatever happens."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from ...runs import Run, atomic_write_json, runs_root
from ..context import find_done
from ..registry import StageCall, run_stage
from .claims import claim
from .plan import Step, plan


def print_fn(quiet: bool) -> Callable[..., None]:
    return (lambda *a, **k: None) if quiet else print


def _execute(step: Step, runs: dict[str, Run], runs_dir: Path, out: Path, progress: bool,
             force: bool) -> tuple[Any, str]:
    """(the stage's run, or a report's result; what happened: ran, reused, resumed or rendered)."""
    ids = [p.spec.id for p in step.parents if p.spec.id in runs]
    call = StageCall(step.cfg, [runs[i] for i in ids], runs_dir, step.name or step.spec.id, force, False, progress,
                     out / step.spec.id, ids)
    if step.name is None:
        return run_stage(step.stage, call), "rendered"
    done = None if force else find_done(step.name, runs_dir)
    if done is not None:
        return done, "reused"
    path = runs_dir / step.name
    if (path / "manifest.json").is_file():  # an earlier attempt crashed or failed: continue or replace it
        # a checkpoint of the run, or of one of its folds/<name>/ or seeds/<k>/ sub-runs
        call.resume = step.stage == "train" and next(path.glob("**/checkpoints/last.pt"), None) is not None
        call.force = not call.resume
    return run_stage(step.stage, call), "resumed" if call.resume else "ran"


def default_out(path: Path) -> Path:
    """reports/<pipeline name>; a file called pipeline.yaml is named by its folder (paper/<id>/pipeline.yaml)."""
    return Path("reports") / (path.parent.name if path.stem == "pipeline" else path.stem)


def run(path: Path | str, overrides: list[str] = (), runs_dir: Optional[Path] = None,
        out: Optional[Path] = None, files: list[Path] = (), *, force: bool = False, wait: float = 3600.0,
        progress: bool = True, quiet: bool = False, until: Optional[str] = None) -> dict:
    """Run (or reuse) every stage of the pipeline (with `until`: that stage and what it needs); write
    `<out>/pipeline.json`; return that summary, plus `reports`: each report stage's rows and files (not
    written to pipeline.json)."""
    say = print_fn(quiet)
    path = Path(path)
    steps = plan(path, overrides, files, until=until)
    runs_dir = runs_root(runs_dir)
    out = Path(out or default_out(path))
    summary: dict[str, Any] = {"pipeline": str(path), "overrides": list(overrides),
                               "files": [str(f) for f in files], "runs_dir": str(runs_dir),
                               "status": "running", "stages": []}
    runs: dict[str, Run] = {}
    reports: dict[str, dict] = {}
    try:
        for step in steps:
            t0 = time.perf_counter()
            entry = {"id": step.spec.id, "stage": step.stage, "run": step.name, "status": "running"}
            summary["stages"].append(entry)
            if step.name is None:
                reports[step.spec.id], status = _execute(step, runs, runs_dir, out, progress, force)
                entry["report"] = str(out / step.spec.id)
            else:
                with claim(runs_dir, step.name, wait, say):
                    runs[step.spec.id], status = _execute(step, runs, runs_dir, out, progress, force)
            entry.update(status=status, seconds=round(time.perf_counter() - t0, 2))
            say(f"{step.spec.id}: {status} {step.name or out / step.spec.id} ({entry['seconds']:.1f} s)")
    except BaseException as exc:
        summary["status"] = "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        summary["stages"][-1]["status"] = "failed"
        atomic_write_json(out / "pipeline.json", summary)
        raise
    summary["status"] = "done"
    atomic_write_json(out / "pipeline.json", summary)
    return {**summary, "reports": reports}
