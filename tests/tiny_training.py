"""A tiny learnable training set and network for fit() tests (imported by name: pyproject's pythonpath)."""
from __future__ import annotations

import numpy as np
from torch import nn


def toy(n=96, classes=3, multilabel=False, seed=0):
    """(N, 1, 8, 8) float16 features whose mel rows 2c..2c+1 are bright when class c is present."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 1, 8, 8)).astype(np.float16)
    if multilabel:
        y = (rng.random((n, classes)) < 0.4).astype(np.float32)
    else:
        y = rng.integers(0, classes, n).astype(np.int64)
    hot = y if multilabel else np.eye(classes)[y]
    for c in range(classes):
        x[hot[:, c] > 0, :, 2 * c:2 * c + 2] += 3
    return x, y


def small_net(classes=3):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1),
                         nn.AdaptiveAvgPool2d((8, 1)), nn.Flatten(), nn.Linear(32, classes))
