"""Quantization behind one interface.

    model_q, step = quantize(model, spec, calibration, cfg, folder)

`QUANTIZERS["<backend>:<method>"]` holds one function per method (torch: dynamic, fp16, static, qat;
onnxruntime: dynamic, static). `step` is the recipe entry saved in arch.json; `folder` receives the
artifact (`model.pt` with quantized tensors, or `model.onnx`), and `load_quantized` rebuilds a callable
module from it in a fresh process: float32 (B, *feature_shape) in, logits out, whatever the format.
"""
from __future__ import annotations

import copy
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, QuantizeConfig
from ..evaluate.counts import parameter_counts
from ..models.base import ModelSpec, build_model
from ..models.io import LOADERS, ModelLoadError, atomic_torch_save, safe_torch_load
from ..registry import Registry
from ..runs import atomic_copy
from . import torch_ao
from .onnx import export_onnx, run_session, session

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
             train_batches=None, progress: bool = False) -> tuple[nn.Module, dict, dict]:
    """Quantize a float AudioClassifier; writes the artifact into `folder`. Returns (model, step, report)."""
    check_options(cfg)
    key = f"{cfg.backend}:{cfg.method}"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(spec, cfg, calibration, folder, train_batches, progress)
    qmodel, step = QUANTIZERS.get(key)(copy.deepcopy(model).eval(), ctx)
    step = {"stage": "quantize", "method": cfg.method, "backend": cfg.backend, "format": FORMATS[key], **step}
    return qmodel.eval(), step, ctx.report


def _example(spec: ModelSpec, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *spec.feature_shape)


def _float_layers(model: nn.Module, cfg: QuantizeConfig) -> list[str]:
    first_last = torch_ao.first_last_layers(model.backbone)
    keep = {"first": first_last[:1], "last": first_last[1:]}
    return sorted({n for which in cfg.keep_float for n in keep[which]})


# ------------------------------------------------------------------------------------------ torch

@QUANTIZERS.register("torch:dynamic")
def _torch_dynamic(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    engine = torch_ao.set_engine(ctx.cfg.engine)
    qmodel = torch_ao.quantize_dynamic(model)
    atomic_torch_save(torch_ao.state_dict(qmodel), ctx.folder / "model.pt")
    return qmodel, {"engine": engine, "compute": "int8 weights, activations quantized at run time",
                    "artifact": "model.pt"}


def fp16_compute(requested: str) -> str:
    """FP16 arithmetic where it is fast (CUDA); on a CPU the FP16 weights are computed in FP32 (LESSONS #8)."""
    if requested != "auto":
        return requested
    return "float16" if torch.cuda.is_available() else "float32"


class ComputeAs(nn.Module):
    """Runs `inner` in another dtype/device; takes and returns float32 tensors on the caller's device."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype, device: str = "cpu"):
        super().__init__()
        self.inner = inner.to(device=device, dtype=dtype)
        self.dtype, self.device = dtype, torch.device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.device, self.dtype)).float().to(x.device)


def _fp16_runtime(model: nn.Module, state: dict, compute: str) -> nn.Module:
    model.load_state_dict(state)  # FP16 values, cast to the float32 parameters
    if compute == "float32":
        return model
    if compute == "float16" and not torch.cuda.is_available():
        return model  # an FP16-compute artifact reloaded on a CPU: computed in float32
    return ComputeAs(model, getattr(torch, compute), "cuda" if compute == "float16" else "cpu")


@QUANTIZERS.register("torch:fp16")
def _torch_fp16(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_torch_save(state, ctx.folder / "model.pt")
    compute = fp16_compute(ctx.cfg.fp16_compute)
    return _fp16_runtime(model, state, compute), {"engine": "cuda" if compute == "float16" else "cpu",
                                                  "compute": compute, "artifact": "model.pt"}


def _observer(cfg: QuantizeConfig) -> str:
    return "histogram" if cfg.calibration == "auto" else cfg.calibration


@QUANTIZERS.register("torch:static")
def _torch_static(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    from tqdm import tqdm

    engine = torch_ao.set_engine(ctx.cfg.engine)
    float_layers = _float_layers(model, ctx.cfg)
    prepared = torch_ao.prepare(model.backbone, model.preprocess(_example(ctx.spec)), engine, _observer(ctx.cfg),
                                float_names=float_layers)
    with torch.no_grad():
        for x, _ in tqdm(ctx.calibration, desc="calibrate", leave=False, disable=not ctx.progress):
            prepared(model.preprocess(x))
    model.backbone = torch_ao.convert(prepared)
    atomic_torch_save(torch_ao.state_dict(model), ctx.folder / "model.pt")
    return model, {"engine": engine, "observer": _observer(ctx.cfg), "float_layers": float_layers,
                   "compute": "int8", "artifact": "model.pt"}


@QUANTIZERS.register("torch:qat")
def _torch_qat(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    """Fake-quantized fine-tuning from the float weights; BN statistics and observers are frozen for
    the last epoch so the final scales match what the INT8 model will see."""
    from tqdm import tqdm

    if ctx.train_batches is None:
        raise ValueError("quantize.method=qat needs training batches")
    engine = torch_ao.set_engine(ctx.cfg.engine)
    float_layers = _float_layers(model, ctx.cfg)
    model.backbone = torch_ao.prepare(model.backbone, model.preprocess(_example(ctx.spec, 2)), engine, qat=True,
                                      float_names=float_layers)
    crit = nn.BCEWithLogitsLoss() if ctx.spec.multilabel else nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=ctx.cfg.qat_lr)
    history = []
    for epoch in range(ctx.cfg.qat_epochs):
        model.train()
        if epoch == ctx.cfg.qat_epochs - 1 and epoch > 0:
            torch_ao.freeze_qat(model.backbone)
        total, seen = 0.0, 0
        ctx.train_batches.set_epoch(epoch)
        for x, y in tqdm(ctx.train_batches, desc=f"qat {epoch + 1}/{ctx.cfg.qat_epochs}", leave=False,
                         disable=not ctx.progress):
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1)})
    ctx.report["qat_history"] = history
    model.eval()
    model.backbone = torch_ao.convert(model.backbone)
    atomic_torch_save(torch_ao.state_dict(model), ctx.folder / "model.pt")
    return model, {"engine": engine, "observer": "qat", "float_layers": float_layers, "compute": "int8",
                   "artifact": "model.pt", "qat_epochs": ctx.cfg.qat_epochs}


# ------------------------------------------------------------------------------------ onnxruntime

class OnnxModel(nn.Module):
    """An ONNX Runtime CPU session behind the nn.Module call convention (eval, bench, predict unchanged)."""

    def __init__(self, path: Path | str, threads: int = 0):
        super().__init__()
        self.path = Path(path)
        self.session = session(self.path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, x.detach().float().cpu().numpy()))


def quantized_onnx_elements(path: Path) -> int:
    """Elements of INT8/UINT8 weight initializers in an ONNX file (what quantization covered)."""
    import onnx

    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return int(sum(np.prod(t.dims) for t in onnx.load(str(path)).graph.initializer
                   if t.data_type in int8 and not t.name.endswith("_zero_point")))


def _float_onnx(model: nn.Module, spec: ModelSpec, scratch: Path) -> Path:
    """Export the float model, then ONNX Runtime's pre-processing (shape inference, graph optimisation)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with warnings.catch_warnings():  # tracer warnings about the wrapper's shape checks: the shape is fixed
        warnings.simplefilter("ignore")
        raw = export_onnx(model, spec.feature_shape, scratch / "float.onnx")
    pre = scratch / "float-pre.onnx"
    quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
    return pre


class _Reader:
    """CalibrationDataReader over the training-split calibration batches (same raw features eval sees)."""

    def __init__(self, batches: list, input_name: str):
        self.items = [{input_name: x.numpy().astype(np.float32)} for x, _ in batches]
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.items)


