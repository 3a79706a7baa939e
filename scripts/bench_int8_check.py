"""How far ONNX Runtime INT8 graphs stray from their float parent, and how far a broken one does: the data
behind the export/bench INT8 check (evaluate/agreement.py). Trains a CNN and an LSTM on FSDD (and a CNN on
synthetic audio), quantizes each with ONNX Runtime dynamic and static INT8, exports every INT8 run (the check
runs on validation/training items, never test) and then a copy whose first weight scale is multiplied by 50.
Writes bench-results/int8_check_<epochs>ep.json and prints a table.

    python scripts/bench_int8_check.py [--fsdd ../shared/data/fsdd] [--out bench-results] [--epochs 6]
                                       [--parts synth-cnn fsdd-cnn fsdd-lstm]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
FSDD = ["data.dataset=fsdd", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
        "features.hop_length=128", "features.n_mels=32", "split.val_fraction=0.1"]
SYNTH = ["data.dataset=synth", "features.sample_rate=16000", "features.duration=1.5", "features.n_fft=512",
         "features.hop_length=256", "features.n_mels=64", "split.val_fraction=0.2"]
MODELS = {"cnn": ["model.name=cnn", "model.kwargs.channels=[16,32,64,64]", "features.normalize=global"],
          "lstm": ["model.name=lstm", "model.kwargs.hidden_size=64", "features.normalize=per_bin"]}
TRAIN = ["train.batch_size=32", "train.lr=0.003", "quantize.calibration_batches=8"]


def break_first_scale(path: Path, factor: float = 50.0) -> str:
    """Multiply the scale of the first quantized weight by `factor`. INT8 graphs are written with compact names,
    so it is found by the graph's structure: the scale of a DequantizeLinear of an INT8 weight (static QDQ), a
    DynamicQuantizeLSTM's weight scale (input 8), or the initializer that a run-time input scale is multiplied
    with after ConvInteger / MatMulInteger (dynamic)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    made_by = {out: n.op_type for n in model.graph.node for out in n.output}

    def weight_scales():
        for node in model.graph.node:
            if node.op_type == "DequantizeLinear":
                w = inits.get(node.input[0])
                if w is not None and w.data_type == onnx.TensorProto.INT8 and len(w.dims) >= 2:
                    yield node.input[1]
            elif node.op_type == "DynamicQuantizeLSTM":
                yield node.input[8]
            elif node.op_type == "Mul" and any(made_by.get(i) == "DynamicQuantizeLinear" for i in node.input):
                yield from (i for i in node.input if i in inits)

    scale = inits[next(weight_scales())]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * factor, scale.name))
    onnx.save(model, str(path))
    return scale.name


def export_check(cfg, run, runs: Path, name: str) -> dict:
    from audiocomp.runs import RunError, read_json
    from audiocomp.stages import export

    try:
        export.run(cfg, run, runs, name=name, force=True)
        passed = True
    except RunError:
        passed = False
    m = read_json(runs / name / "metrics.json")
    return {"passed": passed, **{k: m[k] for k in ("check_items", "top1_agreement", "relative_logit_error",
                                                    "max_abs_diff", "max_abs_logit")}}


def measure(label: str, sets: list[str], runs: Path) -> list[dict]:
    from audiocomp.config import load_config
    from audiocomp.runs import Run, atomic_write_json, read_json
    from audiocomp.stages import quantize, train

    cfg = load_config([], sets)
    model_run = train.run(cfg, runs, name=f"{label}-train", force=True, progress=False)
    print(f"{label}: test accuracy {model_run.metrics()['test_accuracy']:.3f}", flush=True)
    rows = []
    accuracy = model_run.metrics()["test_accuracy"]
    for method in ("dynamic", "static"):
        qcfg = load_config([], [*sets, "quantize.backend=onnxruntime", f"quantize.method={method}"])
        qrun = quantize.run(qcfg, model_run, runs, name=f"{label}-{method}", force=True, allow_degraded=True,
                            progress=False)
        row = {"run": label, "float_test_accuracy": accuracy, "method": method, "int8": export_check(qcfg, qrun, runs, f"{label}-{method}-export")}
        broken = runs / f"{label}-{method}-broken"  # the same run with one weight scale multiplied by 50
        shutil.copytree(qrun.path, broken, dirs_exist_ok=True)
        row["broken_scale"] = break_first_scale(broken / "model" / "model.onnx")
        manifest = read_json(broken / "manifest.json")
        atomic_write_json(broken / "manifest.json", {**manifest, "name": broken.name})
        row["broken"] = export_check(qcfg, Run(broken), runs, f"{label}-{method}-broken-export")
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fsdd", type=Path, default=REPO.parent / "shared" / "data" / "fsdd")
    ap.add_argument("--out", type=Path, default=REPO / "bench-results")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--parts", nargs="+", default=["synth-cnn", "fsdd-cnn", "fsdd-lstm"])
    args = ap.parse_args()
    train = [*TRAIN, f"train.epochs={args.epochs}"]
    from audiocomp.datasets.synth import generate

    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-check-") as tmp:
        runs = Path(tmp) / "runs"
        if "synth-cnn" in args.parts:
            synth = generate(Path(tmp) / "synth", per_class=30, duration=1.5, seed=0, progress=False)
            rows += measure("synth-cnn", [f"data.root={synth}", *SYNTH, *MODELS["cnn"], *train], runs)
        for model in ("cnn", "lstm"):
            if f"fsdd-{model}" in args.parts and (args.fsdd / "recordings").is_dir():
                rows += measure(f"fsdd-{model}", [f"data.root={args.fsdd}", *FSDD, *MODELS[model], *train], runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"int8_check_{args.epochs}ep.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{'run':12s} {'method':8s} {'agree':>6s} {'rel.err':>8s} {'pass':>5s} | broken: {'agree':>6s} "
          f"{'rel.err':>8s} {'pass':>5s}")
    for r in rows:
        a, b = r["int8"], r["broken"]
        print(f"{r['run']:12s} {r['method']:8s} {a['top1_agreement']:6.3f} {a['relative_logit_error']:8.4f} "
              f"{str(a['passed']):>5s} | broken: {b['top1_agreement']:6.3f} {b['relative_logit_error']:8.3f} "
              f"{str(b['passed']):>5s}")


if __name__ == "__main__":
    main()
