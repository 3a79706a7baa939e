"""Structured pruning of LSTM hidden units by surgery of nn.LSTM (Torch-Pruning does not prune LSTMs
reliably, LESSONS.md #4): the four gate rows, the recurrent column, the next layer's and the head's input
columns of each removed unit go together."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..evaluate.counts import count_macs
from .pruning import PruneContext
from .unstructured import run_finetune


def sequence_lstm(model: nn.Module):
    """The SequenceLSTM backbone (an nn.LSTM followed by a linear head), or None."""
    from ..models.lstm import SequenceLSTM

    return next((m for m in model.modules() if isinstance(m, SequenceLSTM)), None)


def _unit_rows(idx: torch.Tensor, hidden: int) -> torch.Tensor:
    """Rows of the stacked gate matrices (input, forget, cell, output) that belong to hidden units `idx`."""
    return torch.cat([idx + k * hidden for k in range(4)])


def lstm_unit_scores(lstm: nn.LSTM, criterion: str, model: nn.Module, ctx: PruneContext) -> list[torch.Tensor]:
    """Importance of each hidden unit of each layer (both directions together): the L1/L2 norm of the unit's
    gate rows and recurrent column, or for `taylor` the first-order Taylor term (sum of weight x gradient over
    the same weights, squared per calibration batch: Molchanov et al. 2019)."""
    hidden, dirs = lstm.hidden_size, 2 if lstm.bidirectional else 1
    suffixes = [f"_l{layer}" + ("_reverse" if d else "") for layer in range(lstm.num_layers) for d in range(dirs)]

    def per_unit(values: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for layer in range(lstm.num_layers):
            score = torch.zeros(hidden, dtype=torch.float64)
            for sfx in suffixes[layer * dirs:(layer + 1) * dirs]:
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    v = values.get(name + sfx)
                    if v is not None:
                        score += v.reshape(4, hidden, -1).sum((0, 2)).double()
                score += values["weight_hh" + sfx].sum(0).double()  # the unit's recurrent column
            out.append(score)
        return out

    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        return per_unit({n: w.detach().abs() ** p for n, w in lstm.named_parameters()})
    total = [torch.zeros(hidden, dtype=torch.float64) for _ in range(lstm.num_layers)]
    was_training = model.training
    model.eval()
    for x, y in ctx.calibration:
        model.zero_grad(set_to_none=True)
        ctx.loss(model(x), y).backward()
        terms = per_unit({n: (w.detach() * w.grad) for n, w in lstm.named_parameters() if w.grad is not None})
        total = [t + s ** 2 for t, s in zip(total, terms)]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return total


def shrink_lstm(seq, keep: list[torch.Tensor]) -> None:
    """Replace seq.lstm by one with len(keep[l]) hidden units (the same in every layer, as nn.LSTM needs),
    slicing gate rows, recurrent columns, the next layer's input columns and the head's input columns."""
    old = seq.lstm
    hidden, dirs = old.hidden_size, 2 if old.bidirectional else 1
    new_hidden = len(keep[0])
    new = nn.LSTM(old.input_size, new_hidden, old.num_layers, old.bias, old.batch_first, old.dropout,
                  old.bidirectional)
    with torch.no_grad():
        for layer in range(old.num_layers):
            rows = _unit_rows(keep[layer], hidden)
            in_cols = (torch.arange(old.input_size) if layer == 0 else
                       torch.cat([keep[layer - 1] + d * hidden for d in range(dirs)]))
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                getattr(new, "weight_ih" + sfx).copy_(getattr(old, "weight_ih" + sfx)[rows][:, in_cols])
                getattr(new, "weight_hh" + sfx).copy_(getattr(old, "weight_hh" + sfx)[rows][:, keep[layer]])
                if old.bias:
                    getattr(new, "bias_ih" + sfx).copy_(getattr(old, "bias_ih" + sfx)[rows])
                    getattr(new, "bias_hh" + sfx).copy_(getattr(old, "bias_hh" + sfx)[rows])
        head = seq.head[-1]
        cols = torch.cat([keep[-1] + d * hidden for d in range(dirs)])
        new_head = nn.Linear(len(cols), head.out_features, bias=head.bias is not None)
        new_head.weight.copy_(head.weight[:, cols])
        if head.bias is not None:
            new_head.bias.copy_(head.bias)
    seq.lstm = new
    seq.head[-1] = new_head


def structured_lstm(model: nn.Module, ctx: PruneContext, seq, phase: str, keep_sparse: bool) -> list[dict]:
    """Remove hidden units of the LSTM (uniformly per layer) in `prune.steps` steps, to `channel_ratio` of
    the units or until MACs drop by `macs_reduction`, fine-tuning after each step."""
    cfg = ctx.cfg
    start = seq.lstm.hidden_size
    base_macs = count_macs(model, ctx.example)
    steps = []
    for k in range(1, cfg.steps + 1):
        if cfg.macs_reduction is None:
            ratios = [min(cfg.channel_ratio, cfg.max_layer_ratio) * k / cfg.steps]
        else:  # try ever larger ratios until the MAC target of this step is reached
            ratios = [r / 20 * cfg.max_layer_ratio for r in range(1, 21)]
        target = base_macs / cfg.macs_reduction ** (k / cfg.steps) if cfg.macs_reduction else None
        for ratio in ratios:
            keep_n = max(1, start - int(math.floor(start * ratio)))
            if cfg.round_to:
                keep_n = max(cfg.round_to, keep_n // cfg.round_to * cfg.round_to)
            if keep_n < seq.lstm.hidden_size:
                scores = lstm_unit_scores(seq.lstm, cfg.criterion, model, ctx)
                shrink_lstm(seq, [torch.sort(torch.argsort(s, descending=True)[:keep_n]).values for s in scores])
            if target is None or count_macs(model, ctx.example) <= target:
                break
        macs = count_macs(model, ctx.example)
        history = run_finetune(model, ctx, f"{phase}-{k}", keep_sparse)
        steps.append({"phase": phase, "step": k, "criterion": cfg.criterion, "hidden_size": seq.lstm.hidden_size,
                      "macs": macs, "macs_ratio": round(base_macs / max(macs, 1), 4), "history": history})
        ctx.log(steps[-1])
    return steps
