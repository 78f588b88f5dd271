"""The training tasks of the teleportation study: real small data that ships with a package or with
this repository, nothing downloaded.

* ``mlp``: a ReLU MLP 64-64-64-10 on scikit-learn's handwritten digits (1,797 8×8 images, 10 classes;
  ``sklearn.datasets.load_digits`` reads them from the installed package).
* ``cnn``: a small CNN (two 3×3 convolutions, 16 and 32 channels, ReLU, 2×2 max-pool, Linear) on the
  same digits as 1×8×8 images.
* ``gpt``: the built-in GPT-style decoder (2 layers, 2 heads, width 32) predicting the next
  character of this repository's ``docs/THEORY.md`` (block of 32 characters).

Each task fixes its split (digits: 1,437 train / 360 test images; text: the first 90 % of the
characters for training, the rest for testing) and draws its minibatches from a seeded generator, so
two runs with the same seed see the same batches in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Task", "TASKS", "make_task", "DigitsCNN", "default_corpus"]


@dataclass
class Task:
    """A model factory, its minibatches and its evaluation.

    ``model()`` builds a fresh model (the caller seeds torch first); ``batch(gen)`` draws one
    training minibatch ``(inputs, targets)``; ``loss(out, targets)`` is the training loss;
    ``train_set``/``test_set`` are fixed ``(inputs, targets)`` on which the curves and the final
    numbers are measured; ``accuracy`` says whether a test accuracy is meaningful (classification).
    """

    name: str
    description: str
    model: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], tuple[Tensor, Tensor]]
    train_set: tuple[Tensor, Tensor]
    test_set: tuple[Tensor, Tensor]
    sgd_lr: float
    adam_lr: float
    accuracy: bool = True

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


class DigitsCNN(nn.Module):
    """Conv(1→16, 3×3) → ReLU → Conv(16→32, 3×3) → ReLU → MaxPool 2×2 → Linear(512→10), for 1×8×8."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc(x.flatten(1))


def _digits(dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise ImportError("the digits tasks need scikit-learn: pip install 'fxlaws[study]'") from exc
    data = load_digits()
    x = torch.as_tensor(data.data, dtype=dtype) / 16.0
    y = torch.as_tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # one fixed split
    train, test = order[:1437], order[1437:]
    return x[train], y[train], x[test], y[test]


def default_corpus() -> Path:
    """This repository's ``docs/THEORY.md`` (found next to the package in a checkout or editable install)."""
    return Path(__file__).resolve().parents[2] / "docs" / "THEORY.md"


def _sampler(x: Tensor, y: Tensor, size: int) -> Callable[[torch.Generator], tuple[Tensor, Tensor]]:
    def batch(gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(y), (size,), generator=gen)
        return x[idx], y[idx]

    return batch


def _digits_task(name: str, dtype: torch.dtype) -> Task:
    xtr, ytr, xte, yte = _digits(dtype)
    if name == "mlp":
        from ..models import MLP

        return Task("mlp", "ReLU MLP 64-64-64-10 on scikit-learn digits", lambda: MLP((64, 64, 64, 10)).to(dtype),
                    _sampler(xtr, ytr, 64), (xtr, ytr), (xte, yte), sgd_lr=0.1, adam_lr=1e-3)
    shape = (-1, 1, 8, 8)
    return Task("cnn", "CNN conv16-conv32-pool-fc on scikit-learn digits", lambda: DigitsCNN().to(dtype),
                _sampler(xtr.reshape(shape), ytr, 64), (xtr.reshape(shape), ytr), (xte.reshape(shape), yte),
                sgd_lr=0.05, adam_lr=1e-3)


def _gpt_task(dtype: torch.dtype, corpus: Optional[Path]) -> Task:
    path = Path(corpus) if corpus is not None else default_corpus()
    if not path.is_file():
        raise FileNotFoundError(f"the gpt task's character corpus {path} is not there (an installed, not "
                                "checked-out fxlaws has no docs/): give one with --corpus PATH")
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    block = 32
    split = int(0.9 * len(ids))

    def windows(tokens: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        rows = starts[:, None] + torch.arange(block + 1)
        chunk = tokens[rows]
        return chunk[:, :-1], chunk[:, 1:]

    fixed = torch.Generator().manual_seed(0)
    train_eval = windows(ids[:split], torch.randint(0, split - block - 1, (128,), generator=fixed))
    test_eval = windows(ids[split:], torch.randint(0, len(ids) - split - block - 1, (128,), generator=fixed))

    def batch(gen: torch.Generator) -> tuple[Tensor, Tensor]:
        return windows(ids[:split], torch.randint(0, split - block - 1, (16,), generator=gen))

    def model() -> nn.Module:
        from ..models import gpt_tiny

        return gpt_tiny(vocab_size=len(chars), block_size=block).to(dtype)

    return Task("gpt", f"GPT decoder (2 layers, 2 heads, width 32) on the characters of {path.name} "
                       f"({len(ids):,} characters, {len(chars)} symbols)",
                model, batch, train_eval, test_eval, sgd_lr=0.3, adam_lr=3e-3, accuracy=False)


TASKS = ("mlp", "cnn", "gpt")


def make_task(name: str, *, dtype: torch.dtype = torch.float64, corpus: Optional[Path] = None) -> Task:
    """Build the task ``name`` (one of :data:`TASKS`) with its data in ``dtype``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
    return _gpt_task(dtype, corpus) if name == "gpt" else _digits_task(name, dtype)
