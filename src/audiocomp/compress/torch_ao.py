"""Every use of `torch.ao.quantization` lives here (LESSONS.md #11).

torch.ao.quantization is deprecated: its PT2E flow left core PyTorch in 2.11 for torchao, while the eager
and FX graph-mode APIs used here still ship (with deprecation warnings) in torch 2.11. Keeping them behind
these few functions lets a torchao backend replace this module without touching the stages.

Static INT8 and QAT quantize the *backbone* with FX graph mode (fusion of conv-BN-ReLU, per-channel
symmetric weights); the wrapper's normalise/resize/replicate stays in float, so calibration sees exactly
the transform that training saw. A quantized model is saved as a tensors-only state dict and reloaded by
rebuilding the float model, repeating the same prepare/convert steps (no calibration) and loading it.
"""
from __future__ import annotations

import copy
import platform
import warnings
from collections import OrderedDict
from typing import Iterable, Optional

import torch
from torch import nn

DYNAMIC_TYPES = (nn.Linear, nn.LSTM)
QUANTIZABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
OBSERVERS = ("minmax", "histogram")  # what torch.ao offers; entropy/percentile calibration: onnxruntime
RNN_KEY = "__qrnn__"  # state-dict prefix for dynamic-LSTM weights (their packed form is not a plain tensor)


def default_engine() -> str:
    """`qnnpack` on ARM (Raspberry Pi), `x86` on Intel/AMD (LESSONS.md #7)."""
    return "qnnpack" if platform.machine().lower() in ("arm64", "aarch64", "armv7l", "armv8l") else "x86"


def set_engine(engine: str) -> str:
    engine = default_engine() if engine == "auto" else engine
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantize.engine={engine}: not supported by this PyTorch build "
                         f"(supported: {', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = engine
    return engine


def is_quantized_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized") or \
        type(module).__module__.startswith("torch.ao.nn.intrinsic.quantized")


# ------------------------------------------------------------------------------------------- dynamic

def quantize_dynamic(model: nn.Module) -> nn.Module:
    """INT8 weights for Linear and LSTM layers, activations quantized at run time. Convolutions stay float."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, set(DYNAMIC_TYPES), dtype=torch.qint8)


# --------------------------------------------------------------------------------------- static / QAT

def _qconfig_mapping(engine: str, observer: str, qat: bool, float_names: Iterable[str]):
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qat_qconfig_mapping
    from torch.ao.quantization.observer import (HistogramObserver, MinMaxObserver,
                                                PerChannelMinMaxObserver)

    if qat:
        mapping = get_default_qat_qconfig_mapping(engine)
    else:
        reduce = engine in ("x86", "fbgemm")  # avoids overflow in x86 kernels without VNNI
        act = (HistogramObserver if observer == "histogram" else MinMaxObserver).with_args(reduce_range=reduce)
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        mapping = QConfigMapping().set_global(QConfig(activation=act, weight=weight))
    mapping.set_object_type(nn.LSTM, None)  # static INT8 LSTM is not supported here: stays float, reported
    for name in float_names:
        mapping.set_module_name(name, None)
    return mapping


def first_last_layers(backbone: nn.Module) -> list[str]:
    """Names (inside the backbone) of the first and last conv/linear layers, in definition order."""
    names = [n for n, m in backbone.named_modules() if isinstance(m, QUANTIZABLE_TYPES)]
    return [names[0], names[-1]] if names else []


def prepare(backbone: nn.Module, example: torch.Tensor, engine: str, observer: str = "histogram",
            qat: bool = False, float_names: Iterable[str] = ()) -> nn.Module:
    """Fuse conv-BN-ReLU and insert observers (or fake-quant for QAT) into a copy of `backbone`."""
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    set_engine(engine)
    mapping = _qconfig_mapping(engine, observer, qat, float_names)
    net = copy.deepcopy(backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if qat:
            return prepare_qat_fx(net.train(), mapping, (example,))
        return prepare_fx(net.eval(), mapping, (example,))


def convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared.eval())


def fuse(backbone: nn.Module) -> nn.Module:
    """The float backbone with the same fusions as `prepare` (BN folded): the reference for layer SQNR,
    whose module names match the converted model's."""
    from torch.ao.quantization.quantize_fx import fuse_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fuse_fx(copy.deepcopy(backbone).eval())


# ------------------------------------------------------------------------------- saving and rebuilding

def freeze_qat(prepared: nn.Module) -> None:
    """Stop updating BN statistics and activation ranges (the usual last phase of QAT)."""
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    prepared.apply(torch.ao.quantization.disable_observer)
    prepared.apply(freeze_bn_stats)


def rebuild(model: nn.Module, step: dict, example: torch.Tensor) -> nn.Module:
    """Give a float wrapper `model` the quantized structure described by `step` (weights not yet loaded)."""
    set_engine(step["engine"])
    if step["method"] == "dynamic":
        return quantize_dynamic(model)
    prepared = prepare(model.backbone, model.preprocess(example), step["engine"], step.get("observer", "minmax"),
                       qat=False, float_names=step.get("float_layers", []))
    model.backbone = convert(prepared)
    return model


def state_dict(model: nn.Module) -> dict:
    """Tensors only: dynamic LSTMs keep their weights in packed script objects, so those are unpacked."""
    from torch.ao.nn.quantized.dynamic import LSTM as QLSTM

    full = model.state_dict()
    state = OrderedDict((k, v) for k, v in full.items() if "_all_weight_values" not in k)
    state._metadata = full._metadata  # per-module versions: quantized modules load by them
    for name, mod in model.named_modules():
        if isinstance(mod, QLSTM):
            wb = mod._weight_bias()
            for kind in ("weight", "bias"):
                for key, tensor in wb[kind].items():
                    state[f"{name}.{RNN_KEY}.{key}"] = tensor
    return state


def load_state_dict(model: nn.Module, state: dict) -> Optional[str]:
    """Load what `state_dict` wrote; returns an error message, or None."""
    state = copy.copy(state)  # keeps _metadata
    rnn: dict[str, dict] = {}
    for key in [k for k in state if f".{RNN_KEY}." in k]:
        name, tensor_name = key.split(f".{RNN_KEY}.")
        rnn.setdefault(name, {})[tensor_name] = state.pop(key)
    for name, weights in rnn.items():
        mod = model.get_submodule(name)
        mod.set_weight_bias(weights)
        state.update(mod.state_dict(prefix=f"{name}."))  # the packed objects just built, loaded as they are
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    return None
