#!/usr/bin/env python
"""Overhead of `--executor ray` over the local executor on the 4-job test sweep (tests/test_sweep_executors.py):
tiny CNN, 1 epoch on the seeded synthetic set, two combinations (eval.top_k 1 and 3) sharing a prepare and a
training run, 1 thread per job. Local: 2 processes (`--jobs 2`); Ray: a local cluster of 2 CPUs, 4 tasks
(prepare, train, then the two combinations). Rounds alternate the executors, each in fresh runs directories,
so a noisy neighbour on a shared machine slows both alike; the table shows medians.

Usage: python scripts/bench_sweep.py [--rounds 3] [--out bench-results]
Writes bench-results/bench_sweep.json and prints a table.
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

from audiocomp.datasets.synth import generate
from audiocomp.stages import sweep, sweep_ray

PIPELINE = """stages:
  - {id: data, stage: prepare}
  - {id: fp32, stage: train, from: data}
  - {id: test, stage: eval, from: fp32}
"""
TINY = ["data.dataset=synth", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
        "features.hop_length=128", "features.n_mels=32", "features.workers=1", "model.name=cnn",
        "model.kwargs.channels=[8,16]", "train.epochs=1", "train.batch_size=16", "train.lr=0.003",
        "split.val_fraction=0.2"]


def write_sweep(folder: Path, data: Path) -> Path:
    (folder / "pipeline.yaml").write_text(PIPELINE)
    sets = ", ".join(json.dumps(s) for s in [f"data.root={data}", *TINY])
    path = folder / "sweep.yaml"
    path.write_text(f"pipeline: pipeline.yaml\nset: [{sets}]\ngrid: {{eval.top_k: [1, 3]}}\nresources: {{cpus: 1}}\n")
    return path


def one_round(path: Path, work: Path, i: int) -> dict:
    import ray

    out = {}
    local = sweep.load(path, work / f"local-{i}" / "runs", work / f"local-{i}" / "out")
    t0 = time.perf_counter()
    summary = sweep.run(local, jobs=2, progress=False, quiet=True)
    out["local"] = {"wall_s": time.perf_counter() - t0, "status": summary["status"],
                    "job_seconds": [c["seconds"] for c in summary["combinations"]]}
    on_ray = sweep.load(path, work / f"ray-{i}" / "runs", work / f"ray-{i}" / "out")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    summary = sweep_ray.run(on_ray, progress=False, quiet=True)
    ended = time.perf_counter()
    ray.shutdown()
    out["ray"] = {"wall_s": ended - started, "cluster_start_s": started - t0, "status": summary["status"],
                  "job_seconds": [j.get("seconds") for j in summary["jobs"]]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = generate(work / "synth", per_class=8, duration=1.0, seed=1, progress=False)
        path = write_sweep(work, data)
        load = os.getloadavg()[0]
        rounds = [one_round(path, work, i) for i in range(args.rounds)]
    med = {ex: statistics.median(r[ex]["wall_s"] for r in rounds) for ex in ("local", "ray")}
    start = statistics.median(r["ray"]["cluster_start_s"] for r in rounds)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_1min_at_start": load}, "sweep": "4 jobs: prepare, train, 2 x eval (1 thread each)",
              "rounds": rounds, "median_wall_s": med, "median_ray_cluster_start_s": start,
              "ray_overhead_s": med["ray"] - med["local"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_sweep.json").write_text(json.dumps(result, indent=2))
    print(f"{'executor':10s} {'sweep wall (s)':>15s} {'cluster start (s)':>18s}   statuses")
    print(f"{'local':10s} {med['local']:15.1f} {'-':>18s}   {[r['local']['status'] for r in rounds]}")
    print(f"{'ray':10s} {med['ray']:15.1f} {start:18.1f}   {[r['ray']['status'] for r in rounds]}")
    print(f"ray overhead: {med['ray'] - med['local']:+.1f} s per sweep (+ {start:.1f} s to start a local cluster); "
          f"load {load:.1f} on {os.cpu_count()} cores at start -> {args.out / 'bench_sweep.json'}")


if __name__ == "__main__":
    main()
