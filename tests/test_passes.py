"""Pass-level tests of the annotate pipeline (fxlaws.passes), each on a tiny hand-written model.

Every model is captured with ``fxlaws.capture.capture``, wrapped in an ``AnnotateState`` and run
through single passes. Expected spaces, sinks and law counts are derived by hand in the docstrings
from THEORY rows:

  R1  ReLU between two Linears: per hidden channel j, ‖W1[j]‖² + b1[j]² − ‖W2[:, j]‖²  (one law a channel)
  R2  the same when several producers are summed before the activation (one coupling class)
  R3  a degree-k homogeneous map (x·x: k = 2): ‖W1[j]‖² + b1[j]² − 2‖W2[:, j]‖²
  G1  no activation: W1 W1ᵀ − W2ᵀ W2, symmetric c×c: c(c+1)/2 laws when the factors have ≥ c columns
  N1  LayerNorm after a Linear: translations along 1 are centred away: Σ_j W[j, :] (in laws) and Σ_j b[j] (1);
      through a residual stream read only by LayerNorms, every producer writing into it: a Linear
      (in + 1 laws), an embedding (one per row), a position table added to it (one per position)
  N2  LayerNorm: one common scale of all its input channels: ‖W‖² + ‖b‖² (1 law, eps-broken: exact False)
  N3  the norm's affine γ, β make per-channel producers for the next Linear (one law a channel)
  T1  logits under softmax-cross-entropy: Σ_j W[j, :] (in laws) and Σ_j b[j] (1)
  A1  per head h: Q̄_h Q̄_hᵀ − K̄_h K̄_hᵀ, symmetric dh×dh: dh(dh+1)/2 laws (input width ≥ dh)
  A2  per head h: V̄_h V̄_hᵀ − O_hᵀ O_h: dh(dh+1)/2 laws
  A3  key bias under a softmax over keys: one law per key-bias entry
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxlaws.capture import Capture, capture
from fxlaws.errors import PassOrderError
from fxlaws.laws.slots import Piece, Slot
from fxlaws.meta import META_KEY, get_op
from fxlaws.passes import (ANNOTATE, AnnotateState, AttachLawsPass, AttentionPass, MarkLawsPass, NormalisePass,
                           PartitionPass, SharedShiftPass, TranslationPass, run_passes)
from fxlaws.passes.partition import Coupling, Partition, Space

from helpers import worst_rel_inner

DT = torch.float64
TOL = 1e-9  # exact laws in float64
VEC = (5, 3)  # 5 samples, 3 features
TOKENS = (2, 3, 4)  # batch 2, 3 tokens, width d = 4


# ---------------------------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """fc1 (3→4) → act → fc2 (4→2); ``act=None``: no activation (a deep linear network)."""

    def __init__(self, act: Optional[nn.Module] = None, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(3, 4, bias=bias)
        self.act = act
        self.fc2 = nn.Linear(4, 2, bias=bias)

    def forward(self, x):
        h = self.fc1(x)
        if self.act is not None:
            h = self.act(h)
        return self.fc2(h)


class ReLUMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class LinearLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.ln = nn.Linear(3, 4), nn.LayerNorm(4)

    def forward(self, x):
        return self.ln(self.fc1(x))


class LNMLP(nn.Module):
    """Linear(3, 4) → LayerNorm(4) → ReLU → Linear(4, 2)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.ln, self.fc2 = nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.ln(self.fc1(x))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return x + self.fc(x)


class Stream(nn.Module):
    """A pre-LN residual stream of width 4 over 3 tokens: inp (3→4) + pos (1×3×4), one block
    h + fc2(relu(fc1(ln1(h)))) with fc1 4→5, fc2 5→4, read out by head(ln2(h)) (4→2).

    ``drop``: dropout of that probability on the block's branch; ``tap``: the head also reads the
    stream without a norm (then nothing absorbs translations)."""

    def __init__(self, drop: float = 0.0, tap: bool = False):
        super().__init__()
        self.inp, self.fc1, self.fc2, self.head = nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 4), nn.Linear(4, 2)
        self.pos = nn.Parameter(torch.zeros(1, 3, 4))
        self.ln1, self.ln2 = nn.LayerNorm(4), nn.LayerNorm(4)
        self.drop, self.tap = nn.Dropout(drop), tap

    def forward(self, x):
        h = self.inp(x) + self.pos
        h = h + self.drop(self.fc2(torch.relu(self.fc1(self.ln1(h)))))
        return self.head(self.ln2(h) + (h if self.tap else 0))


