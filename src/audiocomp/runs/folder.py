"""Run directories: one folder per stage invocation, written atomically, linked to its parents.

Layout: ``config.yaml`` (resolved), ``manifest.json`` (command, versions, seed, device, parents, status),
``metrics.json``, ``metrics.jsonl``, ``logs/``, plus whatever the stage writes (``model/``, ``checkpoints/``).
A run is locked (``.lock``, flock) while a process works in it, so two writers never interleave.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Optional

from .atomic import RunError, _open_nofollow, append_jsonl, atomic_write_json, atomic_write_text, read_json
from .metadata import git_commit, now, package_versions

DEFAULT_RUNS_DIR = "runs"


def runs_root(runs_dir: Optional[str | Path] = None) -> Path:
    return Path(runs_dir or os.environ.get("AUDIOCOMP_RUNS") or DEFAULT_RUNS_DIR)


def check_name(name: str) -> str:
    if not name or name in {".", ".."} or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise RunError(f"run name {name!r}: use letters, digits, '-', '_' and '.', not a path")
    return name


def refuse_links(path: Path) -> None:
    """A run folder is written into: a symbolic link in it (planted, or copied from elsewhere) could make a
    write land outside it, so any link is refused before the first write."""
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, entry)):
                raise RunError(f"run {path} contains a symbolic link {os.path.join(dirpath, entry)}; "
                               f"refusing to write through it (remove it or use --force)")


class Run:
    """One run directory. Create with :meth:`create` (new) or :meth:`open` (existing, read-only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fh = None

    # -- paths
    @property
    def name(self) -> str:
        return self.path.name

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    # -- reading
    @property
    def manifest(self) -> dict:
        return read_json(self.manifest_path)

    @property
    def status(self) -> str:
        return self.manifest.get("status", "unknown")

    @property
    def stage(self) -> str:
        return self.manifest.get("stage", "unknown")

    def config_dict(self) -> dict:
        import yaml

        try:
            return yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise RunError(f"{self.path}: no config.yaml (not a run directory?)") from None

    def config(self):
        from ..config import validate

        return validate(self.config_dict())

    def metrics(self) -> dict:
        p = self.path / "metrics.json"
        return read_json(p) if p.exists() else {}

    @classmethod
    def open(cls, ref: str | Path, runs_dir: Optional[str | Path] = None, require_done: bool = True) -> "Run":
        """Find a run by path or by name under the runs dir; by default it must have finished."""
        ref_path = Path(ref)
        candidates = [ref_path, runs_root(runs_dir) / ref_path]
        for path in candidates:
            if (path / "manifest.json").is_file():
                run = cls(path)
                status = run.status
                if require_done and status != "done":
                    raise RunError(f"run {path}: status is '{status}', not 'done' (finish or --resume it first)")
                return run
        raise RunError(f"run {ref!r}: not found (looked in {', '.join(str(c) for c in candidates)})")

    # -- writing
    @classmethod
    def create(cls, name: str, stage: str, runs_dir: Optional[str | Path] = None, *, force: bool = False,
               resume: bool = False) -> "Run":
        """Make (or, with resume, reopen) a run folder and take its lock."""
        path = runs_root(runs_dir) / check_name(name)
        run = cls(path)
        if path.is_symlink():
            raise RunError(f"run {path} is a symbolic link; refusing to write through it")
        exists = run.manifest_path.exists()
        if exists and not (force or resume):
            raise RunError(f"run {path} already exists ({run.status}): use --resume to continue it, "
                           f"--force to replace it, or --name for a new one")
        path.mkdir(parents=True, exist_ok=True)
        run.lock()
        if exists and force:
            for child in path.iterdir():
                if child.name == ".lock":
                    continue
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        try:
            refuse_links(path)
        except RunError:
            run.unlock()
            raise
        for stale in path.rglob(".*.tmp"):  # temp files of a killed writer; we hold the lock, none is live
            stale.unlink()
        (path / "logs").mkdir(exist_ok=True)
        return run

    def lock(self) -> None:
        """Exclusive, non-blocking lock held for this process's lifetime (released on exit or kill)."""
        fh = os.fdopen(_open_nofollow(self.path / ".lock", os.O_RDWR | os.O_CREAT), "r+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunError(f"run {self.path} is in use by another process (lock {self.path / '.lock'})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}@{socket.gethostname()}\n")
        fh.flush()
        self._lock_fh = fh

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def write_config(self, cfg) -> None:
        atomic_write_text(self.path / "config.yaml", cfg.to_yaml())

    def start(self, stage: str, cfg, parents: list["Run"] = (), inputs: dict[str, str] | None = None,
              device: str = "cpu") -> None:
        previous = self.manifest if self.manifest_path.exists() else {}
        self.write_config(cfg)
        manifest = {
            "stage": stage,
            "name": self.name,
            "status": "running",
            "command": sys.argv,
            "cwd": os.getcwd(),
            "seed": cfg.seed,
            "device": device,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "parents": [{"name": p.name, "path": str(p.path.resolve()), "stage": p.stage} for p in parents],
            "inputs": inputs or {},
            "started": previous.get("started", now()),
            "attempts": previous.get("attempts", 0) + 1,
            "ended": None,
            "error": None,
        }
        atomic_write_json(self.manifest_path, manifest)

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest
        manifest.update(fields)
        atomic_write_json(self.manifest_path, manifest)

    def finish(self) -> None:
        self.update_manifest(status="done", ended=now(), error=None)

    def fail(self, error: BaseException | str) -> None:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.update_manifest(status="failed", ended=now(), error=msg)

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / "metrics.json", metrics)

    def append_jsonl(self, name: str, record: dict) -> None:
        append_jsonl(self.path / name, record)

    def read_jsonl(self, name: str) -> list[dict]:
        p = self.path / name
        if not p.exists():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def parent(self, stage: Optional[str] = None) -> Optional["Run"]:
        """The first parent run (of the given stage, searching up the chain)."""
        for p in self.manifest.get("parents", []):
            run = Run(Path(p["path"]))
            if stage is None or run.stage == stage:
                return run
            found = run.parent(stage) if run.manifest_path.exists() else None
            if found is not None:
                return found
        return None
