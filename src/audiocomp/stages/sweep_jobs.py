"""The jobs of a sweep: one command run with its log (`run_logged`), the record of them all (`Ledger`,
sweep.json), and the planned sweep as a job graph for engines that schedule (Ray, Slurm), built once.

One job per run that two or more of the combinations share (`audiocomp run PIPELINE --until ID`: that stage
and what it needs), after the shared runs it reads; then one job per combination (its `audiocomp run`),
after the shared runs it needs. Runs that already exist get no job. A job is a command, so every engine
runs the same thing: `run_job` on a worker, the output in `<out>/logs/<job id>.log`.

    prepare-synth-1a2b (shared by 2)  <-  train-cnn-3c4d (shared by 2)  <-  000-a, 001-b

A job whose parent failed is not run; it is recorded as failed with the parent named. `collect` reads what
the jobs left (their pipeline.json files) into sweep.json and the report, for engines that exit before the
work is done (Slurm) and for `--emit-commands`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError
from ..runs import RunError, atomic_write_json, read_json
from .context import find_done
from .pipeline import Step, ancestors
from .sweep import Combo, Sweep, write_report


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or [""])[-1][:500]


def run_logged(args: list[str], log: Path, threads: int, cwd: Optional[str] = None) -> dict:
    """Run `audiocomp ARGS` in a child process with `threads` threads, its output into `log` (relative to
    `cwd`); return status, returncode, log, seconds and, when it failed, the error line. An interrupt of the
    caller (a cancelled Ray task) is passed on, so the child marks its run failed before it exits."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    src = str(Path(__file__).resolve().parents[2])  # children import this same audiocomp
    env["PYTHONPATH"] = os.pathsep.join(p for p in [src, env.get("PYTHONPATH")] if p)
    log = Path(cwd or "") / log
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])  # a Ray worker blocks it; children inherit
        try:
            child = subprocess.Popen([sys.executable, "-m", "audiocomp", *args], env=env, cwd=cwd, stdout=fh,
                                     stderr=subprocess.STDOUT)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            rc = None
            while rc is None:  # short waits, not one blocking call: a cancelled Ray task's interrupt lands here
                with contextlib.suppress(subprocess.TimeoutExpired):
                    rc = child.wait(timeout=1)
        except BaseException:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    rec = {"status": "done" if rc == 0 else "failed", "returncode": rc, "log": str(log),
           "seconds": round(time.perf_counter() - t0, 1)}
    if rc != 0:
        rec["error"] = _last_line(log)
    return rec


class Ledger:
    """`<out>/sweep.json`: what each combination did (and, under Ray or Slurm, each job), saved at every change."""

    def __init__(self, sweep: Sweep, executor: str, threads: int, resume: bool = False, **extra: Any) -> None:
        self.sweep = sweep
        self.lock = threading.Lock()
        self.records = {c.id: {"id": c.id, "files": c.files, "overrides": c.overrides, "runs": c.run_names,
                               "status": "skipped" if resume and sweep.finished(c) else "pending",
                               "out": str(sweep.combo_dir(c))} for c in sweep.combos}
        self.summary: dict[str, Any] = {
            "sweep": str(sweep.path), "pipeline": str(sweep.pipeline), "runs_dir": str(sweep.runs_dir),
            "executor": executor, **extra, "threads_per_job": threads,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running",
            "combinations": list(self.records.values())}
        sweep.out.mkdir(parents=True, exist_ok=True)
        self.save()

    def todo(self) -> list[Combo]:
        return [c for c in self.sweep.combos if self.records[c.id]["status"] != "skipped"]

    def update(self, combo_id: str, **fields: Any) -> dict:
        rec = self.records[combo_id]
        rec.update(fields)
        self.save()
        return rec

    def save(self) -> None:
        with self.lock:
            atomic_write_json(self.sweep.out / "sweep.json", self.summary)

    def close(self, status: Optional[str] = None) -> dict:
        """Counts, the overall status and the report over every run made; returns the summary."""
        statuses = [r["status"] for r in self.records.values()]
        counts = {s: statuses.count(s) for s in ("done", "skipped", "failed", *sorted(set(statuses)))}
        if status is None:
            finished = counts["done"] + counts["skipped"] == len(statuses)
            status = "failed" if counts["failed"] else "done" if finished else "incomplete"
        self.summary.update(counts=counts, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), status=status)
        self.summary["report"] = write_report(self.sweep, self.records)
        self.save()
        return self.summary


@dataclass
class Job:
    id: str  # the combination's id, or the shared run's name
    kind: str  # "shared" or "combo"
    argv: list[str]  # `audiocomp` arguments (each engine runs them with its own Python)
    cwd: str  # where the command runs: relative paths in the sweep resolve here, on every node
    log: str
    threads: int
    deps: list[str] = field(default_factory=list)  # ids of the jobs that must succeed first
    combos: list[str] = field(default_factory=list)  # the combinations it serves

    @property
    def command(self) -> str:
        return shlex.join(["audiocomp", *self.argv])


