"""Text classifiers built on PyTorch's own Transformer modules."""
from __future__ import annotations

import math

import torch
from torch import nn


class TransformerEncoderClassifier(nn.Module):
    """Sequence classifier: embedding, ``nn.TransformerEncoder``, mean pooling, linear head.

    Args:
        vocab_size: Number of tokens.
        d_model: Model width.
        nhead: Attention heads per layer.
        dim_feedforward: Hidden width of each layer's feed-forward network.
        num_layers: Number of encoder layers.
        num_classes: Number of output classes.
        dropout: Dropout inside the encoder layers.
        max_len: Longest sequence the learned position embedding covers.

    Example:
        >>> model = encoder_tiny()
        >>> model(*model.example_inputs()).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        d_model: int = 512,
        nhead: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 6,
        num_classes: int = 2,
        dropout: float = 0.0,
        max_len: int = 512,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_embedding = nn.Embedding(max_len, d_model)
        encoder_layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(encoder_layer, num_layers, enable_nested_tensor=False)
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(src.size(1), device=src.device)
        x = self.embedding(src) * math.sqrt(self.d_model) + self.pos_embedding(positions)
        x = self.encoder(x)
        x = x.mean(dim=1)
        return self.classifier(x)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, self.vocab_size, (2, 8), generator=g, dtype=torch.long),)


class MHAClassifier(nn.Module):
    """One post-norm self-attention layer (``nn.MultiheadAttention``), mean pooling and a linear head.

    Args:
        vocab_size: Number of tokens.
        embed_dim: Model width.
        num_heads: Attention heads.
        num_classes: Number of output classes.
        max_len: Longest sequence the learned position embedding covers.

    Example:
        >>> model = mha_tiny()
        >>> model(*model.example_inputs()).shape
        torch.Size([2, 4])
    """

    def __init__(
        self, vocab_size: int = 30522, embed_dim: int = 256, num_heads: int = 8, num_classes: int = 2, max_len: int = 512
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.pos_embedding = nn.Embedding(max_len, embed_dim)
        self.mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.embedding(tokens) + self.pos_embedding(positions)
        attn_out, _ = self.mha(x, x, x, need_weights=False)
        x = self.norm(x + attn_out)
        return self.fc(x.mean(dim=1))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, self.vocab_size, (2, 8), generator=g, dtype=torch.long),)


def encoder_tiny(**kwargs) -> TransformerEncoderClassifier:
    """Tiny encoder classifier: vocab 64, width 32, 4 heads, FFN 64, 2 layers, 4 classes; inputs (2, 8) token ids."""
    cfg = dict(vocab_size=64, d_model=32, nhead=4, dim_feedforward=64, num_layers=2, num_classes=4, max_len=16)
    return TransformerEncoderClassifier(**{**cfg, **kwargs})


def mha_tiny(**kwargs) -> MHAClassifier:
    """Tiny ``nn.MultiheadAttention`` classifier: vocab 64, width 32, 4 heads, 4 classes; inputs (2, 8) token ids."""
    cfg = dict(vocab_size=64, embed_dim=32, num_heads=4, num_classes=4, max_len=16)
    return MHAClassifier(**{**cfg, **kwargs})
