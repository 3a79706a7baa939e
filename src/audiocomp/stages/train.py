"""`audiocomp train`: train a registered model on a prepared split; writes model/, checkpoints/, metrics.

Cross-validation (`split.kind: folds`, `split.test_fold: all`): one model per split of splits.json, each in
`folds/<split name>/` (checkpoints/, model/, metrics.jsonl, metrics.json, curves.png); the run's own
`model/` is a copy of the first fold's model (so eval and report find a model, evaluated on that fold's
test part) and its metrics.json holds the mean and standard deviation over the folds.
Seeds (`train.seeds: N`, `--seeds N`): N independent trainings on the same split, seed, seed+1, ..., each
in `seeds/<k>/`, summarised the same way; the run's `model/` is the first seed's.
A teacher (`--teacher RUN`; in a pipeline, a second stage id in `from`): a model run on the same prepared
split whose frozen model's softened outputs the loss also follows (knowledge distillation, train/distill.py),
recorded as the run's second parent.
Under torchrun every rank trains its shard (DDP); rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..config import Config, ConfigError
from ..evaluate.counts import parameter_counts
from ..evaluate.scoring import record_predictions, score_parts
from ..features.prepared import Prepared, load_prepared, split_batches
from ..models import build_model, save_model
from ..models.io import load_pretrained, safe_torch_load
from ..runs import Run, atomic_write_json, atomic_write_text, read_json, runs_root
from ..train import distributed
from ..train.device import resolve_device, seed_everything
from ..train.distributed import Dist
from ..train.loop import fit, resolve_monitor
from ..train.spec import model_info, model_spec
from .context import ensure_parent, log_record, stage_run
from .naming import run_name


def _write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def train_split(cfg: Config, prepared: Prepared, index: int, out: Path, device: torch.device,
                d: Dist, resume: bool, progress: bool, teacher: Optional[torch.nn.Module] = None) -> Optional[dict]:
    """Train one model on split `index` of splits.json, writing into `out`: checkpoints/, model/,
    metrics.jsonl, curves.png; distilled from `teacher` when given. Returns its metrics on rank 0 (None on
    other ranks)."""
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

    fold = f"{prepared.split(index)['name']}/" if len(prepared.splits["splits"]) > 1 else ""

    result = fit(model, train, val, cfg.train, spec.num_classes, spec.multilabel, ckpt,
                 lambda record: log_record(log_path, record, f"epoch/{fold}"), device,
                 resume=resume, progress=progress, seed=cfg.seed, dist=d,
                 reset_log=lambda history: _write_jsonl(log_path, history), band_hz=prepared.store.band_hz(),
                 teacher=teacher, distill=cfg.distill.model_copy(update={"enabled": True}) if teacher else None)
    if not d.is_main:
        return None
    model.load_state_dict(safe_torch_load(ckpt / "best.pt"))
    # scored where it trained (float32): a ResNet-152 trained on a GPU would take minutes more on the CPU
    scored = score_parts(model.to(device).eval(), prepared, spec, device, cfg.eval.batch_size, index)
    save_model(model.cpu(), spec, out / "model")
    metrics = {
        "model": spec.name, "parameters": parameter_counts(model)["parameters"], "seed": cfg.seed,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
        "monitor": result.monitor, "selection": result.selection,
        "precision": result.precision, "torch_threads": torch.get_num_threads(),
        # training cost, validation included (every epoch, across resumes): wall, and CPU time of all threads
        "train_seconds": round(sum(r["wall_seconds"] for r in result.history), 1),
        "train_cpu_seconds": round(sum(r["cpu_seconds"] for r in result.history), 1),
        "history": result.history,
        **{f"{p}_{k}": v for p, (m, _) in scored.items() for k, v in m.items()},
        # the chosen model's per-item predictions on validation and test (the training part is not kept)
        **record_predictions(out, {p: pred for p, (_, pred) in scored.items() if p != "train"}, cfg.eval.interval),
    }
    if skipped is not None:
        metrics["pretrained"] = {"path": cfg.model.weights, "not_loaded": skipped}
    from ..report.plots import training_curves

    training_curves(result.history, out / "curves.png")
    return metrics


def cv_summary(folds: list[dict]) -> dict:
    """Mean and sample standard deviation over folds (or seeds) of every numeric train_/val_/test_ metric."""
    keys = [k for k, v in folds[0].items() if k.split("_")[0] in ("train", "val", "test")
            and isinstance(v, float) and all(isinstance(f.get(k), float) for f in folds)]
    out = {}
    for k in keys:
        values = np.array([f[k] for f in folds])
        out[k] = float(values.mean())
        out[f"{k}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


@dataclass
class SubRun:
    """One of several models a train run holds: a fold of cross-validation or one of several seeds."""
    kind: str  # "fold" or "seed"
    label: Any  # the split name or the seed
    folder: str  # folds/<name> or seeds/<k>, inside the run
    split_index: int
    cfg: Config


def sub_runs(cfg: Config, prepared: Prepared) -> list[SubRun]:
    """The folds, or the seeds, of this run; [] for a single model."""
    splits = prepared.splits["splits"]
    if len(splits) > 1:
        return [SubRun("fold", e["name"], f"folds/{e['name']}", i, cfg) for i, e in enumerate(splits)]
    if cfg.train.seeds > 1:
        return [SubRun("seed", cfg.seed + k, f"seeds/{k}", 0, cfg.model_copy(update={"seed": cfg.seed + k}))
                for k in range(cfg.train.seeds)]
    return []


def summary(subs: list[SubRun], metrics: list[dict]) -> dict:
    """The run's metrics.json over its folds or seeds: mean +- std of every metric, and each one's numbers."""
    first = metrics[0]
    out = {"model": first["model"], "parameters": first["parameters"], "monitor": first.get("monitor"),
           "selection": first.get("selection")}
    if subs[0].kind == "fold":
        out |= {"cross_validation": len(metrics), "model_dir_fold": subs[0].label}
    else:
        out |= {"seed_runs": len(metrics), "model_dir_seed": subs[0].label}
    return out | cv_summary(metrics) | {f"{subs[0].kind}s": [{k: v for k, v in m.items() if k != "history"}
                                                            for m in metrics]}


def check_train_options(cfg: Config, prepared: Prepared) -> None:
    """Options that depend on the data, checked before anything is written (ConfigError naming the key)."""
    for entry in prepared.splits["splits"]:
        resolve_monitor(cfg.train, prepared.store.multilabel, bool(entry["val"]))
    if cfg.train.augment.pitch_shift > 0 and prepared.store.band_hz() is None:
        raise ConfigError(f"train.augment.pitch_shift: the features of {prepared.run.name} are not log-mel "
                          f"(features.kind: {prepared.store.features_config().kind}); use freq_shift or remove it")
    if cfg.train.seeds > 1 and len(prepared.splits["splits"]) > 1:
        raise ConfigError(f"train.seeds={cfg.train.seeds} with {len(prepared.splits['splits'])} folds: seeds and "
                          "cross-validation in one run are not supported; train one fold per run with seeds, "
                          "or the folds with one seed")


def _copy_tree(src: Path, dst: Path) -> None:
    """Replace `dst` by a copy of `src`, renamed into place only when complete."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def load_teacher(teacher: Run, prepared: Prepared) -> torch.nn.Module:
    """The float model of a model run trained on this very split, to distil from (ConfigError otherwise: a
    teacher that trained on other items would leak what this run validates and tests on into its training)."""
    from ..models import load_model
    from ..models.io import load_spec

    own = teacher.parent("prepare") if teacher.stage != "prepare" else None
    if own is None or own.name != prepared.run.name:
        raise ConfigError(f"teacher {teacher.path}: trained on {own.name if own else 'no prepare run'}, not on "
                          f"{prepared.run.name}, the data of this training; a teacher must be trained on the "
                          "same prepared split, or its view of this validation and test part is not held out")
    if len(prepared.splits["splits"]) > 1:
        raise ConfigError(f"teacher {teacher.path}: this training cross-validates over "
                          f"{len(prepared.splits['splits'])} folds, whose test parts the teacher trained on; "
                          "distil one split at a time (split.test_fold: N)")
    fmt = load_spec(teacher.path / "model").format  # refused before the model is loaded
    if fmt != "fp32":
        raise ConfigError(f"teacher {teacher.path}: holds a {fmt} model; a teacher must be a float "
                          "model (use the run it was quantized from)")
    return load_model(teacher.path / "model")[0]


