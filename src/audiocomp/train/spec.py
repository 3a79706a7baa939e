"""The model a training run builds: the registered model of `model:` sized to the prepared data."""
from __future__ import annotations

from ..config import Config, ConfigError
from ..models import MODELS, ModelSpec


def model_info(cfg: Config):
    """The registry entry of `model.name` (ConfigError naming the key when unknown)."""
    try:
        return MODELS.get(cfg.model.name)
    except KeyError as exc:
        raise ConfigError(f"model.name: {exc.args[0]}") from None


def model_spec(cfg: Config, prepared, split_index: int = 0) -> ModelSpec:
    """`model:` sized to the prepared data: its classes, its feature shape and split `split_index`'s
    normalisation statistics."""
    store = prepared.store
    norm = prepared.split(split_index).get("norm")
    input_size = cfg.model.input_size or model_info(cfg).default_input_size
    return ModelSpec(name=cfg.model.name, num_classes=len(store.classes), feature_shape=list(store.features.shape[1:]),
                     kwargs=dict(cfg.model.kwargs), norm_mode=norm["mode"] if norm else "none",
                     input_size=list(input_size) if input_size else None,
                     in_channels=cfg.model.in_channels, multilabel=store.multilabel, classes=list(store.classes))
