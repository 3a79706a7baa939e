"""The compress search, as plain functions of numbers: the rungs of a ladder, the Pareto front of the scored
rungs, and the choice of the smallest rung within `max_drop` of the parent on validation.

A row is one form of one rung: {"rung", "method", "ratio", "form" (fp32 | int8), "val_accuracy",
"file_bytes", "zipped_bytes", "parameters", "macs", "latency_ms", ...}. The parent is a rung too (ratio 0):
its FP32 form is the reference, its INT8 form a candidate like any other. Each (method, form) pair is a
ladder of its own for the sequential rule (`candidates`).
"""
from __future__ import annotations

import math
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


def candidates(rows: list[dict], parent_val: float, max_drop: float, sequential: bool = True) -> list[bool]:
    """Which rows may be chosen: those within `max_drop` and, when `sequential`, reached by their ladder: every
    shallower rung of the same method, in the same form, is within `max_drop` too. Each ladder is then tested
    in order and stops at its first miss (fixed-sequence testing), so a deeper rung that validation happens to
    score higher after a shallower one missed is not taken: pruned further from a rung that missed, its
    better score is noise, not evidence."""
    ok = [qualifies(r, parent_val, max_drop) for r in rows]
    if not sequential:
        return ok
    first_miss: dict[tuple, float] = {}
    for r, within in zip(rows, ok):
        if not within:
            chain = (r.get("method"), r.get("form"))
            first_miss[chain] = min(first_miss.get(chain, math.inf), r.get("ratio", 0.0))
    return [within and r.get("ratio", 0.0) < first_miss.get((r.get("method"), r.get("form")), math.inf)
            for r, within in zip(rows, ok)]


def exhausted(records: list[dict], parent_val: float, max_drop: float) -> bool:
    """True when every form of one ladder's rungs so far (`records`: rung records, each with its "forms") has
    missed `max_drop` at some rung: under the sequential rule no deeper rung of it can be chosen."""
    forms = {f["form"] for rec in records for f in rec["forms"]}
    missed = {f["form"] for rec in records for f in rec["forms"] if not qualifies(f, parent_val, max_drop)}
    return bool(forms) and missed == forms


def select(rows: list[dict], parent_val: float, max_drop: float, target: str,
           sequential: bool = True) -> Optional[dict]:
    """The smallest row by `target` among the `candidates` (validation accuracy, a point estimate, at most
    `max_drop` below the parent's, and reached by its ladder when `sequential`); None when there is none.
    Only validation numbers are read: the test part plays no part."""
    key = TARGETS[target]
    ok = [r for r, c in zip(rows, candidates(rows, parent_val, max_drop, sequential)) if c and r.get(key) is not None]
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
