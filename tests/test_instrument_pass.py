"""The instrument pass on its own: what the rewritten graph's code calls, and where; the name of the
metric submodule; outputs and checkpoints unchanged; the states it refuses."""

import pytest
import torch
from torch import nn
from torch.testing import FileCheck

import fxlaws
from fxlaws.errors import PassOrderError, StaleAnnotationError
from fxlaws.metrics import LawMetrics, law_metrics_for
from fxlaws.models import get_model
from fxlaws.passes.instrument import InstrumentPass, InstrumentState, get_new_attr_name_with_prefix

MODELS = ["mlp", "resnet18"]


def _state(model, ann=None, **changes) -> InstrumentState:
    ann = ann if ann is not None else fxlaws.annotate(model, model.example_inputs())
    metrics = law_metrics_for(ann, model)
    state = InstrumentState(graph=ann.graph, frontend=ann.frontend, model=model, metrics=metrics,
                            names=metrics.names)
    return InstrumentState(**{**state.__dict__, **changes})


def _law_params(ann) -> list[str]:
    """The parameters the laws read, from the law families themselves."""
    return sorted({p for fam in ann.laws for p in fam.params})


@pytest.mark.parametrize("name", MODELS)
def test_metrics_called_once_after_the_models_ops_right_before_the_return(name):
    model = get_model(name)
    ann = fxlaws.annotate(model, model.example_inputs())
    before = ann.graph.code
    returned = next(n for n in ann.graph.graph.nodes if n.op == "output").args[0].name
    out = InstrumentPass()(_state(model, ann))
    assert out.modified
    gm, target = out.state.result, out.state.target
    assert target == "fxlaws_metrics"
    assert isinstance(getattr(gm, target), LawMetrics)
    code = gm.code
    FileCheck().check_count("self.fxlaws_metrics(", 1, exactly=True).run(code)
    # the model's last op, then the metric call, then (next line) the unchanged return
    FileCheck().check(f"{returned} = ").check("self.fxlaws_metrics(").check_next(f"return {returned}").run(code)
    # every model op of the original graph comes before the metric call
    model_ops = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    assert model_ops[-1].target == target
    assert [n.name for n in model_ops[:-1]] == [n.name for n in ann.graph.graph.nodes
                                                if n.op in ("call_module", "call_function", "call_method")]
    call = model_ops[-1]
    assert [a.op for a in call.args] == ["get_attr"] * len(call.args)
    assert [a.target for a in call.args] == _law_params(ann)
    assert list(call.users) == []  # its result is not used: the output is the model's
    # the annotation's graph is untouched and never calls the metrics
    assert ann.graph.code == before
    FileCheck().check_not("fxlaws_metrics").run(ann.graph.code)
    assert not hasattr(ann.graph, "fxlaws_metrics")


@pytest.mark.parametrize("name", MODELS)
def test_outputs_and_state_dict_keys_are_the_models(name):
    model = get_model(name)
    keys = list(model.state_dict())
    gm = InstrumentPass()(_state(model)).state.result
    metrics = gm.fxlaws_metrics
    x = model.example_inputs()
    model.eval()
    gm.eval()
    with torch.no_grad():
        assert torch.equal(gm(*x), model(*x))
    assert metrics.calls == 0  # eval mode: not recorded
    model.train()
    gm.train()
    assert torch.equal(gm(*x), model(*x))  # train mode (BatchNorm: batch statistics)
    assert metrics.calls == 1  # the metric call is live in a training forward with grad
    assert list(gm.state_dict()) == keys == list(model.state_dict())
    shared = dict(model.named_parameters())
    assert all(shared[n] is p for n, p in gm.named_parameters())  # parameters are shared, not copied


@pytest.mark.parametrize("taken, expected", [(["fxlaws_metrics"], "fxlaws_metrics_1"),
                                             (["fxlaws_metrics", "fxlaws_metrics_1"], "fxlaws_metrics_2")])
def test_a_model_attribute_of_that_name_gets_the_next_free_name(taken, expected):
    model = get_model("mlp")
    for attr in taken:
        setattr(model, attr, "the user's")
    keys = list(model.state_dict())
    out = InstrumentPass()(_state(model)).state
    assert out.target == expected
    code = out.result.code
    FileCheck().check_count(f"self.{expected}(", 1, exactly=True).check_next("return").run(code)
    FileCheck().check_not("self.fxlaws_metrics(").run(code)
    assert all(getattr(model, attr) == "the user's" for attr in taken)  # never overwritten
    assert list(out.result.state_dict()) == keys
    x = model.example_inputs()
    assert torch.equal(out.result(*x), model(*x))


