#!/usr/bin/env python
"""Training throughput: the CNN and the LSTM trained by the real loop (fit) from the FSDD feature store,
versus the same loop fed batches already in memory as float32 tensors (the compute-only limit).
Target: store / memory >= 0.9, i.e. the data path is not the bottleneck. Also times a few ResNet-152
training steps at 299x299 (batch 8) to estimate seconds per epoch on this CPU.

Usage: python scripts/bench_train.py [--fsdd ../shared/data/fsdd] [--runs-dir runs] [--out bench-results]
Writes bench-results/bench_train.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from audiocomp.config import load_config
from audiocomp.models import build_model
from audiocomp.stages import prepare
from audiocomp.stages.train import model_spec, split_batches
from audiocomp.train.loop import fit

# the features and CNN of the FSDD real-data test (tests/realdata/test_train_fsdd.py); the default LSTM.
# No validation part: this measures one epoch's throughput and keeps no model, so nothing is chosen.
FEATURES = ["data.dataset=fsdd", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
            "features.hop_length=256", "features.n_mels=40", "split.kind=folds", "split.test_fold=1",
            "split.val_fraction=0", "train.batch_size=32", "train.lr=0.003"]
MODELS = {"cnn": ["model.name=cnn", "model.kwargs.channels=[16,32,64]", "model.kwargs.pooled=[4,4]"],
          "lstm": ["model.name=lstm"]}


class InMemoryBatches:
    """The batches an ArrayBatches epoch yields, materialised once as float32 tensors: no data path at all."""

    def __init__(self, source):
        self.rows = source.rows
        self.batches = [(x.clone(), y.clone()) for x, y in source]

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def throughput(cfg, prepared, sources: dict, rounds: int) -> dict[str, float]:
    """Best samples/s per source over `rounds` one-epoch runs of the real training loop (fit), the sources
    interleaved so that a noisy neighbour on a shared machine slows them alike."""
    torch.manual_seed(0)
    spec = model_spec(cfg, prepared)
    model = build_model(spec)
    best = {name: 0.0 for name in sources}
    with tempfile.TemporaryDirectory() as ckpt:
        for _ in range(rounds):
            for name, batches in sources.items():
                result = fit(model, batches, None, cfg.train.model_copy(update={"epochs": 1}), spec.num_classes,
                             False, Path(ckpt), lambda r: None, torch.device("cpu"), progress=False)
                best[name] = max(best[name], result.history[0]["samples_per_second"])
    return best


def resnet152_step_seconds(steps: int = 3, batch: int = 8) -> float:
    from audiocomp.models import ModelSpec

    model = build_model(ModelSpec("resnet152", 10, [1, 64, 63], input_size=[299, 299])).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.randn(batch, 1, 64, 63), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"))
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--rounds", type=int, default=3, help="one-epoch measurements per source (best counts)")
    ap.add_argument("--resnet-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for name, overrides in MODELS.items():
        cfg = load_config([], [f"data.root={args.fsdd}", *FEATURES, *overrides])
        prepared = prepare.run(cfg, args.runs_dir, progress=False)
        store = split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=0)
        sps = throughput(cfg, prepared, {"store": store, "memory": InMemoryBatches(store)}, args.rounds)
        from_store, in_memory = sps["store"], sps["memory"]
        rows.append({"model": name, "train_items": len(store.rows), "batch_size": cfg.train.batch_size,
                     "store_samples_per_s": from_store, "memory_samples_per_s": in_memory,
                     "ratio": round(from_store / in_memory, 3)})
    step = resnet152_step_seconds(args.resnet_steps)
    n_train = rows[0]["train_items"]
    resnet = {"model": "resnet152", "input": "299x299", "batch_size": 8, "seconds_per_step": round(step, 2),
              "seconds_per_1000_samples": round(step * 1000 / 8, 1),
              "seconds_per_fsdd_epoch": round(step * -(-n_train // 8), 1)}
    import os

    result = {"benchmark": "train", "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "throughput": rows, "resnet152": resnet}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_train.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"| model | store samples/s | in-memory samples/s | store / memory |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['store_samples_per_s']:.0f} | {r['memory_samples_per_s']:.0f} | {r['ratio']:.2f} |")
    print(f"\nresnet152 at 299x299, batch 8: {resnet['seconds_per_step']} s per training step, "
          f"{resnet['seconds_per_1000_samples']} s per 1000 samples, ~{resnet['seconds_per_fsdd_epoch']} s per "
          f"FSDD epoch ({n_train} items) on {torch.get_num_threads()} threads")
    print(f"-> {out / 'bench_train.json'}")


if __name__ == "__main__":
    main()