def _onnx_float_nodes(path: Path, keep: list[str]) -> list[str]:
    import onnx

    nodes = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    chosen = {"first": nodes[:1], "last": nodes[-1:]}
    return sorted({n for which in keep for n in chosen[which]})


def _onnx_quantize(model: nn.Module, ctx: Context, static: bool) -> tuple[nn.Module, dict]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    out = ctx.folder / "model.onnx"
    with tempfile.TemporaryDirectory(prefix="audiocomp-onnx-") as scratch:
        pre = _float_onnx(model, ctx.spec, Path(scratch))
        exclude = _onnx_float_nodes(pre, ctx.cfg.keep_float)
        tmp_out = Path(scratch) / "quant.onnx"
        step = {"engine": "onnxruntime-cpu", "compute": "int8", "artifact": "model.onnx", "float_nodes": exclude,
                "per_channel": ctx.cfg.per_channel}
        if static:
            method = "minmax" if ctx.cfg.calibration == "auto" else ctx.cfg.calibration
            reader = type("Reader", (_Reader, CalibrationDataReader), {})(ctx.calibration, "features")
            quantize_static(str(pre), str(tmp_out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=ctx.cfg.per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                              "percentile": CalibrationMethod.Percentile}[method],
                            extra_options={"CalibPercentile": ctx.cfg.percentile})
            step.update(observer=method, quant_format="QDQ")
        else:
            quantize_dynamic(str(pre), str(tmp_out), per_channel=ctx.cfg.per_channel, weight_type=QuantType.QInt8,
                             nodes_to_exclude=exclude)
            step["compute"] = "int8 weights, activations quantized at run time"
        atomic_copy(tmp_out, out)
    ctx.report["onnx_quantized_elements"] = quantized_onnx_elements(out)
    return OnnxModel(out), step


@QUANTIZERS.register("onnxruntime:dynamic")
def _onnx_dynamic(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    return _onnx_quantize(model, ctx, static=False)


@QUANTIZERS.register("onnxruntime:static")
def _onnx_static(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    return _onnx_quantize(model, ctx, static=True)


# ---------------------------------------------------------------------------------------- loading

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
        return _fp16_runtime(model, state, compute).eval()
    model = torch_ao.rebuild(model, step, _example(spec))
    problem = torch_ao.load_state_dict(model, state)
    if problem:
        raise ModelLoadError(f"{path}: does not match {Path(folder) / 'arch.json'} ({problem})")
    return model.eval()


# ------------------------------------------------------------------------------------ measurements

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
