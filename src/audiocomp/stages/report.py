"""`audiocomp report`: aggregate run directories into markdown and CSV tables."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import Config
from ..report.tables import discover, markdown, model_rows, to_csv
from ..runs import atomic_write_text


def run(cfg: Config, sources: list[str | Path], out: Path) -> dict:
    runs = discover(sources)
    rows = model_rows(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {cfg.report.title}", "", f"{len(rows)} model runs from {len(runs)} run directories.", "",
             markdown(rows)]
    for r in runs:
        if r.stage == "eval" and (r.path / "confusion.png").exists():
            lines.append(f"![confusion matrix of {r.name}]({Path(r.path / 'confusion.png').resolve()})\n")
        if r.stage == "train" and (r.path / "curves.png").exists():
            lines.append(f"![training curves of {r.name}]({Path(r.path / 'curves.png').resolve()})\n")
    written = {}
    if "md" in cfg.report.formats:
        atomic_write_text(out / "report.md", "\n".join(lines))
        written["markdown"] = str(out / "report.md")
    if "csv" in cfg.report.formats:
        atomic_write_text(out / "report.csv", to_csv(rows))
        written["csv"] = str(out / "report.csv")
    return {"rows": rows, "files": written}
