"""Attention laws (THEORY §2 rows A1–A5) on hand-written attention modules and the reference models.

For every case this file checks
  (a) the number of independent scalar laws per kind, against a count derived BY HAND in a comment
      from docs/THEORY.md (never copied from the library's output):
        A1  per head h: Q̄_h Q̄_hᵀ − K̄_h K̄_hᵀ, a symmetric dh×dh matrix: dh(dh+1)/2 laws;
        A2  per head h: V̄_h V̄_hᵀ − O_hᵀ O_h: dh(dh+1)/2 laws;
        A3  key bias under softmax over keys: one law per key-bias entry;
        A4  GQA: per kv group g, Σ_{h∈G(g)} Q̄_h Q̄_hᵀ − K̄_g K̄_gᵀ and V̄_g V̄_gᵀ − Σ_{h∈G(g)} O_hᵀ O_h:
            dh(dh+1)/2 each;
        (every case has input width d ≥ dh, so no Gram matrix is rank-limited by its column count);
  (b) the THEORY row ids the library attaches and the shape of each Gram family;
  (c) ``fxlaws.soundness`` (exact laws: worst relative inner product <= 1e-9);
  (d) on the tiny instances (d = 4, batch 2, 3 tokens): ``completeness`` gives "complete" and
      D − dim Lie equals the hand count (THEORY note "Law counts on tiny instances");
and, written independently here,
  (e) the Gram laws recomputed by hand from the weights (Q̄_h = [Wq rows of head h | bq rows]) and
      compared with ``family.evaluate``; their gradients taken with torch.autograd and shown
      orthogonal to the loss gradient; the key-bias gradient shown to vanish (A3) by hand.

Section 3 feeds constructions that must remove laws (RoPE, q/k norm, reuse of a projection,
multiplicative score masks, ...): whatever is attached must stay sound. Section 4 derives the counts
of the reference models (``fxlaws.models``) from their configs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxlaws
from fxlaws import models as fxlaws_models
from fxlaws.verify.completeness import completeness

import helpers

# Gram entries that vanish identically for a head layout are passed over, not failed.
worst_rel_inner = functools.partial(helpers.worst_rel_inner, skip_constant=True)

DT = torch.float64
TOL = 1e-9  # exact-law soundness threshold (THEORY §4.1: ~1e-12 expected in float64)
B, T = 2, 3  # batch 2, 3 tokens (THEORY: ≥ 2 samples, ≥ 2 tokens, dims ≥ 3 for completeness)
ATTN_KINDS = ("attention-qk", "attention-vo")


def tri(n: int) -> int:  # only used in assertions on shapes, never to derive a count
    return n * (n + 1) // 2


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def tokens(d: int, *, seq_first: bool = False) -> torch.Tensor:
    return torch.randn((T, B, d) if seq_first else (B, T, d), dtype=DT)


def rows(ann) -> set[str]:
    return {f.theory for f in ann.laws}


def attention_counts(ann) -> dict[str, int]:
    """Scalar law counts of the attention rows, keyed by THEORY row (A3 is a 'translation' kind)."""
    out: dict[str, int] = {}
    for f in ann.laws:
        if f.theory in ("A1", "A2", "A3", "A4", "A5"):
            key = f"{f.kind}/{f.theory}"
            out[key] = out.get(key, 0) + f.count
    return out


def fams(ann, kind: str, theory: Optional[str] = None):
    return [f for f in ann.laws if f.kind == kind and (theory is None or f.theory == theory)]


def one(ann, kind: str, theory: Optional[str] = None):
    found = fams(ann, kind, theory)
    assert len(found) == 1, [(f.name, f.kind, f.theory) for f in ann.laws]
    return found[0]


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def soundness_ok(model: nn.Module, ann, x) -> tuple[bool, str]:
    res = fxlaws.soundness(model, ann, x, trials=2, samples=8)
    ok = res.ok and res.worst_exact <= TOL and all(r.components > 0 for r in res.rows if r.exact)
    return ok, str(res)


def assert_sound(model: nn.Module, ann, x) -> None:
    ok, text = soundness_ok(model, ann, x)
    assert ok, text


def bar(w: torch.Tensor, b: Optional[torch.Tensor], rows_: slice) -> torch.Tensor:
    """[W[rows] | b[rows]] — THEORY A1's Q̄_h (bias as an extra column)."""
    return w[rows_] if b is None else torch.cat([w[rows_], b[rows_, None]], dim=1)


def random_biases(model: nn.Module) -> nn.Module:
    """Generic, non-zero biases (nn.Linear / nn.MultiheadAttention may initialise some to zero)."""
    with torch.no_grad():
        for n, prm in model.named_parameters():
            if "bias" in n.rsplit(".", 1)[-1]:
                prm.normal_()
    return model


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return (out * torch.randn(out.shape, dtype=DT)).sum()


def upper(m: torch.Tensor) -> torch.Tensor:
    """The independent entries (upper triangle) of a stack of symmetric matrices."""
    iu = torch.triu_indices(m.shape[-1], m.shape[-1])
    return m[..., iu[0], iu[1]]


