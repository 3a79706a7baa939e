"""What quantization did, measured: per-layer SQNR against the float model, and the share of parameters
stored in the low-precision format."""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from ...evaluate.counts import parameter_counts
from .. import torch_ao
from .torch_quantizers import ComputeAs


def _as_float(out) -> Optional[torch.Tensor]:
    if isinstance(out, tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        return None
    return (out.dequantize() if out.is_quantized else out).float()


def sqnr_db(signal: float, noise: float) -> Optional[float]:
    """10 log10(signal power / error power); None when the error is exactly zero."""
    return None if noise == 0 else round(10 * math.log10(max(signal, 1e-30) / noise), 2)


@torch.no_grad()
def layer_sqnr(reference: nn.Module, quantized: nn.Module, batches: list, names: list[str]) -> dict:
    """SQNR (dB) of each named layer's output, quantized against float, over the calibration batches,
    plus the logits ("output"). Errors accumulate along the network, so a sudden drop marks the culprit."""
    power: dict[str, list[float]] = {n: [0.0, 0.0] for n in [*names, "output"]}
    outs: dict[str, dict] = {"ref": {}, "q": {}}
    hooks = []
    for side, net in (("ref", reference), ("q", quantized)):
        for name in names:
            mod = net.get_submodule(name)
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, side=side, name=name: outs[side].__setitem__(name, _as_float(o))))
    try:
        for x, _ in batches:
            outs["ref"]["output"], outs["q"]["output"] = reference(x).float(), quantized(x).float()
            for name in power:
                r, q = outs["ref"].get(name), outs["q"].get(name)
                if r is not None and q is not None and r.shape == q.shape:
                    power[name][0] += float((r ** 2).sum())
                    power[name][1] += float(((r - q) ** 2).sum())
    finally:
        for h in hooks:
            h.remove()
    return {name: sqnr_db(*p) for name, p in power.items() if p != [0.0, 0.0]}


def quantized_layers(qmodel: nn.Module) -> dict[str, str]:
    """Layer name -> quantized module type, for torch-quantized models."""
    layers: dict[str, str] = {}
    for name, m in qmodel.named_modules():
        inside = any(name.startswith(f"{outer}.") for outer in layers)  # packed-weight holders of a layer
        if torch_ao.is_quantized_module(m) and not inside and \
                not isinstance(m, (torch.ao.nn.quantized.Quantize, torch.ao.nn.quantized.DeQuantize)):
            layers[name] = type(m).__name__
    return layers


def coverage(float_model: nn.Module, qmodel: nn.Module, step: dict, report: dict) -> dict:
    """Share of the float model's parameters stored in the low-precision format, measured."""
    total = parameter_counts(float_model)["parameters"]
    if step["backend"] == "onnxruntime":
        covered = min(report.get("onnx_quantized_elements", 0), total)
        layers: dict = {}
    elif step["method"] == "fp16":
        covered, layers = total, {n: type(m).__name__ for n, m in float_model.named_modules()
                                  if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM))}
    else:
        layers = quantized_layers(qmodel)
        qmods = dict(qmodel.named_modules())
        covered = 0
        for name, m in float_model.named_modules():
            own = sum(p.numel() for p in m.parameters(recurse=False))
            q = qmods.get(name)
            if own and (q is None or torch_ao.is_quantized_module(q)):  # quantized, or folded into one
                covered += own
    out = {"parameters_total": total, "parameters_covered": int(covered),
           "covered_share": round(covered / max(total, 1), 4), "quantized_layers": layers}
    if step["method"] == "dynamic" and out["covered_share"] < 0.5:
        out["note"] = (f"dynamic quantization covers only Linear/LSTM layers ({out['covered_share']:.0%} of the "
                       "parameters); convolutions stay float32: use static INT8 for a CNN")
    return out


def sqnr_report(float_model: nn.Module, qmodel: nn.Module, step: dict, batches: list) -> dict:
    """Per-layer SQNR on the calibration batches, against the matching float reference."""
    if step["backend"] == "onnxruntime":
        return layer_sqnr(float_model, qmodel, batches, [])
    if step["method"] == "fp16":
        if isinstance(qmodel, ComputeAs):  # FP16/BF16 compute: layer names sit one level down; logits only
            return layer_sqnr(float_model, qmodel, batches, [])
        names = [n for n, m in float_model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM))]
        return layer_sqnr(float_model, qmodel, batches, names)
    names = list(quantized_layers(qmodel))
    reference = float_model
    if step["method"] in ("static", "qat"):  # compare with the float model fused the same way (BN folded)
        reference = copy.deepcopy(float_model)
        reference.backbone = torch_ao.fuse(float_model.backbone)
    return layer_sqnr(reference, qmodel, batches, names)
