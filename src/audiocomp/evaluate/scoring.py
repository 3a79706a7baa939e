"""Scoring a model on the parts of a prepared split: scores and loss over batches, the metrics of them, and
the per-item predictions every model stage saves (so a report recomputes intervals without the model)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import IntervalConfig
from ..features.prepared import Prepared, split_batches
from .metrics import classification_metrics, multilabel_metrics
from .predictions import Predictions, file_name as predictions_file, intervals


def loss_fn(multilabel: bool, label_smoothing: float = 0.0) -> Callable:
    """The loss of logits against targets: the training objective, and (unsmoothed) the val/test loss."""
    if multilabel:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@torch.no_grad()
def predict_scores(model: nn.Module, batches, device: torch.device, multilabel: bool = False,
                   progress: bool = False, desc: str = "eval") -> tuple[np.ndarray, np.ndarray, float]:
    """Run `model` over batches: (scores (N, C) as probabilities, targets, mean loss)."""
    from tqdm import tqdm

    model.eval()
    crit = loss_fn(multilabel)
    scores, targets, total, n = [], [], 0.0, 0
    for x, y in tqdm(batches, desc=desc, leave=False, disable=not progress):
        logits = model(x.to(device)).float()
        y_dev = y.to(device)
        total += float(crit(logits, y_dev)) * len(y)
        n += len(y)
        scores.append((torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).cpu().numpy())
        targets.append(y.numpy())
    return np.concatenate(scores), np.concatenate(targets), total / max(n, 1)


def score_metrics(scores: np.ndarray, targets: np.ndarray, num_classes: int, multilabel: bool, top_k: int = 3) -> dict:
    return multilabel_metrics(scores, targets) if multilabel else classification_metrics(scores, targets, num_classes, top_k)


def score_parts(model, prepared: Prepared, spec, device, batch_size: int, split_index: int = 0,
                parts=("train", "val", "test")) -> dict[str, tuple[dict, Predictions]]:
    """(accuracy-style metrics without the confusion details, per-item predictions) of `model` on each
    non-empty split part."""
    out = {}
    for part in parts:
        rows = prepared.split(split_index)[part]
        if not rows:
            continue
        scores, targets, loss = predict_scores(model, split_batches(prepared, part, batch_size, split_index),
                                               device, spec.multilabel)
        m = score_metrics(scores, targets, spec.num_classes, spec.multilabel)
        keep = {k: v for k, v in m.items() if isinstance(v, float) or k == "per_class_ap"}
        pred = Predictions.of_split(prepared.store, prepared.split(split_index), part, scores, targets)
        out[part] = (keep | {"loss": loss, "items": len(rows)}, pred)
    return out


def record_predictions(folder: Path, preds: dict[str, Predictions], icfg: IntervalConfig, prefix: str = "") -> dict:
    """Save each part's predictions as `<prefix>predictions-<part>.npz` in `folder`; return the metrics that
    point to them: `<prefix><part>_accuracy_ci` (accuracy with its bootstrap interval, single-label sets)
    and `<prefix>predictions: {part: file name}`."""
    out: dict = {f"{prefix}predictions": {}}
    for part, pred in preds.items():
        name = predictions_file(part, prefix)
        pred.save(folder / name)
        out[f"{prefix}predictions"][part] = name
    return out | {f"{prefix}{k}": v for k, v in intervals(preds, icfg).items()}
