"""Pruning methods, registered by name (`prune.method`): `magnitude` (unstructured, torch.nn.utils.prune),
`taylor` (structured channels with Torch-Pruning's dependency graph; criterion taylor, l1 or l2) and
`hybrid` (magnitude first, then structured on the weight-pruned model). LSTM models get hidden-size
surgery instead of Torch-Pruning (which does not prune nn.LSTM reliably, LESSONS.md #4).

Unstructured sparsity leaves dense tensors: it shrinks a sparse encoding, not the dense file or the latency.
Structured pruning removes channels physically, so parameters, MACs, file size and latency all drop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..config import ConfigError, PruneConfig
from ..evaluate.counts import count_macs
from ..registry import Registry

Batches = list[tuple[torch.Tensor, torch.Tensor]]
STRUCTURED_ROOTS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # layers whose output channels can be removed


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


# ------------------------------------------------------------------------------------- unstructured

def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every weight matrix magnitude pruning touches: conv and linear weights,
    LSTM input and recurrent weights. Biases and normalisation parameters stay dense."""
    out = []
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            out.append((module, "weight"))
        elif isinstance(module, nn.RNNBase):
            out += [(module, n) for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
    return out


def apply_magnitude_masks(model: nn.Module, sparsity: float, scope: str) -> None:
    """Zero the smallest |w| (L1) so that `sparsity` of the prunable weights are zero (masks stay attached)."""
    params = prunable_weights(model)
    if scope == "global":
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    else:
        for module, name in params:
            torch_prune.l1_unstructured(module, name, amount=sparsity)


def make_permanent(model: nn.Module) -> None:
    """Fold every mask into its weight: the state dict has plain `weight` tensors again, no weight_orig/mask."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)


def keep_zeros(model: nn.Module) -> None:
    """Attach a mask of the current non-zeros, so fine-tuning cannot regrow pruned weights."""
    for module, name in prunable_weights(model):
        torch_prune.custom_from_mask(module, name, getattr(module, name).detach() != 0)


def sparsity_schedule(final: float, steps: int) -> list[float]:
    """Gradual pruning (Zhu & Gupta 2017): s_k = s_f (1 - (1 - k/K)^3), fast early, gentle near the end."""
    return [final * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


def run_finetune(model: nn.Module, ctx: PruneContext, tag: str, keep_sparse: bool = True) -> list[dict]:
    """Fine-tune for prune.finetune_epochs (if any); with keep_sparse the zeros are held at zero."""
    if not ctx.cfg.finetune_epochs:
        return []
    if not keep_sparse:
        return ctx.finetune(model, tag)
    keep_zeros(model)
    try:
        return ctx.finetune(model, tag)
    finally:
        make_permanent(model)


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


# --------------------------------------------------------------------------------------- structured

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
    from .lstm_surgery import sequence_lstm, structured_lstm

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


# -------------------------------------------------------------------------------------- sensitivity

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