# ---------------------------------------------------------------------------------------------
# attention modules written in different styles
# ---------------------------------------------------------------------------------------------
class SepSDPA(nn.Module):
    """Separate q/k/v/o Linears + F.scaled_dot_product_attention; optional GQA (``rep``)."""

    def __init__(self, d=4, h=2, kv=None, bias=True, causal=False, rep="none"):
        super().__init__()
        kv = h if kv is None else kv
        self.h, self.kv, self.dh, self.causal, self.rep = h, kv, d // h, causal, rep
        self.q = nn.Linear(d, h * self.dh, bias=bias)
        self.k = nn.Linear(d, kv * self.dh, bias=bias)
        self.v = nn.Linear(d, kv * self.dh, bias=bias)
        self.o = nn.Linear(h * self.dh, d, bias=bias)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv, self.dh).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv, self.dh).transpose(1, 2)
        n_rep, dh, kvh = self.h // self.kv, self.dh, self.kv
        if self.rep == "repeat_interleave":
            k = k.repeat_interleave(n_rep, dim=1)
            v = v.repeat_interleave(n_rep, dim=1)
        elif self.rep == "repeat_kv":  # Hugging Face transformers' repeat_kv
            k = k[:, :, None, :, :].expand(b, kvh, n_rep, t, dh).reshape(b, kvh * n_rep, t, dh)
            v = v[:, :, None, :, :].expand(b, kvh, n_rep, t, dh).reshape(b, kvh * n_rep, t, dh)
        elif self.rep == "tiled":  # query head h reads kv head h % kv (NOT the interleaved grouping)
            k = k[:, None].expand(b, n_rep, kvh, t, dh).reshape(b, kvh * n_rep, t, dh)
            v = v[:, None].expand(b, n_rep, kvh, t, dh).reshape(b, kvh * n_rep, t, dh)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=self.rep == "enable_gqa")
        return self.o(y.transpose(1, 2).reshape(b, t, self.h * self.dh))


class Explicit(nn.Module):
    """Separate q/k/v/o Linears, explicit ``softmax(q @ kᵀ * scale [+ mask], dim=-1) @ v``.

    ``mask``: "none", "add" (additive causal mask, -inf above the diagonal), "masked_fill" (nanoGPT's
    non-flash path), "alibi" (fixed per-head linear distance penalty), "window" (sliding window of 2).
    """

    def __init__(self, d=4, h=2, bias=True, mask="add"):
        super().__init__()
        self.h, self.dh, self.mask = h, d // h, mask
        self.q = nn.Linear(d, d, bias=bias)
        self.k = nn.Linear(d, d, bias=bias)
        self.v = nn.Linear(d, d, bias=bias)
        self.o = nn.Linear(d, d, bias=bias)
        i, j = torch.arange(T, dtype=DT)[:, None], torch.arange(T, dtype=DT)[None, :]
        self.register_buffer("causal_mask", torch.full((T, T), float("-inf"), dtype=DT).triu(1))
        self.register_buffer("tril", torch.tril(torch.ones(T, T, dtype=DT)).view(1, 1, T, T))
        slopes = torch.tensor([2.0 ** -(n + 1) for n in range(h)], dtype=DT)
        self.register_buffer("alibi", -slopes[:, None, None] * (j - i).abs()[None])
        self.register_buffer("window", torch.where((j <= i) & (j > i - 2), 0.0, float("-inf")).to(DT))

    def forward(self, x):
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(x).view(b, t, self.h, self.dh).transpose(1, 2)
        v = self.v(x).view(b, t, self.h, self.dh).transpose(1, 2)
        scale = 1.0 / math.sqrt(self.dh)
        if self.mask == "add":
            att = q @ k.transpose(-2, -1) * scale + self.causal_mask
        elif self.mask == "masked_fill":
            att = (q @ k.transpose(-2, -1)) * scale
            att = att.masked_fill(self.tril == 0, float("-inf"))
        elif self.mask == "alibi":
            att = q @ k.transpose(-2, -1) * scale + self.alibi
        elif self.mask == "window":
            att = q @ k.transpose(-2, -1) * scale + self.window
        else:
            att = q @ k.transpose(-2, -1) * scale
        att = F.softmax(att, dim=-1)
        y = att @ v
        return self.o(y.transpose(1, 2).contiguous().view(b, t, c))


class NanoGPT(nn.Module):
    """nanoGPT's CausalSelfAttention: packed c_attn, ``.split(C, dim=2)``, SDPA(is_causal=True)."""

    def __init__(self, d=4, h=2, bias=True):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d, bias=bias)
        self.c_proj = nn.Linear(d, d, bias=bias)
        self.n_head, self.n_embd = h, d

    def forward(self, x):
        B_, T_, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B_, T_, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B_, T_, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B_, T_, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B_, T_, C)
        return self.c_proj(y)


class Timm(nn.Module):
    """timm's Attention: packed qkv, ``reshape(B, N, 3, H, dh).permute(2, 0, 3, 1, 4)``, ``unbind(0)``."""

    def __init__(self, d=4, h=2, bias=True):
        super().__init__()
        self.num_heads, self.head_dim = h, d // h
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.proj = nn.Linear(d, d, bias=bias)

    def forward(self, x):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(x)


class MHA(nn.Module):
    """nn.MultiheadAttention self-attention."""

    def __init__(self, d=4, h=2, bias=True, batch_first=True, **kw):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, h, bias=bias, batch_first=batch_first, **kw)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


# ---------------------------------------------------------------------------------------------
# 1. the table: styles × hand-derived counts
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    d: int
    counts: dict  # "kind/row" -> hand-derived number of laws (see the comment at each entry)
    gram_shape: tuple  # (groups, dh, dh) of both Gram families
    tiny: bool = False  # run completeness (THEORY §4.2) and expect "complete"
    seq_first: bool = False  # nn.MultiheadAttention(batch_first=False): inputs (T, B, d)


def _mha_counts(bias: bool) -> dict:
    return {"attention-qk/A1": 6, "attention-vo/A2": 6} | ({"translation/A3": 4} if bias else {})


