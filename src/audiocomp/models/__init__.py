"""Registered model builders. Importing this package registers them all."""
from . import cnn, lstm, vision  # noqa: F401  (registration side effects)
from .base import MODELS, AudioClassifier, ModelSpec, build_model
from .io import load_model, save_model

__all__ = ["MODELS", "AudioClassifier", "ModelSpec", "build_model", "load_model", "save_model"]
