"""Compact spectrogram CNN of the ESC-50 / UrbanSound8K study and a raw-waveform 1-D CNN."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import register


def grid_pool(size: tuple[int, int], grid: tuple[int, int]) -> nn.Module:
    """Average an (H, W) map to `grid` cells. Where adaptive pooling's cells all have one size and one step
    (always for grids of 1 or 2 cells per axis), the same numbers come from a plain AvgPool2d, which ONNX
    exports for any map size; ONNX refuses adaptive pooling unless the grid divides the map."""
    kernels, strides = [], []
    for n, g in zip(size, grid):
        starts = [math.floor(i * n / g) for i in range(g)]
        ends = [math.ceil((i + 1) * n / g) for i in range(g)]
        steps = {b - a for a, b in zip(starts, starts[1:])} or {n}
        if len({e - s for s, e in zip(starts, ends)}) != 1 or len(steps) != 1 or n < g:
            return nn.AdaptiveAvgPool2d(grid)
        kernels.append(ends[0] - starts[0])
        strides.append(steps.pop())
    return nn.AvgPool2d(tuple(kernels), tuple(strides))


def _block2d(cin: int, cout: int, k: int, pool: int, dropout: float, convs: int = 1) -> nn.Sequential:
    layers = []
    for i in range(convs):  # convs > 1: VGG-style, a wider receptive field before each pooling
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(pool), nn.Dropout(dropout))


class MeanMaxOverTime(nn.Module):
    """(B, C, F, T) -> (B, C): the mean over frequency, then its mean plus its maximum over time (the PANNs
    head): a short loud event (a gun shot, a dog bark) is not averaged away by a long quiet clip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2)
        return x.mean(dim=2) + x.amax(dim=2)


@register("cnn", "spectrogram", 1, "conv-BN-ReLU-pool blocks + dense head (ESC-50/US8K study)")
def cnn(num_classes: int, input_shape, channels=(32, 64, 128, 128), kernel_size: int = 3, pool: int = 2,
        dropout: float = 0.2, hidden: int = 128, pooled=(1, 1), head_pool: str = "avg",
        convs_per_block: int = 1) -> nn.Module:
    """`pooled`: the (freq, time) grid the last feature map is averaged to before the dense head; (1, 1) is
    global pooling, a larger grid keeps coarse time order (it helps for speech such as spoken digits).
    `head_pool: meanmax` replaces that average by MeanMaxOverTime (for `pooled` (1, 1) only).
    `convs_per_block`: conv-BN-ReLU layers before each pooling (1: the study's CNN, 2: VGG-style)."""
    if head_pool not in ("avg", "meanmax"):
        raise ValueError(f"cnn head_pool must be 'avg' or 'meanmax', got {head_pool!r}")
    if head_pool == "meanmax" and tuple(pooled) != (1, 1):
        raise ValueError("cnn head_pool 'meanmax' pools to one value per channel: leave pooled at [1, 1]")
    layers, cin = [], input_shape[0]
    size = tuple(input_shape[1:])  # (F, T) of the map, followed through the blocks
    for c in channels:
        layers.append(_block2d(cin, c, kernel_size, pool, dropout, convs_per_block))
        cin = c
        size = tuple(n // pool for n in size)
    grid = tuple(pooled)
    head = MeanMaxOverTime() if head_pool == "meanmax" else grid_pool(size, grid)
    return nn.Sequential(*layers, head, nn.Flatten(), nn.Linear(cin * grid[0] * grid[1], hidden),
                         nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


@register("cnn1d", "waveform", 1, "raw-waveform 1-D CNN (strided front end, conv blocks, dense head)")
def cnn1d(num_classes: int, input_shape, channels=(32, 64, 128, 128), kernel_size: int = 9, stride: int = 4,
          first_kernel: int = 80, first_stride: int = 8, dropout: float = 0.2) -> nn.Module:
    layers = [nn.Unflatten(1, (1, -1)),  # (B, S) -> (B, 1, S)
              nn.Conv1d(1, channels[0], first_kernel, stride=first_stride, bias=False),
              nn.BatchNorm1d(channels[0]), nn.ReLU(inplace=True), nn.MaxPool1d(4)]
    cin = channels[0]
    for c in channels[1:]:
        layers += [nn.Conv1d(cin, c, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm1d(c),
                   nn.ReLU(inplace=True), nn.MaxPool1d(stride), nn.Dropout(dropout)]
        cin = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(cin, num_classes))