# Hand derivations. Notation: d = width, H = query heads, dh = d / H, G = kv heads.
#  d=4, H=2, dh=2, bias: A1 = 2 heads · (2·3/2) = 6; A2 = 6; A3 = k.bias has H·dh = 4 entries: 4.
#    Total 16 (THEORY note: one head d=4, dh=2 with biases: 3 + 3 + 2 = 8; here two such heads).
#  d=4, H=2, dh=2, no bias: 6 + 6 = 12 (THEORY note "two heads: 12").
#  d=8, H=2, dh=4, bias: A1 = 2 · (4·5/2) = 20; A2 = 20; A3 = 8 key-bias entries.
#  d=6, H=3, dh=2, bias: A1 = 3 · 3 = 9; A2 = 9; A3 = 6.
#  d=8, H=4, dh=2, bias: A1 = 4 · 3 = 12; A2 = 12; A3 = 8.
#  GQA d=8, H=4, G=2, dh=2, bias: A4 QK = G · (2·3/2) = 6; A4 VO = 6; A3 = k.bias has G·dh = 4 entries.
#  GQA d=4, H=2, G=1, dh=2, no bias: A4 QK = 3, VO = 3: 6 (THEORY note "GQA two query heads on one
#    kv head: 6"); with bias + A3 (G·dh = 2 entries): 8.
# Causal masks (additive, masked_fill or is_causal) change nothing (THEORY §2 notes).
A_16 = {"attention-qk/A1": 6, "attention-vo/A2": 6, "translation/A3": 4}
A_12 = {"attention-qk/A1": 6, "attention-vo/A2": 6}
CASES: dict[str, Case] = {
    "sdpa": Case(lambda: SepSDPA(), 4, A_16, (2, 2, 2), tiny=True),
    "sdpa-causal": Case(lambda: SepSDPA(causal=True), 4, A_16, (2, 2, 2), tiny=True),
    "sdpa-causal-nobias": Case(lambda: SepSDPA(bias=False, causal=True), 4, A_12, (2, 2, 2), tiny=True),
    "sdpa-d8-h2": Case(lambda: SepSDPA(d=8, h=2), 8,
                       {"attention-qk/A1": 20, "attention-vo/A2": 20, "translation/A3": 8}, (2, 4, 4)),
    "explicit-no-mask": Case(lambda: Explicit(mask="none"), 4, A_16, (2, 2, 2), tiny=True),
    "explicit-additive-causal": Case(lambda: Explicit(mask="add"), 4, A_16, (2, 2, 2), tiny=True),
    "explicit-additive-causal-nobias": Case(lambda: Explicit(mask="add", bias=False), 4, A_12, (2, 2, 2), tiny=True),
    "explicit-masked_fill": Case(lambda: Explicit(mask="masked_fill"), 4, A_16, (2, 2, 2), tiny=True),
    "explicit-d6-h3": Case(lambda: Explicit(d=6, h=3), 6,
                           {"attention-qk/A1": 9, "attention-vo/A2": 9, "translation/A3": 6}, (3, 2, 2)),
    "nanogpt-split": Case(lambda: NanoGPT(), 4, A_16, (2, 2, 2), tiny=True),
    "nanogpt-split-nobias": Case(lambda: NanoGPT(bias=False), 4, A_12, (2, 2, 2), tiny=True),
    "nanogpt-d8-h2": Case(lambda: NanoGPT(d=8, h=2), 8,
                          {"attention-qk/A1": 20, "attention-vo/A2": 20, "translation/A3": 8}, (2, 4, 4)),
    "timm-unbind": Case(lambda: Timm(), 4, A_16, (2, 2, 2), tiny=True),
    "timm-d8-h4": Case(lambda: Timm(d=8, h=4), 8,
                       {"attention-qk/A1": 12, "attention-vo/A2": 12, "translation/A3": 8}, (4, 2, 2)),
    "gqa-repeat_interleave": Case(lambda: SepSDPA(d=8, h=4, kv=2, rep="repeat_interleave"), 8,
                                  {"attention-qk/A4": 6, "attention-vo/A4": 6, "translation/A3": 4}, (2, 2, 2)),
    "gqa-repeat_kv": Case(lambda: SepSDPA(d=8, h=4, kv=2, rep="repeat_kv"), 8,
                          {"attention-qk/A4": 6, "attention-vo/A4": 6, "translation/A3": 4}, (2, 2, 2)),
    "gqa-enable_gqa": Case(lambda: SepSDPA(d=8, h=4, kv=2, rep="enable_gqa"), 8,
                           {"attention-qk/A4": 6, "attention-vo/A4": 6, "translation/A3": 4}, (2, 2, 2)),
    "gqa-tiled": Case(lambda: SepSDPA(d=8, h=4, kv=2, rep="tiled"), 8,
                      {"attention-qk/A4": 6, "attention-vo/A4": 6, "translation/A3": 4}, (2, 2, 2)),
    "gqa-repeat_interleave-tiny": Case(lambda: SepSDPA(d=4, h=2, kv=1, bias=False, rep="repeat_interleave"), 4,
                                       {"attention-qk/A4": 3, "attention-vo/A4": 3}, (1, 2, 2), tiny=True),
    "gqa-repeat_kv-tiny-bias": Case(lambda: SepSDPA(d=4, h=2, kv=1, rep="repeat_kv"), 4,
                                    {"attention-qk/A4": 3, "attention-vo/A4": 3, "translation/A3": 2},
                                    (1, 2, 2), tiny=True),
    "mha-batch_first-bias": Case(lambda: MHA(bias=True, batch_first=True), 4, _mha_counts(True), (2, 2, 2), tiny=True),
    "mha-batch_first-nobias": Case(lambda: MHA(bias=False, batch_first=True), 4, _mha_counts(False), (2, 2, 2),
                                   tiny=True),
    "mha-seq_first-bias": Case(lambda: MHA(bias=True, batch_first=False), 4, _mha_counts(True), (2, 2, 2),
                               tiny=True, seq_first=True),
    "mha-seq_first-nobias": Case(lambda: MHA(bias=False, batch_first=False), 4, _mha_counts(False), (2, 2, 2),
                                 tiny=True, seq_first=True),
}


def _annotated(name: str):
    case = CASES[name]
    model = case.build().double()
    x = tokens(case.d, seq_first=case.seq_first)
    return model, x, fxlaws.annotate(model, x)


