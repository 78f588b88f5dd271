"""The public registry (fxlaws.registry): users teach fxlaws modules, autograd Functions and custom ops
it does not know. Ground truth: the same model written with built-in torch ops (its law counts, THEORY
N2/N3 for RMSNorm, S1 for SwiGLU) and numeric soundness in float64 on the real model code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws.errors import UnsupportedOpError
from fxlaws.registry import activation, decomposition, register_function, register_module, rms_norm, unregister

DT = torch.float64


@torch.library.custom_op("fxlaws_test::fused_rms_norm", mutates_args=())
def fused_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Stands in for a Triton kernel: fx and export see one opaque op."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@fused_rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x)


def _rms_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    with torch.enable_grad():
        x, weight = x.detach().requires_grad_(), weight.detach().requires_grad_()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ctx.eps) * weight
        gx, gw = torch.autograd.grad(y, (x, weight), grad)
    return gx, gw, None


def _rms_setup(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


fused_rms_norm.register_autograd(_rms_backward, setup_context=_rms_setup)


class FusedRMSNorm(nn.Module):
    """A user's fused RMSNorm: its forward is one custom op fxlaws cannot see into."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, dtype=DT) + 0.1 * torch.randn(d, dtype=DT))
        self.eps = eps

    def forward(self, x):
        return torch.ops.fxlaws_test.fused_rms_norm(x, self.weight, self.eps)


class SwiGLUFunction(torch.autograd.Function):
    """A fused SwiGLU kernel with a hand-written backward (fx keeps custom Functions opaque)."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        s = torch.sigmoid(gate)
        return grad * up * (s * (1 + gate * (1 - s))), grad * gate * s


class Block(nn.Module):
    """Linear → norm → SwiGLU MLP (w1 gate, w3 up, w2 down), as in LLaMA."""

    def __init__(self, norm: nn.Module, fused_swiglu: bool, d: int = 4, hidden: int = 6):
        super().__init__()
        self.proj = nn.Linear(3, d, dtype=DT)
        self.norm = norm
        self.w1, self.w3 = nn.Linear(d, hidden, dtype=DT), nn.Linear(d, hidden, dtype=DT)
        self.w2 = nn.Linear(hidden, 2, dtype=DT)
        self.fused = fused_swiglu

    def forward(self, x):
        h = self.norm(self.proj(x))
        g, u = self.w1(h), self.w3(h)
        return self.w2(SwiGLUFunction.apply(g, u) if self.fused else F.silu(g) * u)

    def example_inputs(self):
        return (torch.randn(5, 3, dtype=DT),)


@pytest.fixture
def registry():
    """Registrations made inside a test are removed after it."""
    made = []
    yield made
    for target in made:
        unregister(target)


def _theories(ann) -> dict[str, int]:
    out: dict[str, int] = {}
    for fam in ann.laws:
        out[fam.theory] = out.get(fam.theory, 0) + fam.count
    return out


def _reference() -> dict[str, int]:
    """The same block written with torch's own RMSNorm and F.silu(g) * u (what fxlaws knows)."""
    torch.manual_seed(0)
    model = Block(nn.RMSNorm(4, eps=1e-6, dtype=DT), fused_swiglu=False)
    return _theories(fxlaws.annotate(model, model.example_inputs()))


def test_unregistered_ops_stop_laws_and_say_why():
    torch.manual_seed(0)
    model = Block(FusedRMSNorm(4), fused_swiglu=True)
    ann = fxlaws.annotate(model, model.example_inputs())
    assert _theories(ann).get("S1", 0) == 0 and _theories(ann).get("N3", 0) == 0
    assert any("fused_rms_norm" in why for why in ann.no_law.values())
    with pytest.raises(UnsupportedOpError, match="fused_rms_norm.*fxlaws.registry"):
        fxlaws.annotate(model, model.example_inputs(), strict=True)


