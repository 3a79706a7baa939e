"""The `audiocomp` command line: parse options, load the config, open the run, call a stage. No logic here."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Audio classification experiments under edge constraints: prepare, train, evaluate, report.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
data_app = typer.Typer(no_args_is_help=True, help="Dataset helpers: synthetic data.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[Optional[list[Path]], typer.Option("-c", "--config", help="YAML config file (repeatable; later files win).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: section.key=value (YAML value; repeatable).")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", envvar="AUDIOCOMP_RUNS", help="Where run directories go [default: runs].")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Run name [default: <stage>-<model>-<config hash>].")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing run of the same name.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars or tables.")]


def _user_errors() -> tuple[type[BaseException], ...]:
    from .audio import AudioError
    from .config import ConfigError
    from .datasets.base import DatasetError
    from .models.io import ModelLoadError
    from .runs import RunError

    return ConfigError, RunError, DatasetError, AudioError, ModelLoadError, FileNotFoundError, PermissionError


def guarded(fn: Callable) -> Callable:
    """Turn expected user errors into one line on stderr and exit code 2 (1 for other failures)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                typer.echo(f"error: disk full while writing {exc.filename or ''} ({exc.strerror})", err=True)
                raise typer.Exit(2) from None
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
    return wrapper


def _config(config: Optional[list[Path]], overrides: Optional[list[str]], base: Optional[dict] = None):
    from .config import load_config

    return load_config(config or [], overrides or [], base=base)


def _open_run(ref: str, runs_dir: Optional[Path]):
    from .runs import Run

    return Run.open(ref, runs_dir)


# ------------------------------------------------------------------------------------------ commands

@app.command()
@guarded
def prepare(config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
            force: ForceOpt = False, workers: Annotated[Optional[int], typer.Option(help="Worker processes [default: all cores].")] = None,
            quiet: QuietOpt = False):
    """Decode and featurize a dataset once into the feature store, and write its splits.

    Example: `audiocomp prepare -c configs/demo.yaml --set features.n_mels=64`
    """
    from .stages import prepare as stage

    cfg = _config(config, set_)
    prepared = stage.run(cfg, runs_dir, name=name, force=force, workers=workers, progress=not quiet)
    counts = {e["name"]: {k: len(e[k]) for k in ("train", "val", "test")} for e in prepared.splits["splits"]}
    typer.echo(f"prepared {len(prepared.store.items)} items, {len(prepared.store.classes)} classes -> {prepared.run.path}")
    typer.echo(f"splits: {counts}; skipped files: {prepared.store.report['skipped']}")


@app.command()
@guarded
def train(config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
          force: ForceOpt = False,
          from_: Annotated[Optional[str], typer.Option("--from", help="A prepare run to train on [default: prepare it now].")] = None,
          resume: Annotated[Optional[str], typer.Option("--resume", help="Continue an interrupted training run (name or path).")] = None,
          quiet: QuietOpt = False):
    """Train a model on a prepared split; writes model/, checkpoints/, metrics and curves.

    Example: `audiocomp train -c configs/demo.yaml --set train.epochs=5`
    """
    from .runs import Run
    from .stages import train as stage

    if resume:
        prev = Run.open(resume, runs_dir, require_done=False)
        cfg = _config(config, set_, base=prev.config_dict())
        name, runs_dir = prev.name, prev.path.parent
    else:
        cfg = _config(config, set_)
    parent = _open_run(from_, runs_dir) if from_ else None
    run = stage.run(cfg, runs_dir, name=name, force=force, resume=bool(resume), from_run=parent, progress=not quiet)
    m = run.metrics()
    typer.echo(f"trained {m['model']} ({m['parameters']:,} parameters), best epoch {m['best_epoch']}: "
               f"test accuracy {m.get('test_accuracy', float('nan')):.3f} -> {run.path}")


@app.command("eval")
@guarded
def evaluate(from_: Annotated[str, typer.Option("--from", help="The model run to evaluate (name or path).")],
             config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
             force: ForceOpt = False,
             split: Annotated[Optional[str], typer.Option(help="train, val or test [default: eval.split].")] = None,
             quiet: QuietOpt = False):
    """Accuracy, macro-F1, confusion matrix and model facts (size, parameters, MACs) of a model run.

    Example: `audiocomp eval --from train-cnn-1a2b3c4d --split test`
    """
    from .stages import evaluate as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, split=split, progress=not quiet)
    m = run.metrics()
    facts = m["model_facts"]
    score = f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}" if "accuracy" in m else f"mAP {m['map']:.3f}"
    typer.echo(f"{m['split']}: {score} on {m['items']} items; {facts['parameters']:,} parameters, "
               f"{facts['file_bytes'] / 1e6:.2f} MB -> {run.path}")


prune_app = typer.Typer()  # help: the callback docstring below
app.add_typer(prune_app, name="prune")
FromModelOpt = Annotated[Optional[str], typer.Option("--from", help="The model run to prune (name or path).")]


