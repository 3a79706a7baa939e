"""Shared fixtures: a tiny synthetic dataset, a config for it, and the real-data location."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("AUDIOCOMP_FSDD", REPO.parent / "shared" / "data" / "fsdd"))
US8K_SUBSET = Path(os.environ.get("AUDIOCOMP_US8K_SUBSET", REPO.parent / "shared" / "data" / "urbansound8k_subset"))

torch.set_num_threads(1)  # tests run side by side on small machines; 1 thread is fastest and deterministic


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """10 classes x 8 clips of 1 s, generated once per test session."""
    from audiocomp.datasets.synth import generate

    return generate(tmp_path_factory.mktemp("synth"), per_class=8, duration=1.0, seed=1, progress=False)


@pytest.fixture
def tiny_overrides(synth_root) -> list[str]:
    """--set overrides that make any stage run in seconds on the synthetic set."""
    return [f"data.root={synth_root}", "data.dataset=synth", "features.sample_rate=8000", "features.duration=1.0",
            "features.n_fft=256", "features.hop_length=128", "features.n_mels=32", "features.workers=1",
            "model.name=cnn", "model.kwargs.channels=[8,16]", "train.epochs=2", "train.batch_size=16",
            "train.lr=0.003", "split.val_fraction=0.2"]


@pytest.fixture
def tiny_cfg(tiny_overrides):
    from audiocomp.config import load_config

    return load_config([], tiny_overrides)


@pytest.fixture
def fsdd_root() -> Path:
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {FSDD} (set AUDIOCOMP_FSDD)")
    return FSDD


@pytest.fixture
def us8k_subset_root() -> Path:
    if not (US8K_SUBSET / "manifest.csv").is_file():
        pytest.skip(f"the UrbanSound8K subset not found at {US8K_SUBSET} (set AUDIOCOMP_US8K_SUBSET)")
    return US8K_SUBSET


@pytest.fixture(scope="session")
def trained_run(synth_root, tmp_path_factory):
    """A tiny CNN trained once (1 epoch) on the synthetic set: (runs dir, model run, config)."""
    from audiocomp.config import load_config
    from audiocomp.stages import train

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config([], [f"data.root={synth_root}", "data.dataset=synth", "features.sample_rate=8000",
                           "features.duration=1.0", "features.n_fft=256", "features.hop_length=128",
                           "features.n_mels=32", "features.workers=1", "model.name=cnn",
                           "model.kwargs.channels=[8,16]", "train.epochs=1", "train.batch_size=16",
                           "train.lr=0.003", "split.val_fraction=0.2"])
    return runs, train.run(cfg, runs, name="tiny-train", progress=False), cfg
