"""ONNX Runtime INT8 (dynamic, and static QDQ calibrated on training batches) of the exported float graph,
and OnnxModel: an ONNX Runtime session behind the nn.Module call convention."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...evaluate.counts import onnx_int8_weights
from ...models.base import ModelSpec
from ...runs import atomic_copy
from ..onnx import compact_names, export_onnx, run_session, session
from .registry import QUANTIZERS, Context


class OnnxModel(nn.Module):
    """An ONNX Runtime CPU session behind the nn.Module call convention (eval, bench, predict unchanged)."""

    def __init__(self, path: Path | str, threads: int = 0):
        super().__init__()
        self.path = Path(path)
        self.session = session(self.path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, x.detach().float().cpu().numpy()))


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
        step["names_compacted_bytes"] = compact_names(tmp_out)
        atomic_copy(tmp_out, out)
    ctx.report["onnx_quantized_elements"] = onnx_int8_weights(out)
    return OnnxModel(out), step


@QUANTIZERS.register("onnxruntime:dynamic")
def _onnx_dynamic(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    return _onnx_quantize(model, ctx, static=False)


@QUANTIZERS.register("onnxruntime:static")
def _onnx_static(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    return _onnx_quantize(model, ctx, static=True)
