"""The torch.export front end and the layered capture (fx → export → fx with opaque submodules)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws.models import MODELS


class ShapeBranch(nn.Module):
    """fx cannot trace `if x.dim() == 2` (a Proxy in a condition); torch.export specialises on it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)

    def forward(self, x):
        if x.dim() == 2:
            return self.fc2(F.relu(self.bn(self.fc1(x))))
        return x


class DataBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: neither fx nor export can capture it
            return self.fc(x)
        return -self.fc(x)


class WithDataBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.inner, self.b, self.c = nn.Linear(3, 4), DataBranch(), nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.c(F.relu(self.b(self.inner(self.a(x)))))


def test_auto_falls_back_to_export_when_fx_fails():
    model, x = ShapeBranch(), torch.randn(4, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ann = fxlaws.annotate(model, x)
    assert ann.frontend == "export"
    # Linear→BatchNorm1d→ReLU→Linear 3-4-2: N1 fc1.bias per channel (4), N2 per channel (4, approx.),
    # N3 bn affine → fc2 (4)
    assert ann.counts() == {"translation": 4, "scale (approx.)": 4, "rescale": 4}
    assert fxlaws.soundness(model, ann, x).ok
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # export mutated nothing


def test_data_dependent_submodule_is_opaque_after_export_fails():
    model, x = WithDataBranch(), torch.randn(2, 3)
    ann = fxlaws.annotate(model, x)
    assert ann.frontend == "fx" and "inner" in ann.opaque
    assert "inner.fc" in ann.no_law and "opaque" in ann.no_law["inner.fc"]
    # only b → ReLU → c carries a law (5 hidden units); nothing crosses the opaque module
    assert ann.counts() == {"rescale": 5}
    assert fxlaws.soundness(model, ann, x).ok


def test_frontend_export_on_data_dependent_model_says_what_to_do():
    with pytest.raises(fxlaws.UntraceableModelError, match="frontend='fx'"):
        fxlaws.annotate(DataBranch(), torch.randn(2, 4), frontend="export")


@pytest.mark.parametrize("name", ["gpt-tiny", "vit-tiny", "llama-tiny", "lenet", "vgg-bn", "resnet18"])
def test_export_finds_the_same_laws_as_fx(name):
    # The two graph dialects (torch functions/modules vs aten ops) must give the same law families,
    # including per-head attention laws, GQA, RoPE pairs, N1–N3 and T1 on the logits.
    model = MODELS[name]()
    fx_ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy", frontend="fx")
    ex_ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy", frontend="export")
    assert ex_ann.frontend == "export"
    assert ex_ann.counts() == fx_ann.counts()
    assert sorted(f.theory for f in ex_ann.laws) == sorted(f.theory for f in fx_ann.laws)
    assert fxlaws.soundness(model, ex_ann, trials=1, samples=3).ok


def test_transformer_encoder_is_exported_and_gets_attention_laws():
    # nn.TransformerEncoderLayer is an fx leaf; auto capture exports it instead. d_model 32, 4 heads
    # (dh 8), 2 layers, packed in_proj with bias: A1 = A2 = 2·4·36, A3 = 2·32 key-bias entries; post-LN
    # (x = norm(x + branch(x))): N1 on each layer's out_proj (32 column sums + 1 bias sum) and linear2
    # (dim_feedforward 64 column sums + 1): 2·(33 + 65) = 196 translation laws more.
    model = MODELS["encoder-tiny"]()
    ann = fxlaws.annotate(model, model.example_inputs())
    assert ann.frontend == "export"
    counts = ann.counts()
    assert (counts["attention-qk"], counts["attention-vo"], counts["translation"]) == (288, 288, 64 + 196)
    assert fxlaws.soundness(model, ann, trials=1, samples=4).ok
