"""The docs/THEORY.md catalogue, row by row, on tiny hand-written models (float64).

For every case this file checks
  (a) the number of independent scalar laws per kind, against a count derived BY HAND in a comment
      from docs/THEORY.md (never copied from the library's output),
  (b) the THEORY row ids the library attaches,
  (c) ``fxlaws.soundness`` (exact laws: worst relative inner product <= 1e-9),
and for several cases
  (d) an independent numeric check written here: the law recomputed by hand from the weights, its
      gradient taken with torch.autograd and shown orthogonal to the loss gradient, or a tiny
      explicit-Euler gradient-flow run in which the law stays put while a non-law quantity drifts.

Shapes follow the THEORY note "Law counts on tiny instances": input dims >= 3, batch >= 2.
"""

from __future__ import annotations

from typing import Callable

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from helpers import FusedGateUp, img, seq, vec, worst_rel_inner
from fxlaws.laws.symbolic import substitute

DT = torch.float64
TOL = 1e-9  # exact-law soundness threshold (THEORY §4.1: ~1e-12 expected in float64)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def annotate(model: nn.Module, x, **kw):
    return fxlaws.annotate(model.double(), x, **kw)


def rows(ann) -> set[str]:
    return {f.theory for f in ann.laws}


def assert_sound(model: nn.Module, ann, x) -> None:
    res = fxlaws.soundness(model, ann, x, trials=2, samples=8)
    assert res.ok, str(res)
    assert res.worst_exact <= TOL, str(res)
    for row in res.rows:
        if row.exact:
            assert row.passed is True and row.components > 0, str(res)
        else:
            assert row.passed is None  # approximate laws are reported, not judged


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def fam_by_theory(ann, theory: str):
    fams = [f for f in ann.laws if f.theory == theory]
    assert len(fams) == 1, [(f.name, f.theory) for f in ann.laws]
    return fams[0]


def sq_rows(w: torch.Tensor) -> torch.Tensor:
    """‖w[j]‖² for each j along axis 0 (all other axes summed)."""
    return w.pow(2).reshape(w.shape[0], -1).sum(1)


def sq_cols(w: torch.Tensor) -> torch.Tensor:
    """‖w[:, j]‖² for each j along axis 1 (all other axes summed)."""
    return sq_rows(w.transpose(0, 1))


def mse_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    out = model(x)
    if y is None:
        y = torch.randn(out.shape, dtype=DT)
    return F.mse_loss(out, y)


# ---------------------------------------------------------------------------------------------
# R1: ReLU MLP 3-4-2 with biases, equivalent ways of writing it
# ---------------------------------------------------------------------------------------------
class FwdMLP(nn.Module):
    """fc1 -> act -> fc2 with a hand-written forward."""

    def __init__(self, act: Callable, act_module: nn.Module | None = None):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        if act_module is not None:
            self.act = act_module
        self.fc2 = nn.Linear(4, 2)
        self._act = act

    def forward(self, x):
        h = self.fc1(x)
        h = self.act(h) if hasattr(self, "act") else self._act(h)
        return self.fc2(h)


RELU_VARIANTS = {
    "seq-nn.ReLU": lambda: seq(fc1=nn.Linear(3, 4), act=nn.ReLU(), fc2=nn.Linear(4, 2)),
    "seq-nn.LeakyReLU": lambda: seq(fc1=nn.Linear(3, 4), act=nn.LeakyReLU(0.1), fc2=nn.Linear(4, 2)),
    "fwd-F.relu": lambda: FwdMLP(F.relu).double(),
    "fwd-torch.relu": lambda: FwdMLP(torch.relu).double(),
    "fwd-Tensor.relu": lambda: FwdMLP(lambda t: t.relu()).double(),
    "fwd-nn.ReLU-submodule": lambda: FwdMLP(None, nn.ReLU()).double(),
    "fwd-F.leaky_relu": lambda: FwdMLP(lambda t: F.leaky_relu(t, 0.2)).double(),
    "fwd-identity-dropout-eval": lambda: FwdMLP(lambda t: F.dropout(F.relu(t), 0.5, training=False)).double(),
}

# Hand derivation (THEORY R1): fc1 (producer, 4 hidden channels) -> positively 1-homogeneous,
# channel-wise activation -> fc2 (only consumer). One law in_j - out_j per hidden channel: 4 laws,
# all "rescale". fc2 is the output layer: under "any loss" nothing acts on its rows (T1 needs CE).
MLP_SIGNATURE = [("rescale", "R1", 4, True, frozenset({"fc1.weight", "fc1.bias", "fc2.weight"}), (4,))]


def signature(ann):
    return [(f.kind, f.theory, f.count, f.exact, frozenset(f.params), tuple(f.shape)) for f in ann.laws]


@pytest.mark.parametrize("variant", list(RELU_VARIANTS))
def test_r1_relu_mlp_equivalent_spellings(variant):
    model, x = RELU_VARIANTS[variant](), vec()
    ann = annotate(model, x)
    assert ann.counts() == {"rescale": 4}
    assert ann.num_laws == 4
    assert rows(ann) == {"R1"}
    assert signature(ann) == MLP_SIGNATURE
    assert ann.laws[0].assumptions == frozenset({"any-loss"})
    assert_sound(model, ann, x)


def test_r1_relu_mlp_spellings_evaluate_identically():
    """Same weights loaded into every spelling: the law values agree and equal the hand formula."""
    ref = RELU_VARIANTS["seq-nn.ReLU"]()
    state = ref.state_dict()
    p = params_of(ref)
    hand = sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - sq_cols(p["fc2.weight"])
    for name, build in RELU_VARIANTS.items():
        model = build()
        model.load_state_dict(state)
        ann = annotate(model, vec())
        (value,) = ann.evaluate(model).values()
        torch.testing.assert_close(value, hand, rtol=1e-12, atol=1e-12, msg=name)


def test_r1_relu_mlp_gradient_orthogonal_by_hand():
    model, x = RELU_VARIANTS["fwd-F.relu"](), vec(8)

    def law(p):  # THEORY R1, written out by hand
        return sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - sq_cols(p["fc2.weight"])

    assert worst_rel_inner(model, mse_loss(model, x), law) < 1e-12

    def not_a_law(p):  # the bias is dropped: not conserved
        return sq_rows(p["fc1.weight"]) - sq_cols(p["fc2.weight"])

    assert worst_rel_inner(model, mse_loss(model, x), not_a_law) > 1e-4


# ---------------------------------------------------------------------------------------------
# G1: linear 3-4-2 (no nonlinearity)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_g1_linear_mlp(bias):
    # Hand derivation (THEORY G1): hidden width r = 4, the law M_P M_P^T - M_C M_C^T is a symmetric
    # 4x4 matrix: r(r+1)/2 = 4*5/2 = 10 independent entries. THEORY lists 10 for the bias-free 3-4-2;
    # with biases M_P = [W1, b1] is 4x4 and the matrix law is still symmetric 4x4: 10.
    # The last layer's bias is an output bias: no law under any loss.
    model = seq(fc1=nn.Linear(3, 4, bias=bias), fc2=nn.Linear(4, 2, bias=bias))
    x = vec()
    ann = annotate(model, x)
    assert ann.counts() == {"gl": 10}
    assert rows(ann) == {"G1"}
    (fam,) = ann.laws
    assert fam.shape == (4, 4) and fam.exact
    expected_params = {"fc1.weight", "fc2.weight"} | ({"fc1.bias"} if bias else set())
    assert set(fam.params) == expected_params
    # (d) the matrix law, by hand
    p = params_of(model)
    w1, w2 = p["fc1.weight"], p["fc2.weight"]
    hand = w1 @ w1.T - w2.T @ w2
    if bias:
        hand = hand + torch.outer(p["fc1.bias"], p["fc1.bias"])
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


