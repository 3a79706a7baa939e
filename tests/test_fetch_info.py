"""`data fetch` from local archives and folders (safe extraction, layout check) and `data info`."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest
from audio_fixtures import esc50, tone
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.datasets import DatasetError
from audiocomp.datasets.fetch import extract, fetch


def zip_dir(src, archive, prefix):
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, f"{prefix}/{f.relative_to(src).as_posix()}")
    return archive


def test_fetch_esc50_from_zip_and_cli(tmp_path):
    archive = zip_dir(esc50(tmp_path / "src"), tmp_path / "ESC-50-master.zip", "ESC-50-master")
    result = CliRunner().invoke(app, ["data", "fetch", "esc50", "--dest", str(tmp_path / "ESC-50"),
                                      "--source", str(archive), "-q"])
    assert result.exit_code == 0, result.output
    assert "esc50: 14 clips, 3 classes verified (the official set has 2000)" in result.output
    assert (tmp_path / "ESC-50" / "meta" / "esc50.csv").is_file()
    assert not list(tmp_path.glob(".*fetch-tmp"))
    again = CliRunner().invoke(app, ["data", "fetch", "esc50", "--dest", str(tmp_path / "ESC-50"), "--source", str(archive)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_fetch_fsdd_from_tar_gz_and_folder(tmp_path):
    src = tmp_path / "free-spoken-digit-dataset-master"
    for d in range(2):
        tone(src / "recordings" / f"{d}_theo_0.wav")
    with tarfile.open(tmp_path / "fsdd.tar.gz", "w:gz") as tf:
        tf.add(src, arcname=src.name)
    assert fetch("fsdd", tmp_path / "a", str(tmp_path / "fsdd.tar.gz"), progress=False)["items"] == 2
    assert fetch("fsdd", tmp_path / "b", str(tmp_path), progress=False)["items"] == 2  # a folder holding it
    with pytest.raises(DatasetError, match="no gtzan layout"):
        fetch("gtzan", tmp_path / "c", str(tmp_path / "fsdd.tar.gz"), progress=False)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_archive_members_cannot_escape(tmp_path, name):
    buf = io.BytesIO(b"x")
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        info = tarfile.TarInfo(name)
        info.size = 1
        tf.addfile(info, buf)
    with pytest.raises(DatasetError, match="outside the destination"):
        extract(tmp_path / "bad.tar", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(DatasetError, match="outside the destination"):
        extract(tmp_path / "bad.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_escaping_in_tar_is_refused(tmp_path):
    with tarfile.open(tmp_path / "link.tar", "w") as tf:
        info = tarfile.TarInfo("data/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(DatasetError, match="outside the destination"):
        extract(tmp_path / "link.tar", tmp_path / "out")


def test_data_info_counts_and_problems(tmp_path):
    root = esc50(tmp_path / "ESC-50")
    args = ["data", "info", "--set", "data.dataset=esc50", "--set", f"data.root={root}", "-q"]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "14 items, 3 classes" in text.output and "3-110-A-0.wav: cannot decode audio" in text.output
    info = json.loads(CliRunner().invoke(app, args + ["--json"]).output)
    assert info["per_class"] == {"dog": 5, "rain": 4, "rooster": 5}
    assert info["per_fold"] == {"1": 3, "2": 3, "3": 3, "4": 2, "5": 3}
    assert info["sample_rates"] == {"8000": 11, "22050": 1, "44100": 1}  # 13 readable files
    assert info["channels"] == {"1": 12, "2": 1} and len(info["problems"]) == 2  # missing + corrupt
    bad = CliRunner().invoke(app, ["data", "info", "--set", "data.dataset=esc50", "--set", f"data.root={tmp_path}/none"])
    assert bad.exit_code == 2 and "dataset root not found" in bad.output
