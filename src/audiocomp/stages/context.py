"""The stage context: what every stage shares, built in one place, so a stage's `run` reads

    with open_stage("prune", cfg, [model_run], runs_dir, name=name, ...) as ctx:
        model, spec = ctx.parent_model()       # its parent's model, and ctx.data: the prepared data
        ...                                     # the stage's own work (ctx.batches, ctx.score, ctx.log)
        ctx.write_metrics(metrics)              # its results

`open_stage` names the run (naming.py) unless a name is given, opens the parents' data before anything is
written (a missing store fails without leaving a run folder), creates and locks the run, records start and
finish (done, or failed with the error) in its manifest, mirrors it in the `tracking:` trackers, and sets
the random state: seeded, deterministic kernels (`deterministic=True`: stages that train) or the quantized
kernels' nondeterminism allowed (the others).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from .. import compress  # noqa: F401  (registers the loaders of compressed models with models.load_model)
from .. import tracking
from ..config import Config
from ..evaluate.agreement import onnx_quantized
from ..evaluate.predictions import Predictions
from ..evaluate.scoring import record_predictions, score_parts
from ..features.batches import ArrayBatches
from ..features.prepared import Prepared, prepared_of, split_batches
from ..models import load_model
from ..models.io import load_spec
from ..runs import Run, RunError, append_jsonl, runs_root
from ..train.device import nondeterminism_allowed, seed_everything
from .naming import run_name
from .registry import STAGES, StageCall, run_stage

CPU = torch.device("cpu")


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
    """The finished run of that name, or None."""
    path = runs_root(runs_dir) / name
    if (path / "manifest.json").is_file():
        run = Run(path)
        if run.status == "done":
            return run
    return None


def log_record(path: Path, record: dict, prefix: str = "epoch/", **fields) -> None:
    """One training-loop record: a line of the log at `path` (with `fields` first), and the trackers' metrics."""
    append_jsonl(path, {**fields, **record})
    tracking.log_epoch(record, prefix)


def float_parent(run: Run):
    """(model, spec) of the float model a quantized run was made from: the run's own float_model/ (a
    compress run that chose an INT8 rung keeps that rung's float form there), else the model of its
    manifest parent."""
    if (run.path / "float_model" / "arch.json").is_file():
        return load_model(run.path / "float_model")
    for p in run.manifest.get("parents", []):
        folder = Path(p["path"]) / "model"
        if (folder / "arch.json").is_file() and not any(s.get("stage") == "quantize"
                                                        for s in load_spec(folder).compression):
            return load_model(folder)
    raise RunError(f"run {run.path}: no float parent model among its parents in {run.manifest_path} "
                   "(the run it was quantized from, needed to check the INT8 graph)")


def ensure_parent(stage: str, cfg: Config, runs_dir: Optional[str | Path], progress: bool = True) -> Run:
    """The run of a parent `stage` for `cfg` (a data stage: no parents), reused when finished, else made
    now, as a pipeline would: `train` without a prepare run prepares its data this way."""
    name, runs = run_name(stage, cfg), runs_root(runs_dir)
    call = StageCall(cfg, [], runs, name, force=False, resume=False, progress=progress, out=runs)
    return find_done(name, runs) or run_stage(stage, call)


@dataclass
class StageContext:
    stage: str
    cfg: Config
    run: Run
    parents: list[Run]
    progress: bool = True
    _data: Optional[Prepared] = field(default=None, repr=False)

    @property
    def parent(self) -> Run:
        return self.parents[0]

    @property
    def data(self) -> Prepared:
        """The prepared data of the (first) parent: its feature store and splits."""
        if self._data is None:
            self._data = prepared_of(self.parent)
        return self._data

    def parent_model(self, parent: Optional[Run] = None):
        """(model, spec) of the parent run's model/ (any format; quantized ones as callable modules)."""
        return load_model((parent or self.parent) / "model")

    def reference(self, model, spec):
        """What a model's outputs are checked against: the model itself, or for an ONNX Runtime INT8 graph
        the float model it was quantized from (never the graph itself)."""
        return float_parent(self.parent)[0] if onnx_quantized(spec) else model

    def batches(self, part: str, batch_size: Optional[int] = None, **kw) -> ArrayBatches:
        """Batches of a part of the first split; `batch_size` defaults to eval.batch_size."""
        return split_batches(self.data, part, batch_size or self.cfg.eval.batch_size, **kw)

    def score(self, model, spec, parts: tuple[str, ...]) -> dict[str, tuple[dict, Predictions]]:
        """(metrics, per-item predictions) of `model` on each non-empty part, on the CPU."""
        return score_parts(model, self.data, spec, CPU, self.cfg.eval.batch_size, parts=parts)

    def save_predictions(self, preds: dict[str, Predictions], prefix: str = "") -> dict:
        """Save predictions in the run; returns the metrics that point to them (with accuracy intervals)."""
        return record_predictions(self.run.path, preds, self.cfg.eval.interval, prefix)

    def log(self, record: dict, prefix: str = "epoch/", **fields) -> None:
        """One record of metrics.jsonl (mirrored to the trackers)."""
        log_record(self.run.path / "metrics.jsonl", record, prefix, **fields)

    def write_metrics(self, metrics: dict) -> None:
        self.run.write_metrics(metrics)


@contextlib.contextmanager
def open_stage(stage: str, cfg: Config, parents: list[Run], runs_dir: Optional[str | Path] = None, *,
               name: Optional[str] = None, force: bool = False, resume: bool = False, progress: bool = True,
               data: bool = True, deterministic: bool = False,
               check: Optional[Callable[[Prepared], None]] = None) -> Iterator[StageContext]:
    """The context of one stage run (see the module docstring). `data`: open the parents' data now, before
    the run exists (False: on first use of ctx.data, e.g. bench, which works without it); `check(data)`:
    what must hold of the data (with `data`), checked before the run exists too."""
    STAGES.get(stage)  # a stage not in the registry has no naming rule
    parents = list(parents)
    ctx_data = prepared_of(parents[0]) if data and parents else None
    if check is not None:
        check(ctx_data)
    name = name or run_name(stage, cfg, [p.name for p in parents])
    with stage_run(stage, cfg, name, runs_dir, force=force, resume=resume, parents=parents) as run:
        ctx = StageContext(stage, cfg, run, parents, progress, ctx_data)
        if deterministic:
            seed_everything(cfg.seed, cfg.train.deterministic)
            yield ctx
        else:
            with nondeterminism_allowed():  # quantized CPU kernels flag themselves non-deterministic
                torch.manual_seed(cfg.seed)
                yield ctx
