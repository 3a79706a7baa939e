"""Commands that chain stages: run (a pipeline), sweep (many pipelines), demo (the packaged demo pipeline)."""
from __future__ import annotations

import enum

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ForceOpt, QuietOpt, RunsDirOpt, SetOpt, app, guarded


@app.command("run")
@guarded
def run_pipeline(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (base configs + stages).")],
                 config: Annotated[Optional[list[Path]], typer.Option("-c", "--config", help="Extra config file after the pipeline's base (repeatable).")] = None,
                 set_: SetOpt = None, runs_dir: RunsDirOpt = None,
                 out: Annotated[Optional[Path], typer.Option("--out", help="Reports and pipeline.json [default: reports/PIPELINE-NAME].")] = None,
                 dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each stage's run and whether it would be reused; run nothing.")] = False,
                 force: Annotated[bool, typer.Option("--force", help="Recompute every stage, even finished ones.")] = False,
                 threads: Annotated[Optional[int], typer.Option(min=1, help="Torch threads [default: all cores].")] = None,
                 wait: Annotated[float, typer.Option(help="Seconds to wait for a run another process is making.")] = 3600.0,
                 until: Annotated[Optional[str], typer.Option("--until", help="Only this stage id and the stages it needs.")] = None,
                 quiet: QuietOpt = False):
    """Run a pipeline of stages (synth, prepare, train, prune, prune-sensitivity, quantize, eval, bench, export,
    report: stages/registry.py), reusing finished ones.

    `--set ID:section.key=value` overrides one stage only.

    Example: `audiocomp run configs/demo.yaml --set train.epochs=3`
    """
    from ..stages import pipeline as stage

    if dry_run:
        steps = stage.plan(pipeline, set_ or [], config or [], until=until)
        typer.echo("\n".join(stage.describe(steps, runs_dir)))
        return
    if threads:
        import torch

        torch.set_num_threads(threads)
    summary = stage.run(pipeline, set_ or [], runs_dir, out, config or [], force=force, wait=wait, progress=not quiet,
                        quiet=quiet, until=until)
    typer.echo(f"pipeline done: {len(summary['stages'])} stages -> {out or stage.default_out(pipeline)}")


class Executor(str, enum.Enum):
    local, ray, slurm = "local", "ray", "slurm"


@app.command()
@guarded
def sweep(sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML (a pipeline plus a grid and/or a list of overrides).")],
          jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Parallel processes [default: the file's jobs, 1].")] = None,
          set_: SetOpt = None, runs_dir: RunsDirOpt = None,
          out: Annotated[Optional[Path], typer.Option("--out", help="sweep.json, logs and report [default: sweeps/NAME].")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the combinations and their commands; run nothing.")] = False,
          resume: Annotated[bool, typer.Option("--resume", help="Skip combinations that already finished.")] = False,
          emit_commands: Annotated[Optional[Path], typer.Option("--emit-commands", help="Write one shell command per combination (for Slurm arrays, CI matrices) and exit.")] = None,
          executor: Annotated[Executor, typer.Option("--executor", help="local: processes here; ray: Ray tasks (blocks); slurm: submit through submitit and exit.")] = Executor.local,
          address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (auto: the running one) [default: start a local one].")] = None,
          collect: Annotated[bool, typer.Option("--collect", help="Gather what the jobs finished into sweep.json and the report; run nothing.")] = False,
          quiet: QuietOpt = False):
    """Run a pipeline for every combination of a grid or list of overrides; write sweep.json and a report.

    With `--executor ray` or `slurm`, each run that combinations share is one job and each combination one
    job after it. Exit code 1 when any combination failed (the others still run).

    Example: `audiocomp sweep configs/sweeps/demo-models.yaml --jobs 2`
    """
    from ..stages import sweep as stage
    from ..stages import sweep_jobs

    plan = stage.load(sweep_file, runs_dir, out, set_ or [])
    jobs = jobs or plan.spec.jobs
    if dry_run:
        lines = (stage.dry_run(plan, jobs, resume) if executor is Executor.local
                 else sweep_jobs.describe(sweep_jobs.build(plan, plan.spec.resources.cpus or 1, resume)))
        typer.echo("\n".join(lines))
        return
    if emit_commands:
        n = stage.emit_commands(plan, emit_commands, jobs, resume)
        typer.echo(f"wrote {n} commands to {emit_commands}")
        return
    if collect:
        summary = sweep_jobs.collect(plan)
    elif executor is Executor.slurm:
        from ..stages import sweep_slurm

        sub = sweep_slurm.submit(plan, resume=resume)
        for job_id, slurm_id in sub.ids.items():
            typer.echo(f"{slurm_id:>12s}  {job_id}")
        typer.echo(f"submitted {len(sub.ids)} jobs -> {plan.out / 'sweep.json'}\ncancel: {sub.cancel}" if sub.ids
                   else "nothing to submit: every combination has finished")
        typer.echo(f"then: audiocomp sweep {sweep_file} --collect")
        return
    elif executor is Executor.ray:
        from ..stages import sweep_ray

        summary = sweep_ray.run(plan, address, resume=resume, progress=not quiet, quiet=quiet)
    else:
        summary = stage.run(plan, jobs, resume=resume, progress=not quiet, quiet=quiet)
    c = summary["counts"]
    typer.echo(f"sweep {summary['status']}: " + ", ".join(f"{n} {s}" for s, n in c.items())
               + f" -> {plan.out / 'sweep.json'}" + (f"; report: {summary['report']}" if summary.get("report") else ""))
    if summary["status"] != "done":
        raise typer.Exit(1)


@app.command()
@guarded
def demo(out: Annotated[Path, typer.Option(help="Folder for the synthetic data and the runs.")] = Path("demo-output"),
         per_class: Annotated[Optional[int], typer.Option(min=4, help="Synthetic clips per class, when generating [default: 40].")] = None,
         set_: SetOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Run the demo pipeline (configs/demo.yaml: synthetic audio, generated if missing, through every stage)
    and print the final table; finished runs are reused.

    Example: `audiocomp demo --out /tmp/demo`
    """
    from ..stages import demo as stage

    stage.run(out, set_ or [], per_class=per_class, force=force, progress=not quiet)