class _UsesTheName(nn.Module):
    """A model whose own forward calls a submodule named ``fxlaws_metrics``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fxlaws_metrics, self.fc2 = nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)

    def forward(self, x):
        return self.fc2(self.fxlaws_metrics(self.fc1(x)))


def test_a_model_submodule_of_that_name_is_kept_and_instrument_finds_the_chosen_name():
    torch.manual_seed(0)
    model, x = _UsesTheName(), torch.randn(4, 3)
    ann = fxlaws.annotate(model, x)
    assert ann.laws  # the ReLU between the two Linear layers carries rescaling laws
    gm = InstrumentPass()(_state(model, ann)).state.result
    FileCheck().check_count("self.fxlaws_metrics(", 1, exactly=True).check("self.fc2(") \
        .check_count("self.fxlaws_metrics_1(", 1, exactly=True).check_next("return").run(gm.code)
    assert isinstance(gm.fxlaws_metrics, nn.ReLU) and isinstance(gm.fxlaws_metrics_1, LawMetrics)
    inst = fxlaws.instrument(model, ann)
    assert isinstance(inst.law_metrics, LawMetrics) and inst.law_metrics is inst.module.fxlaws_metrics_1
    inst.train()
    assert torch.equal(inst(x), model(x))
    assert inst.law_metrics.calls == 1
    clean = inst.remove()
    assert isinstance(clean.fxlaws_metrics, nn.ReLU) and not hasattr(clean, "fxlaws_metrics_1")
    FileCheck().check_count("self.fxlaws_metrics(", 1, exactly=True).check_not("fxlaws_metrics_1").run(clean.code)
    assert torch.equal(clean(x), model(x))


def test_get_new_attr_name_with_prefix():
    module = nn.Module()
    new_name = get_new_attr_name_with_prefix("a.b")
    assert new_name(module) == "a_b"
    module.a_b = nn.Identity()
    assert new_name(module) == "a_b_1"
    other = nn.Module()
    other.a_b_1 = 1
    assert new_name(module, other) == "a_b_2"


def test_requires_refuses_a_state_without_a_graph():
    model = get_model("mlp")
    with pytest.raises(PassOrderError, match="graph"):
        InstrumentPass()(_state(model, graph=None))
    with pytest.raises(PassOrderError, match="metric"):
        InstrumentPass()(_state(model, metrics=None))


def test_requires_refuses_an_export_graph():
    model = get_model("mlp")
    ann = fxlaws.annotate(model, model.example_inputs(), frontend="export")
    assert ann.frontend == "export"
    with pytest.raises(ValueError, match="torch.fx"):
        InstrumentPass()(_state(model, ann))


def test_graph_of_another_instance_is_re_rooted_on_the_model():
    model, other = get_model("mlp"), get_model("mlp")
    ann = fxlaws.annotate(other, other.example_inputs())
    gm = InstrumentPass()(_state(model, ann)).state.result
    mine = dict(model.named_parameters())
    assert all(mine[n] is p for n, p in gm.named_parameters())  # the model's parameters, not other's
    x = model.example_inputs()
    assert torch.equal(gm(*x), model(*x)) and not torch.equal(gm(*x), other(*x))


def test_graph_that_cannot_be_re_rooted_holds_foreign_parameters():
    torch.manual_seed(0)
    model, other = _UsesTheName(), _UsesTheName()
    ann = fxlaws.annotate(other, torch.randn(4, 3))
    del model.fxlaws_metrics  # the graph's call_module target is gone: it stays rooted on other's graph
    with pytest.raises(StaleAnnotationError, match="not this model's"):
        InstrumentPass()(_state(model, ann))


def test_the_input_state_is_left_as_it_was_and_the_pass_is_reusable():
    model = get_model("mlp")
    state = _state(model)
    pass_ = InstrumentPass()
    first, second = pass_(state).state, pass_(state).state
    assert state.result is None and state.target is None
    assert first.result is not second.result and first.target == second.target == "fxlaws_metrics"
    assert first.metrics is second.metrics is state.metrics  # the caller's LawMetrics, inserted as is
