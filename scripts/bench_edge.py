#!/usr/bin/env python
"""Bench a list of model runs the same way and print the README table (writes bench-results/edge.json).

For each run: `audiocomp bench` (torch eager, TorchScript, onnxruntime; 1 thread and all cores; fresh-process
memory and cold start), then `audiocomp export --with-frontend` and a fresh `python predict.py` on a 5-s clip
(wall time including start-up, peak memory). Numbers are noisy on a shared machine: re-run on a quiet one.
It measures the runs it is given and chooses nothing (no checkpoint, recipe or threshold).

    python scripts/bench_edge.py demo-output/runs/demo-train [more runs...] --iterations 100
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def five_second_clip(path: Path, sample_rate: int) -> Path:
    """A seeded 5-s test clip (chirp + noise): predict must window it, like a long recording."""
    t = np.arange(5 * sample_rate) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    sf.write(path, y.astype(np.float32), sample_rate)
    return path


def fmt(v, pattern="{:.2f}"):
    return "-" if v is None else pattern.format(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="model run directories (train, prune, quantize)")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()

    from audiocomp.config import load_config
    from audiocomp.evaluate.bench import predict_process
    from audiocomp.models.io import ModelLoadError
    from audiocomp.runs import Run
    from audiocomp.stages import bench, export

    args.out.mkdir(parents=True, exist_ok=True)
    results, lines = [], []
    for ref in args.runs:
        model_run = Run.open(ref)
        runs_dir = model_run.path.parent
        cfg = load_config([], [f"bench.iterations={args.iterations}", "bench.threads=[1,0]",
                               "bench.batch_sizes=[16]"], base=model_run.config_dict())
        m = bench.run(cfg, model_run, runs_dir, force=True, name=f"bench-edge-{model_run.name}").metrics()
        try:
            exp = export.run(model_run.config(), model_run, runs_dir, force=True, with_frontend=True,
                             name=f"export-edge-{model_run.name}")
        except ModelLoadError as exc:  # e.g. an op the ONNX exporter lacks: bench rows only, the reason kept
            print(f"{model_run.name}: no export: {exc}", file=sys.stderr)
            results.append({"run": model_run.name, "bench": m, "export": {"error": str(exc)}})
            exp = None
        if exp is not None:
            clip = five_second_clip(args.out / "clip5s.wav", cfg.features.sample_rate)
            pred = predict_process(exp.path / "deploy", clip)
            results.append({"run": model_run.name, "bench": m, "export": exp.metrics(), "predict_5s": pred})
        fmt_ = m["format"] + (" pruned" if m["pruned"] else "")
        for rt, r in m["runtimes"].items():
            if "unavailable" in r:
                continue
            one, allc = r["threads"]["1"], r["threads"][str(max(m["threads"]))]
            fp = r.get("fresh_process", {})
            lines.append(f"| {model_run.name} | {fmt_} | {rt} | {fmt(one['latency']['median_ms'])} "
                         f"({fmt(one['latency']['p90_ms'])}) | {fmt(one['latency']['iqr_ms'])} | "
                         f"{fmt(allc['latency']['median_ms'])} | {fmt(allc['throughput']['16']['items_per_s'], '{:.0f}')} | "
                         f"{fmt(fp.get('peak_rss_mb'), '{:.0f}')} | {fmt(fp.get('cold_start_s'))} |")
        if exp is None:
            lines.append(f"| {model_run.name} | {fmt_} | ONNX export / predict.py | not exportable (see edge.json) | | | | | |")
        else:
            lines.append(f"| {model_run.name} | {fmt_} | predict.py, 5-s clip ({pred.get('windows')} windows) | "
                         f"wall {fmt(pred.get('wall_s'))} s incl. start-up | | | | {fmt(pred.get('peak_rss_mb'), '{:.0f}')} | |")
    system = results[0]["bench"]["system"] if results else {}
    (args.out / "edge.json").write_text(json.dumps({"system": system, "results": results}, indent=2))
    print(f"{system.get('cpu')}, {system.get('logical_cores')} logical cores, load {system.get('load_average_1m')}; "
          f"all cores = {max(results[0]['bench']['threads']) if results else '-'} threads")
    print("| Run | Format | Runtime | Latency 1 thread, ms median (p90) | IQR ms | Latency all cores, ms | "
          "Throughput all cores, batch 16 (items/s) | Fresh process peak MB | Cold start s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"-> {args.out / 'edge.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
