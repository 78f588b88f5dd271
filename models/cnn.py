"""Small convolutional networks: a CIFAR-sized VGG and LeNet-5."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

VGG_CFG: list[Union[int, str]] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    """VGG-style network for 3x32x32 (CIFAR) images.

    Args:
        cfg: Feature layout; an int is a 3x3 conv with that many output channels
            (followed by ReLU, optionally preceded by BatchNorm), ``"M"`` is a 2x2 max pool.
            Defaults to a VGG-11 layout.
        batch_norm: Whether to add ``BatchNorm2d`` after every convolution.
        num_classes: Number of output classes.
    """

    def __init__(
        self,
        cfg: Sequence[Union[int, str]] | None = None,
        batch_norm: bool = False,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        cfg = VGG_CFG if cfg is None else cfg
        layers: list[nn.Module] = []
        in_channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(int(v)))
                layers.append(nn.ReLU(inplace=True))
                in_channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Linear(in_channels, 512),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randn(2, 3, 32, 32, generator=g),)


class LeNet(nn.Module):
    """LeNet-5 style network for 1x28x28 (MNIST) images.

    Two 5x5 conv + ReLU + 2x2 max-pool stages followed by three fully connected layers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randn(2, 1, 28, 28, generator=g),)


def vgg(batch_norm: bool = False, **kwargs) -> VGG:
    """Build a :class:`VGG`; keyword arguments are passed to its constructor."""
    return VGG(batch_norm=batch_norm, **kwargs)


def vgg_bn(**kwargs) -> VGG:
    """Build a :class:`VGG` with batch normalization."""
    return VGG(batch_norm=True, **kwargs)


def lenet() -> LeNet:
    """Build a :class:`LeNet`."""
    return LeNet()
