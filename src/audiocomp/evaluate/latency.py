"""Batch-1 CPU latency, measured: median of repeated timed forward passes after a warm-up."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def cpu_latency(model: nn.Module, example: torch.Tensor, iterations: int = 50, warmup: int = 5,
                threads: int = 1) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    try:
        for _ in range(warmup):
            model(example)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            model(example)
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(previous)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "iterations": iterations, "threads": threads, "batch": int(example.shape[0])}
