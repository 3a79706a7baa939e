"""GTZAN (Tzanetakis & Cook 2002): `genres_original/<genre>/<genre>.000NN.wav` (10 genres x 100 x 30 s).

Also accepts the original `genres/` folder (.au files) or a root that is the genre folder itself. With
`data.segment_seconds` (e.g. 3) each clip is cut into segments that share the clip as their group, so
all segments of one clip land in the same split. Unreadable files (`jazz.00054.wav` in the common copy)
are reported and skipped by the feature store, never fatal.
"""
from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .base import ADAPTERS, AUDIO_EXTENSIONS, DatasetError, DatasetIndex, Item, require_root

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def _genre_dir(root: Path) -> Path:
    for sub in ("genres_original", "genres", "Data/genres_original"):
        if (root / sub).is_dir():
            return root / sub
    if any((root / g).is_dir() for g in GENRES):
        return root
    raise DatasetError(f"{root}: no GTZAN layout (expected genres_original/<genre>/<genre>.000NN.wav)")


@ADAPTERS.register("gtzan")
def gtzan_dataset(cfg: DataConfig) -> DatasetIndex:
    root = require_root(cfg)
    base = _genre_dir(root)
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    items, problems = [], []
    for ci, genre in enumerate(classes):
        for f in sorted((base / genre).iterdir()):
            if f.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            if not f.name.startswith(f"{genre}."):
                problems.append(f"{f}: not named {genre}.000NN (in folder {genre}), kept")
            items.append(Item(path=f.relative_to(root).as_posix(), target=ci, group=f.stem))
    return DatasetIndex(root=root, items=items, classes=classes, problems=problems)
