"""The feature store: every item decoded and featurized once, kept as a float16 memory-mapped array.

One folder per hash of (dataset index, audio + feature config). It is built in a temporary folder and
renamed into place only when complete, so an interrupted build is never mistaken for a finished one.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..audio import AudioError, load, load_fixed, segments
from ..config import DataConfig, FeaturesConfig, stable_hash
from ..datasets.base import DatasetError, DatasetIndex, Item
from ..runs import atomic_write_json, crash_point, file_sha256, read_json
from .extract import FeatureExtractor, feature_shape

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


# ------------------------------------------------------------------------------------- worker side

_EXTRACTOR: Optional[FeatureExtractor] = None


def _init_worker(feats: dict) -> None:
    global _EXTRACTOR
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    _EXTRACTOR = FeatureExtractor(FeaturesConfig(**feats))


def _featurize(job: tuple[int, str, float, Optional[float], Optional[float]]):
    """One file -> (index, list of float16 arrays, error or None). Never raises for bad audio."""
    idx, path, start_s, end_s, segment_s = job
    crash_point(f"featurize {path}")
    cfg = _EXTRACTOR.cfg
    length = int(round(cfg.duration * cfg.sample_rate))
    try:
        if cfg.duration_policy == "segment" or segment_s:
            pieces = segments(load(path, cfg.sample_rate, start_s, end_s), length)
        else:  # decode only the part that is kept
            pieces = [load_fixed(path, cfg.sample_rate, length, cfg.duration_policy, start_s, end_s)]
        out = []
        for piece in pieces:
            x = _EXTRACTOR(piece).astype(np.float16)
            if not np.isfinite(x).all():  # checked after the cast: float16 overflows above 65504
                raise AudioError(f"{path}: features are not finite (NaN, or too loud for float16)")
            out.append(x)
        return idx, out, None
    except AudioError as exc:
        return idx, [], str(exc)
    except Exception as exc:  # a decoder bug must not kill the whole build; it is reported per file
        return idx, [], f"{path}: {type(exc).__name__}: {exc}"


def _results(jobs: list, feats: FeaturesConfig, workers: int) -> Iterator:
    payload = feats.model_dump()
    if workers <= 1:
        _init_worker(payload)
        yield from map(_featurize, jobs)
        return
    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(payload,)) as pool:
        try:
            yield from pool.map(_featurize, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 8) or 1)))
        except BrokenProcessPool:
            raise DatasetError("a feature worker process died (killed, out of memory, or a decoder crash); "
                               "re-run with features.workers=1 to see which file") from None


# ------------------------------------------------------------------------------------- build

def _remove_abandoned(cache_dir: Path, name: str) -> None:
    """Temp folders of builds whose process is gone (killed): they would only fill the disk."""
    import psutil

    for folder in cache_dir.glob(f".{name}.tmp-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not psutil.pid_exists(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)


def build_store(index: DatasetIndex, data: DataConfig, feats: FeaturesConfig, cache_dir: Path,
                workers: Optional[int] = None, progress: bool = True) -> FeatureStore:
    """Return the store for (index, config), building it if it does not exist yet."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    final = cache_dir / store_key(index, data, feats)
    if (final / COMPLETE).is_file():
        return FeatureStore.open(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}"
    _remove_abandoned(cache_dir, final.name)  # ours too, from an earlier process with the same pid
    tmp.mkdir()
    t0 = time.perf_counter()
    workers = workers or feats.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(index.items)))
    segment_s = data.segment_seconds
    if segment_s:  # the segment length is the feature duration
        feats = feats.model_copy(update={"duration": segment_s, "duration_policy": "segment"})
    shape = feature_shape(feats)
    per_file = 1
    if feats.duration_policy == "segment":  # upper bound on rows; trimmed after the build
        per_file = None
    jobs = [(i, str(index.abspath(it)), it.start_s, it.end_s, segment_s) for i, it in enumerate(index.items)]
    capacity = len(jobs) * (per_file or 64)
    arr_path = tmp / FEATURES_FILE
    rows: list[Item] = []
    errors: list[str] = []
    try:
        chunks: list[np.ndarray] = []
        arr = None
        if per_file == 1:
            arr = np.lib.format.open_memmap(arr_path, mode="w+", dtype=np.float16, shape=(capacity, *shape))
        for idx, pieces, err in tqdm(_results(jobs, feats, workers), total=len(jobs), desc="prepare",
                                     unit="file", disable=not progress):
            if err:
                if data.on_error == "fail":
                    raise DatasetError(err)
                warnings.warn(f"skipped {err}", stacklevel=1)
                errors.append(err)
                continue
            item = index.items[idx]
            for k, x in enumerate(pieces):
                row_item = item
                if len(pieces) > 1 or feats.duration_policy == "segment":
                    row_item = Item(path=item.path, target=item.target, fold=item.fold,
                                    group=item.group or item.path, start_s=item.start_s + k * feats.duration,
                                    end_s=item.start_s + (k + 1) * feats.duration)
                if arr is not None:
                    arr[len(rows)] = x
                else:
                    chunks.append(x)
                rows.append(row_item)
        if not rows:
            raise DatasetError(f"{index.root}: no item could be decoded ({len(errors)} errors; first: {errors[:1]})")
        if arr is not None:
            arr.flush()
            del arr
            if len(rows) < capacity:  # skipped files: rewrite without the empty tail
                full = np.load(arr_path, mmap_mode="r")
                trimmed = np.lib.format.open_memmap(tmp / "trim.npy", mode="w+", dtype=np.float16,
                                                    shape=(len(rows), *shape))
                trimmed[:] = full[: len(rows)]
                trimmed.flush()
                del trimmed, full
                os.replace(tmp / "trim.npy", arr_path)
        else:
            np.save(arr_path, np.stack(chunks))
        report = {"files": len(index.items), "rows": len(rows), "skipped": len(errors), "errors": errors,
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
