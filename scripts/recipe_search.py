#!/usr/bin/env python
"""Recipe search on validation data only, and the one final test scoring of a chosen recipe.

`trial`: train a config (files + --set overrides) with the real training loop on the training part and score
it on the validation part; the test part is never loaded. One JSON line per trial (config, best and last
validation accuracy, wall time, samples/s, load average) is appended to --log.
`test-predictions RUN`: the per-item test probabilities and targets of a finished train run (its model/,
evaluated on its own split's test part), saved as an .npz for paired intervals.

Usage:
  python scripts/recipe_search.py trial NAME -c configs/base.yaml -c configs/data/urbansound8k-subset.yaml \\
      -c configs/models/cnn.yaml --set train.epochs=10 [--runs-dir runs] [--log bench-results/recipe-trials.jsonl]
  python scripts/recipe_search.py test-predictions runs/train-cnn-... --out bench-results/cnn-test.npz
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiocomp.config import load_config
from audiocomp.models import build_model, load_model
from audiocomp.runs import Run
from audiocomp.stages import prepare
from audiocomp.features.prepared import load_prepared, model_run_parent, split_batches
from audiocomp.train.spec import model_spec
from audiocomp.evaluate.scoring import predict_scores
from audiocomp.train.device import seed_everything
from audiocomp.train.loop import fit


def trial(args) -> dict:
    cfg = load_config(args.config, args.set)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    prepared = prepare.run(cfg, args.runs_dir, progress=False)
    spec = model_spec(cfg, prepared)
    seed_everything(cfg.seed, cfg.train.deterministic)
    model = build_model(spec)
    model.set_norm(prepared.split().get("norm"))
    train = split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=cfg.seed)
    val = split_batches(prepared, "val", cfg.train.batch_size)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    history = []

    def log(record: dict) -> None:
        history.append(record)
        if not args.quiet:
            print(f"  epoch {record['epoch']}: loss {record['train_loss']:.3f} val {record.get('val_accuracy', 0):.3f} "
                  f"({record['samples_per_second']:.0f}/s)", flush=True)

    with tempfile.TemporaryDirectory() as ckpt:
        result = fit(model, train, val, cfg.train, spec.num_classes, spec.multilabel, Path(ckpt), log,
                     torch.device("cpu"), progress=False, seed=cfg.seed)
    wall = time.perf_counter() - t0
    accs = [r["val_accuracy"] for r in history]
    entry = {"name": args.name, "config": [str(c) for c in args.config], "set": args.set,
             "model": spec.name, "input": spec.feature_shape, "epochs": cfg.train.epochs,
             "best_val_accuracy": max(accs), "best_epoch": result.best_epoch, "last_val_accuracy": accs[-1],
             "last3_val_accuracy": float(np.mean(accs[-3:])), "val_items": len(val.rows), "train_items": len(train.rows),
             "wall_seconds": round(wall, 1), "cpu_seconds": round(sum(r["cpu_seconds"] for r in history), 1),
             "median_samples_per_s": float(np.median([r["samples_per_second"] for r in history])),
             "precision": result.precision, "torch_threads": torch.get_num_threads(),
             "load_average_before": load_before, "load_average_after": os.getloadavg(),
             "parameters": sum(p.numel() for p in model.parameters()), "host": platform.node(),
             "val_curve": [round(a, 4) for a in accs]}
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    print(f"{args.name}: best val {entry['best_val_accuracy']:.3f} (epoch {entry['best_epoch']}), last3 "
          f"{entry['last3_val_accuracy']:.3f}, {wall / 60:.1f} min wall, {entry['cpu_seconds'] / 60:.1f} CPU-min, "
          f"load {load_before[0]:.1f}", flush=True)
    return entry


def test_predictions(args) -> None:
    run = Run(Path(args.run))
    prepared = load_prepared(model_run_parent(run))
    model, _ = load_model(run.path / "model")
    batches = split_batches(prepared, "test", 64)
    scores, targets, _ = predict_scores(model, batches, torch.device("cpu"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, probabilities=scores.astype(np.float32), targets=targets, rows=np.asarray(batches.rows),
                        classes=np.asarray(prepared.store.classes))
    print(f"{run.path.name}: test accuracy {float((scores.argmax(1) == targets).mean()):.4f} on {len(targets)} items, "
          f"{len(prepared.store.classes)} classes -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trial")
    t.add_argument("name")
    t.add_argument("-c", "--config", action="append", default=[], type=Path)
    t.add_argument("--set", action="append", default=[])
    t.add_argument("--runs-dir", default="runs")
    t.add_argument("--log", default="bench-results/recipe-trials.jsonl")
    t.add_argument("-q", "--quiet", action="store_true")
    p = sub.add_parser("test-predictions")
    p.add_argument("run")
    p.add_argument("--out", required=True)
    args = ap.parse_args()
    trial(args) if args.cmd == "trial" else test_predictions(args)


if __name__ == "__main__":
    main()
