"""`audiocomp bench`: edge-style measurements of a model run on this machine, for every runtime that can
run it (torch eager, TorchScript, onnxruntime) and every thread count; writes metrics.json."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..compress.onnx import model_onnx, run_session, session
from ..config import Config
from ..evaluate.agreement import onnx_quantized, verify
from ..evaluate.bench import DEVICE_PROFILES, fresh_process, measure, system_info
from ..evaluate.facts import format_facts
from ..evaluate.latency import torch_threads
from ..features.prepared import check_rows
from ..runs import Run, atomic_path, atomic_save_npy
from .context import StageContext, open_stage

CHECK_ITEMS = 64


def onnx_artifact(folder: Path, spec) -> Optional[Path]:
    step = spec.compression[-1] if spec.compression else {}
    path = folder / step["artifact"] if step.get("artifact") else None
    return path if path is not None and path.suffix == ".onnx" and path.is_file() else None


def real_items(ctx: StageContext, feature_shape, n: int = CHECK_ITEMS) -> tuple[np.ndarray, str]:
    """Stored validation (else training) items, never test ones; random ones if the data is gone. The first
    is the benchmark input, all of them check the ONNX graph."""
    try:
        rows = np.asarray(check_rows(ctx.data, n))
        items, source = ctx.data.store.features[rows], "first validation (else training) item of the store"
    except Exception:
        items, source = np.random.default_rng(0).standard_normal((n, *feature_shape)), "random (store missing)"
    return np.asarray(items, dtype=np.float32), source


def prepare_runtime(name: str, model, spec, folder: Path, work: Path, items: np.ndarray, reference):
    """(artifact path for the fresh-process probe, maker(threads) -> call(x) -> outputs); raises if the
    runtime cannot run this model or its ONNX graph disagrees with `reference` (the model itself, or the
    float parent of an INT8 graph) on `items`."""
    item = items[0]
    artifact = onnx_artifact(folder, spec)
    if artifact is not None and name != "onnxruntime":
        raise RuntimeError("the model is an ONNX artifact; only onnxruntime runs it natively")
    if name == "torch":
        def make(threads: int) -> Callable:
            def call(x):
                with torch.no_grad(), torch_threads(threads):
                    return model(torch.from_numpy(x))
            return call
        return folder, make
    if name == "torchscript":
        example = torch.from_numpy(item[None])
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
            if not torch.allclose(traced(example), model(example), atol=1e-4):
                raise RuntimeError("traced model disagrees with eager")
        with atomic_path(work / "model.ts.pt") as tmp:
            torch.jit.save(traced, str(tmp))

        def make(threads: int) -> Callable:
            def call(x):
                with torch.no_grad(), torch_threads(threads):
                    return traced(torch.from_numpy(x))
            return call
        return work / "model.ts.pt", make
    path = work / "model.onnx"
    model_onnx(model, spec, folder, path)  # the artifact itself, or the exported float graph
    with torch.no_grad():
        expected = reference(torch.from_numpy(items)).numpy()
    _, problem = verify(run_session(session(path), items), expected, int8=onnx_quantized(spec))
    if problem:
        raise RuntimeError(f"the ONNX graph {problem}")

    def make(threads: int) -> Callable:
        sess = session(path, threads=threads)
        return lambda x: run_session(sess, x)
    return path, make


def headline(results: dict) -> dict:
    """The fastest runtime at 1 thread, with its spread and fresh-process numbers (the report's columns)."""
    best = None
    for name, r in results.items():
        lat = r.get("threads", {}).get("1", {}).get("latency")
        if lat and (best is None or lat["median_ms"] < best[1]["median_ms"]):
            best = (name, lat)
    if best is None:
        return {}
    name, lat = best
    fresh = results[name].get("fresh_process", {})
    return {"runtime": name, "threads": 1, "latency_ms": lat["median_ms"], "latency_p90_ms": lat["p90_ms"],
            "latency_p99_ms": lat["p99_ms"], "latency_iqr_ms": lat["iqr_ms"], "latency_cv": lat["cv"],
            "peak_rss_mb": fresh.get("peak_rss_mb"), "cold_start_s": fresh.get("cold_start_s")}


def run(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
        force: bool = False, progress: bool = True) -> Run:
    b = cfg.bench
    profile = DEVICE_PROFILES.get(b.device_profile) if b.device_profile else None
    threads = profile["threads"] if profile else b.threads
    batch_sizes = profile["batch_sizes"] if profile else b.batch_sizes
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = sorted({t if t > 0 else cores for t in threads})
    with open_stage("bench", cfg, [model_run], runs_dir, name=name, force=force, progress=progress,
                    data=False) as ctx:
        run = ctx.run
        folder = model_run.path / "model"
        model, spec = ctx.parent_model()
        items, item_source = real_items(ctx, spec.feature_shape)
        item = items[0]
        atomic_save_npy(run.path / "input.npy", item)
        reference = ctx.reference(model, spec)
        results: dict = {}
        jobs = [(rt, t) for rt in b.runtimes for t in threads]
        bar = tqdm(total=len(jobs), desc="bench", unit="setting", disable=not progress)
        for rt in b.runtimes:
            try:
                artifact, make = prepare_runtime(rt, model, spec, folder, run.path, items, reference)
            except Exception as exc:
                results[rt] = {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                bar.update(len(threads))
                continue
            results[rt] = {"threads": {}}
            for t in threads:
                results[rt]["threads"][str(t)] = measure(make(t), item, batch_sizes, b.warmup, b.iterations)
                bar.update(1)
            if b.fresh_process:
                results[rt]["fresh_process"] = fresh_process(rt, artifact, run.path / "input.npy", 1)
        bar.close()
        metrics = {"model_run": model_run.name, "model": spec.name, **format_facts(spec),
                   "input_shape": [1, *spec.feature_shape], "input": item_source, "threads": threads,
                   "batch_sizes": batch_sizes, "warmup": b.warmup, "iterations": b.iterations,
                   "system": system_info(), "runtimes": results, "headline": headline(results),
                   "device_profile": None if profile is None else {
                       "name": b.device_profile, **profile,
                       "disclaimer": "presets only set thread counts and batch sizes; every number was measured on "
                                     "this machine, not on the device"}}
        if any(t > cores for t in threads):
            metrics["warning"] = f"thread counts above this machine's {cores} cores oversubscribe it"
        ctx.write_metrics(metrics)
    return run
