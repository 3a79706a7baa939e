"""`csv`: any dataset described by a manifest CSV with `path` and `label` columns, optional `fold`/`group`.

`data.manifest` is the CSV (relative to `data.root`, or a path of its own when `data.root` is unset);
audio paths in it are relative to the manifest's folder and may not leave it.
"""
from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .base import ADAPTERS, DatasetError, DatasetIndex, Item, as_int, existing, read_csv


@ADAPTERS.register("csv")
def csv_dataset(cfg: DataConfig) -> DatasetIndex:
    if not cfg.manifest:
        raise DatasetError("data.manifest is required for dataset 'csv' (a CSV with path and label columns)")
    manifest = Path(cfg.root) / cfg.manifest if cfg.root else Path(cfg.manifest)
    rows = read_csv(manifest, ("path", "label"))
    root = manifest.parent
    labels = {r["label"].strip() for _, r in rows}
    # numeric labels sort as numbers (2 before 10), names alphabetically
    classes = sorted(labels, key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    target = {c: i for i, c in enumerate(classes)}
    items, problems = [], []
    for n, r in rows:
        rel = existing(root, r["path"].strip(), f"{manifest}, row {n}", problems)
        if rel is None:
            continue
        fold = r.get("fold")
        items.append(Item(path=rel, target=target[r["label"].strip()],
                          fold=as_int(fold, manifest, n, "fold") if fold not in (None, "") else None,
                          group=(r.get("group") or "").strip() or None))
    return DatasetIndex(root=root, items=items, classes=classes, problems=problems)
