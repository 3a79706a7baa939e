"""The compress search, as plain functions of numbers: the rungs of a ladder, the Pareto front of the scored
rungs, and the choice of the smallest rung within `max_drop` of the parent on validation.

A row is one form of one rung: {"rung", "method", "ratio", "form" (fp32 | int8), "val_accuracy",
"file_bytes", "zipped_bytes", "parameters", "macs", "latency_ms", ...}. The parent is a rung too (ratio 0):
its FP32 form is the reference, its INT8 form a candidate like any other.
"""
from __future__ import annotations

from typing import Optional

from ..report.plots import pareto_front

# --target -> the row value that is "smaller"; ties are broken by file size, zipped size, then by higher
# val accuracy
TARGETS = {"size": "file_bytes", "macs": "macs", "latency": "latency_ms"}
METHODS = {"structured": "taylor", "hybrid": "hybrid"}  # ladder method -> prune.method
EPS = 1e-12  # accuracies are ratios of counts: compare them without float noise


def rung_name(method: str, ratio: float) -> str:
    """'structured-50' for half the parent's channels removed (permille when a ratio needs it)."""
    pct = ratio * 100
    return f"{method}-{round(pct)}" if abs(pct - round(pct)) < 1e-9 else f"{method}-{ratio * 1000:.0f}pm"


def step_ratio(previous: float, ratio: float) -> float:
    """The channel ratio to remove from a model that already lost `previous` of the parent's channels so
    that `ratio` of the parent's are gone: 1 - (1 - ratio) / (1 - previous)."""
    if not 0 <= previous < ratio < 1:
        raise ValueError(f"ladder ratios must increase within [0, 1): {previous} then {ratio}")
    return 1 - (1 - ratio) / (1 - previous)


def ladder(ratios: list[float]) -> list[tuple[float, float]]:
    """(ratio of the parent's channels removed, ratio removed from the previous rung) of each rung, in order."""
    out, previous = [], 0.0
    for r in sorted(set(ratios)):
        out.append((r, step_ratio(previous, r)))
        previous = r
    return out


def qualifies(row: dict, parent_val: float, max_drop: float) -> bool:
    return row.get("val_accuracy") is not None and row["val_accuracy"] >= parent_val - max_drop - EPS


def select(rows: list[dict], parent_val: float, max_drop: float, target: str) -> Optional[dict]:
    """The smallest row by `target` whose validation accuracy (point estimate) is at most `max_drop` below
    the parent's; None when no row qualifies. Only validation numbers are read: the test part plays no part."""
    key = TARGETS[target]
    ok = [r for r in rows if qualifies(r, parent_val, max_drop) and r.get(key) is not None]
    return min(ok, key=lambda r: (r[key], r["file_bytes"], r["zipped_bytes"], -r["val_accuracy"]), default=None)


def front(rows: list[dict], cost: str) -> set[int]:
    """Indices of `rows` on the Pareto front of validation accuracy vs `cost` (cheaper and at least as good)."""
    kept = [i for i, r in enumerate(rows) if r.get(cost) is not None and r.get("val_accuracy") is not None]
    points = [(rows[i][cost], rows[i]["val_accuracy"]) for i in kept]
    return {kept[j] for j in pareto_front(points)}


def mark_fronts(rows: list[dict]) -> list[dict]:
    """Each row with `front_<target>` (True when on the Pareto front of accuracy vs that cost)."""
    marks = {t: front(rows, key) for t, key in TARGETS.items()}
    return [{**r, **{f"front_{t}": i in marks[t] for t in TARGETS}} for i, r in enumerate(rows)]
