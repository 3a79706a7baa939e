"""`audiocomp eval`: metrics of one or more model runs on a split, with the models' measured facts.

A run that holds per-fold models (`folds/<split name>/model`) is evaluated fold by fold, each on its own
split; several runs or folds are summarised as mean +- std (cross-validation). Each model's per-item
predictions are saved (`predictions-<part>.npz`, evaluate/predictions.py); its accuracy carries a bootstrap
interval (`accuracy_ci`), and every model scored on the same items as the first gets the paired difference
to it (`vs_first`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..config import Config
from ..evaluate.facts import model_facts
from ..evaluate.metrics import mean_std, per_class_rows
from ..evaluate.predictions import Predictions, compare, file_name as predictions_file, interval
from ..evaluate.scoring import predict_scores, score_metrics
from ..features.prepared import prepared_of, split_batches
from ..models import load_model
from ..report.plots import confusion_plot
from ..runs import Run, RunError, atomic_write_csv
from .context import open_stage


def write_confusion_csv(cm, classes: list[str], path: Path) -> None:
    atomic_write_csv(path, [["true\\predicted", *classes]] + [[name, *row] for name, row in zip(classes, cm)])


def write_per_class_csv(metrics: dict, classes: list[str], path: Path) -> None:
    rows = per_class_rows(metrics, classes)
    atomic_write_csv(path, [list(rows[0])] + [[f"{v:.4f}" if isinstance(v, float) else v for v in r.values()]
                            for r in rows])


def model_units(model_run: Run) -> list[tuple[str, Path]]:
    """(split name or "", model folder) of every model the run holds: per-fold models first, else model/."""
    folds = model_run.path / "folds"
    units = sorted((p.name, p / "model") for p in folds.iterdir() if (p / "model" / "arch.json").is_file()) \
        if folds.is_dir() else []
    if units:
        return units
    if not (model_run.path / "model" / "arch.json").is_file():
        raise RunError(f"run {model_run.path}: no model/ (or folds/*/model) to evaluate")
    return [("", model_run.path / "model")]


def split_index(prepared, fold: str) -> int:
    names = [s.get("name") for s in prepared.splits["splits"]]
    if not fold:
        return 0
    if fold not in names:
        raise RunError(f"folds/{fold}: no split of that name in {prepared.run.path / 'splits.json'} ({names})")
    return names.index(fold)


def evaluate_unit(cfg: Config, model_run: Run, fold: str, folder: Path, part: str, out: Path,
                  progress: bool) -> tuple[dict, Predictions]:
    prepared = prepared_of(model_run)
    index = split_index(prepared, fold)
    if not prepared.split(index)[part]:
        raise RunError(f"split part '{part}' is empty in {prepared.run.path / 'splits.json'}")
    model, spec = load_model(folder)
    batches = split_batches(prepared, part, cfg.eval.batch_size, index)
    label = f"{model_run.name}{'/' + fold if fold else ''}"
    scores, targets, loss = predict_scores(model, batches, torch.device("cpu"), spec.multilabel, progress,
                                           desc=f"eval {label} {part}")
    metrics = score_metrics(scores, targets, spec.num_classes, spec.multilabel, cfg.eval.top_k)
    metrics.update({"split": part, "items": len(targets), "loss": loss, "classes": spec.classes,
                    "model_run": model_run.name, "fold": fold or None})
    pred = Predictions.of_split(prepared.store, prepared.split(index), part, scores, targets)
    pred.save(out / predictions_file(part))
    if (ci := interval(pred, cfg.eval.interval)) is not None:
        metrics["accuracy_ci"] = ci
    metrics["model_facts"] = model_facts(spec, folder)
    if "confusion" in metrics:
        out.mkdir(parents=True, exist_ok=True)
        write_confusion_csv(metrics["confusion"], spec.classes, out / "confusion.csv")
        write_per_class_csv(metrics, spec.classes, out / "per_class.csv")
        confusion_plot(metrics["confusion"], spec.classes, out / "confusion.png", title=f"{label} ({part})")
    return metrics, pred


def run(cfg: Config, model_runs: Run | list[Run], runs_dir: Optional[str | Path] = None, *,
        name: Optional[str] = None, force: bool = False, split: Optional[str] = None, progress: bool = True) -> Run:
    """Evaluate every model of `model_runs`. One model: metrics.json holds its metrics. Several (folds or
    runs): the first model's metrics at the top level (for the report), `units` with each one's, and `cv`
    with mean/std/n of every scalar metric. `predictions` names each model's predictions file (relative
    to the run); a unit scored on the first unit's items gets `vs_first`, the paired difference to it."""
    model_runs = [model_runs] if isinstance(model_runs, Run) else list(model_runs)
    if split is not None:  # the option is eval.split: it names the run like any setting
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"split": split})})
    part = cfg.eval.split
    with open_stage("eval", cfg, model_runs, runs_dir, name=name, force=force, progress=progress, data=False) as ctx:
        run = ctx.run
        units = [(r, fold, folder) for r in model_runs for fold, folder in model_units(r)]
        results, first = [], None
        for r, fold, folder in units:
            out = run.path if len(units) == 1 else run.path / "units" / (r.name + (f"-{fold}" if fold else ""))
            m, pred = evaluate_unit(cfg, r, fold, folder, part, out, progress)
            m["predictions"] = {part: str((out / predictions_file(part)).relative_to(run.path))}
            if first is None:
                first = pred
            elif (d := compare(first, pred, cfg.eval.interval)) is not None:
                m["vs_first"] = {"reference": results[0]["model_run"], "fold": results[0]["fold"], **d}
            results.append(m)
        metrics = dict(results[0])
        if len(results) > 1:
            metrics["units"] = results
            metrics["cv"] = mean_std([{k: v for k, v in m.items() if isinstance(v, float)} for m in results])
        ctx.write_metrics(metrics)
    return run
