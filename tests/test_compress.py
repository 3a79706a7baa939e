"""`audiocomp compress`: the selection rule on fixed numbers, the ladder's ratios, and the stage end to end on
the tiny synthetic set (the right rung from fixed validation scores, test never read before the choice,
resume, the chosen model read by eval, the CLI)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from audiocomp.compress.ladder import candidates, exhausted, ladder, mark_fronts, rung_name, select, step_ratio
from audiocomp.config import ConfigError


def _row(rung, form, acc, size, macs, lat):
    method, _, pct = rung.partition("-")  # "s-50": 50% of the channels removed by method "s"
    return {"rung": rung, "method": method, "ratio": int(pct or 0) / 100, "form": form, "val_accuracy": acc,
            "file_bytes": size, "zipped_bytes": size, "macs": macs, "latency_ms": lat}


ROWS = [_row("parent", "fp32", 0.90, 1000, 100, 1.0), _row("parent", "int8", 0.85, 300, 100, 0.5),
        _row("s-50", "fp32", 0.895, 400, 30, 0.4), _row("s-50", "int8", 0.89, 120, 30, 0.6),
        _row("s-75", "fp32", 0.80, 100, 10, 0.1), _row("s-75", "int8", 0.70, 40, 10, 0.2)]


def test_select_smallest_within_max_drop_by_each_target():
    assert select(ROWS, 0.90, 0.01, "size")["rung"] == "s-50" and select(ROWS, 0.90, 0.01, "size")["form"] == "int8"
    assert (select(ROWS, 0.90, 0.01, "macs")["rung"], select(ROWS, 0.90, 0.01, "macs")["form"]) == ("s-50", "int8")
    assert (select(ROWS, 0.90, 0.01, "latency")["rung"], select(ROWS, 0.90, 0.01, "latency")["form"]) == ("s-50", "fp32")
    assert select(ROWS, 0.90, 0.0, "size")["rung"] == "parent"  # only the parent itself is within 0 points
    assert select(ROWS, 0.90, 0.2, "size")["rung"] == "s-75"
    sparse = {**ROWS[3], "rung": "h-50", "zipped_bytes": 60}  # same file, more zeros: smaller zipped
    assert select([*ROWS, sparse], 0.90, 0.01, "size")["rung"] == "h-50"
    marked = mark_fronts(ROWS)
    assert [r["front_size"] for r in marked] == [True, False, True, True, True, True]
    assert not marked[1]["front_macs"] and marked[4]["front_macs"]


def _ladder_row(method, ratio, form, acc, size):
    return _row(f"{method}-{round(ratio * 100)}" if ratio else "parent", form, acc, size, size, size)


def test_sequential_rule_stops_each_ladder_at_its_first_miss():
    """Parent at 0.90, max drop 0.02: structured INT8 misses at 40% and is back within at 50% (noise, as it
    is pruned further from the rung that missed), so the sequential rule takes structured-20 INT8; the plain
    rule takes the 50% rung. A miss in one ladder or form does not stop another."""
    rows = [_ladder_row("parent", 0.0, "fp32", 0.90, 1000), _ladder_row("parent", 0.0, "int8", 0.89, 280),
            _ladder_row("structured", 0.2, "fp32", 0.90, 660), _ladder_row("structured", 0.2, "int8", 0.89, 190),
            _ladder_row("structured", 0.4, "fp32", 0.89, 380), _ladder_row("structured", 0.4, "int8", 0.87, 110),
            _ladder_row("structured", 0.5, "fp32", 0.87, 260), _ladder_row("structured", 0.5, "int8", 0.885, 84),
            _ladder_row("hybrid", 0.2, "int8", 0.87, 189), _ladder_row("hybrid", 0.4, "int8", 0.90, 112)]
    assert candidates(rows, 0.90, 0.02, sequential=False) == [True] * 5 + [False, False, True, False, True]
    assert candidates(rows, 0.90, 0.02) == [True] * 5 + [False] * 5
    assert (select(rows, 0.90, 0.02, "size")["rung"], select(rows, 0.90, 0.02, "size")["form"]) == \
        ("structured-20", "int8")
    assert select(rows, 0.90, 0.02, "size", sequential=False)["rung"] == "structured-50"
    # the FP32 forms of the structured ladder are a ladder of their own: 40% is within, 50% misses
    assert select([r for r in rows if r["form"] == "fp32"], 0.90, 0.02, "size")["rung"] == "structured-40"


def test_a_ladder_is_exhausted_once_every_form_has_missed():
    def rec(*accs):
        return {"forms": [{"form": f, "val_accuracy": a} for f, a in zip(("fp32", "int8"), accs)]}

    assert not exhausted([], 0.90, 0.02)
    assert not exhausted([rec(0.89, 0.87)], 0.90, 0.02)  # INT8 missed, FP32 still in the running
    assert exhausted([rec(0.89, 0.87), rec(0.87, 0.89)], 0.90, 0.02)  # each form missed once: nothing deeper
    assert not exhausted([rec(0.88, 0.88)], 0.90, 0.02)  # 0.88 is within 0.02 of 0.90


def test_ladder_ratios_compound_to_the_parents_channels():
    rungs = ladder([0.5, 0.25, 0.75])
    assert [r for r, _ in rungs] == [0.25, 0.5, 0.75]
    kept = 1.0
    for ratio, step in rungs:
        kept *= 1 - step
        assert kept == pytest.approx(1 - ratio)
    assert step_ratio(0.5, 0.75) == pytest.approx(0.5)
    assert rung_name("hybrid", 0.7) == "hybrid-70" and rung_name("structured", 0.125) == "structured-125pm"


def _cfg(cfg, **compress):
    cc = cfg.compress.model_copy(update={"methods": ["structured"], "ratios": [0.5, 0.75], "finetune_epochs": 1,
                                         "latency_runs": 3, **compress})
    qc = cfg.quantize.model_copy(update={"calibration_batches": 2})
    return cfg.model_copy(update={"compress": cc, "quantize": qc})


FIXED = {"parent/fp32": 0.90, "parent/int8": 0.85, "structured-50/fp32": 0.85, "structured-50/int8": 0.89,
         "structured-75/fp32": 0.80, "structured-75/int8": 0.70}


def test_compress_picks_the_right_rung_and_reads_test_only_after(trained_run, monkeypatch, tmp_path):
    from audiocomp.stages import compress, compress_rungs, evaluate, export
    from audiocomp.stages.context import StageContext

    runs, model_run, cfg = trained_run
    calls = []
    real_score, real_select, real_rung = StageContext.score, compress.select, compress_rungs.score_rung

    def score(self, model, spec, parts):
        calls.extend(parts)
        return real_score(self, model, spec, parts)

    def select(*a, **k):
        calls.append("select")
        return real_select(*a, **k)

    def fixed(ctx, model, spec, label):  # real predictions, fixed validation accuracies
        scores, pred = real_rung(ctx, model, spec, label)
        return {**scores, "val_accuracy": FIXED[label], "val_accuracy_low": None, "val_accuracy_high": None}, pred

    monkeypatch.setattr(StageContext, "score", score)
    monkeypatch.setattr(compress, "select", select)
    monkeypatch.setattr(compress_rungs, "score_rung", fixed)
    run = compress.run(_cfg(cfg), model_run, tmp_path / "runs", name="c", progress=False)
    m = run.metrics()
    assert (m["chosen"]["rung"], m["chosen"]["form"]) == ("structured-50", "int8")
    assert calls.index("select") < calls.index("test") and "test" not in calls[:calls.index("select")]
    assert calls.count("test") == 2  # the chosen model and its parent, once each
    # model/ is the chosen INT8 graph, its float form the reference; eval reads it like any model
    arch = json.loads((run.path / "model/arch.json").read_text())
    assert arch["compression"][-1]["format"] == "onnx-int8-static" and (run.path / "model/model.onnx").is_file()
    assert (run.path / "float_model/model.pt").is_file()
    assert m["model_facts"]["file_bytes"] == (run.path / "model/model.onnx").stat().st_size
    assert m["size_reduction"] > 1 and m["macs_reduction"] > 1 and "test" in m["vs_parent"]
    front = (run.path / "front.csv").read_text().splitlines()
    assert len(front) == 1 + 6 and (run.path / "front.md").is_file() and (run.path / "front-size.png").is_file()
    # agreement with the parent: each form's saved validation predictions against the parent's, by hand
    top1 = {(r["rung"], r["form"]): np.load(run.path / "rungs" / r["rung"] / f"{r['form']}-predictions-val.npz")
            ["scores"].argmax(1) for r in m["rungs"]}
    for r in m["rungs"]:
        assert r["val_agreement"] == pytest.approx((top1[r["rung"], r["form"]] == top1["parent", "fp32"]).mean())
    assert min(r["val_agreement"] for r in m["rungs"]) < 1.0  # some rung decides differently: not a trivial check
    chosen_test = np.load(run.path / "predictions-test.npz")["scores"].argmax(1)
    parent_test = np.load(model_run.path / "predictions-test.npz")["scores"].argmax(1)
    assert m["agreement_with_parent"]["test"] == pytest.approx((chosen_test == parent_test).mean())
    ev = evaluate.run(cfg, run, tmp_path / "runs", progress=False).metrics()
    assert ev["accuracy"] == pytest.approx(m["test_accuracy"])
    # export checks the INT8 graph against the chosen rung's float form (float_model/), not the unpruned parent
    exported = export.run(cfg, run, tmp_path / "runs").metrics()
    assert exported["rule"] == "int8 vs float parent" and exported["top1_agreement"] >= 0.9


def test_compress_resumes_after_the_last_finished_rung(trained_run, monkeypatch, tmp_path):
    from audiocomp.stages import compress, compress_rungs

    runs, model_run, cfg = trained_run
    cfg = _cfg(cfg, finetune_epochs=0, int8=False)
    pruned = []
    real = compress_rungs.prune_rung

    def crash_at_75(ctx, model, spec, method, ratio, *a):
        if ratio == 0.75:
            raise RuntimeError("killed")
        pruned.append(ratio)
        return real(ctx, model, spec, method, ratio, *a)

    monkeypatch.setattr(compress_rungs, "prune_rung", crash_at_75)
    with pytest.raises(RuntimeError, match="killed"):
        compress.run(cfg, model_run, tmp_path / "runs", name="c", progress=False)
    first = (tmp_path / "runs/c/rungs/structured-50/rung.json").read_text()

    def count(ctx, model, spec, method, ratio, *a):
        pruned.append(ratio)
        return real(ctx, model, spec, method, ratio, *a)

    monkeypatch.setattr(compress_rungs, "prune_rung", count)
    run = compress.run(cfg, model_run, tmp_path / "runs", name="c", progress=False)
    assert pruned == [0.5, 0.75] and run.status == "done"  # 0.5 once (before the crash), then only 0.75
    assert (run.path / "rungs/structured-50/rung.json").read_text() == first
    assert {r["rung"] for r in run.metrics()["rungs"]} == {"parent", "structured-50", "structured-75"}
    assert compress.run(cfg, model_run, tmp_path / "runs", name="c", progress=False).path == run.path  # done: kept


@pytest.mark.parametrize("rung_epoch", ["last", "best"])
def test_a_rung_keeps_the_fine_tuning_epoch_compress_rung_epoch_says(trained_run, monkeypatch, tmp_path, rung_epoch):
    """Validation judges the rungs, so by default it chooses no rung's epoch before: the last one is kept."""
    from audiocomp.stages import compress, finetune

    runs, model_run, cfg = trained_run
    kept, real_fit = [], finetune.fit

    def fit(*a, **k):
        result = real_fit(*a, **k)
        kept.append((a[3].keep, result.selection, result.best_epoch))
        return result

    monkeypatch.setattr(finetune, "fit", fit)
    run = compress.run(_cfg(cfg, ratios=[0.5], finetune_epochs=3, int8=False, rung_epoch=rung_epoch), model_run,
                       tmp_path / "runs", name="c", progress=False)
    keep, selection, best_epoch = kept[0]
    assert len(kept) == 1 and keep == rung_epoch
    if rung_epoch == "last":
        assert selection == "last epoch (train.keep: last)" and best_epoch == 3
    else:
        assert selection == "best val_accuracy"
    assert f"each rung keeps its {rung_epoch} fine-tuning epoch" in (run.path / "front.md").read_text()


