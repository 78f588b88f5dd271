"""The ``fxlaws`` command line.

    fxlaws demo                         annotate the built-in ResNet-18, print its laws, write report.html
    fxlaws list-models                  built-in model names
    fxlaws report MODEL_SPEC [--format text|md|json|html] [-o FILE] [--loss cross_entropy]
    fxlaws verify MODEL_SPEC            numeric soundness of every law (float64)

MODEL_SPEC is a built-in name (``fxlaws list-models``), ``path/to/file.py:factory`` or
``package.module:factory``. Example inputs come from the model's ``example_inputs()`` or
``--input-shape 2,3,32,32``. Exit codes: 0 ok, 1 a check failed (or an internal error), 2 bad usage /
model error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path

import torch

from . import models as models_registry
from .api import annotate
from .errors import FxlawsError
from .study.tasks import TASKS
from .verify.soundness import soundness

__all__ = ["main"]


class _UsageError(Exception):
    pass


def load_model(spec: str):
    """Build the model named by ``spec``; returns ``(model, name)``."""
    if ":" not in spec:
        try:
            return models_registry.get_model(spec), spec
        except KeyError:
            raise _UsageError(
                f"unknown model {spec!r}; built-in models: {', '.join(sorted(models_registry.MODELS))} "
                "(or give path/to/file.py:factory or package.module:factory)"
            ) from None
    target, factory = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.exists():
                raise _UsageError(f"no such file: {target}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except _UsageError:
        raise
    except Exception as exc:
        raise _UsageError(f"cannot import {target}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, factory, None)
    if fn is None:
        raise _UsageError(f"{target} has no attribute {factory!r}")
    try:
        return fn(), spec
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        raise _UsageError(
            f"factory {spec} raised {type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno})"
        ) from exc


_INPUT_DTYPES = {"float": torch.float32, "float32": torch.float32, "float64": torch.float64, "double": torch.float64,
                 "long": torch.long, "int64": torch.long, "int": torch.int32, "int32": torch.int32}


def _inputs(model, shape: str | None, dtype: str = "float", vocab: int | None = None):
    """One example input: ``--input-shape`` (random normal floats, or with ``--input-dtype long`` random
    token ids below ``--vocab``), else the model's ``example_inputs()``."""
    if vocab is not None and dtype not in ("long", "int64", "int", "int32"):
        raise _UsageError("--vocab gives the range of integer inputs: use it with --input-dtype long")
    if shape:
        try:
            dims = [int(s) for s in shape.split(",")]
        except ValueError:
            raise _UsageError(f"--input-shape {shape!r}: give integers separated by commas, e.g. 2,3,32,32") from None
        kind = _INPUT_DTYPES.get(dtype)
        if kind is None:
            raise _UsageError(f"--input-dtype {dtype!r}: one of {', '.join(_INPUT_DTYPES)}")
        if kind.is_floating_point:
            return (torch.randn(*dims, dtype=kind),)
        if vocab is None:
            raise _UsageError("integer inputs (token ids) need their range: add --vocab N (ids are drawn below N)")
        return (torch.randint(0, vocab, dims, dtype=kind),)
    if hasattr(model, "example_inputs"):
        return model.example_inputs()
    raise _UsageError("the model has no example_inputs(); pass --input-shape N,C,H,W (images, features) or "
                      "--input-shape N,T --input-dtype long --vocab V (token ids)")


def _progress(msg: str) -> None:
    print(f"… {msg}", file=sys.stderr, flush=True)


