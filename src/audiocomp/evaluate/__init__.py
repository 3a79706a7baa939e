"""Scoring, metrics (accuracy, F1, mAP, confusion, intervals) and model facts (parameters, MACs, size, latency)."""
