"""The pruning context a stage builds from its StageContext (shared by prune and compress, which do not
import one another): fixed calibration batches of the training part, the real loss, and a fine-tuning
function bound to the run's data, distilled from the parent model when `distill.enabled`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..compress.pruning import PruneContext
from ..config import PruneConfig
from ..evaluate.facts import example_input
from ..evaluate.scoring import loss_fn
from ..features.batches import calibration_batches, calibration_rows
from ..models.io import safe_torch_load
from ..train.device import resolve_device
from ..train.loop import fit
from .context import StageContext


def teacher_of(ctx: StageContext):
    """The parent's model as the distillation teacher, or None when distillation is off."""
    return ctx.parent_model()[0] if ctx.cfg.distill.enabled else None


def prune_context(ctx: StageContext, spec, prune_cfg: Optional[PruneConfig] = None,
                  layer_ratios: Optional[dict[str, float]] = None, checkpoints: Optional[Path] = None,
                  teacher=None, log_prefix: str = "", keep: Optional[str] = None) -> PruneContext:
    """Calibration batches (of the training rows `calibration_rows` returns, recorded by the caller), the
    real loss and a fine-tuning function (checkpoints under `checkpoints`/<tag>, by default the run's
    checkpoints/) for `prune_cfg` (by default cfg.prune); with `teacher`, fine-tuning is distilled from it;
    `keep` overrides train.keep (which epoch of each fine-tuning is kept)."""
    cfg = ctx.cfg
    prune_cfg = prune_cfg or cfg.prune
    checkpoints = checkpoints or ctx.run.path / "checkpoints"
    split = ctx.data.split()
    rows = calibration_rows(split["train"], cfg.train.batch_size, prune_cfg.calibration_batches, cfg.seed)
    calib = calibration_batches(ctx.data.store.features, ctx.data.store.targets(), rows, cfg.train.batch_size)
    ft_cfg = cfg.train.model_copy(update={"epochs": max(prune_cfg.finetune_epochs, 1), "early_stopping": None,
                                          "lr": prune_cfg.finetune_lr or cfg.train.lr,
                                          "keep": keep or cfg.train.keep})
    device = resolve_device(cfg.train.device)

    def finetune(model, tag: str) -> list[dict]:
        ckpt = checkpoints / tag
        ckpt.mkdir(parents=True, exist_ok=True)
        train = ctx.batches("train", ft_cfg.batch_size, shuffle=True, seed=cfg.seed)
        val = ctx.batches("val", ft_cfg.batch_size) if split["val"] else None
        result = fit(model, train, val, ft_cfg, spec.num_classes, spec.multilabel, ckpt,
                     log=lambda record: ctx.log(record, f"epoch/{log_prefix}{tag}/", step=f"{log_prefix}{tag}"),
                     device=device, progress=ctx.progress, teacher=teacher, distill=cfg.distill,
                     band_hz=ctx.data.store.band_hz())
        model.cpu().load_state_dict(safe_torch_load(ckpt / "best.pt"))  # the kept epoch (ft_cfg.keep)
        (ckpt / "last.pt").unlink(missing_ok=True)  # resume state is not needed once the step is done
        return [{"step": tag, **r} for r in result.history]

    return PruneContext(cfg=prune_cfg, example=example_input(spec.feature_shape), calibration=calib,
                        loss=loss_fn(spec.multilabel), finetune=finetune, layer_ratios=layer_ratios or {},
                        calibration_rows=rows.tolist())