@pytest.mark.parametrize("name", list(CASES))
def test_attention_styles_counts_rows_soundness(name):
    case = CASES[name]
    model, x, ann = _annotated(name)
    # (a) counts per kind and row, exactly the hand derivation; nothing else is attached (the output
    # projection's bias is an output bias: no law under any loss).
    assert attention_counts(ann) == case.counts, ann.table()
    expected_kinds: dict[str, int] = {}
    for key, n in case.counts.items():
        kind = key.split("/")[0]
        expected_kinds[kind] = expected_kinds.get(kind, 0) + n
    assert ann.counts() == expected_kinds
    # (b) rows and Gram shapes
    assert rows(ann) == {key.split("/")[1] for key in case.counts}
    for kind in ATTN_KINDS:
        fam = one(ann, kind)
        assert fam.shape == case.gram_shape and fam.exact
        assert fam.assumptions == frozenset({"any-loss"})
        g, dh, _ = case.gram_shape
        assert fam.count == g * tri(dh)  # consistent with the shape: a full symmetric dh×dh per group
        assert tuple(fam.evaluate(params_of(model)).shape) == case.gram_shape
    # (c) soundness
    assert_sound(model, ann, x)


TINY = [n for n, c in CASES.items() if c.tiny]


@pytest.mark.parametrize("name", TINY)
def test_attention_styles_complete(name):
    # (d) THEORY §4.2: D − dim Lie(W) equals the hand count and equals what is attached.
    case = CASES[name]
    model, x, ann = _annotated(name)
    res = completeness(model, (x,), ann=ann)
    assert res.unsound == [], str(res)
    assert res.expected == sum(case.counts.values()), str(res)
    assert res.verdict == "complete", str(res)


# ---------------------------------------------------------------------------------------------
# 2. independent numeric checks: the Gram laws by hand from the weights
# ---------------------------------------------------------------------------------------------
def hand_qk_vo(wq, bq, wk, bk, wv, bv, wo, heads: int, dh: int, group: Callable[[int], int], groups: int):
    """THEORY A1/A2/A4 by hand. q rows of head h: h·dh … (h+1)·dh; k/v rows of kv group g likewise;
    O_h = Wo[:, h·dh:(h+1)·dh]. ``group(h)`` = the kv group query head h reads."""
    qk = torch.zeros(groups, dh, dh, dtype=DT)
    vo = torch.zeros(groups, dh, dh, dtype=DT)
    for g in range(groups):
        kb = bar(wk, bk, slice(g * dh, (g + 1) * dh))
        vb = bar(wv, bv, slice(g * dh, (g + 1) * dh))
        qk[g] -= kb @ kb.T
        vo[g] += vb @ vb.T
    for h in range(heads):
        qb = bar(wq, bq, slice(h * dh, (h + 1) * dh))
        o_h = wo[:, h * dh:(h + 1) * dh]
        qk[group(h)] += qb @ qb.T
        vo[group(h)] -= o_h.T @ o_h
    return qk, vo


def packed(w, b, s: int, d: int):
    """Block s (0 = q, 1 = k, 2 = v) of a packed [3d, ·] projection."""
    return w[s * d:(s + 1) * d], (None if b is None else b[s * d:(s + 1) * d])


