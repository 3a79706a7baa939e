"""Export and bench check an ONNX Runtime INT8 graph against its FLOAT PARENT on validation/training items:
a good quantization passes, one with a weight scale multiplied by 50 fails (it passed when the graph was
compared with itself)."""
from __future__ import annotations

import runpy
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from audiocomp.evaluate.agreement import INT8_MAX_RELATIVE_ERROR, INT8_MIN_TOP1_AGREEMENT, verify
from audiocomp.runs import Run, RunError, atomic_write_json, read_json

warnings.filterwarnings("ignore")
BENCH = ["bench.iterations=3", "bench.warmup=1", "bench.batch_sizes=[1]", "bench.threads=[1]",
         "bench.fresh_process=false", "bench.runtimes=[onnxruntime]"]


# multiplies the first quantized weight's scale by 50, found by the graph's structure (names are compacted);
# the script's own helper, loaded as tests/reliability/test_crash.py loads its script
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_int8_check.py"
break_first_weight_scale = runpy.run_path(str(SCRIPT))["break_first_scale"]


@pytest.fixture(scope="module")
def int8_runs(trained_run):
    """(runs, config, a good ONNX Runtime static INT8 run, the same run with one weight scale x 50)."""
    from audiocomp.config import load_config
    from audiocomp.stages import quantize

    runs, model_run, cfg = trained_run
    qcfg = load_config([], ["quantize.backend=onnxruntime", "quantize.method=static", "quantize.latency_runs=2",
                            *BENCH], base=cfg.to_dict())
    good = quantize.run(qcfg, model_run, runs, name="chk-int8", force=True, allow_degraded=True, progress=False)
    broken = runs / "chk-int8-broken"
    shutil.copytree(good.path, broken, dirs_exist_ok=True)
    break_first_weight_scale(broken / "model" / "model.onnx")
    atomic_write_json(broken / "manifest.json", {**read_json(broken / "manifest.json"), "name": broken.name})
    return runs, qcfg, good, Run(broken)


def test_export_checks_a_good_int8_graph_against_its_float_parent(int8_runs):
    from audiocomp.stages import export

    runs, cfg, good, _ = int8_runs
    m = export.run(cfg, good, runs, name="chk-export-good", force=True).metrics()
    assert m["rule"] == "int8 vs float parent" and m["check_items"] > 0
    assert m["top1_agreement"] >= INT8_MIN_TOP1_AGREEMENT and m["relative_logit_error"] <= INT8_MAX_RELATIVE_ERROR
    assert m["max_abs_diff"] > 0  # INT8 against float: never the exact 0 of a graph compared with itself


def test_export_fails_a_broken_int8_graph(int8_runs):
    from audiocomp.stages import export

    runs, cfg, _, broken = int8_runs
    with pytest.raises(RunError, match="float parent"):
        export.run(cfg, broken, runs, name="chk-export-broken", force=True)
    m = read_json(runs / "chk-export-broken" / "metrics.json")  # what failed is on record
    assert m["relative_logit_error"] > INT8_MAX_RELATIVE_ERROR or m["top1_agreement"] < INT8_MIN_TOP1_AGREEMENT


def test_bench_refuses_to_time_a_broken_int8_graph(int8_runs):
    from audiocomp.stages import bench

    runs, cfg, good, broken = int8_runs
    ok = bench.run(cfg, good, runs, name="chk-bench-good", force=True, progress=False).metrics()
    assert ok["runtimes"]["onnxruntime"]["threads"]["1"]["latency"]["n"] == 3
    bad = bench.run(cfg, broken, runs, name="chk-bench-broken", force=True, progress=False).metrics()
    assert "float parent" in bad["runtimes"]["onnxruntime"]["unavailable"]


def test_an_int8_run_without_its_float_parent_is_a_clear_error(int8_runs, tmp_path):
    from audiocomp.stages import export

    runs, cfg, good, _ = int8_runs
    orphan = runs / "chk-int8-orphan"
    shutil.copytree(good.path, orphan, dirs_exist_ok=True)
    atomic_write_json(orphan / "manifest.json", {**read_json(orphan / "manifest.json"), "name": orphan.name,
                                                 "parents": []})
    with pytest.raises(RunError, match="no float parent"):
        export.run(cfg, Run(orphan), runs, name="chk-export-orphan", force=True)


def test_check_items_are_validation_then_training_rows_never_test(trained_run):
    from audiocomp.features.prepared import check_rows, load_prepared, model_run_parent

    _, model_run, _ = trained_run
    prepared = load_prepared(model_run_parent(model_run))
    split = prepared.split()
    rows = check_rows(prepared, 10_000)
    assert rows == [*split["val"], *split["train"]] and not set(rows) & set(split["test"])


def test_verify_rules():
    ref = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    assert verify(ref + 1e-5, ref, int8=False)[1] is None
    assert "differs" in verify(ref + 0.1, ref, int8=False)[1]
    assert verify(ref * 1.05, ref, int8=True)[1] is None  # INT8 rounding: same classes, logits close
    m, problem = verify(-ref, ref, int8=True)  # other classes
    assert problem and m["top1_agreement"] == 0
    m, problem = verify(ref * 50, ref, int8=True)  # the same classes, logits 50 times larger
    assert problem and m["top1_agreement"] == 1 and m["relative_logit_error"] == pytest.approx(49)
