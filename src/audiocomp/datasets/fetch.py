"""`audiocomp data fetch`: download (or take a local archive or folder), unpack safely, verify the layout.

Nothing is written to DEST until the dataset has been unpacked and verified in a staging folder beside it,
and no archive member may land outside that folder (absolute paths, `..`, links are refused).
"""
from __future__ import annotations

import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from ..config import DataConfig
from .base import DatasetError, load_index


@dataclass(frozen=True)
class Source:
    url: str
    items: int  # official number of clips, to compare with what arrived
    marker: Callable[[Path], bool]  # is this folder the dataset root?


SOURCES = {
    "esc50": Source("https://github.com/karoldvl/ESC-50/archive/master.zip", 2000,
                    lambda p: (p / "meta" / "esc50.csv").is_file() and (p / "audio").is_dir()),
    "gtzan": Source("https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz", 1000,
                    lambda p: any((p / d / "blues").is_dir() for d in ("genres_original", "genres"))),
    "urbansound8k": Source("https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz", 8732,
                           lambda p: (p / "metadata" / "UrbanSound8K.csv").is_file() and (p / "audio").is_dir()),
    "fsdd": Source("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip", 3000,
                   lambda p: (p / "recordings").is_dir()),
}


def _check_member(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DatasetError(f"{archive}: member {name!r} would be written outside the destination; refusing to unpack")


def extract(archive: Path, into: Path) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into `into`, refusing members that would escape it."""
    into.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DatasetError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to unpack")
            zf.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                _check_member(m.name, archive)
                if m.issym() or m.islnk():
                    _check_member(str(PurePosixPath(m.name).parent / m.linkname), archive)
            tf.extractall(into, filter="data")  # the stdlib's own guard against escapes, on top of ours
    else:
        raise DatasetError(f"{archive}: not a zip or tar archive")


def _download(url: str, to: Path, progress: bool) -> Path:
    from tqdm import tqdm

    target = to / PurePosixPath(url.split("?")[0]).name
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(target, "wb") as out:
            bar = tqdm(total=int(resp.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                       desc=f"download {target.name}", disable=not progress)
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))
            bar.close()
    except OSError as exc:
        raise DatasetError(f"{url}: download failed ({exc}); pass --source with a local archive") from None
    return target


def _find_root(top: Path, marker: Callable[[Path], bool], depth: int = 3) -> Optional[Path]:
    level = [top]
    for _ in range(depth + 1):
        for d in level:
            if marker(d):
                return d
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith("__MACOSX")]
    return None


def fetch(name: str, dest: Path, source: Optional[str] = None, progress: bool = True) -> dict:
    """Put dataset `name` at `dest` (its data.root) and return what was verified there."""
    if name not in SOURCES:
        raise DatasetError(f"unknown dataset {name!r} for fetch (known: {', '.join(SOURCES)})")
    spec = SOURCES[name]
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DatasetError(f"{dest}: already exists and is not empty; choose another --dest")
    staging = dest.parent / f".{dest.name}.fetch-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        src = source or spec.url
        if src.startswith(("http://", "https://")):
            src_path = _download(src, staging, progress)
        else:
            src_path = Path(src)
            if not src_path.exists():
                raise DatasetError(f"{src_path}: --source not found (a URL, an archive or a folder)")
        if src_path.is_dir():
            found = _find_root(src_path, spec.marker)
        else:
            extract(src_path, staging / "unpacked")
            found = _find_root(staging / "unpacked", spec.marker)
        if found is None:
            raise DatasetError(f"{src}: no {name} layout inside (see README: Datasets and features)")
        index = load_index(DataConfig(dataset=name, root=str(found)))  # parses the metadata: the real check
        if dest.exists():
            dest.rmdir()
        if src_path.is_dir():
            shutil.copytree(found, dest)
        else:
            shutil.move(str(found), dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"dataset": name, "root": str(dest), "items": len(index.items), "official_items": spec.items,
            "classes": len(index.classes), "problems": index.problems}
