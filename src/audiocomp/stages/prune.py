"""`audiocomp prune`: prune a trained model run into a new run (parent linked), with before -> after facts;
`audiocomp prune sensitivity`: how much each layer's channels can be pruned alone (CSV + heat map)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from ..compress.pruning import method_for, prune_model, ratios_from_sensitivity, sensitivity as measure_sensitivity
from ..config import Config, ConfigError
from ..evaluate.facts import example_input, model_facts
from ..evaluate.latency import cpu_latency
from ..evaluate.predictions import Predictions, compare_parts, intervals
from ..evaluate.sparse import write_sparse
from ..models import save_model
from ..models.reshape import record_shapes
from ..runs import Run, atomic_write_csv
from .context import StageContext, open_stage
from .finetune import prune_context, teacher_of


def read_sensitivity(path: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ConfigError(f"prune.sensitivity: {path}: not found (run `audiocomp prune sensitivity` first)") from None
    if not rows or not {"layer", "ratio", "drop"} <= set(rows[0]):
        raise ConfigError(f"prune.sensitivity: {path}: not a sensitivity CSV (needs columns layer, ratio, drop)")
    return rows


def measured(model, spec, folder: Path, sparse_file: Path, cfg: Config) -> dict:
    """The model facts every stage reports (counts, MACs, sizes), plus the sparse encoding's size and
    batch-1 latency."""
    facts = model_facts(spec, folder)
    facts["sparse_bytes"] = write_sparse(model.state_dict(), sparse_file)
    facts["latency"] = cpu_latency(model, example_input(spec.feature_shape), cfg.bench.iterations, cfg.bench.warmup,
                                   threads=1)
    return facts


def _scores(ctx: StageContext, model, spec, parts: tuple[str, ...]) -> tuple[dict, dict[str, Predictions]]:
    """(accuracy, macro-F1, mAP, loss of each part as `<part>_<metric>`; per-item predictions per part)."""
    scored = ctx.score(model, spec, parts)
    scores = {f"{p}_{k}": m[k] for p, (m, _) in scored.items() for k in ("accuracy", "macro_f1", "map", "loss") if k in m}
    return scores, {p: pred for p, (_, pred) in scored.items()}


def _changes(before: dict, after: dict) -> dict:
    """before / after for the sizes and costs (how many times smaller), after - before for the scores."""
    out = {}
    for key in ("parameters", "nonzero", "macs", "file_bytes", "zipped_bytes", "sparse_bytes"):
        out[f"{key}_reduction"] = round(before[key] / max(after[key], 1), 4)
    out["latency_speedup"] = round(before["latency"]["median_ms"] / max(after["latency"]["median_ms"], 1e-9), 4)
    for key in before:
        if key.endswith(("accuracy", "macro_f1", "map")):
            out[f"{key}_change"] = after[key] - before[key]
    # the sparse encoding is DEFLATE-compressed: against the raw dense file, and like for like, the zipped one
    out["sparse_vs_dense_original"] = round(before["file_bytes"] / max(after["sparse_bytes"], 1), 4)
    out["sparse_vs_zipped_dense_original"] = round(before["zipped_bytes"] / max(after["sparse_bytes"], 1), 4)
    return out


def run(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
        force: bool = False, progress: bool = True) -> Run:
    method_for(cfg.prune)  # an unknown method fails before any work
    layer_ratios = {}
    if cfg.prune.sensitivity:
        layer_ratios = ratios_from_sensitivity(read_sensitivity(cfg.prune.sensitivity), cfg.prune.max_drop)
    with open_stage("prune", cfg, [model_run], runs_dir, name=name, force=force, progress=progress,
                    deterministic=True) as ctx:
        model, spec = ctx.parent_model()
        before, before_preds = _scores(ctx, model, spec, ("val",))
        before |= measured(model, spec, model_run / "model", ctx.run.path / "original.sparse.npz", cfg)
        pctx = prune_context(ctx, spec, layer_ratios=layer_ratios, teacher=teacher_of(ctx))
        steps = prune_model(model, pctx)
        model.eval()
        spec.compression = [*spec.compression, {"method": cfg.prune.method, "format": "fp32",
                                                **cfg.prune.model_dump(mode="json")}]
        spec.shapes = record_shapes(model)
        save_model(model, spec, ctx.run.path / "model")
        after, after_preds = _scores(ctx, model, spec, ("val",))
        after |= measured(model, spec, ctx.run.path / "model", ctx.run.path / "model.sparse.npz", cfg)
        # every choice is made (fine-tuning epochs on validation): only now is the test part scored, to report
        for scores, preds, m in ((before, before_preds, ctx.parent_model()[0]), (after, after_preds, model)):
            test_scores, test_preds = _scores(ctx, m, spec, ("test",))
            scores |= test_scores
            preds |= test_preds
        before |= intervals(before_preds, cfg.eval.interval)
        saved = ctx.save_predictions(after_preds)  # before: the parent's own files
        after |= {k: v for k, v in saved.items() if k != "predictions"}
        structured = cfg.prune.method != "magnitude"
        ctx.write_metrics({
            "model": spec.name, "method": cfg.prune.method, "format": "fp32", "parent": model_run.name,
            "recipe": spec.compression[-1], "before": before, "after": after, "change": _changes(before, after),
            "speed_claim": "measured" if structured else
            "none: unstructured zeros stay in dense tensors; only the sparse encoding is smaller",
            "distill": cfg.distill.model_dump() if cfg.distill.enabled else None,
            "layer_ratios": layer_ratios, "calibration_rows": pctx.calibration_rows, "steps": steps,
            "history": [r for s in steps for r in s.get("history", [])],
            **{k: v for k, v in after.items() if k.startswith(("val_", "test_"))},
            "predictions": saved["predictions"],
            # after - before on the same items: paired bootstrap interval and McNemar's exact test
            "vs_parent": compare_parts(before_preds, after_preds, cfg.eval.interval),
        })
    return ctx.run


def _needs_validation(data) -> None:
    if not data.split()["val"]:
        raise ConfigError(f"prune sensitivity: {data.run.path / 'splits.json'} has no validation part "
                          "(split.val_fraction: 0) to score on; prepare the data with split.val_fraction > 0")


def sensitivity(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
                force: bool = False, progress: bool = True) -> Run:
    """Scores on the validation part only: its CSV picks per-layer ratios, a choice the test part must not make."""
    part = "val"
    with open_stage("prune-sensitivity", cfg, [model_run], runs_dir, name=name, force=force, progress=progress,
                    deterministic=True, check=_needs_validation) as ctx:
        model, spec = ctx.parent_model()
        pctx = prune_context(ctx, spec)

        def score(m) -> float:  # accuracy (mAP for multi-label sets)
            result = ctx.score(m, spec, (part,))[part][0]
            return result.get("accuracy", result.get("map"))

        rows = measure_sensitivity(model, pctx, cfg.prune.sensitivity_ratios, score, progress)
        for r in rows:
            r["split"] = part
        atomic_write_csv(ctx.run.path / "sensitivity.csv", rows)
        from ..report.plots import sensitivity_plot

        sensitivity_plot(rows, ctx.run.path / "sensitivity.png",
                         title=f"{model_run.name}: {part} accuracy, one group pruned")
        ctx.write_metrics({"model": spec.name, "criterion": cfg.prune.criterion, "split": part,
                           "metric": "map" if spec.multilabel else "accuracy", "calibration_rows": pctx.calibration_rows,
                           "ratios": cfg.prune.sensitivity_ratios, "layers": len({r["layer"] for r in rows}),
                           "csv": str(ctx.run.path / "sensitivity.csv"), "rows": rows})
    return ctx.run
