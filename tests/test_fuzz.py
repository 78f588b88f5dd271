"""Random architectures (hypothesis; models from ``fuzz_models.py``): soundness first, then completeness.

1. For every random model (supported vocabulary and unknown ops, THEORY §2; loss "any" or
   cross-entropy), ``fxlaws.annotate`` either succeeds or, only for models with an op outside the
   supported vocabulary, raises an ``FxlawsError`` with a message; it leaves the model's buffers and
   modes alone; every exact law passes ``fxlaws.soundness`` (float64, relative |⟨∇h, ∇L⟩| <= 1e-9,
   THEORY §4.1); every family evaluates to finite values.
2. On small MLP-like models (``complete_specs``: the vocabulary where D − dim Lie counts exactly
   the catalogue's laws; what is left out and why is written above it), ``completeness`` finds no
   law missing and none unsound (THEORY §4.2).

``make test`` runs a fixed (derandomised) sample; ``make fuzz`` runs ``FXLAWS_FUZZ_EXAMPLES`` (default
2000) random models in property 1 and an eighth of that in property 2, with fresh randomness.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings

import fxlaws
from fuzz_models import FuzzModel, complete_specs, specs
from fxlaws.errors import FxlawsError
from fxlaws.verify.completeness import completeness

# torch.func's first jvp loads its decompositions through torch.jit.script (DeprecationWarning,
# not an fxlaws warning), as in test_verify.py.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

LONG = int(os.environ.get("FXLAWS_FUZZ_EXAMPLES", "0"))
_SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fxlaws-ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_SLOW_DATA)
settings.register_profile("fxlaws-fuzz", deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=_SLOW_DATA)
PROFILE = settings.get_profile("fxlaws-fuzz" if LONG else "fxlaws-ci")
SOUND_EXAMPLES = LONG or 400
COMPLETE_EXAMPLES = max(LONG // 8, 40) if LONG else 40
TOL = 1e-9  # exact laws (THEORY §4.1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny float64 models gain nothing from more (see test_verify.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@settings(PROFILE, max_examples=SOUND_EXAMPLES)
@given(spec=specs())
def test_annotate_is_sound_on_random_models(spec):
    model = FuzzModel(spec)
    x = model.example_inputs()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    modes = [m.training for m in model.modules()]
    try:
        ann = fxlaws.annotate(model, x, loss=spec.loss)
    except FxlawsError as exc:  # allowed only outside the supported vocabulary, and must say why
        assert not spec.supported, f"annotate refused a supported model: {type(exc).__name__}: {exc}"
        assert str(exc).strip()
        return
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    res = fxlaws.soundness(model, ann, x, trials=2, samples=6, tol=TOL)
    assert res.ok, f"{spec}\n{res}"
    for name, value in ann.evaluate(model).items():
        assert torch.isfinite(value).all(), name


def _stagnated(res) -> bool:
    return res.ranks[-1] >= res.D or (len(res.ranks) > 1 and res.ranks[-1] == res.ranks[-2])


@settings(PROFILE, max_examples=COMPLETE_EXAMPLES)
@given(spec=complete_specs())
def test_attached_laws_are_complete_on_small_models(spec):
    model = FuzzModel(spec)
    x = model.example_inputs()
    ann = fxlaws.annotate(model, x, loss=spec.loss)
    # The number of laws is D − dim Lie at a *generic* θ, the largest rank over θ; the checker draws
    # θ and inputs from a seed, and a draw can span less (THEORY §4.2): keep the best of three seeds.
    # norm_eps = 0.1: exact laws hold at every eps, and eps-broken N2 directions stay clear of the
    # rank threshold (at 1e-2 stacked norms put them at its edge).
    results = []
    for seed in range(3):
        res = completeness(model, x, loss=spec.loss or "any", ann=ann, seed=seed, norm_eps=0.1)
        assert res.unsound == [], f"{spec}\n{res}"
        results.append(res)
        if res.verdict == "complete":
            break
    best = min(results, key=lambda r: r.expected)
    assume(_stagnated(best) and best.activations_split is not False)  # a valid ground truth only
    assert best.verdict == "complete", f"{spec}\n" + "\n".join(map(str, results))
    assert best.attached == sum(f.count for f in ann.laws if f.exact), f"{spec}\n{best}"