class TokenMix(nn.Module):
    """h = x + mix(xᵀ)ᵀ over 3 tokens of width 4 (MLP-Mixer's token mixing, one Linear 3→3 across the
    tokens), read out by head(ln(h)) (4→2)."""

    def __init__(self):
        super().__init__()
        self.mix, self.ln, self.head = nn.Linear(3, 3), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.ln(x + self.mix(x.transpose(1, 2)).transpose(1, 2)))


class TwoSum(nn.Module):
    """relu(fc1(x) + fc2(x)) → fc3: two producers of one 4-channel space."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc1(x) + self.fc2(x)))


class CatMLP(nn.Module):
    """cat([relu(fc1 x) (4), relu(fc2 x) (2)]) → fc3 (6 → 2): fc1 owns fc3's columns 0..3, fc2 4..5."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(3, 2), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc3(torch.cat([torch.relu(self.fc1(x)), torch.relu(self.fc2(x))], dim=-1))


class Square(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * h)


class Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x)


class SelfAttention(nn.Module):
    """Hand-written multi-head self-attention: q/k/v (d → H·dh), heads by view/transpose,
    softmax(q kᵀ / √dh) v, heads merged back, o (H·dh → d)."""

    def __init__(self, d: int = 4, heads: int = 1, dh: int = 2, bias: bool = False):
        super().__init__()
        self.heads, self.dh = heads, dh
        inner = heads * dh
        self.q, self.k, self.v = (nn.Linear(d, inner, bias=bias) for _ in range(3))
        self.o = nn.Linear(inner, d, bias=bias)

    def split(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dh).transpose(1, 2)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, self.heads * self.dh)
        return self.o(y)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def generic(model: nn.Module) -> nn.Module:
    """float64, every parameter random (LayerNorm's γ = 1, β = 0 and zero biases are not generic)."""
    model = model.to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


def state_of(model: nn.Module, shape: tuple = VEC, *, loss: Optional[str] = None) -> AnnotateState:
    """A fresh AnnotateState of the (generic, float64) model captured on a random input."""
    model = generic(model)
    return AnnotateState(model, capture(model, torch.randn(*shape, dtype=DT)), loss=loss)


def partitioned(model: nn.Module, shape: tuple = VEC) -> Partition:
    state = run_passes([NormalisePass(), PartitionPass()], state_of(model, shape))
    return state.partition


def annotated(model: nn.Module, shape: tuple = VEC, *, loss: Optional[str] = None) -> AnnotateState:
    return run_passes(ANNOTATE, state_of(model, shape, loss=loss))


def space(partition: Partition, module: str) -> Space:
    (found,) = [sp for sp in partition.spaces if sp.module == module]
    return found


def coupling(partition: Partition, module: str) -> Coupling:
    (found,) = [c for c in partition.couplings if any(sp.module == module for sp in c.spaces)]
    return found


def family_table(state: AnnotateState) -> Counter:
    """Multiset of (kind, THEORY row, count) of the families the passes attached."""
    return Counter((f.kind, f.theory, f.count) for f in state.laws.families)


def random_loss(model: nn.Module, shape: tuple, loss: Optional[str]) -> torch.Tensor:
    out = model(torch.randn(*shape, dtype=DT))
    if loss == "cross_entropy":
        return F.cross_entropy(out, torch.randint(0, out.shape[-1], out.shape[:1]))
    return (out * torch.randn(out.shape, dtype=DT)).sum()


# ---------------------------------------------------------------------------------------------
# 1. the pass protocol
# ---------------------------------------------------------------------------------------------
def test_partition_before_normalise_raises():
    with pytest.raises(PassOrderError, match="NormalisePass"):
        PartitionPass()(state_of(ReLUMLP()))


def test_attach_without_partition_raises():
    state = state_of(ReLUMLP())
    NormalisePass()(state)
    with pytest.raises(PassOrderError, match="PartitionPass"):
        AttachLawsPass()(state)


@pytest.mark.parametrize("late_pass", [AttentionPass(), TranslationPass(), SharedShiftPass(), MarkLawsPass()], ids=repr)
def test_passes_reading_laws_need_attach(late_pass):
    state = run_passes([NormalisePass(), PartitionPass()], state_of(ReLUMLP()))
    assert state.laws is None
    with pytest.raises(PassOrderError, match="AttachLawsPass"):
        late_pass(state)


