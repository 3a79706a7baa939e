"""ESC-50 (Piczak 2015): `audio/*.wav` + `meta/esc50.csv`; 5 official folds; `data.subset: esc10`."""
from __future__ import annotations

from ..config import DataConfig
from .base import ADAPTERS, DatasetError, DatasetIndex, Item, as_int, existing, read_csv, require_root

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file")


@ADAPTERS.register("esc50")
def esc50_dataset(cfg: DataConfig) -> DatasetIndex:
    """Targets follow ESC-50's numbering (compacted to 0..9 for ESC-10); group = the source recording."""
    root = require_root(cfg)
    meta = root / "meta" / "esc50.csv"
    if cfg.subset not in (None, "esc10", "esc50"):
        raise DatasetError(f"data.subset: {cfg.subset!r} is not a subset of ESC-50 (allowed: esc10, esc50)")
    rows = read_csv(meta, COLUMNS)
    if cfg.subset == "esc10":
        rows = [(n, r) for n, r in rows if r["esc10"].strip().lower() == "true"]
    names: dict[int, str] = {}
    for n, r in rows:
        names.setdefault(as_int(r["target"], meta, n, "target"), r["category"])
    renumber = {t: i for i, t in enumerate(sorted(names))}
    items, problems = [], []
    for n, r in rows:
        rel = existing(root, f"audio/{r['filename']}", f"{meta}, row {n}", problems)
        if rel is not None:
            items.append(Item(path=rel, target=renumber[int(r["target"])], fold=as_int(r["fold"], meta, n, "fold"),
                              group=r["src_file"]))
    return DatasetIndex(root=root, items=items, classes=[names[t] for t in sorted(names)], problems=problems)
