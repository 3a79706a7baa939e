"""`audiocomp quantize --from RUN`: quantize a trained or pruned model run into a new run.

Calibrates on training-split batches only (built from the rows metrics.json records), fails loudly when
validation accuracy collapses towards chance (LESSONS.md #5) unless degraded results are allowed, then
reports float and quantized models on the same test items (per-item predictions of both saved, accuracy
intervals and the paired difference with McNemar's test), size on disk, parameters covered, per-layer SQNR
and batch-1 single-thread latency. The test part is scored only after the guard has decided.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Optional

from torch import nn

from ..compress import quantization as q
from ..compress.onnx import export_onnx
from ..config import Config
from ..evaluate.facts import model_facts
from ..evaluate.latency import batch1_latency_ms
from ..evaluate.predictions import Predictions, compare_parts
from ..features.batches import calibration_batches, calibration_rows
from ..models import load_model
from ..models.io import artifact_path
from ..runs import Run, RunError, atomic_write_json
from .context import open_stage


Scored = tuple[tuple[dict, Predictions], tuple[dict, Predictions]]  # (float, quantized) (metrics, predictions)


class DegradedError(RunError):
    """Quantized accuracy fell near chance; the message explains and names --allow-degraded."""


def near_chance(float_acc: float, quant_acc: float, num_classes: int) -> bool:
    """True when the quantized model lost three quarters or more of the float model's margin over chance."""
    chance = 1.0 / num_classes
    return float_acc - chance > 0.05 and quant_acc < chance + 0.25 * (float_acc - chance)


def guard(val: Optional[Scored], spec) -> dict:
    """The near-chance check, judged on the validation part only (float vs quantized on the same items):
    metrics.json keys `guard` (what it judged on, in words), `degraded` (True/False, None when nothing was
    judged) and the validation accuracies it compared."""
    if spec.multilabel:
        return {"guard": "none (multi-label set: no accuracy to judge)", "degraded": None}
    if val is None:
        return {"guard": "none (no validation part)", "degraded": None}
    (fm, _), (qm, _) = val
    fa, qa = fm["accuracy"], qm["accuracy"]
    return {"guard": "near-chance check on val accuracy", "degraded": near_chance(fa, qa, spec.num_classes),
            "float_val_accuracy": fa, "val_accuracy": qa, "val_items": fm["items"]}


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
    """`allow_degraded` left None comes from quantize.allow_degraded."""
    if allow_degraded is not None:
        cfg = cfg.model_copy(update={"quantize": cfg.quantize.model_copy(update={"allow_degraded": allow_degraded})})
    qc = cfg.quantize
    q.check_options(qc)
    with open_stage("quantize", cfg, [model_run], runs_dir, name=name, force=force, progress=progress) as ctx:
        float_model, spec = ctx.parent_model()
        if any(step.get("stage") == "quantize" for step in spec.compression):
            raise RunError(f"run {model_run.path}: its model is already quantized "
                           f"({spec.format}); quantize the float run instead")
        split = ctx.data.split()
        store = ctx.data.store
        rows = calibration_rows(split["train"], qc.calibration_batch_size, qc.calibration_batches, cfg.seed)
        if set(rows.tolist()) & set(split["test"] + split["val"]):  # cannot happen with a valid splits.json
            raise RunError(f"{ctx.data.run.path / 'splits.json'}: training rows overlap the validation or test part")
        calib = calibration_batches(store.features, store.targets(), rows, qc.calibration_batch_size)
        train = (ctx.batches("train", cfg.train.batch_size, shuffle=True, seed=cfg.seed)
                 if qc.method == "qat" else None)
        folder = ctx.run.path / "model"
        teacher = ctx.parent_model()[0] if qc.method == "qat" and cfg.distill.enabled else None
        qmodel, step, report = q.quantize(float_model, spec, calib, qc, folder, train, progress, teacher, cfg.distill)
        spec.compression = [*spec.compression, step]
        atomic_write_json(folder / "arch.json", spec.to_dict())

        def score(part: str) -> Scored:  # the float and the quantized model on the same rows of one part
            return tuple(ctx.score(m, spec, (part,))[part] for m in (float_model, qmodel))

        val = score("val") if split["val"] else None
        metrics = {
            "model": spec.name, "method": qc.method, "format": step["format"], "backend": qc.backend,
            "engine": step["engine"], "compute": step["compute"], "calibration": step.get("observer"),
            "calibration_batches": len(calib), "calibration_rows": rows.tolist(), **guard(val, spec),
            "distill": cfg.distill.model_dump() if teacher is not None else None,
        }
        # the guard has decided (on validation): only now is the test part scored, to report
        test = score("test")
        for tag, (m, _) in zip(("float_", ""), test):
            metrics |= {f"{tag}test_accuracy": m.get("accuracy"), f"{tag}test_macro_f1": m.get("macro_f1")}
        scored = {p: s for p, s in (("val", val), ("test", test)) if s is not None}
        float_preds, preds = ({p: s[k][1] for p, s in scored.items()} for k in (0, 1))
        float_bytes = artifact_path(model_run / "model").stat().st_size
        quant_bytes = artifact_path(folder, spec).stat().st_size
        metrics |= {
            "test_items": test[1][0]["items"],
            "float_file_bytes": float_bytes, "file_bytes": quant_bytes, "size_ratio": round(quant_bytes / float_bytes, 4),
            "model_facts": model_facts(spec, folder),
            **q.coverage(float_model, qmodel, step, report),
            "sqnr_db": q.sqnr_report(float_model, qmodel, step, calib),
            "latency_batch1_1thread": latencies(float_model, artifact_path(folder, spec), spec, qc.backend,
                                                qc.latency_runs),
            **{k: v for k, v in report.items() if k != "onnx_quantized_elements"},
            **ctx.save_predictions(preds),
            **ctx.save_predictions(float_preds, prefix="float_"),
            # quantized - float on the same items: paired bootstrap interval and McNemar's exact test
            "vs_parent": compare_parts(float_preds, preds, cfg.eval.interval),
        }
        fa, qa = metrics["float_test_accuracy"], metrics["test_accuracy"]
        if fa is not None and qa is not None:
            metrics["accuracy_drop"] = round(fa - qa, 4)
        ctx.write_metrics(metrics)
        if metrics["degraded"] and not qc.allow_degraded:
            fa, qa = metrics["float_val_accuracy"], metrics["val_accuracy"]
            worst = min(((v, k) for k, v in metrics["sqnr_db"].items() if v is not None), default=(None, "?"))
            raise DegradedError(
                f"{ctx.run.path}: quantized val accuracy {qa:.3f} is near chance ({1 / spec.num_classes:.3f}; "
                f"float {fa:.3f}); lowest SQNR {worst[0]} dB at {worst[1]} (see sqnr_db in metrics.json). "
                "Try more calibration batches, quantize.calibration=minmax|histogram|percentile, "
                "quantize.keep_float=[first,last], or method qat; --allow-degraded keeps it")
    return ctx.run
