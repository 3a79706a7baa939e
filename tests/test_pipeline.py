"""`audiocomp run`: schema errors up front, content-hashed run names, reuse, partial recompute, claims."""
import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import ConfigError
from audiocomp.runs import Run, RunError
from audiocomp.stages import pipeline
from audiocomp.stages.registry import STAGES

SIMPLE = """
stages:
  - {id: data, stage: prepare}
  - {id: fp32, stage: train, from: data}
  - {id: test, stage: eval, from: fp32}
  - {id: table, stage: report}
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("stages: []", "stages: [] is not valid"),
    ("stagez: []", "stagez: unknown key"),
    ("stages: [{id: a, stage: prepare, form: x}]", "stages.0.form: unknown key"),
    ("stages: [{id: a, stage: trian}]", "unknown stage 'trian'"),
    ("stages: [{id: a, stage: prepare}, {id: a, stage: prepare}]", "id 'a' is used twice"),
    ("stages: [{id: t, stage: train, from: d}, {id: d, stage: prepare}]", "'d' is not an earlier stage id"),
    ("stages: [{id: d, stage: prepare}, {id: e, stage: eval, from: d}]", "a eval stage cannot read a prepare run"),
    ("stages: [{id: d, stage: prepare}, {id: t, stage: train}]", "needs exactly one parent"),
    ("stages: [{id: d, stage: prepare}, {id: e, stage: prepare, from: d}]", "has no parent"),
    ("stages: [{id: d, stage: prepare}, {id: e, stage: prepare}, {id: t, stage: train, from: [d, e]}]",
     "the second parent of a train stage is the model that teaches it; 'e' is a prepare stage"),
    ("stages: [{id: d, stage: prepare}, {id: t, stage: train, from: d}, {id: s, stage: train, from: [t, d]}]",
     "'d' is a prepare stage, not a train, prune, quantize, compress stage"),
    ("stages: [{id: d, stage: prepare}, {id: s, stage: train, from: [d, t]}]", "'t' is not an earlier stage id"),
    ("stages: [{id: 'a b', stage: prepare}]", "stages.0.id"),
])
def test_bad_pipelines_fail_up_front_with_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        pipeline.plan(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_bad_stage_config_names_the_stage(tmp_path):
    path = write(tmp_path, SIMPLE)
    with pytest.raises(ConfigError, match="stage 'fp32'.*train.epoks: unknown key"):
        pipeline.plan(path, ["fp32:train.epoks=3"])
    with pytest.raises(ConfigError, match="no stage with id 'nope'"):
        pipeline.plan(path, ["nope:train.epochs=3"])
    with pytest.raises(ConfigError, match="stage 'fp32': model.name: unknown model 'resnet9000'"):
        pipeline.plan(path, ["model.name=resnet9000"])


def test_a_missing_stage_module_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(STAGES.get("prune"), "module", "no_such_module")
    path = write(tmp_path, SIMPLE + "  - {id: p, stage: prune, from: fp32}\n")
    with pytest.raises(ConfigError, match="stage 'prune' is not available"):
        pipeline.plan(path)


def names(steps):
    return {s.spec.id: s.name for s in steps}


def test_run_names_change_only_downstream_of_an_edit(tmp_path):
    path = write(tmp_path, SIMPLE)
    base = names(pipeline.plan(path))
    assert names(pipeline.plan(path)) == base  # deterministic
    # speed-only settings and labels never rename a run
    assert names(pipeline.plan(path, ["train.threads=3", "features.workers=2", "data.corpus=esc50"])) == base
    lr = names(pipeline.plan(path, ["fp32:train.lr=0.01"]))
    assert lr["data"] == base["data"] and lr["fp32"] != base["fp32"] and lr["test"] != base["test"]
    top_k = names(pipeline.plan(path, ["eval.top_k=1"]))  # eval section: only the eval run changes
    assert [top_k[k] == base[k] for k in ("data", "fp32", "test")] == [True, True, False]
    mels = names(pipeline.plan(path, ["features.n_mels=40"]))
    assert all(mels[k] != base[k] for k in ("data", "fp32", "test"))


def test_children_inherit_their_parents_config(tmp_path):
    path = write(tmp_path, """
base: [c.yaml]
stages:
  - {id: data, stage: prepare}
  - {id: lstm, stage: train, from: data, set: [model.name=lstm]}
  - {id: test, stage: eval, from: lstm, set: [eval.top_k=1]}
""")
    write(tmp_path, "train: {epochs: 3}\n", "c.yaml")
    steps = {s.spec.id: s for s in pipeline.plan(path)}
    assert steps["test"].cfg.model.name == "lstm" and steps["test"].cfg.train.epochs == 3
    assert steps["test"].name.startswith("eval-lstm-") and steps["data"].cfg.model.name == "cnn"
    # the command line wins everywhere, even over a stage's own set
    assert {s.cfg.eval.top_k for s in pipeline.plan(path, ["eval.top_k=5"])} == {5}


def test_a_training_taught_by_an_earlier_model_stage(tmp_path, tiny_overrides):
    """`from: [data, teacher]`: the student trains on the data stage's split, distilled from the teacher stage's
    model (its second parent, in its name), and inherits the data stage's config, not the teacher's."""
    path = write(tmp_path, """
stages:
  - {id: data, stage: prepare}
  - {id: big, stage: train, from: data, set: ["model.kwargs.channels=[16,32]"]}
  - {id: small, stage: train, from: [data, big]}
