"""The torch quantizers (dynamic INT8, FP16, static INT8, QAT), all through compress/torch_ao.py."""
from __future__ import annotations

import torch
from torch import nn

from ...config import QuantizeConfig
from ...evaluate.scoring import loss_fn
from ...models.io import atomic_torch_save
from ...train.distill import objective
from .. import torch_ao
from .registry import QUANTIZERS, Context, example, keep_float_layers


@QUANTIZERS.register("torch:dynamic")
def _torch_dynamic(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    engine = torch_ao.set_engine(ctx.cfg.engine)
    qmodel = torch_ao.quantize_dynamic(model)
    atomic_torch_save(torch_ao.state_dict(qmodel), ctx.folder / "model.pt")
    return qmodel, {"engine": engine, "compute": "int8 weights, activations quantized at run time",
                    "artifact": "model.pt"}


def fp16_compute(requested: str) -> str:
    """FP16 arithmetic where it is fast (CUDA); on a CPU the FP16 weights are computed in FP32 (LESSONS #8)."""
    if requested != "auto":
        return requested
    return "float16" if torch.cuda.is_available() else "float32"


class ComputeAs(nn.Module):
    """Runs `inner` in another dtype/device; takes and returns float32 tensors on the caller's device."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype, device: str = "cpu"):
        super().__init__()
        self.inner = inner.to(device=device, dtype=dtype)
        self.dtype, self.device = dtype, torch.device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.device, self.dtype)).float().to(x.device)


def fp16_runtime(model: nn.Module, state: dict, compute: str) -> nn.Module:
    model.load_state_dict(state)  # FP16 values, cast to the float32 parameters
    if compute == "float32":
        return model
    if compute == "float16" and not torch.cuda.is_available():
        return model  # an FP16-compute artifact reloaded on a CPU: computed in float32
    return ComputeAs(model, getattr(torch, compute), "cuda" if compute == "float16" else "cpu")


@QUANTIZERS.register("torch:fp16")
def _torch_fp16(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_torch_save(state, ctx.folder / "model.pt")
    compute = fp16_compute(ctx.cfg.fp16_compute)
    return fp16_runtime(model, state, compute), {"engine": "cuda" if compute == "float16" else "cpu",
                                                  "compute": compute, "artifact": "model.pt"}


def _observer(cfg: QuantizeConfig) -> str:
    return "histogram" if cfg.calibration == "auto" else cfg.calibration


@QUANTIZERS.register("torch:static")
def _torch_static(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    from tqdm import tqdm

    engine = torch_ao.set_engine(ctx.cfg.engine)
    float_layers = keep_float_layers(model, ctx.cfg)
    prepared = torch_ao.prepare(model.backbone, model.preprocess(example(ctx.spec)), engine, _observer(ctx.cfg),
                                float_names=float_layers)
    with torch.no_grad():
        for x, _ in tqdm(ctx.calibration, desc="calibrate", leave=False, disable=not ctx.progress):
            prepared(model.preprocess(x))
    model.backbone = torch_ao.convert(prepared)
    atomic_torch_save(torch_ao.state_dict(model), ctx.folder / "model.pt")
    return model, {"engine": engine, "observer": _observer(ctx.cfg), "float_layers": float_layers,
                   "compute": "int8", "artifact": "model.pt"}


@QUANTIZERS.register("torch:qat")
def _torch_qat(model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
    """Fake-quantized fine-tuning from the float weights (distilled from the float parent when
    distill.enabled); BN statistics and observers are frozen for the last epoch so the final scales match
    what the INT8 model will see."""
    from tqdm import tqdm

    if ctx.train_batches is None:
        raise ValueError("quantize.method=qat needs training batches")
    engine = torch_ao.set_engine(ctx.cfg.engine)
    float_layers = keep_float_layers(model, ctx.cfg)
    model.backbone = torch_ao.prepare(model.backbone, model.preprocess(example(ctx.spec, 2)), engine, qat=True,
                                      float_names=float_layers)
    crit = objective(loss_fn(ctx.spec.multilabel), ctx.teacher, ctx.distill, ctx.spec.multilabel)
    opt = torch.optim.Adam(model.parameters(), lr=ctx.cfg.qat_lr)
    history = []
    for epoch in range(ctx.cfg.qat_epochs):
        model.train()
        if epoch == ctx.cfg.qat_epochs - 1 and epoch > 0:
            torch_ao.freeze_qat(model.backbone)
        total, seen = 0.0, 0
        ctx.train_batches.set_epoch(epoch)
        for x, y in tqdm(ctx.train_batches, desc=f"qat {epoch + 1}/{ctx.cfg.qat_epochs}", leave=False,
                         disable=not ctx.progress):
            loss = crit(x, model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1)})
    ctx.report["qat_history"] = history
    model.eval()
    model.backbone = torch_ao.convert(model.backbone)
    atomic_torch_save(torch_ao.state_dict(model), ctx.folder / "model.pt")
    return model, {"engine": engine, "observer": "qat", "float_layers": float_layers, "compute": "int8",
                   "artifact": "model.pt", "qat_epochs": ctx.cfg.qat_epochs}
