"""The log-mel front end as a torch module that exports to ONNX (opset 17 STFT + mel matmul + dB), so a
device feeds raw samples. Same numbers as features.extract.FeatureExtractor (tested), with librosa's mel
basis; top_db is applied per clip, as the extractor does for one clip."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..config import FeaturesConfig
from ..features.extract import FeatureExtractor


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II as a (n_out, n_in) matrix (scipy.fft.dct(type=2, norm="ortho") along axis 0)."""
    n = np.arange(n_in)[None, :]
    k = np.arange(n_out)[:, None]
    m = np.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m.astype(np.float32)


class LogMelFrontend(nn.Module):
    """(B, samples) -> (B, 1, n_mels or n_mfcc, frames)."""

    def __init__(self, cfg: FeaturesConfig):
        super().__init__()
        if cfg.kind == "waveform":
            raise ValueError("a waveform model needs no front end")
        ext = FeatureExtractor(cfg)
        self.n_fft, self.hop, self.top_db = cfg.n_fft, cfg.hop_length, cfg.top_db
        window = torch.zeros(cfg.n_fft)  # torch.stft centres a shorter window inside n_fft: do it explicitly
        left = (cfg.n_fft - ext.win_length) // 2
        window[left:left + ext.win_length] = ext.window
        self.register_buffer("window", window)
        self.register_buffer("mel_basis", ext.mel_basis)  # (n_mels, n_fft // 2 + 1)
        dct = dct_matrix(cfg.n_mfcc, cfg.n_mels) if cfg.kind == "mfcc" else None
        self.register_buffer("dct", torch.from_numpy(dct) if dct is not None else None)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        pad = self.n_fft // 2
        y = nn.functional.pad(y, (pad, pad))  # centred frames, zero padding (librosa's pad_mode="constant")
        spec = torch.stft(y, n_fft=self.n_fft, hop_length=self.hop, window=self.window, center=False,
                          return_complex=False)  # (B, n_fft//2+1, T, 2): real form, which ONNX STFT exports
        power = spec.pow(2).sum(-1)
        db = 10.0 * torch.log10(torch.clamp(torch.matmul(self.mel_basis, power), min=1e-10))  # (B, n_mels, T)
        if self.top_db is not None:
            peak = db.amax(dim=(1, 2), keepdim=True)
            db = torch.maximum(db, peak - self.top_db)
        if self.dct is not None:
            db = torch.matmul(self.dct, db)
        return db.unsqueeze(1)
