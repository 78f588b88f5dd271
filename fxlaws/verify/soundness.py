"""Numeric soundness: every law's gradient is orthogonal to the loss gradient (THEORY §4.1).

For random parameters θ, random inputs and a random loss, computes for sampled components h_i of
each family the relative inner product ``|⟨∇h_i, ∇L⟩| / (‖∇h_i‖ ‖∇L‖)`` in float64 on a deep copy
of the model (the user's model is never touched).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..annotation import Annotation
from ..capture import normalise_inputs, training_call, unwrap
from ..errors import ExampleInputsError, require_values
from .fields import single_threaded_when_small

__all__ = ["soundness", "SoundnessResult", "SoundnessRow"]


@dataclass
class SoundnessRow:
    """Worst relative inner product of one family over all trials and sampled components."""

    family: str
    theory: str
    exact: bool
    components: int
    worst: float
    passed: Optional[bool]  # None for approximate laws: reported, not judged


@dataclass
class SoundnessResult:
    rows: list[SoundnessRow]
    tol: float

    @property
    def ok(self) -> bool:
        """All exact families within ``tol``."""
        return all(r.passed is not False for r in self.rows)

    @property
    def worst_exact(self) -> float:
        return max((r.worst for r in self.rows if r.exact), default=0.0)

    def __getitem__(self, family: str) -> SoundnessRow:
        return next(r for r in self.rows if r.family == family)

    def __str__(self) -> str:
        lines = [f"{'family':48} {'row':4} {'checked':>7} {'max |<∇h,∇L>|/(|∇h||∇L|)':>26}  verdict"]
        for r in self.rows:
            verdict = "approx." if r.passed is None else ("ok" if r.passed else "UNSOUND")
            lines.append(f"{r.family[:48]:48} {r.theory:4} {r.components:7d} {r.worst:26.3e}  {verdict}")
        return "\n".join(lines)


def _random_like(x: Any, gen: torch.Generator) -> Any:
    if isinstance(x, Tensor):
        if x.is_floating_point():
            return torch.randn(x.shape, generator=gen, dtype=torch.float64)
        if x.dtype == torch.bool:
            return x.clone()
        hi = int(x.max()) + 1 if x.numel() else 1
        return torch.randint(0, max(hi, 1), x.shape, generator=gen, dtype=x.dtype)
    return x


def _flat_outputs(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flat_outputs(v)]
    if hasattr(out, "__dict__"):
        return [t for v in vars(out).values() for t in _flat_outputs(v)]
    return []


@single_threaded_when_small
def soundness(
    model: nn.Module,
    ann: Annotation,
    example_inputs: Any = None,
    *,
    trials: int = 2,
    samples: int = 8,
    tol: float = 1e-9,
    seed: int = 0,
) -> SoundnessResult:
    """Check every law family of ``ann`` numerically on random θ, inputs and losses (float64).

    Args:
        model: the annotated model (deep-copied; never modified).
        ann: its Annotation.
        example_inputs: inputs whose shapes/dtypes random inputs copy (defaults to those annotate
            was given, kept by the Annotation, then ``model.example_inputs()``).
        trials: random (θ, inputs, loss) draws.
        samples: components checked per family and trial (all if the family is smaller).
        tol: pass threshold for exact laws.
        seed: seed of every random draw.

    Returns:
        A :class:`SoundnessResult` with one row per family. The loss is a random linear functional
        of all outputs (``ann.loss == "any"``) or cross-entropy with random labels on the single
        output (``"cross_entropy"``).
    """
    if not ann.laws:
        return SoundnessResult([], tol)
    model = unwrap(model)[0]
    require_values(itertools.chain(model.named_parameters(), model.named_buffers()), "fxlaws.soundness")
    if example_inputs is None:
        if ann.inputs is not None:  # the shapes and dtypes annotate was given
            example_inputs = ann.example_inputs()
        elif hasattr(model, "example_inputs"):
            example_inputs = model.example_inputs()
        else:
            raise ExampleInputsError(f"{type(model).__name__} has no example_inputs() and the Annotation does not "
                                     "know its inputs: pass fxlaws.soundness(model, ann, example_inputs=...)")
    with torch.enable_grad():
        return _soundness(model, ann, example_inputs, trials, samples, tol, seed)


def _soundness(model, ann, example_inputs, trials, samples, tol, seed) -> SoundnessResult:
    args, kwargs = normalise_inputs(example_inputs)
    training_call(model, kwargs)  # the call annotate analysed (use_cache=False)
    gen = torch.Generator().manual_seed(seed)
    net = copy.deepcopy(model).double()
    net.train(ann.train)
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    worst = {fam.name: 0.0 for fam in ann.laws}
    checked = {fam.name: 0 for fam in ann.laws}
    for _ in range(trials):
        with torch.no_grad():  # fan-in scaled: keeps outputs O(1) (a saturated softmax puts the
            for name, p in params.items():  # loss gradient at the rounding floor, where ratios are noise)
                v = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.copy_(v / max(1, p[0].numel()) ** 0.5 if p.dim() >= 2 else (0.1 * v if name.endswith("bias") else v))
        x_args = tuple(_random_like(a, gen) for a in args)
        x_kwargs = {k: _random_like(v, gen) for k, v in kwargs.items()}
        outs = _flat_outputs(net(*x_args, **x_kwargs))
        if ann.loss == "cross_entropy":
            logits = outs[0].reshape(-1, outs[0].shape[-1])
            target = torch.randint(0, logits.shape[-1], (logits.shape[0],), generator=gen)
            loss = F.cross_entropy(logits, target)
        else:
            loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs if o.is_floating_point())
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        g = {n: (gr if gr is not None else torch.zeros_like(params[n])) for n, gr in zip(names, grads)}
        g_norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        for fam in ann.laws:
            fam_params = {n: params[n] for n in fam.params}
            h = fam.evaluate(fam_params).reshape(-1)
            idx = torch.randperm(h.numel(), generator=gen)[:samples] if h.numel() > samples else range(h.numel())
            for i in idx:
                gh = torch.autograd.grad(h[int(i)], list(fam_params.values()), retain_graph=True, allow_unused=True)
                dot = sum((a * g[n]).sum() for n, a in zip(fam_params, gh) if a is not None)
                norm = torch.sqrt(sum(a.pow(2).sum() for a in gh if a is not None))
                if float(norm) == 0.0:
                    continue
                rel = float(abs(dot) / (norm * g_norm + 1e-300))
                worst[fam.name] = max(worst[fam.name], rel)
                checked[fam.name] += 1
    rows = [
        SoundnessRow(fam.name, fam.theory, fam.exact, checked[fam.name], worst[fam.name],
                     (worst[fam.name] <= tol) if fam.exact else None)
        for fam in ann.laws
    ]
    return SoundnessResult(rows, tol)
