"""A catalogue of bad and odd audio files, shared by the tests and scripts/stress_bad_inputs.py.

Each maker writes one file and says what must happen: "error" (AudioError naming the file) or "ok"
(decodes to finite audio, e.g. silence or 6 channels that are mixed down)."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

SR = 8000


def _wav_header(sample_rate: int, channels: int, bits: int = 16, data_bytes: int = 0, fmt: int = 1) -> bytes:
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, sample_rate, (sample_rate * block) & 0xFFFFFFFF, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk
            + b"data" + struct.pack("<I", data_bytes))


def _write(y: np.ndarray, subtype: str = "PCM_16", fmt: str = "WAV", sr: int = SR):
    def make(path: Path) -> None:
        sf.write(str(path), y, sr, subtype=subtype, format=fmt)
    return make


def _bytes(data: bytes):
    def make(path: Path) -> None:
        path.write_bytes(data)
    return make


def _truncated(path: Path) -> None:
    sf.write(str(path), np.zeros(SR, np.float32), SR)
    path.write_bytes(path.read_bytes()[:20])  # cut inside the header


def _flac_named_wav(path: Path) -> None:
    tmp = path.with_suffix(".flac")
    sf.write(str(tmp), 0.1 * np.ones(SR, np.float32), SR, format="FLAC")
    tmp.replace(path)


def _nan_float(value: float):
    def make(path: Path) -> None:
        y = np.zeros(SR, np.float32)
        y[100] = value
        sf.write(str(path), y, SR, subtype="FLOAT")
    return make


# name -> (file name, maker, expected "error" or "ok")
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "empty file": ("empty.wav", _bytes(b""), "error"),
    "truncated header": ("trunc.wav", _truncated, "error"),
    "header only, zero samples": ("zero.wav", _bytes(_wav_header(SR, 1)), "error"),
    "text with .wav extension": ("text.wav", _bytes(b"this is not audio at all\n" * 40), "error"),
    "random bytes .flac": ("noise.flac", _bytes(np.random.default_rng(0).bytes(4096)), "error"),
    "random bytes .mp3": ("noise.mp3", _bytes(np.random.default_rng(1).bytes(4096)), "error"),
    "RIFF with garbage": ("riff.wav", _bytes(b"RIFF\xff\xff\xff\xffWAVEjunkjunk" + bytes(64)), "error"),
    "0 channels in header": ("ch0.wav", _bytes(_wav_header(SR, 0, data_bytes=4) + bytes(4)), "error"),
    "huge sample rate": ("sr.wav", _bytes(_wav_header(4_000_000_000, 1, data_bytes=16) + bytes(16)), "error"),
    "sample rate 0": ("sr0.wav", _bytes(_wav_header(0, 1, data_bytes=16) + bytes(16)), "error"),
    "64 channels": ("ch64.wav", _bytes(_wav_header(SR, 64, data_bytes=128 * 10) + bytes(128 * 10)), "error"),
    "NaN sample (float WAV)": ("nan.wav", _nan_float(np.nan), "error"),
    "inf sample (float WAV)": ("inf.wav", _nan_float(np.inf), "error"),
    "-inf sample (float WAV)": ("ninf.wav", _nan_float(-np.inf), "error"),
    "too loud for float16 (1e30)": ("loud.wav", _nan_float(1e30), "error"),
    "data chunk longer than file": ("short.wav", _bytes(_wav_header(SR, 1, data_bytes=10 ** 9) + bytes(4000)), "ok"),
    "all-silent": ("silent.wav", _write(np.zeros(SR, np.float32)), "ok"),
    "one sample": ("one.wav", _write(np.full(1, 0.5, np.float32)), "error"),  # shorter than one STFT window
    "6 channels (5.1)": ("six.wav", _write(0.1 * np.ones((SR, 6), np.float32)), "ok"),
    "FLAC named .wav": ("flac.wav", _flac_named_wav, "ok"),
    "DC at full scale": ("dc.wav", _write(np.ones(SR, np.float32) * 0.999), "ok"),
    "denormal floats": ("denorm.wav", _write(np.full(SR, 1e-40, np.float32), "FLOAT"), "ok"),
    "44.1 kHz 8-bit unsigned": ("u8.wav", _write(0.2 * np.sin(np.arange(4410) / 7.0), "PCM_U8", sr=44100), "ok"),
}
