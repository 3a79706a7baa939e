"""The rungs of `audiocomp compress`: one folder per rung under the run's rungs/, written by one ladder.

    rungs/<method>-<pct>/model/      the pruned, fine-tuned FP32 model (model.pt + arch.json)
    rungs/<method>-<pct>/int8/       its ONNX Runtime static QDQ INT8 form (model.onnx + arch.json)
    rungs/<method>-<pct>/fp32.onnx   the FP32 form exported, timed in the same runtime as the INT8 one
    rungs/<method>-<pct>/<form>-predictions-val.npz
    rungs/<method>-<pct>/rung.json   its measurements, written last: a rung with this file is finished

A ladder prunes each rung from the previous one (warm start) and fine-tunes it (distilled from the parent
when distill.enabled), keeping its last fine-tuning epoch by default (compress.rung_epoch), since the
validation part then judges it; a rerun finds the finished rungs by their rung.json and starts after the last.
Every score here is on the VALIDATION part: the test part is the stage's, after the choice.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..compress import quantization as q
from ..compress.ladder import METHODS, exhausted, ladder, rung_name
from ..compress.onnx import export_onnx
from ..compress.pruning import prune_model
from ..config import Config
from ..evaluate.facts import model_facts
from ..evaluate.latency import batch1_latency_ms
from ..evaluate.predictions import Predictions, interval
from ..features.batches import calibration_batches, calibration_rows
from ..models import load_model, save_model
from ..models.base import ModelSpec
from ..models.reshape import record_shapes
from ..runs import Run, atomic_write_json, read_json
from ..train.device import seed_everything
from .context import StageContext
from .finetune import prune_context, teacher_of

RUNG_FILE = "rung.json"
PARENT = "parent"


def score_rung(ctx: StageContext, model, spec, label: str) -> tuple[dict, Predictions]:
    """Validation accuracy (with its bootstrap interval) and predictions of one form of a rung (`label`:
    "<rung>/<form>"): the only score a rung gets before the choice."""
    m, pred = ctx.score(model, spec, ("val",))["val"]
    ci = interval(pred, ctx.cfg.eval.interval) or {}
    return {"val_accuracy": m["accuracy"], "val_accuracy_low": ci.get("low"), "val_accuracy_high": ci.get("high"),
            "val_items": m["items"]}, pred


def _latency(cfg: Config, onnx_path: Path, spec) -> float:
    """Batch-1, 1-thread median latency in ONNX Runtime: every form of every rung in the same runtime."""
    return batch1_latency_ms(q.OnnxModel(onnx_path, threads=1), spec.feature_shape, cfg.compress.latency_runs,
                             warmup=3)


def measure_form(ctx: StageContext, rung_dir: Path, folder: Path, model, spec, form: str) -> dict:
    """One row of the front: validation scores, file sizes, parameters, MACs and ONNX Runtime latency."""
    scores, pred = score_rung(ctx, model, spec, f"{rung_dir.name}/{form}")
    pred.save(rung_dir / f"{form}-predictions-val.npz")
    facts = model_facts(spec, folder)
    if form == "fp32":
        with warnings.catch_warnings():  # tracer warnings about the wrapper's shape checks
            warnings.simplefilter("ignore")
            onnx_path = export_onnx(model, spec.feature_shape, rung_dir / "fp32.onnx")
    else:
        onnx_path = folder / "model.onnx"
    return {"form": form, "folder": str(folder.relative_to(ctx.run.path)) if folder.is_relative_to(ctx.run.path)
            else str(folder), "format": facts["format"], **scores,
            "file": folder.name + "/" + (spec.compression[-1].get("artifact", "model.pt") if spec.compression else
                                         "model.pt"),
            "file_bytes": facts["file_bytes"], "zipped_bytes": facts["zipped_bytes"],
            "parameters": facts["parameters"], "nonzero": facts["nonzero"], "macs": facts["macs"],
            "latency_ms": _latency(ctx.cfg, onnx_path, spec)}


def quantize_form(ctx: StageContext, model, spec: ModelSpec, folder: Path):
    """The ONNX Runtime static QDQ INT8 form of `model` in `folder` (calibrated on training batches, the
    quantize section's calibration settings), loadable like a quantize run's model."""
    qc = ctx.cfg.quantize.model_copy(update={"backend": "onnxruntime", "method": "static"})
    if qc.calibration not in ("auto", *q.CALIBRATION["onnxruntime"]):
        qc = qc.model_copy(update={"calibration": "auto"})
    rows = calibration_rows(ctx.data.split()["train"], qc.calibration_batch_size, qc.calibration_batches, ctx.cfg.seed)
    calib = calibration_batches(ctx.data.store.features, ctx.data.store.targets(), rows, qc.calibration_batch_size)
    qmodel, step, _ = q.quantize(model, spec, calib, qc, folder)
    qspec = ModelSpec.from_dict(spec.to_dict())
    qspec.compression = [*spec.compression, step]
    atomic_write_json(folder / "arch.json", qspec.to_dict())
    return qmodel, qspec


def finished(rung_dir: Path) -> Optional[dict]:
    return read_json(rung_dir / RUNG_FILE) if (rung_dir / RUNG_FILE).is_file() else None


def parent_rung(ctx: StageContext) -> dict:
    """The parent as rung 0: its FP32 form (the reference) and its INT8 form (a candidate)."""
    rung_dir = ctx.run.path / "rungs" / PARENT
    done = finished(rung_dir)
    if done:
        return done
    rung_dir.mkdir(parents=True, exist_ok=True)
    model, spec = ctx.parent_model()
    forms = [measure_form(ctx, rung_dir, ctx.parent / "model", model, spec, "fp32")]
    if ctx.cfg.compress.int8:
        qmodel, qspec = quantize_form(ctx, model, spec, rung_dir / "int8")
        forms.append(measure_form(ctx, rung_dir, rung_dir / "int8", qmodel, qspec, "int8"))
    record = {"rung": PARENT, "method": "none", "ratio": 0.0, "forms": forms}
    atomic_write_json(rung_dir / RUNG_FILE, record)
    return record


def prune_rung(ctx: StageContext, model, spec: ModelSpec, method: str, ratio: float, step: float, rung_dir: Path,
               teacher) -> list[dict]:
    """Prune `model` (in place) by `step` of its channels with the ladder's method, fine-tune it, save it."""
    cfg = ctx.cfg
    prune_cfg = cfg.prune.model_copy(update={"method": METHODS[method], "channel_ratio": step, "steps": 1,
                                             "macs_reduction": None, "sensitivity": None,
                                             "finetune_epochs": cfg.compress.finetune_epochs})
    pctx = prune_context(ctx, spec, prune_cfg, checkpoints=rung_dir / "checkpoints", teacher=teacher,
                         log_prefix=f"{rung_dir.name}/", keep=cfg.compress.rung_epoch)
    steps = prune_model(model, pctx)
    model.eval()
    spec.compression = [*spec.compression, {"method": prune_cfg.method, "format": "fp32", "ladder": method,
                                            "ratio": ratio, **prune_cfg.model_dump(mode="json")}]
    spec.shapes = record_shapes(model)
    save_model(model, spec, rung_dir / "model")
    shutil.rmtree(rung_dir / "checkpoints", ignore_errors=True)  # best.pt is in model/ now
    return steps


def run_ladder(ctx: StageContext, method: str, parent_val: float, progress: bool = True) -> list[dict]:
    """Every rung of one method's ladder, in order of increasing ratio, each from the previous one; the
    finished rungs (rung.json) are read, not recomputed. With compress.stop_at_miss (and sequential) the
    ladder ends at the rung where its last form still in the running missed max_drop of `parent_val`."""
    from tqdm import tqdm

    cc = ctx.cfg.compress
    teacher = teacher_of(ctx)
    records, model, spec, previous = [], None, None, None
    for ratio, step in tqdm(ladder(cc.ratios), desc=f"compress {method}", leave=False, disable=not progress):
        if cc.stop_at_miss and cc.sequential and exhausted(records, parent_val, cc.max_drop):
            break
        rung_dir = ctx.run.path / "rungs" / rung_name(method, ratio)
        done = finished(rung_dir)
        if done:
            records.append(done)
            model, previous = None, rung_dir  # the next rung starts from this one's saved model
            continue
        if model is None:
            model, spec = load_model(previous / "model") if previous else ctx.parent_model()
        seed_everything(ctx.cfg.seed, ctx.cfg.train.deterministic)  # a resumed ladder draws what a whole one does
        rung_dir.mkdir(parents=True, exist_ok=True)
        history = prune_rung(ctx, model, spec, method, ratio, step, rung_dir, teacher)
        forms = [measure_form(ctx, rung_dir, rung_dir / "model", model, spec, "fp32")]
        if ctx.cfg.compress.int8:
            qmodel, qspec = quantize_form(ctx, model, spec, rung_dir / "int8")
            forms.append(measure_form(ctx, rung_dir, rung_dir / "int8", qmodel, qspec, "int8"))
        record = {"rung": rung_dir.name, "method": method, "ratio": ratio, "step_ratio": round(step, 6),
                  "steps": history, "forms": forms}
        atomic_write_json(rung_dir / RUNG_FILE, record)
        records.append(record)
        previous = rung_dir
    return records


def ladder_job(cfg_dict: dict, run_path: str, parent_paths: list[str], method: str, parent_val: float,
               threads: int) -> list[dict]:
    """One ladder in a worker process (`--jobs`): the same work on a context rebuilt from paths (the calling
    process holds the run's lock)."""
    torch.set_num_threads(threads)
    ctx = StageContext("compress", Config.model_validate(cfg_dict), Run(Path(run_path)),
                       [Run(Path(p)) for p in parent_paths], progress=False)
    return run_ladder(ctx, method, parent_val, progress=False)
