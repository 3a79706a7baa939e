"""Untrusted files: a checkpoint that would run code is refused and the code never runs; nothing in a
run directory can make audiocomp write outside it."""
from __future__ import annotations

import os

import pytest
import torch

from audiocomp.models.io import ModelLoadError, load_model, safe_torch_load

from .conftest import assert_user_error, cli, copy_run


class Evil:
    """Unpickling this runs `touch marker`: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(path, marker, legacy=False):
    torch.save({"conv.weight": torch.zeros(2), "payload": Evil(marker)}, path,
               _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "evil.pt", marker, legacy)
    with pytest.raises(ModelLoadError, match="refused to load"):
        safe_torch_load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_load_model_refuses_a_replaced_model_file(tmp_path, trained):
    folder = copy_run(trained, "t", "t-evil-load") / "model"
    marker = tmp_path / "pwned"
    _plant(folder / "model.pt", marker)
    with pytest.raises(ModelLoadError, match="refused to load"):
        load_model(folder)
    assert not marker.exists()


def test_eval_from_a_run_with_a_malicious_model_exits_2_and_runs_nothing(tmp_path, trained):
    copy = copy_run(trained, "t", "t-evil-eval")
    marker = tmp_path / "pwned"
    _plant(copy / "model" / "model.pt", marker)
    result = cli("eval", "--from", "t-evil-eval", "--runs-dir", trained, "--name", "e-evil", "-q")
    assert_user_error(result, "model.pt", "refused to load")
    assert not marker.exists()


def test_resume_from_a_malicious_checkpoint_exits_2_and_runs_nothing(tmp_path, trained):
    copy = copy_run(trained, "t", "t-evil-resume")
    marker = tmp_path / "pwned"
    _plant(copy / "checkpoints" / "last.pt", marker)
    result = cli("train", "--resume", "t-evil-resume", "--runs-dir", trained, "-q")
    assert_user_error(result, "last.pt", "refused to load")
    assert not marker.exists()


def test_pretrained_weights_path_is_loaded_safely(tmp_path, trained, tiny_args):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "weights.pt", marker)
    result = cli("train", *tiny_args, "--set", f"model.weights={tmp_path / 'weights.pt'}", "--from", trained / "p",
                 "--runs-dir", tmp_path / "runs", "-q")
    assert_user_error(result, "weights.pt", "refused to load")
    assert not marker.exists()


@pytest.mark.parametrize("content", ["{not json", '{"name": "nosuchmodel", "num_classes": 2}', "[]"])
def test_tampered_architecture_file_is_a_clear_error(trained, content):
    copy = copy_run(trained, "t", "t-bad-arch")
    (copy / "model" / "arch.json").write_text(content)
    result = cli("eval", "--from", "t-bad-arch", "--runs-dir", trained, "--name", "e-bad-arch", "--force", "-q")
    assert_user_error(result, "arch.json")


# ------------------------------------------------------------------- writes stay inside the run folder

@pytest.mark.parametrize("link", ["metrics.jsonl", "checkpoints", ".lock", "logs"])
def test_a_symlink_planted_in_a_run_is_never_written_through(tmp_path, trained, link):
    copy = copy_run(trained, "t", "t-link")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    target = victim / "precious.txt" if link in ("metrics.jsonl", ".lock") else victim
    if (copy / link).is_dir():
        import shutil

        shutil.rmtree(copy / link)
    else:
        (copy / link).unlink(missing_ok=True)
    (copy / link).symlink_to(target)
    result = cli("train", "--resume", "t-link", "--runs-dir", trained, "-q")
    assert_user_error(result, "symbolic link")
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "keep me"


def test_a_run_folder_that_is_a_symlink_is_refused(tmp_path, trained):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (trained / "t-linked").symlink_to(elsewhere)
    try:
        result = cli("eval", "--from", "t", "--runs-dir", trained, "--name", "t-linked", "-q")
        assert_user_error(result, "symbolic link")
        assert not any(elsewhere.iterdir())
    finally:
        (trained / "t-linked").unlink()
