"""Validation chooses, test reports: with the test labels changed, every choice of train (best epoch, early
stop), prune sensitivity and prune (per-layer ratios, fine-tuning epochs, calibration rows) and quantize
(calibration rows, the near-chance guard) and every number that is not a test score stays the same, while
the test scores move. Also: what a protocol without a validation part chooses (nothing), and the data the
calibration actually used."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import load_config
from audiocomp.models import load_model
from audiocomp.runs import Run, atomic_write_json, read_json
from audiocomp.stages import evaluate, prepare, prune, quantize, train
from audiocomp.train.loop import TIMING_KEYS

# every key whose value may differ when only the test labels differ: test scores, and wall-clock timings
UNSTABLE = ("test", "latency", "accuracy_drop", *TIMING_KEYS)


def non_test(value):
    """`value` without test scores and timings, recursively (what must not depend on test labels)."""
    if isinstance(value, dict):
        return {k: non_test(v) for k, v in value.items() if not any(u in k for u in UNSTABLE)}
    if isinstance(value, list):
        return [non_test(v) for v in value]
    return value


def differences(a, b, path: str = "") -> list[str]:
    """Key paths where `a` and `b` differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in a.keys() | b.keys() for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def shift_test_labels(runs: Path, prepared: prepare.Prepared) -> Path:
    """A copy of `runs` (prepare run and feature store) whose test rows carry another class, changed in the
    store's items.json: the one place every stage reads targets from (FeatureStore.targets)."""
    copy = runs.parent / f"{runs.name}-shifted"
    shutil.copytree(runs, copy)
    store = copy / ".store" / prepared.store.path.name
    items = read_json(store / "items.json")
    n_classes = len(items["classes"])
    for row in prepared.split()["test"]:
        items["items"][row]["target"] = (items["items"][row]["target"] + 1) % n_classes  # every test label wrong
    atomic_write_json(store / "items.json", items)
    data = read_json(copy / prepared.run.name / "data.json")
    atomic_write_json(copy / prepared.run.name / "data.json", {**data, "store": str(store.resolve())})
    return copy


def pipeline(runs: Path, prepare_name: str, overrides: list[str]) -> dict[str, Run]:
    """train (early stopping on validation) -> prune sensitivity -> prune with it -> static INT8 -> eval."""
    cfg = load_config([], overrides)
    out = {"train": train.run(cfg, runs, from_run=Run(runs / prepare_name), name="t", progress=False)}
    sens_cfg = load_config([], overrides + ["prune.sensitivity_ratios=[0.25,0.5,0.75]"])
    out["sensitivity"] = prune.sensitivity(sens_cfg, out["train"], runs, name="s", progress=False)
    prune_cfg = load_config([], overrides + [
        "prune.method=taylor", f"prune.sensitivity={runs / 's' / 'sensitivity.csv'}", "prune.max_drop=0.05",
        "prune.finetune_epochs=2", "prune.calibration_batches=2"])
    out["prune"] = prune.run(prune_cfg, out["train"], runs, name="p", progress=False)
    quant_cfg = load_config([], overrides + ["quantize.method=static", "quantize.calibration_batches=2",
                                             "quantize.calibration_batch_size=8", "quantize.latency_runs=2"])
    out["quantize"] = quantize.run(quant_cfg, out["prune"], runs, name="q", allow_degraded=True, progress=False)
    out["eval"] = evaluate.run(cfg, out["quantize"], runs, name="e", progress=False)
    return out


def test_changing_the_test_labels_changes_no_choice_and_no_other_number(tmp_path, tiny_overrides):
    overrides = tiny_overrides + ["train.epochs=4", "train.early_stopping=1", "train.lr=0.01", "bench.iterations=3",
                                  "bench.warmup=0"]
    runs = tmp_path / "runs"
    prepared = prepare.run(load_config([], overrides), runs, progress=False)
    shifted = shift_test_labels(runs, prepared)
    a = pipeline(runs, prepared.run.name, overrides)
    b = pipeline(shifted, prepared.run.name, overrides)
    store_b = prepare.load_prepared(Run(shifted / prepared.run.name)).store
    test_rows = prepared.split()["test"]
    assert (store_b.targets()[test_rows] != prepared.store.targets()[test_rows]).all()  # the copy differs...
    other = [r for r in range(len(prepared.store.items)) if r not in set(test_rows)]
    assert (store_b.targets()[other] == prepared.store.targets()[other]).all()  # ...on test rows only

    for stage in a:
        ma = a[stage].metrics()
        mb = json.loads(json.dumps(b[stage].metrics()).replace(str(shifted), str(runs)))  # paths named alike
        if stage == "eval":  # it scores the test part: only its model facts are not test numbers
            ma, mb = ma["model_facts"], mb["model_facts"]
        assert not differences(non_test(ma), non_test(mb)), stage  # every choice and every non-test number
    ta, tb = a["train"].metrics(), b["train"].metrics()
    assert ta["selection"] == "best val_accuracy" and ta["best_epoch"] == tb["best_epoch"]
    # ...while the test scores move (the loss always does; a near-chance accuracy may land on the same count)
    assert ta["test_loss"] != tb["test_loss"]
    pa, pb = a["prune"].metrics(), b["prune"].metrics()
    assert pa["layer_ratios"] == pb["layer_ratios"] and pa["calibration_rows"] == pb["calibration_rows"]
    assert pa["after"]["test_accuracy"] != pb["after"]["test_accuracy"]
    qa, qb = a["quantize"].metrics(), b["quantize"].metrics()
    assert qa["guard"] == "near-chance check on val accuracy" and qa["degraded"] == qb["degraded"]
    assert qa["calibration_rows"] == qb["calibration_rows"] and qa["test_accuracy"] != qb["test_accuracy"]
    assert a["eval"].metrics()["accuracy"] != b["eval"].metrics()["accuracy"]
    for stage in ("train", "prune"):  # the very same weights, not only the same numbers
        wa, wb = (load_model(r[stage].path / "model")[0].state_dict() for r in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), stage
    csv_a, csv_b = (r["sensitivity"].path / "sensitivity.csv" for r in (a, b))
    assert csv_a.read_text() == csv_b.read_text()