def test_declared_module_and_decomposed_function_recover_every_law(registry):
    """A fused RMSNorm declared as RMSNorm (N3 on its weight, N2 on the producer) and a custom
    SwiGLU Function decomposed to silu(g)·u (S1): the same laws as the model written in torch ops."""
    register_module(FusedRMSNorm, rms_norm(weight="weight"))
    register_function(SwiGLUFunction, decompose=lambda gate, up: F.silu(gate) * up)
    registry += [FusedRMSNorm, SwiGLUFunction]
    torch.manual_seed(0)
    model = Block(FusedRMSNorm(4), fused_swiglu=True)
    ann = fxlaws.annotate(model, model.example_inputs(), strict=True)
    expected = _reference()
    assert _theories(ann) == expected
    assert expected["S1"] == 6 and expected["N3"] == 4  # THEORY S1: one per hidden unit; N3: one per γ_j
    result = fxlaws.soundness(model, ann, model.example_inputs())
    assert result.ok and result.worst_exact <= 1e-9, str(result)


def test_decomposed_custom_op(registry):
    """A torch.library op (Triton-style) decomposed into torch ops is seen through."""
    reference = lambda x, weight, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight  # noqa: E731
    register_function(torch.ops.fxlaws_test.fused_rms_norm, decompose=reference)
    registry.append(torch.ops.fxlaws_test.fused_rms_norm)
    assert decomposition(torch.ops.fxlaws_test.fused_rms_norm.default) is reference  # overloads share it
    torch.manual_seed(0)
    model = Block(FusedRMSNorm(4), fused_swiglu=False)
    ann = fxlaws.annotate(model, model.example_inputs())
    assert _theories(ann).get("N3") == 4
    result = fxlaws.soundness(model, ann, model.example_inputs())
    assert result.ok and result.worst_exact <= 1e-9, str(result)


class MyGELU(nn.Module):
    def forward(self, x):
        return F.gelu(x)


def test_wrong_registration_is_caught_by_soundness(registry):
    """A GELU declared ReLU-like (positively 1-homogeneous) gets a rescale law (R1) that gradient flow
    does not conserve: fxlaws.soundness reports it as UNSOUND."""
    register_module(MyGELU, activation(1.0))
    registry.append(MyGELU)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, dtype=DT), MyGELU(), nn.Linear(4, 2, dtype=DT))
    x = torch.randn(5, 3, dtype=DT)
    ann = fxlaws.annotate(model, (x,))
    assert [f.theory for f in ann.laws] == ["R1"]
    result = fxlaws.soundness(model, ann, (x,))
    assert not result.ok and result.worst_exact > 1e-3, str(result)


def test_custom_rule_of_ones_own(registry):
    """A rule function written by the user (here: a LeakyReLU-like op declared by a custom rule)."""
    from fxlaws.vocabulary import OpKind

    def my_rule(ctx):
        return ctx.op(OpKind.ACT, f"my leaky relu {ctx.path}", degree=1.0, allows_mixing=False)

    class Leaky(nn.Module):
        def forward(self, x):
            return torch.where(x > 0, x, 0.1 * x)

    register_module(Leaky, my_rule)
    registry.append(Leaky)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, dtype=DT), Leaky(), nn.Linear(4, 2, dtype=DT))
    x = torch.randn(5, 3, dtype=DT)
    ann = fxlaws.annotate(model, (x,))
    assert _theories(ann) == {"R1": 4}
    assert fxlaws.soundness(model, ann, (x,)).ok


@pytest.mark.parametrize("call, match", [
    (lambda: register_module(F.gelu, activation(1.0)), "nn.Module subclass"),
    (lambda: register_function(nn.GELU, activation(1.0)), "register_module"),
    (lambda: register_module(MyGELU), "exactly one"),
    (lambda: register_module(MyGELU, activation(1.0), decompose=lambda m, x: x), "exactly one"),
    (lambda: register_module(MyGELU, "relu"), "OpContext"),
])
def test_bad_registrations_say_what_to_do(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()
