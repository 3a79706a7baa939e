"""predictions-<part>.npz: round trip, which groups the bootstrap resamples, pairing across stores by item."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from audiocomp.config import IntervalConfig
from audiocomp.datasets.base import Item
from audiocomp.evaluate.predictions import (Predictions, agreement, compare, compare_pooled, interval, item_keys,
                                           same_items, sampling_groups)
from audiocomp.evaluate.stats import paired_difference
from audiocomp.runs import RunError


def store(items, name="synth-abc"):
    return SimpleNamespace(items=items, path=Path("/stores") / name)


def clips(n, group=lambda i: None, segments=1):
    return [Item(path=f"c{i}.wav", target=i % 3, group=group(i), start_s=float(k), end_s=float(k + 1))
            for i in range(n) for k in range(segments)]


def test_round_trip_is_exact_and_atomic(tmp_path):
    items = clips(6)
    split = {"train": [0, 1, 2], "val": [], "test": [5, 3, 4]}
    scores = np.random.default_rng(0).random((3, 3)).astype(np.float32)
    pred = Predictions.of_split(store(items), split, "test", scores, np.array([2, 0, 1]))
    path = pred.save(tmp_path / "predictions-test.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions-test.npz"]  # no temp file, no .npz.npz
    back = Predictions.load(path)
    assert back.part == "test" and back.store == "synth-abc" and back.groups is None
    assert back.rows.tolist() == [5, 3, 4] and back.keys.tolist() == ["c5.wav|0.0|1.0|0", "c3.wav|0.0|1.0|0",
                                                                      "c4.wav|0.0|1.0|0"]
    assert np.array_equal(back.scores, scores) and back.scores.dtype == np.float32
    assert back.correct.tolist() == (scores.argmax(1) == [2, 0, 1]).tolist()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(RunError, match="bad.npz: not a predictions file"):
        Predictions.load(tmp_path / "bad.npz")


def test_groups_are_resampled_only_when_the_split_keeps_them_whole():
    # segments of one clip (2 per clip) kept in one part: the clips are what was drawn into the test part
    seg = clips(6, group=lambda i: f"clip{i}", segments=2)
    whole = {"train": [0, 1, 2, 3, 4, 5, 6, 7], "val": [], "test": [8, 9, 10, 11]}
    assert sampling_groups(seg, whole, "test").tolist() == ["clip4", "clip4", "clip5", "clip5"]
    # FSDD-like: a few takes of every speaker in test, the other takes in train -> items are the draws
    takes = clips(12, group=lambda i: f"speaker{i % 3}")
    assert sampling_groups(takes, {"train": list(range(9)), "val": [], "test": [9, 10, 11]}, "test") is None
    # no groups at all, or every item its own group
    assert sampling_groups(clips(4), {"train": [0, 1], "val": [], "test": [2, 3]}, "test") is None
    own = clips(4, group=lambda i: f"g{i}")
    assert sampling_groups(own, {"train": [0, 1], "val": [], "test": [2, 3]}, "test") is None
    assert len(set(item_keys(seg))) == len(seg)  # segments of one file have distinct keys


def test_pairs_by_item_across_stores_and_refuses_other_items():
    items = clips(8)
    rng = np.random.default_rng(1)
    y = np.array([it.target for it in items])[[4, 5, 6, 7]]
    a = Predictions.of_split(store(items, "mel"), {"train": [], "val": [], "test": [4, 5, 6, 7]}, "test",
                             rng.random((4, 3)), y)
    # the same clips in another store (raw audio), rows in another order
    raw_items = [items[i] for i in (7, 6, 5, 4, 0, 1, 2, 3)]
    b = Predictions.of_split(store(raw_items, "raw"), {"train": [], "val": [], "test": [0, 1, 2, 3]}, "test",
                             rng.random((4, 3)), y[::-1])
    order = same_items(a, b)
    assert b.keys[order].tolist() == a.keys.tolist()
    d = compare(a, b, IntervalConfig(n_boot=500, seed=3))
    assert d == paired_difference(a.correct, b.correct[order], None, 500, 3)
    other = Predictions.of_split(store(items), {"train": [], "val": [], "test": [0, 1, 2, 3]}, "test",
                                 rng.random((4, 3)), np.array([it.target for it in items[:4]]))
    assert compare(a, other) is None
    wrong = Predictions(b.part, b.rows, b.keys, (b.targets + 1) % 3, b.scores)
    with pytest.raises(RunError, match="disagree on their targets"):
        compare(a, wrong)


def one_hot(classes):
    return np.eye(3, dtype=np.float32)[classes]


def test_agreement_counts_the_same_top1_class_per_item_right_or_wrong():
    items = clips(8)
    y = np.array([0, 1, 2, 0])  # the targets of items 4-7
    a = Predictions.of_split(store(items), {"train": [], "val": [], "test": [4, 5, 6, 7]}, "test",
                             one_hot([0, 1, 0, 2]), y)
    # items 7, 6, 5, 4 in that order: class 2 for item 7 (a: 2), 0 for 6 (a: 0, both wrong), 2 for 5 (a: 1)
    # and 0 for 4 (a: 0) -> 3 of 4 items agree, though their accuracies differ (a 2 of 4 right, b 1 of 4)
    b = Predictions.of_split(store(items), {"train": [], "val": [], "test": [7, 6, 5, 4]}, "test",
                             one_hot([2, 0, 2, 0]), y[::-1])
    assert agreement(a, b) == pytest.approx(0.75) and agreement(b, a) == pytest.approx(0.75)
    assert (a.correct.sum(), b.correct.sum()) == (2, 1)
    other = Predictions.of_split(store(items), {"train": [], "val": [], "test": [0, 1, 2, 3]}, "test",
                                 one_hot([0, 1, 2, 0]), y)
    assert agreement(a, other) is None
    multi = Predictions.of_split(store(items), {"train": [], "val": [], "test": [4, 5, 6, 7]}, "test",
                                 np.full((4, 2), 0.5), np.ones((4, 2), np.float32))
    assert agreement(multi, multi) is None


def answering(pred, right):
    """`pred` with scores that get exactly the items in `right` (a 0/1 list) right."""
    scores = np.zeros((len(right), 3), np.float32)
    scores[np.arange(len(right)), np.where(np.array(right, bool), pred.targets, (pred.targets + 1) % 3)] = 1
    return Predictions(pred.part, pred.rows, pred.keys, pred.targets, scores, pred.groups, pred.store)


def test_pooled_comparison_counts_every_pair_and_resamples_a_recording_with_all_its_seeds():
    items = clips(6, group=lambda i: f"rec{i // 2}")  # 3 recordings of 2 clips, all in test
    split = {"train": [], "val": [], "test": [0, 1, 2, 3, 4, 5]}
    base = Predictions.of_split(store(items), split, "test", np.zeros((6, 3)), np.array([0, 1, 2, 0, 1, 2]))
    assert base.groups is not None
    # seed 0: base right on 0, 1, 2; new on 1, 2, 3, 4 -- seed 1: base right on all; new on 0, 1, 2, 3, 4
    pairs = [(answering(base, [1, 1, 1, 0, 0, 0]), answering(base, [0, 1, 1, 1, 1, 0])),
             (answering(base, [1, 1, 1, 1, 1, 1]), answering(base, [1, 1, 1, 1, 1, 0]))]
    d = compare_pooled(pairs, IntervalConfig(n_boot=500, seed=3))
    # by hand: right only for base, item 0 (seed 0) and item 5 (seed 1); only for new, items 3 and 4 (seed 0)
    assert (d["a_only"], d["b_only"], d["n"]) == (2, 2, 12) and d["diff"] == pytest.approx(0.0)
    assert d["resampled"] == "groups" and d["groups"] == 3  # rec0..rec2, each with both seeds' clips
    assert d["low"] <= d["diff"] <= d["high"]
    # without groups, an item (not an item of one seed) is the unit
    plain = [tuple(Predictions(p.part, p.rows, p.keys, p.targets, p.scores) for p in pair) for pair in pairs]
    assert compare_pooled(plain)["groups"] == 6
    other = Predictions.of_split(store(clips(8)), {"train": [], "val": [], "test": [6, 7]}, "test",
                                 np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(RunError, match="same single-label items"):
        compare_pooled([pairs[0], (base, other)])

def test_multilabel_predictions_have_no_accuracy_interval():
    items = [Item(path=f"c{i}.wav", target=(0, 1)) for i in range(3)]
    pred = Predictions.of_split(store(items), {"train": [], "val": [], "test": [0, 1, 2]}, "test",
                                np.full((3, 2), 0.5), np.ones((3, 2), np.float32))
    assert pred.correct is None and interval(pred) is None and compare(pred, pred) is None
