"""Scale of ``fxlaws.annotate``: a LLaMA-7B built on the meta device, and depth linearity.

Every measurement runs in a fresh Python process, so its peak RSS (``ru_maxrss``) is that of the
import plus the one annotate, and no cache of an earlier run helps it:

* ``idle``: ``import torch, fxlaws`` and nothing else (the baseline of every peak below);
* ``llama7b``: ``with torch.device("meta"): llama_7b()`` (6.7 B parameters, 27 GB in float32), annotated
  on real CPU token ids (2 x 8); time of annotate and the process's peak RSS;
* ``depth``: annotate time of a model at L and 2L layers (best of ``--repeats``): the LLaMA-7B shapes
  at 16 and 32 layers (meta), and an ``nn.Sequential`` of Linear(4, 4)+ReLU pairs at 5,000 and 10,000
  (CPU; the "10k tiny layers" case). Linear scaling gives a ratio of 2.

    python benchmarks/scale.py [--repeats 3]

The last line reads ``llama7b_annotate_s=… peak_rss_gib=… depth_ratio=… mlp10k_annotate_s=… mlp_depth_ratio=…``
(targets: < 10 s, < 2 GiB, <= 2.2).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time


def _peak_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _llama(n_layers: int):
    import torch

    from fxlaws.models import llama_7b

    with torch.device("meta"):
        return llama_7b(n_layers=n_layers)


def _mlp(pairs: int):
    from torch import nn

    return nn.Sequential(*(m for _ in range(pairs) for m in (nn.Linear(4, 4), nn.ReLU())))


def _child(what: str, size: int, repeats: int) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    import fxlaws

    if what == "idle":
        return {"peak_rss_gib": _peak_gib()}
    if what in ("llama", "mlp"):
        model = _llama(size) if what == "llama" else _mlp(size)
        x = (torch.zeros(2, 8, dtype=torch.long),) if what == "llama" else (torch.randn(2, 4),)
        best, ann = float("inf"), None
        for _ in range(repeats):
            t = time.perf_counter()
            ann = fxlaws.annotate(model, x)
            best = min(best, time.perf_counter() - t)
            del ann
        ann = fxlaws.annotate(model, x)
        return {"annotate_s": best, "peak_rss_gib": _peak_gib(), "families": len(ann.laws), "laws": ann.num_laws,
                "coverage": ann.coverage, "params": sum(p.numel() for p in model.parameters())}
    raise ValueError(what)


def _run(what: str, size: int = 0, repeats: int = 1) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, str(size), str(repeats)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, size, repeats = args.child
        print(json.dumps(_child(what, int(size), int(repeats))))
        return

    import torch

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    idle = _run("idle")
    print(f"idle `import torch, fxlaws` process: peak RSS {idle['peak_rss_gib']:.2f} GiB")

    big = _run("llama", 32, 1)  # one annotate in a fresh process: first-call costs included
    print(f"LLaMA-7B on meta: {big['params'] / 1e9:.2f} B parameters, {big['families']} families, "
          f"{big['laws']:,} scalar laws, coverage {big['coverage']:.1%}; annotate {big['annotate_s']:.2f} s, "
          f"peak RSS {big['peak_rss_gib']:.2f} GiB ({big['peak_rss_gib'] - idle['peak_rss_gib']:+.2f} over idle)")

    rows = {}
    for name, small, large in (("llama", 16, 32), ("mlp", 5000, 10000)):
        a, b = _run(name, small, args.repeats), _run(name, large, args.repeats)
        rows[name] = (a, b)
        print(f"{name:5} depth {small:>6} → {large:>6}: annotate {a['annotate_s']:.2f} s → {b['annotate_s']:.2f} s "
              f"(best of {args.repeats}), ratio {b['annotate_s'] / a['annotate_s']:.2f}; "
              f"{b['families']} families, peak RSS {b['peak_rss_gib']:.2f} GiB")
    (l16, l32), (m5, m10) = rows["llama"], rows["mlp"]
    print(f"llama7b_annotate_s={big['annotate_s']:.2f} peak_rss_gib={big['peak_rss_gib']:.2f} "
          f"depth_ratio={l32['annotate_s'] / l16['annotate_s']:.2f} mlp10k_annotate_s={m10['annotate_s']:.2f} "
          f"mlp_depth_ratio={m10['annotate_s'] / m5['annotate_s']:.2f}")


if __name__ == "__main__":
    main()
