"""Unstructured (magnitude) pruning: masks of the smallest |w|, folded into the weights, held at zero while
fine-tuning. It leaves dense tensors: a sparse encoding shrinks, the dense file and the latency do not."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn
from torch.nn.utils import prune as torch_prune

if TYPE_CHECKING:
    from .pruning import PruneContext


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
