"""The `audiocomp` command line: parse options, load the config, open the run, call a stage. No logic here."""
from __future__ import annotations

import enum
import functools
import warnings
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Audio classification experiments under edge constraints: prepare, train, evaluate, report.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
data_app = typer.Typer(no_args_is_help=True, help="Dataset helpers: inspect, fetch, synthesize.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[Optional[list[Path]], typer.Option("-c", "--config", help="YAML config file (repeatable; later files win).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: section.key=value (YAML value; repeatable).")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", envvar="AUDIOCOMP_RUNS", help="Where run directories go [default: runs].")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Run name [default: STAGE-MODEL-CONFIGHASH].")]
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
        except (typer.Exit, SystemExit):  # before _user_errors(), whose imports pull in torch
            raise
        except _user_errors() as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno in (28, 122, 30):  # ENOSPC, EDQUOT, EROFS: the user's disk, not a bug
                typer.echo(f"error: cannot write {exc.filename or 'a file'}: {exc.strerror} "
                           f"(finished files are kept; free space or choose another --runs-dir, then re-run)", err=True)
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

    Example: `audiocomp prepare -c configs/demo-settings.yaml --set features.n_mels=64`
    """
    from .stages import prepare as stage

    cfg = _config(config, set_)
    prepared = stage.run(cfg, runs_dir, name=name, force=force, workers=workers, progress=not quiet)
    counts = {e["name"]: {k: len(e[k]) for k in ("train", "val", "test")} for e in prepared.splits["splits"]}
    typer.echo(f"prepared {len(prepared.store.items)} items, {len(prepared.store.classes)} classes -> {prepared.run.path}")
    typer.echo(f"splits: {counts}; skipped files: {prepared.store.report['skipped']}")
    first = prepared.split()
    if "drawn" in first:  # splits.json written before parts said how they were drawn has no "drawn"
        typer.echo(f"{first['name']}: validation {first['drawn']['val']}")


@app.command()
@guarded
def train(config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
          force: ForceOpt = False,
          from_: Annotated[Optional[str], typer.Option("--from", help="A prepare run to train on [default: prepare it now].")] = None,
          resume: Annotated[Optional[str], typer.Option("--resume", help="Continue an interrupted training run (name or path).")] = None,
          seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Independent trainings (seed, seed+1, ...) in seeds/<k>/; mean +- std [default: train.seeds].")] = None,
          quiet: QuietOpt = False):
    """Train a model on a prepared split; writes model/, checkpoints/, metrics and curves.

    With `split.kind=folds` and `split.test_fold=all`, trains one model per fold and reports mean +- std;
    with `--seeds N`, N models from seeds seed..seed+N-1 (the run's model/ is the first).
    Under `torchrun --nproc_per_node=N -m audiocomp train ...` it trains with DistributedDataParallel.

    Example: `audiocomp train -c configs/demo-settings.yaml --set train.epochs=5`
    """
    from .runs import Run
    from .stages import train as stage
    from .train.distributed import from_env

    parent = _open_run(from_, runs_dir) if from_ else None
    set_ = [*(set_ or []), *([f"train.seeds={seeds}"] if seeds else [])]
    if resume:
        prev = Run.open(resume, runs_dir, require_done=False)
        cfg = _config(config, set_, base=prev.config_dict())
        name, runs_dir = prev.name, prev.path.parent
        parent = parent or prev.parent("prepare")  # the data it was training on
    else:
        cfg = _config(config, set_)
    run = stage.run(cfg, runs_dir, name=name, force=force, resume=bool(resume), from_run=parent, progress=not quiet)
    if not from_env().is_main:
        return
    m = run.metrics()
    score = "test mAP" if "test_map" in m else "test accuracy"
    value = m.get("test_map", m.get("test_accuracy", float("nan")))
    if "cross_validation" in m or "seed_runs" in m:
        std = m.get("test_map_std", m.get("test_accuracy_std", float("nan")))
        over = f"{m['cross_validation']} folds" if "cross_validation" in m else f"{m['seed_runs']} seeds"
        typer.echo(f"trained {m['model']} on {over}: {score} {value:.3f} +- {std:.3f} ({m['selection']}) -> {run.path}")
    else:
        typer.echo(f"trained {m['model']} ({m['parameters']:,} parameters), epoch {m['best_epoch']} kept "
                   f"({m['selection']}): {score} {value:.3f} -> {run.path}")


@app.command("eval")
@guarded
def evaluate(from_: Annotated[list[str], typer.Option("--from", help="Model run(s) to evaluate (name or path; repeat for several runs, e.g. folds).")],
             config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
             force: ForceOpt = False,
             split: Annotated[Optional[str], typer.Option(help="train, val or test [default: eval.split].")] = None,
             quiet: QuietOpt = False):
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and model facts of model runs;
    several runs (or a run with per-fold models) also get mean +- std.

    Example: `audiocomp eval --from train-cnn-1a2b3c4d --split test`
    """
    from .stages import evaluate as stage

    model_runs = [_open_run(f, runs_dir) for f in from_]
    cfg = _config(config, set_, base=model_runs[0].config_dict())
    run = stage.run(cfg, model_runs, runs_dir, name=name, force=force, split=split, progress=not quiet)
    from .evaluate.stats import format_interval, format_paired

    m = run.metrics()
    for u in m.get("units", [m]):
        facts = u["model_facts"]
        score = (f"accuracy {format_interval(u.get('accuracy_ci'))}, macro-F1 {u['macro_f1']:.3f}" if "accuracy" in u
                 else f"mAP {u['map']:.3f}")
        label = u["model_run"] + (f"/{u['fold']}" if u.get("fold") else "")
        macs = f"{facts['macs']:,} MACs, " if facts.get("macs") is not None else ""
        typer.echo(f"{label} {u['split']}: {score} on {u['items']} items; {facts['parameters']:,} parameters, "
                   f"{macs}{facts['file_bytes'] / 1e6:.2f} MB, {facts['format']}{' pruned' if facts['pruned'] else ''}")
        if u.get("vs_first"):
            typer.echo(f"  vs {u['vs_first']['reference']}: {format_paired(u['vs_first'])}")
    if "accuracy_ci" in m:
        ci = m["accuracy_ci"]
        typer.echo(f"[{ci['level']:.0%} percentile bootstrap over {ci['resampled']}, {ci['n_boot']} resamples, "
                   f"seed {ci['seed']}] -> {run.path}")
    else:
        typer.echo(f"-> {run.path}")
    for key, s in m.get("cv", {}).items():
        if key in ("accuracy", "macro_f1", "map") or key.startswith("top"):
            typer.echo(f"  {key}: {s['mean']:.3f} +- {s['std']:.3f} over {s['n']} models")


@app.command()
@guarded
def bench(from_: Annotated[str, typer.Option("--from", help="The model run to benchmark (name or path).")],
          threads: Annotated[Optional[str], typer.Option("--threads", help="Thread counts, e.g. 1,all [default: bench.threads].")] = None,
          device_profile: Annotated[Optional[str], typer.Option("--device-profile", help="rpi4 or jetson-nano: thread/batch presets only (measured here, not on the device).")] = None,
          config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
          force: ForceOpt = False, quiet: QuietOpt = False):
    """Latency (median/p90/p99), throughput, fresh-process peak memory and cold start, per runtime and threads.

    Example: `audiocomp bench --from train-cnn-1a2b3c4d --threads 1,all`
    """
    from .stages import bench as stage

    model_run = _open_run(from_, runs_dir)
    extra = list(set_ or [])
    if threads:
        extra.append("bench.threads=[" + ",".join("0" if t.strip() == "all" else t.strip() for t in threads.split(",")) + "]")
    if device_profile:
        extra.append(f"bench.device_profile={device_profile}")
    cfg = _config(config, extra, base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, progress=not quiet)
    m = run.metrics()
    if m.get("device_profile"):
        typer.echo(f"note: {m['device_profile']['disclaimer']}")
    typer.echo(f"{m['system']['cpu']} ({m['system']['logical_cores']} logical cores)")
    for rt, r in m["runtimes"].items():
        if "unavailable" in r:
            typer.echo(f"  {rt:12s} unavailable: {r['unavailable']}")
            continue
        for t, v in r["threads"].items():
            lat = v["latency"]
            thr = ", ".join(f"batch {n}: {x['items_per_s']:.0f}/s" for n, x in v["throughput"].items())
            typer.echo(f"  {rt:12s} {t} thread(s): {lat['median_ms']:.2f} ms median (p90 {lat['p90_ms']:.2f}, "
                       f"p99 {lat['p99_ms']:.2f}, IQR {lat['iqr_ms']:.2f}); {thr}")
        fp = r.get("fresh_process", {})
        if "peak_rss_mb" in fp:
            typer.echo(f"  {rt:12s} fresh process: peak {fp['peak_rss_mb']:.0f} MB, first prediction after {fp['cold_start_s']:.2f} s")
    typer.echo(f"-> {run.path}")


@app.command()
@guarded
def export(from_: Annotated[str, typer.Option("--from", help="The model run to export (name or path).")],
           format_: Annotated[str, typer.Option("--format", help="Only onnx for now.")] = "onnx",
           out: Annotated[Optional[Path], typer.Option("--out", help="Also copy the deployable folder here.")] = None,
           target: Annotated[Optional[str], typer.Option("--target", help="x86, rpi4 or jetson-nano: opset, IR version, requirements.txt and README of the bundle [default: export.target].")] = None,
           with_frontend: Annotated[Optional[bool], typer.Option("--with-frontend/--without-frontend", help="Put the log-mel front end in the graph: the device feeds raw samples [default: export.with_frontend].")] = None,
           tolerance: Annotated[Optional[float], typer.Option(help="Float graphs: allowed max |logit difference| / max(1, |logits|) in the check [default: export.tolerance]; INT8 graphs are checked against their float parent.")] = None,
           torchscript: Annotated[bool, typer.Option("--torchscript", help="Also write model.ts.pt (traced, features in).")] = False,
           config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
           force: ForceOpt = False):
    """Write a deployable bundle (model.onnx, labels.json, preprocessing.json, predict.py, requirements.txt,
    README.md for the target device) and check it against the original model (an INT8 graph: against its
    float parent) on real validation/training inputs.

    Example: `audiocomp export --from train-cnn-1a2b3c4d --target rpi4 --with-frontend --out bundle/`
    """
    from .config import ConfigError
    from .stages import export as stage

    if format_ != "onnx":
        raise ConfigError(f"--format {format_}: only onnx is supported")
    model_run = _open_run(from_, runs_dir)
    options = {"target": target, "with_frontend": with_frontend, "tolerance": tolerance}  # override export:
    sets = [*(set_ or []), *(f"export.{k}={v}" for k, v in options.items() if v is not None)]
    run = stage.run(_config(config, sets, base=model_run.config_dict()), model_run, runs_dir, name=name, force=force,
                    out=out, torchscript=torchscript or None)
    m = run.metrics()
    against = "float parent" if m["rule"].startswith("int8") else "original"
    typer.echo(f"exported {m['model_bytes'] / 1e6:.2f} MB ONNX for {m['target']} (opset {m['opset']}, IR {m['ir_version']}; "
               f"{'audio in' if m['with_frontend'] else 'features in'}); "
               f"vs {against} on {m['check_items']} items: max |diff| {m['max_abs_diff']:.2e}, relative logit "
               f"error {m['relative_logit_error']:.2e}, top-1 agreement {m['top1_agreement']:.0%} "
               f"-> {out or run.path / 'deploy'}")


@app.command()
@guarded
def predict(model: Annotated[Path, typer.Argument(help="An exported folder, an export run or a model run.")],
            files: Annotated[list[str], typer.Argument(help="Audio files or folders of them.")],
            top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels per answer.")] = 3,
            json_: Annotated[bool, typer.Option("--json", help="One JSON object per line (file, top, windows, or error).")] = False,
            threads: Annotated[int, typer.Option(help="Runtime threads (0: all cores).")] = 0):
    """Top-k labels with scores for each file; long files in windows (per-window and mean answers).
    A file that cannot be read gets an error line; the exit code is 1 if any file failed.

    Example: `audiocomp predict runs/export-train-cnn-1a2b3c4d clip.wav recordings/ --json`
    """
    from .deploy.predict_onnx import predict_paths
    from .stages.predict import classifier

    if predict_paths(files, classifier(model, threads), top_k, json_):
        raise typer.Exit(1)


@app.command()
@guarded
def quantize(from_: Annotated[str, typer.Option("--from", help="The trained or pruned model run to quantize (name or path).")],
             config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
             force: ForceOpt = False,
             allow_degraded: Annotated[bool, typer.Option("--allow-degraded", help="Keep a model whose accuracy fell near chance.")] = False,
             quiet: QuietOpt = False):
    """Quantize a model run (dynamic INT8, FP16, static INT8, QAT; torch or ONNX Runtime) into a new run.

    Example: `audiocomp quantize --from train-cnn-1a2b3c4d -c configs/quantize/static.yaml`
    """
    from .stages import quantize as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, allow_degraded=allow_degraded or None,
                    progress=not quiet)
    from .evaluate.stats import format_interval, format_paired

    m = run.metrics()
    part = "test" if "test_items" in m else "val"
    lat = m["latency_batch1_1thread"]

    def acc(key: str) -> str:  # with its interval; None for multi-label sets
        return format_interval(m[f"{key}_ci"]) if f"{key}_ci" in m else "-" if m.get(key) is None else f"{m[key]:.3f}"

    typer.echo(f"{m['format']} ({m['engine']}): {part} accuracy {acc(f'float_{part}_accuracy')} -> "
               f"{acc(f'{part}_accuracy')}; {m['float_file_bytes'] / 1e6:.2f} MB -> {m['file_bytes'] / 1e6:.2f} MB; "
               f"batch-1 latency {lat['float_eager_ms']:.2f} -> {lat['quantized_ms']:.2f} ms; "
               f"{m['model_facts']['parameters']:,} parameters (+ {m['model_facts']['quant_params']:,} scales/zero "
               f"points); {m['covered_share']:.0%} of the float model's parameters quantized -> {run.path}")
    if m.get("vs_parent", {}).get(part):
        typer.echo(f"  {part}, quantized - float: {format_paired(m['vs_parent'][part])}")
    if m.get("note"):
        typer.echo(f"note: {m['note']}")


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
    from .evaluate.stats import format_interval, format_paired

    m = run.metrics()
    b, a, c = m["before"], m["after"], m["change"]
    score = "test_accuracy" if "test_accuracy" in a else "val_accuracy"

    def acc(side: dict, key: str) -> str:
        return format_interval(side[f"{key}_ci"]) if f"{key}_ci" in side else f"{side.get(key, float('nan')):.3f}"

    typer.echo(f"{m['method']}: parameters {b['parameters']:,} -> {a['parameters']:,}, non-zero {b['nonzero']:,} -> "
               f"{a['nonzero']:,}, MACs {b['macs']:,} -> {a['macs']:,} ({c['macs_reduction']:.2f}x), "
               f"file {b['file_bytes'] / 1e6:.2f} -> {a['file_bytes'] / 1e6:.2f} MB, sparse "
               f"{a['sparse_bytes'] / 1e6:.2f} MB ({c['sparse_vs_zipped_dense_original']:.2f}x smaller than the "
               f"zipped original), "
               f"latency {b['latency']['median_ms']:.2f} -> {a['latency']['median_ms']:.2f} ms, "
               f"{score} {acc(b, score)} -> {acc(a, score)} -> {run.path}")
    for part, d in m.get("vs_parent", {}).items():
        typer.echo(f"  {part}, pruned - parent: {format_paired(d)}")


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
def report(runs: Annotated[list[Path], typer.Argument(help="Run directories, folders of runs, or a pipeline's output folder (rows named by stage id).")],
           out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("report"),
           baseline: Annotated[Optional[str], typer.Option("--baseline", help="A row (stage id or run name): every row gets its paired test-accuracy difference to it [default: each compressed row to its parent].")] = None,
           config: ConfigOpt = None, set_: SetOpt = None, quiet: QuietOpt = False):
    """Aggregate runs into markdown, CSV and HTML: study-style tables with accuracy intervals and paired
    differences, latency per runtime, published numbers, trade-off plots.

    Example: `audiocomp report reports/gtzan-resnet152 --baseline modified --out report/`
    """
    from .report.tables import terminal
    from .stages import report as stage

    result = stage.run(_config(config, set_), runs, out, baseline=baseline)
    if not quiet:
        typer.echo(terminal(result["rows"]))
    typer.echo(f"report: {', '.join(result['files'].values())}")


