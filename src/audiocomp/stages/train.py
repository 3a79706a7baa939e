"""`audiocomp train`: train a registered model on a prepared split; writes model/, checkpoints/, metrics.

Cross-validation (`split.kind: folds`, `split.test_fold: all`): one model per split of splits.json, each in
`folds/<split name>/` (checkpoints/, model/, metrics.jsonl, metrics.json, curves.png); the run's own
`model/` is a copy of the first fold's model (so eval and report find a model, evaluated on that fold's
test part) and its metrics.json holds the mean and standard deviation over the folds.
Under torchrun every rank trains its shard (DDP); rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..config import Config, ConfigError
from ..models import MODELS, ModelSpec, build_model, count_parameters, save_model
from ..models.io import load_pretrained, safe_torch_load
from ..runs import Run, atomic_write_json, atomic_write_text, read_json, runs_root
from ..train import distributed
from ..train.data import ArrayBatches
from ..train.distributed import Dist
from ..train.loop import fit, predict_scores, resolve_device, score_metrics, seed_everything
from . import prepare as prepare_stage
from .common import default_name, stage_run


def model_info(cfg: Config):
    try:
        return MODELS.get(cfg.model.name)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None


def model_spec(cfg: Config, prepared: prepare_stage.Prepared, split_index: int = 0) -> ModelSpec:
    store = prepared.store
    norm = prepared.split(split_index).get("norm")
    input_size = cfg.model.input_size or model_info(cfg).default_input_size
    return ModelSpec(name=cfg.model.name, num_classes=len(store.classes), feature_shape=list(store.features.shape[1:]),
                     kwargs=dict(cfg.model.kwargs), norm_mode=norm["mode"] if norm else "none",
                     input_size=list(input_size) if input_size else None,
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
        keep = {k: v for k, v in m.items() if isinstance(v, float) or k == "per_class_ap"}
        out[part] = keep | {"loss": loss, "items": len(rows)}
    return out


def _write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def train_split(cfg: Config, prepared: prepare_stage.Prepared, index: int, out: Path, device: torch.device,
                d: Dist, resume: bool, progress: bool) -> Optional[dict]:
    """Train one model on split `index` of splits.json, writing into `out`: checkpoints/, model/,
    metrics.jsonl, curves.png. Returns its metrics on rank 0 (None on other ranks)."""
    seed_everything(cfg.seed, cfg.train.deterministic)  # per split, so a resumed fold starts like a fresh one
    spec = model_spec(cfg, prepared, index)
    model = build_model(spec)
    model.set_norm(prepared.split(index).get("norm"))
    skipped = load_pretrained(model.backbone, cfg.model.weights) if cfg.model.weights else None
    if d.enabled:
        torch.manual_seed(cfg.seed + d.rank)  # each rank its own dropout draws
    train = split_batches(prepared, "train", cfg.train.batch_size, index, shuffle=True, seed=cfg.seed,
                          rank=d.rank, world=d.world)
    val = split_batches(prepared, "val", cfg.train.batch_size, index) if prepared.split(index)["val"] else None
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"

    def log(record: dict) -> None:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    result = fit(model, train, val, cfg.train, spec.num_classes, spec.multilabel, ckpt, log, device,
                 resume=resume, progress=progress, seed=cfg.seed, dist=d,
                 reset_log=lambda history: _write_jsonl(log_path, history))
    if not d.is_main:
        return None
    model.load_state_dict(safe_torch_load(ckpt / "best.pt"))
    model.cpu().eval()
    save_model(model, spec, out / "model")
    parts = evaluate_parts(model, prepared, spec, torch.device("cpu"), cfg.eval.batch_size, index)
    metrics = {
        "model": spec.name, "parameters": count_parameters(model), "best_epoch": result.best_epoch,
        "epochs_run": len(result.history), "stopped_early": result.stopped_early, "monitor": cfg.train.monitor,
        "precision": result.precision, "torch_threads": torch.get_num_threads(),
        # training cost, validation included (every epoch, across resumes): wall, and CPU time of all threads
        "train_seconds": round(sum(r["wall_seconds"] for r in result.history), 1),
        "train_cpu_seconds": round(sum(r["cpu_seconds"] for r in result.history), 1),
        "history": result.history, **{f"{p}_{k}": v for p, m in parts.items() for k, v in m.items()},
    }
    if skipped is not None:
        metrics["pretrained"] = {"path": cfg.model.weights, "not_loaded": skipped}
    from ..report.plots import training_curves

    training_curves(result.history, out / "curves.png")
    return metrics


def cv_summary(folds: list[dict]) -> dict:
    """Mean and sample standard deviation over folds of every numeric train_/val_/test_ metric."""
    keys = [k for k, v in folds[0].items() if k.split("_")[0] in ("train", "val", "test")
            and isinstance(v, float) and all(isinstance(f.get(k), float) for f in folds)]
    out = {}
    for k in keys:
        values = np.array([f[k] for f in folds])
        out[k] = float(values.mean())
        out[f"{k}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def _copy_tree(src: Path, dst: Path) -> None:
    """Replace `dst` by a copy of `src`, renamed into place only when complete."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


