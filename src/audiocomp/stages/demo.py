"""`audiocomp demo`: synthetic data -> prepare -> train -> eval -> prune -> eval -> report, printing the final table."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import load_config
from ..datasets.synth import generate
from ..report.tables import terminal
from . import evaluate, prepare, prune, report, train

DEMO_CONFIG = "demo.yaml"
PER_CLASS = 40
# Taylor channel pruning of the demo CNN (half the channels), then a short fine-tune
PRUNE = ["prune.method=taylor", "prune.channel_ratio=0.5", "prune.finetune_epochs=3"]


def demo_config_path() -> Path:
    return Path(str(resources.files("audiocomp.resources") / DEMO_CONFIG))


def run(out: Path, overrides: list[str], force: bool = False, progress: bool = True) -> dict:
    """Every run is replaced on each call (the feature store is reused unless `force`)."""
    out = Path(out)
    synth = out / "synth"
    if not (synth / "metadata.csv").is_file():
        print(f"generating synthetic audio in {synth}")
        generate(synth, per_class=PER_CLASS, seed=0, progress=progress)
    cfg = load_config([demo_config_path()], [f"data.root={synth}", *overrides])
    runs_dir = out / "runs"
    prepared = prepare.run(cfg, runs_dir, force=force, progress=progress)
    model_run = train.run(cfg, runs_dir, force=True, from_run=prepared.run, progress=progress,
                          name="demo-train")
    evaluate.run(cfg, model_run, runs_dir, force=True, progress=progress, name="demo-eval")
    prune_cfg = load_config([demo_config_path()], [f"data.root={synth}", *PRUNE, *overrides])
    pruned = prune.run(prune_cfg, model_run, runs_dir, force=True, progress=progress, name="demo-prune")
    evaluate.run(cfg, pruned, runs_dir, force=True, progress=progress, name="demo-prune-eval")
    result = report.run(cfg, [runs_dir], out / "report")
    print()
    print(terminal(result["rows"]))
    print(f"\nreport: {result['files'].get('markdown')}")
    return result
