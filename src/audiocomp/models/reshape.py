"""Rebuild a structurally pruned model: resize each layer to the parameter shapes recorded at pruning
time, so a fresh process can load the pruned state dict (LESSONS.md #2)."""
from __future__ import annotations

import torch
from torch import nn


def record_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _resized(module: nn.Module, prefix: str, shapes: dict[str, list[int]]) -> nn.Module | None:
    w = shapes.get(f"{prefix}weight")
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and w is not None:
        out_c, in_per_group = w[0], w[1]
        groups = module.groups
        if groups > 1 and module.groups == module.in_channels:  # depthwise stays depthwise
            groups = out_c
        cls = type(module)
        if tuple(w) == tuple(module.weight.shape) and groups == module.groups:
            return None
        return cls(in_per_group * groups, out_c, module.kernel_size, module.stride, module.padding,
                   module.dilation, groups, module.bias is not None, module.padding_mode)
    if isinstance(module, nn.Linear) and w is not None and tuple(w) != tuple(module.weight.shape):
        return nn.Linear(w[1], w[0], bias=module.bias is not None)
    n = w or shapes.get(f"{prefix}running_mean")  # BN without affine parameters still has running stats
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and n is not None and n[0] != module.num_features:
        return type(module)(n[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    if isinstance(module, nn.LSTM):
        w_ih = shapes.get(f"{prefix}weight_ih_l0")
        if w_ih is not None:
            hidden, inp = w_ih[0] // 4, w_ih[1]
            if hidden != module.hidden_size or inp != module.input_size:
                return nn.LSTM(inp, hidden, module.num_layers, module.bias, module.batch_first,
                               module.dropout, module.bidirectional)
    return None


def reshape_to(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace, in place, every layer whose recorded shapes differ from the freshly built ones."""
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        new = _resized(module, prefix, shapes)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model