@contextlib.contextmanager
def _train_run(cfg: Config, name: str, runs_dir, d: Dist, force: bool, resume: bool, parent: Run, device):
    """Rank 0 opens (and locks, and marks done or failed) the run; the other ranks only use its path."""
    if d.is_main:
        with stage_run("train", cfg, name, runs_dir, force=force, resume=resume, parents=[parent],
                       device=str(device)) as run:
            if d.enabled:
                run.update_manifest(world_size=d.world)
            distributed.barrier()
            yield run
    else:
        distributed.barrier()
        yield Run(runs_root(runs_dir) / name)


def run(cfg: Config, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None, force: bool = False,
        resume: bool = False, from_run: Optional[Run] = None, progress: bool = True) -> Run:
    """Train on every split of the prepared data (one, or one per fold). Returns the run (on every rank;
    only rank 0 writes into it)."""
    model_info(cfg)  # an unknown model name fails before any data is prepared
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    d = distributed.init(device)
    device = distributed.local_device(device, d)
    try:
        if from_run is not None:
            prepared = prepare_stage.load_prepared(from_run)
        else:  # rank 0 prepares; the others then find the finished prepare run and reuse it
            if d.is_main:
                prepared = prepare_stage.run(cfg, runs_dir, progress=progress)
            distributed.barrier()
            if not d.is_main:
                prepared = prepare_stage.run(cfg, runs_dir, progress=False)
        name = name or default_name("train", cfg)
        n_splits = len(prepared.splits["splits"])
        with _train_run(cfg, name, runs_dir, d, force, resume, prepared.run, device) as run:
            if n_splits == 1:
                metrics = train_split(cfg, prepared, 0, run.path, device, d, resume, progress)
                if d.is_main:
                    run.write_metrics(metrics)
                return run
            folds = []
            for i, entry in enumerate(prepared.splits["splits"]):
                out = run.path / "folds" / entry["name"]
                done = out / "metrics.json"
                if resume and done.exists():  # finished before the interruption
                    folds.append(read_json(done))
                    continue
                if progress and d.is_main:
                    print(f"cross-validation: {entry['name']} ({i + 1}/{n_splits})")
                m = train_split(cfg, prepared, i, out, device, d, resume, progress)
                if d.is_main:
                    m["fold"] = entry["name"]
                    atomic_write_json(done, m)
                    folds.append(m)
            if d.is_main:
                first = run.path / "folds" / prepared.split(0)["name"]
                _copy_tree(first / "model", run.path / "model")
                metrics = {"model": folds[0]["model"], "parameters": folds[0]["parameters"],
                           "cross_validation": len(folds), "model_dir_fold": prepared.split(0)["name"],
                           **cv_summary(folds),
                           "folds": [{k: v for k, v in f.items() if k != "history"} for f in folds]}
                run.write_metrics(metrics)
            return run
    finally:
        distributed.shutdown()
