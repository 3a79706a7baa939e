"""Published numbers (data/paper_results.yaml): shown beside ours, always labelled as the studies' own.

Which of our rows reproduces which published row is written down, never guessed: `report.published` maps a
row name (a pipeline's stage id, or a run name) to "<study id>/<row id>", or to null for a row of ours
that has no published counterpart. The paper settings (configs/paper/*/settings.yaml) hold the mappings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from ..config import ConfigError
from .tables import Column

SHIPPED = Path(__file__).resolve().parents[3] / "data" / "paper_results.yaml"


def load_papers(path: Optional[str | Path] = None) -> list[dict]:
    """The studies from `path` (default: the shipped file); [] if the default file is absent."""
    p = Path(path) if path else SHIPPED
    if not p.is_file():
        if path:
            raise FileNotFoundError(f"{p}: published-results file not found")
        return []
    return (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("studies", [])


def published_rows(studies: list[dict]) -> list[dict]:
    """Every published row, with its `ref` ("<study id>/<row id>", what report.published names)."""
    return [{"study": s["id"], "model": s.get("model"), "dataset": s.get("dataset"), **r, "ref": f"{s['id']}/{r['id']}"}
            for s in studies for r in s.get("rows", [])]


def check_mapping(mapping: dict[str, Optional[str]], studies: list[dict]) -> dict[str, dict]:
    """The published row of every mapped name; a ConfigError naming any reference that does not exist."""
    known = {r["ref"]: r for r in published_rows(studies)}
    for name, ref in mapping.items():
        if ref is not None and ref not in known:
            raise ConfigError(f"report.published.{name}: {ref!r} is not a published row (known: {', '.join(known)})")
    return {name: known[ref] for name, ref in mapping.items() if ref is not None}


def describe(row: dict) -> str:
    parts = [f"{row['accuracy']:.1%}"] if row.get("accuracy") is not None else []
    if row.get("size_mb") is not None:
        parts.append(f"{row['size_mb']:g} MB")
    return f"{row['ref']}: " + " / ".join(parts)


def published_for(row: dict, mapped: dict[str, dict]) -> Optional[str]:
    """'<study>/<row>: <their accuracy / size>' for our row, when the mapping names one for it and the row
    was measured on one of the study's datasets (an AudioSet run of the ESC-50 pipeline gets none)."""
    theirs = mapped.get(row["run"])
    if theirs is None or str(row.get("dataset")) not in str(theirs.get("dataset", "")).replace(" ", "").split(","):
        return None
    return describe(theirs)


PUBLISHED_COLUMNS = [Column("study", "Study", "{}"), Column("model", "Model", "{}"), Column("method", "Method", "{}"),
                     Column("accuracy", "Accuracy (theirs)", "{:.1%}"), Column("size_mb", "Size (theirs, MB)", "{:g}"),
                     Column("ref", "Row id (report.published)", "{}")]
