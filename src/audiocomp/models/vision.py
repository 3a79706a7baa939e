"""torchvision image classifiers on spectrogram images (the GTZAN study's ResNet-152 and cheaper kin).

No weights are downloaded: `model.weights: PATH` loads a local torchvision checkpoint (see README).
Mono spectrograms meet the RGB stem in one of two ways, chosen by `model.in_channels`: 3 (the default)
replicates the mono channel in the wrapper; 1 adapts the stem to one input channel (its first conv summed
over RGB, which gives the same output for a replicated input, also for pretrained weights).
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


register("resnet152", "spectrogram", 3, "torchvision resnet152, the GTZAN study's model (299x299 input)",
         default_input_size=(299, 299))(_resnet("resnet152"))
register("resnet50", "spectrogram", 3, "torchvision resnet50 (cheaper baseline)")(_resnet("resnet50"))
register("resnet18", "spectrogram", 3, "torchvision resnet18 (cheapest ResNet)")(_resnet("resnet18"))


@register("mobilenet_v3_small", "spectrogram", 3, "torchvision MobileNetV3-Small")
def mobilenet_v3_small(num_classes: int, input_shape, **kwargs) -> nn.Module:
    net = torchvision.models.mobilenet_v3_small(weights=None, **kwargs)
    if input_shape[0] != 3:
        net.features[0][0] = _adapt_first_conv(net.features[0][0], input_shape[0])
    net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    return net
