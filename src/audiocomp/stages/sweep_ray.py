"""`audiocomp sweep --executor ray`: the sweep's job graph as Ray tasks; Ray schedules them.

Each job is a task requesting `resources: {cpus, gpus}` of the sweep file; it runs the job's command in a
child process (sweep_jobs.run_job) and receives its parent jobs' results by object reference, so it starts
after them and is not run when one failed. `address="auto"` joins a running cluster (`ray start --head`);
without one, Ray starts a local cluster for this sweep. Every node must see the runs dir, the sweep's out
folder and the data at the same paths (a shared file system), and have this audiocomp installed.
Blocks with a progress bar; Ctrl-C cancels the tasks (each stops its child process) and records them.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

from .pipeline import print_fn
from .sweep import Sweep
from .sweep_jobs import Job, Ledger, build, job_records, need, record, run_job

CANCEL_WAIT_S = 30  # for cancelled tasks to stop their child processes (which mark their runs failed)


def run(sweep: Sweep, address: Optional[str] = None, resume: bool = False, progress: bool = True,
        quiet: bool = False) -> dict:
    ray = need("ray", "ray", "--executor ray")
    from tqdm import tqdm

    say = print_fn(quiet)
    threads = sweep.spec.resources.cpus or 1
    jobs = build(sweep, threads, resume)
    ledger = Ledger(sweep, "ray", threads, resume, address=address, gpus_per_job=sweep.spec.resources.gpus,
                    jobs=job_records(jobs))
    if not jobs:  # everything finished already
        return ledger.close()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR if quiet else logging.WARNING)
    task = ray.remote(run_job).options(num_cpus=threads, num_gpus=sweep.spec.resources.gpus)
    refs: dict[str, object] = {}
    for job in jobs:  # parents first: a task gets its parents' results, so Ray runs it after them
        refs[job.id] = task.remote(job, *(refs[d] for d in job.deps))
    pending: dict[object, Job] = {refs[j.id]: j for j in jobs}
    try:
        with tqdm(total=len(jobs), desc="sweep (ray)", unit="job", disable=not progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayError as exc:  # the worker died (killed, out of memory, node lost)
                    result = {"id": job.id, "status": "failed", "error": str(exc).strip().splitlines()[-1][:500]}
                rec = record(ledger, job, result)
                bar.update(1)
                line = f"{job.id}: {rec['status']}" + (f" ({rec['seconds']:.1f} s)" if "seconds" in rec else "")
                (bar.write if progress else say)(line + (f"  {rec['error']}" if rec.get("error") else ""))
    except KeyboardInterrupt:
        print(f"cancelling {len(pending)} Ray task(s); each stops its process and marks its run failed",
              file=sys.stderr)
        for ref in pending:
            ray.cancel(ref)  # a running task gets KeyboardInterrupt and interrupts its child process
        ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
        for job in pending.values():
            record(ledger, job, {"id": job.id, "status": "failed", "error": "cancelled (Ctrl-C)"})
        ledger.close("interrupted")
        raise
    finally:
        if started:
            ray.shutdown()
    return ledger.close()
