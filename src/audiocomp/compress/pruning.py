"""Pruning methods, registered by name (`prune.method`): `magnitude` (unstructured, torch.nn.utils.prune),
`taylor` (structured channels with Torch-Pruning's dependency graph; criterion taylor, l1 or l2) and
`hybrid` (magnitude first, then structured on the weight-pruned model). LSTM models get hidden-size
surgery instead of Torch-Pruning (which does not prune nn.LSTM reliably, LESSONS.md #4).

Unstructured sparsity leaves dense tensors: it shrinks a sparse encoding, not the dense file or the latency.
Structured pruning removes channels physically, so parameters, MACs, file size and latency all drop.

    unstructured.py  magnitude masks        structured.py  channels (Torch-Pruning), Taylor importance
    sensitivity.py   per-group sensitivity  lstm_surgery.py  LSTM hidden-size surgery
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..config import ConfigError, PruneConfig
from ..registry import Registry
from .sensitivity import ratios_from_sensitivity, sensitivity
from .structured import TaylorImportance, dependency_graph, prunable_groups, structured
from .unstructured import apply_magnitude_masks, make_permanent, run_finetune, sparsity_schedule

# the public pruning API, wherever each part lives
__all__ = ["PRUNERS", "PruneContext", "TaylorImportance", "dependency_graph", "method_for", "prunable_groups",
           "prune_model", "ratios_from_sensitivity", "run_finetune", "sensitivity", "sparsity_schedule"]

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class PruneContext:
    """What a pruning method needs besides the model."""
    cfg: PruneConfig
    example: torch.Tensor  # (1, *feature_shape): traced by Torch-Pruning, run by the MAC counter
    calibration: Batches  # fixed, seeded training batches (Taylor importance)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    finetune: Callable[[nn.Module, str], list[dict]]  # fine-tunes in place, returns the epoch history
    layer_ratios: dict[str, float] = field(default_factory=dict)  # module name -> channel ratio (sensitivity)
    calibration_rows: list[int] = field(default_factory=list)  # the feature-store rows of `calibration`, recorded
    log: Callable[[dict], None] = lambda record: None


PRUNERS: Registry[Callable[[nn.Module, PruneContext], list[dict]]] = Registry("pruning method")


@PRUNERS.register("magnitude")
def magnitude(model: nn.Module, ctx: PruneContext) -> list[dict]:
    """Unstructured L1 pruning to `prune.sparsity`, in `prune.steps` gradual steps with fine-tuning between."""
    steps = []
    for k, target in enumerate(sparsity_schedule(ctx.cfg.sparsity, ctx.cfg.steps), 1):
        apply_magnitude_masks(model, target, ctx.cfg.scope)
        make_permanent(model)
        history = run_finetune(model, ctx, f"magnitude-{k}")
        steps.append({"phase": "magnitude", "step": k, "sparsity": round(target, 6), "history": history})
        ctx.log(steps[-1])
    return steps


@PRUNERS.register("taylor")
def taylor(model: nn.Module, ctx: PruneContext) -> list[dict]:
    return structured(model, ctx)


@PRUNERS.register("hybrid")
def hybrid(model: nn.Module, ctx: PruneContext) -> list[dict]:
    """One-shot magnitude pruning to `prune.sparsity`, then structured pruning of the weight-pruned model in
    `prune.steps` steps, each fine-tuned with the zeros held at zero."""
    apply_magnitude_masks(model, ctx.cfg.sparsity, ctx.cfg.scope)
    make_permanent(model)
    first = {"phase": "magnitude", "step": 1, "sparsity": ctx.cfg.sparsity, "history": []}
    ctx.log(first)
    return [first, *structured(model, ctx, keep_sparse=True, phase=ctx.cfg.criterion)]


def method_for(cfg: PruneConfig) -> Callable[[nn.Module, PruneContext], list[dict]]:
    try:
        return PRUNERS.get(cfg.method)
    except KeyError as exc:
        raise ConfigError(f"prune.method: {exc.args[0]}") from None


def prune_model(model: nn.Module, ctx: PruneContext) -> list[dict]:
    steps = method_for(ctx.cfg)(model, ctx)
    make_permanent(model)
    return steps
