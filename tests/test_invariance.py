"""The group behind each law family (docs/THEORY.md §2b), acting on the parameters: the model's
outputs do not change (float64, relative 1e-10) and the law moves as the group says, on every
built-in model; a wrong action is caught; approximate families are refused unless asked for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlaws
from fxlaws.laws.actions import ApproximateActionError, act
from fxlaws.models import MODELS, get_model, relu_mlp
from fxlaws.verify import invariance

@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_exact_family_of_every_builtin_model_is_invariant(name):
    torch.manual_seed(0)
    model = get_model(name)
    ann = fxlaws.annotate(model, model.example_inputs())
    result = invariance(model, ann, trials=1)
    assert result.ok, str(result)
    assert all(r.output_change <= 1e-10 and r.law_error <= 1e-10 for r in result.rows)
    exact = {f.name for f in ann.laws if f.exact}
    checked = {r.family for r in result.rows}
    assert exact == checked, result.skipped  # every exact row has its action (T3 included)


def test_the_action_of_a_rescale_family_by_hand():
    """R1 on a ReLU MLP: hidden unit j's incoming row and bias × λ_j, outgoing column ÷ λ_j."""
    model = relu_mlp(sizes=(3, 4, 2)).double()
    ann = fxlaws.annotate(model, torch.randn(5, 3, dtype=torch.float64))
    (fam,) = [f for f in ann.laws if f.theory == "R1"]
    params = {n: p.detach() for n, p in model.named_parameters()}
    lam = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64)
    moved = fam.act(params, lam)
    w1, b1, w2 = (params[f"net.{i}.{k}"] for i, k in ((0, "weight"), (0, "bias"), (2, "weight")))
    torch.testing.assert_close(moved["net.0.weight"], w1 * lam[:, None])
    torch.testing.assert_close(moved["net.0.bias"], b1 * lam)
    torch.testing.assert_close(moved["net.2.weight"], w2 / lam[None, :])
    x = torch.randn(7, 3, dtype=torch.float64)
    out = torch.func.functional_call(model, {**params, **moved}, (x,))
    torch.testing.assert_close(out, model(x), rtol=1e-13, atol=1e-13)


def test_the_action_of_a_shared_shift_by_hand():
    """T3 on two Linears summed, ``y = L1(x) + L2(x)``: the law is ``b1 − b2`` (C = [1, −1]); the
    element u adds u to b1 and −u to b2, the sum is unchanged and the law moves by C N Cᵀ u = 2u."""

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = Two().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    ann = fxlaws.annotate(model, x)
    (fam,) = [f for f in ann.laws if f.theory == "T3"]
    params = {n: p.detach() for n, p in model.named_parameters()}
    u = torch.tensor([[0.7, -1.3]], dtype=torch.float64)
    moved = fam.act(params, u)
    sign = 1.0 if torch.allclose(fam.evaluate(params), (params["a.bias"] - params["b.bias"])[None]) else -1.0
    torch.testing.assert_close(fam.evaluate(params), sign * (params["a.bias"] - params["b.bias"])[None])
    torch.testing.assert_close(moved["a.bias"] - params["a.bias"], sign * u[0])
    torch.testing.assert_close(moved["b.bias"] - params["b.bias"], -sign * u[0])
    torch.testing.assert_close(fam.evaluate({**params, **moved}), fam.evaluate(params) + 2 * u)
    out = torch.func.functional_call(model, {**params, **moved}, (x,))
    torch.testing.assert_close(out, model(x), rtol=1e-13, atol=1e-13)


def test_a_wrong_action_is_caught():
    """The consumer scaled by λ instead of λ^{-1} (a wrong exponent): outputs change, the check fails."""
    model = relu_mlp(sizes=(3, 4, 2))
    ann = fxlaws.annotate(model, torch.randn(5, 3))

    def wrong(fam, params, element):
        ev = fam._evaluator
        return {slot.param: slot.scale_channels(params[slot.param], element ** abs(coef)) for slot, coef in ev.terms}

    result = invariance(model, ann, trials=1, action=wrong)
    assert not result.ok and result.worst > 1e-3


def test_approximate_families_are_refused_unless_asked():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)).double()
    ann = fxlaws.annotate(model, torch.randn(5, 3, dtype=torch.float64))
    (n2,) = [f for f in ann.laws if f.theory == "N2"]
    params = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(ApproximateActionError, match="eps"):
        act(n2, params, n2.random_element())
    moved = act(n2, params, torch.tensor([2.0], dtype=torch.float64), approximate=True)
    torch.testing.assert_close(moved["0.weight"], 2 * params["0.weight"])
    result = invariance(model, ann, trials=1)
    assert n2.name in result.skipped and result.ok
