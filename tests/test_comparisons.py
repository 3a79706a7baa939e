"""Per-item predictions saved by train, quantize and eval, and the comparisons built on them: each stage's
paired difference checked against the raw arrays, against the other stages' (eval of two runs, the
report), and report rows named by a pipeline's stage ids."""
import numpy as np
import pytest
from scipy.stats import binomtest

from audiocomp.config import ConfigError, load_config
from audiocomp.runs import Run

# static INT8 calibrated on one batch of one or two items: its clipped ranges change some of the tiny model's
# answers, so there is something to pair. Which setting changes one of the 20 test items' correctness depends on
# the CPU's kernels (the trained model differs between machines), so the fixture takes the first that does
COMMON = ["quantize.method=static", "quantize.calibration_batches=1", "quantize.latency_runs=2",
          "quantize.allow_degraded=true"]
QUANT_TRIES = [["quantize.backend=torch", "quantize.calibration_batch_size=2"],
               ["quantize.backend=onnxruntime", "quantize.calibration_batch_size=1"],
               ["quantize.backend=torch", "quantize.calibration_batch_size=1"],
               ["quantize.backend=onnxruntime", "quantize.calibration=percentile", "quantize.percentile=91",
                "quantize.calibration_batch_size=2"]]


def raw(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def better_run(trained_run):
    """The session's tiny CNN trained for 6 epochs instead of 1: a model right on enough items that INT8 can
    change some of its answers (a near-chance model may keep every item's correctness)."""
    from audiocomp.stages import train

    runs, _, cfg = trained_run
    cfg = load_config([], ["train.epochs=6"], base=cfg.to_dict())
    return runs, train.run(cfg, runs, name="cmp-train", force=True, progress=False), cfg


@pytest.fixture(scope="module")
def quantized(better_run):
    """A quantized run of better_run whose answers differ from the float model's in correctness on some test item
    (the first of QUANT_TRIES that does), so the paired checks below compare something."""
    from audiocomp.stages import quantize

    runs, model_run, cfg = better_run
    for sets in QUANT_TRIES:
        q = quantize.run(load_config([], COMMON + sets, base=cfg.to_dict()), model_run, runs, name="cmp-q",
                         force=True, progress=False)
        qz, fz = raw(q.path / "predictions-test.npz"), raw(q.path / "float_predictions-test.npz")
        if ((qz["scores"].argmax(1) == qz["targets"]) != (fz["scores"].argmax(1) == fz["targets"])).any():
            return runs, model_run, q, cfg
    pytest.fail("no INT8 setting in QUANT_TRIES changed a test item's correctness: the paired checks would "
                "compare zeros")


def test_train_saves_the_chosen_models_predictions_on_validation_and_test(trained_run):
    from audiocomp.features.prepared import load_prepared, model_run_parent

    _, model_run, _ = trained_run
    m = model_run.metrics()
    split = load_prepared(model_run_parent(model_run)).split()
    assert m["predictions"] == {"val": "predictions-val.npz", "test": "predictions-test.npz"}
    for part in ("val", "test"):
        z = raw(model_run.path / f"predictions-{part}.npz")
        assert z["rows"].tolist() == split[part] and z["scores"].shape == (len(split[part]), 10)
        assert z["scores"].dtype == np.float32 and str(z["part"]) == part
        assert np.allclose(z["scores"].sum(1), 1, atol=1e-5)  # probabilities
        acc = float((z["scores"].argmax(1) == z["targets"]).mean())
        assert m[f"{part}_accuracy"] == pytest.approx(acc) and m[f"{part}_accuracy_ci"]["value"] == pytest.approx(acc)
        ci = m[f"{part}_accuracy_ci"]
        assert ci["low"] <= acc <= ci["high"] and (ci["n_boot"], ci["seed"], ci["level"]) == (2000, 0, 0.95)


def test_quantize_pairs_float_and_quantized_on_the_same_rows(quantized):
    _, model_run, q, _ = quantized
    m = q.metrics()
    qz, fz = raw(q.path / "predictions-test.npz"), raw(q.path / "float_predictions-test.npz")
    parent = raw(model_run.path / "predictions-test.npz")
    assert qz["rows"].tolist() == fz["rows"].tolist() == parent["rows"].tolist()
    np.testing.assert_allclose(fz["scores"], parent["scores"], atol=1e-5)  # the float model, rescored here
    a = fz["scores"].argmax(1) == fz["targets"]
    b = qz["scores"].argmax(1) == qz["targets"]
    d = m["vs_parent"]["test"]
    assert d["diff"] == pytest.approx(b.mean() - a.mean()) == pytest.approx(m["test_accuracy"] - m["float_test_accuracy"])
    assert (d["a_only"], d["b_only"]) == (int((a & ~b).sum()), int((b & ~a).sum()))
    n = d["a_only"] + d["b_only"]
    assert d["mcnemar_p"] == (1.0 if n == 0 else pytest.approx(binomtest(d["b_only"], n).pvalue))
    assert d["low"] <= d["diff"] <= d["high"]
    assert m["test_accuracy_ci"]["value"] == pytest.approx(m["test_accuracy"])
    assert m["float_test_accuracy_ci"]["value"] == pytest.approx(m["float_test_accuracy"])


def test_eval_of_two_runs_gives_the_paired_difference_to_the_first(quantized):
    from audiocomp.stages import evaluate

    runs, model_run, q, cfg = quantized
    m = evaluate.run(cfg, [model_run, q], runs, name="cmp-eval", force=True, progress=False).metrics()
    first, second = m["units"]
    assert "vs_first" not in first and second["vs_first"]["reference"] == model_run.name
    for key in ("diff", "low", "high", "a_only", "b_only", "mcnemar_p"):  # the same as quantize found
        assert second["vs_first"][key] == pytest.approx(q.metrics()["vs_parent"]["test"][key]), key
    assert (runs / "cmp-eval" / second["predictions"]["test"]).is_file()
    assert second["accuracy_ci"]["value"] == pytest.approx(second["accuracy"])


def test_report_compares_with_the_parent_or_the_baseline(quantized, tmp_path):
    from audiocomp.stages import report

    runs, model_run, q, _ = quantized
    sources = [model_run.path, q.path]
    rows = {r["run"]: r for r in report.run(load_config([], []), sources, tmp_path / "a")["rows"]}
    d = q.metrics()["vs_parent"]["test"]
    assert rows["cmp-q"]["vs"] == model_run.name and rows["cmp-q"]["diff"] == pytest.approx(d["diff"])
    assert rows["cmp-q"]["mcnemar_p"] == pytest.approx(d["mcnemar_p"]) and "vs" not in rows[model_run.name]
    assert "McNemar" in (tmp_path / "a" / "report.md").read_text()
    rows = {r["run"]: r for r in report.run(load_config([], []), sources, tmp_path / "b", baseline="cmp-q")["rows"]}
    assert rows[model_run.name]["vs"] == "cmp-q" and rows[model_run.name]["diff"] == pytest.approx(-d["diff"])
    assert (rows[model_run.name]["ref_only"], rows[model_run.name]["this_only"]) == (d["b_only"], d["a_only"])
    with pytest.raises(ConfigError, match="--baseline nope: no row of that name"):
        report.run(load_config([], []), sources, tmp_path / "c", baseline="nope")
    # report.compare pairs a row with another instead of its parent, where that row is in the report; the
    # quantized row, paired with nothing, keeps its parent, and a pair naming a row not reported is passed over
    pairs = load_config([], [f"report.compare={{{model_run.name}: cmp-q, cmp-q: not-here}}"])
    rows = {r["run"]: r for r in report.run(pairs, sources, tmp_path / "d")["rows"]}
    assert rows[model_run.name]["vs"] == "cmp-q" and rows[model_run.name]["diff"] == pytest.approx(-d["diff"])
    assert rows["cmp-q"]["vs"] == model_run.name and rows["cmp-q"]["diff"] == pytest.approx(d["diff"])


def test_pipeline_report_rows_are_named_by_stage_id(tmp_path, tiny_overrides):
    from audiocomp.stages import pipeline, report

    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - {id: data, stage: prepare}\n  - {id: fp32, stage: train, from: data}\n"
                    "  - {id: q, stage: quantize, from: fp32}\n  - {id: table, stage: report}\n")
    papers = tmp_path / "papers.yaml"
    papers.write_text("studies:\n  - {id: toy, dataset: synth, model: cnn, rows: [{id: base, method: cnn, accuracy: 0.9}]}\n")
    published = [f"report.papers={papers}", "report.published={fp32: toy/base, q: null}"]
    summary = pipeline.run(path, [*tiny_overrides, "train.epochs=1", *COMMON, *QUANT_TRIES[0], *published],
                           tmp_path / "runs", tmp_path / "out", progress=False, quiet=True)
    runs = {s["id"]: s["run"] for s in summary["stages"]}
    md = (tmp_path / "out" / "table" / "report.md").read_text()
    assert "| fp32 |" in md and "| q |" in md and f"| {runs['fp32']} |" not in md and "toy/base: 90.0%" in md
    # `audiocomp report` pointed at the pipeline's output folder names them the same way, and takes the
    # published mapping the runs were made with
    result = report.run(load_config([], [f"report.papers={papers}"]), [tmp_path / "out"], tmp_path / "again")
    rows = {r["run"]: r for r in result["rows"]}
    assert set(rows) == {"fp32", "q"} and rows["q"]["run_dir"] == runs["q"] and rows["q"]["vs"] == "fp32"
    assert rows["fp32"]["published"] == "toy/base: 90.0%" and rows["q"]["published"] is None
    assert Run(tmp_path / "runs" / runs["q"]).metrics()["vs_parent"]["test"]["diff"] == pytest.approx(rows["q"]["diff"])
