"""The CUDA paths (skipped without a GPU): training with float16 autocast and loss scaling, FP16 quantization
computed in float16 on the GPU, and DistributedDataParallel on NCCL under torchrun. Run on a GPU machine with
`pytest tests/gpu`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiocomp import load_model
from audiocomp.config import load_config
from audiocomp.evaluate.scoring import score_parts
from audiocomp.features.prepared import load_prepared
from audiocomp.runs import Run
from audiocomp.stages import quantize, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SRC = Path(__file__).resolve().parents[2] / "src"


def _train_cfg(tiny_overrides, *extra):
    return load_config([], tiny_overrides + ["train.device=cuda", "train.epochs=4", *extra])


def test_training_on_cuda_uses_float16_autocast_and_saves_a_cpu_float32_model(tiny_overrides, tmp_path):
    run = train.run(_train_cfg(tiny_overrides), tmp_path, name="gpu", progress=False)
    m = run.metrics()
    assert run.manifest["device"].startswith("cuda") and m["precision"] == "fp16"
    losses = [r["train_loss"] for r in m["history"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]  # the scaler let it learn
    model, spec = load_model(run / "model")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    # the kept epoch was validated on the GPU (float32, outside autocast); the saved model scored on the CPU
    # must give the same accuracy, up to one item whose top two logits nearly tie
    (on_cpu, _), = score_parts(model, load_prepared(run.parent("prepare")), spec, torch.device("cpu"), 64,
                               parts=("val",)).values()
    best = next(r for r in m["history"] if r["epoch"] == m["best_epoch"])
    for recorded in (best["val_accuracy"], m["val_accuracy"]):  # the epoch's, and train's own re-scoring
        assert abs(recorded - on_cpu["accuracy"]) <= 1 / m["val_items"] + 1e-9


def test_fp32_on_cuda_is_plain_float32(tiny_overrides, tmp_path):
    run = train.run(_train_cfg(tiny_overrides, "train.precision=fp32", "train.epochs=1"), tmp_path, name="g32",
                    progress=False)
    assert run.metrics()["precision"] == "fp32"


def test_fp16_quantization_computes_in_float16_on_the_gpu(tiny_overrides, tmp_path):
    parent = train.run(_train_cfg(tiny_overrides), tmp_path, name="parent", progress=False)
    cfg = load_config([], tiny_overrides + ["quantize.method=fp16"])
    qrun = quantize.run(cfg, parent, tmp_path, name="fp16", progress=False)
    qmodel, qspec = load_model(qrun / "model")
    step = qspec.compression[-1]
    assert step["compute"] == "float16" and step["engine"] == "cuda"
    fmodel, spec = load_model(parent / "model")
    x = torch.randn(16, *spec.feature_shape)
    with torch.no_grad():
        ref, out = fmodel(x), qmodel(x)
    assert out.dtype == torch.float32 and out.device.type == "cpu"  # ComputeAs hands float32 back
    assert next(qmodel.parameters()).dtype == torch.float16 and next(qmodel.parameters()).is_cuda
    # float16 arithmetic: close to float32, but not identical (so it really ran in float16)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert 0 < (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_torchrun_trains_with_ddp_on_nccl(tiny_overrides, tmp_path):
    sets = [a for o in tiny_overrides + ["train.device=cuda", "train.epochs=2"] for a in ("--set", o)]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "audiocomp",
            "train", "--runs-dir", str(tmp_path), "--name", "ddp", "-q", *sets]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = Run(tmp_path / "ddp")
    assert run.status == "done" and run.manifest["backend"] == "nccl" and run.manifest["world_size"] == 1
    assert run.manifest["device"] == "cuda:0" and run.metrics()["precision"] == "fp16"
    load_model(run / "model")
