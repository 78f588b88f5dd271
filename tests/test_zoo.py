"""The model zoo (tests/zoo_models.py): architectures from transformers, timm and torchvision annotate
by their default call, and every law attached is sound in float64 (THEORY §4.1) on the libraries' own
code. A model without laws must say why. Completeness per model is measured by benchmarks/zoo.py."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("timm")
pytest.importorskip("torchvision")

import fxlaws  # noqa: E402

from zoo_models import ZOO, build  # noqa: E402

# Known gaps, each a mechanism (README "Not handled yet"); strict: the test reports when one is closed.
KNOWN: dict[str, str] = {}


def _float64_twin(model):
    """The same function in an implementation that runs in float64: transformers' default grouped-GEMM
    MoE experts accept float32/bf16 only, their eager loop computes the same experts."""
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    return model


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True))
                                  if n in KNOWN else n for n in ZOO])
def test_zoo_model_annotates_and_is_sound(name):
    model, inputs = build(name)
    ann = fxlaws.annotate(model, inputs)
    assert ann.laws or ann.no_law, f"{name}: no law and no reason"
    result = fxlaws.soundness(_float64_twin(model), ann, inputs, trials=1, samples=4)
    assert result.ok and result.worst_exact <= 1e-9, f"{name}\n{result}"
