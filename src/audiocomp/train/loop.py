"""The training loop: epochs with a progress bar, validation, `last`/`best` checkpoints every epoch, exact
resume after an interruption, early stopping, mixed precision (float16 on CUDA, bfloat16 on CPUs with native
bf16) and channels_last for 2-D conv models, an optional moving average of the weights (train.ema_decay),
optional torch.compile and DDP (distributed.py).

Exact resume: everything random is either re-derived from (seed, epoch, rank) (data order, augmentation
draws) or saved in `last.pt` at the end of every epoch (model, weight average, optimizer, scheduler, AMP
scaler, the torch RNG states of every rank for dropout), so an interrupted run continued with --resume
computes the same numbers as one that never stopped (CPU, deterministic mode)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import ConfigError, DistillConfig, TrainConfig
from ..evaluate.scoring import loss_fn, predict_scores, score_metrics
from ..features.batches import ArrayBatches
from ..models.io import atomic_torch_save, safe_torch_load
from . import distributed
from .augment import augment_batch, mixup
from .device import resolve_precision, uses_conv2d
from .distill import objective
from .distributed import Dist


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler or None, steps it per batch?)."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs), False
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma), False
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                   steps_per_epoch=max(1, steps_per_epoch)), True
    return None, False


NO_VALIDATION = "last epoch (no validation part)"
KEPT_LAST = "last epoch (train.keep: last)"


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_value: Optional[float] = None
    stopped_early: bool = False
    monitor: Optional[str] = None  # the validation metric that chose the epoch; None: the last epoch was kept
    unchosen: str = NO_VALIDATION  # why the last epoch was kept, when monitor is None
    precision: str = "fp32"  # what the forward pass ran in (train.precision resolved for the device)

    @property
    def selection(self) -> str:
        """How the kept epoch was chosen, in words (metrics.json `selection`)."""
        return f"best {self.monitor}" if self.monitor else self.unchosen


MULTILABEL_MONITORS = ("val_loss", "val_map")
SINGLE_LABEL_MONITORS = ("val_loss", "val_accuracy", "val_macro_f1")


def resolve_monitor(cfg: TrainConfig, multilabel: bool, has_val: bool) -> Optional[str]:
    """The validation metric that picks the best epoch (and stops early), checked against the data before
    training: `auto` is val_accuracy (single-label) or val_map (multi-label). None when there is no
    validation part or train.keep is last: the last epoch is kept, and nothing is chosen (early stopping is
    then an error)."""
    if not has_val:
        if cfg.early_stopping:
            raise ConfigError(f"train.early_stopping={cfg.early_stopping}: this split has no validation part "
                              "(split.val_fraction: 0); early stopping needs one (or remove train.early_stopping)")
        return None
    if cfg.keep == "last":
        if cfg.early_stopping:
            raise ConfigError(f"train.early_stopping={cfg.early_stopping} stops at the best validation epoch, "
                              "train.keep: last keeps the last one: remove one of them")
        return None
    if cfg.monitor == "auto":
        return "val_map" if multilabel else "val_accuracy"
    allowed = MULTILABEL_MONITORS if multilabel else SINGLE_LABEL_MONITORS
    if cfg.monitor not in allowed:
        kind = "a multi-label" if multilabel else "a single-label"
        raise ConfigError(f"train.monitor={cfg.monitor}: not produced on {kind} set; use auto or one of "
                          f"{', '.join(allowed)}")
    return cfg.monitor


def _monitor_value(record: dict, monitor: str) -> float:
    v = record.get(monitor)
    if v is None or (isinstance(v, float) and math.isnan(v)):  # never fall back to another number silently
        raise RuntimeError(f"epoch {record['epoch']}: the validation part gave no {monitor} (train.monitor); "
                           "is it too small (no positive of any class)?")
    return v


def _better(value: float, best: Optional[float], monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor.endswith("loss") else value > best


# the only values of a training's records (per epoch, and its totals in metrics.json) that differ between reruns
TIMING_KEYS = ("epoch_seconds", "samples_per_second", "wall_seconds", "cpu_seconds", "train_seconds", "train_cpu_seconds")


def _checkpoint_state(model, ema, opt, sched, scaler, use_amp, device, epoch, result, bad_epochs) -> dict:
    rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "scaler": scaler.state_dict() if use_amp else None,
            "rng": distributed.gather((torch.get_rng_state(), rng_cuda)),  # one (cpu, cuda) pair per rank
            "epoch": epoch, "history": result.history, "best_epoch": result.best_epoch,
            "best_value": result.best_value, "bad_epochs": bad_epochs}


def fit(model: nn.Module, train: ArrayBatches, val: Optional[ArrayBatches], cfg: TrainConfig, num_classes: int,
        multilabel: bool, ckpt_dir: Path, log: Callable[[dict], None], device: torch.device,
        resume: bool = False, progress: bool = True, seed: int = 0, dist: Dist = Dist(),
        reset_log: Optional[Callable[[list[dict]], None]] = None,
        on_best: Optional[Callable[[nn.Module], None]] = None, teacher: Optional[nn.Module] = None,
        distill: Optional[DistillConfig] = None, band_hz: Optional[torch.Tensor] = None) -> FitResult:
    """Train `model` for cfg.epochs, saving `last.pt` (everything needed to resume) and `best.pt` (weights of
    the best epoch on the validation monitor, or of the last epoch with train.keep: last or no validation part) in
    `ckpt_dir` after every epoch (rank 0 only). With resume, continue from `last.pt` exactly where it
    stopped; `reset_log(history)` then rewrites the per-epoch log to match the checkpoint (an epoch logged
    after the last checkpoint is run again, not logged twice). With `teacher` and `distill.enabled`, the loss
    is distilled from the (frozen) teacher's outputs on the same inputs (distill.py). With cfg.ema_decay, the
    moving average of the weights is what is validated, kept in `best.pt` and passed to `on_best`. `band_hz`:
    the centre frequencies of the log-mel bands (FeatureStore.band_hz), which train.augment.pitch_shift needs."""
    from tqdm import tqdm

    if cfg.augment.pitch_shift > 0 and band_hz is None:
        raise ConfigError("train.augment.pitch_shift shifts the pitch of log-mel spectrograms: these features are "
                          "not log-mel (features.kind); use freq_shift or remove it")

    model.to(device)
    # NHWC lets oneDNN (and cuDNN) use their fast convolution kernels; the weights go back to the default
    # layout at the end, so saved and exported models look like any other
    channels_last = cfg.channels_last and uses_conv2d(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    precision = resolve_precision(cfg.precision, device)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    use_amp = precision == "fp16"  # float16 needs loss scaling; bfloat16 has float32's range
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    opt = make_optimizer(model.parameters(), cfg)
    # the average follows the parameters and the BN statistics, so it can be validated as it is
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) \
        if cfg.ema_decay else None
    scored = ema.module if ema is not None else model  # what is validated and kept
    sched, per_batch = make_scheduler(opt, cfg, len(train))
    crit = loss_fn(multilabel, cfg.label_smoothing)
    if teacher is not None and distill is not None and distill.enabled:
        teacher.to(device)
        if channels_last and uses_conv2d(teacher):  # its forward is as costly as the student's: same fast kernels
            teacher.to(memory_format=torch.channels_last)

    def amp():
        return torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None)

    train_loss = objective(crit, teacher, distill, multilabel, amp)
    has_val = val is not None and len(val.rows) > 0
    result = FitResult(monitor=resolve_monitor(cfg, multilabel, has_val),
                       unchosen=KEPT_LAST if has_val else NO_VALIDATION)
    start_epoch, bad_epochs = 0, 0
    last = ckpt_dir / "last.pt"
    if resume and last.exists():
        state = safe_torch_load(last)
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng_cpu, rng_cuda = state["rng"][min(dist.rank, len(state["rng"]) - 1)]
        torch.set_rng_state(rng_cpu)
        if device.type == "cuda" and rng_cuda is not None:
            torch.cuda.set_rng_state(rng_cuda.cpu(), device)
        start_epoch = int(state["epoch"]) + 1
        result.history = list(state["history"])
        result.best_epoch, result.best_value = int(state["best_epoch"]), state["best_value"]
        bad_epochs = int(state["bad_epochs"])
        if cfg.early_stopping and bad_epochs >= cfg.early_stopping:
            start_epoch, result.stopped_early = cfg.epochs, True  # it had already stopped
    if resume and reset_log and dist.is_main:
        reset_log(result.history)
    aug_gen = torch.Generator()
    for epoch in range(start_epoch, cfg.epochs):
        aug_gen.manual_seed((seed * 100_003 + epoch) * 1_009 + dist.rank)  # same draws after a resume
        train.set_epoch(epoch)
        net.train()
        t0, cpu0, total_loss, seen, correct = time.perf_counter(), time.process_time(), 0.0, 0, 0
        lr = opt.param_groups[0]["lr"]  # the rate this epoch trains with (at its first batch)
        bar = tqdm(train, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not (progress and dist.is_main))
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            x = augment_batch(x, cfg.augment, aug_gen, band_hz)
            target = y
            if cfg.augment.mixup_alpha > 0:
                x, target = mixup(x, y, cfg.augment.mixup_alpha, num_classes, aug_gen)
            with amp():
                logits = net(x)
            loss = train_loss(x, logits.float(), target)  # the loss (and softmax) in float32 whatever the precision
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            if sched is not None and per_batch:
                sched.step()
            total_loss += float(loss.detach()) * len(y)
            seen += len(y)
            if not multilabel:
                correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        if sched is not None and not per_batch:
            sched.step()
        elapsed = time.perf_counter() - t0
        total_loss, seen, correct = distributed.all_sum([total_loss, seen, correct], device)
        record = {"epoch": epoch + 1, "train_loss": total_loss / max(seen, 1), "lr": lr, "train_samples": int(seen),
                  "epoch_seconds": round(elapsed, 3), "samples_per_second": round(seen / max(elapsed, 1e-9), 1)}
        if not multilabel:
            record["train_accuracy"] = correct / max(seen, 1)
        if has_val:
            distributed.sync_buffers(scored)  # every rank evaluates the same model, so all stop together
            scores, targets, vloss = predict_scores(scored, val, device, multilabel)
            m = score_metrics(scores, targets, num_classes, multilabel)
            record["val_loss"] = vloss
            for key in ("accuracy", "macro_f1", "map"):
                if key in m:
                    record[f"val_{key}"] = m[key]
        # the whole epoch's cost, validation included: wall seconds, and CPU seconds of all threads
        record["wall_seconds"] = round(time.perf_counter() - t0, 3)
        record["cpu_seconds"] = round(time.process_time() - cpu0, 3)
        result.history.append(record)
        if result.monitor is None:  # nothing is chosen (train.keep: last, or no validation part): the last is kept
            value, improved = None, True
        else:
            value = _monitor_value(record, result.monitor)
            improved = _better(value, result.best_value, result.monitor)
        if improved:
            result.best_epoch, result.best_value, bad_epochs = epoch + 1, value, 0
        else:
            bad_epochs += 1
        state = _checkpoint_state(model, ema, opt, sched, scaler, use_amp, device, epoch, result, bad_epochs)
        if dist.is_main:
            if improved:
                atomic_torch_save({k: v.detach().cpu().contiguous() for k, v in scored.state_dict().items()},
                                  ckpt_dir / "best.pt")
                if on_best:
                    on_best(scored)
            atomic_torch_save(state, last)  # before the log line: a resume rewrites the log from here
            log(record)
        if cfg.early_stopping and bad_epochs >= cfg.early_stopping:
            result.stopped_early = True
            break
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    result.precision = precision
    return result