def test_g1_linear_gradient_orthogonal_by_hand():
    model, x = seq(fc1=nn.Linear(3, 4), fc2=nn.Linear(4, 2)), vec(8)

    def law(p):
        w1, b1, w2 = p["fc1.weight"], p["fc1.bias"], p["fc2.weight"]
        h = w1 @ w1.T + torch.outer(b1, b1) - w2.T @ w2
        iu = torch.triu_indices(4, 4)
        return h[iu[0], iu[1]]

    assert worst_rel_inner(model, mse_loss(model, x), law) < 1e-12


# ---------------------------------------------------------------------------------------------
# R3: positively k-homogeneous activation
# ---------------------------------------------------------------------------------------------
class PowMLP(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)
        self.act = act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


POWERS = {
    "x**2": (lambda t: t**2, 2),
    "torch.square": (torch.square, 2),
    "x*x": (lambda t: t * t, 2),
    "Tensor.pow(2)": (lambda t: t.pow(2), 2),
    "x**3": (lambda t: t**3, 3),
}


@pytest.mark.parametrize("name", list(POWERS))
def test_r3_power_activation(name):
    act, k = POWERS[name]
    model, x = PowMLP(act).double(), vec()
    ann = annotate(model, x)
    # Hand derivation (THEORY R3): s -> s^k is positively k-homogeneous; one law in_j - k*out_j per
    # hidden channel: 4 laws.
    assert ann.counts() == {"rescale": 4}
    assert rows(ann) == {"R3"}
    (fam,) = ann.laws
    p = params_of(model)
    hand = sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - k * sq_cols(p["fc2.weight"])
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


def test_r3_square_gradient_orthogonal_by_hand():
    model, x = PowMLP(torch.square).double(), vec(8)

    def law(p):
        return sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - 2 * sq_cols(p["fc2.weight"])

    def r1_form(p):  # coefficient 1 (the R1 law) is NOT conserved through a square
        return sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - sq_cols(p["fc2.weight"])

    assert worst_rel_inner(model, mse_loss(model, x), law) < 1e-12
    assert worst_rel_inner(model, mse_loss(model, x), r1_form) > 1e-4


# ---------------------------------------------------------------------------------------------
# R2: branches (several consumers / several producers)
# ---------------------------------------------------------------------------------------------
class TwoConsumers(nn.Module):
    def __init__(self, tuple_out: bool):
        super().__init__()
        self.p = nn.Linear(3, 3)
        self.c1 = nn.Linear(3, 2)
        self.c2 = nn.Linear(3, 2)
        self.tuple_out = tuple_out

    def forward(self, x):
        h = F.relu(self.p(x))
        return (self.c1(h), self.c2(h)) if self.tuple_out else self.c1(h) + self.c2(h)


class TwoProducers(nn.Module):
    def __init__(self):
        super().__init__()
        self.p1 = nn.Linear(3, 4)
        self.p2 = nn.Linear(3, 4)
        self.c = nn.Linear(4, 2)

    def forward(self, x):
        return self.c(F.relu(self.p1(x) + self.p2(x)))


@pytest.mark.parametrize("tuple_out", [False, True], ids=["summed-outputs", "two-outputs"])
def test_r2_two_consumers(tuple_out):
    model, x = TwoConsumers(tuple_out).double(), vec()
    ann = annotate(model, x)
    # Hand derivation (THEORY R2 / §2 note): 3 ReLU units feeding c1 and c2: one law per unit,
    # in_j - out_j(c1) - out_j(c2): 3 laws. Summed outputs: c1.bias + u and c2.bias − u cancel (T3), 2 laws.
    assert ann.counts() == ({"rescale": 3} if tuple_out else {"rescale": 3, "translation": 2})
    assert rows(ann) == ({"R2"} if tuple_out else {"R2", "T3"})
    (fam,) = [f for f in ann.laws if f.theory == "R2"]
    p = params_of(model)
    hand = sq_rows(p["p.weight"]) + p["p.bias"] ** 2 - sq_cols(p["c1.weight"]) - sq_cols(p["c2.weight"])
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


def test_r2_two_producers_summed():
    model, x = TwoProducers().double(), vec()
    ann = annotate(model, x)
    # Hand derivation (THEORY R2): p1 + p2 summed (nothing else added) -> ReLU -> c, 4 hidden units:
    # Σ_P in_j - out_j per unit: 4 laws. T3: p1.bias + u, p2.bias − u cancel in the sum: 4 laws.
    assert ann.counts() == {"rescale": 4, "translation": 4}
    assert rows(ann) == {"R2", "T3"}
    (fam,) = [f for f in ann.laws if f.theory == "R2"]
    p = params_of(model)
    hand = (sq_rows(p["p1.weight"]) + p["p1.bias"] ** 2 + sq_rows(p["p2.weight"]) + p["p2.bias"] ** 2
            - sq_cols(p["c.weight"]))
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)

    def law(q):
        return (sq_rows(q["p1.weight"]) + q["p1.bias"] ** 2 + sq_rows(q["p2.weight"]) + q["p2.bias"] ** 2
                - sq_cols(q["c.weight"]))

    assert worst_rel_inner(model, mse_loss(model, vec(8)), law) < 1e-12


