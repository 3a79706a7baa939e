"""Per-item predictions of a scored split part (`predictions-<part>.npz` in the run), so that a report can
recompute intervals and paired comparisons without rerunning any model.

Arrays of one file (N scored items, C classes):
  rows     int64 (N,)       row ids into the feature store (`store` names it)
  keys     str (N,)         item identity "path|start_s|end_s|segment": equal across feature stores of the
                            same data (mel and raw audio), so two runs can be paired item by item
  targets  int64 (N,), or float32 (N, C) 0/1 for multi-label sets
  scores   float32 (N, C)   probabilities (softmax; sigmoid for multi-label sets)
  groups   str (N,)         only when the bootstrap must resample whole groups (see `sampling_groups`)
  part, store               str scalars
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import IntervalConfig
from ..runs import RunError, atomic_path
from .stats import accuracy_interval, paired_difference


def file_name(part: str, prefix: str = "") -> str:
    return f"{prefix}predictions-{part}.npz"


def item_keys(items) -> list[str]:
    """One identity per store row; segments of one file (same path and offsets) are numbered in order."""
    seen: dict[str, int] = {}
    keys = []
    for it in items:
        base = f"{it.path}|{it.start_s}|{it.end_s}"
        seen[base] = seen.get(base, -1) + 1
        keys.append(f"{base}|{seen[base]}")
    return keys


def sampling_groups(items, split: dict, part: str) -> Optional[np.ndarray]:
    """The groups of `part`'s rows when the split keeps every group whole (a group in this part appears in
    no other part: the group, not the item, was drawn into it), else None (resample items). Segments of one
    clip and slices of one recording are resampled together; FSDD's takes-0-4 test fold, which holds a few
    takes of every speaker that the training part also holds, is resampled by item."""
    rows = split[part]
    groups = [items[r].group for r in rows]
    if not rows or all(g is None for g in groups):
        return None
    mine = {g for g in groups if g is not None}
    others = {items[r].group for p in ("train", "val", "test") if p != part for r in split.get(p, [])}
    if mine & others or len(mine) == len(rows):  # groups straddle parts, or every item is its own group
        return None
    return np.array([g if g is not None else f"item:{r}" for g, r in zip(groups, rows)])


@dataclass
class Predictions:
    part: str
    rows: np.ndarray
    keys: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    groups: Optional[np.ndarray] = None
    store: str = ""

    @classmethod
    def of_split(cls, store, split: dict, part: str, scores: np.ndarray, targets: np.ndarray) -> "Predictions":
        """Wrap the scores of `split[part]` (in that row order, as split_batches yields them)."""
        rows = np.asarray(split[part], dtype=np.int64)
        if len(rows) != len(scores):
            raise RunError(f"{len(scores)} scores for {len(rows)} rows of split part '{part}'")
        keys = item_keys(store.items)
        return cls(part, rows, np.array([keys[r] for r in rows]), np.asarray(targets),
                   np.asarray(scores, dtype=np.float32), sampling_groups(store.items, split, part), str(store.path.name))

    @property
    def correct(self) -> Optional[np.ndarray]:
        """Top-1 right or wrong per item; None for multi-label sets (no single right answer)."""
        if self.targets.ndim != 1:
            return None
        return self.scores.argmax(axis=1) == self.targets

    def save(self, path: Path) -> Path:
        arrays = {"rows": self.rows, "keys": self.keys, "targets": self.targets, "scores": self.scores,
                  "part": np.array(self.part), "store": np.array(self.store)}
        if self.groups is not None:
            arrays["groups"] = self.groups
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: savez would append .npz
            np.savez_compressed(fh, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "Predictions":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(str(z["part"]), z["rows"], z["keys"], z["targets"], z["scores"],
                           z["groups"] if "groups" in z.files else None, str(z["store"]))
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"{path}: not a predictions file ({type(exc).__name__}: {exc})") from None


def interval(pred: Predictions, icfg: IntervalConfig = IntervalConfig()) -> Optional[dict]:
    """accuracy_interval of a part's predictions (groups when it has them); None for multi-label sets."""
    correct = pred.correct
    return None if correct is None else accuracy_interval(correct, pred.groups, icfg.n_boot, icfg.seed, icfg.level)


