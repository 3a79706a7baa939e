"""`audiocomp prune` and `audiocomp prune sensitivity` end to end on the tiny synthetic set, and the demo."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import load_config

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture
def trained(tmp_path, tiny_overrides) -> tuple[Path, list[str]]:
    runs = tmp_path / "runs"
    result = cli("train", *sets(tiny_overrides), "--runs-dir", str(runs), "--name", "tiny", "-q")
    assert result.exit_code == 0, result.output
    return runs, tiny_overrides


def test_prune_cli_writes_a_smaller_reloadable_model_with_before_after_metrics(trained, tmp_path):
    runs, _ = trained
    result = cli("prune", "--from", "tiny", "-c", str(REPO / "configs/prune/taylor.yaml"), "--runs-dir", str(runs),
                 "--set", "prune.finetune_epochs=1", "--name", "pruned", "-q")
    assert result.exit_code == 0, result.output
    assert "MACs" in result.output and "latency" in result.output
    assert "test, pruned - parent:" in result.output and "McNemar p=" in result.output
    run = runs / "pruned"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["parents"][0]["name"] == "tiny" and manifest["status"] == "done"
    arch = json.loads((run / "model/arch.json").read_text())
    assert arch["compression"][-1]["method"] == "taylor" and arch["shapes"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["method"] == "taylor" and m["format"] == "fp32"
    for key in ("parameters", "nonzero", "macs", "file_bytes", "zipped_bytes", "sparse_bytes", "test_accuracy",
                "test_macro_f1", "val_accuracy"):
        assert key in m["before"] and key in m["after"], key
    assert m["after"]["macs"] < m["before"]["macs"] and m["after"]["file_bytes"] < m["before"]["file_bytes"]
    assert m["before"]["latency"]["threads"] == 1 and m["after"]["latency"]["median_ms"] > 0
    assert len(m["history"]) == 2 and {h["step"] for h in m["history"]} == {"taylor-1", "taylor-2"}
    # per-item predictions of the pruned model, intervals, and the paired difference to the parent
    assert m["predictions"] == {"val": "predictions-val.npz", "test": "predictions-test.npz"}
    assert all((run / f).is_file() for f in m["predictions"].values())
    for part in ("val", "test"):
        for side in ("before", "after"):
            assert m[side][f"{part}_accuracy_ci"]["value"] == pytest.approx(m[side][f"{part}_accuracy"])
        d = m["vs_parent"][part]
        assert d["diff"] == pytest.approx(m["after"][f"{part}_accuracy"] - m["before"][f"{part}_accuracy"])
        assert d["low"] <= d["diff"] <= d["high"] and 0 <= d["mcnemar_p"] <= 1
    assert not (run / "model/model.pt").read_bytes().count(b"weight_orig")

    from audiocomp.models import load_model

    model, spec = load_model(run / "model")
    assert spec.compression[-1]["channel_ratio"] == 0.5
    result = cli("eval", "--from", "pruned", "--runs-dir", str(runs), "-q")
    assert result.exit_code == 0, result.output
    [ev_run] = runs.glob("eval-cnn-*")  # <stage>-<model>-<hash>
    facts = json.loads((ev_run / "metrics.json").read_text())["model_facts"]
    assert facts["parameters"] == m["after"]["parameters"] and facts["compression"] == ["taylor"]
    result = cli("report", str(runs), "--out", str(tmp_path / "report"))
    assert "taylor" in result.output


def test_prune_sensitivity_csv_plot_and_per_layer_ratios(trained):
    runs, _ = trained
    result = cli("prune", "sensitivity", "--from", "tiny", "--runs-dir", str(runs), "--name", "sens", "-q",
                 "--set", "prune.sensitivity_ratios=[0.25,0.5,0.75]")
    assert result.exit_code == 0, result.output
    path = runs / "sens" / "sensitivity.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["layer", "channels", "ratio", "pruned_channels", "val_accuracy", "baseline_accuracy",
                             "drop", "split"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    assert layers == ["backbone.0.0", "backbone.1.0", "backbone.4"]  # both conv groups, the hidden dense layer
    assert [float(r["ratio"]) for r in rows[:3]] == [0.25, 0.5, 0.75]
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    trained_val = json.loads((runs / "tiny/metrics.json").read_text())["val_accuracy"]
    assert {r["split"] for r in rows} == {"val"}  # scored on validation: the ratios are chosen from it
    assert all(float(r["baseline_accuracy"]) == pytest.approx(trained_val) for r in rows)
    assert (runs / "sens" / "sensitivity.png").stat().st_size > 1000
    result = cli("prune", "--from", "tiny", "--runs-dir", str(runs), "--name", "by-sens", "-q",
                 "--set", "prune.method=taylor", "--set", f"prune.sensitivity={path}", "--set", "prune.max_drop=1.0")
    assert result.exit_code == 0, result.output
    m = json.loads((runs / "by-sens/metrics.json").read_text())
    assert m["layer_ratios"] == {layer: 0.75 for layer in layers}  # every drop accepted: the largest ratio
    model_shapes = json.loads((runs / "by-sens/model/arch.json").read_text())["shapes"]
    assert model_shapes["backbone.0.0.weight"][0] == 2  # 8 channels, 6 removed


@pytest.mark.parametrize("extra, message", [
    (["--set", "prune.method=taylr"], "did you mean 'taylor'"),
    (["--set", "prune.criterion=l3"], "prune.criterion"),
    (["--set", "prune.sensitivity=/nonexistent.csv"], "not found"),
])
def test_prune_bad_input_is_one_line_and_exit_2(trained, extra, message):
    runs, _ = trained
    result = cli("prune", "--from", "tiny", "--runs-dir", str(runs), "-q", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert [p.name for p in runs.iterdir() if p.name.startswith("prune")] == []  # refused before any work


def test_prune_without_from_says_what_is_missing():
    result = cli("prune")
    assert result.exit_code == 2 and "--from" in result.output


def test_shipped_prune_configs_validate():
    for path in sorted((REPO / "configs/prune").glob("*.yaml")):
        cfg = load_config([path])
        assert cfg.prune.method in ("magnitude", "taylor", "hybrid"), path


@pytest.mark.slow
def test_demo_includes_a_prune_stage(tmp_path, synth_root):
    from audiocomp.stages import demo

    shutil.copytree(synth_root, tmp_path / "synth")
    result = demo.run(tmp_path, ["features.sample_rate=8000", "features.n_mels=32", "features.n_fft=256",
                                 "features.hop_length=128", "features.duration=1.0", "features.workers=1",
                                 "train.epochs=2", "model.kwargs.channels=[8,16]", "prune.finetune_epochs=1"],
                      progress=False)
    rows = {r["run"]: r for r in result["rows"]}
    assert rows["demo-prune"]["method"] == "taylor"
    assert rows["demo-prune"]["parameters"] < rows["demo-train"]["parameters"]
    assert rows["demo-prune"]["macs"] < rows["demo-train"]["macs"]


@pytest.mark.slow
def test_taylor_on_resnet152_end_to_end_file_shrinks_with_parameters(tmp_path, tiny_overrides):
    runs = tmp_path / "runs"
    overrides = tiny_overrides + ["model.name=resnet152", "model.kwargs={}", "model.input_size=[32,32]",
                                  "data.max_items=30", "train.epochs=1", "train.batch_size=32",
                                  "bench.iterations=3", "bench.warmup=0"]
    assert cli("train", *sets(overrides), "--runs-dir", str(runs), "--name", "r152", "-q").exit_code == 0
    result = cli("prune", "--from", "r152", "--runs-dir", str(runs), "--name", "r152p", "-q",
                 "--set", "prune.method=taylor", "--set", "prune.calibration_batches=1")
    assert result.exit_code == 0, result.output
    m = json.loads((runs / "r152p/metrics.json").read_text())
    c = m["change"]
    assert c["parameters_reduction"] > 2.5 and c["macs_reduction"] > 2.5
    assert c["file_bytes_reduction"] == pytest.approx(c["parameters_reduction"], rel=0.05)
    from audiocomp.models import load_model

    model, _ = load_model(runs / "r152p/model")
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
