"""AudioSet (Gemmeke et al. 2017) from the official segment CSVs, with audio the user already has.

Layout under `data.root`: `class_labels_indices.csv` (index, mid, display_name), one or more segment CSVs
(`balanced_train_segments.csv`, `unbalanced_train_segments.csv`, `eval_segments.csv`: three `#` header
lines, then `YTID, start_seconds, end_seconds, "label,label"`), and the clips as audio files named by
YTID (`<YTID>.wav` or `Y<YTID>.flac`, any audio extension, anywhere under the root), each holding the
listed 10-s segment. Targets are tuples of class indices (multi-label). fold = 1 for the train CSVs and 2
for eval_segments.csv, so `split.kind: folds` with `test_fold: 2` is the official evaluation split.
`data.manifest` picks one segment CSV instead of all of them.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..config import DataConfig
from .base import ADAPTERS, AUDIO_EXTENSIONS, DatasetError, DatasetIndex, Item, as_int, read_csv, require_root, safe_relpath

SEGMENT_CSVS = {"balanced_train_segments.csv": 1, "unbalanced_train_segments.csv": 1, "eval_segments.csv": 2}
MISSING_LISTED = 20  # name this many missing clips in the report, then only count


def _segment_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [(n, row) for n, row in enumerate(csv.reader(fh, skipinitialspace=True), 1)
                    if row and not row[0].startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read segment list ({exc})") from None


def _audio_by_ytid(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file():
            found.setdefault(f.stem, f)
            if f.stem.startswith("Y"):  # the AudioSet download scripts' Y<YTID> naming
                found.setdefault(f.stem[1:], f)
    return found


@ADAPTERS.register("audioset")
def audioset_dataset(cfg: DataConfig) -> DatasetIndex:
    root = require_root(cfg)
    labels_csv = root / "class_labels_indices.csv"
    label_rows = read_csv(labels_csv, ("index", "mid", "display_name"))
    by_mid = {r["mid"]: as_int(r["index"], labels_csv, n, "index") for n, r in label_rows}
    classes = [""] * (max(by_mid.values(), default=-1) + 1)
    for _, r in label_rows:
        classes[int(r["index"])] = r["display_name"]
    if cfg.manifest:
        lists = {root / safe_relpath(root, cfg.manifest, "data.manifest"): 1}
    else:
        lists = {root / name: fold for name, fold in SEGMENT_CSVS.items() if (root / name).is_file()}
    if not lists:
        raise DatasetError(f"{root}: no segment CSV (expected one of {', '.join(SEGMENT_CSVS)}, or set data.manifest)")
    audio = _audio_by_ytid(root)
    items, problems, missing, listed = [], [], [], 0
    for seg_csv, fold in lists.items():
        if not seg_csv.is_file():
            raise DatasetError(f"{seg_csv}: segment list not found (data.manifest)")
        for n, row in _segment_rows(seg_csv):
            if len(row) < 4:
                raise DatasetError(f"{seg_csv}, row {n}: expected YTID, start_seconds, end_seconds, positive_labels")
            ytid, labels = row[0].strip(), [m.strip() for m in row[3].split(",") if m.strip()]
            unknown = [m for m in labels if m not in by_mid]
            if unknown or not labels:
                problems.append(f"{seg_csv}, row {n}: unknown label(s) {unknown or '(none)'} for {ytid}, skipped")
                continue
            listed += 1
            f = audio.get(ytid)
            if f is None:
                missing.append(ytid)
                continue
            items.append(Item(path=f.relative_to(root).as_posix(), target=tuple(sorted({by_mid[m] for m in labels})),
                              fold=fold, group=ytid))
    if missing:
        shown = ", ".join(missing[:MISSING_LISTED]) + (", ..." if len(missing) > MISSING_LISTED else "")
        problems.insert(0, f"{root}: {len(missing)} of {listed} listed clips are missing on disk ({shown})")
    return DatasetIndex(root=root, items=items, classes=classes, multilabel=True, problems=problems)
