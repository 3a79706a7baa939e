"""Deployment: ONNX export (with an optional in-graph mel front end) and torch-free prediction."""