def by_hand(model: nn.Module, d: int, heads: int, kv: int):
    p = params_of(model)
    dh = d // heads
    if isinstance(model, SepSDPA):
        wq, bq, wk, bk = p["q.weight"], p.get("q.bias"), p["k.weight"], p.get("k.bias")
        wv, bv, wo = p["v.weight"], p.get("v.bias"), p["o.weight"]
    else:  # packed [q; k; v] rows: (weight, bias, output projection weight)
        w_name, b_name, o_name = {
            NanoGPT: ("c_attn.weight", "c_attn.bias", "c_proj.weight"),
            Timm: ("qkv.weight", "qkv.bias", "proj.weight"),
            MHA: ("mha.in_proj_weight", "mha.in_proj_bias", "mha.out_proj.weight"),
        }[type(model)]
        (wq, bq), (wk, bk), (wv, bv) = (packed(p[w_name], p.get(b_name), s, d) for s in range(3))
        wo = p[o_name]
    rep = heads // kv
    tiled = isinstance(model, SepSDPA) and model.rep == "tiled"
    group = (lambda h: h % kv) if tiled else (lambda h: h // rep)
    return hand_qk_vo(wq, bq, wk, bk, wv, bv, wo, heads, dh, group, kv), bk


NUMERIC = {
    # name: (builder, d, query heads, kv heads)
    "separate-sdpa-d8-h2": (lambda: SepSDPA(d=8, h=2), 8, 2, 2),
    "separate-sdpa-d8-h2-nobias": (lambda: SepSDPA(d=8, h=2, bias=False), 8, 2, 2),
    "packed-timm-d8-h2": (lambda: Timm(d=8, h=2), 8, 2, 2),
    "packed-nanogpt-d6-h3": (lambda: NanoGPT(d=6, h=3), 6, 3, 3),
    "mha-d8-h2": (lambda: MHA(d=8, h=2), 8, 2, 2),
    "gqa-repeat_kv-d8": (lambda: SepSDPA(d=8, h=4, kv=2, rep="repeat_kv"), 8, 4, 2),
    "gqa-enable_gqa-d8": (lambda: SepSDPA(d=8, h=4, kv=2, rep="enable_gqa"), 8, 4, 2),
    "gqa-tiled-d8": (lambda: SepSDPA(d=8, h=4, kv=2, rep="tiled"), 8, 4, 2),
}


@pytest.mark.parametrize("name", list(NUMERIC))
def test_gram_laws_by_hand(name):
    build, d, heads, kv = NUMERIC[name]
    model = random_biases(build().double())
    ann = fxlaws.annotate(model, tokens(d))
    (qk, vo), bk = by_hand(model, d, heads, kv)
    p = params_of(model)
    torch.testing.assert_close(one(ann, "attention-qk").evaluate(p), qk, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(one(ann, "attention-vo").evaluate(p), vo, rtol=1e-12, atol=1e-12)
    a3 = fams(ann, "translation", "A3")
    if bk is None:
        assert a3 == []
    else:
        (fam,) = a3
        torch.testing.assert_close(fam.evaluate(p), bk, rtol=0, atol=0)
    # the whole annotation's evaluate agrees with the families
    for fam_name, value in ann.evaluate(model).items():
        torch.testing.assert_close(value, ann[fam_name].evaluate(p))


def test_gram_laws_gradient_orthogonal_by_hand():
    """The hand-written A1/A2 laws are orthogonal to the loss gradient; near-misses are not."""
    model, x = random_biases(SepSDPA(d=8, h=2, causal=True).double()), tokens(8)

    def law(p, *, q_bias=True, k_head=None):
        q_b = p["q.bias"] if q_bias else None
        qk, vo = hand_qk_vo(p["q.weight"], q_b, p["k.weight"], p["k.bias"], p["v.weight"], p["v.bias"],
                            p["o.weight"], 2, 4, lambda h: h, 2)
        if k_head is not None:  # pair head 0's queries with head 1's keys: not a law
            kb0, kb1 = (bar(p["k.weight"], p["k.bias"], slice(4 * i, 4 * i + 4)) for i in (0, 1))
            qk = qk[:1] + kb0 @ kb0.T - kb1 @ kb1.T
        return torch.cat([upper(qk).reshape(-1), upper(vo).reshape(-1)])

    assert worst_rel_inner(model, loss_of(model, x), law) < 1e-12
    # dropping the query bias from Q̄ (THEORY A1 needs [Wq, bq]) breaks the law
    assert worst_rel_inner(model, loss_of(model, x), lambda p: law(p, q_bias=False)[:20]) > 1e-4
    # head 0's queries against head 1's keys: not a law
    assert worst_rel_inner(model, loss_of(model, x), lambda p: law(p, k_head=1)[:10]) > 1e-4


@pytest.mark.parametrize("name", ["sdpa", "explicit-additive-causal", "explicit-masked_fill", "timm-unbind",
                                  "mha-batch_first-bias", "gqa-repeat_kv-tiny-bias"])
def test_key_bias_gradient_vanishes_by_hand(name):
    """A3 by hand: under softmax over keys the loss gradient w.r.t. the key bias is exactly zero."""
    model, x, ann = _annotated(name)
    random_biases(model)
    (fam,) = fams(ann, "translation", "A3")
    (bias_name,) = fam.params
    p = params_of(model)
    grads = dict(zip(p, torch.autograd.grad(loss_of(model, x), list(p.values()))))
    scale = max(float(v.abs().max()) for v in grads.values())
    assert scale > 1e-6
    # the entries of the bias parameter that A3 reads (all of k.bias, or the k block of a packed bias)
    read = torch.autograd.grad(fam.evaluate({bias_name: p[bias_name]}).sum(), p[bias_name])[0] != 0
    assert int(read.sum()) == fam.count
    torch.testing.assert_close(fam.evaluate(p), p[bias_name][read], rtol=0, atol=0)
    assert float(grads[bias_name][read].abs().max()) <= 1e-12 * scale


# ---------------------------------------------------------------------------------------------
# 3. constructions that must remove laws; whatever remains must be sound
# ---------------------------------------------------------------------------------------------
def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x):  # pairs (2i, 2i+1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class Variant(nn.Module):
    """d=4, 2 heads, separate q/k/v/o with biases; one modification ``kind`` at a time."""

    def __init__(self, kind: str, d=4, h=2):
        super().__init__()
        assert d // h % 2 == 0
        self.h, self.dh, self.kind = h, d // h, kind
        dh = self.dh
        self.q = nn.Linear(d, d)
        if kind != "shared_qk":
            self.k = nn.Linear(d, d)
        if kind != "raw_v":
            self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        pos = torch.arange(T, dtype=DT)
        inv = 1.0 / 10.0 ** (torch.arange(0, dh, 2, dtype=DT) / dh)
        ang = pos[:, None] * inv[None]
        half = torch.cat((ang, ang), -1)  # half-split layout: coordinate i pairs with i + dh/2
        inter = ang.repeat_interleave(2, -1)  # interleaved layout: 2i pairs with 2i+1
        self.register_buffer("cos", (inter if kind == "rope_interleaved" else half).cos())
        self.register_buffer("sin", (inter if kind == "rope_interleaved" else half).sin())
        i, j = pos[:, None], pos[None, :]
        self.register_buffer("keep", (j <= i).to(DT))  # 0/1 causal mask, used multiplicatively
        self.register_buffer("future", j > i)
        self.register_buffer("w", torch.rand(T, T, dtype=DT) + 0.5)
        if kind == "qk_layernorm":
            self.q_norm, self.k_norm = nn.LayerNorm(dh), nn.LayerNorm(dh)
        if kind == "qk_rmsnorm":
            self.q_norm, self.k_norm = nn.RMSNorm(dh, eps=1e-5), nn.RMSNorm(dh, eps=1e-5)

    def forward(self, x):
        b, t, c = x.shape
        kind, h, dh = self.kind, self.h, self.dh
        qp = self.q(x)
        kp = qp if kind == "shared_qk" else self.k(x)
        vp = x if kind == "raw_v" else self.v(x)
        if kind == "q_heads_scrambled":  # view without the transpose: heads mixed with tokens
            q = qp.view(b, h, t, dh)
        else:
            q = qp.view(b, t, h, dh).transpose(1, 2)
        k = kp.view(b, t, h, dh).transpose(1, 2)
        v = vp.view(b, t, h, dh).transpose(1, 2)
        if kind == "rope_half":
            q, k = q * self.cos + rotate_half(q) * self.sin, k * self.cos + rotate_half(k) * self.sin
        if kind == "rope_interleaved":
            q, k = q * self.cos + rotate_interleaved(q) * self.sin, k * self.cos + rotate_interleaved(k) * self.sin
        if kind in ("qk_layernorm", "qk_rmsnorm"):
            q, k = self.q_norm(q), self.k_norm(k)
        att = (q @ k.transpose(-2, -1)) * dh ** -0.5
        if kind == "mul_mask":
            att = att * self.keep
        if kind == "mul_weights":
            att = att * self.w
        if kind == "masked_fill_zero":
            att = att.masked_fill(self.future, 0.0)
        att = att.softmax(dim=-2 if kind == "softmax_over_queries" else -1)
        y = att @ v
        if kind == "out_heads_scrambled":  # merge heads without moving them next to the tokens
            y = y.reshape(b, t, c)
        else:
            y = y.transpose(1, 2).reshape(b, t, c)
        out = self.o(y)
        if kind == "q_used_elsewhere":
            out = out + qp
        if kind == "k_used_elsewhere":
            out = out + kp
        if kind == "v_used_elsewhere":
            out = out + vp
        return out


def _variant(kind: str):
    model = Variant(kind).double()  # d=4, 2 heads, dh=2
    x = tokens(4)
    return model, x, fxlaws.annotate(model, x)


# kind -> what THEORY allows, derived by hand for d=4, 2 heads, dh=2, all biases. True: present with
# the hand count (A1 = A2 = 2·(2·3/2) = 6, A3 = 4 key-bias entries, A5 = 2 heads · dh/2 = 1 rotary
# pair = 2); False: must be absent; None: either (a law that still holds may be dropped).
#  rope_*: q, k rotated by position-dependent angles: of GL(dh) only the maps commuting with every
#    rotation survive (per pair a complex scaling: one symmetric generator): A5 replaces A1; the key
#    bias is rotated differently per key: A3 gone (THEORY A5); v/o untouched: A2.
#  qk_*norm: the norm over head_dim is not GL(dh)-equivariant: no A1, no A3 (the bias is normalised
#    with k); A2.
#  q_used_elsewhere / k_used_elsewhere: the projection's output reaches the model output directly:
#    no GL symmetry on it: no A1. A2 stays. (A3 still holds when only q is reused.)
#  v_used_elsewhere: no A2; A1 and A3 stay.
#  raw_v: no v projection: no A2; A1 and A3 stay.
#  shared_qk: q = k from one projection: Q̄Q̄ᵀ − K̄K̄ᵀ ≡ 0, nothing to attach on q/k; A2 still holds
#    but the library drops it (the q/k row-overlap check also guards A2): allowed either way.
#  softmax_over_queries: scores still depend on q·kᵀ only: A1; softmax normalises over queries, so
#    a key shift is not absorbed: no A3 (the query bias is; THEORY has no row for it); A2.
#  q_heads_scrambled: "head" rows of q change with the token: no per-head GL: no A1.
#  out_heads_scrambled: O's column blocks meet different heads at different tokens: no A2.
REMOVES = {
    "rope_half": dict(A1=False, A2=True, A3=False, A5=True),
    "rope_interleaved": dict(A1=False, A2=True, A3=False, A5=True),
    "qk_layernorm": dict(A1=False, A2=True, A3=False, A5=False),
    "qk_rmsnorm": dict(A1=False, A2=True, A3=False, A5=False),
    "q_used_elsewhere": dict(A1=False, A2=True, A3=None, A5=False),
    "k_used_elsewhere": dict(A1=False, A2=True, A3=False, A5=False),
    "v_used_elsewhere": dict(A1=True, A2=False, A3=True, A5=False),
    "raw_v": dict(A1=True, A2=False, A3=True, A5=False),
    "shared_qk": dict(A1=False, A2=None, A3=False, A5=False),
    "softmax_over_queries": dict(A1=True, A2=True, A3=False, A5=False),
    "q_heads_scrambled": dict(A1=False, A2=None, A3=None, A5=False),
    "out_heads_scrambled": dict(A1=None, A2=False, A3=None, A5=False),
}
HAND = {"A1": ("attention-qk", 6), "A2": ("attention-vo", 6), "A3": ("translation", 4), "A5": ("attention-qk", 2)}


@pytest.mark.parametrize("kind", list(REMOVES))
def test_constructions_that_remove_laws(kind):
    model, x, ann = _variant(kind)
    for row, want in REMOVES[kind].items():
        found = fams(ann, HAND[row][0], row)
        if want is False:
            assert not found, f"{kind}: {row} attached\n{ann.table()}"
        if want is True:
            assert len(found) == 1 and found[0].count == HAND[row][1], f"{kind}: {row}\n{ann.table()}"
    assert "A4" not in rows(ann)
    assert_sound(model, ann, x)


def test_rope_leaves_key_bias_gradient():
    """Independent reason for 'no A3 under RoPE': the key-bias gradient is not zero there."""
    model, x, _ = _variant("rope_half")
    g = torch.autograd.grad(loss_of(model, x), model.k.bias)[0]
    assert float(g.abs().max()) > 1e-6


@pytest.mark.parametrize("kind, pairs", [("rope_half", [(0, 2), (1, 3)]), ("rope_interleaved", [(0, 1), (2, 3)])])
def test_rope_pair_law_by_hand(kind, pairs):
    """THEORY A5 by hand, d=8, 2 heads, dh=4: per head h and rotary pair f = (i, j),
    ‖Q̄_h[i]‖² + ‖Q̄_h[j]‖² − ‖K̄_h[i]‖² − ‖K̄_h[j]‖² (rows with their bias entry): 2 heads · 2 pairs = 4."""
    model, x = Variant(kind, d=8, h=2).double(), tokens(8)
    ann = fxlaws.annotate(model, x)
    assert not fams(ann, "attention-qk", "A1")

    def law(p, *, paired=True):
        q = bar(p["q.weight"], p["q.bias"], slice(0, 8)).pow(2).sum(1).view(2, 4)
        k = bar(p["k.weight"], p["k.bias"], slice(0, 8)).pow(2).sum(1).view(2, 4)
        if not paired:  # one coordinate of a pair alone: not a law
            return (q - k)[:, 0]
        return torch.stack([q[:, i] + q[:, j] - k[:, i] - k[:, j] for i, j in pairs], dim=1)

    fam = one(ann, "attention-qk", "A5")
    assert fam.count == 4
    p = params_of(model)
    torch.testing.assert_close(fam.evaluate(p).reshape(2, 2), law(p), rtol=1e-12, atol=1e-12)
    assert worst_rel_inner(model, loss_of(model, x), law) < 1e-12
    assert worst_rel_inner(model, loss_of(model, x), lambda p: law(p, paired=False)) > 1e-4
    assert_sound(model, ann, x)


SOUND_ONLY = {
    # name -> (builder, d, hand count D − dim Lie or None). ALiBi / sliding window: the additive bias
    # does not depend on θ and is constant per (query, key) pair, so A1 (6), A2 (6) and A3 (4) all
    # still hold: 16, as in the plain case.
    "alibi-additive": (lambda: Explicit(mask="alibi"), 4, 16),
    "sliding-window": (lambda: Explicit(mask="window"), 4, 16),
    "mha-add_bias_kv": (lambda: MHA(add_bias_kv=True), 4, None),
}


@pytest.mark.parametrize("name", list(SOUND_ONLY))
def test_position_biases_and_masks_stay_sound(name):
    build, d, expected = SOUND_ONLY[name]
    model, x = build().double(), tokens(d)
    ann = fxlaws.annotate(model, x)
    assert_sound(model, ann, x)
    if expected is not None:
        res = completeness(model, (x,), ann=ann)
        assert res.unsound == [], str(res)
        assert res.expected == expected, str(res)
        assert res.attached <= expected


class SDPAWithBias(nn.Module):
    """SDPA with an additive float attn_mask (ALiBi slopes) — the mask is a fixed buffer."""

    def __init__(self, d=4, h=2):
        super().__init__()
        self.h, self.dh = h, d // h
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        pos = torch.arange(T, dtype=DT)
        slopes = torch.tensor([0.5, 0.25], dtype=DT)[:h]
        self.register_buffer("alibi", -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()[None])

    def forward(self, x):
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(x).view(b, t, self.h, self.dh).transpose(1, 2)
        v = self.v(x).view(b, t, self.h, self.dh).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.alibi)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


