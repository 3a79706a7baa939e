"""`audiocomp run PIPELINE.yaml`: chain stages, each reading its parent's run, reusing finished work.

A pipeline file names config files and overrides, then the stages in order:

    base: [../base.yaml, ../data/synth.yaml]   # config files, relative to this file
    set: [train.epochs=5]                      # overrides
    stages:
      - {id: data, stage: prepare}
      - {id: fp32, stage: train, from: data, config: [../models/cnn.yaml]}
      - {id: pruned, stage: prune, from: fp32, set: [prune.sparsity=0.5]}
      - {id: eval, stage: eval, from: pruned}
      - {id: table, stage: report}              # from: all earlier stages unless listed

A stage without a parent starts from `base` + `set`; a stage with one starts from its parent's resolved
config (as `audiocomp eval --from RUN` does) and adds its own `config` files and `set`.

Each run is named by a hash of its stage, the config sections that stage reads and its parent run's name
(itself such a hash), so a second `run` reuses every finished stage, and an edit recomputes only the
stages it reaches and their descendants. A claim lock per run name makes concurrent pipelines on one runs
dir (two sweeps, `--jobs N`) wait for each other instead of writing the same run twice.
"""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import importlib
import inspect
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import Config, ConfigError, load_config, read_yaml, stable_hash
from ..runs import Run, RunError, atomic_write_json, runs_root
from .common import find_done, print_fn


# ------------------------------------------------------------------------------------------- stage table

@dataclass
class StageCall:
    """Everything an adapter needs to run one stage."""
    cfg: Config
    parents: list[Run]
    runs_dir: Path
    name: str
    force: bool
    resume: bool
    progress: bool
    out: Path  # the pipeline's output folder (reports)
    parent_ids: list[str] = field(default_factory=list)  # the stage ids of `parents` (rows of a report)


@dataclass(frozen=True)
class StageDef:
    adapter: Callable[[StageCall], Optional[Run]]
    sections: tuple[str, ...]  # config sections whose values name the run (an edit there recomputes it)
    parents: tuple[str, ...]  # stage kinds it may read from; () = none; report takes any number
    module: str  # imported before any work, so a missing stage fails up front
    makes_run: bool = True  # report writes tables, not a run: it is re-rendered every time


def _call(fn: Callable, *args, **kwargs):
    """Call a stage function with only the keyword options it accepts (stages differ a little)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def _module(name: str):
    return importlib.import_module(f"audiocomp.stages.{name}")


def _prepare(c: StageCall) -> Run:
    return _module("prepare").run(c.cfg, c.runs_dir, name=c.name, force=c.force, progress=c.progress).run


def _train(c: StageCall) -> Run:
    return _module("train").run(c.cfg, c.runs_dir, name=c.name, force=c.force, resume=c.resume,
                                from_run=c.parents[0], progress=c.progress)


def _from_parent(module: str) -> Callable[[StageCall], Run]:
    """Adapter for the stages that take one parent run: run(cfg, parent_run, runs_dir, name=, force=)."""
    def adapter(c: StageCall) -> Run:
        result = _call(_module(module).run, c.cfg, c.parents[0], c.runs_dir, name=c.name, force=c.force,
                       progress=c.progress)
        return getattr(result, "run", result)
    return adapter


def _report(c: StageCall) -> None:
    _module("report").run(c.cfg, [p.path for p in c.parents], c.out,
                          names={p.name: sid for p, sid in zip(c.parents, c.parent_ids)})


MODEL_STAGES = ("train", "prune", "quantize")
# One line per stage. The sections list is what makes a run "the same": keep it in step with what the
# stage reads (seed is always included). Parents' names carry everything upstream.
STAGES: dict[str, StageDef] = {
    "prepare": StageDef(_prepare, ("data", "features", "split"), (), "prepare"),
    "train": StageDef(_train, ("model", "train"), ("prepare",), "train"),
    "prune": StageDef(_from_parent("prune"), ("prune", "train"), MODEL_STAGES, "prune"),
    "quantize": StageDef(_from_parent("quantize"), ("quantize", "train"), MODEL_STAGES, "quantize"),
    "eval": StageDef(_from_parent("evaluate"), ("eval",), MODEL_STAGES, "evaluate"),
    "bench": StageDef(_from_parent("bench"), ("bench",), MODEL_STAGES, "bench"),
    "export": StageDef(_from_parent("export"), ("export",), MODEL_STAGES, "export"),
    "report": StageDef(_report, ("report",), ("*",), "report", makes_run=False),
}
# Settings that change how fast a stage runs, never what it computes: left out of run names.
VOLATILE = {("train", "threads"), ("features", "workers")}


def check_available(stage: str) -> None:
    try:
        _module(STAGES[stage].module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("audiocomp.stages"):
            raise ConfigError(f"stage '{stage}' is not available in this build of audiocomp "
                              f"(no module {exc.name})") from None
        raise


# ----------------------------------------------------------------------------------------------- schema

class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    stage: str
    from_: Union[str, list[str], None] = Field(None, alias="from")  # parent stage id(s)
    config: list[str] = Field(default_factory=list)  # extra config files for this stage only
    set: list[str] = Field(default_factory=list)  # overrides for this stage only

    @field_validator("stage")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STAGES:
            raise ValueError(f"unknown stage {value!r} (known: {', '.join(STAGES)})")
        return value

    @property
    def parents(self) -> list[str]:
        return [self.from_] if isinstance(self.from_, str) else list(self.from_ or [])


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: list[str] = Field(default_factory=list)  # config files, relative to the pipeline (inherited downstream)
    set: list[str] = Field(default_factory=list)  # overrides (inherited downstream)
    stages: list[StageSpec] = Field(min_length=1)


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(top: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The model that holds the key at `loc` (list indices skipped), for the allowed keys of an error."""
    model = top
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        kinds = [field.annotation, *typing.get_args(field.annotation)]
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if model is None:
            return None
    return model


