"""Dataset adapters turn an official on-disk layout into a list of items (DESIGN.md: Item)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional, Union

from ..config import DataConfig
from ..registry import Registry

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"}

Target = Union[int, tuple[int, ...]]  # class index, or a set of indices for multi-label data


class DatasetError(ValueError):
    """A problem with a dataset's files or metadata; the message names the file."""


@dataclass(frozen=True)
class Item:
    path: str  # relative to the dataset root
    target: Target
    fold: Optional[int] = None  # official fold, when the dataset has them
    group: Optional[str] = None  # items of one group never go to two splits (speaker, source clip)
    start_s: float = 0.0
    end_s: Optional[float] = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict(): its deep copy is slow
        if isinstance(self.target, tuple):
            d["target"] = list(self.target)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Item":
        t = d["target"]
        return cls(**{**d, "target": tuple(t) if isinstance(t, list) else t})


@dataclass
class DatasetIndex:
    root: Path
    items: list[Item]
    classes: list[str]
    multilabel: bool = False
    problems: list[str] = field(default_factory=list)  # skipped rows / missing files, for the report

    def abspath(self, item: Item) -> Path:
        return self.root / item.path


ADAPTERS: Registry[Callable[[DataConfig], DatasetIndex]] = Registry("dataset")


def require_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DatasetError(f"data.root is required for dataset '{cfg.dataset}'")
    root = Path(cfg.root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found (data.root)")
    return root


def safe_relpath(root: Path, rel: str, source: str) -> str:
    """Reject metadata paths that are absolute or escape the dataset root (e.g. '../../etc/passwd')."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise DatasetError(f"{source}: path {rel!r} leaves the dataset root {root}")
    resolved = (root / p).resolve()
    if root.resolve() not in resolved.parents and resolved != root.resolve():
        raise DatasetError(f"{source}: path {rel!r} leaves the dataset root {root} (through a link)")
    return p.as_posix()


def read_csv(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """Rows of a metadata CSV as (line number, {column: value}); names the file when it is unusable."""
    if not path.is_file():
        raise DatasetError(f"{path}: metadata file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            rows = [(reader.line_num, row) for row in reader]  # line_num: the row's (last) line in the file
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    except (OSError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read metadata ({exc})") from None
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(reader.fieldnames or [])})")
    return rows


def as_int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatasetError(f"{path}, row {line}: {column} {value!r} is not an integer") from None


def existing(root: Path, rel: str, source: str, problems: list[str]) -> Optional[str]:
    """`rel` checked to stay inside `root`; None (and a problem noted) when the file is not there."""
    rel = safe_relpath(root, rel, source)
    if not (root / rel).is_file():
        problems.append(f"{root / rel}: listed in {source} but missing, skipped")
        return None
    return rel


def load_index(cfg: DataConfig) -> DatasetIndex:
    try:
        adapter = ADAPTERS.get(cfg.dataset)
    except KeyError as exc:
        raise DatasetError(f"data.dataset: {exc.args[0]}") from None
    index = adapter(cfg)
    if not index.items:
        raise DatasetError(f"{index.root}: no audio items found for dataset '{cfg.dataset}'")
    return index
