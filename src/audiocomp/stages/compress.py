"""`audiocomp compress --from RUN`: the smallest model within `max_drop` of its parent, searched.

For each method in compress.methods (structured: Taylor channels; hybrid: magnitude zeros + channels), a
ladder of increasing channel ratios, each rung pruned from the previous one and fine-tuned (distilled from
the parent when distill.enabled), and each also quantized to ONNX Runtime static QDQ INT8 (compress_rungs.py).
Every form of every rung, the parent's two included, is scored on the VALIDATION part and measured: file
bytes (and zipped), parameters, MACs, batch-1 1-thread ONNX Runtime latency. The Pareto front (validation
accuracy vs each cost) goes to front.csv, front.md and front-<cost>.png. The choice: the smallest form by
compress.target whose validation accuracy point estimate is at most max_drop below the parent's, not past
the first miss of its ladder (compress.sequential; compress/ladder.py `candidates`). Only then
is the test part scored, once: the chosen model and the parent on the same items, with the paired interval.

The run's model/ is the chosen form (model.pt, or model.onnx for an INT8 one, whose float form goes to
float_model/ as its reference), so eval, bench, export and predict read it like any model run. A rerun of an
unfinished compress run continues it: the finished rungs are kept (resumable like a sweep).
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

from ..compress.ladder import TARGETS, candidates, ladder, mark_fronts, qualifies, rung_name, select
from ..config import CompressConfig, Config, ConfigError
from ..evaluate.facts import model_facts
from ..evaluate.predictions import Predictions, agreement, compare_parts
from ..models import load_model
from ..models.io import artifact_path, load_spec
from ..report.plots import tradeoff_plot
from ..runs import Run, RunError, atomic_copy, atomic_write_csv, atomic_write_text, runs_root
from .compress_rungs import PARENT, ladder_job, parent_rung, run_ladder
from .context import StageContext, open_stage
from .naming import run_name

FRONT_COLUMNS = ("rung", "method", "ratio", "form", "format", "val_accuracy", "val_accuracy_low", "val_accuracy_high",
                 "val_agreement", "file", "file_bytes", "zipped_bytes", "parameters", "nonzero", "macs", "latency_ms",
                 "front_size", "front_macs", "front_latency", "qualifies", "candidate", "chosen")
COST_LABELS = {"size": "file bytes on disk", "macs": "MACs per item",
               "latency": "ONNX Runtime latency (ms), 1 thread, batch 1"}


def _check_parent(model_run: Run) -> None:
    spec = load_spec(model_run / "model")
    if spec.multilabel:
        raise ConfigError(f"compress: {model_run.path}: a multi-label model; compress selects on validation "
                          "accuracy, which a multi-label set does not have (prune and quantize it instead)")
    if spec.format != "fp32":
        raise ConfigError(f"compress: {model_run.path}: its model is already {spec.format}; "
                          "compress a float model (a train or prune run)")


def _needs_validation(data) -> None:
    if not data.split()["val"]:
        raise ConfigError(f"compress: {data.run.path / 'splits.json'} has no validation part (split.val_fraction: "
                          "0); compress chooses on validation data only, so prepare the data with a validation part")


def _ladders(ctx: StageContext, parent_val: float, jobs: int, progress: bool) -> list[dict]:
    """Every rung of every method's ladder; with jobs > 1 the ladders run in parallel worker processes."""
    methods = list(dict.fromkeys(ctx.cfg.compress.methods))
    if jobs <= 1 or len(methods) == 1:
        return [r for m in methods for r in run_ladder(ctx, m, parent_val, progress)]
    workers = min(jobs, len(methods))
    threads = max(1, (os.cpu_count() or 1) // workers)
    args = (ctx.cfg.to_dict(), str(ctx.run.path), [str(p.path) for p in ctx.parents])
    from tqdm import tqdm

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(ladder_job, *args, m, parent_val, threads) for m in methods]
        for _ in tqdm(as_completed(futures), total=len(futures), desc=f"compress ladders ({workers} processes)",
                      leave=False, disable=not progress):
            pass
        return [r for f in futures for r in f.result()]


def front_rows(records: list[dict], parent_val: float, cc: CompressConfig) -> list[dict]:
    """One row per form of every rung, with its Pareto-front marks, whether it is within max_drop and
    whether it may be chosen (`candidates`: within, and not past a miss of its ladder when sequential)."""
    rows = mark_fronts([{"rung": rec["rung"], "method": rec["method"], "ratio": rec["ratio"], **form}
                        for rec in records for form in rec["forms"]])
    return [{**r, "qualifies": qualifies(r, parent_val, cc.max_drop), "candidate": c}
            for r, c in zip(rows, candidates(rows, parent_val, cc.max_drop, cc.sequential))]


