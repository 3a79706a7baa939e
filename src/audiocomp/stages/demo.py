"""`audiocomp demo`: the packaged demo pipeline (resources/demo.yaml, the same file as configs/demo.yaml) run
through the pipeline runner: synthetic data -> prepare -> train -> prune -> quantize -> eval and bench of
every model -> export -> report (with plots); prints the final table."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

from ..report.tables import terminal
from . import pipeline

PIPELINE = "demo.yaml"
PER_CLASS = 40  # synthetic clips per class, when the data is generated


def demo_pipeline_path() -> Path:
    return Path(str(resources.files("audiocomp.resources") / PIPELINE))


def run(out: Path, overrides: list[str], per_class: Optional[int] = None, force: bool = False,
        progress: bool = True) -> dict:
    """Run (or reuse: finished runs are found again by name) the demo in `out`: the synthetic data in
    `out/synth`, the runs in `out/runs`, the report in `out/report`. `force` recomputes every stage.
    Returns the report (rows, files, plots) and the pipeline summary."""
    out = Path(out)
    sets = [f"data.root={out / 'synth'}", f"synth.per_class={per_class or PER_CLASS}", *overrides]
    summary = pipeline.run(demo_pipeline_path(), sets, out / "runs", out, force=force, progress=progress,
                           quiet=not progress)
    result = summary["reports"]["report"]
    export = next(s["run"] for s in summary["stages"] if s["id"] == "demo-export")
    print()
    print(terminal(result["rows"]))
    print(f"\nreport: {result['files'].get('html')} ({len(result['plots'])} plots); "
          f"deployable model: {out / 'runs' / export / 'deploy'}")
    return {**result, "pipeline": summary}
