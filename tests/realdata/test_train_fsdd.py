"""Real data: the compact CNN learns FSDD spoken digits to >= 95% test accuracy in a few CPU minutes.

Split: the dataset's conventional test set, takes 0-4 of every speaker and digit (fold 1 in the adapter),
via split.kind=folds, test_fold=1; validation drawn the same way (10% of takes 5-49 of every speaker, by item,
stratified by digit), which picks the epoch kept.
Measured: 98.0% test accuracy, 16 epochs of about 6 s on one thread of the development machine.
"""
from __future__ import annotations

import pytest

from audiocomp.config import load_config
from audiocomp.models import load_model

FSDD_CNN = ["data.dataset=fsdd", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
            "features.hop_length=256", "features.n_mels=40", "split.kind=folds", "split.test_fold=1",
            "model.name=cnn", "model.kwargs.channels=[16,32,64]", "model.kwargs.pooled=[4,4]",
            "model.kwargs.dropout=0.1", "train.scheduler=cosine", "train.epochs=16", "train.batch_size=32",
            "train.lr=0.003", "train.threads=1"]


@pytest.mark.slow
@pytest.mark.realdata
def test_cnn_reaches_95_percent_on_fsdd(tmp_path, fsdd_root):
    from audiocomp.stages import train

    cfg = load_config([], [f"data.root={fsdd_root}", *FSDD_CNN])
    run = train.run(cfg, tmp_path, name="fsdd-cnn", progress=False)
    m = run.metrics()
    assert m["test_items"] == 300  # 6 speakers x 10 digits x takes 0-4
    assert m["val_items"] == 270 and m["selection"] == "best val_accuracy"
    assert m["test_accuracy"] >= 0.95, m
    assert m["parameters"] < 1_000_000
    load_model(run.path / "model")
