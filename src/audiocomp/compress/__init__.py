"""Compression: pruning (magnitude, Taylor, hybrid), quantization (torch, ONNX Runtime), ONNX export.

Importing it registers the loader of quantized model folders with models.load_model."""
from . import quantization  # noqa: F401  (registers its loader)
