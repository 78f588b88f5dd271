"""The zoo tables for README: the models of tests/zoo_models.py, annotated by their default call.

Three tables, each measured in one run:

* ``python benchmarks/zoo.py [names…]``: the test-size zoo — parameters, front end, families, scalar
  laws (sum of independent counts), coverage (share of trainable scalars read by a law), annotate
  seconds (median of 3) and the THEORY rows found.
* ``python benchmarks/zoo.py --completeness [names…]``: the micro configurations (``MICRO`` in
  tests/zoo_models.py: the whole model where the library lets widths shrink to a few hundred
  parameters, else one block of the library's own class): D, laws attached (rank of the attached
  laws' gradients), the true count ``D − dim Lie`` (``fxlaws.verify.completeness``), their ratio, and
  the verdict.
* ``python benchmarks/zoo.py --full [--loaded] [names…]``: full-size configurations built on the meta device
  (nothing allocated): the front end's own time (torch.fx tracing, torch.export, or both where the fx
  graph calls ``torch.fx.wrap``-ped functions, as annotate uses them) and annotate's time, measured alternately in one fresh process per model (median of 3; the
  first front-end run is a warm-up, and a second front-end timing gives the A/A line), their ratio,
  and the process's peak RSS. ``--loaded``: the same with another process busy on every core.
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

import fxlaws

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from zoo_models import FULL, MICRO, ZOO, build, build_full, build_micro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import busy_cores  # noqa: E402


def _machine() -> str:
    return f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def zoo_table(names) -> None:
    print(_machine())
    print("| model | params | front end | families | laws | coverage | annotate s | rows |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        model, inputs = build(name)
        params = sum(p.numel() for p in model.parameters())
        try:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                ann = fxlaws.annotate(model, inputs)
                times.append(time.perf_counter() - t)
        except fxlaws.FxlawsError as exc:
            print(f"| {name} | {params:,} | fails: {type(exc).__name__} | | | | | |")
            continue
        rows = Counter()
        for fam in ann.laws:
            rows[fam.theory] += fam.count
        print(f"| {name} | {params:,} | {ann.frontend} | {len(ann.laws)} | {ann.num_laws:,} | {ann.coverage:.0%} | "
              f"{statistics.median(times):.2f} | {' '.join(f'{k}:{v}' for k, v in sorted(rows.items()))} |")


def completeness_row(name: str):
    """(scope, D, attached, expected, verdict, annotate s) of the micro configuration ``name``."""
    from fxlaws.verify import completeness

    model, inputs, scope = build_micro(name)
    t = time.perf_counter()
    ann = fxlaws.annotate(model, inputs)
    seconds = time.perf_counter() - t
    if hasattr(model, "set_experts_implementation"):  # grouped-GEMM experts have no float64 kernel
        model.set_experts_implementation("eager")
    result = completeness(model, inputs, ann=ann)
    return scope, result.D, result.attached, result.expected, result.verdict, seconds


def completeness_table(names) -> None:
    print(_machine())
    print("| model | scope | D | laws attached | true count (D − dim Lie) | ratio | verdict | annotate s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        scope, D, attached, expected, verdict, seconds = completeness_row(name)
        ratio = attached / expected if expected else 1.0
        print(f"| {name} | {scope} | {D} | {attached} | {expected} | {ratio:.2f} | {verdict} | {seconds:.2f} |")


def _child(name: str) -> dict:
    """One full-size model on meta, in this (fresh) process: front end and annotate, alternately."""
    import resource

    from fxlaws.capture import _TensorOutputs, _trace_export, _trace_fx, normalise_inputs, training_call

    model, inputs = build_full(name)
    ann = fxlaws.annotate(model, inputs)
    args, kwargs = normalise_inputs(inputs)
    training_call(model, kwargs)

    exported_for_wrapped = any(n.startswith("Captured with torch.export: torch.fx records") for n in ann.notes)

    def front():  # what annotate's capture runs: fx, export, or fx then export (wrapped functions)
        if ann.frontend != "export" or exported_for_wrapped:
            _trace_fx(model, list(ann.opaque), {})
        if ann.frontend == "export":
            _trace_export(model, args, kwargs)

    front()  # warm-up (imports, caches)
    fronts, fronts_b, annotates = [], [], []
    for _ in range(3):
        for bucket, fn in ((fronts, front), (annotates, lambda: fxlaws.annotate(model, inputs)), (fronts_b, front)):
            t = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t)
    return {"params": sum(p.numel() for p in model.parameters()), "frontend": ann.frontend,
            "front_s": statistics.median(fronts), "front_b_s": statistics.median(fronts_b),
            "annotate_s": statistics.median(annotates), "laws": ann.num_laws,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def full_table(names, loaded: bool = False) -> None:
    """``loaded``: another process multiplies matrices on every core for the whole table."""
    print(_machine() + (" — loaded: another process multiplies matrices on every core" if loaded else ""))
    print("| model (meta) | params | front end | front end s | annotate s | annotate / front end | A/A | laws | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with busy_cores() if loaded else contextlib.nullcontext():
        _full_rows(names)


def _full_rows(names) -> None:
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {name} | | fails: {out.stderr.strip().splitlines()[-1][:120]} | | | | | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['params'] / 1e6:,.0f} M | {r['frontend']} | {r['front_s']:.2f} | {r['annotate_s']:.2f} | "
              f"{r['annotate_s'] / r['front_s']:.2f} | {r['front_b_s'] / r['front_s']:.2f} | {r['laws']:,} | "
              f"{r['peak_gib']:.2f} |")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(argv[1])))
    elif argv[:1] == ["--completeness"]:
        completeness_table(argv[1:] or list(MICRO))
    elif argv[:1] == ["--full"]:
        loaded = "--loaded" in argv
        rest = [a for a in argv[1:] if a != "--loaded"]
        full_table(rest or list(FULL), loaded=loaded)
    else:
        zoo_table(argv or list(ZOO))
