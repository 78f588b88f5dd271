"""fxlaws.annotate: bad input, unusual models and the API contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws.models import linear_mlp, relu_mlp, resnet18, vgg_bn

from fuzz_models import DataDependent  # a Linear whose output sign depends on the data: untraceable


def _mlp5():
    """ReLU MLP 3-4-5-6-2 with biases: hidden laws net.0>net.2 (4), net.2>net.4 (5), net.4>net.6 (6)."""
    return relu_mlp(sizes=(3, 4, 5, 6, 2))


def _read_params(ann):
    return {p for fam in ann.laws for p in fam.params}


# --- nothing to find ---------------------------------------------------------------------------------

_NO_PARAMS = {
    "relu": lambda: nn.Sequential(nn.ReLU()),
    # (a bare torch.nn.BatchNorm1d as the *root* is untraceable by fx; wrapped it works)
    "bn-no-affine": lambda: nn.Sequential(nn.BatchNorm1d(3, affine=False)),
    "identity": lambda: nn.Sequential(nn.Identity(), nn.Flatten()),
}


@pytest.mark.parametrize("make", list(_NO_PARAMS.values()), ids=list(_NO_PARAMS))
def test_model_without_parameters(make):
    model = make()
    ann = fxlaws.annotate(model, torch.randn(4, 3))
    assert ann.laws == []
    assert ann.counts() == {}
    assert ann.num_laws == 0
    assert ann.coverage == 0.0
    assert ann.no_law == {}
    assert ann.param_shapes == {}
    assert ann.evaluate(model) == {}
    assert "scalar laws     0 in 0 families" in str(ann)


@pytest.mark.parametrize("frozen", [False, True], ids=["no-params", "all-frozen"])
def test_soundness_without_trainable_parameters(frozen):
    model = _mlp5().requires_grad_(False) if frozen else nn.Sequential(nn.ReLU())
    x = torch.randn(2, 3)
    ann = fxlaws.annotate(model, x)
    res = fxlaws.soundness(model, ann, x)
    assert res.ok and res.rows == []


def test_all_parameters_frozen():
    model = _mlp5().requires_grad_(False)
    ann = fxlaws.annotate(model, model.example_inputs())
    assert ann.laws == []
    assert ann.counts() == {}
    assert ann.coverage == 0.0
    assert ann.param_shapes == {}
    assert ann.no_law == {}  # frozen parameters are not coordinates: nothing to explain


def test_frozen_layer_removes_the_laws_touching_it():
    full = fxlaws.annotate(_mlp5(), _mlp5().example_inputs())
    assert full.counts() == {"rescale": 4 + 5 + 6}
    model = _mlp5()
    model.net[2].requires_grad_(False)
    ann = fxlaws.annotate(model, model.example_inputs())
    # both hidden spaces touching net.2 lose their law; net.4 -> net.6 keeps its 6
    assert [f.name for f in ann.laws] == ["rescale:net.4>net.6"]
    assert ann.counts() == {"rescale": 6}
    assert not any(p.startswith("net.2.") for p in _read_params(ann))
    assert "frozen" in ann.no_law["net.0"]
    assert "net.2" in ann.no_law["net.0"]
    assert "net.2" not in ann.no_law  # no trainable parameters of its own
    assert fxlaws.soundness(model, ann).ok


def test_frozen_bias_breaks_only_the_producer_side():
    # net.2's bias frozen: scaling net.2's rows (incoming) would need to scale the frozen bias too,
    # so net.2 -> net.4 goes; net.0 -> net.2 only reads net.2's weight columns and stays.
    model = _mlp5()
    model.net[2].bias.requires_grad_(False)
    ann = fxlaws.annotate(model, model.example_inputs())
    assert [f.name for f in ann.laws] == ["rescale:net.0>net.2", "rescale:net.4>net.6"]
    assert "net.2.bias" not in _read_params(ann)
    assert fxlaws.soundness(model, ann).ok


# --- example inputs -------------------------------------------------------------------------------

class _Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def test_missing_example_inputs_message():
    with pytest.raises(fxlaws.ExampleInputsError) as info:
        fxlaws.annotate(_Plain())
    msg = str(info.value)
    assert "example_inputs" in msg
    assert "torch.randn" in msg  # shows how to pass them
    assert isinstance(info.value, fxlaws.FxlawsError)


def test_models_with_example_inputs_method_need_none():
    model = _mlp5()
    assert fxlaws.annotate(model).counts() == {"rescale": 15}


def test_wrong_shape_names_the_failing_module():
    with pytest.raises(fxlaws.ExampleInputsError) as info:
        fxlaws.annotate(_Plain(), torch.randn(2, 5))
    msg = str(info.value)
    assert "fc1" in msg
    assert "2x5" in msg  # the underlying error is kept
    assert "Pass the inputs of one real forward call" in msg


def test_wrong_number_of_inputs():
    with pytest.raises(fxlaws.ExampleInputsError, match="takes inputs"):
        fxlaws.annotate(_Plain(), (torch.randn(2, 3), torch.randn(2, 3)))


def test_unknown_example_inputs_type():
    with pytest.raises(fxlaws.ExampleInputsError, match="not understood"):
        fxlaws.annotate(_Plain(), 3.0)


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.fx = nn.Linear(3, 4)
        self.fy = nn.Linear(5, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x, y):
        return self.out(F.relu(self.fx(x) + self.fy(y)))


def _xy():
    return torch.randn(2, 3), torch.randn(2, 5)


@pytest.mark.parametrize("form", ["tensor", "tuple", "list", "dict"])
def test_example_input_forms_single(form):
    x = torch.randn(2, 3)
    inputs = {"tensor": x, "tuple": (x,), "list": [x], "dict": {"x": x}}[form]
    ann = fxlaws.annotate(_Plain(), inputs)
    assert [f.name for f in ann.laws] == ["rescale:fc1>fc2"]
    assert ann.counts() == {"rescale": 4}


@pytest.mark.parametrize("form", ["tuple", "list", "dict", "args-kwargs", "kwargs-only"])
def test_example_input_forms_two(form):
    x, y = _xy()
    inputs = {
        "tuple": (x, y),
        "list": [x, y],
        "dict": {"x": x, "y": y},
        "args-kwargs": ((x,), {"y": y}),
        "kwargs-only": ((), {"x": x, "y": y}),
    }[form]
    model = _Two()
    ann = fxlaws.annotate(model, inputs)
    # two producers summed into one hidden space (R2): 4 laws; their biases shifted by ±u cancel in the
    # sum (T3): fx.bias − fy.bias, 4 laws
    assert [f.name for f in ann.laws] == ["rescale:fx+fy>out", "translation:fx.bias+fy.bias:shared"]
    assert ann.counts() == {"rescale": 4, "translation": 4}
    assert fxlaws.soundness(model, ann, inputs).ok


# --- untraceable code ------------------------------------------------------------------------------

class _WithOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.sub = DataDependent(4)
        self.fc2 = nn.Linear(4, 5)
        self.fc3 = nn.Linear(5, 2)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = F.relu(self.sub(h))
        return self.fc3(F.relu(self.fc2(h)))


def test_untraceable_submodule_is_opaque():
    model = _WithOpaque()
    x = torch.randn(2, 3)
    ann = fxlaws.annotate(model, x)
    assert set(ann.opaque) == {"sub"}
    assert "untraceable" in ann.opaque["sub"]
    assert not any(p.startswith("sub.") for p in _read_params(ann))
    # no law crosses the opaque module (fc1 -> sub), the rest keeps its laws
    assert [f.name for f in ann.laws] == ["rescale:fc2>fc3"]
    assert "opaque" in ann.no_law["fc1"]
    assert "sub.fc" in ann.no_law
    assert fxlaws.soundness(model, ann, x).ok


@pytest.mark.parametrize("how", ["untraceable", "leaf_modules"])
def test_reason_for_parameters_inside_opaque_module(how):
    model = _WithOpaque()
    if how == "untraceable":
        ann = fxlaws.annotate(model, torch.randn(2, 3))
    else:
        model.sub = nn.Sequential(nn.Linear(4, 4))
        ann = fxlaws.annotate(model, torch.randn(2, 3), leaf_modules=["sub"])
    reason = ann.no_law[next(k for k in ann.no_law if k.startswith("sub."))]
    assert "not used" not in reason  # sub's parameters ARE used by forward
    assert "opaque" in reason or "unsupported" in reason


def test_leaf_modules_keep_submodule_closed():
    model = _WithOpaque()
    model.sub = nn.Sequential(nn.Linear(4, 4))  # traceable
    x = torch.randn(2, 3)
    # traced through: fc1 > sub.0 > fc2 > fc3
    assert fxlaws.annotate(model, x).counts() == {"rescale": 4 + 4 + 5}
    ann = fxlaws.annotate(model, x, leaf_modules=["sub"])
    assert [f.name for f in ann.laws] == ["rescale:fc2>fc3"]
    assert not any(p.startswith("sub.") for p in _read_params(ann))


class _RootControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc1(x)
        if h.sum() > 0:
            h = F.relu(h)
        return self.fc2(h)


def test_root_control_flow_is_untraceable():
    with pytest.raises(fxlaws.UntraceableModelError) as info:
        fxlaws.annotate(_RootControlFlow(), torch.randn(2, 3))
    msg = str(info.value)
    assert "_RootControlFlow" in msg
    assert "control flow" in msg
    assert "submodule" in msg and "leaf_modules" in msg  # says what to do
    assert isinstance(info.value, fxlaws.FxlawsError)


# --- tied weights ---------------------------------------------------------------------------------

class _CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.shared = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 5)
        self.fc3 = nn.Linear(5, 2)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = F.relu(self.shared(h))
        h = F.relu(self.shared(h))
        return self.fc3(F.relu(self.fc2(h)))


class _SharedParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.c = nn.Linear(4, 5)
        self.d = nn.Linear(5, 2)

    def forward(self, x):
        return self.d(F.relu(self.c(F.relu(self.b(F.relu(self.a(x)))))))


def test_module_called_twice():
    model = _CalledTwice()
    x = torch.randn(2, 3)
    ann = fxlaws.annotate(model, x)
    assert not {"shared.weight", "shared.bias"} & _read_params(ann)
    assert [f.name for f in ann.laws] == ["rescale:fc2>fc3"]
    assert "tied" in ann.no_law["shared"]
    assert "shared" in ann.no_law["fc1"]
    assert fxlaws.soundness(model, ann, x).ok


def test_parameter_shared_by_two_modules():
    model = _SharedParameter()
    x = torch.randn(2, 4)
    ann = fxlaws.annotate(model, x)
    assert not {"a.weight", "b.weight"} & _read_params(ann)
    assert [f.name for f in ann.laws] == ["rescale:c>d"]
    for mod in ("a", "b"):
        assert "tied" in ann.no_law[mod] and "a.weight" in ann.no_law[mod]
    assert fxlaws.soundness(model, ann, x).ok


# --- BatchNorm mode -------------------------------------------------------------------------------

def _conv_bn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))


def test_train_mode_bn_has_no_note():
    ann = fxlaws.annotate(_conv_bn(), torch.randn(4, 3, 6, 6))
    assert ann.notes == []
    assert {f.theory for f in ann.laws} == {"N1", "N2", "N3"}


def test_eval_mode_bn_default_is_train_laws_with_note():
    model = _conv_bn().eval()
    x = torch.randn(4, 3, 6, 6)
    ann = fxlaws.annotate(model, x)
    assert ann.train is True
    assert {f.theory for f in ann.laws} == {"N1", "N2", "N3"}
    assert ann.counts() == {"scale (approx.)": 4, "translation": 4, "rescale": 4}
    assert len(ann.notes) == 1 and "eval mode" in ann.notes[0] and "train=False" in ann.notes[0]
    assert not model.training  # still in eval mode
    assert fxlaws.soundness(model, ann, x).ok


def test_eval_mode_bn_train_false():
    model = _conv_bn().eval()
    x = torch.randn(4, 3, 6, 6)
    ann = fxlaws.annotate(model, x, train=False)
    assert ann.train is False
    assert not {"N1", "N2"} & {f.theory for f in ann.laws}
    assert "0.bias" not in _read_params(ann)
    assert "eval mode" in ann.no_law["0"]
    assert "eval mode (fixed affine)" in str(ann)
    # the BN affine -> ReLU -> conv rescaling survives a fixed affine map
    assert [f.theory for f in ann.laws] == ["N3"]
    assert fxlaws.soundness(model, ann, x).ok


# --- the user's model is not mutated ---------------------------------------------------------------

def _snapshot(model):
    return (
        {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        {name: m.training for name, m in model.named_modules()},
        {name: (p.requires_grad, p.data_ptr()) for name, p in model.named_parameters()},
    )


def _assert_same(model, snap):
    state, modes, params = snap
    now = model.state_dict(keep_vars=True)
    assert set(now) == set(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: (p.requires_grad, p.data_ptr()) for name, p in model.named_parameters()} == params


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_model_not_mutated(grad):
    model = resnet18(width=8)
    model.train()
    model.layer2.eval()  # mixed modes
    model.layer3[0].bn1.momentum = None  # cumulative average: any forward in train mode would change it
    model.conv1.weight.requires_grad_(False)
    x = model.example_inputs()
    model(*x)  # non-trivial running stats and num_batches_tracked
    snap = _snapshot(model)
    assert any(k.endswith("num_batches_tracked") for k in snap[0])
    with torch.set_grad_enabled(grad):
        ann = fxlaws.annotate(model, x, loss="cross_entropy")
        assert torch.is_grad_enabled() is grad
        ann_eval = fxlaws.annotate(model, x, train=False)
        assert torch.is_grad_enabled() is grad
        ann.evaluate(model)
        assert torch.is_grad_enabled() is grad
    assert torch.is_grad_enabled()
    fxlaws.soundness(model, ann, x, trials=1, samples=2)
    assert ann.num_laws > 0 and ann_eval.num_laws > 0
    assert "conv1.weight" not in ann.param_shapes
    _assert_same(model, snap)


def test_soundness_under_no_grad():
    model = relu_mlp(sizes=(3, 4, 2))
    ann = fxlaws.annotate(model, model.example_inputs())
    with torch.no_grad():
        res = fxlaws.soundness(model, ann)
        assert not torch.is_grad_enabled()
    assert res.ok


# --- evaluate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: relu_mlp(sizes=(6, 5, 4, 3)),
    lambda: linear_mlp(sizes=(6, 5, 4, 3)),
    lambda: vgg_bn(cfg=[8, "M", 16, "M"]),
    lambda: resnet18(width=4),
], ids=["relu-mlp", "linear-mlp", "vgg-bn", "resnet18"])
def test_evaluate_shapes(make):
    model = make()
    ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy")
    values = ann.evaluate(model)
    assert list(values) == [f.name for f in ann.laws]
    for fam in ann.laws:
        assert tuple(values[fam.name].shape) == tuple(fam.shape), fam.name
        assert torch.isfinite(values[fam.name]).all()
    # a mapping of parameters works too and gives the same values
    again = ann.evaluate(dict(model.named_parameters()))
    for name, v in values.items():
        assert torch.equal(v, again[name])
    # a fresh model of the same architecture is accepted
    assert set(ann.evaluate(make())) == set(values)


def test_evaluate_values_match_formula():
    model = relu_mlp(sizes=(3, 4, 2))
    ann = fxlaws.annotate(model, model.example_inputs())
    (fam,) = ann.laws
    w1, b1, w2 = model.net[0].weight, model.net[0].bias, model.net[2].weight
    expected = w1.pow(2).sum(1) + b1.pow(2) - w2.pow(2).sum(0)
    torch.testing.assert_close(ann.evaluate(model)[fam.name], expected)


def test_evaluate_is_differentiable():
    model = relu_mlp(sizes=(3, 4, 2))
    ann = fxlaws.annotate(model, model.example_inputs())
    total = sum(v.sum() for v in ann.evaluate(model).values())
    total.backward()
    assert model.net[0].weight.grad is not None


def test_evaluate_stale_width():
    model = relu_mlp(sizes=(6, 5, 4, 3))
    ann = fxlaws.annotate(model, model.example_inputs())
    model.net[2] = nn.Linear(5, 7)
    with pytest.raises(fxlaws.StaleAnnotationError) as info:
        ann.evaluate(model)
    assert "net.2" in str(info.value) and "re-run" in str(info.value)
    assert isinstance(info.value, fxlaws.FxlawsError)


def test_evaluate_stale_missing_layer():
    model = relu_mlp(sizes=(6, 5, 4, 3))
    ann = fxlaws.annotate(model, model.example_inputs())
    model.net[4] = nn.Identity()
    with pytest.raises(fxlaws.StaleAnnotationError, match="net.4"):
        ann.evaluate(model)


# --- report ---------------------------------------------------------------------------------------

def test_str_has_coverage_and_counts():
    model = relu_mlp()
    ann = fxlaws.annotate(model, model.example_inputs(), loss="cross_entropy")
    text = str(ann)
    assert text == ann.report().to_text()  # print(ann) is the text report, notes included
    assert "coverage        100% of" in text
    assert "rescale 384" in text
    assert "translation 129" in text
    assert "513 in" in text
    assert "net.0>net.2" in text
    assert "loss            cross_entropy" in text
    assert "coverage 100%" in repr(ann)


def test_str_lists_modules_without_law():
    from fxlaws.models import gelu_mlp

    model = gelu_mlp()
    text = str(fxlaws.annotate(model, model.example_inputs()))
    assert "coverage        0.0% of" in text
    assert "(no law families)" in text
    why = text.split("why no law here")[1].split("parameters no law reads")[0]
    assert why.count("\n  net.") == 3 and "not positively homogeneous" in why
    unread = text.split("parameters no law reads")[1]
    assert unread.count("\n  net.") == 6  # three Linears' weights and biases, by name


def test_getitem():
    model = relu_mlp(sizes=(3, 4, 2))
    ann = fxlaws.annotate(model, model.example_inputs())
    assert ann["rescale:net.0>net.2"] is ann.laws[0]
    with pytest.raises(KeyError, match="no law family"):
        ann["nope"]
