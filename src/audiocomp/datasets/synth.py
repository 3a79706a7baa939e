"""A seeded synthetic audio classification set written as real, mixed-format audio files.

Ten classes of procedurally generated sounds whose pitch ranges overlap, with random onsets, durations
and gains, over background noise at a random SNR, so a model has to learn the shape of each sound and
cannot reach 100% after one epoch. Files mix sample rates (8 to 48 kHz), mono and stereo, 16-bit and
float WAV, and FLAC, so the decoding path is exercised as it is on real datasets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..runs import atomic_write_csv
from .base import ADAPTERS, DatasetError, DatasetIndex, Item, as_int, existing, read_csv, require_root, safe_relpath

SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = (("wav", "PCM_16"), ("wav", "FLOAT"), ("flac", "PCM_16"))
METADATA = "metadata.csv"


def _envelope(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    attack = max(1, int(sr * rng.uniform(0.005, 0.05)))
    release = max(1, int(sr * rng.uniform(0.02, 0.2)))
    env = np.ones(n, np.float32)
    env[:attack] = np.linspace(0, 1, min(attack, n), dtype=np.float32)[: n]
    env[-release:] *= np.linspace(1, 0, min(release, n), dtype=np.float32)
    return env


def _tone(t, sr, rng):
    return np.sin(2 * np.pi * rng.uniform(200, 2000) * t + rng.uniform(0, 2 * np.pi))


def _chirp(t, sr, rng, up: bool):
    f0, ratio = rng.uniform(200, 1200), rng.uniform(1.5, 3.0)
    f_start, f_end = (f0, f0 * ratio) if up else (f0 * ratio, f0)
    dur = max(t[-1], 1e-3)
    k = np.log(f_end / f_start) / dur  # exponential sweep
    return np.sin(2 * np.pi * f_start * (np.exp(k * t) - 1) / k)


def _harmonic(t, sr, rng):
    f0, n = rng.uniform(100, 600), rng.integers(3, 8)
    decay = rng.uniform(0.5, 0.9)
    return sum(decay ** h * np.sin(2 * np.pi * f0 * (h + 1) * t) for h in range(n) if f0 * (h + 1) < 0.45 * sr)


def _odd_harmonic(t, sr, rng):  # square-ish: odd partials only, confusable with `harmonic`
    f0 = rng.uniform(100, 600)
    return sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12, 2) if f0 * h < 0.45 * sr)


def _am(t, sr, rng):
    depth = rng.uniform(0.4, 1.0)
    return (1 - depth / 2 + depth / 2 * np.sin(2 * np.pi * rng.uniform(4, 20) * t)) * _tone(t, sr, rng)


def _fm(t, sr, rng):
    fc, fm, dev = rng.uniform(300, 2000), rng.uniform(3, 12), rng.uniform(20, 150)
    return np.sin(2 * np.pi * fc * t + dev / fm * np.sin(2 * np.pi * fm * t))


def _noise_burst(t, sr, rng):
    from scipy.signal import butter, sosfilt

    centre = min(rng.uniform(500, 3000), 0.35 * sr)
    sos = butter(4, [centre / 1.4, centre * 1.4], btype="bandpass", fs=sr, output="sos")
    return sosfilt(sos, rng.standard_normal(len(t))) * 4


def _clicks(t, sr, rng):
    y = np.zeros(len(t))
    period = max(1, int(sr / rng.uniform(5, 40)))
    y[:: period] = 1.0
    width = max(1, int(sr * 0.002))
    return np.convolve(y, np.hanning(width * 2 + 1), mode="same")


def _dyad(t, sr, rng):
    f = rng.uniform(200, 1500)
    return 0.6 * np.sin(2 * np.pi * f * t) + 0.6 * np.sin(2 * np.pi * f * rng.uniform(1.2, 1.6) * t)


GENERATORS: dict[str, Callable] = {
    "tone": _tone,
    "chirp_up": lambda t, sr, rng: _chirp(t, sr, rng, up=True),
    "chirp_down": lambda t, sr, rng: _chirp(t, sr, rng, up=False),
    "harmonic": _harmonic,
    "odd_harmonic": _odd_harmonic,
    "am_tone": _am,
    "fm_tone": _fm,
    "noise_burst": _noise_burst,
    "click_train": _clicks,
    "dyad": _dyad,
}
CLASSES = list(GENERATORS)


def render(cls: str, sr: int, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One mono clip: the class's event at a random onset, length and gain, over noise. Returns (y, snr_db)."""
    n = int(round(duration * sr))
    ev_len = int(n * rng.uniform(0.3, 0.9))
    onset = int(rng.integers(0, n - ev_len + 1))
    t = np.arange(ev_len) / sr
    event = GENERATORS[cls](t, sr, rng) * _envelope(ev_len, sr, rng)
    event = event / (np.abs(event).max() + 1e-9)
    y = np.zeros(n)
    y[onset:onset + ev_len] = event
    snr_db = float(rng.uniform(0, 20))
    noise = np.cumsum(rng.standard_normal(n)) * 0.02 + rng.standard_normal(n)  # brown + white
    noise -= noise.mean()
    sig_power = np.mean(event ** 2) + 1e-12
    noise *= np.sqrt(sig_power / (np.mean(noise ** 2) * 10 ** (snr_db / 10)))
    y = (y + noise) * 10 ** (rng.uniform(-20, -3) / 20)
    return (y / max(1.0, np.abs(y).max() * 1.01)).astype(np.float32), snr_db


