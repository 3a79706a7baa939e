"""Accuracy intervals and paired differences of report rows, recomputed from the runs' predictions files
(evaluate/predictions.py), so the report needs no model: every row's validation and test accuracy gets its
bootstrap interval, and every row its paired test-accuracy difference to a reference row on the same items
(the `--baseline` row, or else the row report.compare names for it, or else the row of the model it was
compressed from)."""
from __future__ import annotations

from typing import Optional

from ..config import ConfigError, IntervalConfig
from ..evaluate.predictions import Predictions, compare, interval


class _Cache(dict):
    def get_part(self, row: dict, part: str) -> Optional[Predictions]:
        path = row.get("predictions", {}).get(part)
        if path is None:
            return None
        if path not in self:
            self[path] = Predictions.load(path)
        return self[path]


def find_row(rows: list[dict], ref: str) -> dict:
    """The row named `ref` (stage id or run name), or a ConfigError listing the names."""
    for row in rows:
        if ref in (row["run"], row["run_dir"]):
            return row
    raise ConfigError(f"--baseline {ref}: no row of that name in the report (rows: "
                      f"{', '.join(r['run'] for r in rows) or 'none'})")


def add_intervals(rows: list[dict], icfg: IntervalConfig, cache: Optional[_Cache] = None) -> None:
    """`<part>_accuracy_low/high` (and `resampled` for test) of every row with predictions of that part."""
    cache = _Cache() if cache is None else cache
    for row in rows:
        for part in ("val", "test"):
            pred = cache.get_part(row, part)
            ci = interval(pred, icfg) if pred is not None else None
            if ci is None:
                continue
            if row.get(f"{part}_accuracy") is None:
                row[f"{part}_accuracy"] = ci["value"]
            row[f"{part}_accuracy_low"], row[f"{part}_accuracy_high"] = ci["low"], ci["high"]
            if part == "test":
                row["resampled"] = ci["resampled"]


def add_differences(rows: list[dict], icfg: IntervalConfig, baseline: Optional[str] = None,
                    cache: Optional[_Cache] = None, pairs: Optional[dict[str, str]] = None) -> None:
    """Paired test-accuracy difference (this row - reference) with its interval and McNemar's p: to the
    `baseline` row for every other row; without one, to the row `pairs` (report.compare) names for it when
    that row is in the report, else to the parent model's row for each compressed row whose parent is in the
    report. Rows scored on other items than the reference get none."""
    cache = _Cache() if cache is None else cache
    by_dir = {r["run_dir"]: r for r in rows}
    by_name = {**by_dir, **{r["run"]: r for r in rows}}
    pairs = pairs or {}
    fixed = find_row(rows, baseline) if baseline else None
    for row in rows:
        paired = by_name.get(pairs.get(row["run"]) or pairs.get(row["run_dir"]) or "")
        ref = fixed or paired or by_dir.get(row.get("parent_run"))
        if ref is None or ref is row:
            continue
        a, b = cache.get_part(ref, "test"), cache.get_part(row, "test")
        d = compare(a, b, icfg) if a is not None and b is not None else None
        if d is None:
            continue
        row.update(vs=ref["run"], diff=d["diff"], diff_low=d["low"], diff_high=d["high"], mcnemar_p=d["mcnemar_p"],
                   ref_only=d["a_only"], this_only=d["b_only"])


def add_comparisons(rows: list[dict], icfg: IntervalConfig, baseline: Optional[str] = None,
                    pairs: Optional[dict[str, str]] = None) -> None:
    cache = _Cache()
    add_intervals(rows, icfg, cache)
    add_differences(rows, icfg, baseline, cache, pairs)
