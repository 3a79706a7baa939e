"""Self-distillation probe: fine-tune a model run's model as its own student (a copy of the teacher) for one
epoch with the distillation loss, and print the validation accuracy before and after. A correct loss with
alpha=1 has nothing to teach a student equal to its teacher; what moves it is the difference between the
student in training mode (dropout, BatchNorm batch statistics) and the teacher in eval mode, which
--no-dropout and --freeze-bn switch off one at a time. Chooses nothing; reads the validation part only.

    PYTHONPATH=src python scripts/probe_distill.py bench-results/distill-work/runs/parent --alpha 1 --temperature 4
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from audiocomp.config import DistillConfig, load_config  # noqa: E402
from audiocomp.features.prepared import prepared_of, split_batches  # noqa: E402
from audiocomp.models import load_model  # noqa: E402
from audiocomp.runs import Run  # noqa: E402
from audiocomp.train.loop import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a model run (its model/ is teacher and student)")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--no-dropout", action="store_true", help="student dropout p=0")
    ap.add_argument("--freeze-bn", action="store_true", help="student BatchNorm kept in eval mode")
    ap.add_argument("--seed", type=int, default=0, help="dropout draws")
    args = ap.parse_args()
    run = Run(args.run)
    data = prepared_of(run)
    teacher, spec = load_model(run.path / "model")
    student, _ = load_model(run.path / "model")
    for m in student.modules():
        if args.no_dropout and isinstance(m, nn.Dropout):
            m.p = 0.0
        if args.freeze_bn and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = lambda mode=True, m=m: nn.Module.train(m, False)  # stays in eval mode
    cfg = load_config([], []).train.model_copy(update={"epochs": 1, "lr": args.lr, "batch_size": 32,
                                                       "precision": "fp32"})
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(student, split_batches(data, "train", 32, shuffle=True, seed=0), split_batches(data, "val", 64),
                     cfg, spec.num_classes, spec.multilabel, Path(tmp), log=lambda r: None,
                     device=torch.device("cpu"), progress=False, teacher=teacher,
                     distill=DistillConfig(enabled=True, alpha=args.alpha, temperature=args.temperature))
    before = run.metrics().get("val_accuracy")
    print(f"seed={args.seed} alpha={args.alpha:g} T={args.temperature:g} no_dropout={args.no_dropout} freeze_bn={args.freeze_bn}: "
          f"val accuracy {before:.3f} -> {result.history[-1]['val_accuracy']:.3f} after 1 epoch")


if __name__ == "__main__":
    main()
