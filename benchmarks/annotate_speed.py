"""Time ``fxlaws.annotate`` on the built-in models.

Default: ResNet-18 and ResNet-50 (target: < 1 s each). Prints, per model, the median wall time of
annotate over several runs, side by side with one eval-mode forward pass at the same example inputs
(the ratio says what tracing + analysis costs relative to running the model once).

``--against REV`` (a git revision: HEAD, a branch, a commit id): compares this working tree (with
its uncommitted changes) with REV, checked out in a temporary ``git worktree`` (removed afterwards),
in one run, on resnet18, resnet50, vit-tiny, gpt-tiny and llama-tiny. Each side runs in its own
worker process that imports fxlaws from its own tree; a third worker runs REV again, so the A/A
ratio (REV' / REV) shows how large a difference the machine's noise alone makes. Every round times
annotate once in each worker, the workers taking turns in every order in turn (for two arms that
would be A B B A), so drift of the machine hits all arms alike. Per model it prints the median
annotate time of each side, and the medians of the per-round ratios current / REV and REV' / REV.

    python benchmarks/annotate_speed.py [--repeats 5]
    python benchmarks/annotate_speed.py --against HEAD [--rounds 24] [--models resnet18 gpt-tiny]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
AGAINST_MODELS = ("resnet18", "resnet50", "vit-tiny", "gpt-tiny", "llama-tiny")
# setuptools package-dir of pyproject.toml (used when a tree's pyproject cannot be read)
_DEFAULT_PACKAGE_DIR = {"fxlaws": "fxlaws", "fxlaws.passes": "passes", "fxlaws.models": "models"}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _machine_line() -> str:
    return (f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def _default(repeats: int) -> None:
    import fxlaws
    from fxlaws.models import resnet18, resnet50

    print(_machine_line())
    print(f"{'model':10} {'params':>10} {'laws':>8} {'families':>8} {'annotate s':>11} {'forward s':>10} {'ratio':>7}")
    for factory in (resnet18, resnet50):
        model = factory()
        x = model.example_inputs()
        fxlaws.annotate(model, x)  # warm-up (imports, first-call caches)
        t_ann = _median_time(lambda: fxlaws.annotate(model, x), repeats)
        model.eval()
        with torch.no_grad():
            t_fwd = _median_time(lambda: model(*x), repeats)
        ann = fxlaws.annotate(model, x)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{factory.__name__:10} {n_params:>10,} {ann.num_laws:>8} {len(ann.laws):>8} {t_ann:>11.3f} "
              f"{t_fwd:>10.3f} {t_ann / t_fwd:>7.1f}")


# --- worker: one tree's fxlaws in its own process ---------------------------------------------------

def _package_dir(root: Path) -> dict[str, str]:
    try:
        import tomllib

        with open(root / "pyproject.toml", "rb") as fh:
            return dict(tomllib.load(fh)["tool"]["setuptools"]["package-dir"])
    except Exception:  # Python 3.10 (no tomllib), or a tree without that table
        return dict(_DEFAULT_PACKAGE_DIR)


def _import_from(root: Path) -> None:
    """Make ``fxlaws`` and the packages setuptools maps into it (``fxlaws.passes`` -> ``passes/``,
    ``fxlaws.models`` -> ``models/``) import from ``root``. A finder placed first on ``sys.meta_path``
    wins over the venv's editable install (whose finder maps them to the checkout it was installed
    from); subpackages such as ``fxlaws.laws`` follow their parent's ``__path__``."""
    import importlib.abc
    import importlib.util

    mapping = {name: root / folder for name, folder in _package_dir(root).items()}

    class TreeFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            folder = mapping.get(fullname)
            if folder is None:
                return None
            return importlib.util.spec_from_file_location(fullname, folder / "__init__.py",
                                                          submodule_search_locations=[str(folder)])

    sys.meta_path.insert(0, TreeFinder())


