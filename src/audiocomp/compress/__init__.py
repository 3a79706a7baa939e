"""Compression: pruning (magnitude, Taylor, hybrid), quantization (torch, ONNX Runtime), ONNX export."""