""")
    sets = [*tiny_overrides, "train.epochs=1"]
    steps = {s.spec.id: s for s in pipeline.plan(path, sets)}
    assert [p.spec.id for p in steps["small"].parents] == ["data", "big"]
    assert steps["small"].cfg.model.kwargs["channels"] == [8, 16]
    summary = pipeline.run(path, sets, runs_dir=tmp_path / "runs", out=tmp_path / "out", progress=False, quiet=True)
    small = Run(tmp_path / "runs" / summary["stages"][2]["run"])
    assert small.name == steps["small"].name and small.metrics()["teacher"]["run"] == steps["big"].name
    assert [p["name"] for p in small.manifest["parents"]] == [steps["data"].name, steps["big"].name]


def statuses(summary):
    return {s["id"]: s["status"] for s in summary["stages"]}


@pytest.mark.slow
def test_second_run_reuses_everything_and_an_edit_recomputes_downstream(tmp_path, tiny_overrides):
    path = write(tmp_path, SIMPLE)
    sets = [*tiny_overrides, "train.epochs=1"]
    kw = dict(runs_dir=tmp_path / "runs", out=tmp_path / "out", progress=False, quiet=True)
    first = pipeline.run(path, sets, **kw)
    assert statuses(first) == {"data": "ran", "fp32": "ran", "test": "ran", "table": "rendered"}
    assert json.loads((tmp_path / "out" / "pipeline.json").read_text())["status"] == "done"
    assert (tmp_path / "out" / "table" / "report.md").is_file()
    train_mtime = (tmp_path / "runs" / first["stages"][1]["run"] / "model" / "model.pt").stat().st_mtime

    second = pipeline.run(path, sets, **kw)
    assert statuses(second) == {"data": "reused", "fp32": "reused", "test": "reused", "table": "rendered"}
    assert (tmp_path / "runs" / first["stages"][1]["run"] / "model" / "model.pt").stat().st_mtime == train_mtime

    edited = pipeline.run(path, [*sets, "test:eval.top_k=1"], **kw)
    assert statuses(edited) == {"data": "reused", "fp32": "reused", "test": "ran", "table": "rendered"}

    # a crashed training run is continued from its checkpoint, not started over
    train_run = Run(tmp_path / "runs" / first["stages"][1]["run"])
    train_run.update_manifest(status="failed")
    crashed = pipeline.run(path, sets, **kw)
    assert statuses(crashed)["fp32"] == "resumed" and train_run.status == "done"


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tiny_overrides):
    path = write(tmp_path, SIMPLE)
    args = ["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]
    for s in tiny_overrides:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [ln.split()[:3] for ln in lines] == [["data", "prepare", "run"], ["fp32", "train", "run"],
                                               ["test", "eval", "run"], ["table", "report", "render"]]
    assert not (tmp_path / "runs").exists()
    bad = CliRunner().invoke(app, ["run", str(write(tmp_path, "stages: [{id: a, stage: x}]", "bad.yaml"))])
    assert bad.exit_code == 2 and "unknown stage 'x'" in bad.output


def test_a_claimed_run_makes_the_other_process_wait_or_give_up(tmp_path):
    held, release = threading.Event(), threading.Event()

    def hold():
        with pipeline.claim(tmp_path, "train-x", 5, print):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    with pytest.raises(RunError, match="being made by another process"):
        with pipeline.claim(tmp_path, "train-x", 0.1, lambda *a: None):
            pass
    said = []
    threading.Timer(0.3, release.set).start()
    with pipeline.claim(tmp_path, "train-x", 5, said.append):  # waits for the holder, then proceeds
        assert release.is_set()
    assert said and "waiting for run train-x" in said[0]
    t.join()


@pytest.mark.slow
def test_a_stage_with_the_agreed_signature_plugs_in(tmp_path, tiny_overrides, monkeypatch):
    """prune/quantize/bench/export modules are found by name and called as run(cfg, parent_run, runs_dir,
    name=..., force=...); here a stand-in prune stage that copies its parent's model."""
    import shutil
    import sys
    import types

    from audiocomp.stages.context import stage_run

    calls = []

    def run(cfg, parent_run, runs_dir=None, *, name=None, force=False):
        calls.append((parent_run.name, name, cfg.prune.sparsity))
        with stage_run("prune", cfg, name, runs_dir, force=force, parents=[parent_run]) as r:
            shutil.copytree(parent_run / "model", r / "model")
            r.write_metrics({"method": "copy"})
        return r

    monkeypatch.setitem(sys.modules, "audiocomp.stages.prune", types.SimpleNamespace(run=run))
    path = write(tmp_path, """
stages:
  - {id: data, stage: prepare}
  - {id: fp32, stage: train, from: data}
  - {id: small, stage: prune, from: fp32, set: [prune.sparsity=0.3]}
  - {id: test, stage: eval, from: small}
""")
    kw = dict(runs_dir=tmp_path / "runs", out=tmp_path / "out", progress=False, quiet=True)
    first = pipeline.run(path, [*tiny_overrides, "train.epochs=1"], **kw)
    runs = {s["id"]: s["run"] for s in first["stages"]}
    assert calls == [(runs["fp32"], runs["small"], 0.3)]
    assert Run(tmp_path / "runs" / runs["test"]).manifest["parents"][0]["name"] == runs["small"]
    again = pipeline.run(path, [*tiny_overrides, "train.epochs=1"], **kw)
    assert len(calls) == 1 and statuses(again)["small"] == "reused"
