"""Sparse mixture-of-experts decoder in the style of Mistral's Mixtral reference code."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .llama import Attention, FeedForward, Llama, LlamaConfig, RMSNorm


@dataclass
class MoEConfig(LlamaConfig):
    """:class:`~fxlaws.models.llama.LlamaConfig` plus the routing hyperparameters.

    Attributes:
        num_experts: Experts per MoE layer.
        num_experts_per_tok: Experts each token is routed to (top-k).
    """

    num_experts: int = 8
    num_experts_per_tok: int = 2


class MoeLayer(nn.Module):
    """Top-k routed SwiGLU experts; the k selected router logits are softmax-normalised per token.

    Args:
        experts: The expert networks.
        gate: Router, ``Linear(dim, len(experts), bias=False)``.
        num_experts_per_tok: Experts per token (k).
    """

    def __init__(self, experts: list[nn.Module], gate: nn.Module, num_experts_per_tok: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.gate = gate
        self.num_experts_per_tok = num_experts_per_tok

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        gate_logits = self.gate(inputs)
        weights, selected_experts = torch.topk(gate_logits, self.num_experts_per_tok)
        weights = F.softmax(weights, dim=1).to(inputs.dtype)
        results = torch.zeros_like(inputs)
        for i, expert in enumerate(self.experts):
            batch_idx, nth_expert = torch.where(selected_experts == i)
            results[batch_idx] += weights[batch_idx, nth_expert, None] * expert(inputs[batch_idx])
        return results


class MoEBlock(nn.Module):
    """Pre-norm decoder block whose feed-forward network is a :class:`MoeLayer`."""

    def __init__(self, args: MoEConfig) -> None:
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = MoeLayer(
            experts=[FeedForward(args.dim, args.hidden_dim) for _ in range(args.num_experts)],
            gate=nn.Linear(args.dim, args.num_experts, bias=False),
            num_experts_per_tok=args.num_experts_per_tok,
        )
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)
        B, T, D = h.shape
        ff = self.feed_forward(self.ffn_norm(h).view(B * T, D)).view(B, T, D)  # route tokens, not sequences
        return h + ff


class MoETransformer(Llama):
    """Mixtral-style decoder-only language model: LLaMA attention, top-k mixture-of-experts FFNs.

    The expert dispatch depends on the router's choices (``torch.where``), so the forward runs eagerly
    but cannot be captured by ``torch.fx.symbolic_trace`` as a static graph.

    Args:
        args: A :class:`MoEConfig`.

    Example:
        >>> model = moe_tiny()
        >>> model(*model.example_inputs()).shape
        torch.Size([2, 8, 64])
    """

    def __init__(self, args: MoEConfig) -> None:
        super().__init__(args)
        self.args = args

    def _block(self, layer_id: int, params) -> nn.Module:
        return MoEBlock(params)


def moe_tiny(**kwargs) -> MoETransformer:
    """Tiny MoE decoder: vocab 64, width 32, 2 layers, 4 heads (2 kv), 4 SwiGLU experts of hidden 64, top-2."""
    cfg = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=16,
               num_experts=4, num_experts_per_tok=2)
    return MoETransformer(MoEConfig(**{**cfg, **kwargs}))
