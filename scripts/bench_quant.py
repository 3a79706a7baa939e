"""Quantization benchmark: every method on a CNN trained on FSDD and on synthetic audio, an LSTM on FSDD,
and ResNet-152 at 299x299 (random weights: sizes and latency only). Writes bench-results/quant.json and
prints a table. Every number is measured here; latency is batch 1, one CPU thread, median. Early stopping
and the quantize guard use the validation part (10% of the training part, drawn like the test part); the
JSON rows carry validation accuracies (val_acc) beside the test ones, for comparing methods without the
test items.

    python scripts/bench_quant.py [--fsdd ../shared/data/fsdd] [--out bench-results] [--parts fsdd-cnn ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]

CNN = ["features.normalize=global", "model.name=cnn", "model.kwargs.channels=[16,32,64,64]", "train.epochs=8", "train.batch_size=32",
       "train.lr=0.003", "train.early_stopping=4", "quantize.calibration_batches=8", "quantize.latency_runs=100"]
DATA = {
    "fsdd": ["data.dataset=fsdd", "features.sample_rate=8000", "features.duration=1.0", "features.n_fft=256",
             "features.hop_length=128", "features.n_mels=32"],
    "synth": ["data.dataset=synth", "features.sample_rate=16000", "features.duration=1.5", "features.n_fft=512",
              "features.hop_length=256", "features.n_mels=64"],
}
METHODS = [("torch", "static"), ("onnxruntime", "static"), ("torch", "dynamic"), ("torch", "fp16"),
           ("onnxruntime", "dynamic")]


def _row(dataset: str, m: dict) -> dict:
    lat = m["latency_batch1_1thread"]
    return {"dataset": dataset, "model": m["model"], "format": m["format"], "engine": m["engine"],
            "float_val_acc": m.get("float_val_accuracy"), "val_acc": m.get("val_accuracy"), "guard": m.get("guard"),
            "float_acc": m.get("float_test_accuracy"), "acc": m.get("test_accuracy"), "drop": m.get("accuracy_drop"),
            "float_mb": m["float_file_bytes"] / 1e6, "mb": m["file_bytes"] / 1e6, "size_ratio": m["size_ratio"],
            "covered": m["covered_share"], "float_ms": lat["float_eager_ms"], "ms": lat["quantized_ms"],
            "speedup": lat["speedup_vs_float_eager"], "float_onnx_ms": lat.get("float_onnx_ms"),
            "sqnr_out_db": m["sqnr_db"].get("output")}


def pipeline(dataset: str, root: Path, runs: Path, model_sets: list[str], methods) -> list[dict]:
    from audiocomp.config import load_config
    from audiocomp.stages import quantize, train

    sets = [f"data.root={root}", *DATA[dataset], *model_sets]
    cfg = load_config([], sets)
    t0 = time.time()
    model_run = train.run(cfg, runs, name=f"bench-{dataset}-{cfg.model.name}", force=True, progress=False)
    print(f"trained {cfg.model.name} on {dataset} in {time.time() - t0:.0f} s: "
          f"test accuracy {model_run.metrics()['test_accuracy']:.3f}", flush=True)
    rows = []
    for backend, method in methods:
        qcfg = load_config([], [*sets, f"quantize.backend={backend}", f"quantize.method={method}"])
        run = quantize.run(qcfg, model_run, runs, force=True, allow_degraded=True, progress=False,
                           name=f"bench-{dataset}-{cfg.model.name}-{backend}-{method}")
        rows.append(_row(dataset, run.metrics()))
        print(_fmt(rows[-1]), flush=True)
    return rows


def resnet152(workdir: Path, runs: int = 5) -> list[dict]:
    """Random-weight ResNet-152 at 299x299 (sizes and latency are what matter; accuracy is not measured)."""
    from audiocomp.compress import quantization as q
    from audiocomp.config import QuantizeConfig
    from audiocomp.models import ModelSpec, build_model, save_model
    from audiocomp.evaluate.latency import batch1_latency_ms

    spec = ModelSpec("resnet152", 10, [1, 128, 130], input_size=[299, 299], in_channels=3)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    float_file = save_model(model, spec, workdir / "float")
    float_ms = batch1_latency_ms(model, spec.feature_shape, runs, warmup=1)
    calib = [(torch.randn(2, *spec.feature_shape), torch.zeros(2, dtype=torch.long)) for _ in range(2)]
    rows = []
    for method in ("dynamic", "fp16", "static"):
        folder = workdir / method
        qmodel, step, report = q.quantize(model, spec, calib, QuantizeConfig(method=method), folder)
        mb = (folder / step["artifact"]).stat().st_size / 1e6
        ms = batch1_latency_ms(qmodel, spec.feature_shape, runs, warmup=1)
        cover = q.coverage(model, qmodel, step, report)
        rows.append({"dataset": "random weights", "model": "resnet152@299", "format": step["format"],
                     "engine": step["engine"], "float_mb": float_file.stat().st_size / 1e6, "mb": mb,
                     "size_ratio": round(mb * 1e6 / float_file.stat().st_size, 4), "covered": cover["covered_share"],
                     "float_ms": float_ms, "ms": ms, "speedup": round(float_ms / ms, 3)})
        print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(r: dict) -> str:
    acc = f"{r['float_acc']:.3f} -> {r['acc']:.3f}" if r.get("acc") is not None else "-"
    onnx = f" (float ONNX {r['float_onnx_ms']:.2f})" if r.get("float_onnx_ms") else ""
    return (f"| {r['dataset']} | {r['model']} | {r['format']} | {r['engine']} | {acc} | {r['float_mb']:.2f} -> "
            f"{r['mb']:.2f} ({r['size_ratio']:.2f}x) | {r['covered']:.0%} | {r['float_ms']:.2f} -> {r['ms']:.2f}{onnx} "
            f"({r['speedup']:.2f}x) |")


HEADER = ("| data | model | format | engine | test acc (float -> quant) | MB (ratio) | params quantized | "
          "batch-1 1-thread ms, float eager -> quant (speedup) |\n|---|---|---|---|---|---|---|---|")


PARTS = ["fsdd-cnn", "fsdd-lstm", "synth", "resnet152"]


def _tag(part: str, rows: list[dict]) -> list[dict]:
    return [{"part": part, **r} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=Path(os.environ.get("AUDIOCOMP_FSDD", REPO.parent / "shared" / "data" / "fsdd")))
    ap.add_argument("--synth", type=Path, default=None, help="synthetic set folder [default: generate one]")
    ap.add_argument("--out", type=Path, default=REPO / "bench-results")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS,
                    help="what to run; rows of other parts already in quant.json are kept")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        work = Path(tmp)
        runs = work / "runs"
        print(HEADER, flush=True)
        fsdd_found = (args.fsdd / "recordings").is_dir()
        if not fsdd_found and {"fsdd-cnn", "fsdd-lstm"} & set(args.parts):
            print(f"FSDD not found at {args.fsdd} (--fsdd or AUDIOCOMP_FSDD): skipped", flush=True)
        if fsdd_found and "fsdd-cnn" in args.parts:
            rows += _tag("fsdd-cnn", pipeline("fsdd", args.fsdd, runs, CNN, METHODS))
        if fsdd_found and "fsdd-lstm" in args.parts:
            lstm = ["model.name=lstm", "model.kwargs.hidden_size=64", "model.kwargs.num_layers=1", "train.epochs=6",
                    "train.lr=0.003", "quantize.latency_runs=100"]
            rows += _tag("fsdd-lstm", pipeline("fsdd", args.fsdd, runs, lstm,
                                               [("torch", "dynamic"), ("onnxruntime", "dynamic")]))
        if "synth" in args.parts:
            synth = args.synth
            if synth is None:
                from audiocomp.datasets.synth import generate

                synth = generate(work / "synth", per_class=40, seed=0, progress=False)
            rows += _tag("synth", pipeline("synth", synth, runs, CNN, METHODS[:2]))
        if "resnet152" in args.parts:
            rows += _tag("resnet152", resnet152(work / "resnet152"))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "quant.json"
    kept = [r for r in json.loads(out.read_text())["rows"] if r.get("part") not in args.parts] if out.exists() else []
    result = {"machine": platform.machine(), "processor": platform.processor(), "torch": torch.__version__,
              "engine": torch.backends.quantized.engine, "rows": kept + rows}
    out.write_text(json.dumps(result, indent=2))
    print("\n" + HEADER + "\n" + "\n".join(_fmt(r) for r in result["rows"]))
    print(f"\nwrote {args.out / 'quant.json'}")


if __name__ == "__main__":
    main()