def test_sdpa_with_alibi_attn_mask_sound():
    model, x = SDPAWithBias().double(), tokens(4)
    ann = fxlaws.annotate(model, x)
    assert_sound(model, ann, x)
    res = completeness(model, (x,), ann=ann)
    assert res.unsound == [] and res.expected == 16, str(res)  # same derivation as "alibi-additive"


# Score transformations that are NOT shift-invariant over keys: A1 still holds (the scores remain a
# function of q·kᵀ), but A3 must not be attached — a key-bias shift δ adds q_i·δ to the kept scores
# and nothing to the masked/zeroed ones (or multiplies it by a weight varying over keys).
A3_BREAKERS = ["mul_mask", "mul_weights", "masked_fill_zero"]


@pytest.mark.parametrize("kind", A3_BREAKERS)
def test_key_bias_really_moves_under_non_shift_score_ops(kind):
    """Independent precondition for the test below: the key-bias gradient is not zero here."""
    model, x, ann = _variant(kind)
    g = torch.autograd.grad(loss_of(model, x), model.k.bias)[0]
    assert float(g.abs().max()) > 1e-6
    assert one(ann, "attention-qk", "A1").count == 6  # A1 is still right here
    assert one(ann, "attention-vo", "A2").count == 6


@pytest.mark.parametrize("kind", A3_BREAKERS)
def test_no_key_bias_law_under_non_shift_score_ops(kind):
    model, x, ann = _variant(kind)
    assert not fams(ann, "translation", "A3"), ann.table()
    assert_sound(model, ann, x)


