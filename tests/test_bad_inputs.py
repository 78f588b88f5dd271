"""The bad-input catalogue (issue 6): odd models get the right laws or a clear error, never a false law.

Ground truth per case: the same network written plainly (law counts), the numeric soundness check,
or the error type and a message that names what to do.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws.instrument import instrument

from helpers import DT


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4)).double()


X = torch.randn(5, 3, dtype=DT)
PLAIN = fxlaws.annotate(_mlp(), X).counts()  # R1 on the 8 hidden units


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    aux: torch.Tensor


class Returns(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.net, self.kind = _mlp(), kind

    def forward(self, x):
        y = self.net(x)
        return {"dict": lambda: {"logits": y, "aux": x.sum()}, "tuple": lambda: (y, x.sum()),
                "dataclass": lambda: Output(y, x.sum())}[self.kind]()


@pytest.mark.parametrize("kind", ["dict", "tuple", "dataclass"])
def test_structured_outputs_keep_the_hidden_laws_and_say_why_t1_is_missing(kind):
    model = Returns(kind)
    ann = fxlaws.annotate(model, X, loss="cross_entropy")
    assert ann.counts() == PLAIN
    assert fxlaws.soundness(model, ann, example_inputs=X).ok
    assert any("no T1 law" in n and "logits" in n for n in ann.notes)


class KeywordOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, *, x, scale: float = 1.0):
        return self.net(x) * scale


def test_keyword_only_forward():
    ann = fxlaws.annotate(KeywordOnly(), {"x": X})
    assert ann.counts() == PLAIN
    assert fxlaws.soundness(KeywordOnly(), ann, example_inputs={"x": X}).ok


class BufferScaled(nn.Module):
    """A registered buffer scales the hidden units: a constant, not a coordinate."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 8).double(), nn.Linear(8, 4).double()
        self.register_buffer("scale", torch.rand(8, dtype=DT) + 0.5)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * self.scale)


def test_buffers_are_constants_not_coordinates():
    model = BufferScaled()
    ann = fxlaws.annotate(model, X)
    assert ann.counts() == PLAIN  # the per-unit rescaling commutes with a fixed per-unit scale
    assert all("scale" not in p for fam in ann.laws for p in fam.params)
    assert fxlaws.soundness(model, ann, example_inputs=X).ok


def test_parameters_replaced_after_annotate_or_instrument_give_a_clear_error():
    model = _mlp()
    ann = fxlaws.annotate(model, X)
    model[0] = nn.Linear(3, 9).double()  # reshaped: the laws no longer describe this model
    with pytest.raises(fxlaws.StaleAnnotationError, match=r"0.weight has shape \(9, 3\).*re-run fxlaws.annotate"):
        ann.evaluate(model)
    with pytest.raises(fxlaws.StaleAnnotationError, match="re-run fxlaws.annotate"):
        instrument(model, ann)

    model = _mlp()
    ann = fxlaws.annotate(model, X)
    inst = instrument(model, ann, sinks=[lambda m: None], flush_every=1)
    model[2].weight = nn.Parameter(torch.randn(4, 8, dtype=DT))  # new tensor, same module: both see it
    inst(X)
    torch.testing.assert_close(inst.law_metrics.values,
                               (model[0].weight.pow(2).sum(1) + model[0].bias.pow(2) - model[2].weight.pow(2).sum(0)).detach())
    model[0] = nn.Linear(3, 8).double()  # a new module: the instrumented graph still holds the old one
    with pytest.raises(fxlaws.StaleAnnotationError, match=r"Sequential.0.(weight|bias) was replaced after fxlaws.instrument"):
        inst(X)  # the flush after this record notices


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_parameters_evaluate_in_float32(dtype):
    model = _mlp().to(dtype)
    ann = fxlaws.annotate(model, X.to(dtype))
    assert ann.counts() == PLAIN
    value = ann.evaluate(model)["rescale:0>2"]
    assert value.dtype == torch.float32
    w1, b1, w2 = (t.float() for t in (model[0].weight, model[0].bias, model[2].weight))
    torch.testing.assert_close(value, w1.pow(2).sum(1) + b1.pow(2) - w2.pow(2).sum(0))
    inst = instrument(model, ann)
    inst(X.to(dtype))
    assert inst.law_metrics.values.dtype == torch.float32


class ComplexNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4).to(torch.complex128), nn.Linear(4, 2).to(torch.complex128)

    def forward(self, x):
        return self.b(self.a(x.to(torch.complex128))).abs()


@pytest.mark.filterwarnings("ignore:Complex modules are a new feature")
def test_complex_parameters_carry_no_law_and_say_why():
    # Real GL laws M Mᵀ − … are false for complex weights (their invariant is M Mᴴ − …): none attached.
    ann = fxlaws.annotate(ComplexNet(), X)
    assert ann.laws == []
    assert "complex parameters" in ann.no_law["a"] and "complex parameters" in ann.no_law["b"]


class IntegerParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.mask = nn.Parameter(torch.ones(3, dtype=torch.long), requires_grad=False)

    def forward(self, x):
        return self.net(x * self.mask)


