import json
import multiprocessing as mp

import pytest

from audiocomp.config import Config
from audiocomp.runs import Run, RunError, atomic_write_json, atomic_write_text


def test_interrupted_atomic_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"v": 1})

    class Boom(Exception):
        pass

    class Bad:
        def __str__(self):
            raise Boom()

    with pytest.raises(Boom):
        atomic_write_json(target, {"v": Bad()})  # fails while serialising, after the temp file exists
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_create_start_finish_and_manifest(tmp_path):
    run = Run.create("r1", "train", tmp_path)
    run.start("train", Config(), parents=[], inputs={"x": "abc"})
    assert run.status == "running" and (run.path / "config.yaml").exists()
    run.finish()
    m = run.manifest
    assert m["status"] == "done" and m["stage"] == "train" and m["inputs"] == {"x": "abc"}
    assert m["versions"]["torch"].startswith("2.11") and m["seed"] == 0 and m["ended"]
    run.unlock()
    assert Run.open("r1", tmp_path).path == run.path


def test_existing_run_is_not_overwritten_without_force(tmp_path):
    run = Run.create("r1", "train", tmp_path)
    run.start("train", Config())
    run.finish()
    atomic_write_text(run.path / "keep.txt", "precious")
    run.unlock()
    with pytest.raises(RunError, match="already exists"):
        Run.create("r1", "train", tmp_path)
    assert (run.path / "keep.txt").read_text() == "precious"
    again = Run.create("r1", "train", tmp_path, force=True)
    assert not (again.path / "keep.txt").exists()
    again.unlock()


def test_open_refuses_unfinished_and_missing_runs(tmp_path):
    run = Run.create("r1", "train", tmp_path)
    run.start("train", Config())
    run.fail(ValueError("bad"))
    run.unlock()
    with pytest.raises(RunError, match="status is 'failed'"):
        Run.open("r1", tmp_path)
    assert Run.open("r1", tmp_path, require_done=False).manifest["error"] == "ValueError: bad"
    with pytest.raises(RunError, match="not found"):
        Run.open("nope", tmp_path)


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", ""])
def test_run_names_cannot_escape_the_runs_dir(tmp_path, bad):
    with pytest.raises(RunError):
        Run.create(bad, "train", tmp_path)


def _hold_lock(path, ready, release):
    run = Run.create("locked", "train", path, resume=True)
    ready.set()
    release.wait(10)
    run.unlock()


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunError, match="in use by another process"):
            Run.create("locked", "train", tmp_path, resume=True)
    finally:
        release.set()
        proc.join(10)
    Run.create("locked", "train", tmp_path, resume=True).unlock()  # free again once the holder exits


def test_torn_jsonl_line_is_skipped(tmp_path):
    run = Run.create("r", "train", tmp_path)
    run.append_jsonl("metrics.jsonl", {"epoch": 1})
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "lo')  # killed mid-write
    assert run.read_jsonl("metrics.jsonl") == [{"epoch": 1}]
    run.unlock()
