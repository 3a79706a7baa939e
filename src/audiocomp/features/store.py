"""The feature store: every item decoded and featurized once, kept as a float16 memory-mapped array.

One folder per hash of (dataset index, audio + feature config). It is built in a temporary folder and
renamed into place only when complete, so an interrupted build is never mistaken for a finished one.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import DataConfig, FeaturesConfig, stable_hash
from ..datasets.base import DatasetError, DatasetIndex, Item
from ..runs import atomic_write_json, file_sha256, read_json
from .extract import feature_shape, mel_band_hz
from .featurize import featurized

FEATURES_FILE = "features.npy"
COMPLETE = "COMPLETE"


@dataclass
class FeatureStore:
    path: Path
    items: list[Item]  # one per row; segments of one file share its path and group
    classes: list[str]
    multilabel: bool
    report: dict

    @property
    def features(self) -> np.ndarray:
        """(N, *feature_shape) float16, memory-mapped read-only."""
        return np.load(self.path / FEATURES_FILE, mmap_mode="r")

    def features_config(self) -> FeaturesConfig:
        """The feature settings the stored arrays were computed with."""
        return FeaturesConfig(**read_json(self.path / "config.json")["features"])

    def band_hz(self):
        """(n_mels,) centre frequencies of the stored log-mel bands (pitch-shift augmentation); None for other
        features."""
        cfg = self.features_config()
        return mel_band_hz(cfg) if cfg.kind == "logmel" else None

    def targets(self) -> np.ndarray:
        if self.multilabel:
            y = np.zeros((len(self.items), len(self.classes)), np.float32)
            for i, it in enumerate(self.items):
                y[i, list(it.target)] = 1.0
            return y
        return np.array([it.target for it in self.items], dtype=np.int64)

    @classmethod
    def open(cls, path: Path) -> "FeatureStore":
        path = Path(path)
        if not (path / COMPLETE).is_file():
            raise DatasetError(f"{path}: feature store is incomplete (interrupted build?); run `audiocomp prepare` again")
        meta = read_json(path / "items.json")
        return cls(path=path, items=[Item.from_dict(d) for d in meta["items"]], classes=meta["classes"],
                   multilabel=meta["multilabel"], report=read_json(path / "report.json"))

    def verify(self) -> None:
        """Full checksum check of the feature array (slow on big stores; `data info --verify`)."""
        expected = (self.path / "checksum").read_text().split()[0]
        if file_sha256(self.path / FEATURES_FILE) != expected:
            raise DatasetError(f"{self.path / FEATURES_FILE}: checksum mismatch (corrupted); delete the folder and prepare again")


def store_key(index: DatasetIndex, data: DataConfig, feats: FeaturesConfig) -> str:
    """Hash of everything that changes the stored arrays: the item list and the audio/feature settings."""
    f = feats.model_dump(mode="json")
    f.pop("workers", None)  # how many processes did the work does not change the result
    d = {"dataset": data.dataset, "segment_seconds": data.segment_seconds, "root": str(index.root.resolve()),
         "items": [it.to_dict() for it in index.items], "features": f, "version": 1}
    return f"{data.dataset}-{stable_hash(d, 16)}"


# ------------------------------------------------------------------------------------- build

def _compact(path: Path, keep: list[int], scratch: Path, chunk: int = 1024) -> None:
    """Rewrite the array at `path` with only the rows in `keep`, a chunk at a time (no full copy in memory)."""
    full = np.load(path, mmap_mode="r")
    out = np.lib.format.open_memmap(scratch, mode="w+", dtype=full.dtype, shape=(len(keep), *full.shape[1:]))
    for start in range(0, len(keep), chunk):
        out[start:start + chunk] = full[keep[start:start + chunk]]
    out.flush()
    del out, full
    os.replace(scratch, path)


def _remove_abandoned(cache_dir: Path) -> None:
    """Delete half-built stores whose building process on this host is gone (killed, power loss)."""
    import psutil

    for tmp in cache_dir.glob(f".*.tmp-{socket.gethostname()}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def build_store(index: DatasetIndex, data: DataConfig, feats: FeaturesConfig, cache_dir: Path,
                workers: Optional[int] = None, progress: bool = True) -> FeatureStore:
    """Return the store for (index, config), building it if it does not exist yet."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    final = cache_dir / store_key(index, data, feats)
    if (final / COMPLETE).is_file():
        store = FeatureStore.open(final)
        if data.on_error == "fail" and store.report["skipped"]:  # built earlier with on_error: skip
            raise DatasetError(f"skipped {store.report['errors'][0]} (data.on_error=fail; cached in {final})")
        return store
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(cache_dir)
    tmp = cache_dir / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    workers = workers or feats.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(index.items)))
    segment_s = data.segment_seconds
    if segment_s:  # the segment length is the feature duration
        feats = feats.model_copy(update={"duration": segment_s, "duration_policy": "segment"})
    shape = feature_shape(feats)
    segmented = feats.duration_policy == "segment"
    jobs = [(i, str(index.abspath(it)), it.start_s, it.end_s, segment_s) for i, it in enumerate(index.items)]
    arr_path = tmp / FEATURES_FILE
    errors: dict[int, str] = {}
    try:
        # one row per file, written at the file's index (results arrive out of order); segmented clips have
        # a variable number of rows, kept in memory until every file is done
        arr = None if segmented else np.lib.format.open_memmap(arr_path, mode="w+", dtype=np.float16,
                                                                shape=(len(jobs), *shape))
        pieces_by_file: dict[int, list[np.ndarray]] = {}
        for idx, pieces, err in tqdm(featurized(jobs, feats, workers), total=len(jobs), desc="prepare",
                                     unit="file", disable=not progress):
            if err:
                if data.on_error == "fail":
                    raise DatasetError(err)
                warnings.warn(f"skipped {err}", stacklevel=1)
                errors[idx] = err
            elif arr is not None:
                arr[idx] = pieces[0]
            else:
                pieces_by_file[idx] = pieces
        kept = [i for i in range(len(jobs)) if i not in errors]
        if not kept:
            raise DatasetError(f"{index.root}: no item could be decoded ({len(errors)} errors; first: "
                               f"{next(iter(errors.values()))})")
        if segmented:
            rows = [Item(path=it.path, target=it.target, fold=it.fold, group=it.group or it.path,
                         start_s=it.start_s + k * feats.duration, end_s=it.start_s + (k + 1) * feats.duration)
                    for i in kept for it in [index.items[i]] for k in range(len(pieces_by_file[i]))]
            np.save(arr_path, np.stack([x for i in kept for x in pieces_by_file[i]]))
        else:
            rows = [index.items[i] for i in kept]
            arr.flush()
            del arr
            if errors:  # rewrite without the skipped files' rows
                _compact(arr_path, kept, tmp / "compact.npy")
        errors_list = [errors[i] for i in sorted(errors)]
        report = {"files": len(index.items), "rows": len(rows), "skipped": len(errors), "errors": errors_list,
                  "index_problems": index.problems, "shape": list(shape), "seconds": round(time.perf_counter() - t0, 3),
                  "workers": workers}
        atomic_write_json(tmp / "items.json", {"classes": index.classes, "multilabel": index.multilabel,
                                               "items": [it.to_dict() for it in rows]})
        atomic_write_json(tmp / "report.json", report)
        atomic_write_json(tmp / "config.json", {"data": data.model_dump(mode="json"),
                                                "features": feats.model_dump(mode="json")})
        (tmp / "checksum").write_text(f"{file_sha256(arr_path)}  {FEATURES_FILE}\n")
        (tmp / COMPLETE).write_text(json.dumps({"built": time.time()}) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same store first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FeatureStore.open(final)
