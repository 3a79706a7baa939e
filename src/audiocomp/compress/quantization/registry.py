"""Quantization behind one interface: one registered function per backend and method.

    model_q, step, report = quantize(model, spec, calibration, cfg, folder)

`QUANTIZERS["<backend>:<method>"]` holds one function per method (torch_quantizers.py: dynamic, fp16,
static, qat; onnx_quantizers.py: ONNX Runtime dynamic, static). `step` is the recipe entry saved in
arch.json; `folder` receives the artifact (`model.pt` with quantized tensors, or `model.onnx`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ...config import ConfigError, DistillConfig, QuantizeConfig
from ...models.base import ModelSpec
from ...registry import Registry
from .. import torch_ao

FORMATS = {"torch:dynamic": "int8-dynamic", "torch:fp16": "fp16", "torch:static": "int8-static",
           "torch:qat": "int8-qat", "onnxruntime:dynamic": "onnx-int8-dynamic",
           "onnxruntime:static": "onnx-int8-static"}
CALIBRATION = {"torch": torch_ao.OBSERVERS, "onnxruntime": ("minmax", "entropy", "percentile")}


@dataclass
class Context:
    spec: ModelSpec
    cfg: QuantizeConfig
    calibration: list  # (x, y) batches of the training split, never test
    folder: Path  # receives the artifact
    train_batches: Optional[object] = None  # QAT fine-tuning data (training split)
    progress: bool = False
    teacher: Optional[nn.Module] = None  # QAT: distilled from this model (the float parent) when distill.enabled
    distill: Optional[DistillConfig] = None
    report: dict = field(default_factory=dict)  # extra facts a quantizer wants in metrics.json


QUANTIZERS: Registry[Callable[[nn.Module, Context], tuple[nn.Module, dict]]] = Registry("quantizer")


def check_options(cfg: QuantizeConfig) -> None:
    """Reject combinations that exist in the config schema but not in the chosen backend."""
    key = f"{cfg.backend}:{cfg.method}"
    if key not in QUANTIZERS:
        methods = [k.split(":")[1] for k in QUANTIZERS.names() if k.startswith(cfg.backend + ":")]
        raise ConfigError(f"quantize.method={cfg.method}: not available with quantize.backend={cfg.backend} "
                          f"(allowed: {', '.join(methods)})")
    if cfg.calibration != "auto" and cfg.calibration not in CALIBRATION[cfg.backend]:
        raise ConfigError(f"quantize.calibration={cfg.calibration}: not available with quantize.backend="
                          f"{cfg.backend} (allowed: auto, {', '.join(CALIBRATION[cfg.backend])})")


def quantize(model: nn.Module, spec: ModelSpec, calibration: list, cfg: QuantizeConfig, folder: Path | str,
             train_batches=None, progress: bool = False, teacher: Optional[nn.Module] = None,
             distill: Optional[DistillConfig] = None) -> tuple[nn.Module, dict, dict]:
    """Quantize a float AudioClassifier; writes the artifact into `folder`. Returns (model, step, report).
    QAT fine-tuning is distilled from `teacher` when `distill.enabled`."""
    check_options(cfg)
    key = f"{cfg.backend}:{cfg.method}"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(spec, cfg, calibration, folder, train_batches, progress, teacher, distill)
    qmodel, step = QUANTIZERS.get(key)(copy.deepcopy(model).eval(), ctx)
    step = {"stage": "quantize", "method": cfg.method, "backend": cfg.backend, "format": FORMATS[key], **step}
    return qmodel.eval(), step, ctx.report


def example(spec: ModelSpec, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *spec.feature_shape)


def keep_float_layers(model: nn.Module, cfg: QuantizeConfig) -> list[str]:
    first_last = torch_ao.first_last_layers(model.backbone)
    keep = {"first": first_last[:1], "last": first_last[1:]}
    return sorted({n for which in cfg.keep_float for n in keep[which]})
