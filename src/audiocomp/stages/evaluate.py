"""`audiocomp eval`: metrics of a model run on a split, with the model's measured facts."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import torch

from ..config import Config
from ..evaluate.facts import count_macs, example_input, file_sizes, parameter_counts
from ..models import build_model, load_model
from ..models.io import artifact_path
from ..report.plots import confusion_plot
from ..runs import Run, atomic_path
from ..train.loop import predict_scores, score_metrics
from . import prepare as prepare_stage
from .common import model_run_parent, stage_run
from .train import split_batches


def model_facts(model, spec, model_file: Path) -> dict:
    facts = parameter_counts(model)
    facts.update(file_sizes(model_file))
    try:
        # quantized kernels are invisible to the op counter: count the architecture's (same arithmetic, in INT8)
        quantized = spec.compression and spec.compression[-1].get("stage") == "quantize"
        facts["macs"] = count_macs(build_model(spec) if quantized else model, example_input(spec.feature_shape))
    except Exception as exc:  # e.g. quantized ops the counter cannot trace: say so, never guess
        facts["macs"] = None
        facts["macs_error"] = f"{type(exc).__name__}: {exc}"[:200]
    facts["format"] = spec.compression[-1]["format"] if spec.compression else "fp32"
    facts["compression"] = [step.get("method") for step in spec.compression]
    return facts


def write_confusion_csv(cm, classes: list[str], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\predicted", *classes])
        for name, row in zip(classes, cm):
            w.writerow([name, *row])


def run(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
        force: bool = False, split: Optional[str] = None, progress: bool = True) -> Run:
    part = split or cfg.eval.split
    prepared = prepare_stage.load_prepared(model_run_parent(model_run))
    name = name or f"eval-{model_run.name}-{part}"
    with stage_run("eval", cfg, name, runs_dir, force=force, parents=[model_run]) as run:
        model, spec = load_model(model_run / "model")
        if not prepared.split()[part]:
            raise ValueError(f"split part '{part}' is empty in {prepared.run.path / 'splits.json'}")
        batches = split_batches(prepared, part, cfg.eval.batch_size)
        scores, targets, loss = predict_scores(model, batches, torch.device("cpu"), spec.multilabel, progress, desc=f"eval {part}")
        metrics = score_metrics(scores, targets, spec.num_classes, spec.multilabel, cfg.eval.top_k)
        metrics.update({"split": part, "items": len(targets), "loss": loss, "classes": spec.classes,
                        "model_run": model_run.name})
        metrics["model_facts"] = model_facts(model, spec, artifact_path(model_run / "model", spec))
        if "confusion" in metrics:
            write_confusion_csv(metrics["confusion"], spec.classes, run.path / "confusion.csv")
            confusion_plot(metrics["confusion"], spec.classes, run.path / "confusion.png",
                           title=f"{model_run.name} ({part})")
        run.write_metrics(metrics)
    return run
