"""The data a run reads: a prepare run's feature store and `splits.json`, opened once, and batches of its parts.

Every stage after `prepare` starts here: a model run's data is that of the prepare run among its ancestors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runs import Run, RunError, read_json
from .batches import ArrayBatches
from .store import FeatureStore


@dataclass
class Prepared:
    run: Run  # the prepare run
    store: FeatureStore
    splits: dict

    def split(self, index: int = 0) -> dict:
        return self.splits["splits"][index]


def load_prepared(run: Run) -> Prepared:
    """The data of a prepare run."""
    info = read_json(run / "data.json")
    return Prepared(run=run, store=FeatureStore.open(Path(info["store"])), splits=read_json(run / "splits.json"))


def model_run_parent(run: Run) -> Run:
    """The prepare run that a run's data came from (the run itself when it is one)."""
    prep = run if run.stage == "prepare" else run.parent("prepare")
    if prep is None:
        raise RunError(f"run {run.path}: no prepare run among its parents")
    return prep


def prepared_of(run: Run) -> Prepared:
    """The data a model run (or any run below one) was trained on."""
    return load_prepared(model_run_parent(run))


def split_batches(prepared: Prepared, part: str, batch_size: int, split_index: int = 0, shuffle: bool = False,
                  seed: int = 0, **kw) -> ArrayBatches:
    """Batches of one part (train, val or test) of split `split_index`, in splits.json order unless shuffled."""
    store = prepared.store
    return ArrayBatches(store.features, store.targets(), prepared.split(split_index)[part], batch_size,
                        shuffle=shuffle, seed=seed, **kw)


def check_rows(prepared: Prepared, n: int, index: int = 0) -> list[int]:
    """Up to `n` real items for checking a model's outputs: validation rows, then training rows; never test."""
    split = prepared.split(index)
    return (list(split["val"]) + list(split["train"]))[:n]
