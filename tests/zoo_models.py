"""The model zoo: tiny random-init configurations of architectures from Hugging Face transformers,
timm and torchvision, built from the libraries' own classes (nothing is downloaded), float64.

Each entry builds ``(model, inputs)`` where ``inputs`` is the way users call the model (the default
call: ``model(**inputs)`` for dicts, ``model(*inputs)`` for tuples, no extra keyword arguments).
Sizes are the smallest the libraries accept with every block kind present (hidden 16–32, 1–2 blocks
per stage, 32×32 images), so that float64 soundness checks stay within seconds. These are samples
of their libraries: fxlaws is judged on other architectures of the same libraries too.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

B, S, VOCAB = 2, 8, 64
DT = torch.float64


def _ids(s: int = S) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, s), generator=torch.Generator().manual_seed(0))


def _image(size: int = 32) -> torch.Tensor:
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=DT)


def _causal_lm(cls: str, config: str, **cfg) -> Callable[[], tuple[nn.Module, dict]]:
    def build():
        import transformers

        model = getattr(transformers, cls)(getattr(transformers, config)(vocab_size=VOCAB, **cfg))
        return model, {"input_ids": _ids()}
    return build


def _t5():
    import transformers

    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
                                num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                decoder_start_token_id=0, pad_token_id=0)
    return transformers.T5ForConditionalGeneration(cfg), {"input_ids": _ids(), "decoder_input_ids": _ids(6)}


def _bert():
    import transformers

    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    return transformers.BertModel(cfg), {"input_ids": _ids()}


def _hf_vit():
    import transformers

    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10)
    return transformers.ViTForImageClassification(cfg), {"pixel_values": _image()}


def _clip_vision():
    import transformers

    cfg = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=2, num_attention_heads=2, projection_dim=16)
    return transformers.CLIPVisionModel(cfg), {"pixel_values": _image()}


def _whisper_encoder():
    import transformers

    cfg = transformers.WhisperConfig(vocab_size=VOCAB, num_mel_bins=8, d_model=16, encoder_layers=2,
                                     encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2,
                                     encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=16,
                                     max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     decoder_start_token_id=1)
    features = torch.randn(B, 8, 32, generator=torch.Generator().manual_seed(0), dtype=DT)
    return transformers.WhisperModel(cfg).encoder, {"input_features": features}


def _timm(name: str, **kw):
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw), (_image(),)
    return build


def _timm_resnet():
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10), (_image(),)


def _timm_efficientnet():
    from timm.models.efficientnet import _gen_efficientnet

    return _gen_efficientnet("efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.25, num_classes=10), (
        _image(),)


def _timm_mixer():
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=32), (_image(),)


def _tv_resnet():
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10), (_image(),)


def _tv_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10), (_image(),)


def _tv_efficientnet():
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=last), (_image(),)


def _tv_swin():
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2],
                           num_classes=10), (_image(),)


def _tv_mobilenet():
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

    setting, last = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    return MobileNetV3(setting, last, num_classes=10), (_image(),)


def _tv_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10), (_image(),)


def _tv_densenet():
    from torchvision.models import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10), (_image(),)


_DECODER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, max_position_embeddings=32)

#: name -> builder of (model, inputs of the default call)
ZOO: dict[str, Callable] = {
    "hf/llama": _causal_lm("LlamaForCausalLM", "LlamaConfig", num_attention_heads=4, num_key_value_heads=2,
                           **_DECODER),
    "hf/gpt2": _causal_lm("GPT2LMHeadModel", "GPT2Config", n_embd=16, n_layer=2, n_head=2, n_positions=32),
    "hf/bert": _bert,
    "hf/t5": _t5,
    "hf/mixtral": _causal_lm("MixtralForCausalLM", "MixtralConfig", num_attention_heads=4, num_key_value_heads=2,
                             **_DECODER),
    "hf/gemma2": _causal_lm("Gemma2ForCausalLM", "Gemma2Config", num_attention_heads=2, num_key_value_heads=1,
                            head_dim=8, sliding_window=4, **_DECODER),
    "hf/qwen3": _causal_lm("Qwen3ForCausalLM", "Qwen3Config", num_attention_heads=4, num_key_value_heads=2,
                           head_dim=4, **_DECODER),
    "hf/vit": _hf_vit,
    "hf/clip-vision": _clip_vision,
    "hf/whisper-encoder": _whisper_encoder,
    "timm/resnet": _timm_resnet,
    "timm/convnext": _timm("convnext_atto", dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
    "timm/vit": _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2),
    "timm/efficientnet": _timm_efficientnet,
    "timm/regnet": _timm("regnetx_002"),
    "timm/mlp-mixer": _timm_mixer,
    "tv/resnet": _tv_resnet,
    "tv/convnext": _tv_convnext,
    "tv/efficientnet": _tv_efficientnet,
    "tv/swin": _tv_swin,
    "tv/mobilenet-v3": _tv_mobilenet,
    "tv/vit": _tv_vit,
    "tv/densenet": _tv_densenet,
}


def build(name: str) -> tuple[nn.Module, object]:
    """The zoo model ``name`` in float64 (seeded), and the inputs of its default call."""
    torch.manual_seed(0)
    model, inputs = ZOO[name]()
    return model.to(DT), inputs
