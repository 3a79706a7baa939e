"""Decoding with soundfile and the pure transforms every item goes through before features.

torchaudio is not used for I/O: `torchaudio.load` needs TorchCodec since 2.9 (see LESSONS.md #12).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 32  # more is mixed down to mono; beyond this the file is surely not a recording
MAX_DECODE_SECONDS = 600.0  # longest part decoded in one piece: bounds memory (48 kHz stereo: 230 MB)
RESAMPLE_MARGIN_S = 0.05  # extra audio read around a window so the resampler's edges fall outside it


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


def _info(path: Path):
    """soundfile's header info, with every libsndfile failure turned into a one-line AudioError."""
    import soundfile as sf

    if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
        raise AudioError(f"{path}: this libsndfile ({sf.__libsndfile_version__}) cannot decode MP3 (needs 1.1+); "
                         "upgrade soundfile or convert the file to WAV/FLAC")
    try:
        info = sf.info(str(path))
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError with libsndfile's text
        reason = _reason(exc)
        if path.is_file():  # libsndfile's text can be misleading (e.g. "does not exist" for garbage .mp3)
            reason = "empty file" if path.stat().st_size == 0 else (
                "format not recognised" if "not exist" in reason else reason)
        raise AudioError(f"{path}: cannot decode audio ({reason})") from None
    sr, channels = int(info.samplerate), int(info.channels)
    if not 1 <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: unsupported sample rate {sr} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: unsupported channel count {channels}")
    return info


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, whatever libsndfile said
    return (text.split(":")[-1].strip() or type(exc).__name__)[:200]


def decode(path: Path | str, start_s: float = 0.0, end_s: Optional[float] = None,
           max_seconds: float = MAX_DECODE_SECONDS) -> tuple[np.ndarray, int]:
    """Read `path` (optionally the [start_s, end_s) part) as float32 (frames, channels) and its rate.

    Refuses to decode more than `max_seconds` at once, so one odd file cannot exhaust memory."""
    import soundfile as sf

    path = Path(path)
    info = _info(path)
    sr = int(info.samplerate)
    start = max(0, int(round(start_s * sr)))
    stop = None if end_s is None else int(round(end_s * sr))
    frames = info.frames if 0 <= info.frames < 2 ** 62 else None  # unknown length for some streams
    if frames is not None:
        n = (min(stop, frames) if stop is not None else frames) - start
        if n > max_seconds * sr:
            raise AudioError(f"{path}: {n / sr:.0f} s to decode is more than the {max_seconds:.0f} s limit "
                             f"for one item (cut the file, or crop with features.duration_policy)")
    elif stop is None:
        stop = start + int(max_seconds * sr)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True, start=start, stop=stop)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})") from None
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


def load_fixed(path: Path | str, sample_rate: int, length: int, policy: str = "crop-center",
               start_s: float = 0.0, end_s: Optional[float] = None, keep_short: bool = False) -> np.ndarray:
    """`fix_length(load(...), length, policy)`, but decoding only the part that is kept (plus a margin for
    the resampler's edges), so cropping 1 s out of a one-hour file reads 1 s, not an hour. The window
    starts on a sample shared by both rates' grids, so the result equals the full decode (to ~1e-7).
    With `keep_short`, audio shorter than `length` comes back unpadded (so callers can reject it)."""
    path = Path(path)
    info = _info(path)
    sr = int(info.samplerate)
    first = max(0, int(round(start_s * sr)))
    last = info.frames if 0 <= info.frames < 2 ** 62 else None  # None: length unknown
    if end_s is not None:
        last = int(round(end_s * sr)) if last is None else min(last, int(round(end_s * sr)))
    margin = int(RESAMPLE_MARGIN_S * sample_rate)  # in output samples
    n_out = None if last is None else round((last - first) * sample_rate / sr)  # soxr's output length
    if n_out is None or n_out <= length + 4 * margin:  # short enough: the plain path
        y = load(path, sample_rate, start_s, end_s)
        return y if keep_short and len(y) < length else fix_length(y, length, policy)
    offset = 0 if policy in ("pad", "crop-start") else (n_out - length) // 2  # as fix_length would crop
    g = math.gcd(sr, sample_rate)
    step_in, step_out = sr // g, sample_rate // g  # the two sample grids meet every step_in input frames
    blocks = max(0, offset - margin) // step_out
    read_from = first + blocks * step_in
    skip = offset - blocks * step_out
    read_to = min(last, read_from + math.ceil((skip + length + margin) * sr / sample_rate))
    y = load(path, sample_rate, read_from / sr, read_to / sr)
    return fix_length(y[skip:skip + length], length, "crop-start")