def schema_error(exc: ValidationError, path: Path, top: type[BaseModel], item: type[BaseModel]) -> ConfigError:
    """The most useful error of a pipeline/sweep file as one line: unknown keys first, with a hint."""
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _keys(_model_at(top, err["loc"][:-1]) or item)
        hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
        return ConfigError(f"{path}: {loc}: unknown key" + (f"; did you mean '{hint[0]}'?" if hint else "")
                           + f" (allowed: {', '.join(allowed)})")
    if err["type"] == "missing":
        return ConfigError(f"{path}: {loc}: required key missing")
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"{path}: {loc}: {err.get('input')!r} is not valid: {msg}")


def check_graph(spec: PipelineSpec, path: Path) -> None:
    """Ids unique, parents named before use, parent kinds that the stage can read."""
    kinds: dict[str, str] = {}
    for i, st in enumerate(spec.stages):
        where = f"{path}: stages.{i} ({st.id})"
        if st.id in kinds:
            raise ConfigError(f"{where}: id '{st.id}' is used twice")
        allowed = STAGES[st.stage].parents
        parents = st.parents
        if allowed == () and parents:
            raise ConfigError(f"{where}: a {st.stage} stage has no parent; remove 'from'")
        for p in parents:
            if p not in kinds:
                raise ConfigError(f"{where}: from: '{p}' is not an earlier stage id "
                                  f"(earlier: {', '.join(kinds) or 'none'})")
            if allowed != ("*",) and kinds[p] not in allowed:
                raise ConfigError(f"{where}: a {st.stage} stage cannot read a {kinds[p]} run "
                                  f"(it reads: {', '.join(allowed)})")
        if allowed not in ((), ("*",)) and len(parents) != 1:
            raise ConfigError(f"{where}: a {st.stage} stage needs exactly one parent in 'from' "
                              f"(a {' or '.join(allowed)} stage id)")
        kinds[st.id] = st.stage


def load_pipeline(path: Path | str) -> PipelineSpec:
    path = Path(path)
    data = read_yaml(path)
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise schema_error(exc, path, PipelineSpec, StageSpec) from None
    check_graph(spec, path)
    return spec


# ------------------------------------------------------------------------------------------------- plan

@dataclass
class Step:
    spec: StageSpec
    cfg: Config
    name: Optional[str]  # run name (None for report)
    parents: list["Step"] = field(default_factory=list)

    @property
    def stage(self) -> str:
        return self.spec.stage


