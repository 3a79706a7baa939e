"""Atomic file I/O: every file a run holds is written beside its place and renamed in, so a crash or a full
disk leaves the previous version intact; logs are appended without following symbolic links."""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .crash import crash_point


class RunError(RuntimeError):
    """A problem with a run directory; the message is one line meant for the user."""


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
