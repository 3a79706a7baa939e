"""The program's two counts, each with one definition used everywhere a number is printed.

MACs: multiply-accumulates of one forward pass, of convolutions, linear and recurrent layers only (no
BatchNorm, activations, pooling or biases). A property of the architecture: quantized models are counted on
their float architecture.

Parameters: weight and bias elements stored in the artifact, whatever its format: a torch state dict
(float, FP16, packed dynamic-INT8 weights unpacked, static INT8 with BatchNorm folded into its convolution)
or an ONNX graph (weights feeding layers, directly or through a DequantizeLinear). Quantization scales and
zero points (also those a per-channel quantized tensor carries) are counted apart, as `quant_params`;
normalisation statistics, running means and shape constants are neither."""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..models.io import safe_torch_load

# --------------------------------------------------------------------------------------------- MACs


def _conv_macs(module: nn.Module, out: torch.Tensor) -> int:
    return out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)


def _recurrent_macs(module: nn.RNNBase, x) -> int:
    """Every step of every layer and direction multiplies its input and its state by the gate matrices, so
    the MACs are steps x the elements of all weight matrices (weight_ih, weight_hh, and weight_hr with a
    projection): per layer gates*H*(in + H), a layer after the first taking H*directions inputs."""
    steps = x.data.shape[0] if isinstance(x, nn.utils.rnn.PackedSequence) else x.numel() // x.shape[-1]
    return steps * sum(w.numel() for name, w in module.named_parameters(recurse=False) if name.startswith("weight_"))


