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


# --- micro configurations: completeness (D − dim Lie) is a rank computation on D ≲ 1,000 scalars -------
# Each builds (model, inputs, scope). scope "model": the library's whole model at the smallest widths it
# accepts; "block: <class>": the library itself fixes widths too large for a rank computation (the
# torchvision ResNet's 64…512 channels, timm/torchvision EfficientNet's multiples of 8), so one block of
# that library class is measured instead. Dropout is 0 (it breaks translation laws in training mode;
# the models of the same class with dropout keep the others), sequences are as long as the position
# tables (unused rows would count as trivial laws).
MB, MS, MV = 2, 4, 8  # micro batch, sequence length, vocabulary


def _micro_ids() -> torch.Tensor:
    return torch.randint(0, MV, (MB, MS), generator=torch.Generator().manual_seed(0))


def _micro_image(size: int = 8, channels: int = 1) -> torch.Tensor:
    return torch.randn(MB, channels, size, size, generator=torch.Generator().manual_seed(0), dtype=DT)


def _micro_lm(cls: str, config: str, **cfg):
    def build():
        import transformers

        conf = getattr(transformers, config)(vocab_size=MV, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                             max_position_embeddings=MS, **cfg)
        return getattr(transformers, cls)(conf), {"input_ids": _micro_ids()}, "model"
    return build


def _micro_gpt2():
    import transformers

    cfg = transformers.GPT2Config(vocab_size=MV, n_embd=4, n_layer=1, n_head=2, n_positions=MS, n_inner=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg), {"input_ids": _micro_ids()}, "model"


def _micro_bert():
    import transformers

    cfg = transformers.BertConfig(vocab_size=MV, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=4, max_position_embeddings=MS, type_vocab_size=1,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg), {"input_ids": _micro_ids()}, "model"


def _micro_t5():
    import transformers

    cfg = transformers.T5Config(vocab_size=MV, d_model=4, d_kv=2, d_ff=4, num_layers=1, num_decoder_layers=1,
                                num_heads=2, relative_attention_num_buckets=4, relative_attention_max_distance=8,
                                dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0)
    return (transformers.T5ForConditionalGeneration(cfg),
            {"input_ids": _micro_ids(), "decoder_input_ids": _micro_ids()[:, :3]}, "model")


def _micro_vit():
    import transformers

    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=4, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=4, num_labels=3, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    return transformers.ViTForImageClassification(cfg), {"pixel_values": _micro_image()}, "model"


def _micro_clip():
    import transformers

    cfg = transformers.CLIPVisionConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=4, intermediate_size=4,
                                        num_hidden_layers=1, num_attention_heads=2, projection_dim=4)
    return transformers.CLIPVisionModel(cfg), {"pixel_values": _micro_image()}, "model"


def _micro_whisper():
    import transformers

    cfg = transformers.WhisperConfig(vocab_size=MV, num_mel_bins=2, d_model=4, encoder_layers=1,
                                     encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2,
                                     encoder_ffn_dim=4, decoder_ffn_dim=4, max_source_positions=MS,
                                     max_target_positions=MS, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     decoder_start_token_id=1, dropout=0.0, attention_dropout=0.0,
                                     activation_dropout=0.0)
    features = torch.randn(MB, 2, 2 * MS, generator=torch.Generator().manual_seed(0), dtype=DT)
    return transformers.WhisperModel(cfg).encoder, {"input_features": features}, "model"


def _micro_timm_resnet():
    from timm.models.resnet import BasicBlock

    down = nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
    return BasicBlock(2, 4, stride=2, downsample=down), (_micro_image(4, 2),), "block: timm BasicBlock (downsample)"


def _micro_timm_convnext():
    from timm.models.convnext import ConvNeXtBlock

    # the whole micro model (4 stages, 32×32 so that the last stage's 3×3 taps all see data) passed
    # 16 GB in the rank computation: one block, on a 3×3 map (every tap of the 3×3 kernel is used)
    # (3 channels: a LayerNorm over 2 leaves its output on a line, which adds a law of the micro size only)
    return (ConvNeXtBlock(3, kernel_size=3, mlp_ratio=2), (_micro_image(3, 3),),
            "block: timm ConvNeXtBlock (depth-wise 3x3, LayerNorm over permuted channels)")


