"""``fxlaws.rebalance``: every reachable law value goes to zero (relative 1e-10) and the model's
outputs stay (float64), on ResNet-18, GPT-tiny, LLaMA-tiny and a LoRA model; the balanced point of
a rescale law checked against the norms computed here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxlaws
from fxlaws.models import get_model, relu_mlp


def _outputs(model, inputs):
    with torch.random.fork_rng(devices=[]):  # the same dropout masks before and after
        torch.manual_seed(1)
        out = model(*inputs)
    return (out if isinstance(out, torch.Tensor) else out[0]).detach()


@pytest.mark.parametrize("name", ["resnet18", "gpt-tiny", "llama-tiny"])
def test_rebalance_zeroes_every_reachable_law_and_keeps_the_function(name):
    torch.manual_seed(0)
    model = get_model(name).double().train()
    inputs = tuple(t.double() if t.is_floating_point() else t for t in model.example_inputs())
    ann = fxlaws.annotate(model, inputs)
    before = _outputs(model, inputs)
    values = {k: v.clone() for k, v in ann.evaluate(model).items()}
    result = fxlaws.rebalance(model, ann)
    after = _outputs(model, inputs)
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-10
    assert result.after and result.worst <= 1e-10, str(result)
    moved = [n for n in result.after if not torch.allclose(ann.evaluate(model)[n], values[n])]
    assert moved  # it did something: the laws were not balanced at initialisation
    assert all(why.startswith("approximate") for why in result.skipped.values())
    assert name != "resnet18" or any(n.endswith(":shared") for n in result.after)  # T3: bn2.β − downsample.β


def test_balanced_rescale_law_by_hand():
    """ReLU MLP: at the balanced point every hidden unit's incoming and outgoing squared norms agree."""
    model = relu_mlp(sizes=(3, 5, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    ann = fxlaws.annotate(model, x)
    fxlaws.rebalance(model, ann)
    w1, b1, w2 = model.net[0].weight, model.net[0].bias, model.net[2].weight
    incoming, outgoing = w1.pow(2).sum(1) + b1 ** 2, w2.pow(2).sum(0)
    torch.testing.assert_close(incoming, outgoing, rtol=1e-10, atol=1e-12)


def test_lora_adapters_get_their_laws_and_are_rebalanced():
    """A peft LoRA pair B·A is a linear pair (G1): after rebalancing A Aᵀ = Bᵀ B, outputs unchanged."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"], lora_dropout=0.0,
                             init_lora_weights=False)
    model = peft.get_peft_model(base, config).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    ann = fxlaws.annotate(model, x)
    assert [f.theory for f in ann.laws] == ["G1", "G1"]  # one per adapter; the frozen base carries none
    before = model(x).detach()
    result = fxlaws.rebalance(model, ann)
    assert float((model(x).detach() - before).abs().max() / before.abs().max()) <= 1e-10
    assert result.worst <= 1e-10
    for layer in ("0", "2"):
        a = model.base_model.model.get_submodule(layer).lora_A["default"].weight
        b = model.base_model.model.get_submodule(layer).lora_B["default"].weight
        torch.testing.assert_close(a @ a.T, b.T @ b, rtol=1e-10, atol=1e-12)