def test_mha_add_zero_attn_no_key_bias_law():
    # an appended zero key scores q·0, which a key-bias shift does not move: no A3, A1/A2 stay
    model, x = MHA(add_zero_attn=True).double(), tokens(4)
    ann = fxlaws.annotate(model, x)
    assert not fams(ann, "translation", "A3"), ann.table()
    assert_sound(model, ann, x)


def test_mha_add_zero_attn_key_bias_moves():
    """Independent check behind the test above: in_proj_bias[E:2E] receives gradient."""
    model, x = MHA(add_zero_attn=True).double(), tokens(4)
    g = torch.autograd.grad(loss_of(model, x), model.mha.in_proj_bias)[0]
    assert float(g[4:8].abs().max()) > 1e-6
    ann = fxlaws.annotate(model, x)  # A1 and A2 do hold with a zero key/value token
    for kind, row in (("attention-qk", "A1"), ("attention-vo", "A2")):
        fam = one(ann, kind, row)
        assert worst_rel_inner(model, loss_of(model, x), lambda p, f=fam: upper(f.evaluate(p)).reshape(-1)) < 1e-12


class XCA(nn.Module):
    """XCiT-style cross-covariance attention without the q/k normalisation: the softmax runs over head
    dimensions, not keys, so no per-head GL(dh) acts on q/k — nothing of A1/A3 may be attached."""

    def __init__(self, d=4, h=2):
        super().__init__()
        self.h, self.dh = h, d // h
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k, v = q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).permute(0, 3, 1, 2).reshape(B_, N, C))


def test_cross_covariance_attention_sound():
    model, x = XCA().double(), tokens(4)
    ann = fxlaws.annotate(model, x)
    assert not fams(ann, "attention-qk") and not fams(ann, "translation", "A3")
    assert_sound(model, ann, x)


