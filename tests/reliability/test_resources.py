"""Disk full and permission errors: one clear line, exit code 2, earlier work intact, no temp files left."""
from __future__ import annotations

import errno
import os
import pathlib

import numpy as np
import pytest

from audiocomp.runs import Run, read_json

from .conftest import assert_user_error, cli


def _no_temp_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


def test_disk_full_while_writing_a_checkpoint(tmp_path, trained, tiny_args, monkeypatch):
    import audiocomp.models.io as mio

    real_save = mio.torch.save

    def save(obj, f, *a, **k):
        if "last.pt" in str(f):  # best.pt of epoch 1 is written, then the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(mio.torch, "save", save)
    runs = tmp_path / "runs"
    result = cli("train", *tiny_args, "--from", trained / "p", "--runs-dir", runs, "--name", "t", "-q")
    assert_user_error(result, "last.pt", "No space left on device")
    assert Run(runs / "t").status == "failed"
    assert (runs / "t" / "checkpoints" / "best.pt").is_file()  # what was written before is kept
    assert not _no_temp_files(runs)
    assert Run.open(trained / "p").status == "done"  # the parent run is untouched


def test_disk_full_while_building_the_feature_store(tmp_path, tiny_args, monkeypatch):
    def no_space(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np.lib.format, "open_memmap", no_space)
    runs = tmp_path / "runs"
    result = cli("prepare", *tiny_args, "--runs-dir", runs, "--name", "p", "-q")
    assert_user_error(result, "features.npy", "No space left on device")
    assert not list((runs / ".store").iterdir())  # no half-built store, visible or hidden
    assert read_json(runs / "p" / "manifest.json")["status"] == "failed"


def test_permission_denied_on_the_runs_dir(tmp_path, tiny_args, monkeypatch):
    runs = tmp_path / "runs"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):  # a read-only runs dir, simulated (tests may run as root, which ignores modes)
        if str(self).startswith(str(runs)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    result = cli("prepare", *tiny_args, "--runs-dir", runs, "-q")
    assert_user_error(result, "Permission denied", str(runs))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_runs_dir_for_real(tmp_path, tiny_args):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        result = cli("prepare", *tiny_args, "--runs-dir", runs, "-q")
        assert_user_error(result, "Permission denied")
    finally:
        runs.chmod(0o755)


# ------------------------------------------------------------------------------------------ doctor

def test_doctor_reports_the_environment_and_exits_0(tmp_path):
    result = cli("doctor", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.stdout
    out = result.stdout
    for needle in ("python", "torch ", "torchvision", "torchaudio", "onnxruntime ", "torch-pruning",
                   "device cpu", "device cuda", "device mps", "quantized engines", "onnxruntime providers",
                   "CPUExecutionProvider", "decode WAV", "decode MP3", "free disk", "write runs dir", "usable: yes"):
        assert needle in out, needle
    assert not (tmp_path / "runs").exists()  # checking creates nothing
    for line in out.splitlines()[:-1]:
        assert line.split()[0] in ("ok", "warn", "fail"), line


def test_doctor_flags_a_pin_mismatch_and_an_unwritable_runs_dir(tmp_path, monkeypatch):
    from audiocomp.stages import doctor

    monkeypatch.setattr(doctor, "_pins", lambda: {"torch": "==1.0.0"})

    class Denied:
        def __init__(self, *a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(doctor.tempfile, "NamedTemporaryFile", Denied)
    result = cli("doctor", "--runs-dir", tmp_path)
    assert result.exit_code == 1
    assert "does not match the pin torch==1.0.0" in result.stdout
    assert "fail  write runs dir" in result.stdout and "usable: NO" in result.stdout
