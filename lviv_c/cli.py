"""Command line: ``lviv-c`` / ``python -m lviv_c``.

    python -m lviv_c demo [--data PATH] [--quick] [--out DIR] [--max-iter N]
    python -m lviv_c train --data PATH --model lurz [--out weights.pt]   (or sensorium, sensorium-p)
    python -m lviv_c evaluate --data PATH --model lurz --weights weights.pt
    python -m lviv_c synthesize OUT_DIR [--small] [--n-trials N] [--n-neurons N] [--seed S]
    python -m lviv_c sweep CONFIG --data PATH --out DIR [--address A] [--cpus-per-trial N]
    python -m lviv_c ensemble DIR --top K [--data PATH]

A wrong data path (missing, or a folder that is not a scan) is one line on stderr naming the
path and what was expected, with exit status 2.
"""
import argparse
import json
import os
import sys

import numpy as np

__all__ = ["main", "build_parser"]

_DATA_HELP = ("scan folder (FileTreeDataset layout, e.g. static20457-5-9-preproc0); default: "
              "$LVIV_DATA, else the synthetic scan in the cache (generated when missing)")


class _UsageError(Exception):
    """A one-line error for the user (exit status 2)."""


def _why(e):
    """The reason of an OSError/ValueError from lviv_c._files, for a one-line message."""
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}"
    return str(e)


def _check_out_file(path, opt):
    """Before the work starts: ``path`` can be written (folder made when missing)."""
    from ._files import check_output_file
    try:
        check_output_file(path, "output file")
    except (OSError, ValueError) as e:
        raise _UsageError(f"{opt} {path}: cannot write the output there: {_why(e)}") from None


def _check_out_folder(path, opt):
    from ._files import check_output_folder
    try:
        check_output_folder(path, "output folder")
    except (OSError, ValueError) as e:
        raise _UsageError(f"{opt} {path}: cannot write the output there: {_why(e)}") from None


def _save_or_keep(state, out, model_name):
    """Save the state dict to ``out``; when that fails after the work is done, keep it in the
    temporary folder and say where (exit status 2)."""
    import tempfile
    from .serialization import save
    try:
        save(state, out)
    except (OSError, ValueError) as e:
        fd, keep = tempfile.mkstemp(prefix=f"lviv-c-{model_name}-", suffix=".pt")
        os.close(fd)
        try:
            save(state, keep)
        except (OSError, ValueError) as e2:
            os.unlink(keep)
            raise _UsageError(f"--out {out}: could not save the state dict ({_why(e)}), nor a "
                              f"copy in {os.path.dirname(keep)} ({_why(e2)}); the weights are "
                              f"lost") from None
        raise _UsageError(f"--out {out}: could not save the state dict ({_why(e)}); it was "
                          f"saved to {keep} instead") from None


def _add_data(p, required=False):
    p.add_argument("--data", metavar="PATH", help=_DATA_HELP)
    p.add_argument("--cache", metavar="DIR",
                   help="folder for synthetic scans (default: $LVIV_CACHE, else ./.cache)")
    p.add_argument("--quick", action="store_true",
                   help="use the small synthetic scan when no data is given")


def _add_training(p, max_iter_default):
    p.add_argument("--batch-size", type=int, default=30, metavar="N",
                   help="training batch size (default 30, the course's)")
    p.add_argument("--max-iter", type=int, default=max_iter_default, metavar="N",
                   help="maximum number of epochs (train_model's max_iter; default "
                        f"{max_iter_default if max_iter_default is not None else '200, 2 with --quick'})")
    p.add_argument("--seed", type=int, default=1234, help="seed of the model and the shuffling "
                                                         "(default 1234, the course's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train: auto (default: the GPU when there is one), cpu, or cuda "
                        "(the CPU, said once, when there is no GPU)")


def _add_model(p):
    from .demo import MODELS
    p.add_argument("--model", required=True, choices=list(MODELS), metavar="MODEL",
                   help="one of: " + ", ".join(f"{k} ({v})" for k, v in MODELS.items()))


