"""`audiocomp demo`: synthetic data -> prepare -> train -> prune -> quantize -> eval -> bench -> export ->
report (with plots), printing the final table."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import load_config
from ..datasets.synth import generate
from ..report.tables import terminal
from . import bench, evaluate, export, prepare, prune, quantize, report, train

DEMO_CONFIG = "demo.yaml"
PER_CLASS = 40
# Taylor channel pruning of the demo CNN (half the channels), then a short fine-tune
PRUNE = ["prune.method=taylor", "prune.channel_ratio=0.5", "prune.finetune_epochs=3"]
# static INT8 twice: torch (x86/qnnpack) and the portable ONNX Runtime QDQ model
QUANTIZE = {backend: [f"quantize.backend={backend}", "quantize.method=static"] for backend in ("torch", "onnxruntime")}


def demo_config_path() -> Path:
    return Path(str(resources.files("audiocomp.resources") / DEMO_CONFIG))


def run(out: Path, overrides: list[str], per_class: int = PER_CLASS, force: bool = False, progress: bool = True) -> dict:
    """Every run is replaced on each call (the feature store is reused unless `force`)."""
    out = Path(out)
    synth = out / "synth"
    if not (synth / "metadata.csv").is_file():
        print(f"generating synthetic audio in {synth}")
        generate(synth, per_class=per_class, seed=0, progress=progress)

    def config(*extra: str):
        return load_config([demo_config_path()], [f"data.root={synth}", *extra, *overrides])

    cfg = config()
    runs_dir = out / "runs"
    common = dict(force=True, progress=progress)
    prepared = prepare.run(cfg, runs_dir, force=force, progress=progress)
    model_run = train.run(cfg, runs_dir, from_run=prepared.run, name="demo-train", **common)
    evaluate.run(cfg, model_run, runs_dir, name="demo-eval", **common)
    pruned = prune.run(config(*PRUNE), model_run, runs_dir, name="demo-prune", **common)
    evaluate.run(cfg, pruned, runs_dir, name="demo-prune-eval", **common)
    for backend, extra in QUANTIZE.items():
        qrun = quantize.run(config(*extra), model_run, runs_dir, name=f"demo-quantize-{backend}", **common)
        evaluate.run(cfg, qrun, runs_dir, name=f"demo-eval-quantize-{backend}", **common)
    hybrid = quantize.run(config(*QUANTIZE["torch"]), pruned, runs_dir, name="demo-prune-quantize", **common)
    evaluate.run(cfg, hybrid, runs_dir, name="demo-eval-prune-quantize", **common)
    small = cfg.model_copy(update={"bench": cfg.bench.model_copy(update={
        "threads": [1], "batch_sizes": [8], "warmup": 2, "iterations": 10, "runtimes": ["onnxruntime"]})})
    bench.run(small, model_run, runs_dir, name="demo-bench", **common)
    export.run(cfg, model_run, runs_dir, force=True, with_frontend=True, name="demo-export")
    result = report.run(cfg, [runs_dir], out / "report")
    print()
    print(terminal(result["rows"]))
    print(f"\nreport: {result['files'].get('html')} ({len(result['plots'])} plots); "
          f"deployable model: {runs_dir / 'demo-export' / 'deploy'}")
    return result
