"""Quantization behind one interface (registry.py); importing it registers every quantizer and the loader
of quantized model folders.

    registry.py          QUANTIZERS, quantize(), check_options(), FORMATS
    torch_quantizers.py  torch dynamic INT8, FP16, static INT8, QAT
    onnx_quantizers.py   ONNX Runtime dynamic and static INT8, OnnxModel (a session as an nn.Module)
    loader.py            load_quantized: the model a quantize step saved, rebuilt in a fresh process
    measure.py           per-layer SQNR, parameter coverage
"""
from . import onnx_quantizers, torch_quantizers  # noqa: F401  (registration)
from .loader import load_quantized
from .measure import coverage, layer_sqnr, quantized_layers, sqnr_db, sqnr_report
from .onnx_quantizers import OnnxModel
from .registry import CALIBRATION, FORMATS, QUANTIZERS, Context, check_options, quantize
from .torch_quantizers import ComputeAs, fp16_compute

__all__ = ["CALIBRATION", "FORMATS", "QUANTIZERS", "ComputeAs", "Context", "OnnxModel", "check_options", "coverage",
           "fp16_compute", "layer_sqnr", "load_quantized", "quantize", "quantized_layers", "sqnr_db", "sqnr_report"]
