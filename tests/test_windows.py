"""Windowed attention and the ops that move positions (docs/THEORY.md R1, N1, A1–A3, T2), on
hand-written float64 models, and the capture policy for functions torch.fx only records a call of.

* roll / flip / pad along axes other than the channels: a channel keeps its values at moved
  positions, so rescaling laws cross them (R1); a zero fill adds entries no translation reaches, but
  a norm over the channels still absorbs a translation constant along them (N1).
* Swin-style window attention: the window shift (roll), the window partition (view / permute /
  reshape keeping the channel axis), a relative-position table gathered by an index map and added
  to the scores, a shift mask added after splitting the (windows, heads) axes: A1 / A2 / A3 per head,
  T2 (the table's sum per head: the same number added to every score of that head), N3 for the norm
  before it. Counts derived by hand below, checked against ``D − dim Lie``.
* A ``torch.fx.wrap``-ped function is one opaque node in the fx graph; ``frontend="auto"`` exports the
  model instead and says so in ``ann.notes``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws.verify.completeness import completeness
from helpers import worst_rel_inner

DT = torch.float64


def assert_sound(model, ann, x) -> None:
    res = fxlaws.soundness(model, ann, x, trials=2, samples=8)
    assert res.ok and res.worst_exact <= 1e-9, str(res)


def loss_of(model, x):
    return model(x).pow(2).sum() + model(x).sum()


# --- positions: roll / flip / pad ---------------------------------------------------------------
class ConvShiftConv(nn.Module):
    """conv 2→4, ReLU, a positions op on the spatial axes, conv 4→3 (THEORY R1 for each of the 4
    hidden channels: ‖W1_j‖² + b1_j² − ‖W2[:, j]‖², when the op keeps every channel's values)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        if self.how == "roll":
            h = torch.roll(h, shifts=(1, -2), dims=(2, 3))
        elif self.how == "flip":
            h = h.flip(2, 3)
        elif self.how == "pad-zeros":
            h = F.pad(h, (1, 0, 2, 1))
        elif self.how == "pad-reflect":
            h = F.pad(h, (1, 1, 1, 1), mode="reflect")
        elif self.how == "pad-crop":
            h = F.pad(h, (-1, 0, 0, -1))
        elif self.how == "pad-ones":
            h = F.pad(h, (1, 1, 1, 1), value=1.0)
        elif self.how == "roll-channels":
            h = torch.roll(h, shifts=1, dims=1)
        elif self.how == "roll-flat":
            h = torch.roll(h, shifts=3)
        return self.c2(h)


def _rescale_law(p):
    w1, b1, w2 = p["c1.weight"], p["c1.bias"], p["c2.weight"]
    return w1.pow(2).sum((1, 2, 3)) + b1 ** 2 - w2.pow(2).sum((0, 2, 3))


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("how", ["roll", "flip", "pad-zeros", "pad-reflect", "pad-crop"])
def test_rescaling_crosses_moved_and_zero_padded_positions(how, frontend):
    model = ConvShiftConv(how).double()
    x = torch.randn(2, 2, 6, 6, dtype=DT)
    ann = fxlaws.annotate(model, x, frontend=frontend)
    (fam,) = [f for f in ann.laws if f.theory == "R1"]
    assert fam.count == 4
    p = dict(model.named_parameters())
    torch.testing.assert_close(fam.evaluate(p).reshape(-1), _rescale_law(p), rtol=1e-12, atol=1e-12)
    assert worst_rel_inner(model, loss_of(model, x), _rescale_law) < 1e-12
    assert_sound(model, ann, x)


@pytest.mark.parametrize("how, why", [("pad-ones", "pad with value 1.0"),
                                      ("roll-channels", "moves values along the axis that carries the channels"),
                                      ("roll-flat", "moves values along the axis that carries the channels")])
def test_no_rescaling_law_across_a_fill_value_or_a_channel_shift(how, why):
    """A fill of 1 is affine (λ·h padded with 1 ≠ λ·(h padded with 1)); rolling the channel axis (or
    the flattened tensor) sends channel j's values to channel j + 1. The hand law then moves."""
    model = ConvShiftConv(how).double()
    x = torch.randn(2, 2, 6, 6, dtype=DT)
    ann = fxlaws.annotate(model, x)
    assert not [f for f in ann.laws if f.theory == "R1"], ann.table()
    assert why in " ".join(ann.no_law.values()), ann.no_law
    assert worst_rel_inner(model, loss_of(model, x), _rescale_law) > 1e-4


class PaddedTokens(nn.Module):
    """Linear 3→4, zero padding of the token axis, LayerNorm(4), Linear 4→2. A shift of fc's output
    by c·1 (its bias or ``δW = 1 aᵀ``) is constant along the features at every position (zero at the
    padded ones): the LayerNorm removes it, so Σ_j b_j and Σ_j W[j, :] are conserved (THEORY N1)."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.head = nn.Linear(3, 4), nn.LayerNorm(4, elementwise_affine=False), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.norm(F.pad(self.fc(x), (0, 0, 1, 2))))


def test_a_translation_along_the_features_crosses_a_pad_of_the_tokens():
    model = PaddedTokens().double()
    x = torch.randn(2, 5, 3, dtype=DT)
    ann = fxlaws.annotate(model, x)

    def hand(p):
        return torch.cat([p["fc.bias"].sum().reshape(1), p["fc.weight"].sum(0)])

    fams = [f for f in ann.laws if f.theory == "N1" and f.params[0].startswith("fc.")]
    assert sum(f.count for f in fams) == 4, ann.table()  # bias sum 1 + one column sum per input 3
    got = torch.cat([f.evaluate(dict(model.named_parameters())).reshape(-1) for f in sorted(fams, key=lambda f: f.params[0])])
    torch.testing.assert_close(got, hand(dict(model.named_parameters())), rtol=1e-12, atol=1e-12)
    assert worst_rel_inner(model, loss_of(model, x), hand) < 1e-12
    assert_sound(model, ann, x)


# --- Swin-style window attention -----------------------------------------------------------------
class WindowAttention(nn.Module):
    """A shifted-window attention block written as Swin writes it, here by hand: LayerNorm(C) →
    roll(−s) → window partition → packed qkv → per-head scores + a relative-position table gathered
    by an index map → shift mask (−100 across regions) → softmax → values → proj → window reverse →
    roll(+s) → residual add. (B, H, W, C) in and out."""

    def __init__(self, c: int = 4, heads: int = 2, window: int = 2, shift: int = 1, grid: int = 4):
        super().__init__()
        self.c, self.heads, self.ws, self.shift = c, heads, window, shift
        self.norm = nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        pos = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (pos[:, :, None] - pos[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())
        region = torch.zeros(grid, grid)
        cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for k, (hs, wsl) in enumerate((a, b) for a in cuts for b in cuts):
            region[hs, wsl] = k
        windows = self._partition(region[None, :, :, None]).squeeze(-1)
        self.register_buffer("mask", (windows[:, None, :] != windows[:, :, None]).to(DT) * -100.0)

    def _partition(self, x):
        b, h, w, c = x.shape
        x = x.view(b, h // self.ws, self.ws, w // self.ws, self.ws, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, self.ws * self.ws, c)

    def forward(self, x):
        b, h, w, c = x.shape
        t, dh = self.ws * self.ws, c // self.heads
        y = torch.roll(self.norm(x), shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = self._partition(y)
        qkv = self.qkv(win).reshape(win.shape[0], t, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * dh ** -0.5, qkv[1], qkv[2]
        scores = q @ k.transpose(-2, -1)
        scores = scores + self.table[self.index].view(t, t, -1).permute(2, 0, 1).unsqueeze(0)
        n = self.mask.shape[0]
        scores = scores.view(b, n, self.heads, t, t) + self.mask.unsqueeze(1).unsqueeze(0)
        attn = torch.softmax(scores.view(-1, self.heads, t, t), dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(-1, t, c))
        out = out.view(b, h // self.ws, w // self.ws, self.ws, self.ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return x + torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))


# Hand count, C = 4, 2 heads of dh = 2 (THEORY §2 rows, "Small counts"):
#   A1: per head the symmetric dh×dh Gram Q̄Q̄ᵀ − K̄K̄ᵀ: 2 · 3 = 6
#   A2: per head V̄V̄ᵀ − OᵀO: 2 · 3 = 6
#   A3: the key bias, entry by entry (q·b_k is the same for every key): 2 · 2 = 4
#   T2: each head's table column summed (adds the same number to every score of the head): 2
#   N3: LayerNorm γ_j, β_j against the qkv columns j: 4
#   the rest (proj bias and weight, the residual output) carries none: 22 in all.
WINDOW_COUNTS = {"A1": 6, "A2": 6, "A3": 4, "T2": 2, "N3": 4}


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_window_attention_counts_laws_and_completeness(frontend):
    torch.manual_seed(0)
    model = WindowAttention().double()
    x = torch.randn(2, 4, 4, 4, dtype=DT)
    ann = fxlaws.annotate(model, x, frontend=frontend)
    counts: dict[str, int] = {}
    for f in ann.laws:
        counts[f.theory] = counts.get(f.theory, 0) + f.count
    assert counts == WINDOW_COUNTS, ann.table()
    p = dict(model.named_parameters())
    (t2,) = [f for f in ann.laws if f.theory == "T2"]
    torch.testing.assert_close(t2.evaluate(p).reshape(-1), p["table"].sum(0), rtol=1e-12, atol=1e-12)
    assert worst_rel_inner(model, loss_of(model, x), lambda q: q["table"].sum(0)) < 1e-12
    assert worst_rel_inner(model, loss_of(model, x), lambda q: q["table"][:3].sum(0)) > 1e-4  # part of it moves
    assert_sound(model, ann, x)
    res = completeness(model, (x,), ann=ann)
    assert res.unsound == [] and res.expected == sum(WINDOW_COUNTS.values()), str(res)
    assert res.verdict == "complete", str(res)


# --- functions torch.fx only records a call of ----------------------------------------------------
def scaled_channels(h: torch.Tensor, gain: float) -> torch.Tensor:
    """Shape-dependent Python control flow (fx cannot trace it), hence the library wraps it."""
    if h.shape[-1] > 2:
        return h * gain
    return h


torch.fx.wrap("scaled_channels")


class CallsWrapped(nn.Module):
    """Linear 3→4, ReLU, a wrapped function (×2 on the values), Linear 4→2: R1 per hidden unit (4)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(scaled_channels(torch.relu(self.fc1(x)), 2.0))


def test_a_wrapped_function_is_exported_by_default_and_opaque_under_fx():
    model = CallsWrapped().double()
    x = torch.randn(5, 3, dtype=DT)
    fx_ann = fxlaws.annotate(model, x, frontend="fx")
    assert not fx_ann.laws and "scaled_channels" in " ".join(fx_ann.no_law.values()), fx_ann.no_law
    ann = fxlaws.annotate(model, x)
    assert ann.frontend == "export"
    assert any("scaled_channels" in n and "torch.export" in n for n in ann.notes), ann.notes
    (fam,) = ann.laws
    assert (fam.theory, fam.count) == ("R1", 4)
    assert_sound(model, ann, x)


@pytest.mark.parametrize("p, mode", [(0.0, True), (0.5, False), (0.5, True)])
def test_torchvision_stochastic_depth_is_read_without_export(p, mode):
    """torchvision's ``stochastic_depth`` (wrapped for fx) is the identity at p = 0, else (in the
    training analysed, whatever mode the model was left in) a random 0 or 1/(1 − p) per sample:
    rescaling laws cross it either way (R1 per hidden unit)."""
    ops = pytest.importorskip("torchvision.ops")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.sd, self.fc2 = nn.Linear(3, 4), ops.StochasticDepth(p, "row"), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(self.sd(torch.relu(self.fc1(x))))

    model = Block().double().train(mode)
    x = torch.randn(5, 3, dtype=DT)
    ann = fxlaws.annotate(model, x)
    assert ann.frontend == "fx" and not ann.notes
    (fam,) = ann.laws
    assert (fam.theory, fam.count) == ("R1", 4)
    torch.manual_seed(0)
    assert_sound(model, ann, x)


# --- review counterexamples: each attached a false law (or crashed) before its fix ----------------
class _Stream(nn.Module):
    """fc 3→4 → ``mid`` → LayerNorm(4) → head 4→2: N1 of fc holds only if ``mid`` keeps a constant
    along the features constant along them."""

    def __init__(self, mid):
        super().__init__()
        self.mid = mid
        self.fc, self.ln, self.head = nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)
        self.register_buffer("mask", torch.ones(5, 4, dtype=torch.uint8))

    def forward(self, x):
        return self.head(self.ln(self.mid(self, self.fc(x))))