@pytest.mark.parametrize("stop_at_miss", [False, True])
def test_stop_at_miss_trains_no_rung_past_a_ladder_missed_in_every_form(trained_run, monkeypatch, tmp_path,
                                                                         stop_at_miss):
    """structured-50 misses 1 point in both forms: with stop_at_miss structured-75 is not trained (it could not
    be chosen), the front says so, and the choice is the one the whole ladder gives."""
    from audiocomp.stages import compress, compress_rungs

    runs, model_run, cfg = trained_run
    real = compress_rungs.score_rung
    scores = {**FIXED, "structured-50/fp32": 0.85, "structured-50/int8": 0.88}

    def fixed(ctx, model, spec, label):
        s, pred = real(ctx, model, spec, label)
        return {**s, "val_accuracy": scores[label], "val_accuracy_low": None, "val_accuracy_high": None}, pred

    monkeypatch.setattr(compress_rungs, "score_rung", fixed)
    m = compress.run(_cfg(cfg, max_drop=0.01, stop_at_miss=stop_at_miss), model_run, tmp_path / "runs", name="c",
                     progress=False).metrics()
    assert (m["chosen"]["rung"], m["chosen"]["form"]) == ("parent", "fp32")
    assert m["untrained_rungs"] == (["structured-75"] if stop_at_miss else [])
    assert (tmp_path / "runs/c/rungs/structured-75").is_dir() != stop_at_miss
    assert ("Not trained" in (tmp_path / "runs/c/front.md").read_text()) == stop_at_miss


