"""Self-check: every docs/THEORY.md §2 catalogue row at a tiny size, judged by the completeness engine.

Each row builds a tiny module (input dims ≥ 3, ≥ 2 tokens, ≥ 2 samples, THEORY §2 note) and
compares three numbers: the count THEORY states, ``D − dim Lie`` measured by
:func:`~fxlaws.verify.completeness.completeness`, and the laws fxlaws attaches. Rows whose laws
fxlaws does not attach yet (S2 bilinear gates) are reported as
known-incomplete, with the measured number of missing laws (their D − dim Lie must still equal
THEORY's count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .completeness import CompletenessResult, completeness

__all__ = ["CATALOGUE", "CatalogueCase", "CatalogueRow", "self_check"]


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.p, self.c1, self.c2 = nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        h = F.relu(self.p(x))
        return torch.cat([self.c1(h), self.c2(h)], dim=-1)


class _Square(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x) ** 2)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(x)))


class _LogSoftmaxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return F.log_softmax(self.fc(x), dim=-1)


class _Attention(nn.Module):
    """Plain multi-head attention on (batch, tokens, d); ``kv_heads < heads`` is GQA; optional RoPE."""

    def __init__(self, d=4, heads=1, dh=2, bias=False, kv_heads=None, rope=False):
        super().__init__()
        self.h, self.kv, self.dh, self.rope = heads, kv_heads or heads, dh, rope
        self.q = nn.Linear(d, heads * dh, bias=bias)
        self.k = nn.Linear(d, self.kv * dh, bias=bias)
        self.v = nn.Linear(d, self.kv * dh, bias=bias)
        self.o = nn.Linear(heads * dh, d, bias=bias)

    def _rotate(self, x):
        t = torch.arange(x.shape[-2], dtype=x.dtype)[:, None]
        freqs = t * (10000.0 ** (-torch.arange(0, self.dh, 2, dtype=x.dtype) / self.dh))
        cos, sin = torch.cat([freqs.cos()] * 2, -1), torch.cat([freqs.sin()] * 2, -1)
        x1, x2 = x[..., : self.dh // 2], x[..., self.dh // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv, self.dh).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv, self.dh).transpose(1, 2)
        if self.rope:
            q, k = self._rotate(q), self._rotate(k)
        k = k.repeat_interleave(self.h // self.kv, dim=1)
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        a = torch.softmax(q @ k.transpose(-1, -2) / self.dh ** 0.5, dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(b, t, self.h * self.dh))


class _MHA(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 2, bias=bias, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class _GLU(nn.Module):
    def __init__(self, act, d=3, hidden=4):
        super().__init__()
        self.act = act
        self.w1, self.w3, self.w2 = nn.Linear(d, hidden), nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class _MoE(nn.Module):
    """Dense softmax MoE: input dim 3, bias-free router, 3 experts, each a bias-free 3-2-3 ReLU MLP."""

    def __init__(self, d=3, experts=3, hidden=2):
        super().__init__()
        self.gate = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, d, bias=False))
            for _ in range(experts))

    def forward(self, x):
        w = torch.softmax(self.gate(x), dim=-1)
        return sum(w[..., e:e + 1] * expert(x) for e, expert in enumerate(self.experts))


def _seq(layers):
    return lambda: nn.Sequential(*layers())


@dataclass(frozen=True)
class CatalogueCase:
    """One tiny instance of a catalogue row."""

    row: str
    description: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    theory_count: int  # THEORY §2 "Law counts on tiny instances" (or derived from its formulas)
    loss: str = "any"
    attached_by_fxlaws: bool = True  # False: laws of this row are not attached yet
    note: str = ""


_TOKENS = (2, 3, 4)  # batch 2, 3 tokens, width 4

CATALOGUE: tuple[CatalogueCase, ...] = (
    CatalogueCase("R1", "ReLU MLP 3-4-2 with biases", _seq(lambda: (nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))), (2, 3), 4),
    CatalogueCase("R1", "LeakyReLU MLP 3-4-2", _seq(lambda: (nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2))), (2, 3), 4),
    CatalogueCase("R2", "one ReLU layer (3 units) feeding two consumers", _Branches, (2, 3), 3),
    CatalogueCase("R3", "x² between Linear 3→4 and Linear 4→2", _Square, (2, 3), 4),
    CatalogueCase("G1", "linear 3-4-2 without biases", _seq(lambda: (nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))), (2, 3), 10),
    CatalogueCase("G1", "conv→conv without nonlinearity, 2 hidden channels", _seq(lambda: (nn.Conv2d(3, 2, 3), nn.Conv2d(2, 3, 3))), (2, 3, 6, 6), 3),
    CatalogueCase("N1-N3", "Linear-LayerNorm-ReLU-Linear 3-4-2 (N2 is eps-broken: not counted)", _seq(lambda: (nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))), (2, 3), 8),
    CatalogueCase("N1-N3", "conv-BatchNorm-ReLU-conv, 4 channels: N1 4 + N3 4", _seq(lambda: (nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))), (2, 3, 6, 6), 8),
    CatalogueCase("N1-N3", "conv-GroupNorm(2 groups)-ReLU-conv, 4 channels: N1 2 + N3 4", _seq(lambda: (nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Conv2d(4, 2, 3))), (2, 3, 6, 6), 6),
    CatalogueCase("N3", "Linear-RMSNorm-ReLU-Linear 3-4-2: γ_j² − out_j (N2 eps-broken, no N1)", _seq(lambda: (nn.Linear(3, 4), nn.RMSNorm(4, eps=1e-5), nn.ReLU(), nn.Linear(4, 2))), (2, 3), 4),
    CatalogueCase("T1", "linear layer 3→4 with bias under cross-entropy", lambda: nn.Linear(3, 4), (2, 3), 4, loss="cross_entropy"),
    CatalogueCase("T2", "Linear 3→4 → log_softmax inside the model (any loss)", _LogSoftmaxHead, (2, 3), 4),
    CatalogueCase("§1", "residual block x + fc2(relu(fc1(x))), hidden 4: the inner MLP's laws", _Residual, (2, 3), 4),
    CatalogueCase("—", "GELU MLP 3-4-2", _seq(lambda: (nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))), (2, 3), 0),
    CatalogueCase("A1+A2", "single-head attention d=4, dh=2, no biases", lambda: _Attention(), _TOKENS, 6),
    CatalogueCase("A1-A3", "single-head attention d=4, dh=2, with biases", lambda: _Attention(bias=True), _TOKENS, 8),
    CatalogueCase("A1+A2", "two heads d=4, dh=2, no biases", lambda: _Attention(heads=2), _TOKENS, 12),
    CatalogueCase("A1+A2", "nn.MultiheadAttention E=4, 2 heads, no biases: 2·3 + 2·3", lambda: _MHA(False), _TOKENS, 12),
    CatalogueCase("A1-A3", "nn.MultiheadAttention E=4, 2 heads, biases: 6 + 6 + key bias 4", lambda: _MHA(True), _TOKENS, 16),
    CatalogueCase("A4", "GQA: two query heads on one kv head", lambda: _Attention(heads=2, kv_heads=1), _TOKENS, 6),
    CatalogueCase("A5", "RoPE (half-split), one head dh=2: 1 pair + A2 3", lambda: _Attention(rope=True), _TOKENS, 4),
    CatalogueCase("A4+A5", "RoPE + GQA, 2 query heads on 1 kv head, dh=4: 2 pairs + VO 10", lambda: _Attention(d=4, heads=2, dh=4, kv_heads=1, rope=True), _TOKENS, 12),
    CatalogueCase("S1", "SwiGLU 3→4→3", lambda: _GLU(F.silu), (2, 3), 4),
    CatalogueCase("S2", "ReGLU with 3 hidden units", lambda: _GLU(F.relu, hidden=3), (2, 3), 6),
    CatalogueCase("S2", "bilinear GLU (identity gate) with 3 hidden units", lambda: _GLU(lambda x: x, hidden=3), (2, 3), 6),
    CatalogueCase("T2", "dense softmax MoE (dim 3, 3 experts of 3-2-3 ReLU): router 3 + experts 6", _MoE, (2, 3), 9),
)


@dataclass
class CatalogueRow:
    case: CatalogueCase
    result: CompletenessResult

    @property
    def status(self) -> str:
        r, c = self.result, self.case
        if r.unsound:
            return "UNSOUND"
        if r.expected != c.theory_count:
            return f"DISAGREES with THEORY ({r.expected} measured, {c.theory_count} stated)"
        if c.attached_by_fxlaws:
            return "agrees" if r.verdict == "complete" else f"fxlaws {r.verdict}"
        return f"known incomplete: {r.expected - r.attached} laws not attached yet"

    @property
    def ok(self) -> bool:
        return self.status == "agrees" or self.status.startswith("known incomplete")

    def __str__(self) -> str:
        r = self.result
        return (f"{self.case.row:6} {self.case.description[:58]:58} THEORY {self.case.theory_count:3d}  "
                f"D−dimLie {r.expected:3d}  attached {r.attached:3d}  {self.status}")


def self_check(seed: int = 0, progress: Optional[Callable[[str], None]] = None) -> list[CatalogueRow]:
    """Run every catalogue case; returns one :class:`CatalogueRow` each (``.ok`` / ``.status``)."""
    rows = []
    for case in CATALOGUE:
        if progress:
            progress(f"{case.row}: {case.description}")
        torch.manual_seed(seed)
        module = case.build()
        x = (torch.randn(case.input_shape),)
        rows.append(CatalogueRow(case, completeness(module, x, loss=case.loss, seed=seed)))
    return rows
