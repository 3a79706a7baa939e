"""Structured pruning: whole channels removed with Torch-Pruning's dependency graph (so parameters, MACs, file
size and latency all drop), ranked by first-order Taylor importance or weight norms. LSTM models get
hidden-size surgery instead (lstm_surgery.py; Torch-Pruning does not prune nn.LSTM reliably, LESSONS.md #4)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch_pruning as tp
from torch import nn

from ..config import ConfigError
from ..evaluate.counts import count_macs
from .unstructured import run_finetune

if TYPE_CHECKING:
    from .pruning import Batches, PruneContext

STRUCTURED_ROOTS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # layers whose output channels can be removed


class TaylorImportance(tp.importance.Importance):
    """First-order Taylor importance of a channel (Molchanov et al. 2017): |mean over positions of
    activation x dLoss/dactivation| per sample, summed over the calibration samples.

    It is measured at the input of every layer that consumes the channel (the activation after BN, ReLU
    and pooling: exactly what removing the channel takes away) and summed over a coupled group. A channel
    whose activation or gradient is zero scores zero and is removed first. Scores come from explicit
    forward/backward passes with the real loss on fixed batches (eval mode, so deterministic)."""

    def __init__(self):
        self.scores: dict[nn.Module, torch.Tensor] = {}

    def accumulate(self, model: nn.Module, batches: Batches, loss_fn) -> None:
        self.scores = {}
        consumers = [m for m in model.modules() if isinstance(m, STRUCTURED_ROOTS)]

        def forward_hook(module, inputs, _output):
            x = inputs[0]
            if not x.requires_grad:
                return  # the model input: its channels are never pruned

            def grad_hook(g, x=x.detach(), module=module):
                prod = x * g  # (B, C, ...) for convs, (B, ..., F) for linear layers
                if isinstance(module, nn.Linear):
                    prod = prod.reshape(prod.shape[0], -1, prod.shape[-1]).mean(1)
                else:
                    prod = prod.flatten(2).mean(2)
                score = prod.abs().sum(0).double()  # (C,)
                self.scores[module] = self.scores.get(module, 0) + score

            x.register_hook(grad_hook)

        hooks = [m.register_forward_hook(forward_hook) for m in consumers]
        was_training = model.training
        model.eval()
        try:
            for x, y in batches:
                model.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
        finally:
            for h in hooks:
                h.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)

    @torch.no_grad()
    def __call__(self, group):
        """Per channel of the group's root layer: the sum of its scores at every consumer, over the mean."""
        total, found = torch.zeros(len(group[0].idxs)), False
        for item in group:
            dep, idxs = item.dep, item.idxs
            if dep.pruning_fn in (tp.prune_conv_in_channels, tp.prune_linear_in_channels) and dep.layer in self.scores \
                    and None not in item.root_idxs:
                total.scatter_add_(0, torch.tensor(item.root_idxs), self.scores[dep.layer][idxs].float())
                found = True
        return total / (total.mean() + 1e-12) if found else None


def importance_for(criterion: str):
    if criterion == "taylor":
        return TaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if criterion == "l1" else 2)


def refuse_recurrent(model: nn.Module, method: str) -> None:
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        raise ConfigError(f"prune.method={method}: structured pruning of LSTM/GRU layers (hidden size) is not "
                          f"supported; use prune.method=magnitude for recurrent models")


def classifier_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the logits (the last conv/linear layer): its outputs are never pruned."""
    layers = [m for m in model.modules() if isinstance(m, STRUCTURED_ROOTS)]
    if not layers:
        raise ConfigError("structured pruning: the model has no convolution or linear layer")
    return layers[-1]


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def prunable_groups(model: nn.Module, graph: tp.DependencyGraph) -> list[tuple[str, object]]:
    """(root layer name, group) of every coupled channel group structured pruning may shrink."""
    order = {m: (i, n) for i, (n, m) in enumerate(model.named_modules())}
    groups = graph.get_all_groups(ignored_layers=[classifier_layer(model)], root_module_types=STRUCTURED_ROOTS)
    return [(order[g[0].dep.target.module][1], g)
            for g in sorted(groups, key=lambda g: order[g[0].dep.target.module][0])]  # in model order


def structured(model: nn.Module, ctx: PruneContext, *, keep_sparse: bool = False, phase: str = "taylor") -> list[dict]:
    """Remove channels with Torch-Pruning: `prune.steps` steps (importance re-measured before each, fine-tuning
    after each), to `prune.channel_ratio` of the channels per group, or until MACs drop by `prune.macs_reduction`."""
    cfg = ctx.cfg
    from .lstm_surgery import sequence_lstm, structured_lstm  # lazy: it builds on this module

    seq = sequence_lstm(model)
    if seq is not None:
        return structured_lstm(model, ctx, seq, phase, keep_sparse)
    refuse_recurrent(model, cfg.method)
    importance = importance_for(cfg.criterion)
    names = dict(model.named_modules())
    unknown = sorted(set(ctx.layer_ratios) - set(names))
    if unknown:
        raise ConfigError(f"prune.sensitivity: layers {unknown[:3]} are not in this model (sensitivity of another model?)")
    by_macs = cfg.macs_reduction is not None
    fine = 20 if by_macs else 1  # small pruner steps per step when aiming at a MAC count
    pruner = tp.pruner.MetaPruner(
        model, ctx.example, importance=importance, global_pruning=cfg.channel_scope == "global",
        pruning_ratio=cfg.max_layer_ratio if by_macs else cfg.channel_ratio,
        pruning_ratio_dict={names[n]: r for n, r in ctx.layer_ratios.items()} or None,
        max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps * fine,
        ignored_layers=[classifier_layer(model)], round_to=cfg.round_to)
    base_macs = count_macs(model, ctx.example)
    steps = []
    for k in range(1, cfg.steps + 1):
        target = base_macs / cfg.macs_reduction ** (k / cfg.steps) if by_macs else None
        while True:  # one pruner step, or as many small ones as the MAC target of this step needs
            if isinstance(importance, TaylorImportance):
                importance.accumulate(model, ctx.calibration, ctx.loss)  # re-measured on the current model
            pruner.step()
            if (target is None or pruner.current_step >= pruner.iterative_steps
                    or count_macs(model, ctx.example) <= target):
                break
        macs = count_macs(model, ctx.example)
        history = run_finetune(model, ctx, f"{phase}-{k}", keep_sparse)
        steps.append({"phase": phase, "step": k, "criterion": cfg.criterion, "macs": macs,
                      "macs_ratio": round(base_macs / max(macs, 1), 4), "history": history})
        ctx.log(steps[-1])
    if isinstance(importance, TaylorImportance):
        importance.scores = {}
    return steps
