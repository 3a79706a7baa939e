"""Metrics (accuracy, F1, mAP, confusion) and model facts (parameters, non-zeros, MACs, size, latency)."""