def generate(out: Path | str, per_class: int = 40, duration: float = 1.5, seed: int = 0,
             classes: list[str] | None = None, progress: bool = True) -> Path:
    """Write `per_class` clips of each class under `out/<class>/` and a `metadata.csv`; deterministic."""
    import soundfile as sf
    from tqdm import tqdm

    out = Path(out)
    classes = classes or CLASSES
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise DatasetError(f"unknown synthetic classes {unknown} (known: {', '.join(CLASSES)})")
    rows = []
    jobs = [(ci, c, i) for ci, c in enumerate(classes) for i in range(per_class)]
    for ci, cls, i in tqdm(jobs, desc="synth", unit="file", disable=not progress):
        rng = np.random.default_rng([seed, ci, i])
        sr = int(rng.choice(SAMPLE_RATES))
        ext, subtype = FORMATS[int(rng.integers(len(FORMATS)))]
        y, snr = render(cls, sr, duration, rng)
        channels = 2 if rng.random() < 0.3 else 1
        data = np.stack([y, y * rng.uniform(0.6, 1.0)], axis=1) if channels == 2 else y
        rel = f"{cls}/{cls}_{i:04d}.{ext}"
        (out / cls).mkdir(parents=True, exist_ok=True)
        sf.write(str(out / rel), data, sr, subtype=subtype, format=ext.upper())
        rows.append({"filename": rel, "label": cls, "target": ci, "fold": i % 5 + 1, "sample_rate": sr,
                     "channels": channels, "format": f"{ext}/{subtype}", "snr_db": round(snr, 2)})
    atomic_write_csv(out / METADATA, rows)  # last: a folder without it is an unfinished set
    return out


@ADAPTERS.register("synth")
def synth_dataset(cfg: DataConfig) -> DatasetIndex:
    root = require_root(cfg)
    meta = root / METADATA
    if not meta.is_file():
        raise DatasetError(f"{meta}: not found (generate the set with `audiocomp data synth --out {root}`)")
    rows = read_csv(meta, required=("filename", "label", "target", "fold"))
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    items, problems = [], []
    for line, r in rows:
        target, fold = as_int(r["target"], meta, line, "target"), as_int(r["fold"], meta, line, "fold")
        if names.setdefault(target, r["label"]) != r["label"]:
            raise DatasetError(f"{meta}, row {line}: label {r['label']!r} for target {target}, "
                               f"which is {names[target]!r} elsewhere")
        rel = safe_relpath(root, r["filename"] or "", str(meta))
        if rel in seen:
            raise DatasetError(f"{meta}, row {line}: {rel} is listed twice (also row {seen[rel]})")
        seen[rel] = line
        if existing(root, rel, meta.name, problems):
            items.append(Item(path=rel, target=target, fold=fold))
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"{meta}: targets must be 0..{len(names) - 1}, found {sorted(names)}")
    classes = [names[t] for t in range(len(names))]
    return DatasetIndex(root=root, items=items, classes=classes, problems=problems)
