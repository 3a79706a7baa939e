"""Commands that make data and models: prepare, train, prune (and prune sensitivity), quantize."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from .app import ConfigOpt, ForceOpt, NameOpt, QuietOpt, RunsDirOpt, SetOpt, _config, _open_run, app, guarded


# ------------------------------------------------------------------------------------------ commands

@app.command()
@guarded
def prepare(config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
            force: ForceOpt = False, workers: Annotated[Optional[int], typer.Option(help="Worker processes [default: all cores].")] = None,
            quiet: QuietOpt = False):
    """Decode and featurize a dataset once into the feature store, and write its splits.

    Example: `audiocomp prepare -c configs/demo-settings.yaml --set features.n_mels=64`
    """
    from ..stages import prepare as stage

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
          teacher: Annotated[Optional[str], typer.Option("--teacher", help="A model run on the same prepared data to distil from (distill.alpha, distill.temperature).")] = None,
          quiet: QuietOpt = False):
    """Train a model on a prepared split; writes model/, checkpoints/, metrics and curves.

    With `split.kind=folds` and `split.test_fold=all`, trains one model per fold and reports mean +- std;
    with `--seeds N`, N models from seeds seed..seed+N-1 (the run's model/ is the first).
    Under `torchrun --nproc_per_node=N -m audiocomp train ...` it trains with DistributedDataParallel.
    With `--teacher RUN`, the loss also follows that model's softened outputs (knowledge distillation: a
    small model taught by a larger or better one, trained on the same prepared data).

    Example: `audiocomp train -c configs/demo-settings.yaml --set train.epochs=5`
    Example: `audiocomp train --from PREPARE_RUN --teacher TEACHER_RUN -c configs/recipes/ours-cnn.yaml`
    """
    from ..runs import Run
    from ..stages import train as stage
    from ..train.distributed import from_env

    parent = _open_run(from_, runs_dir) if from_ else None
    set_ = [*(set_ or []), *([f"train.seeds={seeds}"] if seeds else [])]
    if resume:
        prev = Run.open(resume, runs_dir, require_done=False)
        cfg = _config(config, set_, base=prev.config_dict())
        name, runs_dir = prev.name, prev.path.parent
        parent = parent or prev.parent("prepare")  # the data it was training on
        taught = prev.manifest.get("parents", [])[1:]  # and the model it was distilled from, if any
        teacher = teacher or (taught[0]["path"] if taught else None)
    else:
        cfg = _config(config, set_)
    run = stage.run(cfg, runs_dir, name=name, force=force, resume=bool(resume), from_run=parent,
                    teacher=_open_run(teacher, runs_dir) if teacher else None, progress=not quiet)
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


prune_app = typer.Typer()  # help: the callback docstring below
app.add_typer(prune_app, name="prune")
FromModelOpt = Annotated[Optional[str], typer.Option("--from", help="The model run to prune (name or path).")]


@prune_app.callback(invoke_without_command=True)
@guarded
def prune(ctx: typer.Context, from_: FromModelOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
          runs_dir: RunsDirOpt = None, name: NameOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Prune a trained model run into a new run: before -> after parameters, MACs, sizes, accuracy, latency.

    Example: `audiocomp prune --from train-cnn-1a2b3c4d5e -c configs/prune/taylor.yaml`
    """
    if ctx.invoked_subcommand is not None:
        return
    if not from_:
        raise typer.BadParameter("--from RUN is required (the model run to prune)", param_hint="--from")
    from ..stages import prune as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, progress=not quiet)
    from ..evaluate.stats import format_interval, format_paired

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
    Example: `audiocomp prune sensitivity --from train-cnn-1a2b3c4d5e --set prune.criterion=l1`
    """
    from ..stages import prune as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.sensitivity(cfg, model_run, runs_dir, name=name, force=force, progress=not quiet)
    m = run.metrics()
    typer.echo(f"sensitivity of {m['layers']} layer groups at {len(m['ratios'])} ratios -> {m['csv']}")


@app.command()
@guarded
def quantize(from_: Annotated[str, typer.Option("--from", help="The trained or pruned model run to quantize (name or path).")],
             config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
             force: ForceOpt = False,
             allow_degraded: Annotated[bool, typer.Option("--allow-degraded", help="Keep a model whose accuracy fell near chance.")] = False,
             quiet: QuietOpt = False):
    """Quantize a model run (dynamic INT8, FP16, static INT8, QAT; torch or ONNX Runtime) into a new run.

    Example: `audiocomp quantize --from train-cnn-1a2b3c4d5e -c configs/quantize/static.yaml`
    """
    from ..stages import quantize as stage

    model_run = _open_run(from_, runs_dir)
    cfg = _config(config, set_, base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, allow_degraded=allow_degraded or None,
                    progress=not quiet)
    from ..evaluate.stats import format_interval, format_paired

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


@app.command()
@guarded
def compress(from_: Annotated[str, typer.Option("--from", help="The trained (or pruned) float model run to compress (name or path).")],
             max_drop: Annotated[Optional[float], typer.Option("--max-drop", min=0, max=1, help="Largest accepted validation accuracy drop vs the parent, e.g. 0.01 = 1 point [default: compress.max_drop].")] = None,
             target: Annotated[Optional[str], typer.Option("--target", help="What 'smallest' means: size (file bytes), macs, or latency (ONNX Runtime, 1 thread, batch 1) [default: compress.target].")] = None,
             jobs: Annotated[Optional[int], typer.Option("--jobs", min=1, help="Ladders (compress.methods) run in parallel processes [default: compress.jobs, 1].")] = None,
             config: ConfigOpt = None, set_: SetOpt = None, runs_dir: RunsDirOpt = None, name: NameOpt = None,
             force: ForceOpt = False, quiet: QuietOpt = False):
    """Search the smallest model within --max-drop of its parent: ladders of structured (and hybrid) pruning
    ratios, each rung fine-tuned from the previous one and also quantized to INT8 (ONNX Runtime static QDQ),
    all judged on validation (each rung's last fine-tuning epoch kept; no rung past its ladder's first miss
    of --max-drop is chosen, and with compress.stop_at_miss none is trained); the chosen rung is then scored
    on test once, with the paired interval.

    Writes every rung under rungs/, the Pareto front (front.csv, front.md, front-*.png; each form with its
    validation accuracy and its agreement with the parent's top-1 class) and model/ (the chosen rung). A
    rerun of an unfinished run keeps its finished rungs.

    Example: `audiocomp compress --from train-cnn-1a2b3c4d5e --max-drop 0.01 --target size --jobs 2`
    """
    from ..stages import compress as stage

    model_run = _open_run(from_, runs_dir)
    extra = [*([f"compress.max_drop={max_drop}"] if max_drop is not None else []),
             *([f"compress.target={target}"] if target is not None else [])]
    cfg = _config(config, [*(set_ or []), *extra], base=model_run.config_dict())
    run = stage.run(cfg, model_run, runs_dir, name=name, force=force, progress=not quiet, jobs=jobs)
    from ..evaluate.stats import format_interval, format_paired

    m = run.metrics()
    c = m["chosen"]
    typer.echo(f"chosen on validation: {c['rung']} ({c['form']}): val accuracy {c['val_accuracy']:.1%} (parent "
               f"{m['parent_val_accuracy']:.1%}, max drop {m['max_drop']:.1%}); {c['file']} {c['file_bytes'] / 1e3:.1f} KB "
               f"({m['size_reduction']:.1f}x smaller on disk, {m['zipped_reduction']:.1f}x zipped), MACs "
               f"{c['macs']:,} ({m['macs_reduction']:.1f}x fewer), ONNX Runtime latency {c['latency_ms']:.3f} ms "
               f"(1 thread, batch 1) -> {run.path}")
    if "test_accuracy" in m:
        typer.echo(f"  test (scored once, after the choice): {format_interval(m.get('test_accuracy_ci'))}, parent "
                   f"{m['parent_test_accuracy']:.1%}; chosen - parent: {format_paired(m['vs_parent'].get('test'))}")
        if (agrees := m.get("agreement_with_parent", {}).get("test")) is not None:
            typer.echo(f"  the parent's top-1 class on {agrees:.1%} of the test items")
    typer.echo(f"  front: {run.path / m['front']['markdown']} ({len(m['rungs'])} rung forms)")
