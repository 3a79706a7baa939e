#!/usr/bin/env python
"""Training throughput and precision: float32 versus the fast path (train.precision auto = bfloat16 autocast on
CPUs with AMX / AVX512-BF16, plus channels_last for 2-D conv models) on the same models and data, with the
validation accuracy of each after the same short training; and the data path (feature store versus batches
already in memory, target >= 0.9).

Cases: the FSDD CNN and LSTM of the real-data tests (8 kHz, 40 mels x 32 frames) and the study's CNN at the
ESC-50 / UrbanSound8K input size (the UrbanSound8K subset, 22,050 Hz, 128 mels x 173 frames of 4 s).
Throughput: the real loop (fit) over the first --batches training batches, the variants interleaved round by
round so that a noisy neighbour on a shared machine slows them alike; the median of the per-round ratios is
the speed-up, in samples per wall second and in samples per CPU second (all threads; with one thread, what an
idle core would do whatever the other jobs on a shared machine do). Accuracy: each variant trains --epochs (per
case), --seeds paired runs (one seed: the same initial weights, data order and augmentation draws for both
variants); the paired difference fast - fp32 (items resampled with all their seeds) is printed and saved, and
the per-item validation probabilities go to bench_train_val.npz.

Usage: python scripts/bench_train.py [--fsdd ../shared/data/fsdd] [--us8k ../shared/data/urbansound8k_subset]
       [--runs-dir runs] [--out bench-results] [--threads 1] [--cases fsdd-cnn,fsdd-lstm,us8k-cnn]
Writes bench-results/bench_train.json (+ bench_train_val.npz) and prints tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiocomp.config import load_config
from audiocomp.models import build_model
from audiocomp.stages import prepare
from audiocomp.features.prepared import split_batches
from audiocomp.train.spec import model_spec
from audiocomp.evaluate.scoring import predict_scores, score_metrics
from audiocomp.evaluate.stats import format_paired, paired_difference
from audiocomp.train.device import cpu_has_native_bf16, seed_everything
from audiocomp.train.loop import fit

REPO = Path(__file__).resolve().parents[1]
# the features and CNN of the FSDD real-data test (tests/realdata/test_train_fsdd.py); the default LSTM
FSDD = ["data.dataset=fsdd", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
        "features.hop_length=256", "features.n_mels=40", "split.kind=folds", "split.test_fold=1",
        "split.val_fraction=0.2", "train.batch_size=32", "train.lr=0.003", "train.optimizer=adamw",
        "train.scheduler=onecycle"]
US8K = ["train.batch_size=32", "train.lr=0.003", "train.optimizer=adamw", "train.scheduler=onecycle",
        "train.augment.spec_time_mask=24", "train.augment.spec_freq_mask=12", "train.augment.mixup_alpha=0.2",
        "train.label_smoothing=0.1"]
CASES = {  # name: (data, config files, overrides, epochs of the accuracy run)
    "fsdd-cnn": ("fsdd", [], FSDD + ["model.name=cnn", "model.kwargs.channels=[16,32,64]", "model.kwargs.pooled=[4,4]"], 8),
    "fsdd-lstm": ("fsdd", [], FSDD + ["model.name=lstm"], 8),
    "us8k-cnn": ("us8k", ["configs/base.yaml", "configs/data/urbansound8k-subset.yaml", "configs/models/cnn.yaml"], US8K, 6),
}
# throughput variants: "before" is the old default (float32, NCHW, deterministic mode filling every new tensor with
# NaN), "fast" what train.precision auto and channels_last do now on this machine; the others split the gain
VARIANTS = {
    "fp32 (before)": {"precision": "fp32", "channels_last": False, "fill": True},
    "fp32": {"precision": "fp32", "channels_last": False},
    "fp32+channels_last": {"precision": "fp32", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "fast": {"precision": "auto", "channels_last": True},
    "fast, not deterministic": {"precision": "auto", "channels_last": True, "deterministic": False},
}
REFERENCE = "fp32 (before)"
ACCURACY_VARIANTS = ("fp32", "fast")  # the fill changes no number, so "fp32" stands for "before" too


class FirstBatches:
    """The first n batches of an ArrayBatches epoch (a throughput sample that costs less than an epoch)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n
        self.rows = source.rows

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return min(self.n, len(self.source))

    def __iter__(self):
        for i, batch in enumerate(self.source):
            if i >= self.n:
                break
            yield batch


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


def train_cfg(cfg, variant: dict, epochs: int):
    keep = {k: v for k, v in variant.items() if k not in ("deterministic", "fill")}
    return cfg.train.model_copy(update={"epochs": epochs, **keep})


