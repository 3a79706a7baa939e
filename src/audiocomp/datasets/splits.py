"""Train/val/test splits over feature-store rows, written once to splits.json and only read afterwards.

Kinds: `holdout` (stratified, seeded), `folds` (the dataset's official folds; `test_fold: all` gives one
split per fold for cross-validation) and `group` (no group, e.g. speaker or source clip, in two splits).
Segments of one file always share a group, so they never straddle splits.

The validation part is carved from the training part like the test part was drawn (`split.val_by: auto`):
by whole groups when the test part holds out whole groups, by item otherwise, stratified by class (the
first label of a multi-label item). Each entry's `drawn` says how every part was drawn.
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


def _paths(items: list[Item]) -> np.ndarray:
    return np.array([it.path for it in items])


def _one_class_per_group(idx: np.ndarray, groups: np.ndarray, strata: np.ndarray) -> bool:
    first: dict = {}
    return all(first.setdefault(g, s) == s for g, s in zip(groups[idx], strata[idx]))


def _group_pick(idx: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator,
                strata: Optional[np.ndarray] = None) -> np.ndarray:
    """Pick whole groups holding about `fraction` of `idx`; stratified by class when every group has one."""
    uniq = np.unique(groups[idx])
    if len(uniq) < 2:
        raise DatasetError(f"split.kind=group needs at least two groups, found {len(uniq)}")
    if strata is not None and _one_class_per_group(idx, groups, strata):
        picked = [_group_pick_plain(idx[strata[idx] == s], groups, fraction, rng) for s in np.unique(strata[idx])]
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


def has_real_groups(items: list[Item]) -> bool:
    """True when some group (speaker, source recording) holds more than one audio file; segments of one
    file alone do not make groups."""
    first: dict = {}
    return any(first.setdefault(g, p) != p for g, p in zip(_groups(items), _paths(items)))


def val_unit(test: np.ndarray, rest: np.ndarray, items: list[Item], val_by: str) -> str:
    """`group` or `item`: how the validation part is carved from `rest` so that it is drawn like `test`.
    auto: whole groups when the test part holds out whole groups (no group in both test and the rest),
    single items otherwise (FSDD's takes-0-4 fold holds every speaker: validation does too)."""
    if val_by != "auto":
        return val_by
    groups = _groups(items)
    whole = not set(groups[test].tolist()) & set(groups[rest].tolist())
    return "group" if whole and has_real_groups(items) else "item"


def _carve(rest: np.ndarray, items: list[Item], cfg: SplitConfig, rng, unit: str,
           name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validation carved from `rest` by whole groups or by item (segments of one file stay together),
    stratified by class; the rest is the training part. An empty carve is an error, never a silent
    "no validation part": only split.val_fraction: 0 means that."""
    if cfg.val_fraction <= 0:
        return rest, np.array([], dtype=int)
    units = _groups(items) if unit == "group" else _paths(items)
    n_units = len(np.unique(units[rest]))
    val = (_group_pick(rest, units, cfg.val_fraction, rng, _strata(items)) if n_units > 1
           else np.array([], dtype=int))
    if not len(val):
        raise DatasetError(f"split {name}: split.val_fraction={cfg.val_fraction} carved no validation items from "
                           f"{len(rest)} training items ({n_units} {unit}s); use more data, split.val_by=item, "
                           "or split.val_fraction=0 for a protocol without validation (then nothing is chosen)")
    return np.setdiff1d(rest, val), val


def _how_val(cfg: SplitConfig, unit: str, val: np.ndarray, rest: np.ndarray, items: list[Item], seed: int) -> str:
    if cfg.val_fraction <= 0:
        return "none (split.val_fraction: 0): nothing is chosen on validation (last epoch, no sensitivity, no guard)"
    stratified = unit == "item" or _one_class_per_group(rest, _groups(items), _strata(items))
    segmented = len(set(_paths(items).tolist())) < len(items)
    by = ("by item" + (" (segments of one file together)" if segmented else "")) if unit == "item" else "by whole group"
    return (f"{len(val)} of the {len(rest)} training items (split.val_fraction {cfg.val_fraction:g}), {by}"
            f"{', stratified by class' if stratified else ''}, seed {seed}")


def _entry(name: str, train, val, test, drawn: dict, **extra) -> dict:
    return {"name": name, "train": train.tolist(), "val": val.tolist(), "test": test.tolist(), "drawn": drawn, **extra}


def make_splits(items: list[Item], cfg: SplitConfig, seed: int) -> dict:
    """Return the splits.json document: {"kind", "seed", "splits": [{"name", "train", "val", "test", "drawn"}]},
    where `drawn` says in words how each part was drawn."""
    seed = cfg.seed if cfg.seed is not None else seed
    rng = np.random.default_rng(seed)
    idx = np.arange(len(items))
    groups = _groups(items)
    entries = []
    if cfg.kind in ("holdout", "group"):
        if cfg.kind == "group":
            test = _group_pick(idx, groups, cfg.test_fraction, rng)
            how = "in whole groups (no group in two parts)"
        elif has_real_groups(items) and len(set(groups)) > 1:
            test = _group_pick(idx, groups, cfg.test_fraction, rng, _strata(items))  # keep groups whole
            how = "in whole groups, stratified by class where every group has one class"
        else:
            test = _group_pick(idx, _paths(items), cfg.test_fraction, rng, _strata(items))  # segments stay together
            how = "by item, stratified by class"
        rest = np.setdiff1d(idx, test)
        unit = val_unit(test, rest, items, cfg.val_by)
        train, val = _carve(rest, items, cfg, rng, unit, cfg.kind)
        drawn = {"test": f"{len(test)} of the {len(items)} items (split.test_fraction {cfg.test_fraction:g}), "
                         f"{how}, seed {seed}", "val": _how_val(cfg, unit, val, rest, items, seed), "train": "the rest"}
        entries.append(_entry(cfg.kind, train, val, test, drawn))
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
                how_val, how_train = f"official fold {cfg.val_fold}", f"the other folds but fold {cfg.val_fold}"
            else:
                unit = val_unit(test, rest, items, cfg.val_by)
                train, val = _carve(rest, items, cfg, rng, unit, f"fold{f}")
                how_val = _how_val(cfg, unit, val, rest, items, seed)
                how_train = "the other folds, less the validation part" if len(val) else "the other folds"
            drawn = {"test": f"official fold {f}", "val": how_val, "train": how_train}
            entries.append(_entry(f"fold{f}", train, val, test, drawn, test_fold=int(f)))
    for e in entries:
        if not e["train"] or not e["test"]:
            raise DatasetError(f"split {e['name']}: empty train or test part ({len(items)} items); use more data")
    return {"kind": cfg.kind, "seed": seed, "splits": entries}


def stratified_subset(items: list[Item], n: int, seed: int) -> np.ndarray:
    """Sorted indices of `n` items, each class represented in proportion (largest remainders get the
    leftover items), drawn at random within each class with `seed` (data.max_items)."""
    strata = _strata(items)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(strata, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    leftover = n - int(take.sum())
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))  # largest remainder first, ties at random
    take[order[:leftover]] += 1
    picked = [rng.permutation(np.flatnonzero(strata == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


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