def _cmd_demo(args) -> int:
    model = models_registry.get_model("resnet18")
    _progress("annotating the built-in ResNet-18 (CIFAR stem) with loss=cross_entropy")
    t = time.perf_counter()
    ann = annotate(model, model.example_inputs(), loss="cross_entropy")
    dt = time.perf_counter() - t
    report = ann.report(title="resnet18 (built-in ResNet-18, CIFAR stem)")
    print(report)
    print(f"annotate took {dt:.2f} s")
    _progress("rendering the HTML report")
    path = Path("report.html")
    report.to_html(path)
    print(f"wrote {path.resolve()}: open it in a browser (summary, model picture, every law as math)")
    _progress("20 plain SGD steps on ResNet-18 (generated data, lr 1e-3), instrumented: how far each law moves")
    _print_drift(_sgd_drift(model, ann, steps=20, lr=1e-3))
    gpt = models_registry.get_model("gpt-tiny")
    _progress("annotating the built-in GPT-style decoder (2 layers, 2 heads, tied LM head)")
    print()
    print(annotate(gpt, gpt.example_inputs(), loss="cross_entropy").report(title="gpt-tiny (built-in nanoGPT-style)"))
    if args.verify:
        _progress("checking every ResNet-18 law numerically (float64, random θ, inputs and labels)")
        res = soundness(model, ann, trials=1, samples=4)
        print(f"soundness: worst relative |<∇h, ∇L>| over exact laws = {res.worst_exact:.1e} "
              f"({'ok' if res.ok else 'FAILED'})")
        return 0 if res.ok else 1
    return 0


def _sgd_drift(model, ann, *, steps: int, lr: float, seed: int = 0) -> dict[str, tuple[bool, float]]:
    """Train a copy of ``model`` with plain SGD on generated data through ``fxlaws.instrument`` (the
    forward records every law); per family (exact?, max relative drift |h_k − h_0| / |h_0|) after the
    last step. Exact laws drift only at second order in lr (THEORY §3)."""
    import copy

    import torch.nn.functional as F

    from .instrument import instrument

    net = copy.deepcopy(model).train()
    inst = instrument(net, ann, every=1)
    gen = torch.Generator().manual_seed(seed)
    (x,) = model.example_inputs()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps + 1):  # forward k records the parameters after step k - 1
        data = torch.randn(x.shape, generator=gen)
        labels = torch.randint(0, 10, (x.shape[0],), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(inst(data), labels)
        if inst.law_metrics.calls <= steps:
            loss.backward()
            opt.step()
    metrics = inst.flush()
    return {f.name: (f.exact, metrics[f"conservation/{f.kind}/{f.name}/max_rel_drift"]) for f in ann.laws}


def _print_drift(drift: dict[str, tuple[bool, float]]) -> None:
    exact = [v for e, v in drift.values() if e]
    approx = [v for e, v in drift.values() if not e]
    print(f"law drift after SGD: exact laws max relative drift {max(exact, default=0):.1e} "
          f"(median {sorted(exact)[len(exact) // 2] if exact else 0:.1e}); "
          f"eps-broken (approximate) laws max {max(approx, default=0):.1e}")


def _cmd_list(args) -> int:
    for name in sorted(models_registry.MODELS):
        print(name)
    return 0


_REPORT_FORMATS = ("text", "md", "json", "html")
_REPORT_SUFFIXES = {".txt": "text", ".md": "md", ".markdown": "md", ".json": "json", ".html": "html", ".htm": "html"}


def _cmd_report(args) -> int:
    fmt = args.format
    if fmt is None and args.output:
        fmt = _REPORT_SUFFIXES.get(Path(args.output).suffix.lower())
        if fmt is None:
            raise _UsageError(f"-o {args.output}: cannot tell the format from the suffix "
                              f"{Path(args.output).suffix or '(none)'!r}; use one of "
                              f"{', '.join(sorted(_REPORT_SUFFIXES))} or pass --format {'|'.join(_REPORT_FORMATS)}")
    fmt = fmt or "text"
    _progress(f"building {args.model}")
    try:
        model, name = load_model(args.model)
    except _UsageError as exc:
        raise _UsageError(f"{exc}{_traceback_summary(exc.__cause__)}") from exc
    inputs = _inputs(model, args.input_shape, args.input_dtype, args.vocab)
    _progress(f"annotating {name} (loss={args.loss or 'any'})")
    t = time.perf_counter()
    ann = _annotate_cli(model, inputs, args)
    _progress(f"{ann.num_laws:,} scalar laws in {len(ann.laws)} families ({time.perf_counter() - t:.2f} s); "
              f"rendering {fmt}")
    title = name if name == ann.model_name else f"{name} ({ann.model_name})"
    report = ann.report(title=title)
    render = {"text": lambda: report.to_text(clip=not args.output), "md": report.to_markdown,
              "json": report.to_json, "html": report.to_html}
    text = render[fmt]()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        _progress(f"wrote {args.output} ({fmt})")
    else:
        sys.stdout.write(text)
    return 0


def _traceback_summary(exc: BaseException | None, limit: int = 4) -> str:
    """The last frames of a user factory's traceback (fxlaws' own loader frames left out)."""
    if exc is None or exc.__traceback__ is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() != Path(__file__).resolve()]
    if not frames:
        return ""
    lines = [f"\n  {f.filename}:{f.lineno} in {f.name}" + (f": {f.line}" if f.line else "") for f in frames[-limit:]]
    return "\ntraceback (most recent call last):" + "".join(lines)


