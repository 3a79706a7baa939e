"""Batches straight from the feature store array: indexing a block of rows and one float16->float32 cast
per batch, no per-item Python collate, so the data path keeps up with the model on a CPU."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

IN_MEMORY_LIMIT = 2 * 1024 ** 3  # bytes of float16 features loaded into RAM rather than memory-mapped


class ArrayBatches:
    """Iterable of (x float32 (B, ...), y) over `rows` of a feature array; reshuffled per epoch by seed."""

    def __init__(self, features: np.ndarray, targets: np.ndarray, rows, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world: int = 1):
        rows = np.asarray(rows, dtype=np.int64)
        # load the needed rows into RAM when they fit: random access to a memmap is slow on disks
        nbytes = len(rows) * int(np.prod(features.shape[1:])) * features.dtype.itemsize
        if nbytes <= IN_MEMORY_LIMIT:
            self.features = torch.from_numpy(np.ascontiguousarray(features[np.sort(rows)]))
            self.local = np.searchsorted(np.sort(rows), rows)
        else:
            self.features, self.local = features, rows
        self.rows = rows
        self.targets = torch.from_numpy(np.asarray(targets)[rows])
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        order = np.arange(len(self.rows))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))
        if self.world > 1:  # each rank takes every world-th item of the same permutation (padded)
            per_rank = -(-len(order) // self.world)
            order = np.resize(order, per_rank * self.world)[self.rank::self.world]
        return order

    def __len__(self) -> int:
        n = len(self._order())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            pos = order[start:start + self.batch_size]
            if self.drop_last and len(pos) < self.batch_size:
                break
            idx = self.local[pos]
            if isinstance(self.features, torch.Tensor):
                x = self.features[torch.from_numpy(idx)].float()
            else:
                sort = np.argsort(idx)
                x = torch.from_numpy(np.asarray(self.features[idx[sort]], dtype=np.float32))[torch.from_numpy(np.argsort(sort))]
            yield x, self.targets[torch.from_numpy(pos)]


def calibration_rows(rows, batch_size: int, n_batches: int, seed: int) -> np.ndarray:
    """The store rows a calibration sample uses: the first n_batches * batch_size of a seeded shuffle."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.random.default_rng([seed, 0]).permutation(len(rows))  # ArrayBatches' epoch-0 shuffle
    return rows[order[:batch_size * n_batches]]


def calibration_batches(features, targets, rows, batch_size: int) -> list[tuple]:
    """The (x, y) batches of exactly `rows`, in order: build them from the rows a run records (Taylor
    importance, INT8 calibration), so that what is recorded is what was used."""
    return list(ArrayBatches(features, targets, rows, batch_size))
