"""Paired test (or validation) accuracy difference of two recipes over several seeds: each BASE:NEW pair of
model runs (same prepared data and split) alone, then pooled, with a recording resampled with all its seeds.
Reads the runs' saved predictions; trains and chooses nothing.

    python scripts/compare_pooled.py test runs/hs-s0:runs/ours-s0 runs/hs-s1:runs/ours-s1 runs/hs-s2:runs/ours-s2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from audiocomp.evaluate.predictions import Predictions, compare, compare_pooled, file_name  # noqa: E402
from audiocomp.evaluate.stats import format_paired  # noqa: E402
from audiocomp.runs import RunError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["val", "test"])
    ap.add_argument("pairs", nargs="+", metavar="BASE_RUN:NEW_RUN")
    args = ap.parse_args(argv)
    try:
        pairs = []
        for pair in args.pairs:
            if pair.count(":") != 1:
                raise RunError(f"{pair}: expected BASE_RUN:NEW_RUN")
            base, new = (Predictions.load(Path(run) / file_name(args.part)) for run in pair.split(":"))
            if (d := compare(base, new)) is None:
                raise RunError(f"{pair}: the two runs did not score the same single-label items")
            print(f"{pair}: {format_paired(d)}")
            pairs.append((base, new))
        if len(pairs) > 1:
            print(f"pooled over {len(pairs)} pairs: {format_paired(compare_pooled(pairs))}")
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
