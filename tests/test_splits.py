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
        data = load_config([f]).data  # named after its adapter, or a csv manifest of a named dataset
        assert data.dataset in f.stem or f.stem == "esc10" or (data.dataset == "csv" and data.manifest)


def speaker_items(speakers=4, digits=5, takes=20):
    """FSDD's layout: every speaker says every digit; fold 1 = takes 0-4 (speaker-dependent test set)."""
    return [Item(path=f"{d}_{s}_{t}.wav", target=d, group=f"s{s}", fold=1 if t < 5 else 2)
            for s in range(speakers) for d in range(digits) for t in range(takes)]


def test_validation_is_drawn_like_a_speaker_dependent_test_fold():
    """FSDD's conventional fold holds takes 0-4 of every speaker: validation must hold every speaker too,
    by item, stratified by digit, from the other takes (not one held-out speaker)."""
    its = speaker_items()
    s = make_splits(its, SplitConfig(kind="folds", test_fold=1, val_fraction=0.1), seed=0)["splits"][0]
    assert {its[i].fold for i in s["val"]} == {2} and not set(s["val"]) & set(s["test"])
    assert {its[i].group for i in s["val"]} == {f"s{k}" for k in range(4)}  # every speaker, as in the test fold
    assert Counter(its[i].target for i in s["val"]) == {d: 6 for d in range(5)}  # 10% of 60 takes per digit
    assert "by item" in s["drawn"]["val"] and "stratified by class" in s["drawn"]["val"]
    assert s["drawn"]["test"] == "official fold 1"
    by_group = make_splits(its, SplitConfig(kind="folds", test_fold=1, val_fraction=0.25, val_by="group"),
                           seed=0)["splits"][0]  # asked for explicitly: whole speakers
    groups = {k: {its[i].group for i in by_group[k]} for k in ("train", "val")}
    assert groups["val"] and groups["val"].isdisjoint(groups["train"]) and "by whole group" in by_group["drawn"]["val"]


def test_validation_holds_out_whole_groups_when_the_test_part_does():
    its = speaker_items(speakers=10, takes=4)
    for cfg in (SplitConfig(kind="group", test_fraction=0.2, val_fraction=0.2),
                SplitConfig(kind="holdout", test_fraction=0.2, val_fraction=0.2)):
        s = make_splits(its, cfg, seed=0)["splits"][0]
        groups = {k: {its[i].group for i in s[k]} for k in ("train", "val", "test")}
        assert groups["test"].isdisjoint(groups["train"] | groups["val"]), cfg.kind
        assert groups["val"] and groups["val"].isdisjoint(groups["train"]), cfg.kind
        assert "by whole group" in s["drawn"]["val"] and s["drawn"]["train"] == "the rest"


def test_no_validation_part_only_when_asked_and_an_empty_carve_is_an_error():
    its = speaker_items()
    s = make_splits(its, SplitConfig(kind="folds", test_fold=1, val_fraction=0), seed=0)["splits"][0]
    assert s["val"] == [] and s["drawn"]["val"].startswith("none (split.val_fraction: 0)")
    one_speaker = speaker_items(speakers=1)  # one group: nothing to carve by whole group
    with pytest.raises(DatasetError, match=r"split\.val_fraction=0\.1 carved no validation items.*split\.val_by=item"):
        make_splits(one_speaker, SplitConfig(kind="folds", test_fold=1, val_by="group"), seed=0)


def test_stratified_subset_keeps_class_proportions_exactly_and_is_seeded():
    from audiocomp.datasets.splits import stratified_subset

    its = items(n_classes=3, per_class=10) + items(n_classes=1, per_class=30)  # class 0: 40 items, 1-2: 10 each
    picked = stratified_subset(its, 30, seed=0)
    assert len(picked) == 30 == len(set(picked.tolist()))
    assert Counter(its[i].target for i in picked) == {0: 20, 1: 5, 2: 5}
    assert (stratified_subset(its, 30, seed=0) == picked).all()
    assert (stratified_subset(its, 30, seed=1) != picked).any()
    # quotas 4.67, 1.17, 1.17: floors 4, 1, 1 and the one left over goes to the largest remainder
    assert Counter(its[i].target for i in stratified_subset(its, 7, seed=0)) == {0: 5, 1: 1, 2: 1}


def test_prepare_max_items_is_stratified(tiny_cfg, tmp_path):
    from audiocomp.stages import prepare

    cfg = tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"max_items": 40})})
    prepared = prepare.run(cfg, tmp_path / "runs", progress=False)
    assert Counter(it.target for it in prepared.store.items) == {c: 4 for c in range(10)}  # 80 clips, 8 per class
