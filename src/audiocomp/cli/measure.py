"""Commands that measure and ship a model run: eval, bench, export, predict, report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ConfigOpt, ForceOpt, NameOpt, QuietOpt, RunsDirOpt, SetOpt, _config, _open_run, app, guarded


@app.command("eval")
@guarded
def evaluate(from_: Annotated[list[str], typer.Option("--from", help="Model run(s) to evaluate (name or path; repeat for several runs, e.g. folds).")],
             config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
             force: ForceOpt = False,
             split: Annotated[Optional[str], typer.Option(help="train, val or test [default: eval.split].")] = None,
             quiet: QuietOpt = False):
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and model facts of model runs;
    several runs (or a run with per-fold models) also get mean +- std.

    Example: `audiocomp eval --from train-cnn-1a2b3c4d5e --split test`
    """
    from ..stages import evaluate as stage

    model_runs = [_open_run(f, runs_dir) for f in from_]
    cfg = _config(config, set_, base=model_runs[0].config_dict())
    run = stage.run(cfg, model_runs, runs_dir, name=name, force=force, split=split, progress=not quiet)
    from ..evaluate.stats import format_interval, format_paired

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

    Example: `audiocomp bench --from train-cnn-1a2b3c4d5e --threads 1,all`
    """
    from ..stages import bench as stage

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

    Example: `audiocomp export --from train-cnn-1a2b3c4d5e --target rpi4 --with-frontend --out bundle/`
    """
    from ..config import ConfigError
    from ..stages import export as stage

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

    Example: `audiocomp predict runs/export-cnn-5e4d3c2b1a clip.wav recordings/ --json`
    """
    from ..deploy.predict_onnx import predict_paths
    from ..stages.predict import classifier

    if predict_paths(files, classifier(model, threads), top_k, json_):
        raise typer.Exit(1)


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
    from ..report.tables import terminal
    from ..stages import report as stage

    result = stage.run(_config(config, set_), runs, out, baseline=baseline)
    if not quiet:
        typer.echo(terminal(result["rows"]))
    typer.echo(f"report: {', '.join(result['files'].values())}")
