"""Small builders shared by the test modules (float64 inputs, named nn.Sequential)."""

from collections import OrderedDict

import torch
from torch import nn

DT = torch.float64


def vec(n: int = 5, d: int = 3) -> torch.Tensor:
    return torch.randn(n, d, dtype=DT)


def img(n: int = 2, c: int = 3, hw: int = 6) -> torch.Tensor:
    return torch.randn(n, c, hw, hw, dtype=DT)


def seq(**mods: nn.Module) -> nn.Sequential:
    """nn.Sequential with named children (parameter names ``fc1.weight``, symbols ``fc1_weight_j_i``)."""
    return nn.Sequential(OrderedDict(mods)).double()