def test_get_op_on_fresh_capture_raises():
    cap = capture(generic(ReLUMLP()), torch.randn(*VEC, dtype=DT))
    node = next(n for n in cap.graph_module.graph.nodes if n.op == "call_module")
    assert META_KEY not in node.meta
    with pytest.raises(PassOrderError, match="NormalisePass"):
        get_op(node)


def test_normalise_needs_shapes():
    """A graph traced without shape propagation (no tensor_meta) is refused."""
    model = generic(ReLUMLP())
    state = AnnotateState(model, Capture(graph_module=fx.symbolic_trace(model), frontend="fx"))
    with pytest.raises(PassOrderError, match="tensor_meta"):
        NormalisePass()(state)


def test_run_passes_records_history():
    """Normalise writes metadata (modified), partition only analyses, attach adds the R1 family, the
    MLP has no attention core and no LayerNorm (no translation law), mark writes the family name on fc1 / fc2."""
    state = annotated(ReLUMLP())
    assert state.history == [("NormalisePass", True), ("PartitionPass", False), ("AttachLawsPass", True),
                             ("AttentionPass", False), ("TranslationPass", False), ("SharedShiftPass", False),
                             ("MarkLawsPass", True)]


def test_pass_results_modified_flags():
    state = state_of(ReLUMLP())
    result = NormalisePass()(state)
    assert result.modified is True and result.state is state
    result = PartitionPass()(state)
    assert result.modified is False and state.partition is not None


# ---------------------------------------------------------------------------------------------
# 2. partition on tiny graphs
# ---------------------------------------------------------------------------------------------
def test_partition_relu_mlp():
    """fc1's 4 output channels: sources fc1.weight rows (axis 0) and fc1.bias; ReLU keeps degree 1;
    compensated by fc2.weight's columns (axis 1). No break. fc2's own space ends at the output."""
    part = partitioned(ReLUMLP())
    sp = space(part, "fc1")
    assert (sp.channels, sp.producer) == (4, "linear")
    assert sp.weight == Slot("fc1.weight", 0, (Piece(0, 4),), 4)
    assert sp.bias == Slot("fc1.bias", 0, (Piece(0, 4),), 4)
    assert [(k.module, k.slot, k.degree) for k in sp.sinks] == [("fc2", Slot("fc2.weight", 1, (Piece(0, 4),), 4), 1.0)]
    assert sp.breaks == [] and sp.norms == [] and sp.terminals == []
    assert len(part.couplings) == 2  # fc1's space, fc2's space (unmerged)
    assert [t.kind for t in space(part, "fc2").terminals] == ["output"]


def test_partition_gelu_breaks():
    """GELU is not positively homogeneous: fc1's space breaks, the reason names the GELU."""
    sp = space(partitioned(MLP(act=nn.GELU())), "fc1")
    assert sp.sinks == []
    assert len(sp.breaks) == 1 and "GELU" in sp.breaks[0]


def test_partition_layer_norm_sink():
    """LayerNorm(4) averages exactly the channel axis: a norm sink absorbing translations of the
    channels (N1) and translations of the weight rows (the averaged axes are just the channel axis)."""
    sp = space(partitioned(LinearLN()), "fc1")
    assert sp.sinks == [] and sp.breaks == []
    (norm,) = sp.norms
    assert (norm.module, norm.group, norm.translations, norm.weight_translations) == ("ln", 4, True, True)


def test_partition_residual_breaks():
    """x + fc(x): x does not scale with fc's channels, the add breaks the space (a residual)."""
    sp = space(partitioned(Residual()), "fc")
    assert sp.sinks == []
    assert any("residual connection" in b for b in sp.breaks), sp.breaks


def test_partition_two_producers_merge():
    """fc1(x) + fc2(x): one coupling class holding both spaces (R2), compensated by fc3's columns."""
    part = partitioned(TwoSum())
    c = coupling(part, "fc1")
    assert sorted(sp.module for sp in c.spaces) == ["fc1", "fc2"]
    assert c.channels == 4 and c.breaks == []
    assert [(k.module, k.slot, k.degree) for k in c.sinks] == [("fc3", Slot("fc3.weight", 1, (Piece(0, 4),), 4), 1.0)]
    merges = [d for _, _, d in part.graph.edges(data=True) if d.get("role") == "merge"]
    assert len(merges) == 1


