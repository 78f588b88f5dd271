"""The teleportation study (issue "use the symmetries", docs/THEORY.md §2b): does rebalancing at
initialisation or teleporting every K steps change training? Runs ``fxlaws study teleport`` with its
defaults (MLP and CNN on scikit-learn's digits, the GPT-style decoder on docs/THEORY.md's characters;
SGD and Adam; 5 seeds × 300 steps; teleport every 50 steps at two ascent learning rates) and prints
the machine, the wall time, then the command's own output: the settings, the figure's path and the
table README shows.

    python benchmarks/teleport_study.py [-o docs/teleport_study.png] [--json runs.json] [more CLI options]

The outcome is whatever the runs measure; the study is deterministic per seed (CPU, float64), so the
table does not depend on the machine's load, only the timings do.
"""

import platform
import sys
import time

import torch

from fxlaws.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "-o" not in args and "--output" not in args:
        args += ["-o", "teleport_study.png"]
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    start = time.perf_counter()
    code = main(["study", "teleport", *args])
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    sys.exit(code)
