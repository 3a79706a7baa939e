"""Prepare the real FSDD recordings (3,000 spoken digits, 8 kHz) when ../shared/data/fsdd exists."""
from __future__ import annotations

import numpy as np
import pytest

from audiocomp.config import load_config
from audiocomp.stages import prepare

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_prepare_fsdd_speaker_split(fsdd_root, tmp_path):
    cfg = load_config([], [f"data.root={fsdd_root}", "data.dataset=fsdd", "features.sample_rate=8000",
                           "features.duration=1.0", "features.n_fft=256", "features.hop_length=128",
                           "features.n_mels=32", "split.kind=group", "split.test_fraction=0.2", "split.val_fraction=0.1"])
    prepared = prepare.run(cfg, tmp_path, progress=False)
    store, split = prepared.store, prepared.split()
    assert store.report["skipped"] == 0 and len(store.items) == 3000
    assert store.features.shape == (3000, 1, 32, 63)
    x = np.asarray(store.features[:100], dtype=np.float32)
    assert np.isfinite(x).all() and x.std() > 1.0  # real spectrograms, not padding only
    speakers = {k: {store.items[i].group for i in split[k]} for k in ("train", "val", "test")}
    assert speakers["test"] and speakers["train"].isdisjoint(speakers["test"] | speakers["val"])
    assert set(store.targets()[split["test"]]) == set(range(10))
    assert prepare.run(cfg, tmp_path, progress=False).run.path == prepared.run.path  # reused, not rebuilt