def _blocks(model, inputs, max_params: int):
    """Maximal submodules with 0 < D ≤ max_params, with the inputs they receive on ``inputs``."""
    def size(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    chosen, stack = [], [("", model)]
    while stack:
        path, m = stack.pop(0)
        d = size(m)
        if 0 < d <= max_params:
            chosen.append((path, m))
        elif d > max_params:
            stack.extend((f"{path}.{n}" if path else n, c) for n, c in m.named_children())
    seen: dict = {}

    def record(path):
        def hook(module, args, output):  # returns None: the output is left alone
            seen.setdefault(path, args)
        return hook

    hooks = [m.register_forward_hook(record(p)) for p, m in chosen]
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return [(p, m, seen[p]) for p, m in chosen if p in seen and all(isinstance(a, torch.Tensor) for a in seen[p])]


def _cmd_verify(args) -> int:
    from .verify.blocks import law_blocks
    from .verify.catalogue import self_check
    from .verify.completeness import completeness

    if args.catalogue:
        rows = self_check(progress=_catalogue_progress())
        for row in rows:
            print(row)
        bad = [r for r in rows if not r.ok]
        print(f"\ncatalogue: {len(rows) - len(bad)}/{len(rows)} rows agree with docs/THEORY.md "
              f"(or are documented as not attached yet)")
        return 1 if bad else 0
    if not args.model:
        raise _UsageError("give a MODEL_SPEC or --catalogue")
    model, name = load_model(args.model)
    inputs = _inputs(model, args.input_shape, args.input_dtype, args.vocab)
    _progress(f"annotating {name}")
    ann = _annotate_cli(model, inputs, args)
    _progress(f"soundness: {len(ann.laws)} law families, float64, random θ, inputs and losses")
    res = soundness(model, ann, inputs, trials=args.trials)
    print(res)
    print(f"\nsoundness: {'all exact laws sound' if res.ok else 'UNSOUND laws found'} "
          f"(worst {res.worst_exact:.1e}, tolerance {res.tol:g})")
    failed = not res.ok
    from .verify.invariance import invariance

    _progress("invariance: each exact family's group acting on random float64 parameters (docs/THEORY.md §2b)")
    inv = invariance(model, ann, inputs)
    print(f"\n{inv}\n\ninvariance: {'every action leaves the outputs unchanged' if inv.ok else 'NOT INVARIANT'} "
          f"(worst relative output change {inv.worst:.1e}; {len(inv.skipped)} families without an exact action)")
    failed |= not inv.ok
    loss = args.loss or "any"
    if sum(p.numel() for p in model.parameters() if p.requires_grad) <= args.max_params:
        checks = [("(whole model)", model, inputs, loss)]
    else:  # the sub-graphs where the laws live, then modules without a law, each alone
        blocks, skipped = law_blocks(model, ann, inputs, args.max_params)
        checks = [(f"law block {b.label}", b.module, b.inputs, "any") for b in blocks]
        checks += [(f"module {p} alone (no law attached there)", m, tuple(a), "any")
                   for p, m, a in _blocks(model, inputs, args.max_params) if p in ann.no_law]
        for fam, size in skipped:
            print(f"completeness {fam}: not checked (its block has {size:,} trainable parameters > --max-params "
                  f"{args.max_params:,})")
    print("\ncompleteness: D − dim Lie laws on each piece against the independent laws fxlaws attaches there; "
          "'missing k' = k laws exist that fxlaws does not attach (a gap, not a false law: exit code 0); "
          "'unsound' = an attached law is not conserved (exit code 1)")
    for label, block, block_inputs, block_loss in _steps(checks, "completeness"):
        try:
            comp = completeness(block, tuple(block_inputs), loss=block_loss)
        except Exception as exc:  # a piece fxlaws cannot re-run alone: say so, keep going
            print(f"completeness {label}: skipped ({type(exc).__name__}: {exc})")
            continue
        print(f"completeness {label}: {comp}")
        failed |= comp.verdict == "unsound"
    return 1 if failed else 0


def _annotate_cli(model, inputs, args):
    """``annotate``, with the hint a float ``--input-shape`` given to a token model needs."""
    try:
        return annotate(model, inputs, loss=args.loss)
    except Exception as exc:
        text = f"{exc} {exc.__cause__ or ''}"
        floats = args.input_shape and args.input_dtype.startswith(("float", "double"))
        if floats and any(k in text for k in ("Long", "Int", "indices", "embedding")):
            raise _UsageError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}\nhint: the model reads integer "
                              f"inputs (token ids) and --input-shape {args.input_shape} made floats: add "
                              "--input-dtype long --vocab N (ids are drawn below N)") from exc
        raise


