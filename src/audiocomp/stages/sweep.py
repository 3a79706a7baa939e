"""`audiocomp sweep SWEEP.yaml`: one pipeline, many override sets (a grid and/or a list), run side by side.

    pipeline: ../demo.yaml          # relative to this file
    set: [train.epochs=5]           # for every combination
    grid:                           # cartesian product: 2 x 3 = 6 combinations
      model.name: [cnn, lstm]
      prune.sparsity: [0.5, 0.8, 0.9]
    runs:                           # and/or explicit combinations (crossed with the grid)
      - {name: esc50, config: [../data/esc50.yaml], set: [train.epochs=30]}

    resources: {cpus: 2, gpus: 1}   # per job: threads and GPUs (a GPU sets train.device=cuda)
    slurm: {partition: gpu, time: "4:00:00", gpus_per_task: 1, array_parallelism: 8}

Every combination is one `audiocomp run` process (the same command `--emit-commands` writes for a
scheduler), writing `<out>/combos/<id>/pipeline.json` and a log. Stages shared between combinations (one
training run for three sparsities) are computed once: run names are content hashes and a claim lock makes
the other combinations wait and reuse. `<out>/sweep.json` summarises; `<out>/report/` tabulates all runs.
This module runs the processes locally; sweep_jobs.py runs and records jobs, and turns the plan into
a job graph for Ray and Slurm.
"""
from __future__ import annotations

import concurrent.futures as futures
import itertools
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import Config, ConfigError, read_yaml
from ..runs import RunError, atomic_write_text, read_json, runs_root
from . import pipeline as pipeline_stage
from .pipeline import print_fn


class SweepEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = None
    config: list[str] = Field(default_factory=list)  # config files added after the pipeline's base
    set: list[str] = Field(default_factory=list)


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: Optional[int] = Field(None, ge=1)  # CPUs (torch threads) per job [local: cores / jobs; ray, slurm: 1]
    gpus: float = Field(0, ge=0)  # GPUs per job (Ray may share one: 0.5); any GPU sets train.device=cuda


class SlurmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: Optional[str] = None
    time: Union[int, str, None] = None  # per job: minutes or [D-]HH:MM[:SS]; required by --executor slurm
    gpus_per_task: Optional[int] = Field(None, ge=0)  # default: resources.gpus rounded up
    array_parallelism: Optional[int] = Field(None, ge=1)  # array tasks running at once [default: all]

    @field_validator("time")
    @classmethod
    def _minutes(cls, value: Union[int, str, None]) -> Optional[int]:
        """Slurm's formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes."""
        if value is None or isinstance(value, int):
            if value is not None and value < 1:
                raise ValueError("at least 1 minute")
            return value
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
        if not m:
            raise ValueError("expected minutes or [D-]HH:MM:SS")
        days, a, b, c = (int(x) if x else 0 for x in m.groups())
        if m.group(1) is None and m.group(4) is None:  # MM or MM:SS
            hours, minutes, seconds = 0, a, b
        else:  # HH:MM:SS or D-HH[:MM[:SS]]
            hours, minutes, seconds = a, b, c
        total = days * 1440 + hours * 60 + minutes + (seconds > 0)
        if total < 1:
            raise ValueError("at least 1 minute")
        return total


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = None  # default: the sweep file's name
    pipeline: str  # the pipeline file, relative to the sweep file
    set: list[str] = Field(default_factory=list)  # overrides for every combination
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # key -> values (cartesian product)
    runs: list[SweepEntry] = Field(default_factory=list)  # explicit override sets
    jobs: int = Field(1, ge=1)  # parallel processes (the --jobs option wins)
    resources: Resources = Field(default_factory=Resources)
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict) -> dict:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return grid

    @property
    def gpus(self) -> float:
        return max(self.resources.gpus, self.slurm.gpus_per_task or 0)


@dataclass
class Combo:
    id: str
    overrides: list[str]
    files: list[str] = field(default_factory=list)
    steps: list = field(default_factory=list)  # planned pipeline steps

    @property
    def run_names(self) -> list[str]:
        return [s.name for s in self.steps if s.name]


def load_sweep(path: Path | str) -> SweepSpec:
    path = Path(path)
    try:
        return SweepSpec.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise pipeline_stage.schema_error(exc, path, SweepSpec, SweepEntry) from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"


def _join(here: Path, rel: str) -> str:
    return os.path.normpath(here / rel)


def combinations(spec: SweepSpec, here: Path = Path("."), extra: list[str] = ()) -> list[Combo]:
    """Explicit entries crossed with the grid, in a stable order; ids are `NNN-<values>`.
    Entry config files are relative to the sweep file (`here`); `extra` overrides come last; a GPU request
    comes first (so any explicit train.device wins)."""
    first = ["train.device=cuda"] if spec.gpus else []
    keys = list(spec.grid)
    grid = [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())]
    combos = []
    for entry in spec.runs or [SweepEntry()]:
        for point in grid:
            sets = [f"{k}={json.dumps(v)}" for k, v in point.items()]  # JSON is valid YAML for --set
            label = "_".join(p for p in [entry.name or "", *(_slug(str(v)) for v in point.values())] if p)
            combos.append(Combo(f"{len(combos):03d}-{_slug(label) if label else 'base'}",
                                [*first, *spec.set, *entry.set, *sets, *extra], [_join(here, f) for f in entry.config]))
    return combos


