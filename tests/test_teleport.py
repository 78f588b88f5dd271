"""``fxlaws.teleport``: gradient ascent along the symmetry orbits raises the objective (the gradient
norm, or one given) while the model's outputs and loss stay (float64), on an MLP, ResNet-18, GPT-tiny
and LLaMA-tiny."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.models import get_model


def _setup(name):
    torch.manual_seed(0)
    model = get_model(name).double().train()
    inputs = tuple(t.double() if t.is_floating_point() else t for t in model.example_inputs())
    ann = fxlaws.annotate(model, inputs)
    out = model(*inputs)
    out = (out if isinstance(out, torch.Tensor) else out[0]).detach()
    if out.dim() == 3:  # token models: next-token-style targets from the inputs
        target = inputs[0].reshape(-1) % out.shape[-1]
        loss_fn = lambda o: F.cross_entropy(o.reshape(-1, o.shape[-1]), target)  # noqa: E731
    else:
        target = torch.randint(0, out.shape[-1], (out.shape[0],))
        loss_fn = lambda o: F.cross_entropy(o, target)  # noqa: E731
    return model, inputs, ann, out, loss_fn


def _grad_norm_sq(model, inputs, loss_fn) -> float:
    model.zero_grad()
    loss_fn(model(*inputs)).backward()
    return float(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))


@pytest.mark.parametrize("name", ["mlp", "resnet18", "gpt-tiny", "llama-tiny"])
def test_teleport_raises_the_gradient_norm_and_keeps_the_function(name):
    model, inputs, ann, before, loss_fn = _setup(name)
    g0 = _grad_norm_sq(model, inputs, loss_fn)
    result = fxlaws.teleport(model, ann, loss_fn, inputs, steps=10, lr=0.02)
    after = model(*inputs)
    after = (after if isinstance(after, torch.Tensor) else after[0]).detach()
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-10
    assert result.loss_after == pytest.approx(result.loss_before, rel=1e-10)
    g1 = _grad_norm_sq(model, inputs, loss_fn)  # measured here, with the model's own backward
    assert g1 > 1.05 * g0 and g1 == pytest.approx(result.objective_after, rel=1e-8)


def test_teleport_with_a_given_objective():
    """Lowering the squared norm of the parameters (the objective is maximised: its negative) moves
    the orbit point toward balance; the loss stays."""
    model, inputs, ann, before, loss_fn = _setup("mlp")

    def small_weights(loss, params):
        return -sum(p.pow(2).sum() for p in params.values())

    norm0 = float(sum(p.detach().pow(2).sum() for p in model.parameters()))
    result = fxlaws.teleport(model, ann, loss_fn, inputs, objective=small_weights, steps=30, lr=0.05)
    norm1 = float(sum(p.detach().pow(2).sum() for p in model.parameters()))
    assert norm1 < norm0 and result.objective_after > result.objective_before
    assert result.loss_after == pytest.approx(result.loss_before, rel=1e-10)