def test_partition_cat_offsets():
    """cat([relu(fc1) (4 ch), relu(fc2) (2 ch)], -1) → fc3: fc1's channels j sit at fc3 columns j,
    fc2's channels j at columns 4 + j."""
    part = partitioned(CatMLP())
    (s1,) = space(part, "fc1").sinks
    (s2,) = space(part, "fc2").sinks
    assert s1.slot == Slot("fc3.weight", 1, (Piece(0, 4, offset=0),), 4)
    assert s2.slot == Slot("fc3.weight", 1, (Piece(0, 2, offset=4),), 2)
    assert s2.slot.positions() == [4, 5]


def test_partition_square_degree_two():
    """h·h with h = fc1(x): scaling channel j by λ scales h_j² by λ² (R3: degree 2)."""
    (sink,) = space(partitioned(Square()), "fc1").sinks
    assert sink.degree == 2.0 and sink.slot.param == "fc2.weight"


# ---------------------------------------------------------------------------------------------
# 3. attach (and attention) on tiny graphs: hand counts
# ---------------------------------------------------------------------------------------------
# (id, model factory, input shape, loss, expected Counter of (kind, theory, count))
LAW_CASES = [
    # R1: one law per hidden channel of fc1: 4
    ("relu-mlp", ReLUMLP, VEC, None, {("rescale", "R1", 4): 1}),
    # G1: W1 W1ᵀ − W2ᵀ W2, 4×4 symmetric; factors have 3 + 2 = 5 ≥ 4 columns: 4·5/2 = 10
    ("linear-mlp", lambda: MLP(act=None, bias=False), VEC, None, {("gl", "G1", 10): 1}),
    # R2: two summed producers, one law per channel of the shared space: 4
    # T3: fc1.bias + u, fc2.bias − u leave the sum unchanged: fc1.bias − fc2.bias, 4 laws
    ("two-sum", TwoSum, VEC, None, {("rescale", "R2", 4): 1, ("translation", "T3", 4): 1}),
    # R1 per cat input: 4 (fc1) and 2 (fc2)
    ("cat", CatMLP, VEC, None, {("rescale", "R1", 4): 1, ("rescale", "R1", 2): 1}),
    # R3: one law per channel: 4
    ("square", Square, VEC, None, {("rescale", "R3", 4): 1}),
    # N2: 1 (one group of 4 channels); N1: Σ_j b1[j] (1) and Σ_j W1[j, :] (3); N3: LN γ/β vs fc2 columns: 4
    ("ln-mlp", LNMLP, VEC, None, {("scale", "N2", 1): 1, ("translation", "N1", 1): 1, ("translation", "N1", 3): 1,
                                  ("rescale", "N3", 4): 1}),
    # the residual stream (N1 through the add): inp Σ_j W[j, :] (3) and Σ b (1); pos one sum per token (3);
    # fc2 Σ_j W[j, :] (5) and Σ b (1). R1 on fc1 → fc2 (5 hidden channels); N3: ln1 γ/β vs fc1 columns (4),
    # ln2 γ/β vs head columns (4). The stream reaches two norms: no common scale (N2). T3: inp.bias + u and
    # every row of pos − u cancel in the sum: one combination, a vector of 4 whose feature sum is N1: 3.
    ("stream", Stream, TOKENS[:1] + (3, 3), None,
     {("translation", "N1", 3): 2, ("translation", "N1", 1): 2, ("translation", "N1", 5): 1,
      ("rescale", "R1", 5): 1, ("rescale", "N3", 4): 2, ("translation", "T3", 3): 1}),
    # dropout (train mode, p > 0) on the branch: fc2's output is masked at random, its translation is
    # no longer constant along the features; the rest of the stream keeps its laws
    ("stream-dropout", lambda: Stream(drop=0.5), TOKENS[:1] + (3, 3), None,
     {("translation", "N1", 3): 2, ("translation", "N1", 1): 1, ("rescale", "R1", 5): 1, ("rescale", "N3", 4): 2,
      ("translation", "T3", 3): 1}),
    # the head reads the stream itself too (no norm in between): no N1 law; T3 keeps its combination,
    # all 4 features of it
    ("stream-tap", lambda: Stream(tap=True), TOKENS[:1] + (3, 3), None,
     {("rescale", "R1", 5): 1, ("rescale", "N3", 4): 1, ("translation", "T3", 4): 1}),
    # mix.bias[t] is added to every feature of token t, which ln removes: each entry is conserved (N1
    # with groups of one channel): 3. mix.weight's shift depends on the feature (no law); the mix's
    # channels (tokens) meet x in the add (no rescale). N3: ln γ/β vs head columns: 4.
    ("token-mix", TokenMix, TOKENS[:1] + (3, 4), None, {("translation", "N1", 3): 1, ("rescale", "N3", 4): 1}),
    # T1 on the logits: Σ_j W[j, :] (3) and Σ_j b[j] (1)
    ("logits-ce", Logits, VEC, "cross_entropy", {("translation", "T1", 3): 1, ("translation", "T1", 1): 1}),
    # one head, dh = 2, d = 4, no biases: A1 2·3/2 = 3, A2 3
    ("attn-1h", lambda: SelfAttention(heads=1, dh=2), TOKENS, None,
     {("attention-qk", "A1", 3): 1, ("attention-vo", "A2", 3): 1}),
    # two heads of dh = 2: 2·3 = 6 each
    ("attn-2h", lambda: SelfAttention(heads=2, dh=2), TOKENS, None,
     {("attention-qk", "A1", 6): 1, ("attention-vo", "A2", 6): 1}),
    # with biases: + A3, one law per key-bias entry: H·dh = 4
    ("attn-2h-bias", lambda: SelfAttention(heads=2, dh=2, bias=True), TOKENS, None,
     {("attention-qk", "A1", 6): 1, ("attention-vo", "A2", 6): 1, ("translation", "A3", 4): 1}),
]