def same_items(a: Predictions, b: Predictions) -> Optional[np.ndarray]:
    """Positions in `b` of `a`'s items (so b[order] lines up with a), or None when the items differ."""
    if len(a.keys) != len(b.keys) or a.targets.ndim != b.targets.ndim:
        return None
    if np.array_equal(a.keys, b.keys):
        return np.arange(len(a.keys))
    order_a, order_b = np.argsort(a.keys, kind="stable"), np.argsort(b.keys, kind="stable")
    if not np.array_equal(a.keys[order_a], b.keys[order_b]):
        return None
    order = np.empty(len(a.keys), dtype=np.int64)
    order[order_a] = order_b
    return order


def _aligned(reference: Predictions, other: Predictions) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(reference's correctness, other's on the same items in the reference's order), or None when the items
    differ or the set is multi-label."""
    order = same_items(reference, other)
    if order is None or reference.correct is None:
        return None
    if not np.array_equal(reference.targets, other.targets[order]):
        raise RunError(f"predictions of the same items disagree on their targets (store {reference.store} vs "
                       f"{other.store})")
    return reference.correct, other.correct[order]


def agreement(reference: Predictions, other: Predictions) -> Optional[float]:
    """The share of the reference's items on which `other` predicts the same top-1 class (right or wrong): how
    closely a compressed model follows its parent, beside how often each is right. None when the items differ
    or the set is multi-label."""
    order = same_items(reference, other)
    if order is None or reference.targets.ndim != 1:
        return None
    return float((reference.scores.argmax(axis=1) == other.scores[order].argmax(axis=1)).mean())


def compare(reference: Predictions, other: Predictions, icfg: IntervalConfig = IntervalConfig()) -> Optional[dict]:
    """paired_difference(reference, other) on the same items (diff = other - reference), resampling the
    reference's groups; None when the items differ or the set is multi-label."""
    aligned = _aligned(reference, other)
    if aligned is None:
        return None
    return paired_difference(*aligned, reference.groups, icfg.n_boot, icfg.seed, icfg.level)


def compare_pooled(pairs: list[tuple[Predictions, Predictions]], icfg: IntervalConfig = IntervalConfig()) -> dict:
    """One paired difference over several (reference, other) pairs of the same items, e.g. two recipes trained
    with seeds 0, 1 and 2: the pairs' items together, each group (a recording; an item where the set has no
    groups) resampled with all its copies, since a recording's clips are not independent across seeds either."""
    aligned = [_aligned(a, b) for a, b in pairs]
    if not pairs or any(x is None for x in aligned):
        raise RunError("pooled comparison: every pair must score the same single-label items")
    groups = np.concatenate([a.groups if a.groups is not None else a.keys for a, _ in pairs])
    return paired_difference(np.concatenate([x[0] for x in aligned]), np.concatenate([x[1] for x in aligned]),
                             groups, icfg.n_boot, icfg.seed, icfg.level)


def intervals(preds: dict[str, Predictions], icfg: IntervalConfig = IntervalConfig()) -> dict:
    """{<part>_accuracy_ci: interval} of each part's predictions (single-label sets)."""
    return {f"{p}_accuracy_ci": ci for p, pred in preds.items() if (ci := interval(pred, icfg)) is not None}


def compare_parts(before: dict[str, Predictions], after: dict[str, Predictions],
                  icfg: IntervalConfig = IntervalConfig()) -> dict:
    """{part: paired difference after - before} for every part both scored on the same items."""
    return {p: d for p in after if p in before and (d := compare(before[p], after[p], icfg)) is not None}