# ---------------------------------------------------------------------------------------------
# 4. reference models
# ---------------------------------------------------------------------------------------------
# Hand derivations from the configs in models/*.py:
#  gpt_tiny: n_layer=2, n_head=2, n_embd=32 → dh=16, bias=True, packed c_attn, no RoPE.
#    A1 = 2 layers · 2 heads · 16·17/2 = 2·2·136 = 544; A2 = 544;
#    A3 = key-bias entries c_attn.bias[32:64]: 32 per layer · 2 = 64.
#  vit_tiny: depth=2, num_heads=4, embed_dim=64 → dh=16, qkv_bias=True (Block default).
#    A1 = 2·4·136 = 1088; A2 = 1088; A3 = 64 key-bias entries · 2 layers = 128.
#  llama_tiny: n_layers=2, dim=32, n_heads=4, n_kv_heads=2 → dh=8, GQA (2 query heads per kv head),
#    no biases, RoPE (rotate_half) on q/k → no A1/A4 Gram law on q/k and no A3;
#    A5 per kv group and rotary pair (THEORY A5 with A4's grouping): 2 layers · 2 groups · dh/2 = 4
#    pairs = 16; A4 (v/o) = 2 layers · 2 kv groups · 8·9/2 = 2·2·36 = 144.
#  mha_tiny: one nn.MultiheadAttention, embed_dim=32, num_heads=4 → dh=8, bias=True.
#    A1 = 4·36 = 144; A2 = 144; A3 = 32 key-bias entries (in_proj_bias[32:64]).
REFERENCE = {
    "gpt_tiny": ({"attention-qk/A1": 544, "attention-vo/A2": 544, "translation/A3": 64}, (2, 16, 16), 2),
    "vit_tiny": ({"attention-qk/A1": 1088, "attention-vo/A2": 1088, "translation/A3": 128}, (4, 16, 16), 2),
    "llama_tiny": ({"attention-qk/A5": 16, "attention-vo/A4": 144}, (2, 8, 8), 2),
    "mha_tiny": ({"attention-qk/A1": 144, "attention-vo/A2": 144, "translation/A3": 32}, (4, 8, 8), 1),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_models(name):
    counts, gram_shape, layers = REFERENCE[name]
    model = getattr(fxlaws_models, name)().double()
    x = tuple(t.double() if t.is_floating_point() else t for t in model.example_inputs())
    ann = fxlaws.annotate(model, x)
    assert attention_counts(ann) == counts, ann.table()
    for key in counts:  # one family per layer and row
        kind, row = key.split("/")
        found = fams(ann, kind, row)
        assert len(found) == layers
        for fam in found:
            # Gram rows: (groups, dh, dh); A5: (kv groups, rotary pairs) = (2, 8/2) for llama_tiny;
            # A3: (key-bias entries of one layer,)
            want = {"A5": (2, 4), "A3": (fam.count,)}.get(row, gram_shape)
            assert fam.shape == want
    assert_sound(model, ann, x)


# --- HF GPT-2 style: Conv1D projections (weight [in, out], torch.addmm) ------------------------
class _Conv1D(nn.Module):
    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class _HFGPT2Attention(nn.Module):
    def __init__(self, E=4, H=2):
        super().__init__()
        self.E, self.H = E, H
        self.c_attn, self.c_proj = _Conv1D(3 * E, E), _Conv1D(E, E)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(self.E, dim=2)
        B, T, C = x.shape
        heads = lambda t: t.view(B, T, self.H, C // self.H).permute(0, 2, 1, 3)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        w = F.softmax(torch.matmul(q, k.transpose(-1, -2)) / (C // self.H) ** 0.5, dim=-1)  # scale from shapes
        return self.c_proj(torch.matmul(w, v).permute(0, 2, 1, 3).contiguous().view(B, T, C))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_hf_gpt2_conv1d_attention(frontend):
    # E=4, 2 heads of dh=2: A1 2·3, A2 2·3, A3 key-bias entries 4 (Q̄/K̄/V̄ rows are Conv1D *columns*)
    model, x = _HFGPT2Attention().double(), tokens(4)
    ann = fxlaws.annotate(model, x, frontend=frontend)
    assert ann.counts() == {"attention-qk": 6, "attention-vo": 6, "translation": 4}
    assert_sound(model, ann, x)
    p = dict(model.named_parameters())
    w, b, o = p["c_attn.weight"], p["c_attn.bias"], p["c_proj.weight"]
    qk = one(ann, "attention-qk", "A1").evaluate(p)
    for h in range(2):
        qbar = torch.cat([w[:, 2 * h:2 * h + 2].T, b[2 * h:2 * h + 2, None]], 1)
        kbar = torch.cat([w[:, 4 + 2 * h:4 + 2 * h + 2].T, b[4 + 2 * h:4 + 2 * h + 2, None]], 1)
        torch.testing.assert_close(qk[h], qbar @ qbar.T - kbar @ kbar.T, rtol=1e-12, atol=1e-12)
        vbar = torch.cat([w[:, 8 + 2 * h:8 + 2 * h + 2].T, b[8 + 2 * h:8 + 2 * h + 2, None]], 1)
        oh = o[2 * h:2 * h + 2, :]  # Conv1D: out = a @ W, so head h's output block is W's rows
        torch.testing.assert_close(one(ann, "attention-vo", "A2").evaluate(p)[h], vbar @ vbar.T - oh @ oh.T,
                                   rtol=1e-12, atol=1e-12)


class MHAStream(nn.Module):
    """x + MultiheadAttention(x)[0], read only by a LayerNorm, then a head (tv ViT's encoder layer)."""

    def __init__(self, d=4, h=2):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, h, batch_first=True)
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.ln(x + self.mha(x, x, x, need_weights=False)[0]))


def test_mha_out_proj_translations_into_a_normalised_stream_by_hand():
    """THEORY N1: the stream after the residual add is read only by the LayerNorm, so a shift of
    out_proj's output by c·1 (its bias, or ``δW = 1 aᵀ``) is removed: Σ_j b_j and Σ_j W[j, :] are
    conserved — 1 + d = 5 laws, derived here from the weights."""
    model, x = random_biases(MHAStream().double()), tokens(4)
    ann = fxlaws.annotate(model, x)

    def hand(p):
        return torch.cat([p["mha.out_proj.weight"].sum(0), p["mha.out_proj.bias"].sum().reshape(1)])

    fams = sorted((f for f in ann.laws if f.theory == "N1" and f.params[0].startswith("mha.out_proj")),
                  key=lambda f: f.params[0], reverse=True)
    assert sum(f.count for f in fams) == 5, ann.table()
    got = torch.cat([f.evaluate(params_of(model)).reshape(-1) for f in fams])
    torch.testing.assert_close(got, hand(params_of(model)), rtol=1e-12, atol=1e-12)
    assert helpers.worst_rel_inner(model, loss_of(model, x), hand) < 1e-12
    assert_sound(model, ann, x)
