"""Uncertainty of accuracies measured on a finite test set: percentile bootstrap intervals and paired tests.

A 1-point difference on 300 clips is 3 clips, so every accuracy and every "model A vs its parent" comes with
a seeded 95% percentile-bootstrap interval. When items are not independent draws (segments of one clip,
slices of one recording) the bootstrap resamples whole groups, and the result says which it resampled.
McNemar's exact test on the discordant pairs is reported beside the paired interval, not instead of it:
it assumes independent items.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.stats import binomtest

N_BOOT, SEED, LEVEL = 2000, 0, 0.95


def _units(values: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-unit sums of `values` and unit sizes: the units are the items, or the groups when given."""
    values = np.asarray(values, dtype=np.float64)
    if groups is None:
        return values, np.ones(len(values)), "items"
    groups = np.asarray(groups)
    if len(groups) != len(values):
        raise ValueError(f"groups has {len(groups)} entries for {len(values)} items")
    _, inverse = np.unique(groups, return_inverse=True)
    return np.bincount(inverse, weights=values), np.bincount(inverse).astype(np.float64), "groups"


def _bootstrap(sums: np.ndarray, sizes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,): per resample, the sum of the drawn units' sums / the number of items drawn.

    Drawing the G units with replacement matters only through how many copies of each kind of unit are
    drawn, and units with equal (sum, size) are interchangeable; so each resample is one multinomial draw
    of G over the distinct kinds, in proportion to how many units each has: the same distribution as
    drawing unit indices, at a cost that does not grow with the number of items."""
    kinds, counts = np.unique(np.column_stack([sums, sizes]), axis=0, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(len(sizes), counts / counts.sum(), size=n_boot)  # (n_boot, K)
    return (draws @ kinds[:, 0]) / (draws @ kinds[:, 1])


def _bounds(stats: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _settings(n: int, resampled: str, n_units: int, n_boot: int, seed: int, level: float) -> dict:
    out = {"n": n, "resampled": resampled, "n_boot": n_boot, "seed": seed, "level": level}
    if resampled == "groups":
        out["groups"] = n_units
    return out


def accuracy_interval(correct, groups=None, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> dict:
    """Accuracy of 0/1 `correct` with its percentile-bootstrap interval: {value, low, high, n, resampled
    ("items" or "groups"), groups (how many, when resampled), n_boot, seed, level}. With fewer than two
    units there is nothing to resample: low and high are None and `note` says why."""
    correct = np.asarray(correct, dtype=bool)
    sums, sizes, resampled = _units(correct, groups)
    out = {"value": float(correct.mean()) if len(correct) else None, "low": None, "high": None,
           **_settings(len(correct), resampled, len(sizes), n_boot, seed, level)}
    if len(sizes) < 2:
        out["note"] = f"fewer than two {resampled}: no interval"
        return out
    out["low"], out["high"] = _bounds(_bootstrap(sums, sizes, n_boot, seed), level)
    return out


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2 (1 when none)."""
    discordant = int(a_only) + int(b_only)
    return 1.0 if discordant == 0 else float(binomtest(int(b_only), discordant, 0.5).pvalue)


def paired_difference(correct_a, correct_b, groups=None, n_boot: int = N_BOOT, seed: int = SEED,
                      level: float = LEVEL) -> dict:
    """Accuracy of b minus accuracy of a on the same items, with a paired bootstrap interval (each resample
    draws the same items or groups for both) and McNemar's exact p: {diff, low, high, n, a_only (items
    only a gets right), b_only, mcnemar_p, resampled, groups, n_boot, seed, level}."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired results need the same items: {a.shape} vs {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    sums, sizes, resampled = _units(b.astype(np.int8) - a.astype(np.int8), groups)
    out = {"diff": (b_only - a_only) / len(a) if len(a) else None, "low": None, "high": None,
           **_settings(len(a), resampled, len(sizes), n_boot, seed, level),
           "a_only": a_only, "b_only": b_only, "mcnemar_p": mcnemar_exact(a_only, b_only)}
    if len(sizes) < 2:
        out["note"] = f"fewer than two {resampled}: no interval"
        return out
    out["low"], out["high"] = _bounds(_bootstrap(sums, sizes, n_boot, seed), level)
    return out


def format_interval(ci: Optional[dict], scale: float = 100.0, digits: int = 1) -> str:
    """'81.2% [77.0, 85.1]' (percent, the interval's level implied by the header or the caller)."""
    if not ci or ci.get("value") is None:
        return "-"
    value = f"{ci['value'] * scale:.{digits}f}%"
    if ci.get("low") is None:
        return value
    return f"{value} [{ci['low'] * scale:.{digits}f}, {ci['high'] * scale:.{digits}f}]"


def format_difference(d: Optional[dict], scale: float = 100.0, digits: int = 1) -> str:
    """'-1.0 pt [-3.0, +1.0]': a paired difference in percentage points."""
    if not d or d.get("diff") is None:
        return "-"
    text = f"{d['diff'] * scale:+.{digits}f} pt"
    if d.get("low") is None:
        return text
    return f"{text} [{d['low'] * scale:+.{digits}f}, {d['high'] * scale:+.{digits}f}]"


def format_paired(d: Optional[dict]) -> str:
    """'-1.0 pt [-3.0, +1.0], McNemar p=0.51 (12 items right only before, 6 only after)' for the console."""
    if not d:
        return "-"
    return (f"{format_difference(d)}, McNemar p={d['mcnemar_p']:.3g} ({d['a_only']} items right only in the "
            f"reference, {d['b_only']} only in this one; {d['resampled']} resampled)")