def test_compress_cli_help_and_bad_target(trained_run):
    from audiocomp.cli import app

    runs, model_run, _ = trained_run
    out = CliRunner().invoke(app, ["compress", "--help"])
    assert out.exit_code == 0 and "--max-drop" in out.output and "--jobs" in out.output
    bad = CliRunner().invoke(app, ["compress", "--from", str(model_run.path), "--target", "speed"])
    assert bad.exit_code == 2 and "compress.target" in bad.output
    with pytest.raises(ConfigError, match="ratios"):
        from audiocomp.config import load_config
        load_config([], ["compress.ratios=[0.5,1.0]"])


def test_parallel_ladders_equal_sequential_ones(trained_run, monkeypatch, tmp_path):
    """compress.jobs 2 (or --jobs 2): the structured and hybrid ladders in two worker processes give the rungs
    one process gives (fine-tuned with distillation from the parent, which each worker loads itself)."""
    from concurrent.futures import ProcessPoolExecutor

    from audiocomp.config import DistillConfig
    from audiocomp.stages import compress
    from audiocomp.stages.naming import run_name

    runs, model_run, cfg = trained_run
    cfg = _cfg(cfg, methods=["structured", "hybrid"], ratios=[0.5], finetune_epochs=1, int8=False)
    cfg = cfg.model_copy(update={"distill": DistillConfig(enabled=True, alpha=0.5, temperature=2.0)})
    seq_run = compress.run(cfg, model_run, tmp_path / "runs", name="seq", progress=False)
    assert seq_run.metrics()["distill"]["enabled"]
    seq = seq_run.metrics()["rungs"]
    pools = []
    monkeypatch.setattr(compress, "ProcessPoolExecutor", lambda *a, **k: pools.append(a) or ProcessPoolExecutor(*a, **k))
    par_cfg = cfg.model_copy(update={"compress": cfg.compress.model_copy(update={"jobs": 2})})  # or --jobs 2
    assert run_name("compress", par_cfg, [model_run.name]) == run_name("compress", cfg, [model_run.name])
    par = compress.run(par_cfg, model_run, tmp_path / "runs", name="par", progress=False).metrics()["rungs"]
    assert pools == [(2,)]
    assert [r["rung"] for r in par] == ["parent", "structured-50", "hybrid-50"]
    for a, b in zip(seq, par):
        assert (a["rung"], a["val_accuracy"], a["parameters"], a["nonzero"]) == \
            (b["rung"], b["val_accuracy"], b["parameters"], b["nonzero"])
    hybrid = next(r for r in par if r["rung"] == "hybrid-50")
    assert hybrid["nonzero"] < hybrid["parameters"]  # magnitude zeros on top of the removed channels


def test_compress_cli_end_to_end_prints_the_choice_and_the_test_interval(trained_run, tmp_path):
    from audiocomp.cli import app

    runs, model_run, _ = trained_run
    out = CliRunner().invoke(app, ["compress", "--from", str(model_run.path), "--runs-dir", str(tmp_path / "runs"),
                                   "--max-drop", "0.5", "--target", "macs", "--set", "compress.methods=[structured]",
                                   "--set", "compress.ratios=[0.5]", "--set", "compress.finetune_epochs=0",
                                   "--set", "compress.int8=false", "--set", "compress.latency_runs=3", "-q"])
    assert out.exit_code == 0, out.output
    assert "chosen on validation: structured-50 (fp32)" in out.output  # 0.5 points allowed: the fewest MACs
    assert "test (scored once, after the choice)" in out.output and "McNemar p=" in out.output
    assert "the parent's top-1 class on" in out.output and "% of the test items" in out.output
