"""Training-time augmentation (off by default): SpecAugment masks, gain, time shift and mixup for spectrograms;
gain, time shift, noise and mixup for waveforms. Applied to a batch on the training device."""
from __future__ import annotations

import numpy as np
import torch

from ..config import AugmentConfig


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    if x.dim() == 4:  # (B, 1, F, T) log-mel dB (ref 1.0): a gain is an offset, a time shift a roll of the frames
        if cfg.gain_db > 0:
            gain = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * cfg.gain_db
            x = x + gain.to(x.device, x.dtype)
        if cfg.time_shift > 0:
            n = x.shape[3]
            shifts = (torch.rand(b, generator=gen) * cfg.time_shift * n).long()
            src = (torch.arange(n)[None] - shifts[:, None]) % n  # (B, T): frame t comes from t - shift
            x = x.gather(3, src.to(x.device)[:, None, None, :].expand_as(x))
        for size, axis in ((cfg.spec_freq_mask, 2), (cfg.spec_time_mask, 3)):
            if size <= 0:
                continue
            n = x.shape[axis]
            width = torch.randint(0, size + 1, (b,), generator=gen)
            start = (torch.rand(b, generator=gen) * (n - width).clamp(min=1)).long()
            pos = torch.arange(n)
            mask = (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])  # (B, n)
            shape = [b, 1, 1, 1]
            shape[axis] = n
            x = x.masked_fill(mask.view(shape).to(x.device), float(x.mean()))
    else:  # (B, S)
        if cfg.gain_db > 0:
            gain = (torch.rand(b, 1, generator=gen) * 2 - 1) * cfg.gain_db
            x = x * (10 ** (gain / 20)).to(x.device)
        if cfg.time_shift > 0:
            shifts = (torch.rand(b, generator=gen) * cfg.time_shift * x.shape[1]).long().tolist()
            x = torch.stack([torch.roll(row, s) for row, s in zip(x, shifts)])
        if cfg.noise_std > 0:
            x = x + cfg.noise_std * torch.randn(x.shape, generator=gen).to(x.device)
    return x


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, num_classes: int, gen: torch.Generator):
    """Blend pairs of items; returns x and soft targets (B, num_classes)."""
    # lambda ~ Beta(alpha, alpha), drawn from `gen` (seeded per epoch) so that a resumed run draws the same
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    soft = y if y.dim() == 2 else torch.nn.functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