def test_integer_parameters_are_constants():
    model = IntegerParam()
    ann = fxlaws.annotate(model, X)
    assert ann.counts() == PLAIN
    assert fxlaws.soundness(model, ann, example_inputs=X).ok


class CalledTwice(nn.Module):
    """Weight sharing in time: ``a`` runs twice, so its channels meet the raw input again."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 3).double(), nn.Linear(3, 6).double(), nn.Linear(6, 2).double()

    def forward(self, x):
        return self.c(F.relu(self.b(self.a(F.relu(self.a(x))))))


def test_module_called_twice_is_sound():
    model = CalledTwice()
    ann = fxlaws.annotate(model, X)
    assert fxlaws.soundness(model, ann, example_inputs=X).ok
    assert not any("a.weight" in fam.params for fam in ann.laws)  # scaling a's rows would rescale x
    assert "a" in ann.no_law
    assert sum(c for k, c in ann.counts().items() if k == "rescale") == 6  # b's hidden units keep R1


@pytest.mark.parametrize("wrap", ["compile", "DataParallel"])
def test_wrapped_models_are_annotated_through_the_wrapper(wrap):
    model = _mlp()
    wrapped = torch.compile(model, backend="eager") if wrap == "compile" else nn.DataParallel(model)
    ann = fxlaws.annotate(wrapped, X)
    assert ann.counts() == PLAIN and ann.frontend == "fx"
    assert [fam.params for fam in ann.laws] == [("0.weight", "0.bias", "2.weight")]  # no wrapper prefix
    assert any("inside" in n for n in ann.notes)
    torch.testing.assert_close(ann.evaluate(wrapped)["rescale:0>2"], ann.evaluate(model)["rescale:0>2"])
    assert fxlaws.soundness(wrapped, ann, example_inputs=X).ok
    with pytest.raises(TypeError, match="instrument the model before wrapping it"):
        instrument(wrapped, ann)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = instrument(wrapped, ann, mode="hook", optimizer=opt)  # reads parameters: wrappers are fine
    F.cross_entropy(wrapped(X), torch.zeros(5, dtype=torch.long)).backward()
    opt.step()
    assert hook.law_metrics.step == 1


def test_soundness_without_example_inputs_says_what_to_pass():
    """The Annotation keeps its inputs' shapes (tests/test_instrument.py); one that lost them (made
    or edited by hand) and a model without example_inputs() get told what to pass."""
    model = _mlp()
    ann = fxlaws.annotate(model, X)
    assert fxlaws.soundness(model, ann).ok
    ann.inputs = None
    with pytest.raises(fxlaws.ExampleInputsError, match="example_inputs="):
        fxlaws.soundness(model, ann)


def _hooked(where: str):
    model = _mlp()
    if where == "forward":  # shifts the hidden pre-activations: R1 of layer 0 would be false
        model[0].register_forward_hook(lambda mod, inputs, out: out + 1.0)
    elif where == "pre":
        model[2].register_forward_pre_hook(lambda mod, inputs: (inputs[0] + 1.0,))
    else:
        model.register_forward_hook(lambda mod, inputs, out: out * 2.0)
    return model


@pytest.mark.parametrize("where", ["forward", "pre", "root"])
def test_forward_hooks_are_traced_never_ignored(where):
    model = _hooked(where)
    ann = fxlaws.annotate(model, X)
    assert ann.frontend == "export"  # torch.export runs Module.__call__, hooks included
    assert fxlaws.soundness(model, ann, example_inputs=X).ok
    if where != "root":
        assert ann.laws == []  # the hook breaks the rescaling of layer 0's units
    else:
        assert ann.counts() == PLAIN  # scaling the output does not touch hidden symmetries


def test_fx_front_end_keeps_hooked_modules_opaque_and_refuses_root_hooks():
    ann = fxlaws.annotate(_hooked("forward"), X, frontend="fx")
    assert ann.laws == [] and "forward hook" in ann.opaque["0"]
    with pytest.raises(fxlaws.UntraceableModelError, match="root-module forward hooks"):
        fxlaws.annotate(_hooked("root"), X, frontend="fx")


def test_instrument_and_drift_tracking_of_a_meta_model_say_to_materialise_it():
    from fxlaws.drift import DriftTracker

    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    ann = fxlaws.annotate(model, torch.randn(5, 3))
    assert ann.counts() == fxlaws.annotate(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4)),
                                           torch.randn(5, 3)).counts()
    with pytest.raises(fxlaws.MetaDeviceError, match="to_empty"):
        instrument(model, ann)
    with pytest.raises(fxlaws.MetaDeviceError, match="to_empty"):
        DriftTracker(model, ann, torch.optim.SGD(model.parameters(), lr=0.1))


def test_gradient_hooks_are_reported_in_the_notes():
    model = _mlp()
    model[0].weight.register_hook(lambda g: g.clamp(-1, 1))
    model[2].register_full_backward_hook(lambda mod, gin, gout: None)
    ann = fxlaws.annotate(model, X)
    note = next(n for n in ann.notes if n.startswith("Gradient hooks"))
    assert "0.weight" in note and "2" in note
    assert not any(n.startswith("Gradient hooks") for n in fxlaws.annotate(_mlp(), X).notes)
