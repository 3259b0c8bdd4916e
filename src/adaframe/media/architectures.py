"""The backbones' architectures: plain-torch copies of torchvision's ResNet (v1.5: the stride sits in the 3x3 conv of
a Bottleneck) and MobileNetV2, with its state-dict keys, tensor shapes, module creation order and initialisation, so
that a torchvision checkpoint loads as is and both implementations draw the same random weights from one seed.
Building, weight loading and running them on frames are ``backbones``.

A feature is the globally average-pooled output of the last conv stage, before the classifier (``forward_features``):
2048-d for ResNet-50/101, 512-d for ResNet-18, 1280-d for MobileNetV2.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn


class BackboneInfo(NamedTuple):
    feature_dim: int
    input_size: int  # default square input side, pixels


# MobileNetV2 is the paper's cheap model for the global memory, run on 112x112 frames.
BACKBONES: dict[str, BackboneInfo] = {
    "resnet18": BackboneInfo(512, 224),
    "resnet50": BackboneInfo(2048, 224),
    "resnet101": BackboneInfo(2048, 224),
    "mobilenet_v2": BackboneInfo(1280, 112),
}

# --------------------------------------------------------------------------------------- ResNet


def _conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # v1.5: stride here, not in conv1
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def resnet_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def resnet_head(model: nn.Module, feat: torch.Tensor) -> torch.Tensor:
    return model.fc(feat)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` (groups 1, no dilation, zero_init_residual False).

    Args:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50 and deeper).
        layers: blocks per stage, e.g. ``[3, 4, 23, 3]`` for ResNet-101.
        num_classes: outputs of ``fc``.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.feature_dim = 512 * block.expansion

        # After construction and in module order, as torchvision does: same seed, same weights.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] normalised -> pooled features [B, D]."""
        return resnet_features(self, x)

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        """feat [B, D] -> logits [B, num_classes]."""
        return resnet_head(self, feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------- MobileNetV2


class ConvBNActivation(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` with BN and ReLU6: keys ``0`` (conv), ``1`` (bn)."""

    def __init__(self, inp: int, out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNActivation(inp, hidden, kernel_size=1))  # pointwise expansion
        layers += [
            ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenet_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = nn.functional.adaptive_avg_pool2d(model.features(x), (1, 1))
    return torch.flatten(x, 1)


def mobilenet_head(model: nn.Module, feat: torch.Tensor) -> torch.Tensor:
    return model.classifier(feat)


class MobileNetV2(nn.Module):
    """torchvision's ``MobileNetV2`` at width 1.0 (all channel counts already multiples of 8).

    Args:
        num_classes: outputs of the classifier's ``Linear``.
        dropout: dropout before it (only active in training mode).
    """

    # t (expansion), c (channels), n (blocks), s (stride of the first block)
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.feature_dim = 1280
        inp = 32
        features: list[nn.Module] = [ConvBNActivation(3, inp, stride=2)]
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, expand_ratio=t))
                inp = c
        features.append(ConvBNActivation(inp, self.feature_dim, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.feature_dim, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] normalised -> pooled features [B, 1280]."""
        return mobilenet_features(self, x)

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        """feat [B, 1280] -> logits [B, num_classes]."""
        return mobilenet_head(self, feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
    "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3]),
    "resnet101": lambda: ResNet(Bottleneck, [3, 4, 23, 3]),
    "mobilenet_v2": lambda: MobileNetV2(),
}
