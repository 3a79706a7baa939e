"""LSTM over mel frames (time = frames, features = mel bins) or over raw audio cut into frames."""
from __future__ import annotations

import torch
from torch import nn

from .base import register


class SequenceLSTM(nn.Module):
    def __init__(self, num_classes: int, input_size: int, hidden_size: int, num_layers: int,
                 bidirectional: bool, pooling: str, dropout: float, frame_length: int | None):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"lstm pooling must be 'last' or 'mean', got {pooling!r}")
        self.frame_length = frame_length
        self.pooling = pooling
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frame_length:  # (B, S) -> (B, S // L, L)
            n = x.shape[1] // self.frame_length * self.frame_length
            seq = x[:, :n].reshape(x.shape[0], -1, self.frame_length)
        else:  # (B, C, F, T) -> (B, T, F), channels averaged
            seq = x.mean(dim=1).transpose(1, 2)
        out, _ = self.lstm(seq)  # (B, T, H * dirs)
        pooled = out.mean(dim=1) if self.pooling == "mean" else out[:, -1]
        return self.head(pooled)


@register("lstm", "spectrogram", 1, "stacked (bi)LSTM over mel frames + dense head")
def lstm(num_classes: int, input_shape, hidden_size: int = 128, num_layers: int = 2, bidirectional: bool = False,
         pooling: str = "mean", dropout: float = 0.2) -> nn.Module:
    return SequenceLSTM(num_classes, input_shape[1], hidden_size, num_layers, bidirectional, pooling, dropout, None)


@register("lstm_raw", "waveform", 1, "stacked (bi)LSTM over raw audio frames + dense head")
def lstm_raw(num_classes: int, input_shape, frame_length: int = 400, hidden_size: int = 128, num_layers: int = 2,
             bidirectional: bool = False, pooling: str = "mean", dropout: float = 0.2) -> nn.Module:
    return SequenceLSTM(num_classes, frame_length, hidden_size, num_layers, bidirectional, pooling, dropout, frame_length)
