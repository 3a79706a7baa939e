"""Generic layouts: `folder` (<root>/<class>/<file>) and `fsdd` (recordings/{digit}_{speaker}_{take}.wav)."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import DataConfig
from .base import ADAPTERS, AUDIO_EXTENSIONS, DatasetError, DatasetIndex, Item, require_root


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


@ADAPTERS.register("folder")
def folder_dataset(cfg: DataConfig) -> DatasetIndex:
    root = require_root(cfg)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class folders (expected <root>/<class>/<audio files>)")
    items = [Item(path=f.relative_to(root).as_posix(), target=ci)
             for ci, name in enumerate(classes) for f in _audio_files(root / name)]
    return DatasetIndex(root=root, items=items, classes=classes)


@ADAPTERS.register("fsdd")
def fsdd_dataset(cfg: DataConfig) -> DatasetIndex:
    """Free Spoken Digit Dataset; group = speaker, fold = 1 for the conventional test takes 0-4."""
    root = require_root(cfg)
    rec = root / "recordings" if (root / "recordings").is_dir() else root
    items, problems = [], []
    prefix = rec.relative_to(root).as_posix()
    for name in sorted(n for n in os.listdir(rec) if n.endswith(".wav")):  # 3,000 files: plain names are fastest
        f = rec / name
        parts = name[:-4].split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            problems.append(f"{f}: name is not {{digit}}_{{speaker}}_{{take}}.wav, skipped")
            continue
        digit, speaker, take = int(parts[0]), parts[1], int(parts[2])
        items.append(Item(path=f"{prefix}/{name}" if prefix != "." else name, target=digit, group=speaker,
                          fold=1 if take < 5 else 2))
    return DatasetIndex(root=root, items=items, classes=[str(d) for d in range(10)], problems=problems)
