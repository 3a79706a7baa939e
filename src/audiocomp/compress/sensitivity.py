"""Layer sensitivity: each coupled channel group pruned alone at each ratio, without fine-tuning, and scored
on validation data; and the per-layer ratios a sensitivity table allows within a drop."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch_pruning as tp
from torch import nn

from .structured import TaylorImportance, dependency_graph, importance_for, prunable_groups, refuse_recurrent

if TYPE_CHECKING:
    from .pruning import PruneContext


def ratio_keep(n: int, ratio: float, round_to: Optional[int] = None) -> int:
    """Channels removed from `n` at `ratio` (at least one channel is always kept)."""
    removed = int(math.floor(n * ratio))
    if round_to:
        removed = n - max(round_to, int(math.ceil((n - removed) / round_to)) * round_to)
    return max(0, min(removed, n - 1))


def prune_group_alone(model: nn.Module, example: torch.Tensor, layer_name: str, scores: torch.Tensor,
                      ratio: float) -> nn.Module:
    """A copy of `model` with only `layer_name`'s group pruned at `ratio` (lowest `scores` first)."""
    import copy

    clone = copy.deepcopy(model)
    graph = dependency_graph(clone, example)
    layer = clone.get_submodule(layer_name)
    n = len(scores)
    idxs = torch.argsort(scores)[:ratio_keep(n, ratio)].tolist()
    if idxs:
        handler = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels
        graph.get_pruning_group(layer, handler, idxs=idxs).prune()
    return clone


def sensitivity(model: nn.Module, ctx: PruneContext, ratios: list[float],
                score_fn: Callable[[nn.Module], float], progress: bool = True) -> list[dict]:
    """Prune each coupled group alone at each ratio, without fine-tuning, and score the result (validation
    accuracy). Importance is measured once on the unpruned model."""
    from tqdm import tqdm

    refuse_recurrent(model, f"{ctx.cfg.method} sensitivity")
    importance = importance_for(ctx.cfg.criterion)
    if isinstance(importance, TaylorImportance):
        importance.accumulate(model, ctx.calibration, ctx.loss)
    graph = dependency_graph(model, ctx.example)
    groups = prunable_groups(model, graph)
    base = score_fn(model)
    rows = []
    bar = tqdm(total=len(groups) * len(ratios), desc="sensitivity", disable=not progress)
    for name, group in groups:
        scores = importance(group)
        channels = len(group[0].idxs)
        if scores is None:
            scores = torch.zeros(channels)
        for ratio in ratios:
            pruned = prune_group_alone(model, ctx.example, name, scores, ratio)
            value = score_fn(pruned)
            rows.append({"layer": name, "channels": channels, "ratio": ratio,
                         "pruned_channels": ratio_keep(channels, ratio), "val_accuracy": value,
                         "baseline_accuracy": base, "drop": base - value})
            bar.update()
    bar.close()
    return rows


def ratios_from_sensitivity(rows: list[dict], max_drop: float) -> dict[str, float]:
    """Per layer, the largest measured ratio whose accuracy drop, and that of every smaller ratio, is at most
    `max_drop` (0 when even the smallest ratio costs more)."""
    by_layer: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        by_layer.setdefault(r["layer"], []).append((float(r["ratio"]), float(r["drop"])))
    out = {}
    for layer, points in by_layer.items():
        chosen = 0.0
        for ratio, drop in sorted(points):
            if drop > max_drop:
                break
            chosen = ratio
        out[layer] = chosen
    return out