def test_without_a_validation_part_nothing_is_chosen_and_metrics_say_so(tmp_path, tiny_overrides):
    runs = tmp_path / "runs"
    sets = [a for o in tiny_overrides + ["split.val_fraction=0"] for a in ("--set", o)]
    cli = CliRunner()
    refused = cli.invoke(app, ["train", *sets, "--set", "train.early_stopping=2", "--runs-dir", str(runs), "-q"])
    assert refused.exit_code == 2 and "train.early_stopping=2: this split has no validation part" in refused.output
    assert not [p for p in runs.iterdir() if p.name.startswith("train")]  # refused before the run folder
    result = cli.invoke(app, ["train", *sets, "--runs-dir", str(runs), "--name", "noval", "-q"])
    assert result.exit_code == 0, result.output
    m = Run(runs / "noval").metrics()
    assert m["selection"] == "last epoch (no validation part)" and m["monitor"] is None
    assert m["best_epoch"] == m["epochs_run"] == 2 and "val_accuracy" not in m
    drawn = read_json(Run(runs / "noval").parent("prepare").path / "splits.json")["splits"][0]["drawn"]
    assert drawn["val"].startswith("none (split.val_fraction: 0)")

    result = cli.invoke(app, ["prune", "sensitivity", "--from", "noval", "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 2 and "has no validation part" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not [p for p in runs.iterdir() if p.name.startswith("prune-sensitivity")]  # nothing scored on test instead

    result = cli.invoke(app, ["quantize", "--from", "noval", "--runs-dir", str(runs), "--name", "q", "-q",
                              "--set", "quantize.method=static", "--set", "quantize.calibration_batches=1",
                              "--set", "quantize.latency_runs=2"])
    assert result.exit_code == 0, result.output
    q = Run(runs / "q").metrics()
    assert q["guard"] == "none (no validation part)" and q["degraded"] is None and "val_accuracy" not in q
    assert q["test_accuracy"] is not None  # still reported


def test_a_monitor_the_data_does_not_produce_stops_before_the_run_starts(tmp_path, tiny_overrides):
    runs = tmp_path / "runs"
    sets = [a for o in tiny_overrides + ["train.monitor=val_map"] for a in ("--set", o)]
    result = CliRunner().invoke(app, ["train", *sets, "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 2 and "train.monitor=val_map: not produced on a single-label set" in result.output
    assert not [p for p in runs.iterdir() if p.name.startswith("train")]


def test_calibration_uses_exactly_the_recorded_training_rows(tmp_path, tiny_overrides, monkeypatch):
    """The batches the Taylor importance and the INT8 calibration are fed are the store's features and
    targets at the rows metrics.json records, all of them training rows."""
    from audiocomp.compress import pruning
    from audiocomp.compress import quantization as q

    fed = {"prune": [], "quantize": []}
    real_accumulate, real_quantize = pruning.TaylorImportance.accumulate, q.quantize

    def accumulate(self, model, batches, loss):
        fed["prune"].append(list(batches))
        return real_accumulate(self, model, batches, loss)

    def quantize_spy(model, spec, calibration, *a, **k):
        fed["quantize"].append(list(calibration))
        return real_quantize(model, spec, calibration, *a, **k)

    monkeypatch.setattr(pruning.TaylorImportance, "accumulate", accumulate)
    monkeypatch.setattr(q, "quantize", quantize_spy)
    runs = tmp_path / "runs"
    cfg = load_config([], tiny_overrides + ["train.epochs=1", "prune.method=taylor", "prune.calibration_batches=2",
                                            "quantize.method=static", "quantize.calibration_batches=2",
                                            "quantize.calibration_batch_size=8", "quantize.latency_runs=2",
                                            "bench.iterations=3", "bench.warmup=0"])
    model_run = train.run(cfg, runs, name="t", progress=False)
    runs_by_stage = {"prune": prune.run(cfg, model_run, runs, name="p", progress=False),
                     "quantize": quantize.run(cfg, model_run, runs, name="q", allow_degraded=True, progress=False)}
    prepared = prepare.load_prepared(model_run.parent("prepare"))
    split = prepared.split()
    for stage, run in runs_by_stage.items():
        rows = np.array(run.metrics()["calibration_rows"])
        assert len(rows) == {"prune": 2 * 16, "quantize": 2 * 8}[stage], stage  # batches x batch size
        assert set(rows.tolist()) <= set(split["train"]), stage
        assert not set(rows.tolist()) & set(split["val"] + split["test"]), stage
        assert fed[stage], stage
        for batches in fed[stage]:
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            assert torch.equal(x, torch.from_numpy(np.asarray(prepared.store.features[rows], dtype=np.float32))), stage
            assert torch.equal(y, torch.from_numpy(prepared.store.targets()[rows])), stage
