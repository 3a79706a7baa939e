#!/usr/bin/env python
"""Measure a bundle as a device runs it, on this machine: `predict.py --stream` fed real speech as raw PCM (real-
time factor = processing time / audio time, per-window latency) with 1 thread and with all cores, at the
model's rate and at 16 kHz (resampled); a fresh `predict.py` process on one clip (peak memory, cold start);
the bundle's file sizes. Writes JSON and prints the README table. Numbers are this machine's, not a device's.

    python scripts/bench_stream.py BUNDLE --audio ../shared/data/fsdd/recordings --seconds 60 --out bench-results/stream.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiocomp.evaluate.bench import predict_process
from audiocomp.runs import atomic_write_json


def speech(audio: Path, rate: int, seconds: float) -> np.ndarray:
    """Real recordings back to back (sorted, mono, resampled to `rate`) up to `seconds`: int16 samples."""
    files = sorted(audio.rglob("*.wav")) if audio.is_dir() else [audio]
    parts, n = [], 0
    for f in files:
        y, sr = sf.read(f, dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        y = soxr.resample(y, sr, rate, quality="HQ") if sr != rate else y
        parts.append(y)
        n += len(y)
        if n >= seconds * rate:
            break
    y = np.concatenate(parts)[:int(seconds * rate)]
    return np.clip(np.round(y * 32768), -32768, 32767).astype("<i2")


def stream(bundle: Path, pcm: np.ndarray, rate: int, threads: int, hop: float) -> dict:
    """One fresh `predict.py --stream` process fed the whole PCM at once (as fast as it reads)."""
    out = subprocess.run([sys.executable, str(bundle / "predict.py"), str(bundle), "--stream", "--json", "--rate",
                          str(rate), "--threads", str(threads), "--hop", str(hop)], input=pcm.tobytes(),
                         capture_output=True, check=True)
    ms = [json.loads(line)["ms"] for line in out.stdout.decode().splitlines()]
    summary = json.loads(out.stderr.decode().strip().splitlines()[-1])["summary"]
    return {**summary, "window_ms_median": statistics.median(ms), "window_ms_p90": float(np.percentile(ms, 90)),
            "window_ms_max": max(ms)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path, help="an exported folder (audiocomp export --target ...)")
    ap.add_argument("--audio", type=Path, required=True, help="a folder of .wav recordings, or one file")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio fed to each stream")
    ap.add_argument("--hop", type=float, help="seconds between windows [default: half the model's window]")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (the median is kept)")
    ap.add_argument("--out", type=Path, default=Path("bench-results/stream.json"))
    args = ap.parse_args()

    prep = json.loads((args.bundle / "preprocessing.json").read_text())
    hop = args.hop or prep["duration"] / 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    for rate in sorted({prep["sample_rate"], 16000}):
        pcm = speech(args.audio, rate, args.seconds)
        for threads in (1, cores):
            runs = [stream(args.bundle, pcm, rate, threads, hop) for _ in range(args.repeats)]
            best = sorted(runs, key=lambda r: r["real_time_factor"])[len(runs) // 2]  # the median run
            rows.append({"rate": rate, "threads": threads, **best,
                         "real_time_factor_all": [r["real_time_factor"] for r in runs]})
    clip = args.out.with_suffix(".clip.wav")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(clip, speech(args.audio, prep["sample_rate"], 1.0), prep["sample_rate"], subtype="PCM_16")
    fresh = [predict_process(args.bundle, clip) for _ in range(args.repeats)]
    fresh_med = {k: statistics.median(f[k] for f in fresh) for k in ("wall_s", "peak_rss_mb")}
    files = {p.name: p.stat().st_size for p in sorted(args.bundle.iterdir()) if p.is_file()}
    result = {"bundle": str(args.bundle), "machine": platform.processor() or platform.machine(), "cores": cores,
              "load_average": os.getloadavg(), "seconds": args.seconds, "hop_s": hop, "stream": rows,
              "fresh_process": {**fresh_med, "runs": fresh}, "files": files,
              "note": "measured on this machine (not a device); the stream is fed as fast as it is read"}
    atomic_write_json(args.out, result)

    print(f"{args.bundle}: {args.seconds:.0f} s of speech, {prep['duration']} s windows every {hop} s; "
          f"{cores} cores, load average {result['load_average'][0]:.1f}")
    print("| Input | Threads | Windows | Real-time factor (median of runs) | Window ms median | p90 | max |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate']} Hz{' (resampled)' if r['rate'] != prep['sample_rate'] else ''} | {r['threads']} | "
              f"{r['windows']} | {r['real_time_factor']:.4f} | {r['window_ms_median']:.2f} | "
              f"{r['window_ms_p90']:.2f} | {r['window_ms_max']:.2f} |")
    print(f"fresh `python predict.py BUNDLE clip.wav`: {fresh_med['wall_s']:.2f} s to the answer (start-up included), "
          f"peak {fresh_med['peak_rss_mb']:.0f} MB; files: "
          + ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in files.items()))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
