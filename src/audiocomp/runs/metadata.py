"""What a manifest records about where a run came from: time, git commit, package versions, file hashes."""
from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Optional


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(cwd: Path | None = None) -> Optional[str]:
    """The project's git commit (with a '+dirty' mark), or None outside a checkout."""
    here = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = ["audiocomp", "torch", "torchvision", "torchaudio", "numpy", "scipy", "soxr", "soundfile",
             "torch-pruning", "onnx", "onnxruntime", "pydantic", "typer"]
    out = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
