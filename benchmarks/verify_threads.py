"""Verification under load: the completeness engine with torch's default intra-op threads against
one thread, on a quiet machine and with another process keeping every core busy.

The workload is 20 of the anchor benchmark's random deep nets (``benchmarks/lie_anchor.py``: every
fifth architecture), each through ``fxlaws.verify.completeness`` with φ fields — tiny SVDs and
Jacobian-vector products, what ``fxlaws verify`` runs per block. Arms run in alternating order in
the same minute (``_timing.rounds``): ``default`` (the library as it ships: one thread for models up to
``ONE_THREAD_MAX_PARAMS``), ``threads=N`` (torch's default thread count, the rule off), ``one
thread`` (forced, the rule off), and ``default`` again (A/A noise).
The loaded phase starts a second Python process running matrix products on all cores.

    python benchmarks/verify_threads.py [rounds]
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import busy_cores, rounds  # noqa: E402
from lie_anchor import Net, architectures, phi_of  # noqa: E402

from fxlaws.verify import fields  # noqa: E402
from fxlaws.verify.completeness import completeness  # noqa: E402

def workload() -> None:
    for i, (kind, widths, bias) in enumerate(architectures()[::5]):
        net = Net(kind, widths, bias)
        completeness(net, (torch.randn(2, widths[0]),), fields="phi", phi=phi_of(net), seed=i)


@contextlib.contextmanager
def threads(n: int | None):
    """``n`` intra-op threads with the library's small-model rule switched off (None: the library as
    it ships, which runs these models on one thread)."""
    before, rule = torch.get_num_threads(), fields.ONE_THREAD_MAX_PARAMS
    if n is not None:
        torch.set_num_threads(n)
        fields.ONE_THREAD_MAX_PARAMS = -1
    try:
        yield
    finally:
        torch.set_num_threads(before)
        fields.ONE_THREAD_MAX_PARAMS = rule


def arms(default_threads: int) -> dict:
    def run(n):
        def go():
            with threads(n):
                workload()
        return go

    return {"default": run(None), f"threads={default_threads}": run(default_threads), "one thread": run(1),
            "default (A/A)": run(None)}


def phase(label: str, n: int, default_threads: int) -> dict[str, float]:
    times = rounds(arms(default_threads), n, "cpu", all_orders=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{label}: median seconds over {n} rounds")
    for k, v in med.items():
        print(f"  {k:<14} {v:7.2f} s   ({v / med['default']:.2f}× default)")
    return med


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    default_threads = torch.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{default_threads} default intra-op threads")
    workload()  # warm-up
    quiet = phase("quiet", n, default_threads)
    with busy_cores():
        loaded = phase("loaded (another process multiplies matrices on every core)", n, default_threads)
    print(f"\nA/A (default again / default): quiet {quiet['default (A/A)'] / quiet['default']:.2f}, "
          f"loaded {loaded['default (A/A)'] / loaded['default']:.2f}")
    print(f"one thread / {default_threads} threads: quiet {quiet['one thread'] / quiet[f'threads={default_threads}']:.2f}, "
          f"loaded {loaded['one thread'] / loaded[f'threads={default_threads}']:.2f}")
    print(f"loaded / quiet, default: {loaded['default'] / quiet['default']:.2f}")


if __name__ == "__main__":
    main()
