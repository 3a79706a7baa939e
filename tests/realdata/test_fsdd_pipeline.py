"""Real data: FSDD through CNN -> Taylor prune -> static INT8 -> eval -> report, checked against the targets
of the pruning and quantization issues (Taylor 50%: >= 2x fewer MACs, <= 1 point drop; Taylor + INT8:
>= 8x smaller than FP32, <= 2 points drop). 345 s measured on 2 cores shared with one other job."""
import csv
from pathlib import Path

import pytest

from audiocomp.config import ConfigError
from audiocomp.stages import pipeline
from audiocomp.stages.registry import STAGES

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_fsdd_cnn_taylor_int8_pipeline_meets_the_targets(tmp_path, fsdd_root):
    for stage in ("prune", "quantize"):
        try:
            STAGES.get(stage).check_available()
        except ConfigError as exc:
            pytest.skip(str(exc))
    # A strong baseline first (the conventional takes-0-4 test fold, validation drawn alike from takes 5-49,
    # a pooled 2x2 grid before the head, cosine schedule): with an 85% model the 1-point Taylor target measures noise.
    # The study's CNN size (32-64-128-128): on the demo's 16-32-64-64 the fixed per-tensor cost of an INT8 file
    # keeps Taylor + INT8 at 6.5x smaller, short of the 8x target.
    sets = [f"data.root={fsdd_root}", "model.kwargs.channels=[32,64,128,128]",
            "model.kwargs.pooled=[2,2]", "model.kwargs.dropout=0.1",
            "train.epochs=12", "train.lr=0.003", "train.scheduler=cosine", "taylor:prune.method=taylor",
            "taylor:prune.channel_ratio=0.5", "taylor:prune.finetune_epochs=4"]
    summary = pipeline.run(CONFIGS / "demo-compress.yaml", sets, tmp_path / "runs", tmp_path / "out",
                           [CONFIGS / "data" / "fsdd.yaml"], progress=False, quiet=True)
    run_of = {s["id"]: s["run"] for s in summary["stages"]}
    with open(tmp_path / "out" / "report" / "report.csv", newline="") as fh:
        rows = {r["run_dir"]: r for r in csv.DictReader(fh)}
    fp32, taylor, int8 = (rows[run_of[i]] for i in ("fp32", "taylor", "int8"))
    acc = {k: float(r["test_accuracy"]) for k, r in (("fp32", fp32), ("taylor", taylor), ("int8", int8))}
    assert acc["fp32"] > 0.8, f"FP32 baseline too weak to judge compression: {acc}"
    assert float(taylor["macs"]) <= float(fp32["macs"]) / 2
    assert acc["taylor"] >= acc["fp32"] - 0.01, acc
    assert float(int8["size_mb"]) <= float(fp32["size_mb"]) / 8
    assert acc["int8"] >= acc["fp32"] - 0.02, acc
