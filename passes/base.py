"""The pass protocol every fxlaws pass follows (in the style of ``torch.fx.passes.infra.pass_base``).

A pass is a small class with three steps, run by :meth:`FxlawsPass.__call__`:

* ``requires(state)``: check the precondition (a pass that needs another pass's output raises
  :class:`~fxlaws.errors.PassOrderError` naming the pass to run first, never guesses);
* ``call(state)``: do the one job, return a :class:`PassResult`;
* ``ensures(state)``: check the postcondition (cheap invariants only).

Passes keep no per-call state on ``self``: what one pass hands to the next lives in the typed
state object (:class:`~fxlaws.passes.pipeline.AnnotateState` for ``annotate``), and a pass object
may be run on any number of states.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FxlawsPass", "PassResult"]

S = TypeVar("S")


@dataclass(frozen=True)
class PassResult(Generic[S]):
    """What a pass returns: the state it leaves (the same object or a new one) and whether it changed
    anything (a graph rewrite, new node metadata, new law families)."""

    state: S
    modified: bool


class FxlawsPass(ABC, Generic[S]):
    """Base class of the fxlaws passes: ``requires`` → ``call`` → ``ensures``."""

    def requires(self, state: S) -> None:
        """Raise :class:`~fxlaws.errors.PassOrderError` when ``state`` lacks what ``call`` reads."""

    @abstractmethod
    def call(self, state: S) -> PassResult[S]:
        """Do the pass's one job on ``state``."""

    def ensures(self, state: S) -> None:
        """Raise if the pass did not leave what it promises (a bug in fxlaws, not in the user's model)."""

    def __call__(self, state: S) -> PassResult[S]:
        self.requires(state)
        result = self.call(state)
        self.ensures(result.state)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