def threads_per_job(jobs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


@dataclass
class Sweep:
    path: Path
    spec: SweepSpec
    pipeline: Path
    combos: list[Combo]
    runs_dir: Path
    out: Path

    def threads(self, jobs: int) -> int:
        """Threads per job: resources.cpus, else this machine's cores shared by `jobs` processes."""
        return self.spec.resources.cpus or threads_per_job(jobs)

    def argv(self, combo: Combo, threads: int, program: list[str], *, until: Optional[str] = None,
             out: Optional[Path] = None) -> list[str]:
        """The combination's `audiocomp run` command; with `until`, only that stage and what it needs."""
        cmd = [*program, "run", str(self.pipeline), "--runs-dir", str(self.runs_dir),
               "--out", str(out or self.combo_dir(combo)), "--threads", str(threads), "--quiet"]
        if until:
            cmd += ["--until", until]
        for f in combo.files:
            cmd += ["-c", f]
        for expr in combo.overrides:
            cmd += ["--set", expr]
        return cmd

    def combo_dir(self, combo: Combo) -> Path:
        return self.out / "combos" / combo.id

    def finished(self, combo: Combo) -> bool:
        """Its pipeline.json says done, for exactly the runs this plan would make, and they still exist."""
        p = self.combo_dir(combo) / "pipeline.json"
        if not p.is_file():
            return False
        try:
            info = read_json(p)
        except RunError:
            return False
        made = [s["run"] for s in info.get("stages", []) if s.get("run")]
        return (info.get("status") == "done" and made == combo.run_names
                and all((self.runs_dir / n / "manifest.json").is_file() for n in made))


def load(path: Path | str, runs_dir: Optional[Path] = None, out: Optional[Path] = None,
         overrides: list[str] = (), check: bool = True) -> Sweep:
    """Read the sweep and plan every combination's pipeline, so any config error shows before work.
    `overrides` (the command line's --set) apply to every combination, after its own."""
    path = Path(path)
    spec = load_sweep(path)
    pipeline = Path(_join(path.parent, spec.pipeline))
    if not pipeline.is_file():
        raise ConfigError(f"{path}: pipeline: {pipeline} not found")
    combos = combinations(spec, path.parent, list(overrides))
    for c in combos:
        try:
            c.steps = pipeline_stage.plan(pipeline, c.overrides, c.files, check)
        except ConfigError as exc:
            raise ConfigError(f"{path}: combination {c.id}: {exc}") from None
    name = spec.name or path.stem
    return Sweep(path, spec, pipeline, combos, runs_root(runs_dir), Path(out or Path("sweeps") / name))


def dry_run(sweep: Sweep, jobs: int, resume: bool) -> list[str]:
    """The plan as lines: each combination, what it would compute, and the command that runs it."""
    lines, todo = [], set()
    threads = sweep.threads(jobs)
    for c in sweep.combos:
        if resume and sweep.finished(c):
            lines.append(f"{c.id}: finished, skipped (--resume)")
            continue
        new = [s.name for s in c.steps if s.name and not (sweep.runs_dir / s.name / "manifest.json").is_file()]
        todo.update(new)
        what = " ".join([*(f"-c {f}" for f in c.files), *c.overrides]) or "(base pipeline)"
        lines.append(f"{c.id}: {len(new)} new run(s), {len(c.run_names) - len(new)} existing  {what}")
        lines.append("    " + shlex.join(sweep.argv(c, threads, ["audiocomp"])))
    lines.append(f"{len(sweep.combos)} combinations, {len(todo)} distinct runs to compute, "
                 f"{jobs} job(s) x {threads} thread(s)")
    return lines


def emit_commands(sweep: Sweep, dest: Path, jobs: int, resume: bool) -> int:
    """One shell command per line (line N = array task N), for a Slurm array or a CI matrix."""
    threads = sweep.threads(jobs)
    cmds = [shlex.join(sweep.argv(c, threads, ["audiocomp"])) for c in sweep.combos
            if not (resume and sweep.finished(c))]
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, "".join(c + "\n" for c in cmds))
    return len(cmds)


def run(sweep: Sweep, jobs: Optional[int] = None, resume: bool = False, progress: bool = True,
        quiet: bool = False) -> dict:
    """Run every combination in `jobs` parallel processes; record each result; write sweep.json + report."""
    from tqdm import tqdm

    from .sweep_jobs import Ledger, run_logged

    say = print_fn(quiet)
    jobs = jobs or sweep.spec.jobs
    threads = sweep.threads(jobs)
    ledger = Ledger(sweep, "local", threads, resume, jobs=jobs)

    def one(combo: Combo) -> dict:
        return ledger.update(combo.id, **run_logged(sweep.argv(combo, threads, []),
                                                    sweep.out / "logs" / f"{combo.id}.log", threads))

    todo = ledger.todo()
    with futures.ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(todo), desc="sweep", unit="combo", disable=not progress) as bar:
        for fut in futures.as_completed([pool.submit(one, c) for c in todo]):
            rec = fut.result()
            bar.update(1)
            line = f"{rec['id']}: {rec['status']} ({rec['seconds']:.1f} s)"
            (bar.write if progress else say)(line + (f"  {rec['error']}" if rec.get("error") else ""))
    return ledger.close()


def write_report(sweep: Sweep, records: dict) -> Optional[str]:
    """One table over every run of every finished combination (failed ones contribute what they finished)."""
    from . import report

    names = {n for r in records.values() for n in r["runs"]}
    sources = sorted(sweep.runs_dir / n for n in names if (sweep.runs_dir / n / "manifest.json").is_file())
    if not sources:
        return None
    cfg = Config()
    cfg.report.title = f"sweep {sweep.spec.name or sweep.path.stem}"
    result = report.run(cfg, sources, sweep.out / "report")
    return result["files"].get("markdown")
