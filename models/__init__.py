"""Reference PyTorch architectures and a registry of built-in models."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .cnn import VGG, LeNet, lenet, vgg, vgg_bn
from .encoder import MHAClassifier, TransformerEncoderClassifier, encoder_tiny, mha_tiny
from .gpt import GPT, GPTConfig, gpt_tiny
from .llama import Llama, LlamaConfig, RMSNorm, llama_7b, llama_tiny
from .mlp import MLP, gelu_mlp, leaky_relu_mlp, linear_mlp, mlp, relu_mlp
from .moe import MoEConfig, MoETransformer, moe_tiny
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from .vit import VisionTransformer, vit_b16, vit_tiny

MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": relu_mlp,
    "leaky-mlp": leaky_relu_mlp,
    "linear-mlp": linear_mlp,
    "gelu-mlp": gelu_mlp,
    "vgg": vgg,
    "vgg-bn": vgg_bn,
    "lenet": lenet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vit-tiny": vit_tiny,
    "gpt-tiny": gpt_tiny,
    "llama-tiny": llama_tiny,
    "encoder-tiny": encoder_tiny,
    "mha-tiny": mha_tiny,
    "moe-tiny": moe_tiny,
}


def get_model(name: str) -> nn.Module:
    """Build a built-in model by its registry name.

    Raises:
        KeyError: If ``name`` is not in :data:`MODELS`.
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None
    return factory()


__all__ = [
    "MODELS",
    "get_model",
    "MLP",
    "mlp",
    "relu_mlp",
    "leaky_relu_mlp",
    "linear_mlp",
    "gelu_mlp",
    "VGG",
    "vgg",
    "vgg_bn",
    "LeNet",
    "lenet",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet50",
    "VisionTransformer",
    "vit_tiny",
    "vit_b16",
    "GPT",
    "GPTConfig",
    "gpt_tiny",
    "Llama",
    "LlamaConfig",
    "RMSNorm",
    "llama_tiny",
    "llama_7b",
    "TransformerEncoderClassifier",
    "encoder_tiny",
    "MHAClassifier",
    "mha_tiny",
    "MoETransformer",
    "MoEConfig",
    "moe_tiny",
]
