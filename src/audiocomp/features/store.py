"""The feature store: every item decoded and featurized once, kept as a float16 memory-mapped array.

One folder per hash of (dataset index, audio + feature config). It is built in a temporary folder and
renamed into place only when complete, so an interrupted build is never mistaken for a finished one.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import threading
import time
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..audio import AudioError, fix_length, load, load_fixed, segments
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


def _check_long_enough(y: np.ndarray, path: str, cfg: FeaturesConfig, length: int) -> None:
    if len(y) < min(cfg.n_fft, length):
        raise AudioError(f"{path}: too short ({len(y)} samples at {cfg.sample_rate} Hz, "
                         f"less than one {min(cfg.n_fft, length)}-sample window)")


def _featurize(job: tuple[int, str, float, Optional[float], Optional[float]]):
    """One file -> (index, list of float16 arrays, error or None). Never raises for bad audio."""
    idx, path, start_s, end_s, segment_s = job
    if mp.parent_process() is not None:  # fault injection kills a worker, never the parent that also works
        crash_point(f"featurize {path}")
    cfg = _EXTRACTOR.cfg
    length = int(round(cfg.duration * cfg.sample_rate))
    try:
        if cfg.duration_policy == "segment" or segment_s:
            y = load(path, cfg.sample_rate, start_s, end_s)
            _check_long_enough(y, path, cfg, length)
            pieces = segments(y, length)
        else:  # decode only the part that is kept
            y = load_fixed(path, cfg.sample_rate, length, cfg.duration_policy, start_s, end_s, keep_short=True)
            _check_long_enough(y, path, cfg, length)
            pieces = [fix_length(y, length, cfg.duration_policy)]
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


def _featurize_chunk(jobs: list) -> list:
    return [_featurize(job) for job in jobs]


@contextlib.contextmanager
def _parent_extractor(feats: dict) -> Iterator[None]:
    """Let the calling process featurize too, with one torch thread, restoring its settings afterwards."""
    import torch

    global _EXTRACTOR
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _EXTRACTOR = FeatureExtractor(FeaturesConfig(**feats))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _results(jobs: list, feats: FeaturesConfig, workers: int) -> Iterator:
    """Yield (index, pieces, error) per job, in completion order.

    Workers fork from a forkserver that has imported this module once (spawning each one re-imports torch,
    about a second of CPU per worker). Jobs go out in chunks to save per-file round trips, and while the
    workers start or are busy the parent works through chunks from the other end of the queue.
    """
    payload = feats.model_dump()
    size = max(1, min(32, len(jobs) // (workers * 4) or 1))
    chunks = deque(jobs[i:i + size] for i in range(0, len(jobs), size))
    with _parent_extractor(payload):
        if workers <= 1:
            for chunk in chunks:
                yield from _featurize_chunk(chunk)
            return
        # a plain fork after torch has started threads can deadlock; forkserver forks a clean process
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(payload,)) as pool:
            running: set = set()
            started = False  # until a worker has answered, give each worker one chunk: the parent does the rest

            def submit() -> None:  # the first submit blocks until the worker processes exist
                while chunks and len(running) < (2 if started else 1) * workers:
                    running.add(pool.submit(_featurize_chunk, chunks.popleft()))

            starter = threading.Thread(target=submit, daemon=True)
            starter.start()
            while starter.is_alive() and chunks:  # work in this process while the workers start
                yield from _featurize_chunk(chunks.pop())
            starter.join()
            while chunks or running:
                submit()
                done = {f for f in running if f.done()}
                if not done and chunks:
                    yield from _featurize_chunk(chunks.pop())
                    continue
                if not done:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                started = True
                for f in done:
                    running.discard(f)
                    try:
                        yield from f.result()
                    except BrokenProcessPool:
                        raise DatasetError("a feature worker process died (killed, out of memory, or a decoder "
                                           "crash); re-run with features.workers=1 to see which file") from None


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
        for idx, pieces, err in tqdm(_results(jobs, feats, workers), total=len(jobs), desc="prepare",
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
