"""Classification metrics on numpy arrays, checked against hand-computed cases and scikit-learn.

Macro-F1 is scikit-learn's `f1_score(average="macro")`: the mean over the classes that occur in the labels
or in the predictions (a class predicted but absent scores 0; a class neither present nor predicted is
left out, so a perfect classifier scores 1). Average precision is scikit-learn's
`average_precision_score`: tied scores form one threshold, so AP does not depend on the items' order.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(true, predicted) counts, shape (num_classes, num_classes)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 per class; a class never predicted (or never present) scores 0, not NaN."""
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def average_precision(scores: np.ndarray, y_true: np.ndarray) -> float:
    """AP of one class (scikit-learn's step-wise area under the precision-recall curve, ties as one
    threshold); NaN if the class has no positives (undefined, and left out of mAP)."""
    positives = np.asarray(y_true) > 0
    if not positives.any():
        return float("nan")
    return float(average_precision_score(positives, scores))


def classification_metrics(scores: np.ndarray, y_true: np.ndarray, num_classes: int, top_k: int = 3) -> dict:
    """Single-label: accuracy, macro-F1, top-k, confusion matrix and per-class numbers."""
    y_pred = scores.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    pc = per_class(cm)
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if len(y_true) else float("nan"),
        f"top{min(top_k, num_classes)}_accuracy": top_k_accuracy(scores, y_true, top_k),
        "confusion": cm.tolist(),
        "per_class": {k: v.tolist() for k, v in pc.items()},
    }


def multilabel_metrics(scores: np.ndarray, y_true: np.ndarray) -> dict:
    """Multi-label: mAP over classes that have positives, per-class AP, and accuracy of the top label."""
    aps = np.array([average_precision(scores[:, c], y_true[:, c]) for c in range(y_true.shape[1])])
    top = scores.argmax(axis=1)
    return {
        "map": float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan"),
        "per_class_ap": [None if np.isnan(a) else float(a) for a in aps],
        "top1_hit": float(y_true[np.arange(len(top)), top].mean()) if len(top) else float("nan"),
    }


def per_class_rows(metrics: dict, classes: list[str]) -> list[dict]:
    """Rows of the per-class table (class, precision, recall, F1, support) from classification_metrics."""
    pc = metrics["per_class"]
    return [{"class": name, "precision": pc["precision"][i], "recall": pc["recall"][i], "f1": pc["f1"][i],
             "support": int(pc["support"][i])} for i, name in enumerate(classes)]


def mean_std(values: list[dict]) -> dict[str, dict]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of every float metric shared by all
    `values` (one metrics dict per fold or run): the cross-validation summary."""
    keys = [k for k, v in values[0].items() if isinstance(v, float)] if values else []
    out = {}
    for k in keys:
        xs = np.array([v[k] for v in values if isinstance(v.get(k), float)], dtype=np.float64)
        if len(xs) == len(values):
            out[k] = {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if len(xs) > 1 else 0.0, "n": len(xs)}
    return out
