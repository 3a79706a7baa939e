"""Published numbers (data/paper_results.yaml): shown beside ours, always labelled as the studies' own."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

SHIPPED = Path(__file__).resolve().parents[3] / "data" / "paper_results.yaml"

# our compression method -> words that name the matching row of a study
METHOD_WORDS = {"none": ("baseline", "cnn"), "dynamic": ("dynamic",), "fp16": ("fp16",), "static": ("static",),
                "magnitude": ("pruned",), "taylor": ("pruned",), "hybrid": ("hybrid",)}


def load_papers(path: Optional[str | Path] = None) -> list[dict]:
    """The studies from `path` (default: the shipped file); [] if the default file is absent."""
    p = Path(path) if path else SHIPPED
    if not p.is_file():
        if path:
            raise FileNotFoundError(f"{p}: published-results file not found")
        return []
    return (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("studies", [])


def _describe(row: dict) -> str:
    parts = [f"{row['accuracy']:.1%}"] if row.get("accuracy") is not None else []
    if row.get("size_mb") is not None:
        parts.append(f"{row['size_mb']:g} MB")
    return " / ".join(parts)


def match(row: dict, studies: list[dict]) -> Optional[str]:
    """'<study id>: <their accuracy / size>' for the study row with our model, dataset and method."""
    words = METHOD_WORDS.get(str(row.get("method") or "none").split()[0].lower(), ())
    for study in studies:
        if study.get("model") != row.get("model") or str(row.get("dataset")) not in str(study.get("dataset", "")):
            continue
        for theirs in study.get("rows", []):
            if any(w in theirs["method"].lower() for w in words):
                return f"{study['id']}: {_describe(theirs)}"
    return None


PUBLISHED_COLUMNS = [("study", "Study", "{}"), ("model", "Model", "{}"), ("method", "Method", "{}"),
                     ("accuracy", "Accuracy (theirs)", "{:.1%}"), ("size_mb", "Size (theirs, MB)", "{:g}")]


def published_rows(studies: list[dict]) -> list[dict]:
    return [{"study": s["id"], "model": s.get("model"), **r} for s in studies for r in s.get("rows", [])]
