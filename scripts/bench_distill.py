"""Distillation benchmark: does fine-tuning a pruned model against its parent (distill.enabled) beat plain
fine-tuning at the same ratio? Trains the CNN on FSDD (configs/data/fsdd.yaml: takes 0-4 of every speaker
are the test fold) with a short budget, prunes it with Taylor at one channel ratio and fine-tunes twice from
the same pruned weights (same seed, same batches): once plainly, once distilled from the parent. Both
pruned models' epochs are chosen on the validation part; the test part is only reported, as the paired
difference (distilled - plain) on the same test items with its bootstrap interval and McNemar's p.
Writes bench-results/distill-<dataset>.json and prints a markdown table.

    PYTHONPATH=src python scripts/bench_distill.py --data ../shared/data/fsdd
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from audiocomp.config import load_config  # noqa: E402
from audiocomp.evaluate.predictions import Predictions, compare  # noqa: E402
from audiocomp.evaluate.stats import format_difference, format_interval, format_paired  # noqa: E402
from audiocomp.stages import prune, train  # noqa: E402
from audiocomp.stages.context import find_done  # noqa: E402

SETTINGS = ["model.name=cnn", "model.kwargs.channels=[16,32,64,64]", "train.batch_size=32", "train.lr=0.003",
            "train.scheduler=cosine", "bench.iterations=20", "bench.warmup=3", "prune.method=taylor",
            "prune.steps=1", "prune.finetune_lr=0.001"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("AUDIOCOMP_FSDD", REPO.parent / "shared/data/fsdd")))
    ap.add_argument("--work", type=Path, default=REPO / "bench-results" / "distill-work")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--ratio", type=float, default=0.8, help="prune.channel_ratio")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--reuse-parent", action="store_true", help="keep a finished parent run of the same settings")
    args = ap.parse_args()
    runs = args.work / "runs"
    common = [f"data.root={args.data}", *SETTINGS, f"train.epochs={args.epochs}", f"prune.channel_ratio={args.ratio}",
              f"prune.finetune_epochs={args.finetune_epochs}"]
    cfg = load_config([REPO / "configs/data/fsdd.yaml"], common)
    t0 = time.time()
    parent = find_done("parent", runs) if args.reuse_parent else None
    trained_on = ("seed", "data", "features", "split", "model", "train")  # what the parent's training read
    if parent is None or any(parent.config_dict().get(k) != cfg.to_dict()[k] for k in trained_on):
        parent = train.run(cfg, runs, name="parent", progress=False, force=True)
        print(f"parent trained in {time.time() - t0:.0f} s", flush=True)
    results = {}
    for label, extra in (("plain", []), ("distilled", ["distill.enabled=true", f"distill.alpha={args.alpha}",
                                                       f"distill.temperature={args.temperature}"])):
        t0 = time.time()
        run = prune.run(load_config([REPO / "configs/data/fsdd.yaml"], common + extra), parent, runs,
                        name=f"{label}-{args.ratio:g}-{args.finetune_epochs}" + (
                            f"-a{args.alpha:g}-t{args.temperature:g}" if extra else ""),
                        force=True, progress=False)
        results[label] = run
        print(f"{label} pruned + fine-tuned in {time.time() - t0:.0f} s", flush=True)
    out = {"settings": common, "alpha": args.alpha, "temperature": args.temperature, "rows": {}, "paired": {}}
    for label, run in results.items():
        m = run.metrics()
        out["rows"][label] = {k: m["after"].get(k) for k in ("val_accuracy", "test_accuracy", "test_accuracy_ci",
                                                              "val_accuracy_ci", "parameters", "macs")}
        out["rows"][label]["parent_test_accuracy"] = m["before"]["test_accuracy"]
    for part in ("val", "test"):
        plain, kd = (Predictions.load(results[k].path / f"predictions-{part}.npz") for k in ("plain", "distilled"))
        out["paired"][part] = compare(plain, kd)
    dest = REPO / "bench-results" / f"distill-fsdd-{args.ratio:g}-{args.finetune_epochs}-a{args.alpha:g}-t{args.temperature:g}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2, default=str))
    p = out["rows"]["plain"]
    print(f"\nparent test accuracy {p['parent_test_accuracy']:.3f}; Taylor {args.ratio:.0%} of channels removed, "
          f"{args.finetune_epochs} fine-tune epochs, {p['parameters']:,} parameters, {p['macs']:,} MACs\n")
    print("| Fine-tuning | Val accuracy [95% CI] | Test accuracy [95% CI] |\n|---|---|---|")
    for label, r in out["rows"].items():
        print(f"| {label} | {format_interval(r['val_accuracy_ci'])} | {format_interval(r['test_accuracy_ci'])} |")
    for part in ("val", "test"):
        print(f"\ndistilled - plain, {part}: {format_difference(out['paired'][part])}; "
              f"{format_paired(out['paired'][part])}")
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
