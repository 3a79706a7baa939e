"""Rebuilding a quantized model folder in a fresh process, registered with models.load_model (LOADERS)."""
from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from ...models.base import ModelSpec, build_model
from ...models.io import LOADERS, ModelLoadError, safe_torch_load
from .. import torch_ao
from .onnx_quantizers import OnnxModel
from .registry import example
from .torch_quantizers import fp16_runtime


@LOADERS.register("quantize")
def load_quantized(spec: ModelSpec, folder: Path | str) -> nn.Module:
    """Rebuild the model a quantize step saved: float architecture (pruned shapes included) + the recipe,
    then tensors loaded with weights_only; or an ONNX Runtime session."""
    step = spec.compression[-1]
    path = Path(folder) / step["artifact"]
    if not path.is_file():
        raise ModelLoadError(f"{path}: not found (named by {Path(folder) / 'arch.json'})")
    if step["backend"] == "onnxruntime":
        return OnnxModel(path).eval()
    model = build_model(spec).eval()
    with warnings.catch_warnings():  # TypedStorage deprecation raised inside torch for quantized tensors
        warnings.simplefilter("ignore")
        state = safe_torch_load(path)
    if step["method"] == "fp16":
        compute = step.get("compute", "float32")
        return fp16_runtime(model, state, compute).eval()
    model = torch_ao.rebuild(model, step, example(spec))
    problem = torch_ao.load_state_dict(model, state)
    if problem:
        raise ModelLoadError(f"{path}: does not match {Path(folder) / 'arch.json'} ({problem})")
    return model.eval()
