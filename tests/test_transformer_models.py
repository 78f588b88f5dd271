"""Transformer reference models (fxlaws.models): construction, shapes, determinism, and that
annotate/soundness run on them. Law counts are deliberately not asserted here."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import fxlaws
from fxlaws.models import (
    GPT,
    MODELS,
    Llama,
    MHAClassifier,
    MoETransformer,
    TransformerEncoderClassifier,
    VisionTransformer,
    gpt_tiny,
    llama_tiny,
    moe_tiny,
    vit_b16,
)

# name -> (class, expected output shape on example_inputs())
TINY = {
    "vit-tiny": (VisionTransformer, (2, 10)),
    "gpt-tiny": (GPT, (2, 8, 64)),
    "llama-tiny": (Llama, (2, 8, 64)),
    "encoder-tiny": (TransformerEncoderClassifier, (2, 4)),
    "mha-tiny": (MHAClassifier, (2, 4)),
    "moe-tiny": (MoETransformer, (2, 8, 64)),
}
NAMES = sorted(TINY)
# models whose root forward symbolic_trace captures as one graph (moe-tiny's expert dispatch is data-dependent)
FX_TRACEABLE = set(TINY) - {"moe-tiny"}


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


@functools.lru_cache(maxsize=None)
def _annotated(name: str):
    model = _model(name)
    return fxlaws.annotate(model, model.example_inputs())


def test_registered():
    assert set(TINY) <= set(MODELS)
    assert "vit-b16" not in MODELS  # exported factory only; too large for the registry


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    cls, shape = TINY[name]
    model = _model(name)
    assert isinstance(model, cls)
    with torch.no_grad():
        out = model(*model.example_inputs())
    assert tuple(out.shape) == shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_example_inputs_deterministic(name):
    model = _model(name)
    a, b = model.example_inputs(), model.example_inputs()
    assert isinstance(a, tuple) and len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and torch.equal(x, y)
    # a local generator: the global RNG is untouched
    state = torch.get_rng_state()
    model.example_inputs()
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny", "encoder-tiny", "mha-tiny", "moe-tiny"])
def test_token_inputs(name):
    (tokens,) = _model(name).example_inputs()
    assert tokens.shape == (2, 8) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 64


@pytest.mark.parametrize("name", sorted(FX_TRACEABLE))
def test_symbolic_trace(name):
    model = _model(name)
    x = model.example_inputs()
    gm = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(gm(*x), model(*x))


def test_moe_is_data_dependent_but_runs_eagerly():
    model = moe_tiny()
    with pytest.raises((TypeError, torch.fx.proxy.TraceError)):  # 'Proxy' object does not support item assignment
        torch.fx.symbolic_trace(model)
    out = model(*model.example_inputs())
    out.sum().backward()
    assert all(p.grad is not None for p in model.layers[0].feed_forward.gate.parameters())


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny", "moe-tiny"])
def test_causal(name):
    """Changing the last token changes no logit at an earlier position."""
    model = _model(name)
    (tokens,) = model.example_inputs()
    other = tokens.clone()
    other[:, -1] = (other[:, -1] + 1) % 64
    with torch.no_grad():
        a, b = model(tokens), model(other)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_gpt_weight_tying():
    model = gpt_tiny()
    assert model.transformer.wte.weight is model.lm_head.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # de-duplicated: registered once, as transformer.wte.weight
    assert model.config.n_embd == 32 and model.config.n_layer == 2 and model.config.n_head == 2


def test_llama_gqa_shapes():
    model = llama_tiny()
    attn = model.layers[0].attention
    head_dim = 32 // 4
    assert (attn.n_heads, attn.n_kv_heads, attn.head_dim) == (4, 2, head_dim)
    assert attn.wq.out_features == 4 * head_dim
    assert attn.wk.out_features == attn.wv.out_features == 2 * head_dim
    assert attn.wo.in_features == 4 * head_dim
    assert all(lin.bias is None for lin in (attn.wq, attn.wk, attn.wv, attn.wo))
    assert model.output.weight is not model.tok_embeddings.weight  # untied head
    assert model.layers[0].feed_forward.w1.out_features == 64


def test_llama_rotary_is_relative():
    """q·k after rotary embedding depends only on the position offset."""
    from fxlaws.models.llama import apply_rotary_pos_emb, precompute_cos_sin

    cos, sin = precompute_cos_sin(8, 16)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)
    qs, ks = q.expand(16, 8), k.expand(16, 8)
    qr, kr = apply_rotary_pos_emb(qs, ks, cos, sin)
    torch.testing.assert_close(qr[3] @ kr[1], qr[10] @ kr[8])
    torch.testing.assert_close(qr.norm(dim=-1), qs.norm(dim=-1))


@pytest.mark.parametrize("name", NAMES)
def test_annotate_and_soundness(name):
    model = _model(name)
    ann = _annotated(name)
    # fx traces every model but the Mixtral-style MoE (data-dependent dispatch); models built on
    # nn.TransformerEncoder (an fx leaf fxlaws cannot see into) are exported first
    assert ann.frontend == ("export" if name in ("moe-tiny", "encoder-tiny") else "fx")
    res = fxlaws.soundness(model, ann, trials=1, samples=4)
    assert res.ok, str(res)
    assert len(res.rows) == len(ann.laws)


@pytest.mark.slow
def test_vit_b16():
    model = vit_b16()
    assert sum(p.numel() for p in model.parameters()) == 86_567_656
    (x,) = model.example_inputs()
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)
