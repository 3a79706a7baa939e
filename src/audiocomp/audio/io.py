"""Decoding with soundfile and the pure transforms every item goes through before features.

torchaudio is not used for I/O: `torchaudio.load` needs TorchCodec since 2.9 (see LESSONS.md #12).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 32


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


def decode(path: Path | str, start_s: float = 0.0, end_s: Optional[float] = None) -> tuple[np.ndarray, int]:
    """Read `path` (optionally the [start_s, end_s) part) as float32 (frames, channels) and its rate."""
    import soundfile as sf

    path = Path(path)
    if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
        raise AudioError(f"{path}: this libsndfile ({sf.__libsndfile_version__}) cannot decode MP3 (needs 1.1+); "
                         "upgrade soundfile or convert the file to WAV/FLAC")
    try:
        fh = sf.SoundFile(str(path))  # one open for the header checks and the read
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError with libsndfile's text
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        if path.exists() and path.stat().st_size == 0:
            reason = "empty file"
        raise AudioError(f"{path}: cannot decode audio ({reason})") from None
    with fh:
        sr, channels = int(fh.samplerate), int(fh.channels)
        if not 1 <= sr <= MAX_SAMPLE_RATE:
            raise AudioError(f"{path}: unsupported sample rate {sr} Hz")
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioError(f"{path}: unsupported channel count {channels}")
        start = int(round(start_s * sr))
        frames = -1 if end_s is None else max(int(round(end_s * sr)) - start, 0)  # -1: to the end
        try:
            if start:
                fh.seek(min(start, fh.frames))
            data = fh.read(frames, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(f"{path}: cannot decode audio ({str(exc).split(':')[-1].strip()})") from None
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return data, int(sr)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,) by averaging channels."""
    return data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32, copy=False)


def resample(y: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """High-quality band-limited resampling (soxr 'HQ', the same engine librosa uses by default)."""
    if sr == target_sr:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def fix_length(y: np.ndarray, length: int, policy: str = "crop-center") -> np.ndarray:
    """Exactly `length` samples. Short clips get zeros appended (every policy); long clips keep their middle
    (`crop-center`) or their start (`crop-start`, and `pad`, whose point is that short clips are not dropped)."""
    n = y.shape[-1]
    if n < length:
        return np.pad(y, (0, length - n)).astype(np.float32, copy=False)
    if n == length or policy == "pad":
        return y[:length] if policy == "pad" else y
    offset = (n - length) // 2 if policy == "crop-center" else 0
    return y[offset:offset + length]


def segments(y: np.ndarray, length: int) -> list[np.ndarray]:
    """Cut into consecutive windows of `length` samples; the last partial one is padded if it holds at
    least half a window, else dropped (at least one window is always returned)."""
    out = [y[i:i + length] for i in range(0, max(len(y) - length, 0) + 1, length)]
    rest = len(y) - len(out) * length
    if 2 * rest >= length and len(y) > length:  # at least half a window (not length // 2: odd lengths)
        out.append(fix_length(y[len(out) * length:], length))
    return [fix_length(s, length) for s in out] if out else [fix_length(y, length)]


def load(path: Path | str, sample_rate: int, start_s: float = 0.0, end_s: Optional[float] = None) -> np.ndarray:
    """Decode, mix to mono and resample: the waveform every feature is computed from."""
    data, sr = decode(path, start_s, end_s)
    y = resample(to_mono(data), sr, sample_rate)
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: resampling produced non-finite samples")
    return y