@contextlib.contextmanager
def _train_run(cfg: Config, name: str, runs_dir, d: Dist, force: bool, resume: bool, parents: list[Run], device):
    """Rank 0 opens (and locks, and marks done or failed) the run; the other ranks only use its path."""
    if d.is_main:
        with stage_run("train", cfg, name, runs_dir, force=force, resume=resume, parents=parents,
                       device=str(device)) as run:
            if d.enabled:
                run.update_manifest(world_size=d.world, backend=distributed.backend())
            distributed.barrier()
            yield run
    else:
        distributed.barrier()
        yield Run(runs_root(runs_dir) / name)


def run(cfg: Config, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None, force: bool = False,
        resume: bool = False, from_run: Optional[Run] = None, teacher: Optional[Run] = None,
        progress: bool = True) -> Run:
    """Train on every split of the prepared data (one, or one per fold). With `teacher` (a model run on the
    same prepared data), the loss is distilled from its model (distill.alpha, distill.temperature). Returns
    the run (on every rank; only rank 0 writes into it)."""
    model_info(cfg)  # an unknown model name fails before any data is prepared
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    d = distributed.init(device)
    device = distributed.local_device(device, d)
    try:
        if from_run is None:  # its prepare run: made now, as a pipeline would, if it does not exist yet
            if d.is_main:
                from_run = ensure_parent("prepare", cfg, runs_dir, progress)
            distributed.barrier()
            if not d.is_main:  # rank 0 has made it: the others find it finished
                from_run = ensure_parent("prepare", cfg, runs_dir, False)
        prepared = load_prepared(from_run)
        check_train_options(cfg, prepared)  # before the run folder exists
        teacher_model = load_teacher(teacher, prepared) if teacher is not None else None
        parents = [prepared.run, *([teacher] if teacher is not None else [])]
        name = name or run_name("train", cfg, [p.name for p in parents])
        with _train_run(cfg, name, runs_dir, d, force, resume, parents, device) as run:
            subs = sub_runs(cfg, prepared)
            taught = {"teacher": {"run": teacher.name, "alpha": cfg.distill.alpha,
                                  "temperature": cfg.distill.temperature}} if teacher is not None else {}
            if not subs:
                metrics = train_split(cfg, prepared, 0, run.path, device, d, resume, progress, teacher_model)
                if d.is_main:
                    run.write_metrics(metrics | taught)
                return run
            done_metrics = []
            for i, sub in enumerate(subs):
                done = run.path / sub.folder / "metrics.json"
                if resume and done.exists():  # finished before the interruption
                    done_metrics.append(read_json(done))
                    continue
                if progress and d.is_main:
                    print(f"{sub.kind}: {sub.label} ({i + 1}/{len(subs)})")
                m = train_split(sub.cfg, prepared, sub.split_index, run.path / sub.folder, device, d, resume, progress,
                                teacher_model)
                if d.is_main:
                    m[sub.kind] = sub.label
                    atomic_write_json(done, m)
                    done_metrics.append(m)
            if d.is_main:
                _copy_tree(run.path / subs[0].folder / "model", run.path / "model")
                run.write_metrics(summary(subs, done_metrics) | taught)
            return run
    finally:
        distributed.shutdown()