def _catalogue_progress():
    """A progress callback for the catalogue's rows: a tqdm bar on a terminal, plain lines otherwise."""
    if not sys.stderr.isatty():
        return _progress
    from tqdm import tqdm

    from .verify.catalogue import CATALOGUE

    bar = tqdm(total=len(CATALOGUE), desc="catalogue", file=sys.stderr, leave=False, unit="row")

    def step(msg: str) -> None:
        bar.set_postfix_str(msg[:40])
        bar.update(1)

    return step


def _steps(items: list, what: str):
    """``items`` with a progress bar on a terminal (tqdm), one plain line per item otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=what, file=sys.stderr, leave=False, unit="check")
        return
    for i, item in enumerate(items, 1):
        _progress(f"{what} {i}/{len(items)}: {item[0] if isinstance(item, tuple) else item}")
        yield item


def _cmd_study(args) -> int:
    from .study import plot, sgd_persistence

    results = []
    for model in args.models:
        res = sgd_persistence(model, seeds=args.seeds, steps=args.steps, progress=_progress)
        results.append(res)
        finals = ", ".join(f"τ={lr:g}: {res.final(lr):.2e}" for lr in res.lrs)
        print(f"{model}: final relative error (median over seeds) {finals}")
        print(f"{model}: log-log slope {res.slope:.2f} (expected ≈ 2); first-order share of drift: "
              + ", ".join(f"{k} {v:.2f}" for k, v in res.first_order_share.items()))
    plot(results, args.output)
    print(f"wrote {args.output}")
    print()  # the table README shows, as printed here
    lrs = results[0].lrs
    optimizers = list(dict.fromkeys(k for res in results for k in res.first_order_share))
    print("| model | " + " | ".join(f"τ = {lr:g}" for lr in lrs) + " | log-log slope | "
          + " | ".join(f"first-order share, {k}" for k in optimizers) + " |")
    print("|---" * (len(lrs) + 2 + len(optimizers)) + "|")
    for res in results:
        print(f"| {res.model} | " + " | ".join(f"{res.final(lr):.2e}" for lr in res.lrs) + f" | {res.slope:.2f} | "
              + " | ".join(f"{res.first_order_share.get(k, float('nan')):.2f}" for k in optimizers) + " |")
    return 0


def _cmd_teleport_study(args) -> int:
    import dataclasses
    import json

    from .study import plot_teleport, table, teleport_study

    try:
        study = teleport_study(args.tasks, args.optimizers, seeds=args.seeds, steps=args.steps, every=args.every,
                               teleport_steps=args.teleport_steps, teleport_lrs=args.teleport_lr, corpus=args.corpus,
                               progress=_progress)
    except (FileNotFoundError, ImportError, ValueError) as exc:  # no corpus, no scikit-learn, a bad count
        raise _UsageError(str(exc)) from exc
    for name, text in study.descriptions.items():
        print(f"{name}: {text}; learning rates {study.settings[f'{name}_lr']}")
    settings = {k: v for k, v in study.settings.items() if not k.endswith("_lr")}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if args.json:  # first: the runs survive a failing plot
        with open(args.json, "w") as fh:
            json.dump({"settings": study.settings, "descriptions": study.descriptions,
                       "runs": [dataclasses.asdict(r) for r in study.runs]}, fh)
        print(f"wrote {args.json}")
    plot_teleport(study, args.output)
    print(f"wrote {args.output}")
    print()  # the table README shows, as printed here
    print(table(study))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxlaws", description="Conservation laws of PyTorch training.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="annotate the built-in ResNet-18 and print its laws")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the numeric check")
    p.set_defaults(fn=_cmd_demo)
    p = sub.add_parser("list-models", help="built-in model names")
    p.set_defaults(fn=_cmd_list)
    for name, fn, help_ in (("report", _cmd_report, "static report of a model's laws (text, md, json, html)"),
                            ("verify", _cmd_verify, "check every law numerically; completeness per block")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("model", nargs="?" if name == "verify" else None,
                       help="built-in name, path/to/file.py:factory or package.module:factory")
        p.add_argument("--loss", choices=["any", "cross_entropy"], default=None)
        p.add_argument("--input-shape", default=None, help="e.g. 2,3,32,32 (default: model.example_inputs())")
        p.add_argument("--input-dtype", default="float", choices=sorted(_INPUT_DTYPES),
                       help="dtype of the --input-shape input: float (random normal, default) or long (token ids)")
        p.add_argument("--vocab", type=int, default=None, help="integer inputs are drawn from 0 .. VOCAB-1")
        if name == "report":
            p.add_argument("--format", choices=_REPORT_FORMATS, default=None,
                           help="text (default), md, json (schema fxlaws.report/1) or html (one offline file); "
                                "default: from the -o suffix")
            p.add_argument("-o", "--output", default=None, help="write the report there (default: stdout)")
        else:
            p.add_argument("--trials", type=int, default=2)
            p.add_argument("--catalogue", action="store_true", help="self-check every docs/THEORY.md row at tiny size")
            p.add_argument("--max-params", type=int, default=2000,
                           help="completeness runs on the largest blocks with at most this many parameters")
        p.set_defaults(fn=fn)
    p = sub.add_parser("study", help="experiments on training runs: `fxlaws study sgd`, `fxlaws study teleport`")
    experiments = p.add_subparsers(dest="experiment", required=True)
    p = experiments.add_parser("sgd", help="law error ∝ τ² under plain SGD")
    p.add_argument("--models", nargs="+", default=["resnet18", "gpt-tiny"], choices=["resnet18", "gpt-tiny"])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("-o", "--output", default="sgd_persistence.png")
    p.set_defaults(fn=_cmd_study)
    p = experiments.add_parser("teleport", help="training loss with and without rebalancing at init and "
                                                "teleportation every K steps (SGD, Adam; MLP, CNN, GPT)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS),
                   help="mlp, cnn: scikit-learn digits (extra fxlaws[study]); gpt: characters of --corpus")
    p.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50, help="teleport (or reset Adam, the control) every K steps")
    p.add_argument("--teleport-steps", type=int, default=10, help="ascent steps per teleport")
    p.add_argument("--teleport-lr", type=float, nargs="+", default=[0.01, 0.05],
                   help="ascent learning rates, one teleport condition each")
    p.add_argument("--corpus", default=None, help="text of the gpt task (default: this repository's docs/THEORY.md)")
    p.add_argument("-o", "--output", default="teleport_study.png")
    p.add_argument("--json", default=None, help="also write every run (curves, gains, timings) there")
    p.set_defaults(fn=_cmd_teleport_study)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except _UsageError as exc:
        print(f"fxlaws: error: {exc}", file=sys.stderr)
        return 2
    except FxlawsError as exc:
        print(f"fxlaws: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
