"""Feature extraction throughput: cold and warm `prepare` versus a plain one-process librosa loop.

    python scripts/bench_features.py [--fsdd ../shared/data/fsdd] [--synth-files 600] [--workers N]

Both sides do the same work per file: decode, resample to 22,050 Hz, pad/crop to 5 s, 128-band log-mel
(n_fft 2048, hop 512, top_db 80). The librosa loop is `librosa.load(sr=22050)` + `fix_length` +
`melspectrogram` + `power_to_db` in its own fresh process with one BLAS/OpenMP thread (its fastest setting
on a shared machine), timed after one warm-up call (numba compilation).
A cold prepare starts from an empty runs folder (worker start-up included); a warm prepare asks for the
same features again under a new run name, so it reads the feature store and recomputes splits and
normalisation statistics. Writes bench-results/features.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from audiocomp.config import load_config  # noqa: E402
from audiocomp.datasets import load_index  # noqa: E402
from audiocomp.stages import prepare  # noqa: E402


def synth_clips(root: Path, n: int, sr: int = 44100, seconds: float = 5.0) -> Path:
    """n clips of `seconds` at `sr` in 10 class folders (tones in noise), for the `folder` adapter."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    for i in range(n):
        cls = root / f"class{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        y = 0.3 * np.sin(2 * np.pi * (200 + 100 * (i % 10)) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(str(cls / f"clip{i:04d}.wav"), y.astype(np.float32), sr, subtype="PCM_16")
    return root


def librosa_loop(paths: list[Path], sr: int = 22050, seconds: float = 5.0) -> float:
    import librosa

    def one(p):
        y, _ = librosa.load(str(p), sr=sr)
        y = librosa.util.fix_length(y, size=int(sr * seconds))
        return librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128),
                                   ref=1.0, top_db=80.0)

    one(paths[0])  # numba JIT and lazy imports are not counted against librosa
    t0 = time.perf_counter()
    for p in paths:
        one(p)
    return time.perf_counter() - t0


def librosa_seconds(paths: list[Path]) -> float:
    """Run `librosa_loop` in a fresh single-threaded process, where torch's thread pools cannot interfere."""
    import subprocess

    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(map(str, paths)))
    try:
        out = subprocess.run([sys.executable, __file__, "--librosa-loop", fh.name], env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        os.unlink(fh.name)
    return float(out.strip().splitlines()[-1])


def bench(name: str, overrides: list[str], workers: int, limit: int | None) -> dict:
    sets = overrides + ["split.kind=holdout", "features.normalize=per_bin"] + ([f"data.max_items={limit}"] if limit else [])
    cfg = load_config([], sets)
    index = load_index(cfg.data)
    n = min(len(index.items), limit or len(index.items))
    paths = [index.abspath(it) for it in index.items][:n]
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        prepare.run(cfg, runs, name="cold", workers=workers, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare.run(cfg, runs, name="warm", workers=workers, progress=False)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare.run(cfg, runs, name="warm", workers=workers, progress=False)
        reuse = time.perf_counter() - t0
    lib = librosa_seconds(paths)
    row = {"dataset": name, "files": n, "workers": workers, "librosa_files_per_s": n / lib,
           "cold_files_per_s": n / cold, "warm_files_per_s": n / warm, "rerun_files_per_s": n / reuse,
           "cold_speedup": lib / cold, "warm_speedup": lib / warm, "rerun_speedup": lib / reuse,
           "seconds": {"librosa": lib, "cold": cold, "warm": warm, "rerun": reuse}}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=Path(os.environ.get("AUDIOCOMP_FSDD", REPO.parent / "shared" / "data" / "fsdd")))
    ap.add_argument("--synth-files", type=int, default=600)
    ap.add_argument("--limit", type=int, default=None, help="at most this many FSDD files")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--librosa-loop", type=Path, help=argparse.SUPPRESS)  # internal: time the loop, print seconds
    ap.add_argument("--out", type=Path, default=REPO / "bench-results" / "features.json")
    args = ap.parse_args()
    if args.librosa_loop:
        print(librosa_loop([Path(p) for p in args.librosa_loop.read_text().splitlines()]))
        return
    rows = []
    if (args.fsdd / "recordings").is_dir():
        rows.append(bench("fsdd (8 kHz, <1 s)", [f"data.root={args.fsdd}", "data.dataset=fsdd"], args.workers, args.limit))
    else:
        print(f"FSDD not found at {args.fsdd}; skipped")
    with tempfile.TemporaryDirectory() as tmp:
        root = synth_clips(Path(tmp) / "clips", args.synth_files)
        rows.append(bench("synthetic 5 s @ 44.1 kHz", [f"data.root={root}", "data.dataset=folder"], args.workers, None))
    result = {"benchmark": "features", "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| dataset | files | librosa loop | cold prepare ({args.workers} workers) | warm prepare (store hit) "
          "| re-run prepare |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['files']} | {r['librosa_files_per_s']:.0f} files/s | "
              f"{r['cold_files_per_s']:.0f} files/s ({r['cold_speedup']:.1f}x) | "
              f"{r['warm_files_per_s']:.0f} files/s ({r['warm_speedup']:.0f}x) | "
              f"{r['rerun_files_per_s']:.0f} files/s ({r['rerun_speedup']:.0f}x) |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
