"""Pruning benchmark: train the CNN on FSDD (or the synthetic set) quickly, then prune it with Taylor (50% of
the channels), hybrid (70% weights + 50% channels) and magnitude (90% weights), each with a short fine-tune.
Defaults fit a small shared machine (1,500 FSDD clips, 15 epochs); --max-items 0 for the full set.
Every figure comes from the prune runs' metrics.json (measured by the program). The kept training and
fine-tuning epochs are chosen on the validation part (10% of the training part, drawn like the test part:
whole speakers here), never on the test items; compare methods on the val column. Writes
bench-results/prune-<dataset>.json and prints a markdown table.

    PYTHONPATH=src python scripts/bench_prune.py --dataset fsdd --data /work/shared/data/fsdd
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from audiocomp.config import load_config  # noqa: E402
from audiocomp.datasets.synth import generate  # noqa: E402
from audiocomp.stages import prepare, prune, train  # noqa: E402

BASE = ["features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256", "features.hop_length=128",
        "features.n_mels=64", "split.test_fraction=0.2", "split.val_fraction=0.1",
        "model.name=cnn", "model.kwargs.channels=[16,32,64,64]", "train.batch_size=32", "train.lr=0.003",
        "train.scheduler=cosine", "bench.iterations=200", "bench.warmup=20"]
METHODS = {
    "taylor": ["prune.method=taylor", "prune.channel_ratio=0.5", "prune.steps=2"],
    "hybrid": ["prune.method=hybrid", "prune.sparsity=0.7", "prune.channel_ratio=0.5", "prune.steps=2"],
    "magnitude": ["prune.method=magnitude", "prune.sparsity=0.9", "prune.steps=1"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["fsdd", "synth"], default="fsdd")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("AUDIOCOMP_FSDD", REPO.parent / "shared/data/fsdd")))
    ap.add_argument("--work", type=Path, default=REPO / "bench-results" / "prune-work")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--max-items", type=int, default=1500, help="stratified subset of the dataset (0: all)")
    ap.add_argument("--threads", type=int, default=None, help="training threads [default: torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.data
    if args.dataset == "synth":
        root = args.work / "synth"
        if not (root / "metadata.csv").is_file():
            generate(root, per_class=60, duration=1.0, seed=0, progress=False)
    common = BASE + [f"data.dataset={args.dataset}", f"data.root={root}", f"train.epochs={args.epochs}",
                     f"prune.finetune_epochs={args.finetune_epochs}", "prune.finetune_lr=0.001"]
    common += [f"data.max_items={args.max_items}"] if args.max_items else []
    runs = args.work / "runs"
    cfg = load_config([], common)
    t0 = time.time()
    prepared = prepare.run(cfg, runs, progress=False)
    model_run = train.run(cfg, runs, from_run=prepared.run, progress=False, force=True, name=f"bench-{args.dataset}-train")
    results = {"dataset": args.dataset, "config": common, "train_seconds": round(time.time() - t0, 1), "methods": {}}
    for method, extra in METHODS.items():
        t1 = time.time()
        run = prune.run(load_config([], common + extra), model_run, runs, force=True, progress=False,
                        name=f"bench-{args.dataset}-{method}")
        m = run.metrics()
        results["methods"][method] = {"config": extra, "seconds": round(time.time() - t1, 1), "before": m["before"],
                                      "after": m["after"], "change": m["change"]}
    out = REPO / "bench-results" / f"prune-{args.dataset}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"\n-> {out}")


def table(results: dict) -> str:
    lines = ["| method | params | MACs | batch-1 latency (ms, 1 thread) | file MB (zipped) | sparse MB "
             "(x smaller than dense original) | val acc before -> after | test acc before -> after |",
             "|---|---|---|---|---|---|---|---|"]
    for method, r in results["methods"].items():
        b, a, c = r["before"], r["after"], r["change"]
        lines.append(
            f"| {method} | {b['parameters']:,} -> {a['parameters']:,} (nz {a['nonzero']:,}) | "
            f"{b['macs'] / 1e6:.1f}M -> {a['macs'] / 1e6:.1f}M ({c['macs_reduction']:.2f}x) | "
            f"{b['latency']['median_ms']:.3f} -> {a['latency']['median_ms']:.3f} ({c['latency_speedup']:.2f}x) | "
            f"{b['file_bytes'] / 1e6:.3f} ({b['zipped_bytes'] / 1e6:.3f}) -> {a['file_bytes'] / 1e6:.3f} "
            f"({a['zipped_bytes'] / 1e6:.3f}) | {a['sparse_bytes'] / 1e6:.3f} ({c['sparse_vs_dense_original']:.1f}x) | "
            f"{b['val_accuracy']:.1%} -> {a['val_accuracy']:.1%} ({100 * c['val_accuracy_change']:+.1f} pt) | "
            f"{b['test_accuracy']:.1%} -> {a['test_accuracy']:.1%} ({100 * c['test_accuracy_change']:+.1f} pt) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
