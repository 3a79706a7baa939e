"""Train/val/test splits over feature-store rows, written once to splits.json and only read afterwards.

Kinds: `holdout` (stratified, seeded), `folds` (the dataset's official folds; `test_fold: all` gives one
split per fold for cross-validation) and `group` (no group, e.g. speaker or source clip, in two splits).
Segments of one file always share a group, so they never straddle splits.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..config import SplitConfig
from .base import DatasetError, Item


def _strata(items: list[Item]) -> np.ndarray:
    # multi-label items are stratified by their first label: a usable approximation
    return np.array([it.target if isinstance(it.target, int) else (it.target[0] if it.target else -1)
                     for it in items])


def _groups(items: list[Item]) -> np.ndarray:
    return np.array([it.group if it.group is not None else it.path for it in items])


def _stratified_pick(idx: np.ndarray, strata: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Pick about `fraction` of `idx` in every stratum (at least one where a stratum has two or more)."""
    picked = []
    for s in np.unique(strata[idx]):
        members = idx[strata[idx] == s]
        members = members[rng.permutation(len(members))]
        k = int(round(len(members) * fraction))
        if k == 0 and len(members) >= 2 and fraction > 0:
            k = 1
        picked.append(members[:k])
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=int)


def _group_pick(idx: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator,
                strata: Optional[np.ndarray] = None) -> np.ndarray:
    """Pick whole groups holding about `fraction` of `idx`; stratified by class when every group has one."""
    uniq = np.unique(groups[idx])
    if len(uniq) < 2:
        raise DatasetError(f"split.kind=group needs at least two groups, found {len(uniq)}")
    if strata is not None:
        first = {}
        for g, s in zip(groups[idx], strata[idx]):
            if first.setdefault(g, s) != s:  # a group spans classes: fall back to plain group picking
                break
        else:
            picked = [_group_pick_plain(idx[strata[idx] == s], groups, fraction, rng)
                      for s in np.unique(strata[idx])]
            return np.sort(np.concatenate(picked))
    return _group_pick_plain(idx, groups, fraction, rng)


def _group_pick_plain(idx: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    uniq = np.unique(groups[idx])
    if len(uniq) < 2:  # a stratum with one group stays on the training side
        return np.array([], dtype=int)
    uniq = uniq[rng.permutation(len(uniq))]
    sizes = {g: int(n) for g, n in zip(*np.unique(groups[idx], return_counts=True))}
    target, chosen, count = fraction * len(idx), [], 0
    for g in uniq:
        if len(chosen) == len(uniq) - 1 or count >= target:
            break
        if chosen and count + sizes[g] / 2 > target:  # would overshoot by more than half the group
            break
        chosen.append(g)
        count += sizes[g]
    return np.sort(idx[np.isin(groups[idx], chosen)])


def _carve(train: np.ndarray, items: list[Item], cfg: SplitConfig, rng, by_group: bool) -> tuple[np.ndarray, np.ndarray]:
    if cfg.val_fraction <= 0:
        return train, np.array([], dtype=int)
    groups = _groups(items)
    # keep groups whole whenever the items carry a group (segments, speakers)
    if by_group or any(it.group is not None for it in items):
        val = (_group_pick(train, groups, cfg.val_fraction, rng, None if by_group else _strata(items))
               if len(np.unique(groups[train])) > 1 else np.array([], int))
    else:
        val = _stratified_pick(train, _strata(items), cfg.val_fraction, rng)
    return np.setdiff1d(train, val), val


def _entry(name: str, train, val, test, **extra) -> dict:
    return {"name": name, "train": train.tolist(), "val": val.tolist(), "test": test.tolist(), **extra}


def make_splits(items: list[Item], cfg: SplitConfig, seed: int) -> dict:
    """Return the splits.json document: {"kind", "seed", "splits": [{"name", "train", "val", "test"}]}."""
    seed = cfg.seed if cfg.seed is not None else seed
    rng = np.random.default_rng(seed)
    idx = np.arange(len(items))
    entries = []
    if cfg.kind == "holdout":
        if any(it.group is not None for it in items) and len(set(_groups(items))) > 1:
            test = _group_pick(idx, _groups(items), cfg.test_fraction, rng, _strata(items))  # keep clips whole
        else:
            test = _stratified_pick(idx, _strata(items), cfg.test_fraction, rng)
        train, val = _carve(np.setdiff1d(idx, test), items, cfg, rng, by_group=False)
        entries.append(_entry("holdout", train, val, test))
    elif cfg.kind == "group":
        test = _group_pick(idx, _groups(items), cfg.test_fraction, rng)
        train, val = _carve(np.setdiff1d(idx, test), items, cfg, rng, by_group=True)
        entries.append(_entry("group", train, val, test))
    else:  # folds
        folds = np.array([it.fold if it.fold is not None else -1 for it in items])
        if (folds < 0).any():
            raise DatasetError("split.kind=folds: this dataset has no official folds (use holdout or group)")
        available = sorted(set(folds.tolist()))
        wanted = available if cfg.test_fold == "all" else [cfg.test_fold if cfg.test_fold is not None else available[-1]]
        for f in wanted:
            if f not in available:
                raise DatasetError(f"split.test_fold={f}: no such fold (folds: {available})")
            test = idx[folds == f]
            rest = idx[folds != f]
            if cfg.val_fold is not None and cfg.val_fold != f:
                val, train = rest[folds[rest] == cfg.val_fold], rest[folds[rest] != cfg.val_fold]
            else:
                train, val = _carve(rest, items, cfg, rng, by_group=False)
            entries.append(_entry(f"fold{f}", train, val, test, test_fold=int(f)))
    for e in entries:
        if not e["train"] or not e["test"]:
            raise DatasetError(f"split {e['name']}: empty train or test part ({len(items)} items); use more data")
    return {"kind": cfg.kind, "seed": seed, "splits": entries}


def norm_stats(features: np.ndarray, rows: list[int], mode: str, chunk: int = 512) -> Optional[dict]:
    """Mean and std from the training rows only, per mel bin or global, streamed in chunks (float64 sums)."""
    if mode == "none":
        return None
    rows = np.sort(np.asarray(rows))
    total = total_sq = None
    count = 0
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        # contiguous rows read as one slice (much faster from a memmap than fancy indexing)
        block = features[part[0]:part[-1] + 1] if part[-1] - part[0] + 1 == len(part) else features[part]
        x = np.asarray(block, dtype=np.float32)  # (b, 1, F, T) or (b, S); sums accumulate in float64
        axes = (0, 1, 3) if mode == "per_bin" and x.ndim == 4 else None
        s = np.atleast_1d(x.sum(axis=axes, dtype=np.float64))
        sq = np.atleast_1d(np.square(x).sum(axis=axes, dtype=np.float64))
        n = x.size // s.size
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += n
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    std = np.where(std < 1e-5, 1.0, std)
    return {"mode": mode if features.ndim == 4 else "global", "mean": mean.tolist(), "std": std.tolist()}