def split_overrides(overrides: list[str], ids: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`ID:section.key=value` applies to one stage; plain `section.key=value` to all."""
    common, scoped = [], {}
    for expr in overrides:
        head = expr.split("=", 1)[0]
        if ":" in head:
            sid, rest = expr.split(":", 1)
            if sid not in ids:
                raise ConfigError(f"--set {expr!r}: no stage with id '{sid}' (ids: {', '.join(sorted(ids))})")
            scoped.setdefault(sid, []).append(rest)
        else:
            common.append(expr)
    return common, scoped


def ancestors(steps: list[Step]) -> list[Step]:
    seen: dict[str, Step] = {}
    stack = list(steps)
    while stack:
        s = stack.pop()
        if s.spec.id not in seen and s.name is not None:
            seen[s.spec.id] = s
            stack.extend(s.parents)
    return list(seen.values())


def run_name(stage: str, cfg: Config, parents: list[Step]) -> str:
    if stage == "prepare":
        from .prepare import prepare_name

        return prepare_name(cfg)  # shared with `audiocomp prepare`: same data, same run
    data = cfg.to_dict()
    key = {s: data.get(s, {}) for s in STAGES[stage].sections}
    for section, k in VOLATILE:
        if isinstance(key.get(section), dict):
            key[section].pop(k, None)
    key.update(stage=stage, seed=cfg.seed, parents=[p.name for p in parents])
    return f"{stage}-{cfg.model.name}-{stable_hash(key, 10)}"


def _resolve(st: StageSpec, spec: PipelineSpec, here: Path, extra: list[Path], common: list[str],
             scoped: list[str], parent: Optional[Step]) -> Config:
    """A first stage gets the pipeline's files and sets; a later one starts from its parent's resolved config
    (as `audiocomp eval --from RUN` does) plus its own. Command-line sets win at every level."""
    own = [here / f for f in st.config]
    if parent is None or st.stage == "report":
        return load_config([*(here / f for f in spec.base), *extra, *own], [*spec.set, *st.set, *common, *scoped])
    return load_config(own, [*st.set, *common, *scoped], base=parent.cfg.to_dict())


def _check_names(st: StageSpec, cfg: Config, path: Path) -> None:
    """Registered names are checked here so a typo fails before any stage has run, not an hour in."""
    from ..datasets import ADAPTERS
    from ..models import MODELS

    checks = {"prepare": ("data.dataset", cfg.data.dataset, ADAPTERS), "train": ("model.name", cfg.model.name, MODELS)}
    if st.stage in checks:
        key, value, registry = checks[st.stage]
        if value not in registry:
            raise ConfigError(f"{path}: stage '{st.id}': {key}: unknown {registry.kind} {value!r} "
                              f"(known: {', '.join(registry.names())})")


def plan(path: Path | str, overrides: list[str] = (), files: list[Path] = (), check: bool = True,
         until: Optional[str] = None) -> list[Step]:
    """Resolve every stage's config and run name without doing any work (validates everything).
    `files` are extra config files applied after the pipeline's `base` (e.g. a dataset for a sweep).
    `check=False` skips the checks that need the stage modules, datasets and models to be installed.
    `until`: only that stage and the stages it needs (a sweep's job for a run several combinations share)."""
    path = Path(path)
    spec = load_pipeline(path)
    for st in spec.stages if check else ():
        check_available(st.stage)
    here = path.resolve().parent
    common, scoped = split_overrides(list(overrides), {s.id for s in spec.stages})
    steps: dict[str, Step] = {}
    for st in spec.stages:
        parents = [steps[p] for p in st.parents]
        try:
            cfg = _resolve(st, spec, here, [Path(f) for f in files], common, scoped.get(st.id, []),
                           parents[0] if parents else None)
        except ConfigError as exc:
            raise ConfigError(f"{path}: stage '{st.id}': {exc}") from None
        if check:
            _check_names(st, cfg, path)
        if st.stage == "report":  # a report covers the named stages and everything upstream of them
            parents = ancestors(parents) if parents else list(steps.values())
        name = run_name(st.stage, cfg, parents) if STAGES[st.stage].makes_run else None
        steps[st.id] = Step(st, cfg, name, parents)
    if until is not None:
        if until not in steps:
            raise ConfigError(f"{path}: --until {until}: no stage with that id (ids: {', '.join(steps)})")
        needed = {s.spec.id for s in ancestors(steps[until].parents)} | {until}
        return [s for s in steps.values() if s.spec.id in needed]
    return list(steps.values())


def describe(steps: list[Step], runs_dir: Optional[Path]) -> list[str]:
    """One line per step: what it would do (reuse or run) and under which run name."""
    lines = []
    for s in steps:
        if s.name is None:
            action, target = "render", "report"
        else:
            action = "reuse" if find_done(s.name, runs_dir) else "run"
            target = s.name
        src = ", ".join(p.spec.id for p in s.parents) or "-"
        lines.append(f"{s.spec.id:14s} {s.stage:9s} {action:6s} {target}  <- {src}")
    return lines


# -------------------------------------------------------------------------------------------- execution

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


def _execute(step: Step, runs: dict[str, Run], runs_dir: Path, out: Path, progress: bool,
             force: bool) -> tuple[Optional[Run], str]:
    ids = [p.spec.id for p in step.parents if p.spec.id in runs]
    call = StageCall(step.cfg, [runs[i] for i in ids], runs_dir, step.name or step.spec.id, force, False, progress,
                     out / step.spec.id, ids)
    if step.name is None:
        STAGES[step.stage].adapter(call)
        return None, "rendered"
    done = None if force else find_done(step.name, runs_dir)
    if done is not None:
        return done, "reused"
    path = runs_dir / step.name
    if (path / "manifest.json").is_file():  # an earlier attempt crashed or failed: continue or replace it
        # a checkpoint of the run, or of one of its folds/<name>/ or seeds/<k>/ sub-runs
        call.resume = step.stage == "train" and next(path.glob("**/checkpoints/last.pt"), None) is not None
        call.force = not call.resume
    return STAGES[step.stage].adapter(call), "resumed" if call.resume else "ran"


def default_out(path: Path) -> Path:
    """reports/<pipeline name>; a file called pipeline.yaml is named by its folder (paper/<id>/pipeline.yaml)."""
    return Path("reports") / (path.parent.name if path.stem == "pipeline" else path.stem)


def run(path: Path | str, overrides: list[str] = (), runs_dir: Optional[Path] = None,
        out: Optional[Path] = None, files: list[Path] = (), *, force: bool = False, wait: float = 3600.0, progress: bool = True,
        quiet: bool = False, until: Optional[str] = None) -> dict:
    """Run (or reuse) every stage of the pipeline (with `until`: that stage and what it needs); write
    `<out>/pipeline.json`; return that summary."""
    say = print_fn(quiet)
    path = Path(path)
    steps = plan(path, overrides, files, until=until)
    runs_dir = runs_root(runs_dir)
    out = Path(out or default_out(path))
    summary: dict[str, Any] = {"pipeline": str(path), "overrides": list(overrides),
                               "files": [str(f) for f in files], "runs_dir": str(runs_dir),
                               "status": "running", "stages": []}
    runs: dict[str, Run] = {}
    try:
        for step in steps:
            t0 = time.perf_counter()
            entry = {"id": step.spec.id, "stage": step.stage, "run": step.name, "status": "running"}
            summary["stages"].append(entry)
            if step.name is None:
                run_, status = _execute(step, runs, runs_dir, out, progress, force)
            else:
                with claim(runs_dir, step.name, wait, say):
                    run_, status = _execute(step, runs, runs_dir, out, progress, force)
                runs[step.spec.id] = run_
            entry.update(status=status, seconds=round(time.perf_counter() - t0, 2))
            if step.name is None:
                entry["report"] = str(out / step.spec.id)
            say(f"{step.spec.id}: {status} {step.name or out / step.spec.id} ({entry['seconds']:.1f} s)")
    except BaseException as exc:
        summary["status"] = "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        summary["stages"][-1]["status"] = "failed"
        atomic_write_json(out / "pipeline.json", summary)
        raise
    summary["status"] = "done"
    atomic_write_json(out / "pipeline.json", summary)
    return summary

