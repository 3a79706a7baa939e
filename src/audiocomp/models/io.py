"""Save and load model artifacts: `arch.json` (ModelSpec) + `model.pt` (tensors only).

A compressed model whose format this package does not define (a quantized one: torch INT8 tensors, an ONNX
Runtime graph) is rebuilt by the loader its producer registers in LOADERS, keyed by the `stage` of its last
compression step; `audiocomp.compress` registers the quantized loader when it is imported (every stage
imports it; `audiocomp.load_model` is the one-line way to load any model from a script)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..registry import Registry
from ..runs import atomic_path, atomic_write_json
from .base import AudioClassifier, ModelSpec, build_model


class ModelLoadError(ValueError):
    """A model file that cannot be loaded safely; the message names the file."""


# compression step kind ("quantize") -> rebuild(spec, folder) -> module taking float32 features, giving logits
LOADERS: Registry[Callable[[ModelSpec, Path], nn.Module]] = Registry("model loader")


def safe_torch_load(path: Path | str) -> dict:
    """torch.load restricted to tensors and plain containers: a pickle that would run code is refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: not found") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: refused to load (not a plain tensor file: {first[:200]})") from None


def atomic_torch_save(obj, path: Path | str) -> None:
    # through a file object: torch then names the archive inside "archive", not after the random temp
    # file, so the same tensors give the same bytes (and the same zipped size) in every run
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def save_model(model: nn.Module, spec: ModelSpec, folder: Path | str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "model.pt")
    atomic_write_json(folder / "arch.json", spec.to_dict())
    return folder / "model.pt"


def load_spec(folder: Path | str) -> ModelSpec:
    path = Path(folder) / "arch.json"
    try:
        return ModelSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: not found (not a model folder?)") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelLoadError(f"{path}: not a valid model spec ({exc})") from None


def artifact_path(folder: Path | str, spec: ModelSpec | None = None) -> Path:
    """The file that holds a model folder's weights (model.pt, or e.g. model.onnx after quantization)."""
    spec = spec or load_spec(folder)
    return Path(folder) / (spec.compression[-1].get("artifact", "model.pt") if spec.compression else "model.pt")


def load_model(folder: Path | str) -> tuple[AudioClassifier, ModelSpec]:
    """Rebuild a model in a fresh process. Quantized models (any format, ONNX included) come back as a
    module that takes float32 features and returns logits like the float one."""
    folder = Path(folder)
    spec = load_spec(folder)
    step = spec.compression[-1] if spec.compression else {}
    if step.get("stage") in LOADERS:  # its producer defines the artifact format, so it also rebuilds it
        return LOADERS.get(step["stage"])(spec, folder), spec
    if spec.format != "fp32":  # float models (pruned ones too) load below; this one cannot
        raise ModelLoadError(f"{folder / 'arch.json'}: a {spec.format} model, and no loader for it is "
                             "registered (load it with audiocomp.load_model, or import audiocomp.compress first)")
    model = build_model(spec)
    state = safe_torch_load(folder / "model.pt")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"{folder / 'model.pt'}: does not match {folder / 'arch.json'} ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, spec


def _fit_tensor(src: torch.Tensor, own: torch.Tensor) -> torch.Tensor | None:
    """`src` as it fits `own`: unchanged, or an RGB conv kernel summed for a stem adapted to fewer channels."""
    if src.shape == own.shape:
        return src
    if src.dim() == 4 and src.shape[1] == 3 and src.shape[0] == own.shape[0] and src.shape[2:] == own.shape[2:]:
        c = own.shape[1]
        return src.sum(dim=1, keepdim=True).repeat(1, c, 1, 1) / c  # same response to a replicated mono input
    return None


def load_pretrained(backbone: nn.Module, path: Path | str) -> list[str]:
    """Load a local torchvision checkpoint (a state dict, or {"state_dict": ...}) into `backbone`. A stem
    adapted to mono gets the RGB kernel summed; tensors whose shape differs (the new classifier head) are
    skipped. Returns the names that were not loaded; a file that matches nothing is an error."""
    state = safe_torch_load(path)
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    own = backbone.state_dict()
    usable = {}
    for k, v in state.items():
        fitted = _fit_tensor(v, own[k]) if k in own and isinstance(v, torch.Tensor) else None
        if fitted is not None:
            usable[k] = fitted
    if not usable:
        raise ModelLoadError(f"{path}: no tensor matches this model (model.weights must be a torchvision "
                             f"checkpoint of the same architecture)")
    backbone.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