@pytest.mark.parametrize("mid", [
    pytest.param(lambda m, h: torch.roll(h, 3), id="roll-flattened"),
    pytest.param(lambda m, h: h.roll(1), id="roll-method-flattened"),
    pytest.param(lambda m, h: h[m.mask].view(5, 4), id="uint8-mask",
                 marks=pytest.mark.filterwarnings("ignore:indexing with dtype torch.uint8")),
])
def test_values_moved_across_rows_carry_no_translation(mid):
    """A roll without dims (or a uint8 mask, which indexes as a mask) moves values across rows: a
    shift constant along each row is no longer constant along the rows LayerNorm normalises."""
    model = _Stream(mid).double()
    x = torch.randn(5, 3, dtype=DT)
    ann = fxlaws.annotate(model, x)
    assert not [f for f in ann.laws if f.theory == "N1" and f.params[0].startswith("fc.")], ann.table()
    assert_sound(model, ann, x)


def test_stochastic_depth_traced_in_eval_mode_is_random_in_training():
    """fx records ``self.training`` at trace time: a model left in eval mode must not make stochastic
    depth the identity for the training analysis (its random per-sample factor breaks BatchNorm's
    translation, N1 of the conv bias)."""
    ops = pytest.importorskip("torchvision.ops")
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), ops.StochasticDepth(0.5, "row"), nn.BatchNorm2d(3),
                          nn.Conv2d(3, 2, 1)).double().eval()
    x = torch.randn(8, 2, 4, 4, dtype=DT)
    ann = fxlaws.annotate(model, x)
    assert not [f for f in ann.laws if f.theory == "N1" and f.params[0].startswith("0.")], ann.table()
    assert model.training is False
    model.train()
    assert_sound(model, ann, x)


