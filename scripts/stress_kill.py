#!/usr/bin/env python
"""Kill `audiocomp prepare` / `audiocomp train` with SIGKILL at many points and check that nothing finished
is lost, no half-written file is read as valid, and re-running (`--resume` for train) ends with results
identical to an uninterrupted run.

Kill points are of two kinds:
  * exact: AUDIOCOMP_CRASH_AT='<file>:<n>' makes the process SIGKILL itself at the n-th atomic write of
    <file>, after the temp file is complete and before the rename (checkpoints, the feature store's
    items.json, splits.json, manifest.json, model.pt, ...);
  * timed: the whole process group is SIGKILLed after a random delay (during decoding, feature-store
    writes by worker processes, training steps, checkpoint writes).

Usage: python scripts/stress_kill.py [--points 16] [--seed 0] [--out bench-results/stress_kill.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"epoch_seconds", "samples_per_second", "wall_seconds", "cpu_seconds", "train_seconds", "train_cpu_seconds",
               "build_seconds", "seconds"}
TINY = ["data.dataset=synth", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
        "features.hop_length=128", "features.n_mels=32", "model.name=cnn",
        "model.kwargs.channels=[8,16]", "train.epochs=3", "train.batch_size=16", "split.val_fraction=0.2",
        "train.threads=1"]
WORKERS = {"prepare": 2}  # prepare worker processes; the timed kills take them down with the job

EXACT_POINTS = [
    ("prepare", "items.json:1"),      # feature store: array written, metadata being written
    ("prepare", "report.json:1"),     # feature store: one step before completion
    ("prepare", "splits.json:1"),
    ("prepare", "manifest.json:3"),   # finishing (status done)
    ("train", "manifest.json:1"),     # before the run even started
    ("train", "best.pt:1"),           # first checkpoint
    ("train", "last.pt:1"),
    ("train", "last.pt:2"),           # mid-training checkpoint
    ("train", "last.pt:3"),           # last epoch's checkpoint
    ("train", "model.pt:1"),          # final model
    ("train", "metrics.json:1"),
    ("train", "manifest.json:2"),
]


def audiocomp(*args: str, env_extra: dict | None = None, popen: bool = False):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("AUDIOCOMP_CRASH_AT", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "audiocomp", *args]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def stage_args(stage: str, data: Path, runs: Path) -> list[str]:
    sets = [a for s in [f"data.root={data}", f"features.workers={WORKERS['prepare']}", *TINY] for a in ("--set", s)]
    name = "p" if stage == "prepare" else "t"
    extra = ["--from", "p"] if stage == "train" else []
    return [stage, *sets, "--runs-dir", str(runs), "--name", name, "-q", *extra]


def check(result, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


# ------------------------------------------------------------------------------------ what is on disk

def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def final_state(runs: Path) -> dict:
    """What must be identical to the uninterrupted run: store checksum, splits, model tensors, metrics."""
    import torch

    from audiocomp.runs import read_json

    out = {}
    prep = runs / "p"
    store = Path(read_json(prep / "data.json")["store"])
    out["store_checksum"] = (store / "checksum").read_text().split()[0]
    out["splits"] = read_json(prep / "splits.json")
    out["prepare_metrics"] = _strip({k: v for k, v in read_json(prep / "metrics.json").items() if k != "store"})
    if (runs / "t" / "manifest.json").exists():
        state = torch.load(runs / "t" / "model" / "model.pt", weights_only=True)
        out["model"] = {k: v.double().sum().item() for k, v in state.items()}  # summary ...
        out["_tensors"] = state  # ... and exact comparison below
        out["train_metrics"] = _strip(read_json(runs / "t" / "metrics.json"))
        out["status"] = read_json(runs / "t" / "manifest.json")["status"]
    out["prepare_status"] = read_json(prep / "manifest.json")["status"]
    return out


def same(a: dict, b: dict) -> list[str]:
    import torch

    diffs = [k for k in a if not k.startswith("_") and a[k] != b.get(k)]  # e.g. "splits", "train_metrics"
    ta, tb = a.get("_tensors", {}), b.get("_tensors", {})
    if set(ta) != set(tb) or any(not torch.equal(ta[k], tb[k]) for k in ta):
        diffs.append("model tensors")
    return diffs


def audit_after_kill(runs: Path) -> list[str]:
    """Everything a reader can see must be valid: JSON parses, checkpoints load, a store is complete
    and matches its checksum or is still a hidden temp folder that nothing opens."""
    from audiocomp.features.store import COMPLETE, FeatureStore
    from audiocomp.models.io import safe_torch_load
    from audiocomp.runs import read_json

    problems = []
    for path in runs.rglob("*"):
        if any(part.startswith(".") and part != ".store" for part in path.relative_to(runs).parts):
            continue  # temp files/folders and .lock: never opened by a reader
        try:
            if path.suffix == ".json":
                read_json(path)
            elif path.suffix == ".pt":
                safe_torch_load(path)
        except Exception as exc:
            problems.append(f"{path}: {exc}")
    for store in (runs / ".store").glob("*") if (runs / ".store").is_dir() else []:
        if not store.name.startswith("."):
            if not (store / COMPLETE).is_file():
                problems.append(f"{store}: visible but incomplete")
            else:
                try:
                    FeatureStore.open(store).verify()
                except Exception as exc:
                    problems.append(f"{store}: {exc}")
    return problems


# ------------------------------------------------------------------------------------------- points

def run_point(stage: str, spec: str, data: Path, work: Path, reference: dict) -> dict:
    """One kill at (stage, spec): spec is 'file:n' (exact) or 't=SECONDS' (timed)."""
    runs = work / "runs"
    shutil.rmtree(work, ignore_errors=True)
    if stage == "train":  # start from the reference's finished prepare run (it reads the store only)
        shutil.copytree(reference["_runs"], runs, ignore=lambda d, names: ["t"] if Path(d) == reference["_runs"] else [])
    args = stage_args(stage, data, runs)
    t0 = time.perf_counter()
    if spec.startswith("t="):
        proc = audiocomp(*args, popen=True)
        try:
            proc.wait(timeout=float(spec[2:]))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole job: main process and its workers
            proc.wait()
        rc = proc.returncode
    else:
        rc = audiocomp(*args, env_extra={"AUDIOCOMP_CRASH_AT": spec}).returncode
    killed = rc == -signal.SIGKILL
    problems = audit_after_kill(runs)
    # continue the way a user would: prepare is simply run again, train is resumed if it had started
    if stage == "train" and (runs / "t" / "manifest.json").exists():
        resumed = audiocomp("train", "--resume", "t", "--runs-dir", str(runs), "-q")
    else:
        resumed = audiocomp(*args)
    check(resumed, f"continuing after kill at {stage} {spec}")
    state = final_state(runs)
    if stage == "prepare":  # only the prepare outputs are compared (training on them is the train points' job)
        reference = {k: v for k, v in reference.items() if k in state}
    diffs = same(state, reference)
    return {"stage": stage, "point": spec, "killed": killed, "exit_code": rc, "seconds": round(time.perf_counter() - t0, 1),
            "invalid_after_kill": problems, "differences": diffs,
            "ok": not problems and not diffs}


def reference_run(data: Path, work: Path) -> tuple[dict, dict]:
    runs = work / "runs"
    shutil.rmtree(work, ignore_errors=True)
    times = {}
    for stage in ("prepare", "train"):
        t0 = time.perf_counter()
        check(audiocomp(*stage_args(stage, data, runs)), f"reference {stage}")
        times[stage] = time.perf_counter() - t0
    return {**final_state(runs), "_runs": runs}, times


def run_points(n_points: int, seed: int, workdir: Path, workers: int = 2,
               points: list[tuple[str, str]] | None = None) -> dict:
    """Kill at `points` (default: `n_points` of EXACT_POINTS then timed ones) and compare each outcome."""
    sys.path.insert(0, str(ROOT / "src"))
    from audiocomp.datasets.synth import generate

    WORKERS["prepare"] = workers
    data = generate(workdir / "data", per_class=6, duration=1.0, seed=seed, progress=False)
    reference, times = reference_run(data, workdir / "reference")
    rng = random.Random(seed)
    if points is None:
        points = EXACT_POINTS[:n_points]
        for _ in range(max(0, n_points - len(EXACT_POINTS))):  # the rest: timed kills at random moments
            stage = ("prepare", "train")[len(points) % 2]
            points.append((stage, f"t={rng.uniform(0.3, 0.8) * times[stage]:.2f}"))  # while it surely runs
    results = [run_point(stage, spec, data, workdir / f"point{i}", reference) for i, (stage, spec) in enumerate(points)]
    return {"points": len(results), "killed": sum(r["killed"] for r in results),
            "identical": sum(r["ok"] for r in results), "reference_seconds": {k: round(v, 1) for k, v in times.items()},
            "results": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=16, help="kill points (the first 12 exact, the rest timed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="prepare worker processes (killed with the job)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "stress_kill.json")
    ap.add_argument("--keep", action="store_true", help="keep the work folder for inspection")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="stress-kill-"))
    try:
        summary = run_points(args.points, args.seed, work, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'stage':8s} {'kill point':16s} {'killed':6s} {'identical':9s} seconds")
    for r in summary["results"]:
        print(f"{r['stage']:8s} {r['point']:16s} {str(r['killed']):6s} {str(r['ok']):9s} {r['seconds']}"
              + (f"  {r['invalid_after_kill'] + r['differences']}" if not r["ok"] else ""))
    print(f"{summary['identical']}/{summary['points']} kill points ended identical to the uninterrupted run "
          f"({summary['killed']} actually killed mid-run) -> {args.out}")
    return 0 if summary["identical"] == summary["points"] else 1


if __name__ == "__main__":
    sys.exit(main())