# ---------------------------------------------------------------------------------------------
# Convolutions: G1 / R1 through pools and flatten, depthwise consumer
# ---------------------------------------------------------------------------------------------
# (builder, expected counts, expected rows) -- counts derived by hand below each entry.
CONV_CASES = {
    # conv(3->2) -> conv(2->2), no nonlinearity: G1 with r = 2 hidden channels: 2*3/2 = 3 (THEORY note).
    "conv-conv": (lambda: seq(c1=nn.Conv2d(3, 2, 3), c2=nn.Conv2d(2, 2, 3)), {"gl": 3}, {"G1"}),
    # conv(3->2) -> ReLU -> conv(2->2): R1, one law per hidden channel: 2.
    "conv-relu-conv": (lambda: seq(c1=nn.Conv2d(3, 2, 3), act=nn.ReLU(), c2=nn.Conv2d(2, 2, 3)),
                       {"rescale": 2}, {"R1"}),
    # LeNet-like: conv(3->2) -> ReLU -> pool -> flatten -> Linear(8, 3): pools and flatten keep channel
    # j identifiable (columns j*4 .. j*4+3 of the Linear): R1, 2 hidden channels: 2.
    "lenet-maxpool": (lambda: seq(c1=nn.Conv2d(3, 2, 3), act=nn.ReLU(), pool=nn.MaxPool2d(2),
                                  flat=nn.Flatten(), fc=nn.Linear(8, 3)), {"rescale": 2}, {"R1"}),
    "lenet-avgpool": (lambda: seq(c1=nn.Conv2d(3, 2, 3), act=nn.ReLU(), pool=nn.AvgPool2d(2),
                                  flat=nn.Flatten(), fc=nn.Linear(8, 3)), {"rescale": 2}, {"R1"}),
    "lenet-adaptiveavg": (lambda: seq(c1=nn.Conv2d(3, 2, 3), act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
                                      flat=nn.Flatten(), fc=nn.Linear(8, 3)), {"rescale": 2}, {"R1"}),
    # conv(3->4) -> ReLU -> depthwise conv (groups=4): channel j reaches only depthwise filter j:
    # R1, one law per channel: 4.
    "depthwise-consumer": (lambda: seq(c1=nn.Conv2d(3, 4, 3), act=nn.ReLU(), c2=nn.Conv2d(4, 4, 3, groups=4)),
                           {"rescale": 4}, {"R1"}),
    # conv(3->4) -> ReLU -> conv(4->6, groups=2): channel j = 2g + i reaches column i of rows 3g..3g+2
    # only: R1, one law per channel: 4.
    "grouped-consumer": (lambda: seq(c1=nn.Conv2d(3, 4, 3), act=nn.ReLU(), c2=nn.Conv2d(4, 6, 3, groups=2)),
                         {"rescale": 4}, {"R1"}),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_catalogue(case):
    build, counts, theory = CONV_CASES[case]
    model, x = build(), img()
    ann = annotate(model, x)
    assert ann.counts() == counts
    assert rows(ann) == theory
    assert_sound(model, ann, x)


def test_g1_conv_conv_matrix_by_hand():
    model = CONV_CASES["conv-conv"][0]()
    ann = annotate(model, img())
    (fam,) = ann.laws
    assert fam.shape == (2, 2)
    p = params_of(model)
    mp = torch.cat([p["c1.weight"].reshape(2, -1), p["c1.bias"][:, None]], 1)
    mc = p["c2.weight"].transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(fam.evaluate(p), mp @ mp.T - mc @ mc.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["lenet-maxpool", "lenet-avgpool", "lenet-adaptiveavg"])
def test_r1_lenet_flatten_slot_by_hand(case):
    model, x = CONV_CASES[case][0](), img()
    ann = annotate(model, x)
    (fam,) = ann.laws
    p = params_of(model)
    hw = 4  # 6x6 -conv3-> 4x4 -pool-> 2x2
    w1, b1, w2 = p["c1.weight"], p["c1.bias"], p["fc.weight"]
    hand = torch.stack([w1[j].pow(2).sum() + b1[j] ** 2 - w2[:, j * hw:(j + 1) * hw].pow(2).sum()
                        for j in range(2)])
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ann.evaluate(model)[fam.name], hand, rtol=1e-12, atol=1e-12)

    def law(q):
        w1, b1, w2 = q["c1.weight"], q["c1.bias"], q["fc.weight"]
        return sq_rows(w1) + b1**2 - w2.pow(2).reshape(3, 2, hw).sum((0, 2))

    assert worst_rel_inner(model, mse_loss(model, x), law) < 1e-12


def test_r1_depthwise_consumer_by_hand():
    model, x = CONV_CASES["depthwise-consumer"][0](), img()
    ann = annotate(model, x)
    (fam,) = ann.laws
    p = params_of(model)
    # depthwise weight is [4, 1, 3, 3]: channel j's consumer slice is the ROW c2.weight[j]
    hand = sq_rows(p["c1.weight"]) + p["c1.bias"] ** 2 - sq_rows(p["c2.weight"])
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert "c2.bias" not in fam.params