def build_parser():
    p = argparse.ArgumentParser(
        prog="lviv-c",
        description="Train and evaluate models of mouse V1 responses to natural images "
                    "(lviv_c: the course's LN and CNN models and the Lurz 2020 model).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "demo", help="train all models on a scan, print and save results and figures",
        description="Train the course LN, the simple CNN, the course CNN, the Lurz 2020 model "
                    "and its linear variant on a scan (default: a full-size synthetic scan, "
                    "generated once into the cache), evaluate them on the test set, print a "
                    "results table and write OUT/results.json and OUT/*.png.")
    _add_data(d)
    d.add_argument("--out", default="out", metavar="DIR", help="output folder (default: out)")
    _add_training(d, None)
    d.add_argument("--models", default=None, metavar="LIST",
                   help="comma-separated subset of: ln,simple-cnn,cnn,lurz,lurz-linear "
                        "(also sensorium,sensorium-p)")
    d.add_argument("--mei-iterations", type=int, default=None, metavar="N",
                   help="MEI optimisation steps (default 300, 20 with --quick)")
    d.add_argument("--no-figures", action="store_true", help="skip the figures")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="time for the whole run: each model's epochs are planned from a timed probe "
                        "and the plan is printed first (default on a CPU: 20; 0: no plan, at most "
                        "10 epochs per model on a CPU; not with --max-iter)")

    t = sub.add_parser(
        "train", help="train one model and save its state dict",
        description="Train one model with train_model (the course's recipe), print its test "
                    "measures and save the state dict in PyTorch's format.")
    _add_data(t)
    _add_model(t)
    _add_training(t, 200)
    t.add_argument("--out", metavar="FILE.pt",
                   help="where to save the state dict (default: <model>.pt)")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser(
        "evaluate", help="evaluate saved weights on a scan's test set",
        description="Build MODEL for the scan, load a state dict saved by `train` (or by "
                    "PyTorch, with the same keys), and print its measures.")
    _add_data(e)
    _add_model(e)
    e.add_argument("--weights", required=True, metavar="FILE.pt", help="state dict file")
    e.add_argument("--batch-size", type=int, default=30, metavar="N", help="batch size (default 30)")
    e.add_argument("--json", action="store_true", help="print the measures as JSON")

    s = sub.add_parser(
        "synthesize", help="write a synthetic scan with known ground truth",
        description="Write a synthetic scan in the course's layout (default: the course "
                    "scan's size, 5993 trials x 5335 neurons, 36x64 images) with a "
                    "ground_truth/ folder, into OUT_DIR/static60000-1-1-preproc0.")
    s.add_argument("out_dir", metavar="OUT_DIR")
    s.add_argument("--small", action="store_true", help="a small scan (300 trials x 50 neurons)")
    s.add_argument("--n-trials", type=int, metavar="N")
    s.add_argument("--n-neurons", type=int, metavar="N")
    s.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing scan")
    s.add_argument("--quiet", action="store_true", help="no progress output")

    from .sweep import add_parsers   # sweep, ensemble (lviv_c.sweep)
    add_parsers(sub, _add_data)
    return p


# ----------------------------------------------------------------------------------- commands

def _data(args):
    from .demo import DataPathError, resolve_data
    try:
        path, _ = resolve_data(args.data, quick=args.quick, cache=args.cache,
                               progress=not getattr(args, "quiet", False))
    except DataPathError as e:
        raise _UsageError(str(e)) from None
    return path


