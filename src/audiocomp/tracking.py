"""Experiment tracking: each run mirrored into MLflow and/or TensorBoard (the `tracking:` section, off by default).

The run directory stays the source of truth; a tracker is a view of it. It records the stage's resolved config
as params, its per-epoch log records (step = epoch) and the scalars of metrics.json as metrics, its plots,
tables and reports as artifacts (model files only with `tracking.log_models`; otherwise the run dir is a tag),
and its lineage (stage, run name, parent runs) as tags. A tracking failure is a warning, never a failed run.

`stages/context.stage_run` starts and finishes the tracker; stages pass their training-loop log records to
`log_epoch`. MLflow's default store is `sqlite:///<runs dir>/mlflow.db` (artifacts in `<runs dir>/mlartifacts`),
which `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` browses without a server.
"""
from __future__ import annotations

import contextlib
import contextvars
import fcntl
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from .config import UNHASHED, Config
from .runs import Run

ARTIFACT_SUFFIXES = {".png", ".csv", ".md", ".html", ".json", ".yaml"}  # plots, tables, reports, config, metrics
MODEL_DIRS = ("model", "deploy")  # copied only with tracking.log_models
SKIPPED_DIRS = {"checkpoints", "tensorboard", "logs", *MODEL_DIRS}


class TrackingWarning(UserWarning):
    """A tracker could not record something; the run itself is unaffected."""


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def scalars(data: dict) -> dict[str, float]:
    """The numbers of a (nested) record, flattened; booleans, strings and lists left out."""
    return {k: float(v) for k, v in flatten(data).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _extra_missing(backend: str) -> str:
    return f"tracking.{backend} needs the {backend} extra: pip install 'audiocomp[{backend}]'"


def artifact_files(run_dir: Path) -> list[Path]:
    """The run's plots, tables, reports, config and metrics (not checkpoints, models, logs or event files)."""
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p.suffix in ARTIFACT_SUFFIXES
                  and not p.name.startswith(".") and not SKIPPED_DIRS & set(p.relative_to(run_dir).parts[:-1]))


class MlflowSink:
    kind = "mlflow"

    def __init__(self, cfg: Config, run: Run, stage: str, parents: list[Run], resume: bool):
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise RuntimeError(_extra_missing("mlflow")) from None
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "Creating initial MLflow database tables"
        runs_dir = run.path.resolve().parent
        default = cfg.tracking.mlflow_uri is None
        self.client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}" if default else cfg.tracking.mlflow_uri)
        self.log_models = cfg.tracking.log_models
        # stage processes of a sweep start side by side: one at a time creates the store and the experiment
        with _locked(runs_dir / ".mlflow.lock") if default else contextlib.nullcontext():
            exp = self.client.get_experiment_by_name(cfg.tracking.experiment)
            self.experiment = exp.experiment_id if exp else self.client.create_experiment(
                cfg.tracking.experiment, artifact_location=(runs_dir / "mlartifacts").as_uri() if default else None)
        tags = {"audiocomp.stage": stage, "audiocomp.run": run.name, "audiocomp.run_dir": str(run.path.resolve()),
                "audiocomp.parents": ",".join(p.name for p in parents)}
        parent = self._find(parents[0].name) if parents else None
        if parent:  # MLflow shows the run nested under its (first) parent
            tags["mlflow.parentRunId"] = parent
        self.run_id = self._find(run.name) if resume else None
        if self.run_id:  # a resumed run continues its MLflow run; its params were logged then
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self.client.create_run(self.experiment, run_name=run.name, tags=tags).info.run_id
        data = cfg.to_dict()
        params = [Param(k, str(v)[:6000]) for k, v in flatten({s: v for s, v in data.items() if s not in UNHASHED}).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _find(self, name: str) -> Optional[str]:
        found = self.client.search_runs([self.experiment], f"tags.`audiocomp.run` = '{name}'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
        return found[0].info.run_id if found else None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def finish(self, run: Run, final: dict[str, float], status: str) -> None:
        self.log_metrics(final, 0)
        for path in artifact_files(run.path):
            rel = path.relative_to(run.path).parent
            self.client.log_artifact(self.run_id, str(path), None if rel == Path(".") else rel.as_posix())
        for folder in MODEL_DIRS if self.log_models else ():
            if (run.path / folder).is_dir():
                self.client.log_artifacts(self.run_id, str(run.path / folder), folder)
        error = run.manifest.get("error")
        if error:
            self.client.set_tag(self.run_id, "audiocomp.error", str(error)[:5000])
        self.client.set_terminated(self.run_id, status)


class TensorBoardSink:
    kind = "tensorboard"

    def __init__(self, cfg: Config, run: Run, stage: str, parents: list[Run], resume: bool):
        try:
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError(_extra_missing("tensorboard")) from None
        self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))
        lineage = f"stage: {stage}  \nrun: {run.name}  \nparents: {', '.join(p.name for p in parents) or '-'}"
        self.writer.add_text("lineage", lineage)
        self.writer.add_text("config", "    " + cfg.to_yaml().replace("\n", "\n    "))  # a markdown code block

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, run: Run, final: dict[str, float], status: str) -> None:
        self.log_metrics({f"final/{k}": v for k, v in final.items()}, 0)
        self.writer.add_text("status", status)
        self.writer.close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class Tracker:
    """The enabled sinks; a sink that fails warns once and is dropped, the run goes on."""

    def __init__(self, sinks: list) -> None:
        self.sinks = sinks
        self._previous: Optional[Tracker] = None

    def _each(self, what: str, call) -> None:
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:  # a view must never break the run it shows
                _warn(sink.kind, what, exc)
                self.sinks.remove(sink)

    def log_epoch(self, record: dict, prefix: str = "epoch/") -> None:
        metrics = {f"{prefix}{k}": v for k, v in scalars(record).items() if k != "epoch"}
        self._each("logging an epoch", lambda s: s.log_metrics(metrics, int(record.get("epoch", 0))))

    def finish(self, run: Run, status: str) -> None:
        """status: FINISHED, FAILED or KILLED (MLflow's run states)."""
        try:
            final = scalars(run.metrics())
        except Exception:  # an unreadable metrics.json is the stage's problem, reported there
            final = {}
        self._each("finishing", lambda s: s.finish(run, final, status))
        _current.set(self._previous)


_current: contextvars.ContextVar[Optional[Tracker]] = contextvars.ContextVar("audiocomp_tracker", default=None)


def _warn(kind: str, what: str, exc: BaseException) -> None:
    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    warnings.warn(f"tracking ({kind}): {what} failed, the run goes on without it: {reason}", TrackingWarning,
                  stacklevel=3)


def start(stage: str, cfg: Config, run: Run, parents: list[Run] = (), resume: bool = False) -> Tracker:
    """Open the sinks `cfg.tracking` asks for (none by default) and make them the current tracker."""
    sinks = []
    for enabled, sink in ((cfg.tracking.mlflow, MlflowSink), (cfg.tracking.tensorboard, TensorBoardSink)):
        if enabled:
            try:
                sinks.append(sink(cfg, run, stage, list(parents), resume))
            except Exception as exc:
                _warn(sink.kind, "starting", exc)
    tracker = Tracker(sinks)
    tracker._previous = _current.get()
    _current.set(tracker)
    return tracker


def log_epoch(record: dict, prefix: str = "epoch/") -> None:
    """Send one training-loop log record (step = its epoch) to the current run's tracker, if any."""
    tracker = _current.get()
    if tracker is not None:
        tracker.log_epoch(record, prefix)
