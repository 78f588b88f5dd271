"""Per-step drift accounting (THEORY §3): h(θ') − h(θ) = 2B(θ, Δ) + h(Δ) for any optimizer."""

import pytest
import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.drift import DriftTracker
from fxlaws.models import relu_mlp

DT = torch.float64


def _setup(opt_factory, loss="cross_entropy"):
    torch.manual_seed(0)
    model = relu_mlp(sizes=(3, 8, 4)).double()
    x, y = torch.randn(16, 3, dtype=DT), torch.randint(0, 4, (16,))
    ann = fxlaws.annotate(model, x, loss=loss)
    opt = opt_factory(model.parameters())
    return model, x, y, ann, opt, DriftTracker(model, ann, opt)


def _step(model, x, y, opt):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    return grads


def test_plain_sgd_drift_is_exactly_tau_squared_h_of_g():
    tau = 0.05
    model, x, y, ann, opt, tracker = _setup(lambda p: torch.optim.SGD(p, lr=tau))
    for _ in range(4):
        grads = _step(model, x, y, opt)
        rec = tracker.last
        for fam in ann.laws:
            change, first, second = rec.change[fam.name], rec.first[fam.name], rec.second[fam.name]
            scale = float(change.abs().max()) + float(second.abs().max()) + 1e-30
            # first-order term vanishes for SGD (⟨∇h, g⟩ = 0 for every batch): only round-off is left
            assert float(first.abs().max()) <= 1e-9 * max(scale, 1e-12) + 1e-15, fam.name
            if fam.kind == "translation":  # linear laws: exactly conserved by SGD
                assert float(change.abs().max()) < 1e-12
            else:  # the whole change is the second-order term τ² h(g), computed here from the gradient
                predicted = fam.evaluate({n: -tau * g for n, g in grads.items()})
                torch.testing.assert_close(change, predicted, rtol=1e-9, atol=1e-15)


def test_sgd_with_weight_decay_matches_closed_form():
    tau, lam = 0.05, 0.1
    model, x, y, ann, opt, tracker = _setup(lambda p: torch.optim.SGD(p, lr=tau, weight_decay=lam))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    grads = _step(model, x, y, opt)
    for fam in ann.laws:
        if fam.kind == "translation":
            continue
        h0, h1 = fam.evaluate(before), fam.evaluate(dict(model.named_parameters())).detach()
        h_g = fam.evaluate(grads)
        # THEORY §3: h(θ') = (1 − τλ)² h(θ) + τ² h(g) for SGD with coupled weight decay
        torch.testing.assert_close(h1, (1 - tau * lam) ** 2 * h0 + tau ** 2 * h_g, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(tracker.last.change[fam.name], h1 - h0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                                  lambda p: torch.optim.Adam(p, lr=1e-2)], ids=["momentum", "adam"])
def test_optimizer_geometry_breaks_quadratic_laws_at_first_order(make):
    model, x, y, ann, opt, tracker = _setup(make)
    for _ in range(5):
        _step(model, x, y, opt)
    fam = next(f for f in ann.laws if f.kind == "rescale")
    for rec in tracker.steps:  # the split is exact at every step
        torch.testing.assert_close(rec.first[fam.name] + rec.second[fam.name], rec.change[fam.name],
                                   rtol=1e-10, atol=1e-14)
    assert tracker.last.first_order_share(fam.name) > 0.3  # geometry, not step size, drives the drift
    tracker.remove()
    _step(model, x, y, opt)
    assert len(tracker.steps) == 5  # hooks removed
