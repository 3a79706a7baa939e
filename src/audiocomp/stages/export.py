"""`audiocomp export`: a deployable folder (model.onnx, labels.json, preprocessing.json, predict.py),
checked by running it on real inputs from the feature store (validation, else training items) against the
original model, or, for an ONNX Runtime INT8 graph, against its float parent."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..audio import fix_length, load
from ..compress.onnx import model_onnx, run_session, session
from ..config import Config
from ..deploy import bundle, predict_onnx
from ..deploy.frontend import LogMelFrontend, dct_matrix
from ..evaluate.agreement import FLOAT_TOLERANCE, onnx_quantized, verify
from ..features.extract import FeatureExtractor
from ..features.prepared import Prepared, check_rows
from ..runs import Run, RunError, atomic_copy, atomic_path, atomic_save_npy, atomic_write_json, read_json
from .context import open_stage

CHECK_ITEMS = 64  # enough for the INT8 top-1 agreement rule to mean something


def add_frontend(model_path: Path, feats, samples: int) -> None:
    """Prepend the log-mel front end to the ONNX graph at `model_path` (merged with onnx.compose)."""
    import onnx
    from onnx import compose

    fe_path = model_path.with_name("frontend.onnx")
    with atomic_path(fe_path) as tmp:
        torch.onnx.export(LogMelFrontend(feats).eval(), (torch.zeros(1, samples),), str(tmp), input_names=["audio"],
                          output_names=["frontend_features"], dynamic_axes={"audio": {0: "batch"}},
                          opset_version=17, dynamo=False)
    fe, model = onnx.load(str(fe_path)), onnx.load(str(model_path))
    fe_path.unlink()
    model = compose.add_prefix(model, "m_")
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", 17) != 17:  # merge_models needs equal default-domain opsets
        model = onnx.version_converter.convert_version(model, 17)
    fe.ir_version = model.ir_version = max(fe.ir_version, model.ir_version)
    merged = compose.merge_models(fe, model, io_map=[("frontend_features", model.graph.input[0].name)])
    with atomic_path(model_path) as tmp:
        onnx.save(merged, str(tmp))


def preprocessing(cfg: Config, spec, with_frontend: bool, model_file: str) -> dict:
    f = cfg.features
    samples = int(round(f.duration * f.sample_rate))
    return {
        "model_file": model_file, "input": "waveform" if (with_frontend or f.kind == "waveform") else "features",
        "input_shape": ["batch", samples] if (with_frontend or f.kind == "waveform") else ["batch", *spec.feature_shape],
        "kind": f.kind, "sample_rate": f.sample_rate, "duration": f.duration, "samples": samples,
        "duration_policy": "zero-pad short clips; cut long ones into consecutive windows of `duration` "
                           "(last partial window kept if >= half), answer = mean probability",
        "training_duration_policy": f.duration_policy, "mono": "mean of channels", "resampler": "soxr HQ",
        "n_fft": f.n_fft, "hop_length": f.hop_length, "win_length": f.win_length, "window": "hann (periodic)",
        "center": True, "pad_mode": "constant", "n_mels": f.n_mels, "f_min": f.f_min, "f_max": f.f_max,
        "mel_basis": "librosa.filters.mel (slaney), mel_basis.npy", "power_to_db": {"ref": 1.0, "amin": 1e-10},
        "top_db": f.top_db, "n_mfcc": f.n_mfcc if f.kind == "mfcc" else None,
        "normalisation": f"{spec.norm_mode} mean/std, inside the model graph",
        "model_input_size": spec.input_size, "multilabel": spec.multilabel, "outputs": "logits",
    }


def check_inputs(cfg: Config, prepared: Prepared, raw: bool, n: int = CHECK_ITEMS) -> tuple[np.ndarray, np.ndarray]:
    """Real inputs for the check, never test items: (store features, the same items' waveforms); waveforms
    only if `raw`."""
    rows = np.asarray(check_rows(prepared, n))
    feats = np.asarray(prepared.store.features[rows], dtype=np.float32)
    waves = None
    if raw:
        root = Path(read_json(prepared.run / "data.json")["root"])
        length = int(round(cfg.features.duration * cfg.features.sample_rate))
        items = [prepared.store.items[i] for i in rows]
        waves = np.stack([fix_length(load(root / it.path, cfg.features.sample_rate, it.start_s, it.end_s), length,
                                     cfg.features.duration_policy) for it in items])
    return feats, waves


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def write_deploy_files(cfg: Config, spec, model, deploy: Path, with_frontend: bool, torchscript: bool) -> dict:
    """Everything beside model.onnx and the target's files, each written atomically; returns preprocessing.json."""
    atomic_write_json(deploy / "labels.json", list(spec.classes))
    prep = preprocessing(cfg, spec, with_frontend, "model.onnx")
    atomic_write_json(deploy / "preprocessing.json", prep)
    if cfg.features.kind != "waveform":
        atomic_save_npy(deploy / "mel_basis.npy", FeatureExtractor(cfg.features).mel_basis.numpy())
        if cfg.features.kind == "mfcc":
            atomic_save_npy(deploy / "dct.npy", dct_matrix(cfg.features.n_mfcc, cfg.features.n_mels))
    atomic_copy(predict_onnx.__file__, deploy / "predict.py")
    if torchscript:  # optional: the traced float model (features in), for torch-based devices
        with torch.no_grad(), atomic_path(deploy / "model.ts.pt") as tmp:
            traced = torch.jit.trace(model, torch.zeros(1, *spec.feature_shape), check_trace=False)
            torch.jit.save(traced, str(tmp))
    return prep


def run(cfg: Config, model_run: Run, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None,
        force: bool = False, with_frontend: Optional[bool] = None, out: Optional[Path] = None,
        tolerance: Optional[float] = None, torchscript: Optional[bool] = None) -> Run:
    """Options left None come from cfg.export (with_frontend, tolerance, torchscript); `out` only copies the
    bundle elsewhere, so it is the one option that does not name the run."""
    options = {"with_frontend": with_frontend, "tolerance": tolerance, "torchscript": torchscript}
    cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={k: v for k, v in options.items()
                                                                        if v is not None})})
    target, with_frontend, tolerance = cfg.export.target, cfg.export.with_frontend, cfg.export.tolerance
    with open_stage("export", cfg, [model_run], runs_dir, name=name, force=force, data=False) as ctx:
        run = ctx.run
        folder = model_run.path / "model"
        model, spec = ctx.parent_model()
        fmt = spec.format
        bundle.check_target(target, with_frontend, "int8" in fmt)
        int8 = onnx_quantized(spec)  # its reference is the float parent, not the INT8 artifact itself
        reference_model = ctx.reference(model, spec)
        raw_input = with_frontend and cfg.features.kind != "waveform"
        deploy = run.path / "deploy"
        deploy.mkdir(exist_ok=True)
        model_onnx(model, spec, folder, deploy / "model.onnx", bundle.TARGETS[target].opset)
        samples = int(round(cfg.features.duration * cfg.features.sample_rate))
        if raw_input:
            add_frontend(deploy / "model.onnx", cfg.features, samples)
        prep = write_deploy_files(cfg, spec, model, deploy, with_frontend, cfg.export.torchscript)
        pinned = bundle.write(deploy, target, fmt, prep)  # opset/IR pinned before the check runs the file

        # the check: exported graph vs the original model (an INT8 graph: its float parent) on real items
        # (and, with the front end, from audio)
        feats, waves = check_inputs(cfg, ctx.data, raw_input)
        extra = {}
        if raw_input:  # the reference is FeatureExtractor (float32) on the same audio; the store holds float16
            ext = FeatureExtractor(cfg.features)
            recomputed = np.stack([ext(w) for w in waves])
            with torch.no_grad():
                in_graph = LogMelFrontend(cfg.features).eval()(torch.from_numpy(waves)).numpy()
            extra = {"frontend_max_abs_diff_db": max_abs_diff(in_graph, recomputed),
                     "store_vs_recomputed_max_abs_diff_db": max_abs_diff(feats, recomputed)}
            feats = recomputed
        with torch.no_grad():
            reference = reference_model(torch.from_numpy(feats)).numpy()
        got = run_session(session(deploy / "model.onnx", threads=1), waves if raw_input else feats)
        check, problem = verify(got, reference, int8, tolerance or FLOAT_TOLERANCE)
        metrics = {"model_run": model_run.name, "format": fmt, "with_frontend": raw_input, "check_items": len(feats),
                   "check_split": "validation, then training items", **check,
                   "files": sorted(p.name for p in deploy.iterdir()),
                   "model_bytes": (deploy / "model.onnx").stat().st_size}
        metrics.update(extra, target=target, opset=pinned["opset"], ir_version=pinned["ir_version"])
        ctx.write_metrics(metrics)
        if problem:
            raise RunError(f"{deploy / 'model.onnx'}: {problem} on {len(feats)} items")
        if out is not None:
            shutil.copytree(deploy, out, dirs_exist_ok=True, copy_function=atomic_copy)
    return run
