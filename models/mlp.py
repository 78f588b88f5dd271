"""Fully connected multilayer perceptrons."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "identity": nn.Identity,
    "gelu": nn.GELU,
}


class MLP(nn.Module):
    """Multilayer perceptron with a single activation type between layers.

    Args:
        sizes: Layer widths, from input features to output features.
        activation: One of ``"relu"``, ``"leaky_relu"``, ``"identity"`` or ``"gelu"``.
        bias: Whether the linear layers have a bias.

    Example:
        >>> model = MLP((784, 256, 10))
        >>> model(*model.example_inputs()).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        sizes: Sequence[int] = (784, 256, 128, 10),
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        if len(sizes) < 2:
            raise ValueError("sizes needs at least an input and an output width")
        self.sizes = tuple(sizes)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out, bias=bias))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.net(x)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randn(2, self.sizes[0], generator=g),)


def mlp(**kwargs) -> MLP:
    """Build an :class:`MLP`; keyword arguments are passed to its constructor."""
    return MLP(**kwargs)


def relu_mlp(**kwargs) -> MLP:
    """ReLU MLP with sizes (784, 256, 128, 10) by default."""
    return MLP(**{"activation": "relu", **kwargs})


def leaky_relu_mlp(**kwargs) -> MLP:
    """LeakyReLU(0.1) MLP with sizes (784, 256, 128, 10) by default."""
    return MLP(**{"activation": "leaky_relu", **kwargs})


def linear_mlp(**kwargs) -> MLP:
    """Deep linear network (identity activations) with sizes (784, 256, 128, 10) by default."""
    return MLP(**{"activation": "identity", **kwargs})


def gelu_mlp(**kwargs) -> MLP:
    """GELU MLP with sizes (784, 256, 128, 10) by default."""
    return MLP(**{"activation": "gelu", **kwargs})
