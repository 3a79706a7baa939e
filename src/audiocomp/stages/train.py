"""`audiocomp train`: train a registered model on a prepared split; writes model/, checkpoints/, metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..config import Config
from ..models import ModelSpec, build_model, count_parameters, save_model
from ..models.io import load_pretrained
from ..runs import Run
from ..train.data import ArrayBatches
from ..train.loop import fit, predict_scores, resolve_device, score_metrics, seed_everything
from . import prepare as prepare_stage
from .common import default_name, stage_run


def model_spec(cfg: Config, prepared: prepare_stage.Prepared, split_index: int = 0) -> ModelSpec:
    store = prepared.store
    norm = prepared.split(split_index).get("norm")
    return ModelSpec(name=cfg.model.name, num_classes=len(store.classes), feature_shape=list(store.features.shape[1:]),
                     kwargs=dict(cfg.model.kwargs), norm_mode=norm["mode"] if norm else "none",
                     input_size=list(cfg.model.input_size) if cfg.model.input_size else None,
                     in_channels=cfg.model.in_channels, multilabel=store.multilabel, classes=list(store.classes))


def split_batches(prepared: prepare_stage.Prepared, part: str, batch_size: int, split_index: int = 0,
                  shuffle: bool = False, seed: int = 0, **kw) -> ArrayBatches:
    store = prepared.store
    return ArrayBatches(store.features, store.targets(), prepared.split(split_index)[part], batch_size,
                        shuffle=shuffle, seed=seed, **kw)


def evaluate_parts(model, prepared, spec: ModelSpec, device, batch_size: int, split_index: int = 0,
                   parts=("train", "val", "test")) -> dict:
    """Accuracy-style metrics of `model` on each split part (without the confusion details)."""
    out = {}
    for part in parts:
        rows = prepared.split(split_index)[part]
        if not rows:
            continue
        scores, targets, loss = predict_scores(model, split_batches(prepared, part, batch_size, split_index),
                                               device, spec.multilabel)
        m = score_metrics(scores, targets, spec.num_classes, spec.multilabel)
        out[part] = {k: v for k, v in m.items() if isinstance(v, float)} | {"loss": loss, "items": len(rows)}
    return out


def run(cfg: Config, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None, force: bool = False,
        resume: bool = False, from_run: Optional[Run] = None, progress: bool = True) -> Run:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    prepared = (prepare_stage.load_prepared(from_run) if from_run is not None
                else prepare_stage.run(cfg, runs_dir, progress=progress))
    device = resolve_device(cfg.train.device)
    name = name or default_name("train", cfg)
    with stage_run("train", cfg, name, runs_dir, force=force, resume=resume, parents=[prepared.run],
                   device=str(device)) as run:
        seed_everything(cfg.seed, cfg.train.deterministic)
        spec = model_spec(cfg, prepared)
        model = build_model(spec)
        model.set_norm(prepared.split().get("norm"))
        skipped = load_pretrained(model.backbone, cfg.model.weights) if cfg.model.weights else None
        train = split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=cfg.seed)
        val = split_batches(prepared, "val", cfg.train.batch_size) if prepared.split()["val"] else None
        ckpt = run.path / "checkpoints"
        ckpt.mkdir(exist_ok=True)
        result = fit(model, train, val, cfg.train, spec.num_classes, spec.multilabel, ckpt,
                     log=lambda r: run.append_jsonl("metrics.jsonl", r), device=device,
                     resume=resume, progress=progress)
        from ..models.io import safe_torch_load

        model.load_state_dict(safe_torch_load(ckpt / "best.pt"))
        model.eval()
        save_model(model.cpu(), spec, run.path / "model")
        parts = evaluate_parts(model, prepared, spec, torch.device("cpu"), cfg.eval.batch_size)
        metrics = {
            "model": spec.name, "parameters": count_parameters(model), "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "stopped_early": result.stopped_early,
            "history": result.history, **{f"{p}_{k}": v for p, m in parts.items() for k, v in m.items()},
        }
        if skipped is not None:
            metrics["pretrained"] = {"path": cfg.model.weights, "not_loaded": skipped}
        run.write_metrics(metrics)
        from ..report.plots import training_curves

        training_curves(result.history, run.path / "curves.png")
    return run
