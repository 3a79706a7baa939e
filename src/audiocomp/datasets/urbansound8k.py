"""UrbanSound8K (Salamon et al. 2014): `audio/fold1..10/*.wav` + `metadata/UrbanSound8K.csv`; 10 folds.

Its slices come at many sample rates and bit depths (8/16/24-bit, mono and stereo); decoding handles
them all. group = the Freesound recording (fsID) the slice was cut from.
"""
from __future__ import annotations

from ..config import DataConfig
from .base import ADAPTERS, DatasetIndex, Item, as_int, existing, read_csv, require_root

COLUMNS = ("slice_file_name", "fsID", "fold", "classID", "class")


@ADAPTERS.register("urbansound8k")
def urbansound8k_dataset(cfg: DataConfig) -> DatasetIndex:
    root = require_root(cfg)
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = read_csv(meta, COLUMNS)
    names = {as_int(r["classID"], meta, n, "classID"): r["class"] for n, r in rows}
    items, problems = [], []
    for n, r in rows:
        fold = as_int(r["fold"], meta, n, "fold")
        rel = existing(root, f"audio/fold{fold}/{r['slice_file_name']}", f"{meta}, row {n}", problems)
        if rel is not None:
            items.append(Item(path=rel, target=int(r["classID"]), fold=fold, group=r["fsID"]))
    return DatasetIndex(root=root, items=items, classes=[names.get(i, str(i)) for i in range(max(names, default=-1) + 1)],
                        problems=problems)