@prune_app.callback(invoke_without_command=True)
@guarded
def prune(ctx: typer.Context, from_: FromModelOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
          runs_dir: RunsDirOpt = None, name: NameOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Prune a trained model run into a new run: before -> after parameters, MACs, sizes, accuracy, latency.

    Example: `audiocomp prune --from train-cnn-1a2b3c4d -c configs/prune/taylor.yaml`
    """
    if ctx.invoked_subcommand is not None:
        return
    if not from_:
        raise typer.BadParameter("--from RUN is required (the model run to prune)", param_hint="--from")
    from .stages import prune as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, progress=not quiet)
    m = run.metrics()
    b, a, c = m["before"], m["after"], m["change"]
    score = "test_accuracy" if "test_accuracy" in a else "val_accuracy"
    typer.echo(f"{m['method']}: parameters {b['parameters']:,} -> {a['parameters']:,}, non-zero {b['nonzero']:,} -> "
               f"{a['nonzero']:,}, MACs {b['macs']:,} -> {a['macs']:,} ({c['macs_reduction']:.2f}x), "
               f"file {b['file_bytes'] / 1e6:.2f} -> {a['file_bytes'] / 1e6:.2f} MB, sparse {a['sparse_bytes'] / 1e6:.2f} MB, "
               f"latency {b['latency']['median_ms']:.2f} -> {a['latency']['median_ms']:.2f} ms, "
               f"{score} {b.get(score, float('nan')):.3f} -> {a.get(score, float('nan')):.3f} -> {run.path}")


@prune_app.command("sensitivity")
@guarded
def prune_sensitivity(from_: Annotated[str, typer.Option("--from", help="The model run to analyse (name or path).")],
                      config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None,
                      name: NameOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Prune each layer group alone at prune.sensitivity_ratios (no fine-tuning); CSV + heat map of the accuracy drop.

    Use the CSV with `prune.sensitivity: PATH` and `prune.max_drop: X` to set per-layer channel ratios.
    Example: `audiocomp prune sensitivity --from train-cnn-1a2b3c4d --set prune.criterion=l1`
    """
    from .stages import prune as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.sensitivity(cfg, model_run, runs_dir, name=name, force=force, progress=not quiet)
    m = run.metrics()
    typer.echo(f"sensitivity of {m['layers']} layer groups at {len(m['ratios'])} ratios -> {m['csv']}")


@app.command()
@guarded
def report(runs: Annotated[list[Path], typer.Argument(help="Run directories, or folders of runs.")],
           out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("report"),
           config: ConfigOpt = None, set_: SetOpt = None, quiet: QuietOpt = False):
    """Aggregate runs into markdown and CSV tables (accuracy, size, parameters, MACs).

    Example: `audiocomp report runs/ --out report/`
    """
    from .report.tables import terminal
    from .stages import report as stage

    result = stage.run(_config(config, set_), runs, out)
    if not quiet:
        typer.echo(terminal(result["rows"]))
    typer.echo(f"report: {', '.join(result['files'].values())}")


@app.command()
@guarded
def demo(out: Annotated[Path, typer.Option(help="Folder for the synthetic data and the runs.")] = Path("demo-output"),
         set_: SetOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Run the whole pipeline on synthetic audio (generated if missing) and print the final table.

    Example: `audiocomp demo --out /tmp/demo`
    """
    from .stages import demo as stage

    stage.run(out, set_ or [], force=force, progress=not quiet)


@app.command()
@guarded
def models(feature_shape: Annotated[str, typer.Option(help="Input features as 1xFxT or S (waveform).")] = "1x64x101",
           classes: Annotated[int, typer.Option(help="Number of classes.")] = 10):
    """List the registered models with their parameter counts.

    Example: `audiocomp models --feature-shape 1x128x431`
    """
    from .models import MODELS, ModelSpec, build_model, count_parameters

    spec_shape = [int(v) for v in feature_shape.lower().split("x")]
    for model_name in MODELS.names():
        info = MODELS.get(model_name)
        shape = spec_shape if (len(spec_shape) == 3) == (info.input_kind == "spectrogram") else (
            [1, 64, 101] if info.input_kind == "spectrogram" else [16000])
        n = count_parameters(build_model(ModelSpec(model_name, classes, shape)))
        typer.echo(f"{model_name:20s} {info.input_kind:12s} {n:>12,}  {info.summary}")


@config_app.command("show")
@guarded
def config_show(config: ConfigOpt = None, set_: SetOpt = None):
    """Print the fully resolved config (defaults, files, includes, --set) without running anything.

    Example: `audiocomp config show -c configs/demo.yaml --set train.lr=0.001`
    """
    typer.echo(_config(config, set_).to_yaml(), nl=False)


@data_app.command("synth")
@guarded
def data_synth(out: Annotated[Path, typer.Option("--out", help="Folder to write (class folders + metadata.csv).")],
               per_class: Annotated[int, typer.Option(min=2, help="Clips per class.")] = 40,
               duration: Annotated[float, typer.Option(min=0.2, help="Clip length in seconds.")] = 1.5,
               seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
               quiet: QuietOpt = False):
    """Write a seeded synthetic audio set: 10 classes of generated sounds, mixed rates and formats.

    Example: `audiocomp data synth --out data/synth --per-class 40`
    """
    from .datasets.synth import CLASSES, generate

    generate(out, per_class=per_class, duration=duration, seed=seed, progress=not quiet)
    typer.echo(f"wrote {per_class * len(CLASSES)} clips in {len(CLASSES)} classes to {out}")


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:torch")
    try:
        app(prog_name="audiocomp")
    except BrokenPipeError:  # e.g. `audiocomp models | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