def doubled(h: torch.Tensor) -> torch.Tensor:
    return h * 2 if h.shape[-1] > 1 else h


torch.fx.wrap("doubled")


def test_export_for_a_wrapped_function_traces_the_training_mode():
    """A model left in eval mode is exported in the mode analysed (training): its dropout stays in the
    graph, so no N1 crosses it (an eval-mode export dropped it and attached a false N1)."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.drop, self.ln, self.head = nn.Linear(3, 4), nn.Dropout(0.5), nn.LayerNorm(4), nn.Linear(4, 2)

        def forward(self, x):
            return doubled(self.head(self.ln(self.drop(self.fc(x)))))

    model = M().double().eval()
    x = torch.randn(5, 3, dtype=DT)
    ann = fxlaws.annotate(model, x)
    assert ann.frontend == "export" and model.training is False
    assert not [f for f in ann.laws if f.theory == "N1"], ann.table()
    model.train()
    torch.manual_seed(0)
    assert_sound(model, ann, x)


def refuses_fake_tensors(h: torch.Tensor) -> torch.Tensor:
    if type(h) is not torch.Tensor:
        raise NotImplementedError  # no message
    return h * 2


torch.fx.wrap("refuses_fake_tensors")


def test_an_export_failure_without_a_message_keeps_the_fx_graph():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(refuses_fake_tensors(torch.relu(self.fc1(x))))

    model = M().double()
    ann = fxlaws.annotate(model, torch.randn(5, 3, dtype=DT))
    assert ann.frontend == "fx" and not ann.laws
    assert "refuses_fake_tensors" in " ".join(ann.no_law.values()), ann.no_law