@pytest.mark.parametrize("name, make, shape, loss, expected", [pytest.param(*c, id=c[0]) for c in LAW_CASES])
def test_law_counts(name, make, shape, loss, expected):
    assert family_table(annotated(make(), shape, loss=loss)) == Counter(expected)


@pytest.mark.parametrize("name, make, shape, loss, expected", [pytest.param(*c, id=c[0]) for c in LAW_CASES])
def test_every_family_is_sound(name, make, shape, loss, expected):
    """Each exact family's gradient is orthogonal to the loss gradient (random θ, inputs, loss)."""
    state = annotated(make(), shape, loss=loss)
    exact = [f for f in state.laws.families if f.exact]
    assert exact
    for fam in exact:
        worst = worst_rel_inner(state.model, random_loss(state.model, shape, loss), fam.evaluate)
        assert worst <= TOL, f"{fam.name} ({fam.theory}): {worst:.3e}"


def test_attach_relu_mlp_family():
    """R1 on fc1 → fc2 reads fc1.weight, fc1.bias and fc2.weight, one law per channel."""
    state = run_passes([NormalisePass(), PartitionPass(), AttachLawsPass()], state_of(ReLUMLP()))
    (fam,) = state.laws.families
    assert (fam.kind, fam.theory, fam.shape, fam.exact) == ("rescale", "R1", (4,), True)
    assert set(fam.params) == {"fc1.weight", "fc1.bias", "fc2.weight"}


def test_attach_layer_norm_families():
    """N2 (scale, eps-broken: exact False) and N1 (translations, exact) from Linear → LayerNorm."""
    state = annotated(LNMLP())
    by_theory = {}
    for f in state.laws.families:
        by_theory.setdefault(f.theory, []).append(f)
    (n2,) = by_theory["N2"]
    assert n2.kind == "scale" and n2.exact is False and set(n2.params) == {"fc1.weight", "fc1.bias"}
    assert {f.kind for f in by_theory["N1"]} == {"translation"}
    assert all(f.exact for f in by_theory["N1"])
    assert sum(f.count for f in by_theory["N1"]) == 4


def test_attach_logits_need_cross_entropy():
    """T1 holds only under softmax-cross-entropy: with loss=None the logits get a reason, no law."""
    with_ce = annotated(Logits(), loss="cross_entropy")
    assert {f.theory for f in with_ce.laws.families} == {"T1"}
    assert sum(f.count for f in with_ce.laws.families) == 4
    assert all("softmax-cross-entropy" in f.assumptions for f in with_ce.laws.families)
    plain = annotated(Logits())
    assert plain.laws.families == []
    assert any("cross_entropy" in r for r in plain.laws.reasons["fc"])


@pytest.mark.parametrize("heads, bias", [(1, False), (2, False), (2, True)])
def test_attention_family_shapes(heads, bias):
    """A1 / A2 are per-head Gram families of shape (H, dh, dh); with biases A3 covers the key bias."""
    state = annotated(SelfAttention(heads=heads, dh=2, bias=bias), TOKENS)
    shapes = {f.theory: f.shape for f in state.laws.families}
    assert shapes["A1"] == (heads, 2, 2) and shapes["A2"] == (heads, 2, 2)
    if bias:
        (a3,) = [f for f in state.laws.families if f.theory == "A3"]
        assert a3.params == ("k.bias",) and a3.shape == (heads * 2,)
    else:
        assert "A3" not in shapes


