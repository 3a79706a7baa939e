"""The stages, in one list: what each one reads (config sections, parent stages) and how a pipeline calls it.

The run-naming rule (naming.py), the stage context (context.py) and the pipeline runner (and through it
sweeps and the demo) learn the stages from here; the commands in cli/ call the same stage functions, whose
runs the context names by this table. Adding a stage is one module in stages/ with a `run` function plus one
`register(...)` line below; a pipeline file can then use it by name.

A stage module is imported by name when a pipeline is checked or the stage runs, so a build without an
optional stage fails up front, naming it.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..config import ConfigError
from ..registry import Registry
from ..runs import Run


@dataclass
class StageCall:
    """What a pipeline hands a stage: its config, its parents' runs and where it writes."""
    cfg: object  # the stage's resolved Config
    parents: list[Run]
    runs_dir: Path
    name: str  # the run name (naming.run_name)
    force: bool
    resume: bool
    progress: bool
    out: Path  # the pipeline's output folder for this stage (reports)
    parent_ids: list[str] = field(default_factory=list)  # the stage ids of `parents` (rows of a report)


@dataclass
class StageDef:
    name: str
    module: str  # audiocomp.stages.<module>
    sections: tuple[str, ...]  # config sections it reads: their values name its runs (seed always does)
    parents: tuple[str, ...] = ()  # stage kinds it reads from; () = none; ("*",) = any number (report)
    function: str = "run"  # the module's function
    optional_parent: bool = False  # may also start without a parent (prepare: with or without synth)
    makes_run: bool = True  # report writes tables, not a run: it is rendered every time
    subject: str = "model"  # what the run name says besides the stage: "model" (model.name) or "dataset"
    teacher: bool = False  # may read a second parent: a model run that teaches it (distillation; train)
    call: Optional[Callable[["StageDef", StageCall], object]] = None  # how a pipeline runs it [from its parent]

    def load(self) -> Callable:
        """The stage's function (its module imported now)."""
        return getattr(self.check_available(), self.function)

    def check_available(self):
        """The stage's module, or ConfigError when this build of audiocomp lacks it."""
        try:
            return importlib.import_module(f"audiocomp.stages.{self.module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("audiocomp.stages"):
                raise ConfigError(f"stage '{self.name}' is not available in this build of audiocomp "
                                  f"(no module {exc.name})") from None
            raise


STAGES: Registry[StageDef] = Registry("stage")


def register(stage: StageDef) -> StageDef:
    STAGES.register(stage.name)(stage)
    return stage


def accepted(fn: Callable, **kwargs) -> dict:
    """The keyword options `fn` accepts (stage functions differ a little, e.g. only train resumes)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _first(result) -> Run:
    return getattr(result, "run", result)  # prepare returns its data (Prepared), the others their run


def _data_stage(d: StageDef, c: StageCall) -> Run:
    """synth and prepare: run(cfg, runs_dir, name=, force=, progress=, from_run=)."""
    fn = d.load()
    return _first(fn(c.cfg, c.runs_dir, **accepted(fn, name=c.name, force=c.force, progress=c.progress,
                                                   from_run=c.parents[0] if c.parents else None)))


def _train(d: StageDef, c: StageCall) -> Run:
    """run(cfg, runs_dir, from_run=its prepare run, teacher=the model run that teaches it, if any)."""
    return d.load()(c.cfg, c.runs_dir, name=c.name, force=c.force, resume=c.resume, from_run=c.parents[0],
                    teacher=c.parents[1] if len(c.parents) > 1 else None, progress=c.progress)


def _from_parent(d: StageDef, c: StageCall) -> Run:
    """The stages that read one model run: run(cfg, parent_run, runs_dir, name=, force=, progress=)."""
    fn = d.load()
    return _first(fn(c.cfg, c.parents[0], c.runs_dir, **accepted(fn, name=c.name, force=c.force,
                                                                 progress=c.progress)))


def _report(d: StageDef, c: StageCall) -> dict:
    return d.load()(c.cfg, [p.path for p in c.parents], c.out,
                    names={p.name: sid for p, sid in zip(c.parents, c.parent_ids)})


def run_stage(stage: str, call: StageCall):
    """Run one stage as a pipeline does; returns its run (a report: its rows and files)."""
    d = STAGES.get(stage)
    return (d.call or _from_parent)(d, call)


MODEL_STAGES = ("train", "prune", "quantize", "compress")  # the stages whose runs hold a model/ the others can read

# One line per stage. Keep `sections` in step with what the stage reads: an edit there recomputes its runs
# (and their descendants, whose names carry their parents' names). Settings that change how fast a stage
# runs or only label its results, never what it computes, are left out of every name (naming.VOLATILE), and
# so is `tracking:`.
register(StageDef("synth", "synth", ("data", "synth"), call=_data_stage, subject="dataset"))
register(StageDef("prepare", "prepare", ("data", "features", "split"), ("synth",), optional_parent=True,
                  call=_data_stage, subject="dataset"))
register(StageDef("train", "train", ("model", "train", "distill"), ("prepare",), call=_train, teacher=True))
register(StageDef("prune", "prune", ("prune", "train", "distill"), MODEL_STAGES))
register(StageDef("prune-sensitivity", "prune", ("prune", "train"), MODEL_STAGES, function="sensitivity"))
register(StageDef("quantize", "quantize", ("quantize", "train", "distill"), MODEL_STAGES))
register(StageDef("compress", "compress", ("compress", "prune", "quantize", "train", "distill"),
                  MODEL_STAGES))
register(StageDef("eval", "evaluate", ("eval",), MODEL_STAGES))
register(StageDef("bench", "bench", ("bench",), MODEL_STAGES))
register(StageDef("export", "export", ("export",), MODEL_STAGES))
register(StageDef("report", "report", ("report",), ("*",), call=_report, makes_run=False))
