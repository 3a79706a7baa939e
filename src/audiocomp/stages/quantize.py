"""`audiocomp quantize --from RUN`: quantize a trained or pruned model run into a new run.

Calibrates on training-split batches only, evaluates float and quantized models on the same test items,
measures size on disk, parameters covered, per-layer SQNR and batch-1 single-thread latency, and fails
loudly when accuracy collapses towards chance (LESSONS.md #5) unless degraded results are allowed.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..compress import quantization as q
from ..compress.onnx import export_onnx
from ..config import Config
from ..evaluate.facts import model_facts
from ..evaluate.latency import cpu_latency
from ..models import load_model
from ..models.io import artifact_path
from ..runs import Run, RunError, atomic_write_json
from ..train.data import calibration_batches, calibration_rows
from ..train.loop import nondeterminism_allowed
from . import prepare as prepare_stage
from .common import model_run_parent, stage_run
from .train import evaluate_parts, split_batches


class DegradedError(RunError):
    """Quantized accuracy fell near chance; the message explains and names --allow-degraded."""


def near_chance(float_acc: float, quant_acc: float, num_classes: int) -> bool:
    """True when the quantized model lost three quarters or more of the float model's margin over chance."""
    chance = 1.0 / num_classes
    return float_acc - chance > 0.05 and quant_acc < chance + 0.25 * (float_acc - chance)


def batch1_latency_ms(model: nn.Module, feature_shape, runs: int, warmup: int = 5) -> float:
    """Median wall time of one forward pass on a batch of 1, with one CPU thread."""
    return round(cpu_latency(model, torch.randn(1, *feature_shape), runs, warmup, threads=1)["median_ms"], 4)


def latencies(float_model: nn.Module, quant_path: Path, spec, backend: str, runs: int) -> dict:
    """Float eager vs the quantized artifact (reloaded as it will be used); for ONNX also float ONNX."""
    shape = spec.feature_shape
    out = {"float_eager_ms": batch1_latency_ms(float_model, shape, runs)}
    if backend == "onnxruntime":
        with tempfile.TemporaryDirectory(prefix="audiocomp-lat-") as tmp:
            with warnings.catch_warnings():  # tracer warnings about the wrapper's shape checks
                warnings.simplefilter("ignore")
                float_onnx = export_onnx(float_model, shape, Path(tmp) / "float.onnx")
            out["float_onnx_ms"] = batch1_latency_ms(q.OnnxModel(float_onnx, threads=1), shape, runs)
        out["quantized_ms"] = batch1_latency_ms(q.OnnxModel(quant_path, threads=1), shape, runs)
        out["speedup_vs_float_onnx"] = round(out["float_onnx_ms"] / out["quantized_ms"], 3)
    else:
        quantized, _ = load_model(quant_path.parent)
        out["quantized_ms"] = batch1_latency_ms(quantized, shape, runs)
    out["speedup_vs_float_eager"] = round(out["float_eager_ms"] / out["quantized_ms"], 3)
    return out


def run(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
        force: bool = False, allow_degraded: Optional[bool] = None, progress: bool = True) -> Run:
    qc = cfg.quantize
    q.check_options(qc)
    allow = qc.allow_degraded if allow_degraded is None else allow_degraded
    prepared = prepare_stage.load_prepared(model_run_parent(model_run))
    name = name or f"quantize-{model_run.name}-{qc.backend}-{qc.method}"
    with stage_run("quantize", cfg, name, runs_dir, force=force, parents=[model_run]) as run, nondeterminism_allowed():
        torch.manual_seed(cfg.seed)  # QAT dropout draws
        float_model, spec = load_model(model_run / "model")
        if any(step.get("stage") == "quantize" for step in spec.compression):
            raise RunError(f"run {model_run.path}: its model is already quantized "
                           f"({spec.compression[-1]['format']}); quantize the float run instead")
        split = prepared.split()
        store = prepared.store
        rows = calibration_rows(split["train"], qc.calibration_batch_size, qc.calibration_batches, cfg.seed)
        if set(rows.tolist()) & set(split["test"]):  # cannot happen with a valid splits.json; never calibrate on test
            raise RunError(f"{prepared.run.path / 'splits.json'}: training and test rows overlap")
        calib = calibration_batches(store.features, store.targets(), split["train"], qc.calibration_batch_size,
                                    qc.calibration_batches, cfg.seed)
        train = (split_batches(prepared, "train", cfg.train.batch_size, shuffle=True, seed=cfg.seed)
                 if qc.method == "qat" else None)
        folder = run.path / "model"
        qmodel, step, report = q.quantize(float_model, spec, calib, qc, folder, train, progress)
        spec.compression = [*spec.compression, step]
        atomic_write_json(folder / "arch.json", spec.to_dict())

        parts = ("test",) if split["test"] else ("val",)
        before = evaluate_parts(float_model, prepared, spec, torch.device("cpu"), cfg.eval.batch_size, parts=parts)
        after = evaluate_parts(qmodel, prepared, spec, torch.device("cpu"), cfg.eval.batch_size, parts=parts)
        part = parts[0]
        float_bytes = artifact_path(model_run / "model").stat().st_size
        quant_bytes = artifact_path(folder, spec).stat().st_size
        metrics = {
            "model": spec.name, "method": qc.method, "format": step["format"], "backend": qc.backend,
            "engine": step["engine"], "compute": step["compute"], "calibration": step.get("observer"),
            "calibration_batches": len(calib), "calibration_rows": rows.tolist(),
            f"float_{part}_accuracy": before[part].get("accuracy"), f"{part}_accuracy": after[part].get("accuracy"),
            f"float_{part}_macro_f1": before[part].get("macro_f1"), f"{part}_macro_f1": after[part].get("macro_f1"),
            f"{part}_items": after[part]["items"],
            "float_file_bytes": float_bytes, "file_bytes": quant_bytes, "size_ratio": round(quant_bytes / float_bytes, 4),
            "model_facts": model_facts(spec, folder),
            **q.coverage(float_model, qmodel, step, report),
            "sqnr_db": q.sqnr_report(float_model, qmodel, step, calib),
            "latency_batch1_1thread": latencies(float_model, artifact_path(folder, spec), spec, qc.backend,
                                                qc.latency_runs),
            **{k: v for k, v in report.items() if k != "onnx_quantized_elements"},
        }
        fa, qa = metrics[f"float_{part}_accuracy"], metrics[f"{part}_accuracy"]
        if fa is not None and qa is not None:
            metrics["accuracy_drop"] = round(fa - qa, 4)
            degraded = near_chance(fa, qa, spec.num_classes)
            metrics["degraded"] = degraded
            run.write_metrics(metrics)
            if degraded and not allow:
                worst = min(((v, k) for k, v in metrics["sqnr_db"].items() if v is not None), default=(None, "?"))
                raise DegradedError(
                    f"{run.path}: quantized {part} accuracy {qa:.3f} is near chance ({1 / spec.num_classes:.3f}; "
                    f"float {fa:.3f}); lowest SQNR {worst[0]} dB at {worst[1]} (see sqnr_db in metrics.json). "
                    "Try more calibration batches, quantize.calibration=minmax|histogram|percentile, "
                    "quantize.keep_float=[first,last], or method qat; --allow-degraded keeps it")
        else:
            run.write_metrics(metrics)
    return run
