"""Every file export and bench write goes through runs.atomic_path (temp file + fsync + rename), and the
training log is appended through the O_NOFOLLOW helper."""
from __future__ import annotations

import os

import pytest

import audiocomp.runs.atomic as runs_module  # where atomic_path and append_jsonl look up their helpers
from audiocomp.runs import RunError, append_jsonl


@pytest.fixture
def atomic_writes(monkeypatch) -> set:
    """The final paths of every atomic write (atomic_path passes each to crash_point before its rename)."""
    written, real = set(), runs_module.crash_point

    def record(where: str) -> None:
        if where.startswith("write "):
            written.add(os.path.realpath(where[len("write "):]))
        real(where)

    monkeypatch.setattr(runs_module, "crash_point", record)
    return written


def files_in(folder) -> set:
    return {os.path.realpath(os.path.join(d, f)) for d, _, names in os.walk(folder) for f in names if f != ".lock"}


def test_export_and_bench_write_every_file_atomically(trained_run, atomic_writes, tmp_path):
    from audiocomp.config import load_config
    from audiocomp.stages import bench, export

    runs, model_run, cfg = trained_run
    exp = export.run(cfg, model_run, runs, name="atomic-export", force=True, torchscript=True, out=tmp_path / "copy")
    assert {"model.onnx", "predict.py", "mel_basis.npy", "model.ts.pt"} <= set(os.listdir(exp.path / "deploy"))
    bcfg = load_config([], ["bench.iterations=3", "bench.threads=[1]", "bench.batch_sizes=[1]",
                            "bench.fresh_process=false"], base=cfg.to_dict())
    b = bench.run(bcfg, model_run, runs, name="atomic-bench", force=True, progress=False)
    assert {"input.npy", "model.onnx", "model.ts.pt"} <= set(os.listdir(b.path))
    for folder in (exp.path, tmp_path / "copy", b.path):
        assert files_in(folder) <= atomic_writes, files_in(folder) - atomic_writes


def test_the_jsonl_log_refuses_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (tmp_path / "metrics.jsonl").symlink_to(target)
    with pytest.raises(RunError, match="symbolic link"):
        append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 1})
    assert target.read_text() == ""
    append_jsonl(tmp_path / "log.jsonl", {"epoch": 1})
    assert (tmp_path / "log.jsonl").read_text() == '{"epoch": 1}\n'


def test_training_appends_its_log_with_o_nofollow(tiny_cfg, tmp_path, monkeypatch):
    from audiocomp.stages import train

    opened, real = [], runs_module._open_nofollow
    monkeypatch.setattr(runs_module, "_open_nofollow", lambda path, flags: opened.append(str(path)) or real(path, flags))
    cfg = tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={"epochs": 1})})
    run = train.run(cfg, tmp_path / "runs", name="log-check", progress=False)
    log = str(run.path / "metrics.jsonl")
    assert opened.count(log) == 1 and run.read_jsonl("metrics.jsonl")[0]["epoch"] == 1
