"""Batch-1 CPU latency, measured: median of repeated timed forward passes after a warm-up."""
from __future__ import annotations

import contextlib
import statistics

import torch
from torch import nn

from .bench import time_calls


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def cpu_latency(model: nn.Module, example: torch.Tensor, iterations: int = 50, warmup: int = 5,
                threads: int = 1) -> dict:
    model.eval()
    with torch_threads(threads):
        times = sorted(t * 1e3 for t in time_calls(lambda: model(example), warmup, iterations))
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "iterations": iterations, "threads": threads, "batch": int(example.shape[0])}
