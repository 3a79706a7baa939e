"""`audiocomp prepare`: dataset index -> feature store (cached by content hash) -> splits.json + stats."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import Config, stable_hash
from ..datasets import load_index
from ..datasets.splits import make_splits, norm_stats, stratified_subset
from ..features.prepared import Prepared, load_prepared
from ..features.store import FeatureStore, build_store
from ..runs import Run, RunError, atomic_write_json, read_json, runs_root
from .context import find_done, stage_run
from .naming import run_name


def store_dir(runs_dir: Optional[str | Path]) -> Path:
    return runs_root(runs_dir) / ".store"


def train_stats(store: FeatureStore, rows: list[int], mode: str) -> Optional[dict]:
    """Normalisation statistics of these training rows, cached beside the store (derived, not checksummed)."""
    path = store.path / f"norm-{stable_hash({'mode': mode, 'rows': rows}, 16)}.json"
    if path.is_file():
        try:
            return read_json(path)["stats"]
        except (RunError, KeyError, TypeError):  # an unreadable cache entry is recomputed
            pass
    stats = norm_stats(store.features, rows, mode)
    try:
        atomic_write_json(path, {"stats": stats})
    except OSError:  # a read-only store still works, just without the cache
        pass
    return stats


def run(cfg: Config, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None, force: bool = False,
        workers: Optional[int] = None, progress: bool = True, from_run: Optional[Run] = None) -> Prepared:
    """Prepare (or reuse) the data for `cfg`. A finished prepare run with the same settings is reused.
    `from_run`: the synth run that generated the data (a parent, so regenerated data is prepared anew)."""
    parents = [from_run] if from_run is not None else []
    name = name or run_name("prepare", cfg, [p.name for p in parents])
    existing = None if force else find_done(name, runs_dir)
    if existing is not None:
        return load_prepared(existing)
    index = load_index(cfg.data)  # bad metadata fails here, before a run folder is written
    with stage_run("prepare", cfg, name, runs_dir, force=force, resume=True, parents=parents) as run_:
        if cfg.data.max_items and cfg.data.max_items < len(index.items):
            keep = stratified_subset(index.items, cfg.data.max_items, cfg.seed)
            index.items = [index.items[i] for i in keep]
        store = build_store(index, cfg.data, cfg.features, store_dir(runs_dir), workers=workers, progress=progress)
        splits = make_splits(store.items, cfg.split, cfg.seed)
        for entry in splits["splits"]:
            entry["norm"] = train_stats(store, entry["train"], cfg.features.normalize)
        atomic_write_json(run_ / "splits.json", splits)
        atomic_write_json(run_ / "data.json", {"store": str(store.path.resolve()), "classes": store.classes,
                                               "multilabel": store.multilabel, "root": str(index.root)})
        counts = {e["name"]: {k: len(e[k]) for k in ("train", "val", "test")} for e in splits["splits"]}
        run_.write_metrics({"store": str(store.path), "rows": len(store.items), "classes": len(store.classes),
                            "skipped": store.report["skipped"], "errors": store.report["errors"][:50],
                            "index_problems": index.problems[:50], "splits": counts,
                            "build_seconds": store.report["seconds"]})
        run_.update_manifest(inputs={"feature_store": store.path.name})
    return load_prepared(run_)
