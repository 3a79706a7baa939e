"""torchvision image classifiers on spectrogram images (the GTZAN study's ResNet-152 and cheaper kin).

No weights are downloaded: `model.weights: PATH` loads a local torchvision checkpoint (see README).
With 1 input channel the stem is adapted (conv1 summed over RGB); with 3 the wrapper replicates mono.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from .base import register


def _adapt_first_conv(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).repeat(1, channels, 1, 1) / channels)
    return new


def _resnet(arch: str):
    def build(num_classes: int, input_shape, **kwargs) -> nn.Module:
        net = getattr(torchvision.models, arch)(weights=None, **kwargs)
        if input_shape[0] != 3:
            net.conv1 = _adapt_first_conv(net.conv1, input_shape[0])
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        return net
    return build


for _arch, _note in [("resnet152", "the GTZAN study's model"), ("resnet50", "cheaper ResNet"), ("resnet18", "cheapest ResNet")]:
    register(_arch, "spectrogram", 3, f"torchvision {_arch} ({_note}); 299x299 in the study")(_resnet(_arch))


@register("mobilenet_v3_small", "spectrogram", 3, "torchvision MobileNetV3-Small")
def mobilenet_v3_small(num_classes: int, input_shape, **kwargs) -> nn.Module:
    net = torchvision.models.mobilenet_v3_small(weights=None, **kwargs)
    if input_shape[0] != 3:
        net.features[0][0] = _adapt_first_conv(net.features[0][0], input_shape[0])
    net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    return net