def _micro_timm_vit():
    from timm.models.vision_transformer import VisionTransformer

    return (VisionTransformer(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=4, depth=1, num_heads=2,
                              mlp_ratio=1.0), (_micro_image(),), "model")


def _micro_timm_efficientnet():
    from functools import partial

    from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite

    block = InvertedResidual(4, 4, dw_kernel_size=3, exp_ratio=2.0, act_layer=nn.SiLU,
                             se_layer=partial(SqueezeExcite, rd_ratio=0.25, act_layer=nn.SiLU))
    return block, (_micro_image(4, 4),), "block: timm InvertedResidual (MBConv + SE)"


def _micro_timm_regnet():
    from timm.models.regnet import Bottleneck

    return (Bottleneck(4, 4, group_size=2, bottle_ratio=1.0), (_micro_image(4, 4),),
            "block: timm RegNet Bottleneck (grouped conv)")


def _micro_timm_mixer():
    from timm.models.mlp_mixer import MlpMixer

    return (MlpMixer(num_classes=3, img_size=8, in_chans=1, patch_size=4, num_blocks=1, embed_dim=4,
                     mlp_ratio=(0.5, 1.0)), (_micro_image(),), "model")


def _micro_tv_resnet():
    from torchvision.models.resnet import BasicBlock, conv1x1

    down = nn.Sequential(conv1x1(2, 4, stride=2), nn.BatchNorm2d(4))
    return BasicBlock(2, 4, stride=2, downsample=down), (_micro_image(4, 2),), "block: torchvision BasicBlock (downsample)"


def _micro_tv_convnext():
    from torchvision.models.convnext import CNBlock

    # one block on a 7×7 map: every tap of its depth-wise 7×7 kernel sees data (a whole model small
    # enough for the rank computation leaves its last stage at 1×1, where 48 of 49 taps are idle)
    return CNBlock(3, layer_scale=1e-6, stochastic_depth_prob=0.0), (_micro_image(7, 3),), (
        "block: torchvision CNBlock (depth-wise 7x7, LayerNorm over permuted channels)")


def _micro_tv_efficientnet():
    from torchvision.models.efficientnet import MBConv, MBConvConfig

    cnf = MBConvConfig(2, 3, 1, 8, 8, 1, width_mult=1.0, depth_mult=1.0)
    return (MBConv(cnf, stochastic_depth_prob=0.0, norm_layer=nn.BatchNorm2d), (_micro_image(4, 8),),
            "block: torchvision MBConv (SE)")


def _micro_tv_swin():
    from torchvision.models.swin_transformer import SwinTransformerBlock

    x = torch.randn(MB, 4, 4, 4, generator=torch.Generator().manual_seed(0), dtype=DT)  # (B, H, W, C)
    return (SwinTransformerBlock(4, 2, window_size=[2, 2], shift_size=[1, 1], mlp_ratio=1.0), (x,),
            "block: torchvision SwinTransformerBlock (shifted 2x2 windows, relative position bias)")


def _micro_tv_mobilenet():
    from functools import partial

    from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig

    cnf = InvertedResidualConfig(8, 3, 16, 8, True, "HS", 1, 1, 1.0)
    return (InvertedResidual(cnf, partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)), (_micro_image(4, 8),),
            "block: torchvision InvertedResidual (SE, hardswish)")


def _micro_tv_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return (VisionTransformer(image_size=8, patch_size=4, num_layers=1, num_heads=2, hidden_dim=4, mlp_dim=4,
                              num_classes=3), (_micro_image(8, 3),), "model")


def _micro_tv_densenet():
    from torchvision.models import DenseNet

    return (DenseNet(growth_rate=2, block_config=(1, 1), num_init_features=2, bn_size=1, num_classes=3),
            (_micro_image(16, 3),), "model")


