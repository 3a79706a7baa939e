"""`synth` (a pipeline stage): the seeded synthetic set (datasets/synth.py), generated into the pipeline's
data folder, `data.root`, when that folder holds no set yet (no metadata.csv), so that a pipeline such as
the demo starts from nothing. A folder that already holds a set is used as it is, as `prepare` would; the
run records which of the two happened and what the folder holds."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import Config, ConfigError
from ..datasets import load_index
from ..datasets.synth import METADATA, generate
from ..runs import Run
from .context import stage_run
from .naming import run_name


def run(cfg: Config, runs_dir: Optional[str | Path] = None, *, name: Optional[str] = None, force: bool = False,
        progress: bool = True) -> Run:
    if cfg.data.dataset != "synth" or not cfg.data.root:
        raise ConfigError(f"synth stage: it writes the 'synth' dataset into data.root (data.dataset is "
                          f"{cfg.data.dataset!r}, data.root {cfg.data.root!r})")
    root, s = Path(cfg.data.root), cfg.synth
    with stage_run("synth", cfg, name or run_name("synth", cfg), runs_dir, force=force) as run:
        generated = not (root / METADATA).is_file()
        if generated:
            print(f"generating synthetic audio in {root}")
            generate(root, per_class=s.per_class, duration=s.duration, seed=s.seed, progress=progress)
        index = load_index(cfg.data)
        run.write_metrics({"root": str(root.resolve()), "generated": generated, "clips": len(index.items),
                           "classes": len(index.classes),
                           "settings": s.model_dump() if generated else "the folder's own (it held a set already)"})
    return run
