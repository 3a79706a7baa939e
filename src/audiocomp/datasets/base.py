"""Dataset adapters turn an official on-disk layout into a list of items (DESIGN.md: Item)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
        d = asdict(self)
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


def load_index(cfg: DataConfig) -> DatasetIndex:
    try:
        adapter = ADAPTERS.get(cfg.dataset)
    except KeyError as exc:
        raise DatasetError(f"data.dataset: {exc.args[0]}") from None
    index = adapter(cfg)
    if not index.items:
        raise DatasetError(f"{index.root}: no audio items found for dataset '{cfg.dataset}'")
    return index