_MICRO_DECODER = dict(num_attention_heads=2, num_key_value_heads=1)

#: name -> builder of (model, inputs, scope) small enough for a Lie-algebra rank (tests/zoo_models.py top)
MICRO: dict[str, Callable] = {
    "hf/llama": _micro_lm("LlamaForCausalLM", "LlamaConfig", **_MICRO_DECODER),
    "hf/gpt2": _micro_gpt2,
    "hf/bert": _micro_bert,
    "hf/t5": _micro_t5,
    "hf/mixtral": _micro_lm("MixtralForCausalLM", "MixtralConfig", num_local_experts=3, num_experts_per_tok=2,
                            **_MICRO_DECODER),
    "hf/gemma2": _micro_lm("Gemma2ForCausalLM", "Gemma2Config", head_dim=4, sliding_window=2, **_MICRO_DECODER),
    "hf/qwen3": _micro_lm("Qwen3ForCausalLM", "Qwen3Config", head_dim=4, **_MICRO_DECODER),
    "hf/vit": _micro_vit,
    "hf/clip-vision": _micro_clip,
    "hf/whisper-encoder": _micro_whisper,
    "timm/resnet": _micro_timm_resnet,
    "timm/convnext": _micro_timm_convnext,
    "timm/vit": _micro_timm_vit,
    "timm/efficientnet": _micro_timm_efficientnet,
    "timm/regnet": _micro_timm_regnet,
    "timm/mlp-mixer": _micro_timm_mixer,
    "tv/resnet": _micro_tv_resnet,
    "tv/convnext": _micro_tv_convnext,
    "tv/efficientnet": _micro_tv_efficientnet,
    "tv/swin": _micro_tv_swin,
    "tv/mobilenet-v3": _micro_tv_mobilenet,
    "tv/vit": _micro_tv_vit,
    "tv/densenet": _micro_tv_densenet,
}


def build_micro(name: str) -> tuple[nn.Module, object, str]:
    """The micro configuration of zoo model ``name`` in float64 (seeded), its inputs and its scope."""
    torch.manual_seed(0)
    model, inputs, scope = MICRO[name]()
    return model.to(DT), inputs, scope


# --- full-size configurations, built on the meta device (benchmarks/zoo.py --full) -------------------
def _full_timm(name: str):
    def build():
        import timm

        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        return model, (torch.randn(1, 3, 224, 224, device="meta"),)
    return build


def _full_tv(name: str):
    def build():
        import torchvision

        with torch.device("meta"):
            model = getattr(torchvision.models, name)()
        return model, (torch.randn(1, 3, 224, 224, device="meta"),)
    return build


def _full_lm(cls: str, config: str, **cfg):
    def build():
        import transformers

        conf = getattr(transformers, config)(**cfg)
        with torch.device("meta"):
            model = getattr(transformers, cls)(conf)
        return model, {"input_ids": torch.randint(0, 32000, (1, 128), generator=torch.Generator().manual_seed(0))}
    return build


#: name -> builder of (model on meta, inputs): the published configurations' shapes
FULL: dict[str, Callable] = {
    "ConvNeXt-B (timm)": _full_timm("convnext_base"),
    "ViT-B/16 (timm)": _full_timm("vit_base_patch16_224"),
    "Swin-T (torchvision)": _full_tv("swin_t"),
    "EfficientNet-B0 (torchvision)": _full_tv("efficientnet_b0"),
    "Llama-2-7B": _full_lm("LlamaForCausalLM", "LlamaConfig", vocab_size=32000, hidden_size=4096,
                           intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, max_position_embeddings=4096),
    "Mixtral-8x7B": _full_lm("MixtralForCausalLM", "MixtralConfig", vocab_size=32000, hidden_size=4096,
                             intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                             max_position_embeddings=4096),
}


def build_full(name: str) -> tuple[nn.Module, object]:
    """The full-size configuration ``name`` on the meta device and the inputs of its default call."""
    torch.manual_seed(0)
    return FULL[name]()
