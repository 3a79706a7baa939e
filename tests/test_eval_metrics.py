"""Metric functions and model facts against hand-computed values."""
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from audiocomp.evaluate.facts import count_macs, format_facts
from audiocomp.evaluate.metrics import (average_precision, classification_metrics, mean_std, multilabel_metrics,
                                        per_class_rows, top_k_accuracy)
from audiocomp.models.base import ModelSpec


def test_classification_metrics_by_hand_with_a_class_never_predicted():
    # true: 0 0 1 1 2 ; predicted: 0 1 1 1 0 -> class 2 is never predicted
    scores = np.array([[.9, .1, 0], [.2, .7, .1], [.1, .8, .1], [0, .6, .4], [.5, .2, .3]])
    y = np.array([0, 0, 1, 1, 2])
    m = classification_metrics(scores, y, 3, top_k=2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    pc = m["per_class"]
    # class 0: tp 1, predicted 2, actual 2; class 1: tp 2, predicted 3, actual 2; class 2: never predicted
    assert pc["precision"] == pytest.approx([1 / 2, 2 / 3, 0.0])
    assert pc["recall"] == pytest.approx([1 / 2, 1.0, 0.0])
    assert pc["f1"] == pytest.approx([0.5, 0.8, 0.0])
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # top-2: item 1 (0: .2 is 2nd) hit; item 4 (2: .3 is 2nd) hit; every item hits
    assert m["top2_accuracy"] == pytest.approx(1.0)
    rows = per_class_rows(m, ["a", "b", "c"])
    assert rows[2] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_top_k_counts_only_the_k_best():
    scores = np.array([[.5, .3, .2], [.5, .3, .2]])
    assert top_k_accuracy(scores, np.array([2, 1]), 1) == 0.0
    assert top_k_accuracy(scores, np.array([2, 1]), 2) == 0.5


def test_average_precision_and_map_by_hand():
    # ranking: pos, neg, pos -> precision at hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision(np.array([.9, .8, .7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    scores = np.array([[.9, .1], [.8, .6], [.7, .2]])
    y = np.array([[1, 0], [0, 1], [1, 0]])
    m = multilabel_metrics(scores, y)
    assert m["per_class_ap"] == pytest.approx([5 / 6, 1.0])
    assert m["map"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert math.isnan(average_precision(np.array([.1, .2]), np.array([0, 0])))


def test_average_precision_treats_tied_scores_as_one_threshold():
    # three items tied at .5 (two positives), one negative below: one threshold, precision 2/3 at recall 1;
    # ranking the tie in any order must not change it (a stable sort would give (1 + 2/3) / 2 here)
    scores, y = np.array([.5, .5, .5, .1]), np.array([1, 0, 1, 0])
    assert average_precision(scores, y) == pytest.approx(2 / 3)
    for order in ([1, 0, 2, 3], [2, 1, 0, 3], [3, 1, 2, 0]):
        assert average_precision(scores[order], y[order]) == pytest.approx(2 / 3)


def test_macro_f1_counts_predicted_but_absent_classes_and_only_those():
    # class 2 is absent from the labels but predicted once: F1 0, counted -> (2/3 + 1 + 0) / 3
    scores = np.eye(3)[[0, 2, 1, 1]]
    assert classification_metrics(scores, np.array([0, 0, 1, 1]), 3)["macro_f1"] == pytest.approx(5 / 9)
    # a perfect classifier on a test set without class 2 scores 1 (an absent, never-predicted class is left out)
    assert classification_metrics(np.eye(3)[[0, 0, 1, 1]], np.array([0, 0, 1, 1]), 3)["macro_f1"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_metrics_agree_with_scikit_learn_on_random_cases_with_ties_and_absent_classes(seed):
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(seed)
    n, c = 40, 6
    y = rng.choice(c - 2, n)  # the last two classes never occur in the labels
    scores = rng.integers(0, 4, (n, c)).astype(float) / 4  # coarse scores: many ties
    m = classification_metrics(scores, y, c)
    assert m["macro_f1"] == pytest.approx(f1_score(y, scores.argmax(1), average="macro", zero_division=0))
    multi = (rng.random((n, c)) < 0.3).astype(np.float32)
    multi[:, 0] = 0  # a class without positives: undefined AP, left out of mAP
    ml = multilabel_metrics(scores, multi)
    has = multi.sum(0) > 0
    assert ml["per_class_ap"][0] is None
    assert ml["per_class_ap"][1:] == pytest.approx([average_precision_score(multi[:, k], scores[:, k])
                                                    for k in range(1, c)])
    assert ml["map"] == pytest.approx(average_precision_score(multi[:, has], scores[:, has], average="macro"))


def test_mean_std_over_folds():
    s = mean_std([{"accuracy": 0.5, "name": "a"}, {"accuracy": 0.7}, {"accuracy": 0.9}])
    assert s == {"accuracy": {"mean": pytest.approx(0.7), "std": pytest.approx(0.2), "n": 3}}


def test_macs_of_a_small_conv_net_by_hand():
    # conv 1->4, 3x3, same padding on 8x8: 4*8*8 outputs x 1*3*3 MACs = 2304; linear 256 -> 10: 2560
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(256, 10, bias=False))
    assert count_macs(net, torch.randn(1, 1, 8, 8)) == 2304 + 2560
    # stride 2, 2 in-channels on 7x7 -> 3x3: 4*3*3 x 2*3*3 = 648; linear 36 -> 10: 360
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, bias=False), nn.Flatten(), nn.Linear(36, 10, bias=False))
    assert count_macs(net, torch.randn(1, 2, 7, 7)) == 648 + 360


def test_format_facts_from_the_recipe():
    spec = ModelSpec("cnn", 2, [1, 8, 8])
    assert format_facts(spec) == {"format": "fp32", "pruned": False, "compression": []}
    spec.compression = [{"method": "taylor", "sparsity": 0.5}, {"method": "static", "format": "int8",
                                                               "artifact": "model.onnx"}]
    assert format_facts(spec) == {"format": "int8", "pruned": True, "compression": ["taylor", "static"]}


def test_eval_writes_per_class_csv_and_aggregates_folds(trained_run):
    from audiocomp.stages import evaluate

    runs, model_run, cfg = trained_run
    single = evaluate.run(cfg, model_run, runs, name="ev-one", force=True, progress=False)
    header = (single.path / "per_class.csv").read_text().splitlines()[0]
    assert header == "class,precision,recall,f1,support"
    assert {"confusion.csv", "confusion.png"} <= {p.name for p in single.path.iterdir()}
    facts = single.metrics()["model_facts"]
    assert facts["format"] == "fp32" and facts["pruned"] is False and facts["macs"] > 0

    # a run holding per-fold models: folds/<split name>/model (here both are the holdout split's model)
    from audiocomp.features.prepared import load_prepared, model_run_parent

    split_name = load_prepared(model_run_parent(model_run)).splits["splits"][0]["name"]
    shutil.copytree(model_run.path / "model", model_run.path / "folds" / split_name / "model")
    try:
        cv = evaluate.run(cfg, [model_run, model_run], runs, name="ev-cv", force=True, progress=False).metrics()
    finally:
        shutil.rmtree(model_run.path / "folds")
    assert len(cv["units"]) == 2 and cv["cv"]["accuracy"]["n"] == 2
    assert cv["cv"]["accuracy"]["std"] == pytest.approx(0.0)
    assert cv["cv"]["accuracy"]["mean"] == pytest.approx(single.metrics()["accuracy"])