def _layer_macs(module: nn.Module, inputs: tuple, out) -> int:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return _conv_macs(module, out)
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.RNNBase):
        return _recurrent_macs(module, inputs[0])
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of `model` on `example` (a batch of 1 gives the MACs per item), counted by forward hooks."""
    total = 0

    def hook(module, inputs, out):
        nonlocal total
        total += _layer_macs(module, inputs, out)

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)


# -------------------------------------------------------------------------------- parameters (torch)

QPARAM_KEY = re.compile(r"(^|[._])(scale|zero_point)(_\d+)?$")  # `conv.scale`, FX's `x_input_zero_point_0`


def _is_weight_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in ("weight", "bias") or last.startswith(("weight_", "bias_"))


def _tensor_counts(t: torch.Tensor) -> tuple[int, int, int]:
    """(elements, non-zero elements, scales and zero points it carries) of one stored weight tensor."""
    if not t.is_quantized:
        return t.numel(), int(torch.count_nonzero(t)), 0
    per_channel = t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                                  torch.per_channel_affine_float_qparams)
    qparams = 2 * (t.q_per_channel_scales().numel() if per_channel else 1)
    return t.numel(), int(torch.count_nonzero(t.dequantize())), qparams


def state_parameter_counts(state: Mapping) -> dict[str, int]:
    """Counts of a torch state dict of any format (what `torch.save` wrote, or `model.state_dict()` of a
    float model). Packed parameters are (weight, bias) tuples; a dynamic LSTM's unpacked weights keep their
    names (`weight_ih_l0`), so every weight and bias is found by its name."""
    counts = {"parameters": 0, "nonzero": 0, "quant_params": 0}

    def add(t: torch.Tensor) -> None:
        n, nz, qp = _tensor_counts(t)
        counts["parameters"] += n
        counts["nonzero"] += nz
        counts["quant_params"] += qp

    for key, value in state.items():
        if isinstance(value, (tuple, list)):  # packed (weight, bias) of a quantized Linear
            for t in value:
                if isinstance(t, torch.Tensor):
                    add(t)
        elif isinstance(value, torch.Tensor) and _is_weight_key(key):
            add(value)
        elif isinstance(value, torch.Tensor) and QPARAM_KEY.search(key):
            counts["quant_params"] += value.numel()
        elif isinstance(value, torch.ScriptObject):  # packed weights of an in-memory dynamic LSTM
            raise ValueError(f"{key}: packed weights cannot be counted; count the saved artifact (model.pt)")
    return counts


# --------------------------------------------------------------------------------- parameters (ONNX)

# input slots that hold a layer's weights or biases, and those that hold quantization scales / zero points
# (ONNX and onnxruntime contrib operator schemas)
WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "ConvInteger": (1,), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                "MatMulInteger": (0, 1), "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3),
                "DynamicQuantizeLSTM": (1, 2, 3, 7), "BatchNormalization": (1, 2),
                "QLinearConv": (3, 8), "QLinearMatMul": (3,)}
QPARAM_SLOTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "ConvInteger": (2, 3),
                "MatMulInteger": (2, 3), "DynamicQuantizeLSTM": (8, 9, 10, 11),
                "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7)}
LAYER_OUTPUT_PATH = ("Mul", "Cast", "Reshape")  # ops between an integer layer and its bias Add (dynamic INT8)


def _onnx_roles(graph) -> dict[str, str]:
    """Initializer name -> "weight" or "qparam", from the operator input slots that consume it."""
    inits = {t.name for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for slot, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, slot))

    def from_layer(name: str, depth: int = 4) -> bool:
        """`name` is computed by a layer, maybe rescaled on the way (dynamic INT8: integer layer, Cast, Mul)."""
        node = producer.get(name)
        if node is None or depth == 0:
            return False
        if node.op_type in WEIGHT_SLOTS:
            return True
        return node.op_type in LAYER_OUTPUT_PATH and any(
            i not in inits and from_layer(i, depth - 1) for i in node.input)

    def role(name: str) -> str | None:
        for node, slot in consumers.get(name, []):
            op = node.op_type
            if slot in QPARAM_SLOTS.get(op, ()):
                return "qparam"
            if op == "Mul" and any(i in producer and producer[i].op_type == "DynamicQuantizeLinear"
                                   for i in node.input):
                return "qparam"  # a weight scale times the run-time input scale (dynamic INT8)
            if slot in WEIGHT_SLOTS.get(op, ()):
                return "weight"
            if op == "Add" and any(i != name and from_layer(i) for i in node.input):
                return "weight"  # the bias a layer's output is shifted by
            if op in ("DequantizeLinear", "Reshape", "Identity") and slot == 0:  # on its way to a layer
                found = next((r for out in node.output if (r := role(out))), None)
                if found:
                    return found
        return None

    return {name: r for name in inits if (r := role(name))}


def onnx_parameter_counts(path: Path | str) -> dict[str, int]:
    """Counts of an ONNX graph, by the role of each initializer (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    roles = _onnx_roles(graph)
    counts = {"parameters": 0, "nonzero": 0, "quant_params": 0}
    for t in graph.initializer:
        r = roles.get(t.name)
        if r == "weight":
            a = numpy_helper.to_array(t)
            counts["parameters"] += int(a.size)
            counts["nonzero"] += int(np.count_nonzero(a))
        elif r == "qparam":
            counts["quant_params"] += int(np.prod(t.dims))
    return counts


def onnx_int8_weights(path: Path | str) -> int:
    """Elements of the weights (by the same roles as onnx_parameter_counts) stored as INT8/UINT8: what an
    ONNX Runtime quantization covered."""
    import onnx

    graph = onnx.load(str(path)).graph
    roles = _onnx_roles(graph)
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return int(sum(np.prod(t.dims) for t in graph.initializer if roles.get(t.name) == "weight" and t.data_type in int8))


def parameter_counts(source) -> dict[str, int]:
    """Counts of a model artifact (a .onnx file or a torch state-dict file), a state dict, or a float module."""
    if isinstance(source, nn.Module):
        return state_parameter_counts(source.state_dict())
    if isinstance(source, Mapping):
        return state_parameter_counts(source)
    path = Path(source)
    if path.suffix == ".onnx":
        return onnx_parameter_counts(path)
    with warnings.catch_warnings():  # TypedStorage deprecation raised inside torch for quantized tensors
        warnings.simplefilter("ignore")
        return state_parameter_counts(safe_torch_load(path))
