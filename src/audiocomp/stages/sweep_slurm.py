"""`audiocomp sweep --executor slurm`: the sweep's job graph submitted to Slurm through submitit; submits and exits.

Jobs of one kind that wait for the same parents go in as one job array (`slurm.array_parallelism` of them at
once); a job waits for its parents with `--dependency=afterok:<ids>` and is cancelled if one fails
(`--kill-on-invalid-dep=yes`). Each runs sweep_jobs.run_job on its node. The sweep file's `slurm:` gives the
partition, the time limit (required) and GPUs per task, `resources.cpus` the CPUs per task. submitit keeps the
sbatch scripts, pickled jobs and Slurm's own logs in `<out>/slurm/`; `audiocomp sweep SWEEP --collect` later
gathers the results into sweep.json and the report.

submitit's local executor (`cluster="local"`) runs the same job functions as local processes; it has no
dependencies, so there a group is submitted once its parents have finished (how the tests run this module).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..runs import RunError
from .sweep import Sweep
from .sweep_jobs import Job, Ledger, blocked, build, job_records, need, record, run_job

LOCAL_TIMEOUT_MIN = 24 * 60  # submitit's local executor kills a job after 2 minutes unless told otherwise


@dataclass
class Submission:
    folder: Path
    ids: dict[str, str] = field(default_factory=dict)  # job id -> Slurm job id ("123", or "123_4" in an array)
    handles: dict[str, Any] = field(default_factory=dict)  # job id -> submitit Job

    @property
    def cancel(self) -> str:
        return "scancel " + " ".join(sorted({i.split("_")[0] for i in self.ids.values()}, key=int))


def groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs of one kind with the same parents, in the graph's order (a group's parents are in earlier groups)."""
    out: dict[tuple, list[Job]] = {}
    for j in jobs:
        out.setdefault((j.kind, tuple(j.deps)), []).append(j)
    return list(out.values())


def executor(submitit, sweep: Sweep, folder: Path, cluster: str, threads: int, after: list[str]):
    """A submitit executor for one group: the sweep's Slurm options and `afterok` on the parents' job ids."""
    opts = sweep.spec.slurm
    gpus = opts.gpus_per_task if opts.gpus_per_task is not None else math.ceil(sweep.spec.resources.gpus)
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as exc:  # SlurmExecutor: 'Could not detect "srun"'
        raise RunError(f"--executor slurm: no Slurm on this machine ({exc}); submit from a login node") from None
    ex.update_parameters(
        name=f"audiocomp-{sweep.spec.name or sweep.path.stem}", nodes=1, tasks_per_node=1, cpus_per_task=threads,
        timeout_min=opts.time or LOCAL_TIMEOUT_MIN, slurm_partition=opts.partition, slurm_gpus_per_task=gpus or None,
        slurm_array_parallelism=opts.array_parallelism,
        slurm_dependency="afterok:" + ":".join(after) if after else None,
        slurm_additional_parameters={"kill-on-invalid-dep": "yes"} if after else None)
    return ex


def submit(sweep: Sweep, resume: bool = False, cluster: str = "slurm") -> Submission:
    """Submit every job of the sweep (with `resume`, of its unfinished combinations); record their ids."""
    submitit = need("submitit", "slurm", "--executor slurm")
    if cluster == "slurm" and sweep.spec.slurm.time is None:
        raise ConfigError(f"{sweep.path}: slurm.time: required by --executor slurm (per job, e.g. time: \"4:00:00\")")
    threads = sweep.spec.resources.cpus or 1
    jobs = build(sweep, threads, resume)
    sub = Submission((sweep.out / "slurm").resolve())
    ledger = Ledger(sweep, "slurm", threads, resume, folder=str(sub.folder), jobs=job_records(jobs))
    finished: dict[str, dict] = {}  # local executor only: results of parents, waited for
    for group in groups(jobs):
        parents = group[0].deps
        if cluster != "slurm":
            for d in parents:
                if d not in finished:
                    finished[d] = sub.handles[d].result()
            failed = [finished[d] for d in parents if finished[d].get("status") != "done"]
            if failed:
                for j in group:
                    finished[j.id] = record(ledger, j, blocked(j, failed[0].get("id", "?"), failed[0].get("error", "")))
                continue
        ex = executor(submitit, sweep, sub.folder, cluster, threads, [sub.ids[d] for d in parents])
        try:
            handles = ex.map_array(run_job, group)
        except Exception as exc:  # sbatch refused (a bad partition, time over the limit): keep what went in
            _save(ledger, sub, "submission failed")
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            raise RunError(f"sbatch failed for {group[0].id}: {why}"
                           + (f"; already submitted, cancel with: {sub.cancel}" if sub.ids else "")) from None
        for j, handle in zip(group, handles):
            sub.ids[j.id], sub.handles[j.id] = handle.job_id, handle
    _save(ledger, sub, "submitted")
    return sub


def _save(ledger: Ledger, sub: Submission, status: str) -> None:
    for entry in ledger.summary["jobs"]:
        entry["slurm_id"] = sub.ids.get(entry["id"])
    ledger.summary.update(status=status, cancel=sub.cancel if sub.ids else None)
    ledger.save()
