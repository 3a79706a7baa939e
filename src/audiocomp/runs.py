"""Run directories: one folder per stage invocation, written atomically, linked to its parents.

Layout: ``config.yaml`` (resolved), ``manifest.json`` (command, versions, seed, device, parents, status),
``metrics.json``, ``metrics.jsonl``, ``logs/``, plus whatever the stage writes (``model/``, ``checkpoints/``).
A run is locked (``.lock``, flock) while a process works in it, so two writers never interleave.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import fcntl
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

DEFAULT_RUNS_DIR = "runs"


class RunError(RuntimeError):
    """A problem with a run directory; the message is one line meant for the user."""


CRASH_ENV = "AUDIOCOMP_CRASH_AT"


def crash_point(where: str) -> None:
    """Fault injection for the crash tests (scripts/stress_kill.py): with AUDIOCOMP_CRASH_AT='<text>:<n>',
    the n-th call whose `where` contains <text> kills this process with SIGKILL, as a power cut would."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    text, _, n = spec.rpartition(":")
    if text and text in where:
        count = crash_point.hits = getattr(crash_point, "hits", 0) + 1  # type: ignore[attr-defined]
        if count == int(n):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------ atomic writes

@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename, on error it is
    removed and the previous file stays intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        crash_point(f"write {path}")  # the new file is complete but not yet in place
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None:  # e.g. ENOSPC from write/fsync: say which file could not be written
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_copy(src: Path | str, dst: Path | str) -> Path:
    """Copy a file; usable as shutil.copytree's copy_function."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def atomic_save_npy(path: Path | str, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def atomic_write_csv(path: Path | str, rows: list) -> None:
    """Rows of dicts (the header from the first one's keys) or of lists (the first row is the header)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        if rows and isinstance(rows[0], dict):
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        else:
            csv.writer(fh).writerows(rows)


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


# ------------------------------------------------------------------------------------------ metadata

def _now() -> str:
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


# ---------------------------------------------------------------------------------------- run folder

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


def _open_nofollow(path: Path, flags: int):
    """open() that fails instead of following a symbolic link at `path`."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it is a link
            raise RunError(f"{path} is a symbolic link; refusing to write through it") from None
        raise
    return fd


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line to a log (opened with O_NOFOLLOW); a torn last line (kill mid-write) is skipped
    by :meth:`Run.read_jsonl`."""
    fd = _open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    size = os.fstat(fd).st_size
    torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # start a fresh line after a torn one
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(("\n" if torn else "") + json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


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
        from .config import validate

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
            "started": previous.get("started", _now()),
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
        self.update_manifest(status="done", ended=_now(), error=None)

    def fail(self, error: BaseException | str) -> None:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.update_manifest(status="failed", ended=_now(), error=msg)

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
