"""Where and how training computes: the device, the autocast precision, memory format, and the random state
(seeded, with deterministic kernels, or with the quantized kernels' nondeterminism allowed)."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn

from ..config import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r}: not a device (auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine (use auto or cpu)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device={name}: MPS is not available on this machine (use auto or cpu)")
    return device


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: oneDNN then runs bfloat16 convolutions, matmuls and LSTMs in hardware (elsewhere
    bf16 is emulated and slower than float32)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`train.precision` -> "fp32", "bf16" or "fp16" for this device."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision=fp16: float16 autocast needs CUDA, not {device.type} (use bf16 or fp32)")
    return precision


def uses_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also fills every new tensor with NaN to expose kernels that read uninitialised
        # memory: about 10% of a CPU training step of the CNN (scripts/bench_train.py); no kernel here reads
        # it, and the exact-resume tests run with the fill off
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def nondeterminism_allowed():
    """Quantized CPU kernels flag themselves non-deterministic (they resize their outputs), which floods
    stderr when an earlier stage in the process turned deterministic mode on; restore it afterwards."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)