def _loaders(path, batch_size, seed=None):
    from .demo import DataPathError, load_loaders
    try:
        return load_loaders(path, batch_size=batch_size, seed=seed)
    except DataPathError as e:
        raise _UsageError(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise _UsageError(f"{path}: could not read the scan: {e}".splitlines()[0]) from None


def _print_measures(name, m, out=None):
    from .demo import MODELS
    out = out or sys.stdout  # looked up at the call (a caller may have redirected it)
    print(f"{MODELS[name]} ({name}): validation corr {m['validation_corr']:.4f}, test corr "
          f"{m['test_corr']:.4f}, corr to average {m['corr_to_average']:.4f}, fraction oracle "
          f"{m['fraction_oracle']:.4f}, FEVE {m['feve']:.4f}", file=out)


def cmd_train(args):
    from .demo import TestSet, build_model, evaluate
    from .trainers import train_model
    out = args.out or f"{args.model}.pt"
    _check_out_file(out, "--out")              # before the data is read and the model trained
    path = _data(args)
    loaders, repeats = _loaders(path, args.batch_size, seed=args.seed)
    if args.model.startswith("sensorium"):  # static_loaders over the scan, multi-scan trainer
        from .sensorium_training import predict_tier, sensorium_scan_model
        model, s_loaders = sensorium_scan_model(args.model, path, batch_size=args.batch_size, seed=args.seed)
        tl = s_loaders
    else:
        model, tl = build_model(args.model, loaders, seed=args.seed), loaders
    try:
        train_model(model, tl, seed=args.seed, max_iter=args.max_iter, verbose=not args.quiet,
                    device=args.device)
    except FloatingPointError as e:
        raise _UsageError(str(e)) from None
    if tl is not loaders:
        measures, _ = TestSet(loaders, repeats).score(*(next(iter(predict_tier(model, tl, t).values()))
                                                        for t in ("validation", "test")))
    else:
        measures, _ = evaluate(model, TestSet(loaders, repeats))
    _print_measures(args.model, measures)
    _save_or_keep(model.state_dict(), out, args.model)
    from .capture import model_device
    print(f"trained on {model_device(model)}; saved the state dict to {out}")
    return 0


def cmd_evaluate(args):
    from .demo import TestSet, build_model, evaluate
    from .serialization import load
    path = _data(args)
    if not os.path.isfile(args.weights):
        raise _UsageError(f"{args.weights}: no such file; expected a state dict saved by "
                          f"`lviv-c train` or torch.save(model.state_dict(), ...)")
    loaders, repeats = _loaders(path, args.batch_size)
    s_loaders = None
    if args.model.startswith("sensorium"):
        from .sensorium_training import sensorium_scan_model
        model, s_loaders = sensorium_scan_model(args.model, path, batch_size=args.batch_size)
    else:
        model = build_model(args.model, loaders)
    try:
        state = load(args.weights)
    except Exception as e:  # not a PyTorch file
        raise _UsageError(f"{args.weights}: not a PyTorch state dict file ({e})".splitlines()[0]) \
            from None
    bad = [k for k, v in (state.items() if isinstance(state, dict) else ())
           if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:   # the measures would report such a model as correlation 0
        raise _UsageError(f"{args.weights}: {bad[0]} holds NaN/inf values ({len(bad)} tensor(s) "
                          f"not finite); not evaluating a diverged model")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        first = str(e).replace("\n\t", " ").splitlines()[0]
        raise _UsageError(f"{args.weights}: does not fit the {args.model} model for {path}: "
                          f"{first}") from None
    model.eval()
    if s_loaders is not None:
        from .sensorium_training import predict_tier
        measures, _ = TestSet(loaders, repeats).score(*(next(iter(predict_tier(model, s_loaders, t).values()))
                                                        for t in ("validation", "test")))
    else:
        measures, _ = evaluate(model, TestSet(loaders, repeats))
    if args.json:
        print(json.dumps({k: float(v) for k, v in measures.items()}))
    else:
        _print_measures(args.model, measures)
    return 0


def cmd_synthesize(args):
    from . import synthetic
    kw = dict(synthetic.SMALL if args.small else synthetic.DEFAULTS)
    if args.n_trials is not None:
        kw["n_trials"] = args.n_trials
    if args.n_neurons is not None:
        kw["n_neurons"] = args.n_neurons
    _check_out_folder(args.out_dir, "OUT_DIR")
    try:
        path = synthetic.make_scan(args.out_dir, seed=args.seed, progress=not args.quiet,
                                   overwrite=args.overwrite, **kw)
    except FileExistsError as e:
        raise _UsageError(str(e).replace("pass overwrite=True", "pass --overwrite")) from None
    except ValueError as e:
        raise _UsageError(str(e)) from None
    except OSError as e:   # e.g. the disk filled up while writing
        raise _UsageError(f"OUT_DIR {args.out_dir}: could not write the scan: {_why(e)}") from None
    print(path)
    return 0


def cmd_demo(args):
    from .demo import DataPathError, MODELS, run_demo
    models = None
    if args.models:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        bad = [m for m in models if m not in MODELS]
        if bad:
            raise _UsageError(f"--models: unknown model {bad[0]!r}; expected some of "
                              f"{', '.join(MODELS)}")
    kw = {} if models is None else {"models": models}
    if args.budget is not None:
        if args.budget < 0 or args.budget != args.budget:
            raise _UsageError(f"--budget: expected minutes >= 0, got {args.budget:g}")
        if args.max_iter is not None and args.budget:
            raise _UsageError("--budget and --max-iter: give one of them")
        kw["budget"] = args.budget
    _check_out_folder(args.out, "--out")
    try:
        run_demo(data=args.data, quick=args.quick, out=args.out, max_iter=args.max_iter,
                 batch_size=args.batch_size, seed=args.seed, cache=args.cache,
                 verbose=not args.quiet, mei_iterations=args.mei_iterations,
                 figures=not args.no_figures, device=args.device, **kw)
    except DataPathError as e:
        raise _UsageError(str(e)) from None
    return 0


def cmd_sweep(args):
    from .demo import DataPathError
    from .sweep import ConfigError, cli_sweep, sweeps_data
    try:
        data = None if sweeps_data(args.config) and not args.data else _data(args)
        return cli_sweep(args, data)
    except (ConfigError, DataPathError) as e:
        raise _UsageError(str(e)) from None


def cmd_ensemble(args):
    from .demo import DataPathError
    from .sweep import ConfigError, cli_ensemble
    try:
        return cli_ensemble(args)
    except (ConfigError, DataPathError) as e:
        raise _UsageError(str(e)) from None


_COMMANDS = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate,
             "synthesize": cmd_synthesize, "sweep": cmd_sweep, "ensemble": cmd_ensemble}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    for opt in ("batch_size", "max_iter", "n_trials", "n_neurons", "mei_iterations"):
        v = getattr(args, opt, None)
        if v is not None and v < 1:
            parser.error(f"--{opt.replace('_', '-')} must be at least 1, got {v}")
    try:
        return _COMMANDS[args.command](args)
    except _UsageError as e:
        print(f"lviv-c {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lviv-c {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
