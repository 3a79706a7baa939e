"""Bad metadata, configs and run references through the CLI: exit code 2, one line, nothing written."""
from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocomp.config import ConfigError, load_config

from .conftest import assert_user_error, cli


@pytest.fixture
def synth_copy(tmp_path, synth_root):
    root = tmp_path / "synth"
    shutil.copytree(synth_root, root)
    return root


def _edit_metadata(root, edit):
    meta = root / "metadata.csv"
    lines = meta.read_text(encoding="utf-8").splitlines()
    meta.write_bytes(edit(lines) if not isinstance(edit, bytes) else edit)


HEADER = "filename,label,target,fold,sample_rate,channels,format,snr_db"
BAD_METADATA = {
    "missing column": (lambda ls: "\n".join([HEADER.replace("target,", "")] + [",".join(l.split(",")[:2] + l.split(",")[3:]) for l in ls[1:]]).encode(), "missing column"),
    "non-integer target": (lambda ls: "\n".join(ls[:2] + [ls[2].replace(",0,", ",zero,", 1)] + ls[3:]).encode(), "row 3"),
    "label conflicting with target": (lambda ls: "\n".join(ls[:2] + [ls[2].replace("tone,", "dyad,", 1).replace("/tone", "/tone")] + ls[3:]).encode(), "row 3"),
    "duplicate row": (lambda ls: "\n".join(ls + [ls[1]]).encode(), "listed twice"),
    "path outside the root": (lambda ls: "\n".join(ls + ["../../etc/passwd,tone,0,1,8000,1,wav,1"]).encode(), "leaves the dataset root"),
    "absolute path": (lambda ls: "\n".join(ls + ["/etc/passwd,tone,0,1,8000,1,wav,1"]).encode(), "leaves the dataset root"),
    "non-UTF-8 bytes": (lambda ls: ("\n".join(ls) + "\nt\xe9st.wav,tone,0,1,8000,1,wav,1\n").encode("latin-1"), "UTF-8"),
    "binary garbage": (lambda ls: b"\x00\xff\xfe" * 100, "metadata.csv"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_is_refused_before_anything_is_written(tmp_path, synth_copy, tiny_args, case):
    edit, needle = BAD_METADATA[case]
    _edit_metadata(synth_copy, edit)
    runs = tmp_path / "runs"
    result = cli("prepare", *tiny_args, "--set", f"data.root={synth_copy}", "--runs-dir", runs, "-q")
    assert_user_error(result, "metadata.csv", needle)
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))


def test_metadata_symlink_out_of_the_root_is_refused(tmp_path, synth_copy, tiny_args):
    outside = tmp_path / "outside.wav"
    shutil.copy(next(synth_copy.glob("tone/*.wav")), outside)
    (synth_copy / "tone" / "link.wav").symlink_to(outside)
    _edit_metadata(synth_copy, lambda ls: "\n".join(ls + ["tone/link.wav,tone,0,1,8000,1,wav,1"]).encode())
    result = cli("prepare", *tiny_args, "--set", f"data.root={synth_copy}", "--runs-dir", tmp_path / "runs", "-q")
    assert_user_error(result, "through a link")


BAD_CONFIGS = {
    "wrong type": ("train:\n  epochs: many\n", "train.epochs"),
    "unknown key": ("train:\n  optimiser: adam\n", "optimiser"),
    "unknown section": ("trian:\n  epochs: 1\n", "trian"),
    "not a mapping": ("- a\n- b\n", "mapping"),
    "bad YAML": ("train: [1, 2\n", "invalid YAML"),
    "python tag": ("seed: !!python/object/apply:os.system ['touch pwned']\n", "invalid YAML"),
    "negative value": ("features:\n  n_mels: -3\n", "features.n_mels"),
    "out of range choice": ("features:\n  kind: spectrogramz\n", "features.kind"),
    "include missing": ("include: nothere.yaml\n", "nothere.yaml"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_file_exits_2_with_one_line(tmp_path, case, monkeypatch):
    text, needle = BAD_CONFIGS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(text)
    result = cli("prepare", "-c", "c.yaml", "--runs-dir", "runs", "-q")
    assert_user_error(result, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # nothing written (no pwned, no runs/)


BAD_SETS = ["train.epochs", "train.epochs=[1", "=3", "train..lr=1", "nosuch.key=1", "train.epochs=-1",
            "train=3", "model.input_size=abc"]


@pytest.mark.parametrize("expr", BAD_SETS)
def test_bad_set_expression_exits_2(tmp_path, expr):
    result = cli("train", "--set", expr, "--runs-dir", tmp_path / "runs", "-q")
    assert_user_error(result)
    assert not (tmp_path / "runs").exists()


def test_from_a_run_that_does_not_exist(tmp_path):
    for command in (["train"], ["eval"]):
        result = cli(*command, "--from", "nope", "--runs-dir", tmp_path / "runs", "-q")
        assert_user_error(result, "nope", "not found")
    assert not (tmp_path / "runs").exists()


def test_from_a_run_that_is_not_finished(tmp_path):
    from audiocomp.config import Config
    from audiocomp.runs import Run

    run = Run.create("half", "train", tmp_path / "runs")
    run.start("train", Config(), [])
    run.unlock()  # left 'running', as after a kill
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for command in (["train"], ["eval"]):
        result = cli(*command, "--from", "half", "--runs-dir", tmp_path / "runs", "-q")
        assert_user_error(result, "half", "running")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", ".hidden", "..", "."])
def test_run_names_cannot_be_paths(tmp_path, tiny_args, name):
    result = cli("prepare", *tiny_args, "--runs-dir", tmp_path / "runs", "--name", name, "-q")
    assert_user_error(result, "not a path")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_fuzzed_set_expressions_validate_or_raise_one_line(expr):
    try:
        load_config([], [expr])
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
