"""fxlaws.shape_rules: the output written down for the commonest layers equals what their own meta
kernels return (shape and dtype), and where a kernel would raise (wrong feature size, dtype mix,
unsupported form) no rule answers, so the kernel runs and its error reaches the user."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import fxlaws
from fxlaws.shape_rules import output_like


def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def _check(module: nn.Module, *inputs) -> None:
    """The rule's answer for ``module(*inputs)`` (a call_module node) equals running it on meta."""
    root = nn.Module()
    root.add_module("m", module.to("meta"))
    graph = fx.Graph()
    node = graph.call_module("m", tuple(graph.placeholder(f"x{i}") for i in range(len(inputs))))
    gm = fx.GraphModule(root, graph)
    got = output_like(gm, node, inputs, {})
    want = module(*inputs)
    assert got is not None, module
    assert (got.shape, got.dtype, got.device.type) == (want.shape, want.dtype, "meta"), module


MODULES = [
    (nn.Linear(5, 7), (_meta(2, 3, 5),)),
    (nn.Linear(5, 7, bias=False), (_meta(5),)),
    (nn.LayerNorm(6), (_meta(2, 4, 6),)),
    (nn.LayerNorm((4, 6), elementwise_affine=False), (_meta(2, 4, 6),)),
    (nn.RMSNorm(6, dtype=torch.float64), (_meta(3, 6, dtype=torch.float64),)),
    (nn.BatchNorm1d(4), (_meta(3, 4),)),
    (nn.BatchNorm1d(4), (_meta(3, 4, 9),)),
    (nn.BatchNorm2d(4), (_meta(2, 4, 5, 5),)),
    (nn.BatchNorm3d(4), (_meta(2, 4, 3, 3, 3),)),
    (nn.GroupNorm(2, 4), (_meta(2, 4, 5),)),
    (nn.Conv2d(3, 8, 3), (_meta(2, 3, 9, 9),)),
    (nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (_meta(2, 3, 9, 11),)),
    (nn.Conv2d(4, 8, 3, groups=2, bias=False), (_meta(1, 4, 7, 7),)),
    (nn.Conv1d(3, 5, 4, stride=3), (_meta(2, 3, 17),)),
    (nn.AdaptiveAvgPool2d(1), (_meta(2, 3, 7, 7),)),
    (nn.AdaptiveAvgPool2d((None, 2)), (_meta(2, 3, 7, 6),)),
    *[(cls(), (_meta(2, 3),)) for cls in (nn.ReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Identity)],
    (nn.Dropout(0.3), (_meta(2, 3, dtype=torch.float16),)),
]