def need(module: str, extra: str, what: str):
    """Import an optional dependency, or stop with one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the {extra} extra: pip install 'audiocomp[{extra}]'") from None


def _nearest(step: Step, shared: set[str]) -> set[str]:
    """The shared runs closest above `step` (itself excluded)."""
    found = set()
    for p in step.parents:
        found |= {p.name} if p.name in shared else _nearest(p, shared)
    return found


def build(sweep: Sweep, threads: int, resume: bool = False) -> list[Job]:
    """The jobs of the combinations to run (all, or with `resume` the unfinished ones), parents first."""
    todo = [c for c in sweep.combos if not (resume and sweep.finished(c))]
    users: dict[str, dict[str, Combo]] = {}  # run name -> the combinations that make it
    first: dict[str, tuple[Combo, Step]] = {}  # run name -> where it first appears (parents come earlier)
    for c in todo:
        for s in c.steps:
            if s.name:
                users.setdefault(s.name, {})[c.id] = c
                first.setdefault(s.name, (c, s))
    shared = {n for n, cs in users.items() if len(cs) > 1 and find_done(n, sweep.runs_dir) is None}
    cwd = os.getcwd()
    jobs = []
    for name, (combo, step) in first.items():
        if name in shared:
            argv = sweep.argv(combo, threads, [], until=step.spec.id, out=sweep.out / "shared" / name)
            jobs.append(Job(name, "shared", argv, cwd, str(sweep.out / "logs" / f"{name}.log"), threads,
                            sorted(_nearest(step, shared)), list(users[name])))
    for c in todo:
        mine = [s for s in c.steps if s.name in shared]
        below = {a.name for s in mine for a in ancestors(s.parents)}  # waited for through a later shared run
        deps = {s.name for s in mine if s.name not in below}
        jobs.append(Job(c.id, "combo", sweep.argv(c, threads, []), cwd, str(sweep.out / "logs" / f"{c.id}.log"),
                        threads, sorted(deps), [c.id]))
    return jobs


def describe(jobs: list[Job]) -> list[str]:
    """The graph as lines: each job, what it waits for, its command."""
    lines = []
    for j in jobs:
        who = f"shared by {len(j.combos)} combinations" if j.kind == "shared" else "combination"
        lines.append(f"{j.id} ({who}" + (f"; after {', '.join(j.deps)})" if j.deps else ")"))
        lines.append("    " + j.command)
    shared = sum(j.kind == "shared" for j in jobs)
    lines.append(f"{len(jobs)} jobs: {shared} shared run(s), {len(jobs) - shared} combination(s), "
                 f"{jobs[0].threads if jobs else 0} thread(s) each")
    return lines


def run_job(job: Job, *parents: dict) -> dict:
    """What a worker runs (a Ray task, a Slurm job): the job's command, unless a parent job failed."""
    failed = [p for p in parents if p.get("status") != "done"]
    if failed:
        return blocked(job, failed[0]["id"], failed[0].get("error", ""))
    return {"id": job.id, **run_logged(job.argv, Path(job.log), job.threads, job.cwd)}


def blocked(job: Job | Combo, parent: str, why: str = "") -> dict:
    """The result of a job not run because `parent` failed (with `why`; a parent that was itself not run
    passes its own reason on, so the error names the job that really failed)."""
    error = why if why.startswith("not run:") else f"not run: job {parent} failed" + (f" ({why})" if why else "")
    return {"id": job.id, "status": "failed", "error": error}


def job_records(jobs: list[Job]) -> list[dict]:
    return [{"id": j.id, "kind": j.kind, "deps": j.deps, "combos": j.combos, "command": j.command,
             "status": "pending"} for j in jobs]


def record(ledger: Ledger, job: Job, result: dict) -> dict:
    """Put a job's result into sweep.json: its job entry and, for a combination, its record."""
    fields = {k: v for k, v in result.items() if k != "id"}
    for entry in ledger.summary.get("jobs", []):
        if entry["id"] == job.id:
            entry.update(fields)
    if job.kind == "combo":
        return ledger.update(job.id, **fields)
    ledger.save()
    return {"id": job.id, **fields}


def _pipeline_info(folder: Path) -> Optional[dict]:
    try:
        return read_json(folder / "pipeline.json")
    except RunError:
        return None


def collect(sweep: Sweep) -> dict:
    """sweep.json and the report from what the jobs have left so far; runs nothing. A combination is done,
    failed (its error, or the shared run that failed before it), or pending (queued, running or cancelled)."""
    path = sweep.out / "sweep.json"
    before = read_json(path) if path.is_file() else {}
    ledger = Ledger(sweep, before.get("executor", "external"), before.get("threads_per_job", 0),
                    **{k: before[k] for k in ("jobs", "folder", "cancel") if k in before})
    for c in sweep.combos:
        log = sweep.out / "logs" / f"{c.id}.log"
        fields = {"log": str(log)} if log.is_file() else {}
        info = _pipeline_info(sweep.combo_dir(c))
        if sweep.finished(c):
            fields["status"] = "done"
        elif info and info.get("status") == "failed":
            fields.update(status="failed", error=info.get("error", ""))
        else:
            shared = {n: _pipeline_info(sweep.out / "shared" / n) for n in c.run_names}
            broken = [(n, i.get("error", "")) for n, i in shared.items() if i and i.get("status") == "failed"]
            fields.update(blocked(c, *broken[0]) if broken else {"status": "pending"})
            fields.pop("id", None)
        ledger.records[c.id].update(fields)
    for entry in ledger.summary.get("jobs", []):
        info = _pipeline_info(sweep.out / ("shared" if entry["kind"] == "shared" else "combos") / entry["id"])
        entry["status"] = info.get("status", "pending") if info else "pending"
    return ledger.close()