def test_attention_pass_alone_adds_attention_laws():
    """Attach alone finds no law in the attention block (the head reshapes break the channel
    spaces); AttentionPass adds A1 and A2 (modified=True)."""
    state = run_passes([NormalisePass(), PartitionPass(), AttachLawsPass()],
                       state_of(SelfAttention(heads=2, dh=2), TOKENS))
    assert state.laws.families == []
    result = AttentionPass()(state)
    assert result.modified is True
    assert sorted(f.theory for f in state.laws.families) == ["A1", "A2"]


# ---------------------------------------------------------------------------------------------
# 4. MarkLawsPass
# ---------------------------------------------------------------------------------------------
def test_mark_laws_on_nodes():
    """The R1 family reads fc1's and fc2's parameters: both call_module nodes carry its name; the
    ReLU (no parameters) carries none."""
    state = run_passes([NormalisePass(), PartitionPass(), AttachLawsPass()], state_of(ReLUMLP()))
    nodes = {str(n.target) if n.op == "call_module" else n.name: n for n in state.graph_module.graph.nodes}
    assert nodes["fc1"].meta[META_KEY].laws == ()
    (fam,) = state.laws.families
    assert MarkLawsPass()(state).modified is True
    assert nodes["fc1"].meta[META_KEY].laws == (fam.name,)
    assert nodes["fc2"].meta[META_KEY].laws == (fam.name,)
    assert nodes["relu"].meta[META_KEY].laws == ()


def test_mark_laws_attention_projections():
    """q and k carry the A1 family, v and o the A2 family."""
    state = annotated(SelfAttention(heads=2, dh=2), TOKENS)
    names = {f.theory: f.name for f in state.laws.families}
    marks = {str(n.target): n.meta[META_KEY].laws for n in state.graph_module.graph.nodes if n.op == "call_module"}
    assert marks == {"q": (names["A1"],), "k": (names["A1"],), "v": (names["A2"],), "o": (names["A2"],)}


# ---------------------------------------------------------------------------------------------
# 5. layering: passes/ imports only the core of fxlaws
# ---------------------------------------------------------------------------------------------
PASSES_DIR = Path(__file__).resolve().parents[1] / "passes"
CORE = {"fxlaws.errors", "fxlaws.meta", "fxlaws.vocabulary", "fxlaws.rules", "fxlaws.registry", "fxlaws.capture",
        "fxlaws.metrics", "fxlaws.laws"}


def _fxlaws_imports(path: Path) -> set[str]:
    """Absolute names of the fxlaws modules a file imports (``..x`` inside fxlaws.passes is fxlaws.x;
    ``.x`` stays inside the passes package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fxlaws"}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "fxlaws":
                base = node.module
            elif node.level == 2:  # from ..x import y  ->  fxlaws.x (or fxlaws.y for "from .. import y")
                base = f"fxlaws.{node.module}" if node.module else None
                if base is None:
                    found |= {f"fxlaws.{a.name}" for a in node.names}
                    continue
            elif node.level > 2:
                found.add("<beyond fxlaws>")
                continue
            else:
                continue
            if base == "fxlaws":  # from fxlaws import x: x is a submodule or a top-level (api) name
                found |= {f"fxlaws.{a.name}" for a in node.names}
            else:
                found.add(base)
    return found


def _allowed(module: str) -> bool:
    return module in CORE or module.startswith("fxlaws.laws.")


def test_passes_import_only_the_core():
    files = sorted(PASSES_DIR.glob("*.py"))
    assert len(files) >= 10, files
    bad = {f.name: sorted(m for m in _fxlaws_imports(f) if not _allowed(m)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("source, forbidden", [
    ("from fxlaws.api import annotate", "fxlaws.api"),
    ("import fxlaws.report.text", "fxlaws.report.text"),
    ("from ..verify import soundness", "fxlaws.verify"),
    ("from .. import annotation", "fxlaws.annotation"),
    ("from fxlaws import study", "fxlaws.study"),
])
def test_layering_check_catches(tmp_path, source, forbidden):
    """The import scanner itself sees each way of reaching outside the core."""
    f = tmp_path / "probe.py"
    f.write_text(source + "\n")
    assert forbidden in _fxlaws_imports(f) and not _allowed(forbidden)
