"""Gradient fields of a module as functions of one flat parameter vector θ (float64).

Shared by completeness (Lie-algebra rank) and discovery. A *field* is ``θ ↦ ∇_θ F(θ)`` for a scalar
``F``: either a random loss on random inputs (``data``: every per-example, per-output-direction
gradient is a linear combination of these) or ``⟨r, φ(θ)⟩`` for a reparametrisation ``φ``
(``phi``, what the reference implementation uses). Brackets are built with ``torch.func.jvp``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from ..capture import normalise_inputs

__all__ = ["FlatModule", "Field", "bracket"]

Field = Callable[[Tensor], Tensor]


def bracket(x: Field, y: Field) -> Field:
    """``[X, Y](θ) = J_Y(θ) X(θ) − J_X(θ) Y(θ)`` (THEORY §1)."""

    def field(theta: Tensor) -> Tensor:
        return jvp(y, (theta,), (x(theta),))[1] - jvp(x, (theta,), (y(theta),))[1]

    return field


class FlatModule:
    """A float64 copy of ``module`` whose trainable parameters are one flat vector.

    Args:
        module: the user's module (deep-copied; Dropout disabled so fields are deterministic).
        example_inputs: inputs of one forward call; random inputs copy their shapes and dtypes.
        train: module mode for the copy (BatchNorm batch statistics when True).
        n_inputs: batch size of the random inputs (default: enough that the data fields can span
            D directions: ``max(32, 2·D / outputs-per-example)``).
    """

    def __init__(self, module: nn.Module, example_inputs: Any, *, train: bool = True,
                 n_inputs: Optional[int] = None, generator: Optional[torch.Generator] = None):
        self.net = copy.deepcopy(module).double()
        for m in self.net.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = 0.0
        self.net.train(train)
        self.params = {n: p for n, p in self.net.named_parameters() if p.requires_grad}
        self.frozen = {n: p.detach() for n, p in self.net.named_parameters() if not p.requires_grad}
        self.names = list(self.params)
        self.shapes = [p.shape for p in self.params.values()]
        self.sizes = [p.numel() for p in self.params.values()]
        self.D = sum(self.sizes)
        self.gen = generator or torch.Generator().manual_seed(0)
        self.args, self.kwargs = normalise_inputs(example_inputs)
        out = self.forward(self.flat(), self._inputs(1))
        self.out_per_example = max(1, sum(o.numel() for o in _flat(out)))
        self.n_inputs = n_inputs or max(32, math.ceil(2 * self.D / self.out_per_example))

    # --- parameters --------------------------------------------------------------------------
    def flat(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params.values()]) if self.params else torch.zeros(0)

    def unflat(self, theta: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = theta[i:i + size].view(shape)
            i += size
        return out

    def random_theta(self) -> Tensor:
        """Fan-in scaled weights; small biases so ReLU units split the inputs."""
        parts = []
        for name, shape in zip(self.names, self.shapes):
            t = torch.randn(shape, generator=self.gen, dtype=torch.float64)
            if len(shape) >= 2:
                t = t / math.sqrt(max(1, math.prod(shape[1:])))
            elif name.endswith("bias"):
                t = 0.1 * t
            parts.append(t.reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    # --- forward -----------------------------------------------------------------------------
    def _inputs(self, n: int) -> tuple[tuple, dict]:
        def rnd(x):
            if isinstance(x, Tensor):
                shape = (n, *x.shape[1:]) if x.dim() >= 1 else x.shape
                if x.is_floating_point():
                    return torch.randn(shape, generator=self.gen, dtype=torch.float64)
                if x.dtype == torch.bool:
                    return x[:1].expand(shape).clone() if x.dim() else x
                hi = int(x.max()) + 1 if x.numel() else 2
                return torch.randint(0, max(hi, 2), shape, generator=self.gen, dtype=x.dtype)
            return x

        return tuple(rnd(a) for a in self.args), {k: rnd(v) for k, v in self.kwargs.items()}

    def random_inputs(self) -> tuple[tuple, dict]:
        return self._inputs(self.n_inputs)

    def forward(self, theta: Tensor, inputs: tuple[tuple, dict]) -> Any:
        params = dict(self.unflat(theta))
        params.update(self.frozen)
        args, kwargs = inputs
        return functional_call(self.net, params, args, kwargs)

    # --- fields ------------------------------------------------------------------------------
    def data_field(self, inputs, loss: str = "any") -> Field:
        """Gradient of a random loss: ``Σ ⟨w, g(θ, x)⟩`` with random w (zero-sum over classes for CE)."""
        with torch.no_grad():
            outs = _flat(self.forward(self.flat(), inputs))
        ws = []
        for o in outs:
            w = torch.randn(o.shape, generator=self.gen, dtype=torch.float64)
            if loss == "cross_entropy":
                w = w - w.mean(dim=-1, keepdim=True)
            ws.append(w)

        def scalar(theta: Tensor) -> Tensor:
            return sum((o * w).sum() for o, w in zip(_flat(self.forward(theta, inputs)), ws))

        return grad(scalar)

    def phi_field(self, phi: Callable[[dict[str, Tensor]], Tensor]) -> Field:
        """Gradient of ``⟨r, φ(θ)⟩`` for a random r; ``phi`` reads the parameter dict."""
        with torch.no_grad():
            shape = phi(self.unflat(self.flat())).shape
        r = torch.randn(shape, generator=self.gen, dtype=torch.float64)
        return grad(lambda theta: (phi(self.unflat(theta)) * r).sum())

    def activation_coverage(self, theta: Tensor, inputs) -> Optional[bool]:
        """True if every ReLU-like unit is active on some inputs and inactive on others.

        Units are features (last axis) of 2-D activations and channels (axis 1) otherwise. None when
        the module has no ReLU-like submodule or functional relu we can hook.
        """
        seen: list[Tensor] = []
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
                 for m in self.net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU))]
        try:
            with torch.no_grad():
                self.forward(theta, inputs)
        finally:
            for h in hooks:
                h.remove()
        if not seen:
            return None
        for act in seen:
            a = act.movedim(-1, 1) if act.dim() == 2 else act
            a = a.movedim(1, 0).reshape(a.shape[1], -1) if a.dim() > 1 else a.reshape(1, -1)
            on = (a > 0).any(1) & (a <= 0).any(1)
            if not bool(on.all()):
                return False
        return True


def _flat(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flat(v)]
    return []