def with_agreement(rows: list[dict], rungs_dir: Path) -> list[dict]:
    """Each row with `val_agreement`: the share of validation items on which the form predicts its parent's
    (FP32) class, from the predictions every form saved: how closely it follows the parent, right or wrong."""
    def preds(rung: str, form: str) -> Predictions:
        return Predictions.load(rungs_dir / rung / f"{form}-predictions-val.npz")

    parent = preds(PARENT, "fp32")
    return [{**r, "val_agreement": agreement(parent, preds(r["rung"], r["form"]))} for r in rows]


def _within(row: dict) -> str:
    return "no" if not row["qualifies"] else "yes" if row["candidate"] else "yes, past a miss"


def untrained_rungs(records: list[dict], cc: CompressConfig) -> list[str]:
    """The ladders' rungs that were not trained (compress.stop_at_miss: past their ladder's miss in every form)."""
    trained = {rec["rung"] for rec in records}
    return [rung_name(m, r) for m in dict.fromkeys(cc.methods) for r, _ in ladder(cc.ratios)
            if rung_name(m, r) not in trained]


def _markdown(rows: list[dict], parent_val: float, cfg: Config, untrained: list[str]) -> str:
    cc = cfg.compress
    stopped = (f" Not trained, as past their ladder's first miss in every form (compress.stop_at_miss): "
               f"{', '.join(untrained)}." if untrained else "")
    lines = [f"Validation accuracy of every rung (parent: {parent_val:.1%}; max drop {cc.max_drop:.1%}; "
             f"target: {cc.target}; each rung keeps its {cc.rung_epoch} fine-tuning epoch). Size: the deployable "
             "file's bytes on disk (zipped beside it); latency: ONNX Runtime, 1 thread, batch 1 (median). Agrees: the "
             "share of validation items given the parent's top-1 class. Front: on the Pareto front of accuracy vs "
             f"that cost.{stopped}", "",
             "| Rung | Form | Val accuracy [95% CI] | Agrees | File | Size (KB) | Zipped (KB) | Params | MACs "
             "| Latency (ms) | Front (size/MACs/latency) | Within max drop | Chosen |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "" if r.get("val_accuracy_low") is None else \
            f" [{r['val_accuracy_low'] * 100:.1f}, {r['val_accuracy_high'] * 100:.1f}]"
        marks = "/".join("x" if r[f"front_{t}"] else "-" for t in TARGETS)
        agrees = "" if r.get("val_agreement") is None else f"{r['val_agreement']:.1%}"
        lines.append(f"| {r['rung']} | {r['form']} | {r['val_accuracy']:.1%}{ci} | {agrees} | {r['file']} | "
                     f"{r['file_bytes'] / 1e3:.1f} | {r['zipped_bytes'] / 1e3:.1f} | {r['parameters']:,} | "
                     f"{r['macs']:,} | {r['latency_ms']:.3f} | {marks} | {_within(r)} | "
                     f"{'**chosen**' if r.get('chosen') else ''} |")
    return "\n".join(lines) + "\n"


def write_front(ctx: StageContext, rows: list[dict], parent_val: float, untrained: list[str]) -> dict:
    """front.csv, front.md and one plot per cost in the run; returns their file names."""
    path = ctx.run.path
    atomic_write_csv(path / "front.csv", [{k: r.get(k) for k in FRONT_COLUMNS} for r in rows])
    atomic_write_text(path / "front.md", _markdown(rows, parent_val, ctx.cfg, untrained))
    plots = []
    labelled = [{**r, "run": f"{r['rung']} {r['form']}", "size_kb": r["file_bytes"] / 1e3} for r in rows]
    for target, key in (("size", "size_kb"), ("macs", "macs"), ("latency", "latency_ms")):
        label = "file size (KB)" if target == "size" else COST_LABELS[target]
        if tradeoff_plot(labelled, key, label, path / f"front-{target}.png", y_key="val_accuracy", log_x=True):
            plots.append(f"front-{target}.png")
    return {"csv": "front.csv", "markdown": "front.md", "plots": plots}


def install(ctx: StageContext, chosen: dict) -> Path:
    """Copy the chosen form into the run's model/ (and, for an INT8 graph, its float form into float_model/,
    the reference its outputs are checked against)."""
    source = ctx.parent / "model" if chosen["rung"] == PARENT and chosen["form"] == "fp32" else \
        ctx.run.path / chosen["folder"]
    spec = load_spec(source)
    for f in (source / "arch.json", artifact_path(source, spec)):
        atomic_copy(f, ctx.run.path / "model" / f.name)
    if chosen["form"] == "int8":
        floats = ctx.parent / "model" if chosen["rung"] == PARENT else source.parent / "model"
        for f in (floats / "arch.json", artifact_path(floats)):
            atomic_copy(f, ctx.run.path / "float_model" / f.name)
    return ctx.run.path / "model"


def run(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
        force: bool = False, progress: bool = True, jobs: Optional[int] = None) -> Run:
    """A finished run of the same name is returned as it is (unless `force`); an unfinished one continues.
    `jobs`: ladders in parallel processes (None: compress.jobs)."""
    _check_parent(model_run)
    name = name or run_name("compress", cfg, [model_run.name])
    existing = Run(runs_root(runs_dir) / name)
    if existing.manifest_path.is_file() and not force:
        if existing.status == "done":
            return existing
    cc = cfg.compress
    with open_stage("compress", cfg, [model_run], runs_dir, name=name, force=force, progress=progress,
                    resume=existing.manifest_path.is_file() and not force, deterministic=True,
                    check=_needs_validation) as ctx:
        parent = parent_rung(ctx)
        parent_val = next(f["val_accuracy"] for f in parent["forms"] if f["form"] == "fp32")
        records = [parent, *_ladders(ctx, parent_val, jobs or cc.jobs, progress)]
        rows = with_agreement(front_rows(records, parent_val, cc), ctx.run.path / "rungs")
        chosen = select(rows, parent_val, cc.max_drop, cc.target, cc.sequential)
        if chosen is None:  # cannot happen: the parent's own FP32 form is within any max_drop of itself
            raise RunError(f"{ctx.run.path}: no rung has a validation accuracy")
        for r in rows:
            r["chosen"] = r is chosen
        untrained = untrained_rungs(records, cc)
        front = write_front(ctx, rows, parent_val, untrained)
        model_dir = install(ctx, chosen)
        # the choice is made, on validation: only now is the test part scored, once, to report
        model, spec = load_model(model_dir)
        parent_model, parent_spec = ctx.parent_model()
        chosen_scored = ctx.score(model, spec, ("val", "test"))
        parent_scored = ctx.score(parent_model, parent_spec, ("val", "test"))
        preds = {p: s[1] for p, s in chosen_scored.items()}
        parent_preds = {p: s[1] for p, s in parent_scored.items()}
        saved = ctx.save_predictions(preds)
        facts = model_facts(spec, model_dir)
        parent_facts = model_facts(parent_spec, model_run / "model")
        test = {f"{who}test_accuracy": s["test"][0]["accuracy"] for who, s in (("", chosen_scored),
                                                                               ("parent_", parent_scored))
                if "test" in s}
        metrics = {
            "model": spec.name, "method": f"compress {chosen['rung']} ({chosen['form']})", "format": facts["format"],
            "parent": model_run.name, "target": cc.target, "max_drop": cc.max_drop, "methods": cc.methods,
            "ratios": cc.ratios, "finetune_epochs": cc.finetune_epochs, "untrained_rungs": untrained,
            "distill": cfg.distill.model_dump() if cfg.distill.enabled else None,
            "selection": f"val: smallest {cc.target} within {cc.max_drop:g} of the parent's val accuracy"
                         + (", not past its ladder's first miss" if cc.sequential else ""),
            "parent_val_accuracy": parent_val, "chosen": chosen, "front": front, "rungs": rows,
            "val_accuracy": chosen_scored["val"][0]["accuracy"], **test,
            **{k: v for k, v in saved.items()},
            "model_facts": facts, "parent_model_facts": parent_facts,
            "size_reduction": round(parent_facts["file_bytes"] / max(facts["file_bytes"], 1), 4),
            "zipped_reduction": round(parent_facts["zipped_bytes"] / max(facts["zipped_bytes"], 1), 4),
            "macs_reduction": round(parent_facts["macs"] / max(facts["macs"], 1), 4),
            "latency_speedup": round(next(f["latency_ms"] for f in parent["forms"] if f["form"] == "fp32")
                                     / max(chosen["latency_ms"], 1e-9), 4),
            # chosen - parent on the same items: paired bootstrap interval and McNemar's exact test
            "vs_parent": compare_parts(parent_preds, preds, cfg.eval.interval),
            "agreement_with_parent": {p: a for p in preds if p in parent_preds
                                      and (a := agreement(parent_preds[p], preds[p])) is not None},
        }
        if "test_accuracy" in metrics:
            metrics["test_drop"] = round(metrics["parent_test_accuracy"] - metrics["test_accuracy"], 6)
        ctx.write_metrics(metrics)
    return ctx.run
