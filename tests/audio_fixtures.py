"""Writers for tiny datasets in their official on-disk layouts (used by the dataset and store tests)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

TINY_FEATURES = ["features.sample_rate=8000", "features.duration=0.5", "features.n_fft=256",
                 "features.hop_length=128", "features.n_mels=16", "features.workers=1"]


def tone(path: Path, sr: int = 8000, seconds: float = 0.5, channels: int = 1, subtype: str = "PCM_16",
         freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).standard_normal(len(t))
    sf.write(str(path), np.stack([y] * channels, axis=1) if channels > 1 else y, sr, subtype=subtype)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(64)))
    return path


def write_csv(path: Path, header: list[str], rows: list[list], comments: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        for c in comments:
            fh.write(c + "\n")
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def esc50(root: Path) -> Path:
    """3 classes (two in ESC-10) x 5 folds; one 24-bit, one stereo, one corrupt, one listed but missing."""
    rows = []
    for target, cat, esc10 in ((0, "dog", True), (1, "rooster", False), (10, "rain", True)):
        for fold in range(1, 6):
            name = f"{fold}-{100 + target}-A-0.wav"
            rows.append([name, fold, target, cat, esc10, f"{100 + target}{fold}", "A"])
            kind = (target, fold)
            if kind == (0, 1):
                tone(root / "audio" / name, sr=44100, subtype="PCM_24")
            elif kind == (1, 2):
                tone(root / "audio" / name, sr=22050, channels=2)
            elif kind == (10, 3):
                corrupt(root / "audio" / name)
            elif kind != (10, 4):  # (10, 4) stays missing
                tone(root / "audio" / name, freq=300 + 50 * target)
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return root


def synth_in_layout(root: Path, layout: str, per_class: int = 5, seconds: float = 1.0, sr: int = 16000) -> Path:
    """Learnable synthetic clips (audiocomp's generator) written in a real dataset's official layout:
    `esc50` (audio/ + meta/esc50.csv, 5 folds) or `gtzan` (genres_original/<genre>/<genre>.000NN.wav)."""
    from audiocomp.datasets.gtzan import GENRES
    from audiocomp.datasets.synth import CLASSES, render

    rng = np.random.default_rng(0)
    rows = []
    for ci, cls in enumerate(CLASSES[:5]):
        for i in range(per_class):
            y, _ = render(cls, sr, seconds, rng)
            if layout == "esc50":
                name = f"{i % 5 + 1}-{1000 * ci + i}-A-0.wav"
                rows.append([name, i % 5 + 1, ci, cls, True, str(1000 * ci + i), "A"])
                path = root / "audio" / name
            else:
                path = root / "genres_original" / GENRES[ci] / f"{GENRES[ci]}.{i:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), y, sr, subtype="PCM_16")
    if layout == "esc50":
        write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return root
