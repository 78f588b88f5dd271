"""Law counts, soundness and coverage on every reference model (fxlaws.models).

Every expected count below is derived by hand from docs/THEORY.md, not read off fxlaws' output.
Notation: "hidden width" = number of channels between a producer P and its consumer C.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import fxlaws
from fxlaws.models import MODELS

LOSSES = (None, "cross_entropy")
LARGE = {"vgg", "vgg-bn", "resnet18", "resnet50"}


# --- hand-derived counts ---------------------------------------------------------------------------
#
# MLPs: sizes (784, 256, 128, 10), all Linear layers with bias.
#   relu / leaky_relu (both positively 1-homogeneous, R1): one law per hidden unit: 256 + 128 = 384.
#   identity (G1): per hidden space of width r, the r×r symmetric matrix M_P M_P^T − M_C M_C^T has
#       r(r+1)/2 independent entries: 256·257/2 + 128·129/2 = 32896 + 8256 = 41152.
#   GELU: no law at all (THEORY "—" row).
#   T1 under cross-entropy on the logits layer Linear(128, 10): Σ_k W[k, :] (128) + Σ_k b[k] (1) = 129.
_MLP_T1 = 128 + 1
#
# LeNet: conv1(1→6) → ReLU → maxpool → conv2(6→16): R1, 6 laws;
#   conv2 → ReLU → maxpool → view (N,16,4,4)->(N,256) keeps channel j identifiable (16 taps) → fc1: R1, 16;
#   fc1 → ReLU → fc2: 120; fc2 → ReLU → fc3: 84.  rescale = 6 + 16 + 120 + 84 = 226.
#   T1 on fc3 = Linear(84, 10): 84 + 1 = 85.
#
# VGG-11 (cfg 64 M 128 M 256 256 M 512 512 M 512 512 M), convs with bias, classifier
#   Linear(512,512) → ReLU → Dropout → Linear(512,10).
#   Without BN: each conv's output channels reach only the next conv (or, for the last conv, via
#   ReLU/maxpool/avgpool/flatten the first classifier Linear): R1 per conv channel:
#   64+128+256+256+512+512+512+512 = 2752; plus classifier hidden 512: rescale = 3264.
#   T1 on Linear(512, 10): 512 + 1 = 513.
_VGG_CONV_CHANNELS = 64 + 128 + 256 + 256 + 512 + 512 + 512 + 512  # 2752
#   With BN (train mode) after every conv: per conv channel j
#     N1: the conv bias b_j itself (BN removes the per-channel mean)            -> 2752 translation
#     N2: ‖W[j]‖² + b_j² (BN removes the per-channel scale; eps-approximate)   -> 2752 scale (approx.)
#     N3: γ_j² + β_j² − ‖C.weight[:, j]‖² for the BN affine → ReLU → next conv  -> 2752 rescale
#   plus the classifier hidden R1 (512): rescale = 2752 + 512 = 3264.
#
# ResNet-18 (CIFAR stem, width 64, BasicBlock, layers [2,2,2,2], convs without bias, fc 512→10).
#   Convs: stem conv1 (64) + layer1: 4×64 + layer2: 5×128 (incl. downsample) + layer3: 5×256
#   + layer4: 5×512 — 20 convs, each followed by a BN in train mode.
#   N2 (approx.): one per conv output channel = 64 + 256 + 640 + 1280 + 2560 = 4800.
#   N1: 0 (the convs have no bias).
#   N3 within each block, bn1 → ReLU → conv2: Σ over 8 blocks of widths = 2·(64+128+256+512) = 1920.
#   Residual stream of each stage (produced by stem bn1 / each block's bn2 / downsample BN, merged
#   by the adds and ReLU; consumed only by the next blocks' conv1 and downsample conv, or fc):
#   one exact N3 law per stream channel = 64 + 128 + 256 + 512 = 960.  rescale = 1920 + 960 = 2880.
#   No law between a block's bn2 and the next block's conv1 alone.
#   T1 on fc (512 → 10): 512 + 1 = 513.
_R18_WIDTHS = (64, 128, 256, 512)
_R18_CONV_CHANNELS = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512  # 4800
_R18_BLOCK_N3 = sum(2 * w for w in _R18_WIDTHS)  # 1920
_R18_STREAM = sum(_R18_WIDTHS)  # 960
#
# ResNet-50 (ImageNet stem conv7x7 → bn1 → ReLU → maxpool, Bottleneck, layers [3,4,6,3],
#   planes 64/128/256/512, block output 4·planes, every stage's first block has a downsample
#   (layer1 too: 64 != 256), fc 2048 → 1000).
#   N2 (approx.): per conv output channel. Per block conv1 + conv2 + conv3 = planes + planes + 4·planes
#   = 6·planes; per stage + downsample 4·planes; stem 64:
#       64 + (3·6·64 + 256) + (4·6·128 + 512) + (6·6·256 + 1024) + (3·6·512 + 2048)
#     = 64 + 1408 + 3584 + 10240 + 11264 = 26560.
#   N3 within a block: bn1 → ReLU → conv2 and bn2 → ReLU → conv3, 2·planes per block:
#       3·128 + 4·256 + 6·512 + 3·1024 = 384 + 1024 + 3072 + 3072 = 7552.
#   Stem: bn1 → ReLU → maxpool (positively homogeneous) → {layer1.0.conv1, layer1.0.downsample.0}
#   (R2-style N3 with two consumers): 64.
#   Residual stream per stage, width 4·planes: 256 + 512 + 1024 + 2048 = 3840.
#   rescale = 7552 + 64 + 3840 = 11456.  T1 on fc: 2048 + 1 = 2049.
_R50_PLANES = (64, 128, 256, 512)
_R50_BLOCKS = (3, 4, 6, 3)
_R50_CONV_CHANNELS = 64 + sum(n * 6 * p + 4 * p for n, p in zip(_R50_BLOCKS, _R50_PLANES))
_R50_BLOCK_N3 = sum(n * 2 * p for n, p in zip(_R50_BLOCKS, _R50_PLANES))
_R50_STEM = 64
_R50_STREAM = sum(4 * p for p in _R50_PLANES)
assert (_R50_CONV_CHANNELS, _R50_BLOCK_N3, _R50_STREAM) == (26560, 7552, 3840)
# T3 (both ResNets): a block with a downsample adds bn2(…) and downsample.1(…): their shifts β + u and
# β' − u cancel in the sum, one law per output channel (the sum reaches a ReLU: all of them):
#   ResNet-18: layer2–4 first blocks, 128 + 256 + 512 = 896; ResNet-50: every stage, 3840.
_R18_SHORTCUT = sum(_R18_WIDTHS[1:])
_R50_SHORTCUT = _R50_STREAM

EXPECTED: dict[str, dict[str, int]] = {
    "mlp": {"rescale": 256 + 128},
    "leaky-mlp": {"rescale": 256 + 128},
    "linear-mlp": {"gl": 256 * 257 // 2 + 128 * 129 // 2},
    "gelu-mlp": {},
    "lenet": {"rescale": 6 + 16 + 120 + 84},
    "vgg": {"rescale": _VGG_CONV_CHANNELS + 512},
    "vgg-bn": {
        "rescale": _VGG_CONV_CHANNELS + 512,
        "translation": _VGG_CONV_CHANNELS,
        "scale (approx.)": _VGG_CONV_CHANNELS,
    },
    "resnet18": {"rescale": _R18_BLOCK_N3 + _R18_STREAM, "scale (approx.)": _R18_CONV_CHANNELS,
                 "translation": _R18_SHORTCUT},
    "resnet50": {"rescale": _R50_BLOCK_N3 + _R50_STEM + _R50_STREAM, "scale (approx.)": _R50_CONV_CHANNELS,
                 "translation": _R50_SHORTCUT},
}
# T1 (cross-entropy on the logits layer): in_features of the last Linear + 1.
T1: dict[str, int] = {
    "mlp": _MLP_T1, "leaky-mlp": _MLP_T1, "linear-mlp": _MLP_T1, "gelu-mlp": _MLP_T1,
    "lenet": 84 + 1, "vgg": 512 + 1, "vgg-bn": 512 + 1, "resnet18": 512 + 1, "resnet50": 2048 + 1,
}


def _expected(name: str, loss):
    exp = dict(EXPECTED[name])
    if loss == "cross_entropy":
        exp["translation"] = exp.get("translation", 0) + T1[name]
    return exp


@functools.lru_cache(maxsize=None)
def _annotated(name: str, loss=None):
    """(model, annotation), built once per (model, loss); tests only read them."""
    torch.manual_seed(0)
    model = MODELS[name]()
    return model, fxlaws.annotate(model, model.example_inputs(), loss=loss)


def test_registry_is_covered():
    # every MLP/CNN in the registry has hand-derived counts here (Transformers: test_transformer_models)
    cnn = {name for name in MODELS if not name.endswith("-tiny")}
    assert cnn == set(EXPECTED) == set(T1)


@pytest.mark.parametrize("loss", LOSSES, ids=["any-loss", "cross-entropy"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts(name, loss):
    _, ann = _annotated(name, loss)
    assert ann.counts() == _expected(name, loss)
    assert ann.num_laws == sum(_expected(name, loss).values())
    assert ann.frontend == "fx"
    assert ann.opaque == {}


@pytest.mark.parametrize("loss", LOSSES, ids=["any-loss", "cross-entropy"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_soundness(name, loss):
    model, ann = _annotated(name, loss)
    kw = dict(trials=1, samples=4) if name in LARGE else dict(trials=2, samples=8)
    res = fxlaws.soundness(model, ann, model.example_inputs(), **kw)
    assert res.ok, str(res)
    assert res.worst_exact < 1e-10
    assert len(res.rows) == len(ann.laws)
    # every family with a non-zero gradient was actually checked
    assert all(r.components > 0 for r in res.rows), str(res)


def _total(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_coverage(name):
    model, ann = _annotated(name, None)
    _, ann_ce = _annotated(name, "cross_entropy")
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    if name == "gelu-mlp":
        # no law without a loss; under CE only the logits layer (T1) is read
        assert ann.coverage == 0.0
        assert ann_ce.coverage == pytest.approx((last.weight.numel() + last.bias.numel()) / _total(model), rel=1e-12)
        assert set(ann.no_law) == {"net.0", "net.2", "net.4"}
        assert "homogeneous" in ann.no_law["net.0"]
        assert "cross_entropy" in ann.no_law["net.4"]
        return
    # Without a loss assumption the only scalar parameters no law reads are the logits' biases.
    assert ann.coverage == pytest.approx(1.0 - last.bias.numel() / _total(model), rel=1e-12)
    # Under cross-entropy T1 reads them too.
    assert ann_ce.coverage == pytest.approx(1.0)
    assert ann.no_law == {}


def test_relu_mlp_coverage_is_full_under_cross_entropy():
    _, ann = _annotated("mlp", "cross_entropy")
    assert ann.coverage == 1.0


def test_resnet18_stream_laws():
    _, ann = _annotated("resnet18", None)
    n3 = [f for f in ann.laws if f.theory == "N3"]
    block = [f for f in n3 if len(f.modules) == 2]
    stream = [f for f in n3 if len(f.modules) > 2]
    # per block bn1 -> relu -> conv2
    assert sorted((f.modules for f in block)) == sorted(
        (f"layer{s}.{b}.bn1", f"layer{s}.{b}.conv2") for s in range(1, 5) for b in range(2))
    # one stream family per stage
    assert [f.count for f in stream] == list(_R18_WIDTHS)
    assert all(f.exact and f.kind == "rescale" for f in stream)
    assert set(stream[0].modules) == {"bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.0.conv1", "layer1.1.conv1",
                                      "layer2.0.conv1", "layer2.0.downsample.0"}
    assert set(stream[3].modules) == {"layer4.0.bn2", "layer4.0.downsample.1", "layer4.1.bn2", "layer4.1.conv1", "fc"}
    # THEORY "Residual blocks": no law straddles a skip on its own
    for fam in ann.laws:
        assert set(fam.modules) != {"layer1.0.bn2", "layer1.1.conv1"}
        assert set(fam.modules) != {"layer2.0.bn2", "layer2.1.conv1"}


def test_resnet50_stem_and_stream_laws():
    _, ann = _annotated("resnet50", None)
    big = [f for f in ann.laws if f.theory == "N3" and len(f.modules) > 2]
    assert [f.count for f in big] == [_R50_STEM] + [4 * p for p in _R50_PLANES]
    assert set(big[0].modules) == {"bn1", "layer1.0.conv1", "layer1.0.downsample.0"}
    n3_pairs = {f.modules for f in ann.laws if f.theory == "N3" and len(f.modules) == 2}
    assert ("layer3.4.bn1", "layer3.4.conv2") in n3_pairs
    assert ("layer3.4.bn2", "layer3.4.conv3") in n3_pairs
    assert not any(m[0].endswith("bn3") for m in n3_pairs)


# --- approximate (N2) laws --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vgg-bn", "resnet18"])
def test_n2_laws_are_marked_approximate(name):
    model, ann = _annotated(name, None)
    n2 = [f for f in ann.laws if f.theory == "N2"]
    assert n2
    for fam in ann.laws:
        assert fam.exact == (fam.theory != "N2"), fam.name
    for fam in n2:
        assert fam.kind == "scale"
        assert "norm-train-mode" in fam.assumptions
    res = fxlaws.soundness(model, ann, model.example_inputs(), trials=1, samples=2)
    for row in res.rows:
        if row.theory == "N2":
            assert row.exact is False and row.passed is None
        else:
            assert row.passed is True
    assert res.ok


def _conv_bn_relu_conv():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))


def test_n2_drift_shrinks_with_bn_eps():
    model = _conv_bn_relu_conv()
    x = torch.randn(4, 3, 6, 6)
    drifts = []
    for eps in (1e-1, 1e-3, 1e-5):
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eps = eps
        ann = fxlaws.annotate(model, x)
        assert ann.counts() == {"scale (approx.)": 4, "translation": 4, "rescale": 4}
        res = fxlaws.soundness(model, ann, x, trials=3)
        assert res.ok, str(res)
        (row,) = [r for r in res.rows if r.theory == "N2"]
        assert row.passed is None and not row.exact
        drifts.append(row.worst)
    # truly approximate: measurably non-zero at large eps ...
    assert drifts[0] > 1e-6
    # ... and shrinking monotonically, by >= ~100x over four decades of eps (drift ∝ eps/var)
    assert drifts[0] > drifts[1] > drifts[2]
    assert drifts[0] / drifts[2] > 100
