"""One CLI test per command (Typer's CliRunner), on the tiny synthetic set."""
import json

import pytest
from typer.testing import CliRunner

from audiocomp.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def sets(overrides):
    return [x for o in overrides for x in ("--set", o)]


def test_help_lists_commands_and_each_has_an_example():
    out = invoke("--help")
    assert out.exit_code == 0
    for cmd in ("prepare", "train", "eval", "report", "demo", "models", "config", "data"):
        assert cmd in out.output
    for cmd in (["prepare"], ["train"], ["eval"], ["report"], ["demo"], ["models"], ["config", "show"], ["data", "synth"]):
        res = invoke(*cmd, "--help")
        assert res.exit_code == 0 and "Example:" in res.output, cmd


def test_config_show_prints_resolved_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {epochs: 3}\n")
    res = invoke("config", "show", "-c", f, "--set", "train.lr=0.5")
    assert res.exit_code == 0
    assert "epochs: 3" in res.output and "lr: 0.5" in res.output and "n_mels: 128" in res.output


def test_bad_config_exits_2_with_one_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trian: {epochs: 3}\n")
    res = runner.invoke(app, ["config", "show", "-c", str(f)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'train'" in lines[0] and str(f.resolve()) in lines[0]


def test_data_synth(tmp_path):
    res = invoke("data", "synth", "--out", tmp_path / "s", "--per-class", 2, "--duration", 0.3, "-q")
    assert res.exit_code == 0 and (tmp_path / "s" / "metadata.csv").exists()


def test_models_lists_registered_models():
    res = invoke("models", "--feature-shape", "1x32x40")
    assert res.exit_code == 0
    for name in ("cnn", "cnn1d", "lstm", "resnet152", "mobilenet_v3_small"):
        assert name in res.output


def test_prepare_train_eval_report(tmp_path, tiny_overrides):
    runs = tmp_path / "runs"
    common = ["--runs-dir", runs, *sets(tiny_overrides), "-q"]
    res = invoke("prepare", *common)
    assert res.exit_code == 0 and "prepared 80 items" in res.output
    res = invoke("train", *common, "--name", "t1")
    assert res.exit_code == 0, res.output
    assert (runs / "t1" / "model" / "model.pt").exists() and (runs / "t1" / "curves.png").exists()
    manifest = json.loads((runs / "t1" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["parents"][0]["stage"] == "prepare"
    assert len((runs / "t1" / "metrics.jsonl").read_text().splitlines()) == 2

    again = runner.invoke(app, ["train", *map(str, common), "--name", "t1"])
    assert again.exit_code == 2 and "already exists" in again.output

    res = invoke("eval", "--from", "t1", "--runs-dir", runs, "-q")
    assert res.exit_code == 0 and "test: accuracy" in res.output
    [ev_run] = runs.glob("eval-cnn-*")  # <stage>-<model>-<hash>
    ev = json.loads((ev_run / "metrics.json").read_text())
    assert ev["items"] == 20  # 2 of 8 clips per class (stratified 20%) and ev["model_facts"]["macs"] > 0
    assert (ev_run / "confusion.png").exists()

    res = invoke("report", runs, "--out", tmp_path / "rep")
    assert res.exit_code == 0 and (tmp_path / "rep" / "report.md").exists()
    assert "| t1 |" in (tmp_path / "rep" / "report.md").read_text()


def test_eval_from_missing_run_exits_2(tmp_path):
    res = runner.invoke(app, ["eval", "--from", "nope", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.output
