"""Model registry and the wrapper that carries each model's declared input transform.

A model run stores `arch.json` (name, kwargs, classes, input spec) and a tensors-only state dict; the
model is rebuilt from the spec and loaded with weights_only=True, never unpickled (DESIGN.md).
The wrapper holds the normalisation statistics and the resize/channel replication, so eval, export,
quantization calibration and predict all see exactly the transform that training saw.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry


@dataclass
class ModelInfo:
    builder: Callable[..., nn.Module]
    input_kind: str  # "spectrogram" ((B, 1, F, T) in) or "waveform" ((B, S) in)
    default_channels: int = 1
    summary: str = ""
    default_input_size: Optional[tuple[int, int]] = None  # spectrograms resized to this unless model.input_size


MODELS: Registry[ModelInfo] = Registry("model")


def register(name: str, input_kind: str, default_channels: int = 1, summary: str = "",
             default_input_size: Optional[tuple[int, int]] = None):
    def deco(fn):
        MODELS.register(name)(ModelInfo(fn, input_kind, default_channels, summary, default_input_size))
        return fn
    return deco


class AudioClassifier(nn.Module):
    """normalise -> resize -> replicate channels -> backbone. Input (B, 1, F, T) or (B, S)."""

    def __init__(self, backbone: nn.Module, feature_shape: tuple[int, ...], norm_mode: str = "none",
                 input_size: Optional[tuple[int, int]] = None, in_channels: int = 1):
        super().__init__()
        self.backbone = backbone
        self.input_size = tuple(input_size) if input_size else None
        self.in_channels = in_channels
        stat_shape = (1, 1, feature_shape[1], 1) if norm_mode == "per_bin" and len(feature_shape) == 3 else (1,)
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    def set_norm(self, stats: Optional[dict]) -> None:
        if stats:
            self.mean.copy_(torch.tensor(stats["mean"], dtype=torch.float32).reshape(self.mean.shape))
            self.std.copy_(torch.tensor(stats["std"], dtype=torch.float32).reshape(self.std.shape))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        # stored spectrograms are (B, 1, F, T): decide on the declared transform alone, never on traced shapes
        if x.dim() == 4:
            if self.input_size:  # bilinear to the same size is the identity, so no size check is needed
                x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
            if self.in_channels > 1:
                x = x.expand(-1, self.in_channels, -1, -1)  # (B, C, H, W), replicated mono
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x))


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model in a fresh process (saved as model/arch.json)."""
    name: str
    num_classes: int
    feature_shape: list[int]  # one item's stored features: [1, F, T] or [S]
    kwargs: dict[str, Any] = field(default_factory=dict)
    norm_mode: str = "none"
    input_size: Optional[list[int]] = None
    in_channels: Optional[int] = None
    multilabel: bool = False
    classes: list[str] = field(default_factory=list)
    compression: list[dict] = field(default_factory=list)  # recipe steps (pruning, quantization)
    shapes: Optional[dict[str, list[int]]] = None  # parameter shapes after structural pruning

    @property
    def format(self) -> str:
        """The number format of the saved model: its last compression step's (int8, fp16, ...), else fp32."""
        return self.compression[-1].get("format", "fp32") if self.compression else "fp32"

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**d)


def build_model(spec: ModelSpec) -> AudioClassifier:
    info = MODELS.get(spec.name)
    fshape = tuple(spec.feature_shape)
    if info.input_kind == "spectrogram" and len(fshape) != 3:
        raise ValueError(f"model '{spec.name}' needs spectrogram features (features.kind logmel or mfcc)")
    if info.input_kind == "waveform" and len(fshape) != 1:
        raise ValueError(f"model '{spec.name}' needs raw audio (features.kind: waveform)")
    channels = spec.in_channels or info.default_channels
    if len(fshape) == 3:
        h, w = spec.input_size or fshape[1:]
        input_shape = (channels, h, w)
    else:
        input_shape = fshape
    backbone = info.builder(num_classes=spec.num_classes, input_shape=input_shape, **spec.kwargs)
    model = AudioClassifier(backbone, fshape, spec.norm_mode, spec.input_size, channels)
    if spec.shapes:
        from .reshape import reshape_to

        reshape_to(model, spec.shapes)
    return model
