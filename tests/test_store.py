"""Feature store: cache hits and misses, invalidation by every feature setting, interrupted builds, workers."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from audiocomp.config import FeaturesConfig, load_config
from audiocomp.datasets import DatasetError, load_index
from audiocomp.features import featurize as store_mod  # the worker side of the store
from audiocomp.features.store import COMPLETE, FeatureStore, build_store, store_key
from audiocomp.stages import prepare


@pytest.fixture
def index_cfg(tiny_cfg):
    return load_index(tiny_cfg.data), tiny_cfg


CHANGES = {"kind": "mfcc", "sample_rate": 16000, "duration": 0.9, "duration_policy": "pad", "n_fft": 512,
           "hop_length": 64, "win_length": 200, "n_mels": 24, "f_min": 20.0, "f_max": 3000.0, "top_db": 60.0,
           "n_mfcc": 20, "normalize": "global"}


def test_every_feature_setting_changes_the_key_but_workers_do_not(index_cfg):
    index, cfg = index_cfg
    assert set(CHANGES) | {"workers"} == set(FeaturesConfig.model_fields)  # a new field must be listed here
    base = store_key(index, cfg.data, cfg.features)
    for field, value in CHANGES.items():
        assert store_key(index, cfg.data, cfg.features.model_copy(update={field: value})) != base, field
    assert store_key(index, cfg.data, cfg.features.model_copy(update={"workers": 2})) == base
    fewer = type(index)(root=index.root, items=index.items[:-1], classes=index.classes)
    assert store_key(fewer, cfg.data, cfg.features) != base  # a different item list is a different store


def test_hit_miss_and_invalidation(index_cfg, tmp_path, monkeypatch):
    index, cfg = index_cfg
    calls = []
    real = store_mod._featurize
    monkeypatch.setattr(store_mod, "_featurize", lambda job: calls.append(job[0]) or real(job))
    first = build_store(index, cfg.data, cfg.features, tmp_path, workers=1, progress=False)
    assert len(calls) == len(index.items)
    again = build_store(index, cfg.data, cfg.features, tmp_path, workers=1, progress=False)
    assert len(calls) == len(index.items) and again.path == first.path  # hit: nothing decoded
    changed = build_store(index, cfg.data, cfg.features.model_copy(update={"n_mels": 24}), tmp_path, workers=1,
                          progress=False)
    assert len(calls) == 2 * len(index.items) and changed.path != first.path  # miss: rebuilt
    assert changed.features.shape[2] == 24 and first.features.shape[2] == 32
    first.verify()


def test_interrupted_build_leaves_nothing_trusted(index_cfg, tmp_path, monkeypatch):
    index, cfg = index_cfg
    real, seen = store_mod._featurize, []

    def dies_halfway(job):
        seen.append(job)
        if len(seen) > len(index.items) // 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(store_mod, "_featurize", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        build_store(index, cfg.data, cfg.features, tmp_path, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither a store nor a temporary folder
    # a build killed outright (no cleanup) leaves a temp folder: never opened, removed by the next build
    stale = tmp_path / f".{store_key(index, cfg.data, cfg.features)}.tmp-{socket.gethostname()}-999999999"
    stale.mkdir()
    (stale / "features.npy").write_bytes(b"half")
    monkeypatch.setattr(store_mod, "_featurize", real)
    built = build_store(index, cfg.data, cfg.features, tmp_path, workers=1, progress=False)
    assert not stale.exists() and len(built.items) == len(index.items)
    (built.path / COMPLETE).unlink()  # e.g. a copy that lost its marker
    with pytest.raises(DatasetError, match="incomplete"):
        FeatureStore.open(built.path)


def test_checksum_detects_a_changed_array(index_cfg, tmp_path):
    index, cfg = index_cfg
    built = build_store(index, cfg.data, cfg.features, tmp_path, workers=1, progress=False)
    with open(built.path / "features.npy", "r+b") as fh:
        fh.seek(-2, os.SEEK_END)
        fh.write(b"\x00\x7c")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        built.verify()


def test_worker_processes_give_the_same_store(index_cfg, tmp_path):
    index, cfg = index_cfg
    one = build_store(index, cfg.data, cfg.features, tmp_path / "a", workers=1, progress=False)
    two = build_store(index, cfg.data, cfg.features, tmp_path / "b", workers=2, progress=False)
    assert one.items == two.items and np.array_equal(one.features, two.features)


def test_second_prepare_reuses_the_run_and_the_store(tiny_cfg, tmp_path):
    first = prepare.run(tiny_cfg, tmp_path, progress=False)
    again = prepare.run(tiny_cfg, tmp_path, progress=False)
    assert again.run.path == first.run.path and again.splits == first.splits
    other = prepare.run(tiny_cfg, tmp_path, name="another", progress=False)  # a new run on the same store
    assert other.store.path == first.store.path and other.splits == first.splits  # statistics from the cache
    assert len(list(first.store.path.glob("norm-*.json"))) == 1
    assert first.splits["splits"][0]["norm"]["mode"] == "per_bin"


def test_on_error_fail_stops_on_a_bad_file_even_when_cached(tmp_path):
    from audio_fixtures import corrupt, tone

    root = tmp_path / "data"
    for i in range(3):
        tone(root / "a" / f"{i}.wav")
    corrupt(root / "a" / "bad.wav")
    overrides = [f"data.root={root}", "data.dataset=folder", "features.sample_rate=8000", "features.duration=0.5",
                 "features.n_fft=256", "features.hop_length=128", "features.n_mels=16"]
    skip = load_config([], overrides)
    with pytest.warns(UserWarning, match="bad.wav"):
        assert build_store(load_index(skip.data), skip.data, skip.features, tmp_path / "s", workers=1,
                           progress=False).report["skipped"] == 1
    fail = load_config([], overrides + ["data.on_error=fail"])
    with pytest.raises(DatasetError, match=r"bad\.wav.*on_error=fail"):
        build_store(load_index(fail.data), fail.data, fail.features, tmp_path / "s", workers=1, progress=False)
    with pytest.raises(DatasetError, match=r"bad\.wav: cannot decode"):
        build_store(load_index(fail.data), fail.data, fail.features, tmp_path / "other", workers=1, progress=False)
    assert not list((tmp_path / "other").iterdir())