def one_epoch_sps(cfg, spec, batches, variant: dict, ckpt: Path) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second of all threads) of one pass of fit over `batches` (a
    fresh model: the variants start alike). On a shared machine the second does not depend on the other jobs."""
    seed_everything(cfg.seed, variant.get("deterministic", True))
    torch.utils.deterministic.fill_uninitialized_memory = variant.get("fill", False)  # what deterministic mode did before
    model = build_model(spec)
    result = fit(model, batches, None, train_cfg(cfg, variant, 1), spec.num_classes, False, ckpt, lambda r: None,
                 torch.device("cpu"), progress=False)
    record = result.history[0]
    return record["samples_per_second"], record["train_samples"] / max(record["cpu_seconds"], 1e-9)


def throughput(cfg, prepared, spec, n_batches: int, rounds: int, ckpt: Path) -> dict:
    batches = FirstBatches(split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=cfg.seed), n_batches)
    wall, cpu = {name: [] for name in VARIANTS}, {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, variant in VARIANTS.items():
            w, c = one_epoch_sps(cfg, spec, batches, variant, ckpt)
            wall[name].append(w)
            cpu[name].append(c)

    def speedup(values, ref):  # the median of the per-round (paired) ratios
        return round(statistics.median(a / b for a, b in zip(values, ref)), 2)
    return {name: {"samples_per_s": round(statistics.median(wall[name]), 1), "speedup": speedup(wall[name], wall[REFERENCE]),
                   "samples_per_cpu_s": round(statistics.median(cpu[name]), 1),
                   "cpu_speedup": speedup(cpu[name], cpu[REFERENCE]), "rounds_wall": wall[name], "rounds_cpu": cpu[name]}
            for name in VARIANTS}


def short_training(cfg, prepared, spec, variant: dict, epochs: int, seed: int,
                   ckpt: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    seed_everything(seed, True)  # the seed sets the initial weights, the data order and the augmentation draws
    model = build_model(spec)
    model.set_norm(prepared.split().get("norm"))
    train = split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=seed)
    val = split_batches(prepared, "val", cfg.train.batch_size)
    t0 = time.perf_counter()
    result = fit(model, train, val, train_cfg(cfg, variant, epochs), spec.num_classes, False, ckpt, lambda r: None,
                 torch.device("cpu"), progress=False, seed=seed)
    wall = time.perf_counter() - t0
    model.load_state_dict(torch.load(ckpt / "best.pt", weights_only=True))
    scores, targets, _ = predict_scores(model.eval(), val, torch.device("cpu"))
    m = score_metrics(scores, targets, spec.num_classes, False)
    epochs_sps = [r["samples_per_second"] for r in result.history]
    return ({"precision": result.precision, "seed": seed, "epochs": epochs, "best_epoch": result.best_epoch,
             "val_accuracy": m["accuracy"], "val_items": len(targets), "wall_seconds": round(wall, 1),
             "median_epoch_samples_per_s": statistics.median(epochs_sps)}, scores, targets)


def summarise(accuracy: list[dict]) -> list[dict]:
    """Mean and sample std of the validation accuracy over seeds, per case and variant."""
    out = []
    for key in dict.fromkeys((a["case"], a["variant"]) for a in accuracy):
        runs = [a for a in accuracy if (a["case"], a["variant"]) == key]
        accs = [a["val_accuracy"] for a in runs]
        out.append({"case": key[0], "variant": key[1], "precision": runs[0]["precision"], "epochs": runs[0]["epochs"],
                    "seeds": len(runs), "val_accuracy": accs, "val_accuracy_mean": float(np.mean(accs)),
                    "val_accuracy_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                    "val_items": runs[0]["val_items"],
                    "median_epoch_samples_per_s": statistics.median(a["median_epoch_samples_per_s"] for a in runs)})
    return out


def fast_vs_fp32(val_arrays: dict, case: str, seeds: int) -> dict:
    """Validation accuracy of "fast" minus "fp32", paired item by item and pooled over the seeds (each seed a
    paired run); the bootstrap resamples validation items with all their seeds, so seeds are not counted as
    independent items."""
    targets = val_arrays[f"{case}/targets"]
    correct = {v: np.concatenate([val_arrays[f"{case}/seed{k}/{v}/scores"].argmax(1) == targets for k in range(seeds)])
               for v in ACCURACY_VARIANTS}
    return paired_difference(correct["fp32"], correct["fast"], groups=np.tile(np.arange(len(targets)), seeds))


def data_path(cfg, prepared, spec, rounds: int, ckpt: Path) -> dict:
    """Store versus in-memory batches, fast path, best of `rounds` interleaved one-epoch runs."""
    store = split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=0)
    sources = {"store": store, "memory": InMemoryBatches(store)}
    best = {name: 0.0 for name in sources}
    for _ in range(rounds):
        for name, batches in sources.items():
            best[name] = max(best[name], one_epoch_sps(cfg, spec, batches, VARIANTS["fast"], ckpt)[0])
    return {"store_samples_per_s": best["store"], "memory_samples_per_s": best["memory"],
            "ratio": round(best["store"] / best["memory"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", default=str(REPO.parent / "shared" / "data" / "fsdd"))
    ap.add_argument("--us8k", default=str(REPO.parent / "shared" / "data" / "urbansound8k_subset"))
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    ap.add_argument("--batches", type=int, default=20, help="training batches per throughput measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the accuracy runs [default: per case]")
    ap.add_argument("--seeds", type=int, default=3, help="accuracy runs per variant (seeds 0..N-1)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    roots = {"fsdd": args.fsdd, "us8k": args.us8k}

    rows, accuracy, data_rows, val_arrays = [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        for case in args.cases.split(","):
            data, files, overrides, epochs = CASES[case]
            cfg = load_config([REPO / f for f in files], [f"data.root={roots[data]}", *overrides])
            prepared = prepare.run(cfg, args.runs_dir, progress=False)
            spec = model_spec(cfg, prepared)
            shape = "x".join(map(str, spec.feature_shape))
            tp = throughput(cfg, prepared, spec, args.batches, args.rounds, ckpt)
            for name, t in tp.items():
                rows.append({"case": case, "input": shape, "variant": name, **t})
                print(f"{case} {name}: {t['samples_per_s']} samples/s (x{t['speedup']}), {t['samples_per_cpu_s']} "
                      f"samples per CPU-s (x{t['cpu_speedup']})", flush=True)
            if case.startswith("fsdd"):
                data_rows.append({"case": case, **data_path(cfg, prepared, spec, args.rounds, ckpt)})
            if args.skip_accuracy:
                continue
            for seed in range(args.seeds):
                for name in ACCURACY_VARIANTS:  # paired: same seed, same initial weights and data order
                    acc, scores, targets = short_training(cfg, prepared, spec, VARIANTS[name], args.epochs or epochs,
                                                          seed, ckpt)
                    accuracy.append({"case": case, "variant": name, **acc})
                    val_arrays[f"{case}/seed{seed}/{name}/scores"], val_arrays[f"{case}/targets"] = scores, targets
                    print(f"{case} {name} seed {seed}: val accuracy {acc['val_accuracy']:.3f} after {acc['epochs']} "
                          f"epochs ({acc['wall_seconds']} s)", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "train", "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpu": platform.processor() or platform.machine(),
              "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__, "throughput": rows,
              "accuracy": accuracy, "accuracy_summary": summarise(accuracy), "data_path": data_rows,
              "fast_vs_fp32": {case: fast_vs_fp32(val_arrays, case, args.seeds)
                               for case in dict.fromkeys(a["case"] for a in accuracy)}}
    (out / "bench_train.json").write_text(json.dumps(result, indent=2) + "\n")
    if val_arrays:
        np.savez_compressed(out / "bench_train_val.npz", **val_arrays)

    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"native bf16: {cpu_has_native_bf16()}")
    print(f"speed-ups against {REFERENCE!r}")
    print("| case | input | variant | samples/s | speed-up | samples per CPU-second | speed-up |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['input']} | {r['variant']} | {r['samples_per_s']:.0f} | {r['speedup']:.2f}x | "
              f"{r['samples_per_cpu_s']:.0f} | {r['cpu_speedup']:.2f}x |")
    if accuracy:
        print("\n| case | variant | precision | epochs | seeds | val accuracy, mean +- std | per seed | val items | "
              "epoch samples/s |\n|---|---|---|---|---|---|---|---|---|")
        for s in summarise(accuracy):
            print(f"| {s['case']} | {s['variant']} | {s['precision']} | {s['epochs']} | {s['seeds']} | "
                  f"{s['val_accuracy_mean']:.3f} +- {s['val_accuracy_std']:.3f} | "
                  f"{', '.join(f'{a:.3f}' for a in s['val_accuracy'])} | {s['val_items']} | {s['median_epoch_samples_per_s']:.0f} |")
        for case, d in result["fast_vs_fp32"].items():
            print(f"{case}: fast - fp32 validation accuracy, paired over {args.seeds} seeds: {format_paired(d)}")
    if data_rows:
        print("\n| case | store samples/s | in-memory samples/s | store / memory |\n|---|---|---|---|")
        for r in data_rows:
            print(f"| {r['case']} | {r['store_samples_per_s']:.0f} | {r['memory_samples_per_s']:.0f} | {r['ratio']:.2f} |")
    print(f"-> {out / 'bench_train.json'}")


if __name__ == "__main__":
    main()
