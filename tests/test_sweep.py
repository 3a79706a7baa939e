"""`audiocomp sweep`: grid/list expansion, dry run, emitted commands, failures recorded, resume, --jobs."""
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import ConfigError
from audiocomp.stages import sweep

PIPELINE = """
stages:
  - {id: data, stage: prepare}
  - {id: fp32, stage: train, from: data}
  - {id: test, stage: eval, from: fp32}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def make_sweep(tmp_path: Path, tiny_overrides, body: str) -> Path:
    write(tmp_path / "pipeline.yaml", PIPELINE)
    sets = ", ".join(json.dumps(s) for s in [*tiny_overrides, "train.epochs=1"])
    return write(tmp_path / "sweep.yaml", f"pipeline: pipeline.yaml\nset: [{sets}]\n{body}")


def test_grid_and_list_expand_to_their_product():
    spec = sweep.SweepSpec.model_validate({
        "pipeline": "p.yaml", "set": ["train.epochs=1"],
        "grid": {"model.name": ["cnn", "lstm"], "prune.sparsity": [0.5, 0.8, 0.9],
                 "model.kwargs.channels": [[8, 16]]},
        "runs": [{"name": "mel"}, {"name": "raw", "set": ["features.kind=waveform"], "config": ["d.yaml"]}]})
    combos = sweep.combinations(spec, Path("sweeps"), ["train.lr=0.1"])
    assert len(combos) == 2 * 2 * 3
    assert len({c.id for c in combos}) == 12 and combos[0].id == "000-mel_cnn_0.5_8-16"
    raw = combos[6]
    assert raw.overrides == ["train.epochs=1", "features.kind=waveform", 'model.name="cnn"', "prune.sparsity=0.5", "model.kwargs.channels=[8, 16]", "train.lr=0.1"]
    assert raw.files == [str(Path("sweeps/d.yaml"))]
    single = sweep.combinations(sweep.SweepSpec(pipeline="p.yaml"))
    assert [(c.id, c.overrides) for c in single] == [("000-base", [])]


@pytest.mark.parametrize("body, message", [
    ("pipeline: p.yaml\ngird: {}", "gird: unknown key; did you mean 'grid'?"),
    ("pipeline: p.yaml\ngrid: {model.name: []}", "has no values"),
    ("grid: {}", "pipeline: required key missing"),
    ("pipeline: missing.yaml", "missing.yaml not found"),
])
def test_bad_sweeps_fail_with_one_line(tmp_path, body, message):
    path = write(tmp_path / "s.yaml", body)
    with pytest.raises(ConfigError, match=message):
        sweep.load(path)


def test_a_bad_combination_fails_before_any_work(tmp_path, tiny_overrides):
    path = make_sweep(tmp_path, tiny_overrides, "grid: {train.optimizer: [adam, adamm]}")
    with pytest.raises(ConfigError, match="combination 001-adamm.*train.optimizer"):
        sweep.load(path)


def test_dry_run_and_emit_commands(tmp_path, tiny_overrides):
    path = make_sweep(tmp_path, tiny_overrides, "grid: {train.lr: [0.01, 0.003]}\nruns: [{name: a}, {name: b}]")
    runs = tmp_path / "runs"
    dry = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--dry-run", "--jobs", "2"])
    assert dry.exit_code == 0, dry.output
    # a and b set nothing different: 1 prepare + 2 x (train + eval), each computed once
    assert "4 combinations, 5 distinct runs to compute, 2 job(s)" in dry.output
    assert not runs.exists()
    cmds = tmp_path / "cmds.txt"
    emitted = CliRunner().invoke(app, ["sweep", str(path), "--runs-dir", str(runs), "--emit-commands", str(cmds),
                                       "--set", "eval.top_k=1"])
    assert emitted.exit_code == 0 and "wrote 4 commands" in emitted.output
    lines = cmds.read_text().splitlines()
    assert len(lines) == 4
    argv = shlex.split(lines[3])
    assert argv[:3] == ["audiocomp", "run", str(tmp_path / "pipeline.yaml")]
    assert argv[argv.index("--out") + 1].endswith("combos/003-b_0.003")
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets[-2:] == ["train.lr=0.003", "eval.top_k=1"]


@pytest.mark.slow
def test_sweep_runs_in_parallel_records_failures_and_resumes(tmp_path, tiny_overrides):
    path = make_sweep(tmp_path, tiny_overrides,
                      'runs: [{name: ok}, {name: broken, set: ["fp32:model.kwargs.bogus=1"]}]')
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["sweep", str(path), "--runs-dir", str(runs), "--out", str(out), "--jobs", "2", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "sweep.json").read_text())
    by_id = {c["id"]: c for c in summary["combinations"]}
    assert summary["threads_per_job"] >= 1 and summary["counts"] == {"done": 1, "skipped": 0, "failed": 1}
    assert by_id["000-ok"]["status"] == "done" and by_id["001-broken"]["status"] == "failed"
    assert "bogus" in by_id["001-broken"]["error"] and Path(by_id["001-broken"]["log"]).is_file()
    assert (out / "report" / "report.md").is_file() and "train-cnn-" in (out / "report" / "report.md").read_text()
    # the prepare run both combinations share was made once
    assert len([p for p in runs.iterdir() if p.name.startswith("prepare-")]) == 1

    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 1
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 1, "failed": 1}
