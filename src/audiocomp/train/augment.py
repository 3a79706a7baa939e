"""Training-time augmentation (off by default): time stretch and pitch shift (or mel-bin shift), SpecAugment
masks, gain, time shift and mixup for spectrograms; gain, time shift, noise and mixup for waveforms. Applied to
a batch on the training device."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..features.extract import hz_to_mel


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
                  band_hz: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`band_hz`: the centre frequencies of the log-mel bands, needed by pitch_shift."""
    b = x.shape[0]
    if x.dim() == 4:  # (B, 1, F, T) log-mel dB (ref 1.0): a gain is an offset, a time shift a roll of the frames
        if cfg.time_stretch > 0 or cfg.freq_shift > 0 or cfg.pitch_shift > 0:
            x = stretch_and_shift(x, cfg, gen, band_hz)
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


def stretch_and_shift(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
                      band_hz: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each spectrogram of (B, 1, F, T) stretched in time by r, log r uniform in [-log(1 + time_stretch),
    log(1 + time_stretch)], at a random place, and its pitch shifted by a uniform [-pitch_shift, pitch_shift]
    semitones (or its bins moved by a uniform [-freq_shift, freq_shift]): see resample."""
    b, f = x.shape[0], x.shape[2]
    rate = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log1p(cfg.time_stretch))
    place = torch.rand(b, generator=gen) * 2 - 1
    if cfg.pitch_shift > 0:
        if band_hz is None or len(band_hz) != f:
            raise ValueError("train.augment.pitch_shift needs the centre frequencies of the log-mel bands")
        source = pitch_source_bins(band_hz, (torch.rand(b, generator=gen) * 2 - 1) * cfg.pitch_shift)
    else:
        bins = (torch.rand(b, generator=gen) * 2 - 1) * cfg.freq_shift
        source = torch.arange(f)[None] - bins[:, None]
    return resample(x, rate, place, source)


def pitch_source_bins(band_hz: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """(B, F) fractional input band of each output band when the pitch rises by `semitones` (B,): content at
    frequency g moves to g * 2^(semitones / 12), so output band i shows what was at its centre frequency
    divided by that factor. The bands are evenly spaced in mel, so a frequency's band index is linear in mel."""
    mel = hz_to_mel(band_hz.double())
    source = hz_to_mel(band_hz.double()[None] / 2 ** (semitones.double()[:, None] / 12))
    return ((source - mel[0]) / (mel[1] - mel[0])).float()


def resample(x: torch.Tensor, rate: torch.Tensor, place: torch.Tensor, source_bins: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of (B, 1, F, T): time slowed by `rate` (> 1: longer, a window of the stretched clip;
    < 1: shorter, the clip inside silence), the window or clip at `place` in [-1, 1] (-1: the start), and output
    bin i taken from the fractional input bin source_bins[:, i] ((B, F); i - 3: everything 3 bins up). What
    comes from outside the clip is the item's quietest value (silence)."""
    b, _, f, t = x.shape
    span = 1 / rate  # of the input seen per output width
    columns = (torch.arange(t) * 2 + 1) / t - 1  # output frame centres in grid_sample's [-1, 1] coordinates
    gx = span[:, None] * columns[None] + (place * (1 - span))[:, None]  # (B, T): input = output / rate + offset
    gy = (2 * source_bins + 1) / f - 1  # (B, F)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).to(x.device, x.dtype)
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(x - floor, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + floor


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, num_classes: int, gen: torch.Generator):
    """Blend pairs of items; returns x and soft targets (B, num_classes)."""
    # lambda ~ Beta(alpha, alpha), drawn from `gen` (seeded per epoch) so that a resumed run draws the same
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    soft = y if y.dim() == 2 else torch.nn.functional.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
