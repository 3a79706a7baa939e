"""Decoding and featurizing every file of a dataset in worker processes (and in the calling process while they
start), for the feature store. A file that cannot be decoded gives an error, never an exception."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator, Optional

import numpy as np

from ..audio import AudioError, fix_length, load, load_fixed, segments
from ..config import FeaturesConfig
from ..datasets.base import DatasetError
from ..runs import crash_point
from .extract import FeatureExtractor

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


def featurized(jobs: list, feats: FeaturesConfig, workers: int) -> Iterator:
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
