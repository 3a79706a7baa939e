"""Split properties: stratification, no group leakage, determinism by seed, fold selection."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from audiocomp.config import SplitConfig
from audiocomp.datasets import DatasetError, Item
from audiocomp.datasets.splits import make_splits, norm_stats


def items(n_classes=5, per_class=20, groups_per_class=None, folds=None):
    out = []
    for c in range(n_classes):
        for i in range(per_class):
            out.append(Item(path=f"{c}/{i}.wav", target=c, fold=(i % folds + 1) if folds else None,
                            group=f"g{i % groups_per_class}" if groups_per_class else None))
    return out


def test_holdout_is_stratified_disjoint_and_complete():
    its = items()
    s = make_splits(its, SplitConfig(kind="holdout", test_fraction=0.2, val_fraction=0.1), seed=3)["splits"][0]
    parts = [set(s[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(its) and set.union(*parts) == set(range(len(its)))
    assert Counter(its[i].target for i in s["test"]) == {c: 4 for c in range(5)}  # 20% of every class
    assert all(n == 2 for n in Counter(its[i].target for i in s["val"]).values())


def test_same_seed_same_split_other_seed_other_split():
    its, cfg = items(), SplitConfig(kind="holdout")
    assert make_splits(its, cfg, seed=1) == make_splits(its, cfg, seed=1)
    assert make_splits(its, cfg, seed=1)["splits"][0]["test"] != make_splits(its, cfg, seed=2)["splits"][0]["test"]
    assert make_splits(its, SplitConfig(kind="holdout", seed=7), seed=1) == make_splits(its, SplitConfig(kind="holdout"), seed=7)


@pytest.mark.parametrize("kind", ["group", "holdout"])
def test_no_group_in_two_splits(kind):
    its = items(groups_per_class=7)  # groups span classes (like speakers)
    s = make_splits(its, SplitConfig(kind=kind, test_fraction=0.3, val_fraction=0.2), seed=0)["splits"][0]
    groups = {k: {its[i].group for i in s[k]} for k in ("train", "val", "test")}
    assert groups["train"].isdisjoint(groups["test"]) and groups["train"].isdisjoint(groups["val"])
    assert groups["val"].isdisjoint(groups["test"]) and s["test"] and s["val"]


def test_folds_select_test_fold_val_fold_and_all():
    its = items(folds=5)
    one = make_splits(its, SplitConfig(kind="folds", test_fold=2, val_fold=3), seed=0)["splits"]
    assert len(one) == 1 and one[0]["test_fold"] == 2
    assert {its[i].fold for i in one[0]["test"]} == {2} and {its[i].fold for i in one[0]["val"]} == {3}
    assert {its[i].fold for i in one[0]["train"]} == {1, 4, 5}
    every = make_splits(its, SplitConfig(kind="folds", test_fold="all", val_fraction=0), seed=0)["splits"]
    assert [e["name"] for e in every] == [f"fold{f}" for f in range(1, 6)]
    assert sorted(i for e in every for i in e["test"]) == list(range(len(its)))  # each item tested once
    with pytest.raises(DatasetError, match="no such fold"):
        make_splits(its, SplitConfig(kind="folds", test_fold=9), seed=0)
    with pytest.raises(DatasetError, match="no official folds"):
        make_splits(items(), SplitConfig(kind="folds"), seed=0)


def test_norm_stats_use_training_rows_only():
    x = np.zeros((4, 1, 2, 3), np.float16)
    x[2:] = 100  # test rows
    x[0, 0, 1] = 2
    st = norm_stats(x, [0, 1], "per_bin")
    assert st["mean"] == pytest.approx([0, 1]) and st["std"][1] == pytest.approx(1)
    assert norm_stats(x, [0, 1], "global")["mean"] == pytest.approx([0.5])


def test_shipped_data_configs_validate():
    from pathlib import Path

    from audiocomp.config import load_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs" / "data").glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        assert load_config([f]).data.dataset in f.stem or f.stem == "esc10"