def test_r1_grouped_consumer_by_hand():
    model, x = CONV_CASES["grouped-consumer"][0](), img()
    ann = annotate(model, x)
    (fam,) = ann.laws
    p = params_of(model)
    w2 = p["c2.weight"]  # [6, 2, 3, 3]: groups of 3 rows, each reading 2 input channels
    out = torch.stack([w2[3 * (j // 2):3 * (j // 2) + 3, j % 2].pow(2).sum() for j in range(4)])
    hand = sq_rows(p["c1.weight"]) + p["c1.bias"] ** 2 - out
    torch.testing.assert_close(fam.evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert ann.coverage == pytest.approx(1 - 6 / sum(t.numel() for t in p.values()))  # all but c2.bias


class _LayerScaled(nn.Module):
    """``x + γ ⊙ (W x + b)`` (LayerScale before a residual, as in ConvNeXt and CaiT): channels-last
    with ``γ`` of shape (C,), NCHW with ``γ.reshape(1, -1, 1, 1)`` or with ``γ`` of shape (C, 1, 1)."""

    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout
        self.proj = nn.Linear(4, 4) if layout == "last" else nn.Conv2d(4, 4, 1)
        self.gamma = nn.Parameter(torch.rand(4, 1, 1) + 0.5 if layout == "c11" else torch.rand(4) + 0.5)

    def forward(self, x):
        g = self.gamma.reshape(1, -1, 1, 1) if self.layout == "reshaped" else self.gamma
        return x + self.proj(x) * g


@pytest.mark.parametrize("layout", ["last", "reshaped", "c11"])
def test_layerscale_is_its_producers_consumer_by_hand(layout):
    """R1 with a diagonal consumer: P's row j and bias × λ, γ_j × 1/λ keep γ_j (P x)_j; nothing else
    reads P's output, so per channel ``‖W_j‖² + b_j² − γ_j²`` is conserved (4 laws; the residual add
    breaks every other law here)."""
    model = _LayerScaled(layout).double()
    x = torch.randn(5, 3, 4, dtype=torch.float64) if layout == "last" else img(c=4).double()
    ann = annotate(model, x)
    (fam,) = ann.laws
    assert (fam.theory, fam.count) == ("R1", 4)
    p = params_of(model)
    hand = sq_rows(p["proj.weight"]) + p["proj.bias"] ** 2 - p["gamma"].reshape(-1) ** 2
    torch.testing.assert_close(fam.evaluate(p).reshape(-1), hand, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


def test_a_gain_after_routed_experts_or_applied_in_place_is_no_consumer():
    """Review counterexamples: one γ shared by every expert's rows (routed channels e·n + i) is not a
    per-channel consumer (8 "laws" on a γ of 4 entries, evaluate failed), and ``h.mul_(g)`` mutates a
    value other readers hold. Neither gets a gain law; what is attached stays sound."""

    class Routed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(2, 4, 4, dtype=torch.float32))  # grouped_mm: no float64
            self.g = nn.Parameter(torch.rand(4, dtype=torch.float32) + 0.5)
            self.head = nn.Linear(4, 2, dtype=torch.float32)

        def forward(self, x, offs):
            return self.head(torch.relu(torch._grouped_mm(x, self.w1, offs=offs)) * self.g)

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head, self.head2 = nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(6, 3)
            self.g = nn.Parameter(torch.rand(6) + 0.5)

        def forward(self, x):
            h = self.fc(x)
            r = h
            h.mul_(self.g)
            return self.head(h) + self.head2(r)

    routed = Routed()
    ann = fxlaws.annotate(routed, (torch.randn(6, 4, dtype=torch.float32), torch.tensor([2, 6], dtype=torch.int32)))
    assert not any("g" in fam.params for fam in ann.laws)
    model = InPlace().double()
    x = vec(d=4).double()
    ann = annotate(model, x)
    assert not any("g" in fam.params for fam in ann.laws)
    assert_sound(model, ann, x)


# ---------------------------------------------------------------------------------------------
# N1 / N2 / N3: normalisation layers
# ---------------------------------------------------------------------------------------------
def test_layernorm_mlp_counts():
    model = seq(fc1=nn.Linear(3, 4), ln=nn.LayerNorm(4), act=nn.ReLU(), fc2=nn.Linear(4, 2))
    x = vec()
    ann = annotate(model, x)
    # Hand derivation:
    #  N1 (Linear -> LayerNorm over the 4 features): Σ_j W1[j] is a vector over the 3 inputs (3 laws)
    #     plus Σ_j b1[j] (1 law): 4 translation laws.
    #  N3 (LN affine γ_j, β_j -> ReLU -> fc2): γ_j² + β_j² - out_j per feature: 4 rescale laws.
    #  N2 (LN normalises one group of 4 features): Σ_j in_j, 1 approximate scale law.
    #  Total 8 exact + 1 approximate (THEORY note).
    assert ann.counts() == {"translation": 4, "rescale": 4, "scale (approx.)": 1}
    assert rows(ann) == {"N1", "N2", "N3"}
    exact = {f.theory: f.exact for f in ann.laws}
    assert exact == {"N1": True, "N2": False, "N3": True}
    assert sum(f.count for f in ann.laws if f.exact) == 8
    p = params_of(model)
    ev = ann.evaluate(model)
    by_row: dict[str, list] = {}
    for f in ann.laws:
        by_row.setdefault(f.theory, []).append(ev[f.name])
    # N1 values by hand: the weight-column sums and the bias sum (in some order of families)
    n1 = sorted((v.reshape(-1) for v in by_row["N1"]), key=len)
    torch.testing.assert_close(n1[0], p["fc1.bias"].sum().reshape(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(n1[1], p["fc1.weight"].sum(0), rtol=1e-12, atol=1e-12)
    (n2,) = by_row["N2"]
    torch.testing.assert_close(n2.reshape(()), p["fc1.weight"].pow(2).sum() + p["fc1.bias"].pow(2).sum(),
                               rtol=1e-12, atol=1e-12)
    (n3,) = by_row["N3"]
    torch.testing.assert_close(n3, p["ln.weight"] ** 2 + p["ln.bias"] ** 2 - sq_cols(p["fc2.weight"]),
                               rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


@pytest.mark.parametrize("eps, small", [(0.0, True), (1.0, False)])
def test_n2_layernorm_is_exact_only_as_eps_goes_to_zero(eps, small):
    """N2 is approximate: with eps = 0 the law is exact, with a large eps it visibly breaks."""
    model = seq(fc1=nn.Linear(3, 4), ln=nn.LayerNorm(4, eps=eps), act=nn.ReLU(), fc2=nn.Linear(4, 2))
    x = vec(8)

    def law(p):  # N2 by hand: Σ_j ‖W1[j]‖² + b1[j]²
        return (p["fc1.weight"].pow(2).sum() + p["fc1.bias"].pow(2).sum()).reshape(1)

    worst = worst_rel_inner(model, mse_loss(model, x), law)
    assert (worst < 1e-12) if small else (worst > 1e-6)


# (builder, expected counts, rows, N1 by hand, N2 by hand, norm-train-mode assumed on N1/N2)
def _conv_norm(norm: nn.Module, c: int) -> nn.Sequential:
    return seq(c1=nn.Conv2d(3, c, 3), norm=norm, act=nn.ReLU(), c2=nn.Conv2d(c, 2, 3))


def _in_j(p):
    return sq_rows(p["c1.weight"]) + p["c1.bias"] ** 2


NORM_CASES = {
    # conv(3->2) -> BatchNorm2d(2) (train mode) -> ReLU -> conv: BN averages over (N, H, W) per channel,
    #  N1: the conv bias of each channel is a law itself: 2; N2: in_j per channel: 2 approx.;
    #  N3: γ_j² + β_j² - out_j: 2.
    "batchnorm": (lambda: _conv_norm(nn.BatchNorm2d(2), 2),
                  {"translation": 2, "scale (approx.)": 2, "rescale": 2},
                  lambda p: p["c1.bias"], _in_j, True),
    # conv(3->4) -> GroupNorm(2 groups of 2) -> ReLU -> conv: GN averages over (group channels, H, W),
    #  N1: Σ_{j∈group} bias_j: 2; N2: Σ_{j∈group} in_j: 2 approx.; N3: 4 (one per channel).
    "groupnorm": (lambda: _conv_norm(nn.GroupNorm(2, 4), 4),
                  {"translation": 2, "scale (approx.)": 2, "rescale": 4},
                  lambda p: p["c1.bias"].view(2, 2).sum(1), lambda p: _in_j(p).view(2, 2).sum(1), False),
    # conv(3->2) -> InstanceNorm2d(2, affine) -> ReLU -> conv: IN averages over (H, W) per sample and
    # channel: same as BN: N1 2, N2 2 approx., N3 2.
    "instancenorm": (lambda: _conv_norm(nn.InstanceNorm2d(2, affine=True), 2),
                     {"translation": 2, "scale (approx.)": 2, "rescale": 2},
                     lambda p: p["c1.bias"], _in_j, None),
}


@pytest.mark.parametrize("case", list(NORM_CASES))
def test_conv_norm_catalogue(case):
    build, counts, n1_hand, n2_hand, train_mode = NORM_CASES[case]
    model, x = build(), img()
    ann = annotate(model, x)
    assert ann.counts() == counts
    assert rows(ann) == {"N1", "N2", "N3"}
    p = params_of(model)
    n1, n2, n3 = (fam_by_theory(ann, r) for r in ("N1", "N2", "N3"))
    assert n1.exact and n3.exact and not n2.exact
    assert n1.kind == "translation" and n2.kind == "scale" and n3.kind == "rescale"
    torch.testing.assert_close(n1.evaluate(p), n1_hand(p), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(n2.evaluate(p), n2_hand(p), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(n3.evaluate(p), p["norm.weight"] ** 2 + p["norm.bias"] ** 2 - sq_cols(p["c2.weight"]),
                               rtol=1e-12, atol=1e-12)
    if train_mode is True:  # BatchNorm laws hold for batch statistics only
        assert "norm-train-mode" in n1.assumptions and "norm-train-mode" in n2.assumptions
    elif train_mode is False:  # GroupNorm does not depend on the mode
        assert "norm-train-mode" not in n1.assumptions and "norm-train-mode" not in n2.assumptions
    assert_sound(model, ann, x)


def test_n1_batchnorm_bias_gradient_is_zero_by_hand():
    """N1 for Conv -> BN (train): the conv bias receives exactly zero gradient (for any loss)."""
    model, x = NORM_CASES["batchnorm"][0](), img()
    model.train()
    loss = mse_loss(model, x)
    (g,) = torch.autograd.grad(loss, [model.c1.bias])
    assert g.abs().max() < 1e-13


NORM_INTO_NORM = {
    # LN(4) -> LN(4) -> Linear(4, 2). THEORY N1 ("every direction whose effect on P's output is
    # constant over the averaged axes"): adding c to every β0_j shifts ln1's input by c on all
    # features, which ln1 removes: Σ_j β0_j, 1 law. N3 on ln1 -> fc: 4. N2 on ln0's affine: 1 approx.
    "layernorm": (lambda: seq(ln0=nn.LayerNorm(4), ln1=nn.LayerNorm(4), fc=nn.Linear(4, 2)), lambda: vec(d=4),
                  {"translation": 1, "rescale": 4, "scale (approx.)": 1}, lambda b: b.sum()),
    # BN2d(2) -> BN2d(2) -> conv (train mode): bn1 centres each channel over (N, H, W), so each β0_j
    # is a law itself: 2. N3 on bn1 -> c: 2. N2: 2 approx.
    "batchnorm": (lambda: seq(bn0=nn.BatchNorm2d(2), bn1=nn.BatchNorm2d(2), c=nn.Conv2d(2, 2, 3)),
                  lambda: img(c=2), {"translation": 2, "rescale": 2, "scale (approx.)": 2}, lambda b: b),
}


@pytest.mark.parametrize("case", list(NORM_INTO_NORM))
def test_n1_norm_affine_into_norm(case):
    # Found by the fuzzer's completeness sample (tests/test_fuzz.py): the shift β of a norm affine
    # feeding another centring norm was not given its N1 law ("missing 1" for LN -> LN).
    build, inputs, counts, hand = NORM_INTO_NORM[case]
    model, x = build(), inputs()
    ann = annotate(model, x)
    assert ann.counts() == counts
    n1, first = fam_by_theory(ann, "N1"), next(iter(model._modules))
    assert n1.params == (f"{first}.bias",) and n1.exact
    torch.testing.assert_close(n1.evaluate(params_of(model)).reshape(-1), hand(model[0].bias).reshape(-1),
                               rtol=1e-12, atol=1e-12)
    model.train()
    (g,) = torch.autograd.grad(mse_loss(model, x), [model[0].bias])  # by hand: the law's gradient
    assert hand(g).abs().max() < 1e-13                                    # direction gets nothing
    assert_sound(model, ann, x)


# ---------------------------------------------------------------------------------------------
# T1 / T2: softmax translations
# ---------------------------------------------------------------------------------------------
class Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(3, 4)

    def forward(self, x):
        return self.out(x)


def test_t1_logits_under_cross_entropy():
    model, x = Logits().double(), vec()
    ann = annotate(model, x, loss="cross_entropy")
    # Hand derivation (THEORY T1): Σ_k W[k, :] is a vector over the 3 inputs (3 laws), plus Σ_k b[k]
    # (1 law): 4 translation laws.
    assert ann.counts() == {"translation": 4}
    assert rows(ann) == {"T1"}
    assert all(f.assumptions == frozenset({"softmax-cross-entropy"}) for f in ann.laws)
    assert all(f.exact for f in ann.laws)
    p = params_of(model)
    values = sorted((v.reshape(-1) for v in ann.evaluate(model).values()), key=len)
    torch.testing.assert_close(values[0], p["out.bias"].sum().reshape(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(values[1], p["out.weight"].sum(0), rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)

    def law(q):
        return torch.cat([q["out.weight"].sum(0), q["out.bias"].sum().reshape(1)])

    y = torch.randint(0, 4, (x.shape[0],))
    assert worst_rel_inner(model, F.cross_entropy(model(x), y), law) < 1e-12
    # ...and the same quantities are NOT laws for a generic (MSE) loss
    assert worst_rel_inner(model, mse_loss(model, x), law) > 1e-4


def test_t1_needs_cross_entropy():
    model, x = Logits().double(), vec()
    ann = annotate(model, x)  # loss=None: any loss
    assert ann.laws == [] and ann.num_laws == 0 and ann.counts() == {}
    assert "out" in ann.no_law
    assert_sound(model, ann, x)


class LogSoftmaxHead(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.a(x))


SOFTMAX_HEADS = {
    "F.log_softmax": lambda t: F.log_softmax(t, dim=-1),
    "Tensor.log_softmax": lambda t: t.log_softmax(dim=-1),
    "torch.softmax": lambda t: torch.softmax(t, dim=-1),
}


@pytest.mark.parametrize("head", list(SOFTMAX_HEADS))
def test_t2_model_internal_softmax(head):
    model, x = LogSoftmaxHead(SOFTMAX_HEADS[head]).double(), vec()
    ann = annotate(model, x)  # any loss: the softmax is inside the model
    # Hand derivation (THEORY T2): logits a(x) go through a softmax over the 4 classes; translations
    # of all rows by one vector are invisible: Σ_k W[k, :] (3 laws) and Σ_k b[k] (1 law): 4.
    assert ann.counts() == {"translation": 4}
    assert rows(ann) == {"T2"}
    assert all(f.assumptions == frozenset({"any-loss"}) for f in ann.laws)
    assert_sound(model, ann, x)

    def law(q):
        return torch.cat([q["a.weight"].sum(0), q["a.bias"].sum().reshape(1)])

    out = model(x)
    random_linear_loss = (out * torch.randn_like(out)).sum()
    assert worst_rel_inner(model, random_linear_loss, law) < 1e-12


# ---------------------------------------------------------------------------------------------
# no law: non-homogeneous activations and structural breakers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", [nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid])
def test_no_law_smooth_activation_mlp(act):
    model = seq(fc1=nn.Linear(3, 4), act=act(), fc2=nn.Linear(4, 2))
    x = vec()
    ann = annotate(model, x)
    # THEORY "—" row: GELU / SiLU / tanh / sigmoid MLPs have no law (and the output layer has none
    # under any loss): 0.
    assert ann.laws == [] and ann.counts() == {} and ann.num_laws == 0
    assert set(ann.no_law) == {"fc1", "fc2"}
    assert act.__name__ in ann.no_law["fc1"]
    assert_sound(model, ann, x)


def test_no_law_gelu_mentions_gelu_for_hidden_modules():
    model = seq(fc1=nn.Linear(3, 4), a1=nn.GELU(), fc2=nn.Linear(4, 4), a2=nn.GELU(), fc3=nn.Linear(4, 2))
    ann = annotate(model, vec())
    assert ann.num_laws == 0
    assert set(ann.no_law) == {"fc1", "fc2", "fc3"}
    assert "GELU" in ann.no_law["fc1"] and "GELU" in ann.no_law["fc2"]


class HiddenAlsoOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.b(h), h


class ConstantAdded(HiddenAlsoOutput):
    def forward(self, x):
        return self.b(F.relu(self.a(x)) + 1.0)


class RawInputAdded(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 2)

    def forward(self, x):
        return self.b(F.relu(self.a(x) + x))


class FrozenConsumer(HiddenAlsoOutput):
    def __init__(self):
        super().__init__()
        self.b.weight.requires_grad_(False)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class TiedWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(self.b(F.relu(self.a(x))))))


class ChannelSumToOutput(HiddenAlsoOutput):
    def forward(self, x):
        h = F.relu(self.a(x))
        return self.b(h) + h.sum(-1, keepdim=True)


@pytest.mark.parametrize("cls", [HiddenAlsoOutput, ConstantAdded, RawInputAdded, FrozenConsumer, TiedWeights,
                                 ChannelSumToOutput])
def test_no_law_structural_breakers(cls):
    """Each of these breaks the R1 symmetry (hidden channel reaches the output, something that does not
    scale is added, the consumer is frozen, weights are tied, the channel axis is reduced): 0 laws."""
    model, x = cls().double(), vec()
    ann = annotate(model, x)
    assert ann.num_laws == 0, [(f.name, f.theory) for f in ann.laws]
    assert "a" in ann.no_law and ann.no_law["a"]
    assert_sound(model, ann, x)


# ---------------------------------------------------------------------------------------------
# residual, concat, split
# ---------------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(x)))


def test_residual_block_has_exactly_inner_mlp_laws():
    model, x = Residual().double(), vec()
    ann = annotate(model, x)
    # THEORY §1 residual blocks: x + f(x) has exactly the laws of f = fc2∘relu∘fc1: R1 per hidden
    # unit: 4 laws; nothing involving the add.
    assert ann.counts() == {"rescale": 4}
    assert rows(ann) == {"R1"}
    (fam,) = ann.laws
    assert set(fam.params) == {"fc1.weight", "fc1.bias", "fc2.weight"}
    assert "fc2.bias" not in {p for f in ann.laws for p in f.params}
    # fc2 only ever appears as the consumer: its weight is indexed by its INPUT axis (1)
    fc2_slots = [s for f in ann.laws for s in f.slots if s.param.startswith("fc2.")]
    assert fc2_slots and all(s.param == "fc2.weight" and s.axis == 1 for s in fc2_slots)
    p = params_of(model)
    torch.testing.assert_close(fam.evaluate(p), sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - sq_cols(p["fc2.weight"]),
                               rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


class TwoResidualBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.f1a, self.f1b = nn.Linear(3, 4), nn.Linear(4, 3)
        self.f2a, self.f2b = nn.Linear(3, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = x + self.f1b(F.relu(self.f1a(x)))
        return h + self.f2b(F.relu(self.f2a(h)))


def test_two_residual_blocks_no_law_straddles_the_skip():
    model, x = TwoResidualBlocks().double(), vec()
    ann = annotate(model, x)
    # THEORY §1: each block keeps its own laws (4 + 5 hidden units = 9 R1 laws); the pair
    # (f1b, f2a) straddling the skip has no law.
    assert ann.counts() == {"rescale": 9}
    assert rows(ann) == {"R1"}
    assert sorted(frozenset(m for m in f.modules) for f in ann.laws) == sorted(
        [frozenset({"f1a", "f1b"}), frozenset({"f2a", "f2b"})])
    assert_sound(model, ann, x)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 2)
        self.c = nn.Linear(6, 2)

    def forward(self, x):
        return self.c(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=-1))


def test_concat_one_r1_family_per_branch():
    model, x = Concat().double(), vec()
    ann = annotate(model, x)
    # Hand derivation (R1): branch a has 4 units reaching only c's columns 0..3, branch b 2 units
    # reaching only columns 4..5: 4 + 2 = 6 laws, one family per branch.
    assert ann.counts() == {"rescale": 6}
    assert rows(ann) == {"R1"}
    assert len(ann.laws) == 2
    p = params_of(model)
    fa = next(f for f in ann.laws if "a.weight" in f.params)
    fb = next(f for f in ann.laws if "b.weight" in f.params)
    cw = p["c.weight"]
    torch.testing.assert_close(fa.evaluate(p), sq_rows(p["a.weight"]) + p["a.bias"] ** 2 - sq_cols(cw[:, :4]),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fb.evaluate(p), sq_rows(p["b.weight"]) + p["b.bias"] ** 2 - sq_cols(cw[:, 4:]),
                               rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


class Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.c1 = nn.Linear(2, 2)
        self.c2 = nn.Linear(2, 3)

    def forward(self, x):
        u, v = F.relu(self.a(x)).chunk(2, dim=-1)
        return self.c1(u).sum(-1) + self.c2(v).sum(-1)


def test_split_chunk_two_consumers():
    model, x = Chunk().double(), vec()
    ann = annotate(model, x)
    # Hand derivation (R1 per channel): units 0,1 reach only c1 (columns 0,1), units 2,3 reach only
    # c2 (columns 0,1): one law per unit: 4. No channel reaches two consumers, so the row is R1
    # (one family over both consumers, or one per consumer).
    assert ann.counts() == {"rescale": 4}
    assert rows(ann) == {"R1"}
    p = params_of(model)
    hand = sq_rows(p["a.weight"]) + p["a.bias"] ** 2 - torch.cat([sq_cols(p["c1.weight"]), sq_cols(p["c2.weight"])])
    for f in ann.laws:
        value = f.evaluate(p)
        if tuple(f.shape) == (4,):  # one family over both consumers
            torch.testing.assert_close(value, hand, rtol=1e-12, atol=1e-12)
        else:  # one family per consumer
            assert tuple(f.shape) == (2,)
            want = hand[:2] if "c1.weight" in f.params else hand[2:]
            torch.testing.assert_close(value, want, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


def test_fused_gate_up_split_keeps_the_up_half():
    model, x = FusedGateUp().double(), vec()
    ann = annotate(model, x)
    # S1 per up channel i (rows 4 + i of gate_up): the SiLU gate half has no law, and its breaking
    # must not take the up half with it: 4 laws
    assert ann.counts() == {"rescale": 4} and rows(ann) == {"S1"}
    p = params_of(model)
    hand = sq_rows(p["gate_up.weight"][4:]) + p["gate_up.bias"][4:] ** 2 - sq_cols(p["down.weight"])
    torch.testing.assert_close(ann.laws[0].evaluate(p), hand, rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


# ---------------------------------------------------------------------------------------------
# gradient flow (explicit Euler): the law stays, a non-law quantity drifts
# ---------------------------------------------------------------------------------------------
def _sqnorm_fc1(p):
    return p["fc1.weight"].pow(2).sum().reshape(1)


def _r1_form(p):
    return sq_rows(p["fc1.weight"]) + p["fc1.bias"] ** 2 - sq_cols(p["fc2.weight"])


FLOW_CASES = {
    "relu-mlp-R1": (lambda: RELU_VARIANTS["fwd-F.relu"](), _sqnorm_fc1),
    "linear-G1": (lambda: seq(fc1=nn.Linear(3, 4, bias=False), fc2=nn.Linear(4, 2, bias=False)), _sqnorm_fc1),
    # through a square, the R1 form (coefficient 1) is the non-law to compare with
    "square-R3": (lambda: PowMLP(torch.square).double(), _r1_form),
}


@pytest.mark.parametrize("case", list(FLOW_CASES))
def test_gradient_flow_euler(case):
    build, non_law = FLOW_CASES[case]
    model = build()
    x, lr, steps = vec(8), 1e-4, 200
    y = torch.randn(8, 2, dtype=DT)
    ann = annotate(model, x)
    assert ann.num_laws > 0
    params = [q for q in model.parameters()]

    def snapshot():
        with torch.no_grad():
            p = params_of(model)
            return torch.cat([v.reshape(-1) for v in ann.evaluate(model).values()]), non_law(p).clone(), \
                sum(v.pow(2).sum() for v in p.values())

    h0, q0, scale = snapshot()
    for _ in range(steps):
        loss = F.mse_loss(model(x), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for q, g in zip(params, grads):
                q -= lr * g
    h1, q1, _ = snapshot()
    law_drift = float((h1 - h0).abs().max() / scale)
    non_law_drift = float((q1 - q0).abs().max() / scale)
    assert law_drift <= lr, (law_drift, non_law_drift)  # O(lr) at most (really O(lr²·steps))
    assert non_law_drift > 100 * law_drift, (law_drift, non_law_drift)
    assert non_law_drift > 10 * lr * lr * steps


# ---------------------------------------------------------------------------------------------
# sympy templates match the numbers
# ---------------------------------------------------------------------------------------------
def _fam(ann, theory, contains=None):
    fams = [f for f in ann.laws if f.theory == theory and (contains is None or contains in f.params)]
    assert fams, [(f.name, f.theory, f.params) for f in ann.laws]
    return fams[0]


# (builder, input, theory of the family, a parameter it must read, names of its free index symbols)
SYMPY_CASES = {
    "R1-mlp": (RELU_VARIANTS["seq-nn.ReLU"], vec, "R1", None, ("j",)),
    "G1-linear": (lambda: seq(fc1=nn.Linear(3, 4), fc2=nn.Linear(4, 2)), vec, "G1", None, ("j", "k")),
    "G1-conv": (CONV_CASES["conv-conv"][0], img, "G1", None, ("j", "k")),
    "R1-lenet-flatten": (CONV_CASES["lenet-maxpool"][0], img, "R1", None, ("j",)),
    "R1-depthwise": (CONV_CASES["depthwise-consumer"][0], img, "R1", None, ("j",)),
    "R1-grouped": (CONV_CASES["grouped-consumer"][0], img, "R1", None, ("j",)),
    "N3-offset-gain": (lambda: _OffsetGainMLP().double(), vec, "N3", None, ("j",)),
    "S1-fused-gate-up": (lambda: FusedGateUp().double(), vec, "S1", None, ("j",)),
    "R3-square": (lambda: PowMLP(torch.square).double(), vec, "R3", None, ("j",)),
    "R1-chunk": (lambda: Chunk().double(), vec, "R1", None, ("j",)),
    "R1-concat-offset": (lambda: Concat().double(), vec, "R1", "b.weight", ("j",)),
    "N2-groupnorm": (NORM_CASES["groupnorm"][0], img, "N2", None, ("g",)),
    "N1-groupnorm": (NORM_CASES["groupnorm"][0], img, "N1", None, ("g",)),
    "N1-batchnorm": (NORM_CASES["batchnorm"][0], img, "N1", None, ("j",)),
    "N3-batchnorm": (NORM_CASES["batchnorm"][0], img, "N3", None, ("j",)),
    "N1-layernorm-weight": (lambda: seq(fc1=nn.Linear(3, 4), ln=nn.LayerNorm(4), act=nn.ReLU(), fc2=nn.Linear(4, 2)),
                            vec, "N1", "fc1.weight", ("i1",)),
    "N2-layernorm": (lambda: seq(fc1=nn.Linear(3, 4), ln=nn.LayerNorm(4), act=nn.ReLU(), fc2=nn.Linear(4, 2)),
                     vec, "N2", None, ("g",)),
}


@pytest.mark.parametrize("case", list(SYMPY_CASES))
def test_sympy_template_matches_evaluate(case):
    build, inp, theory, contains, index_names = SYMPY_CASES[case]
    model = build()
    ann = annotate(model, inp())
    fam = _fam(ann, theory, contains)
    params = {n: t.detach() for n, t in params_of(model).items()}
    value = fam.evaluate(params)
    free = {s.name for s in fam.expr.free_symbols if isinstance(s, sympy.Symbol)
            and not any(s.name == name for name in fam.symbols)}
    # a scalar family (shape ()) may still carry a group index g ranging over one group
    if value.dim() == 0:
        idx_list = [()]
        value = value.reshape(1)
        names = tuple(sorted(free))
        assert len(names) <= 1
        for nm in names:
            assert nm in index_names
        kw_list = [dict.fromkeys(names, 0)]
    else:
        assert free == set(index_names), (free, fam.expr)
        assert value.dim() == len(index_names)
        idx_list = [tuple(int(i) for i in t) for t in torch.cartesian_prod(
            *[torch.arange(n) for n in value.shape]).reshape(-1, value.dim())]
        kw_list = [dict(zip(index_names, ix)) for ix in idx_list]
    for ix, kw in zip(idx_list, kw_list):
        got = substitute(fam.expr, fam.symbols, params, **kw)
        want = float(value[ix]) if ix else float(value[0])
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (kw, fam.expr)


# ---------------------------------------------------------------------------------------------
# functional norms (nanoGPT's LayerNorm calls F.layer_norm(x, self.weight.shape, w, b, eps))
# ---------------------------------------------------------------------------------------------
class _FunctionalLN(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class _FunctionalLNMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.ln, self.b = nn.Linear(3, 4), _FunctionalLN(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(F.relu(self.ln(self.a(x))))


class _FunctionalGN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)
        self.w, self.bias = nn.Parameter(torch.ones(4)), nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.d(F.relu(F.group_norm(self.c(x), 2, self.w, self.bias)))


@pytest.mark.parametrize("build, shape, want", [
    # Same counts as nn.LayerNorm (THEORY §2 tiny-instance list): N1 Σ_j a.weight[j] (3) + Σ_j a.bias[j]
    # (1); N3 γ_j² + β_j² − ‖b.weight[:, j]‖² (4); N2 one approximate scale law. Reading w.shape
    # is not a second use of w (no "tied weights").
    (_FunctionalLNMLP, (2, 3), {"translation": 4, "rescale": 4, "scale (approx.)": 1}),
    # GroupNorm, 2 groups of 2 channels on a conv: N1 one bias sum per group (2), N3 per channel (4),
    # N2 per group (2).
    (_FunctionalGN, (2, 3, 6, 6), {"translation": 2, "rescale": 4, "scale (approx.)": 2}),
], ids=["F.layer_norm", "F.group_norm"])
def test_functional_norms(build, shape, want):
    model, x = build().double(), torch.randn(shape, dtype=torch.float64)
    ann = annotate(model, x)
    assert ann.counts() == want
    assert_sound(model, ann, x)


# ---------------------------------------------------------------------------------------------
# S2: ReGLU / bilinear GLU, w2(act(w1 x) ⊙ w3 x) with act positively 1-homogeneous or identity
# ---------------------------------------------------------------------------------------------
class _GatedMLP(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.act = act
        self.w1, self.w3, self.w2 = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.w2(self.act(self.w1(x)) * self.w3(x))


@pytest.mark.parametrize("act", [F.relu, lambda t: t], ids=["ReGLU", "bilinear"])
def test_s2_gated_mlp_both_factors(act):
    model, x = _GatedMLP(act).double(), torch.randn(4, 3, dtype=torch.float64)
    ann = annotate(model, x)
    # THEORY S2: per hidden unit j, ‖W3[j]‖² + b3_j² − ‖W2[:, j]‖² (S1) and ‖W1[j]‖² + b1_j² − ‖W2[:, j]‖²:
    # 4 + 4 = 8 (the catalogue's tiny count "ReGLU with 3 hidden units: 6" is the same rule at width 3)
    assert ann.counts() == {"rescale": 8}
    assert rows(ann) == {"S2"}
    p = params_of(model)
    out = sq_cols(p["w2.weight"])
    want = {sq_rows(p["w1.weight"]) + p["w1.bias"] ** 2 - out, sq_rows(p["w3.weight"]) + p["w3.bias"] ** 2 - out}
    got = [f.evaluate(p) for f in ann.laws]
    for w in want:
        assert any(torch.allclose(g, w, rtol=1e-12, atol=1e-12) for g in got)
    assert_sound(model, ann, x)


def test_s2_refuses_a_product_inside_one_coupling():
    # relu(h1) ⊙ h2 where h1 and h2 are also summed (merging their spaces): scaling the merged class
    # scales the product by λ², so no rescale law may be attached (completeness confirms it sound); the
    # two summed outputs' biases still trade shifts (T3: c.bias − d.bias, 2 laws)
    class Merged(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            h1, h2 = self.a(x), self.b(x)
            return self.c(F.relu(h1) * h2) + self.d(h1 + h2)

    model, x = Merged().double(), torch.randn(4, 3, dtype=torch.float64)
    ann = annotate(model, x)
    assert [f.theory for f in ann.laws] == ["T3"] and ann.laws[0].params == ("c.bias", "d.bias")
    assert "degree 2" in ann.no_law["a"]


# ---------------------------------------------------------------------------------------------
# a 1-D parameter scaling the last axis of a value that carries no channels: hand-written RMSNorm
# (Meta's LLaMA), LayerScale — a diagonal producer like a norm's affine (THEORY N3)
# ---------------------------------------------------------------------------------------------
class _HandRMSNorm(nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class _HandRMSNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(3, 4), _HandRMSNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(F.relu(self.norm(self.a(x))))


def test_hand_written_rmsnorm_gets_n3():
    model, x = _HandRMSNormMLP().double(), torch.randn(4, 3, dtype=torch.float64)
    ann = annotate(model, x)
    # N3 for RMSNorm (no β): γ_j² − ‖b.weight[:, j]‖², 4 laws; the a-layer's channels reach a mean over
    # the channel axis (no law there: RMSNorm's scale law N2 needs the norm recognised, which it is not)
    assert ann.counts() == {"rescale": 4} and rows(ann) == {"N3"}
    p = params_of(model)
    torch.testing.assert_close(ann.laws[0].evaluate(p), p["norm.weight"] ** 2 - sq_cols(p["b.weight"]),
                               rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)


class _OffsetGainRMSNorm(_HandRMSNorm):
    """Gemma's RMSNorm: the gain is ``1 + w`` (w initialised at zero), cast to float as Gemma does."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight.to(x.dtype))


class _OffsetGainMLP(_HandRMSNormMLP):
    def __init__(self):
        super().__init__()
        self.norm = _OffsetGainRMSNorm(4)
        nn.init.normal_(self.norm.weight, std=0.5)


def test_offset_gain_rmsnorm_gets_n3_on_the_shifted_gain():
    model, x = _OffsetGainMLP().double(), torch.randn(4, 3, dtype=torch.float64)
    ann = annotate(model, x)
    # N3 on the gain g = 1 + w: gradient flow moves w as it moves g, so (1 + w_j)² − ‖b.weight[:, j]‖²
    # is conserved (and w_j² − ‖b.weight[:, j]‖² is not: checked below), 4 laws
    assert ann.counts() == {"rescale": 4} and rows(ann) == {"N3"}
    p = params_of(model)
    torch.testing.assert_close(ann.laws[0].evaluate(p), (1 + p["norm.weight"]) ** 2 - sq_cols(p["b.weight"]),
                               rtol=1e-12, atol=1e-12)
    assert_sound(model, ann, x)
    unshifted = worst_rel_inner(model, mse_loss(model, x), lambda q: q["norm.weight"] ** 2 - sq_cols(q["b.weight"]))
    assert unshifted > 1e-3
    assert "(1 + norm.weight[j])" in ann.laws[0].formula


class _SharedOffsetGain(nn.Module):
    """``g = 1 + w`` read by two products: w is shared between two uses (tied), so neither use's
    rescaling is a symmetry (found in review: the use count sees one read of w)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(0.3 * torch.randn(4))
        self.fa, self.fb = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x, y):
        g = 1 + self.w
        return self.fa(x * g) + self.fb(y * g)


def test_a_gain_read_twice_through_an_addition_carries_no_law():
    model = _SharedOffsetGain().double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    ann = annotate(model, (x, y))
    assert not [f for f in ann.laws if "w" in f.params], [f.formula for f in ann.laws]


class _ClassTokenAndLookedUpPositions(nn.Module):
    """CLIP's embeddings: a class token (d,) before the patch tokens, plus a position table looked up by
    a fixed ``position_ids`` buffer, then LayerNorm (the stream is normalised) and a head."""

    def __init__(self, d: int = 4, patches: int = 3):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(d))
        self.patch = nn.Linear(3, d, bias=False)
        self.pos = nn.Embedding(patches + 1, d)
        self.register_buffer("position_ids", torch.arange(patches + 1)[None])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 2)

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(x.shape[0], 1, -1), self.patch(x)], dim=1)
        return self.head(self.norm(tokens + self.pos(self.position_ids)))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_class_token_against_the_position_row_it_meets_by_hand(frontend):
    """THEORY T3: the class token and row 0 of the position table are summed into token 0 only, so
    ``cls + u`` with ``pos[0] − u`` changes nothing: ``cls − pos.weight[0]`` is conserved. The stream is
    normalised, so its feature sum is already the difference of two N1 laws: d − 1 = 3 new laws. Row 1
    meets a patch, not the class token: ``cls − pos.weight[1]`` moves."""
    model = _ClassTokenAndLookedUpPositions().double()
    x = torch.randn(2, 3, 3, dtype=DT)
    ann = annotate(model, x, frontend=frontend)
    (fam,) = [f for f in ann.laws if f.theory == "T3"]
    assert fam.count == 3, ann.table()
    p = params_of(model)
    got = fam.evaluate(p).reshape(-1)
    hand = p["cls"] - p["pos.weight"][0]
    torch.testing.assert_close(got * torch.sign(got[0] / hand[0]), hand, rtol=1e-12, atol=1e-12)
    loss = model(x).pow(2).sum()
    assert worst_rel_inner(model, loss, lambda q: q["cls"] - q["pos.weight"][0]) < 1e-12
    assert worst_rel_inner(model, model(x).pow(2).sum(), lambda q: q["cls"] - q["pos.weight"][1]) > 1e-4
    assert_sound(model, ann, x)
