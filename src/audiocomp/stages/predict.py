"""`audiocomp predict`: top-k labels for audio files, from an exported folder (torch-free, via
deploy.predict_onnx) or from a model run (torch: the run's features config + load_model)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def resolve(target: Path) -> tuple[str, Path]:
    """("onnx", deploy folder) for an exported folder or export run; ("run", run dir) for a model run."""
    target = Path(target)
    for folder in (target, target / "deploy"):
        if (folder / "preprocessing.json").is_file():
            return "onnx", folder
    if (target / "model" / "arch.json").is_file():
        return "run", target
    raise FileNotFoundError(f"{target}: neither an exported folder (preprocessing.json) nor a model run (model/)")


class TorchClassifier:
    """The same interface as OnnxClassifier (sample_rate, samples, labels, scores) for a model run."""

    def __init__(self, run_dir: Path):
        import torch

        from ..features.extract import FeatureExtractor
        from .. import load_model  # any model folder, quantized ones included
        from ..runs import Run

        cfg = Run(run_dir).config()
        self.model, spec = load_model(Path(run_dir) / "model")
        self.extract = FeatureExtractor(cfg.features)
        self.labels, self.multilabel = spec.classes, spec.multilabel
        self.sample_rate = cfg.features.sample_rate
        self.samples = int(round(cfg.features.duration * self.sample_rate))
        self._torch = torch

    def scores(self, batch: np.ndarray) -> np.ndarray:
        from ..deploy.predict_onnx import to_probabilities

        x = self._torch.from_numpy(np.stack([self.extract(w) for w in batch]))
        with self._torch.no_grad():
            logits = self.model(x).numpy().astype(np.float64)
        return to_probabilities(logits, self.multilabel)


def classifier(target: Path, threads: int = 0):
    kind, folder = resolve(target)
    if kind == "onnx":
        from ..deploy.predict_onnx import OnnxClassifier

        return OnnxClassifier(folder, threads)
    return TorchClassifier(folder)
