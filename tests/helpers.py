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


def worst_rel_inner(model: nn.Module, loss: torch.Tensor, law, *, skip_constant: bool = False) -> float:
    """max_i |<∇h_i, ∇L>| / (‖∇h_i‖ ‖∇L‖), every gradient taken here with torch.autograd.

    ``law`` (params dict -> tensor) is written by hand in the test, not taken from the library.
    A component with ∇h_i = 0 fails the check unless ``skip_constant`` (e.g. entries of a Gram
    law that vanish identically for a layout) — then it is passed over.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = list(params)
    gl = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    gl = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, gl)]
    gl_norm = torch.sqrt(sum(g.pow(2).sum() for g in gl))
    assert gl_norm > 1e-8, "degenerate loss gradient"
    h = law(params).reshape(-1)
    worst = 0.0
    for i in range(h.numel()):
        gh = torch.autograd.grad(h[i], [params[n] for n in names], retain_graph=True, allow_unused=True)
        gh = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, gh)]
        gh_norm = torch.sqrt(sum(g.pow(2).sum() for g in gh))
        if gh_norm == 0 and skip_constant:
            continue
        assert gh_norm > 0, f"component {i} of the law is constant"
        dot = sum((a * b).sum() for a, b in zip(gh, gl))
        worst = max(worst, float(dot.abs() / (gh_norm * gl_norm)))
    return worst


class FusedGateUp(nn.Module):
    """One Linear(3, 8) makes gate and up (Phi-3's gate_up_proj), chunked: down(silu(gate) * up),
    down Linear(4, 2)."""

    def __init__(self):
        super().__init__()
        self.gate_up, self.down = nn.Linear(3, 8), nn.Linear(4, 2)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)
