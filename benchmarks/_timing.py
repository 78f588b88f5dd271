"""Timing shared by the instrument benchmarks: device-synchronised wall time, interleaved rounds."""

from __future__ import annotations

import contextlib
import itertools
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds ``fn()`` takes, with the device's queued work finished before and after (CUDA)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def rounds(arms: dict[str, Callable[[], object]], n: int, device: str, all_orders: bool = True) -> dict[str, list[float]]:
    """Time every arm once per round, ``n`` rounds, so all arms see the same machine state.

    ``all_orders``: the rounds go through every order of the arms in turn (each arm follows each
    other arm equally often; for two arms that is ABBA), else the arms run in the given order.
    """
    orders = list(itertools.permutations(arms)) if all_orders else [tuple(arms)]
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(n):
        for name in orders[i % len(orders)]:
            times[name].append(timed(arms[name], device))
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median of per-round ratios (robust to rounds disturbed by the machine)."""
    return statistics.median(b / a for a, b in zip(denominator, numerator))


_BUSY = "import torch\na = torch.randn(1500, 1500)\nwhile True:\n    a = (a @ a).tanh()\n"


@contextlib.contextmanager
def busy_cores(seconds_to_start: float = 2.0):
    """Another Python process multiplying matrices on every core for the duration (the loaded case)."""
    busy = subprocess.Popen([sys.executable, "-c", _BUSY])
    try:
        time.sleep(seconds_to_start)
        yield
    finally:
        busy.kill()
        busy.wait()
