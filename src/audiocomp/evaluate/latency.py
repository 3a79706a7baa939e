"""The one timer: repeated timed calls after a warm-up, summarised one way (median, p90, p99 and the spread),
for bench's runtimes and for the batch-1 latencies prune and quantize report."""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_calls(fn: Callable[[], object], warmup: int, iterations: int) -> list[float]:
    """Seconds of each of `iterations` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spread(seconds: list[float]) -> dict:
    """Summary in milliseconds: median, p90, p99 and the spread (IQR, min/max, coefficient of variation)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    q1, q3 = np.percentile(ms, [25, 75])
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "iqr_ms": float(q3 - q1),
            "cv": float(ms.std() / ms.mean()) if ms.mean() > 0 else 0.0, "n": int(len(ms))}


@torch.no_grad()
def cpu_latency(model: nn.Module, example: torch.Tensor, iterations: int = 50, warmup: int = 5,
                threads: int = 1) -> dict:
    """Latency of `model` on `example` (batch 1 gives the batch-1 latency) with `threads` CPU threads."""
    model.eval()
    with torch_threads(threads):
        seconds = time_calls(lambda: model(example), warmup, iterations)
    return {**spread(seconds), "iterations": iterations, "threads": threads, "batch": int(example.shape[0])}


def batch1_latency_ms(model: nn.Module, feature_shape, runs: int, warmup: int = 5) -> float:
    """Median wall time (ms) of one forward pass on a batch of 1, with one CPU thread."""
    return round(cpu_latency(model, torch.randn(1, *feature_shape), runs, warmup, threads=1)["median_ms"], 4)