@pytest.mark.parametrize("module, inputs", MODULES, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_module_rules_equal_the_meta_kernels(module, inputs):
    _check(module.eval(), *inputs)


@pytest.mark.parametrize("fn, args, kwargs", [
    (F.linear, (_meta(2, 5), _meta(7, 5), _meta(7)), {}),
    (F.layer_norm, (_meta(2, 3, 6), (6,)), {"weight": _meta(6), "bias": _meta(6)}),
    (F.gelu, (_meta(2, 3),), {"approximate": "tanh"}),
    (F.dropout, (_meta(4, 3), 0.1, False), {}),
    (F.scaled_dot_product_attention, (_meta(2, 4, 5, 8), _meta(2, 4, 7, 8), _meta(2, 4, 7, 3)), {}),
    (F.scaled_dot_product_attention, (_meta(5, 8), _meta(7, 8), _meta(7, 3)), {"is_causal": True}),
    (operator.add, (_meta(2, 1, 4), _meta(3, 1)), {}),
    (torch.mul, (_meta(2, 3, dtype=torch.float16), _meta(3)), {}),
    (operator.mul, (_meta(2, 3, dtype=torch.int64), 2.5), {}),
    (operator.sub, (_meta(2, 3, dtype=torch.int32), _meta(3, dtype=torch.int64)), {}),
])
def test_function_rules_equal_the_meta_kernels(fn, args, kwargs):
    graph = fx.Graph()
    node = graph.call_function(fn, tuple(graph.placeholder(f"x{i}") for i in range(len(args))))
    got = output_like(fx.GraphModule(nn.Module(), graph), node, args, kwargs)
    want = fn(*args, **kwargs)
    assert got is not None and (got.shape, got.dtype) == (want.shape, want.dtype)


@pytest.mark.parametrize("case", ["linear features", "linear dtype", "layernorm shape", "batchnorm channels",
                                  "conv channels", "conv too small", "conv same padding", "add shapes", "bool sub",
                                  "sdpa mask", "real input", "subclass", "hooked", "batch statistics",
                                  "pool rank", "dropout p"])
def test_no_rule_where_the_kernel_must_decide(case):
    """Each case is one the kernel rejects or a form the rules leave to the kernel: no answer."""

    class MyReLU(nn.ReLU):  # a subclass may change forward: exact types only
        def forward(self, x):
            return x[..., :1]

    modules = {
        "linear features": (nn.Linear(5, 7), _meta(2, 4)),
        "linear dtype": (nn.Linear(5, 7), _meta(2, 5, dtype=torch.float64)),
        "layernorm shape": (nn.LayerNorm(6), _meta(2, 5)),
        "batchnorm channels": (nn.BatchNorm2d(4), _meta(2, 3, 5, 5)),
        "conv channels": (nn.Conv2d(3, 8, 3), _meta(2, 4, 9, 9)),
        "conv too small": (nn.Conv2d(3, 8, 5), _meta(2, 3, 3, 3)),
        "conv same padding": (nn.Conv2d(3, 8, 3, padding="same"), _meta(2, 3, 9, 9)),
        "real input": (nn.Linear(5, 7), torch.zeros(2, 5)),
        "subclass": (MyReLU(), _meta(2, 3)),
        "batch statistics": (nn.BatchNorm2d(4, track_running_stats=False), _meta(1, 4, 1, 1)),
        "pool rank": (nn.AdaptiveAvgPool2d((2, 2, 2)), _meta(2, 3, 5, 5)),
    }
    hooked = nn.Linear(5, 7)
    hooked.register_forward_hook(lambda mod, inputs, out: out.unsqueeze(0))  # a hook may reshape
    modules["hooked"] = (hooked, _meta(2, 5))
    functions = {
        "add shapes": (operator.add, (_meta(2, 3), _meta(4))),
        "bool sub": (operator.sub, (_meta(2, dtype=torch.bool), _meta(2, dtype=torch.bool))),
        "sdpa mask": (F.scaled_dot_product_attention, (_meta(5, 8), _meta(7, 8), _meta(7, 3), _meta(5, 7))),
        "dropout p": (F.dropout, (_meta(4, 3), 2.0)),
    }
    if case in modules:
        module, x = modules[case]
        root = nn.Module()
        root.add_module("m", module if case == "real input" else module.to("meta"))
        graph = fx.Graph()
        node = graph.call_module("m", (graph.placeholder("x"),))
        assert output_like(fx.GraphModule(root, graph), node, (x,), {}) is None
    else:
        fn, args = functions[case]
        graph = fx.Graph()
        node = graph.call_function(fn, tuple(graph.placeholder(f"x{i}") for i in range(len(args))))
        assert output_like(fx.GraphModule(nn.Module(), graph), node, args, {}) is None


def test_sizes_come_from_the_weights_not_from_attributes():
    """A Linear whose weight was replaced (tied to a larger table) keeps a stale ``out_features``."""
    lin = nn.Linear(3, 2)
    lin.weight = nn.Parameter(torch.randn(5, 3))
    lin.bias = None
    _check(lin, _meta(4, 3))


def test_a_bad_input_still_names_the_node():
    """With the rules in place a mismatched example input is still the kernel's error, with the node."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(fxlaws.errors.ExampleInputsError, match="'2'"):
        fxlaws.annotate(model, torch.randn(2, 4))
