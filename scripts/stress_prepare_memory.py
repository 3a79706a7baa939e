#!/usr/bin/env python
"""Peak memory of `audiocomp prepare` on many small synthetic clips: the feature store is streamed to a
memory-mapped file, so peak RSS (the main process plus its worker processes) must not grow with the
number of clips. Prepares N=1,000 and N=10,000 clips and reports both against a stated bound.

Usage: python scripts/stress_prepare_memory.py [--sizes 1000 10000] [--workers 2] [--bound-mb 2500]
Writes bench-results/stress_prepare_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants (workers are separate processes)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def prepare_peak(data: Path, runs: Path, workers: int) -> dict:
    sets = [f"data.root={data}", "data.dataset=synth", "features.sample_rate=8000", "features.duration=0.5",
            "features.n_fft=256", "features.hop_length=128", "features.n_mels=32", f"features.workers={workers}"]
    cmd = [sys.executable, "-m", "audiocomp", "prepare", *[a for s in sets for a in ("--set", s)],
           "--runs-dir", str(runs), "--name", "p", "-q"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak, main_peak, samples = psutil.Process(proc.pid), 0, 0, 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(ps))
            main_peak = max(main_peak, ps.memory_info().rss)
            samples += 1
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"prepare failed: {err.strip()[-500:]}")
    return {"peak_rss_mb": round(peak / 2 ** 20, 1), "main_process_peak_rss_mb": round(main_peak / 2 ** 20, 1),
            "seconds": round(time.perf_counter() - t0, 1), "rss_samples": samples, "output": out.strip()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bound-mb", type=float, default=2500.0,
                    help="stated bound on peak RSS of prepare and its workers together")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "stress_prepare_memory.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from audiocomp.datasets.synth import generate

    results = []
    work = Path(tempfile.mkdtemp(prefix="stress-mem-"))
    try:
        for n in args.sizes:
            data = work / f"data{n}"
            t0 = time.perf_counter()
            generate(data, per_class=n // CLASSES, duration=0.5, seed=0, progress=False)
            gen = time.perf_counter() - t0
            r = prepare_peak(data, work / f"runs{n}", args.workers)
            r.update({"clips": n, "generate_seconds": round(gen, 1), "workers": args.workers})
            results.append(r)
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = all(r["peak_rss_mb"] <= args.bound_mb for r in results)
    summary = {"bound_mb": args.bound_mb, "within_bound": ok, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'clips':>7s} {'peak RSS (all processes)':>26s} {'main process':>13s} {'seconds':>8s}")
    for r in results:
        print(f"{r['clips']:7d} {r['peak_rss_mb']:23.0f} MB {r['main_process_peak_rss_mb']:10.0f} MB {r['seconds']:8.1f}")
    print(f"bound {args.bound_mb:.0f} MB: {'within' if ok else 'EXCEEDED'} -> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
