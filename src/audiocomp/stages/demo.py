"""`audiocomp demo`: synthetic data -> prepare -> train -> quantize -> eval -> bench -> export -> report (with plots)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import load_config
from ..datasets.synth import generate
from ..report.tables import terminal
from . import bench, evaluate, export, prepare, quantize, report, train

DEMO_CONFIG = "demo.yaml"
PER_CLASS = 40


def demo_config_path() -> Path:
    return Path(str(resources.files("audiocomp.resources") / DEMO_CONFIG))


def run(out: Path, overrides: list[str], per_class: int = PER_CLASS, force: bool = False, progress: bool = True) -> dict:
    """Every run is replaced on each call (the feature store is reused unless `force`)."""
    out = Path(out)
    synth = out / "synth"
    if not (synth / "metadata.csv").is_file():
        print(f"generating synthetic audio in {synth}")
        generate(synth, per_class=per_class, seed=0, progress=progress)
    cfg = load_config([demo_config_path()], [f"data.root={synth}", *overrides])
    runs_dir = out / "runs"
    prepared = prepare.run(cfg, runs_dir, force=force, progress=progress)
    model_run = train.run(cfg, runs_dir, force=True, from_run=prepared.run, progress=progress,
                          name="demo-train")
    evaluate.run(cfg, model_run, runs_dir, force=True, progress=progress, name="demo-eval")
    for backend in ("torch", "onnxruntime"):  # static INT8 twice: torch x86/qnnpack, portable ONNX Runtime QDQ
        qcfg = load_config([demo_config_path()], [f"data.root={synth}", *overrides, f"quantize.backend={backend}",
                                                  "quantize.method=static"])
        qrun = quantize.run(qcfg, model_run, runs_dir, force=True, progress=progress, name=f"demo-quantize-{backend}")
        evaluate.run(qcfg, qrun, runs_dir, force=True, progress=progress, name=f"demo-eval-quantize-{backend}")
    small = cfg.model_copy(update={"bench": cfg.bench.model_copy(update={
        "threads": [1], "batch_sizes": [8], "warmup": 2, "iterations": 10, "runtimes": ["onnxruntime"]})})
    bench.run(small, model_run, runs_dir, force=True, progress=progress, name="demo-bench")
    export.run(cfg, model_run, runs_dir, force=True, with_frontend=True, name="demo-export")
    result = report.run(cfg, [runs_dir], out / "report")
    print()
    print(terminal(result["rows"]))
    print(f"\nreport: {result['files'].get('html')} ({len(result['plots'])} plots); "
          f"deployable model: {runs_dir / 'demo-export' / 'deploy'}")
    return result