@app.command()
@guarded
def demo(out: Annotated[Path, typer.Option(help="Folder for the synthetic data and the runs.")] = Path("demo-output"),
         per_class: Annotated[Optional[int], typer.Option(min=4, help="Synthetic clips per class, when generating [default: 40].")] = None,
         set_: SetOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Run the demo pipeline (configs/demo.yaml: synthetic audio, generated if missing, through every stage)
    and print the final table; finished runs are reused.

    Example: `audiocomp demo --out /tmp/demo`
    """
    from .stages import demo as stage

    stage.run(out, set_ or [], per_class=per_class, force=force, progress=not quiet)


@app.command()
@guarded
def models(feature_shape: Annotated[str, typer.Option(help="Input features as 1xFxT or S (waveform).")] = "1x64x101",
           classes: Annotated[int, typer.Option(help="Number of classes.")] = 10):
    """List the registered models with their parameter counts and MACs per item (conv, linear, recurrent).

    Example: `audiocomp models --feature-shape 1x128x431`
    """
    from .evaluate.counts import parameter_counts
    from .evaluate.facts import architecture_macs
    from .models import MODELS, ModelSpec, build_model

    spec_shape = [int(v) for v in feature_shape.lower().split("x")]
    for model_name in MODELS.names():
        info = MODELS.get(model_name)
        shape = spec_shape if (len(spec_shape) == 3) == (info.input_kind == "spectrogram") else (
            [1, 64, 101] if info.input_kind == "spectrogram" else [16000])
        size = list(info.default_input_size) if info.default_input_size and len(shape) == 3 else None
        spec = ModelSpec(model_name, classes, shape, input_size=size)  # as `train` builds it
        n, macs = parameter_counts(build_model(spec))["parameters"], architecture_macs(spec)
        typer.echo(f"{model_name:20s} {info.input_kind:12s} {n:>12,} params {macs:>15,} MACs  {info.summary}")


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
    """Run a pipeline of stages (prepare, train, prune, quantize, eval, bench, export, report), reusing finished ones.

    `--set ID:section.key=value` overrides one stage only.

    Example: `audiocomp run configs/demo.yaml --set train.epochs=3`
    """
    from .stages import pipeline as stage

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
    from .stages import sweep as stage
    from .stages import sweep_jobs

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
        from .stages import sweep_slurm

        sub = sweep_slurm.submit(plan, resume=resume)
        for job_id, slurm_id in sub.ids.items():
            typer.echo(f"{slurm_id:>12s}  {job_id}")
        typer.echo(f"submitted {len(sub.ids)} jobs -> {plan.out / 'sweep.json'}\ncancel: {sub.cancel}" if sub.ids
                   else "nothing to submit: every combination has finished")
        typer.echo(f"then: audiocomp sweep {sweep_file} --collect")
        return
    elif executor is Executor.ray:
        from .stages import sweep_ray

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
def doctor(runs_dir: RunsDirOpt = None):
    """Check the environment: versions against the pins, devices, quantized engines, ONNX Runtime
    providers, audio formats, free disk and write permission; exit code 0 when audiocomp can run.

    Example: `audiocomp doctor --runs-dir runs`
    """
    from .runs import runs_root
    from .stages import doctor as stage

    checks, usable = stage.run(runs_root(runs_dir))
    for c in checks:
        typer.echo(f"{c.status:5s} {c.name:22s} {c.detail}")
    typer.echo("usable: yes" if usable else "usable: NO (fix the 'fail' lines above)")
    if not usable:
        raise typer.Exit(1)


@config_app.command("show")
@guarded
def config_show(config: ConfigOpt = None, set_: SetOpt = None):
    """Print the fully resolved config (defaults, files, includes, --set) without running anything.

    Example: `audiocomp config show -c configs/demo-settings.yaml --set train.lr=0.001`
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


@data_app.command("info")
@guarded
def data_info(config: ConfigOpt = None, set_: SetOpt = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
              quiet: QuietOpt = False):
    """Counts per class and fold, durations, sample rates and problems of the dataset in `data`.

    Example: `audiocomp data info -c configs/data/esc50.yaml --set data.root=/data/ESC-50`
    """
    import json

    from .datasets import load_index
    from .datasets.info import describe, format_info

    info = describe(load_index(_config(config, set_).data), progress=not (quiet or as_json))
    typer.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@data_app.command("fetch")
@guarded
def data_fetch(name: Annotated[str, typer.Argument(help="esc50, gtzan, urbansound8k or fsdd.")],
               dest: Annotated[Path, typer.Option("--dest", help="Folder to create: the dataset's data.root.")],
               source: Annotated[Optional[str], typer.Option("--source", help="URL, local archive (zip/tar.gz) or folder [default: the official URL].")] = None,
               quiet: QuietOpt = False):
    """Download (or unpack a local archive or folder), verify the layout, and place a dataset at DEST.

    Example: `audiocomp data fetch esc50 --dest data/ESC-50 --source ~/Downloads/ESC-50-master.zip`
    """
    from .datasets.fetch import fetch

    r = fetch(name, dest, source, progress=not quiet)
    note = "" if r["items"] == r["official_items"] else f" (the official set has {r['official_items']})"
    typer.echo(f"{name}: {r['items']} clips, {r['classes']} classes verified{note}; "
               f"{len(r['problems'])} problems -> data.root: {r['root']}")
    for problem in r["problems"][:10]:
        typer.echo(f"  {problem}")


def main() -> None:
    # torch's own UserWarnings (ONNX constant folding, deprecations inside torch) are not the user's to act
    # on; audiocomp's warnings (skipped files, ...) still show
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        app(prog_name="audiocomp")
    except BrokenPipeError:  # e.g. `audiocomp models | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
