#!/usr/bin/env python
"""Training on one CUDA GPU: the whole `train` stage, timed, in float16 autocast (train.precision auto on CUDA)
and in float32, for our CNN recipe at the UrbanSound8K / ESC-50 input size and for the GTZAN study's ResNet-152
at 299x299.

The clips are synthetic (2,000 of 4 s at 22,050 Hz, 10 classes: the UrbanSound8K subset's size and shape;
real recordings cannot travel to the GPU machine): compute depends on the input's shape, not its content,
so the times hold for real data of that shape (the accuracies here are on the synthetic task and say only
that training learned). Each row is one `audiocomp train` run with the settings users get (deterministic
mode on, validation every epoch, the kept model re-scored on the GPU at the end): `train_seconds` is training and
validation wall time, `epoch samples/s` the median training-pass throughput.

Usage: python scripts/bench_gpu.py [--runs-dir runs] [--out bench-results] [--cnn-epochs 40] [--resnet-epochs 2]
Writes bench-results/bench_gpu.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from audiocomp.config import load_config
from audiocomp.datasets.synth import generate
from audiocomp.stages import prepare, train

REPO = Path(__file__).resolve().parents[1]
DATA = ["data.dataset=synth", "features.sample_rate=22050", "features.duration=4.0", "features.duration_policy=pad",
        "split.kind=holdout", "split.test_fraction=0.2", "split.val_fraction=0.2", "features.workers=8"]
CASES = {  # name: (config files, overrides)
    "ours-cnn": (["configs/base.yaml", "configs/recipes/ours-cnn.yaml"], []),
    "resnet152-299": (["configs/base.yaml", "configs/models/resnet152.yaml"], ["train.lr=0.0001"]),
}


def one_run(case: str, precision: str, epochs: int, root: Path, runs: Path) -> dict:
    files, overrides = CASES[case]
    cfg = load_config([REPO / f for f in files], [f"data.root={root}", *DATA, *overrides, "train.device=cuda",
                                                   f"train.precision={precision}", f"train.epochs={epochs}"])
    parent = prepare.run(cfg, runs, progress=False).run
    torch.cuda.synchronize()
    start = time.perf_counter()
    run = train.run(cfg, runs, from_run=parent, force=True, progress=False)
    stage_seconds = time.perf_counter() - start
    m = run.metrics()
    return {"case": case, "precision": m["precision"], "epochs": m["epochs_run"], "train_items": m["train_items"],
            "train_seconds": m["train_seconds"], "stage_seconds": round(stage_seconds, 1),
            "epoch_samples_per_s": round(statistics.median(r["samples_per_second"] for r in m["history"][1:] or m["history"])),
            "val_accuracy": m["val_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default=None, help="[default: a temporary folder]")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--cnn-epochs", type=int, default=60, help="our CNN recipe's 60 epochs")
    ap.add_argument("--resnet-epochs", type=int, default=2)
    ap.add_argument("--clips-per-class", type=int, default=200)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA GPU here")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs_dir or Path(tmp) / "runs")
        root = generate(Path(tmp) / "synth", per_class=args.clips_per_class, duration=4.0, seed=0, progress=False)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = {"benchmark": "gpu", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "runs": rows}
        epochs = {"ours-cnn": args.cnn_epochs, "resnet152-299": args.resnet_epochs}
        for case in args.cases.split(","):
            for precision in ("auto", "fp32"):
                rows.append(one_run(case, precision, epochs[case], root, runs))
                print(json.dumps(rows[-1]), flush=True)
                (out / "bench_gpu.json").write_text(json.dumps(result, indent=2) + "\n")  # each row as it comes
    print(f"\n{result['gpu']}, torch {result['torch']}, CUDA {result['cuda']}")
    print("| case | precision | epochs | train items | train + val wall s | whole stage s | epoch samples/s | val acc (synthetic) |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['precision']} | {r['epochs']} | {r['train_items']} | {r['train_seconds']} | "
              f"{r['stage_seconds']} | {r['epoch_samples_per_s']} | {r['val_accuracy']:.3f} |")
    print(f"-> {out / 'bench_gpu.json'}")


if __name__ == "__main__":
    main()