def _worker(root: Path) -> None:
    """Serve timing requests on stdin: ``load NAME`` (build, warm up), ``time`` (annotate once)."""
    root = root.resolve()
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the library prints goes to stderr, not into the replies
    _import_from(root)
    import fxlaws
    import fxlaws.models
    import fxlaws.passes

    reply.write(json.dumps({"fxlaws": fxlaws.__file__, "passes": fxlaws.passes.__file__,
                            "models": fxlaws.models.__file__, "threads": torch.get_num_threads()}) + "\n")
    model = inputs = None
    for line in iter(sys.stdin.readline, ""):
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "load":
                model = fxlaws.models.get_model(arg)
                inputs = model.example_inputs()
                fxlaws.annotate(model, inputs)  # warm-up (imports, first-call caches)
                strays = [name for name, module in list(sys.modules.items()) if name.partition(".")[0] == "fxlaws"
                          and not Path(getattr(module, "__file__", None) or root).resolve().is_relative_to(root)]
                out = {"ok": not strays, "error": f"modules imported from outside {root}: {strays}"}
            elif cmd == "time":
                start = time.perf_counter()
                fxlaws.annotate(model, inputs)
                out = {"ok": True, "seconds": time.perf_counter() - start}
            else:
                break
        except Exception as exc:
            out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        reply.write(json.dumps(out) + "\n")


class _Worker:
    def __init__(self, label: str, root: Path):
        self.label, self.root = label, root
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(root)],
                                     cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} ({self.root}) exited with {self.proc.wait()} (its stderr is above)")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _against(rev: str, models: list[str], rounds: int) -> None:
    current = Path(_git(HERE, "rev-parse", "--show-toplevel"))
    commit = _git(current, "rev-parse", "--short", f"{rev}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="fxlaws-against-")).resolve()
    tree = tmp / "tree"
    _git(current, "worktree", "add", "--detach", str(tree), commit)
    workers: list[_Worker] = []
    try:
        cur, ref, ref2 = "current", rev, f"{rev}'"
        for label, root in ((cur, current), (ref, tree), (ref2, tree)):
            workers.append(_Worker(label, root))
        arms = {w.label: w for w in workers}
        print(_machine_line())
        for w in workers:
            print(f"{w.label:>10}: {w.root}{'' if w.root == current else f' ({rev} = {commit})'}; fxlaws from "
                  f"{w.hello['fxlaws']}, passes from {w.hello['passes']}, {w.hello['threads']} torch threads")
            if not all(Path(w.hello[key]).resolve().is_relative_to(w.root) for key in ("fxlaws", "passes", "models")):
                raise RuntimeError(f"worker {w.label} imported fxlaws from outside {w.root}")
        print(f"{rounds} rounds per model, the three workers in every order in turn; "
              f"ratios: medians of per-round ratios; {ref2} / {ref} is A/A (noise)")
        header = ("model", f"{cur} s", f"{ref} s", f"{cur} / {ref}", f"A/A {ref2} / {ref}")
        widths = [max(12, len(header[0]))] + [max(10, len(h)) for h in header[1:]]
        print(" ".join(f"{h:{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths))))
        orders = list(itertools.permutations(arms))
        worst_aa = 0.0
        for name in models:
            loaded = {label: w.ask(f"load {name}") for label, w in arms.items()}
            failed = {label: r["error"] for label, r in loaded.items() if not r["ok"]}
            if failed:
                print(f"{name:{widths[0]}} not timed: {failed}")
                continue
            times: dict[str, list[float]] = {label: [] for label in arms}
            for i in range(rounds):
                for label in orders[i % len(orders)]:
                    r = arms[label].ask("time")
                    if not r["ok"]:
                        raise RuntimeError(f"{label} {name}: {r['error']}")
                    times[label].append(r["seconds"])
            ratio = statistics.median(a / b for a, b in zip(times[cur], times[ref]))
            aa = statistics.median(a / b for a, b in zip(times[ref2], times[ref]))
            worst_aa = max(worst_aa, abs(aa - 1))
            row = (statistics.median(times[cur]), statistics.median(times[ref]), ratio, aa)
            print(f"{name:{widths[0]}} " + " ".join(f"{v:>{w}.3f}" for v, w in zip(row, widths[1:])))
        print(f"A/A: the same code's median ratio is up to {100 * worst_aa:.1f}% off 1 here; {cur} / {ref} "
              "closer to 1 than that is noise")
    finally:
        for w in workers:
            w.close()
        try:
            _git(current, "worktree", "remove", "--force", str(tree))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="runs per model (default mode)")
    parser.add_argument("--against", metavar="REV", help="compare this working tree with git revision REV")
    parser.add_argument("--rounds", type=int, default=24, help="rounds per model with --against")
    parser.add_argument("--models", nargs="+", default=list(AGAINST_MODELS), help="models with --against")
    parser.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(Path(args.worker))
    elif args.against:
        _against(args.against, args.models, args.rounds)
    else:
        _default(args.repeats)


if __name__ == "__main__":
    main()
