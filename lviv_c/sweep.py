"""Hyperparameter sweeps, seeds and scans on Ray (or trial after trial in this process).

``lviv-c sweep CONFIG --data PATH --out DIR`` / ``run(config, data, out)`` expands a config
into trials (model builder x grid x random draws x seeds x scans), runs each as one
``train_model`` fit in a Ray task with the resources asked for, and records every finished
trial in ``DIR/results.jsonl`` (one JSON line) with its state dict in ``DIR/trials/<id>.pt``.

The config (JSON or YAML; the same keys)::

    {"model": "lurz",                       # lurz, lurz-linear, cnn, simple-cnn, ln, or module:function
     "args": {"hidden_channels": 64},       # fixed builder arguments
     "grid": {"gamma_readout": [1.0, 2.439]},                     # every combination
     "random": {"n": 4, "seed": 0, "axes": {"init_sigma": [0.1, 0.6]}},   # n draws per grid point
     "seeds": [1, 2, 3],                    # each configuration once per seed
     "train": {"max_iter": 100}}            # train_model's arguments

Axes are builder arguments; ``train.NAME`` sweeps a ``train_model`` argument (e.g.
``train.lr_init``), ``batch_size`` the loaders' batch size, and ``data`` the scan (a list of scan
folders: one recipe fitted to every scan). A random axis is ``[lo, hi]`` (uniform; whole numbers
when both ends are), ``{"loguniform": [lo, hi]}`` or ``{"choice": [...]}``. Optional keys:
``batch_size`` (30), ``early_stop`` (``false``, or ``{"grace": 4, "eta": 3}``, the default),
``max_retries`` (2).

A trial's id is a digest of everything that defines it, so the same command run again skips the
trials already in ``results.jsonl`` and runs only the rest. Trials that raise are recorded with
status ``error`` and the sweep goes on; a trial whose worker (or machine) dies is retried by Ray
on another worker up to ``max_retries`` times, then recorded as ``lost`` (run again later).

Early termination is an asynchronous successive-halving rule (ASHA, Li et al. 2018): at epochs
grace, grace*eta, grace*eta^2, ... a trial reports its validation correlation (through
``train_model``'s per-epoch callback) and stops, keeping its best state, when it is below the
(1 - 1/eta) quantile of what the trials on the same scan reported at that epoch (once at least
eta have). Its record gets status ``stopped``.
"""
import copy
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import socket
import sys
import time
import traceback

import numpy as np

__all__ = ["run", "load_config", "expand", "read_results", "summary_table", "plot_axes",
           "build_trial_model", "load_trial_model", "ensemble", "load_ensemble", "EarlyStop",
           "ConfigError", "BUILDERS", "RECORD_FIELDS"]

#: The named model builders (lviv_c.demo.build_model); anything else is ``module:function``.
BUILDERS = ("lurz", "lurz-linear", "cnn", "simple-cnn", "ln")

#: The keys of every line of results.jsonl (the same with and without Ray, for every status).
RECORD_FIELDS = (
    "id", "status", "model", "args", "axes", "seed", "train", "data", "batch_size",
    "validation_corr", "test_corr", "corr_to_average", "fraction_oracle", "feve",
    "epochs", "stopped_at", "validation_curve", "seconds", "timing", "host", "runner",
    "attempts", "state_dict", "error", "traceback", "finished")

_CONFIG_KEYS = {"model", "args", "grid", "random", "seeds", "train", "batch_size", "early_stop",
                "max_retries"}
_SPECIAL_AXES = ("data", "batch_size")
_DEFAULT_EARLY_STOP = {"grace": 4, "eta": 3}


class ConfigError(ValueError):
    """A sweep config (or argument) that cannot be run; the message names the key."""


def _say(msg):
    print(f"lviv-c sweep: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- config

def _read_config_file(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file; expected a sweep config (JSON or YAML)")
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", errors="replace")
    ext = os.path.splitext(path)[1].lower()
    if ext != ".json":
        try:
            import yaml
        except ImportError:
            if ext in (".yaml", ".yml"):
                raise ConfigError(f"{path}: reading a YAML config needs PyYAML "
                                  "(pip install pyyaml, or lviv_c[distributed])") from None
            yaml = None
        if yaml is not None:
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None


def _train_params():
    import inspect

    from .trainers import train_model
    return {n for n, p in inspect.signature(train_model).parameters.items()
            if p.kind is p.POSITIONAL_OR_KEYWORD and n not in ("model", "dataloader", "seed")}


def load_config(config):
    """The validated config (a dict with every key filled in) from a dict or a JSON/YAML file."""
    where = "config"
    if isinstance(config, (str, os.PathLike)):
        where = os.fspath(config)
        config = _read_config_file(config)
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a mapping with the keys model, args, grid, random, "
                          f"seeds, train; got a {type(config).__name__}")

    def bad(key, msg):
        raise ConfigError(f"{where}: {key}: {msg}")

    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        bad(unknown[0], f"unknown key; expected some of {', '.join(sorted(_CONFIG_KEYS))}")
    cfg = copy.deepcopy(config)
    model = cfg.get("model")
    if not isinstance(model, str) or not (model in BUILDERS or ":" in model):
        bad("model", f"expected one of {', '.join(BUILDERS)} or an importable 'module:function', "
                     f"got {model!r}")
    for key in ("args", "grid", "train"):
        cfg[key] = cfg.get(key) or {}
        if not isinstance(cfg[key], dict):
            bad(key, f"expected a mapping, got {type(cfg[key]).__name__}")
    for name, values in cfg["grid"].items():
        if not isinstance(values, list) or not values:
            bad(f"grid.{name}", f"expected a non-empty list of values, got {values!r}")
    rnd = cfg.get("random") or {}
    if not isinstance(rnd, dict):
        bad("random", f"expected a mapping {{n, seed, axes}}, got {type(rnd).__name__}")
    if rnd:
        extra = sorted(set(rnd) - {"n", "seed", "axes"})
        if extra:
            bad(f"random.{extra[0]}", "unknown key; expected n, seed, axes")
        n = rnd.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            bad("random.n", f"expected a whole number >= 1, got {n!r}")
        if not isinstance(rnd.get("seed", 0), int):
            bad("random.seed", f"expected a whole number, got {rnd.get('seed')!r}")
        axes = rnd.get("axes")
        if not isinstance(axes, dict) or not axes:
            bad("random.axes", f"expected a mapping of axis -> [lo, hi] / {{loguniform: [lo, hi]}} "
                               f"/ {{choice: [...]}}, got {axes!r}")
        for name, spec in axes.items():
            _check_random_axis(f"random.axes.{name}", spec, bad)
            if name in cfg["grid"]:
                bad(f"random.axes.{name}", "also a grid axis; sweep it one way")
        rnd = {"n": n, "seed": int(rnd.get("seed", 0)), "axes": axes}
    cfg["random"] = rnd
    seeds = cfg.get("seeds", [1234])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        bad("seeds", f"expected a non-empty list of whole numbers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        bad("seeds", f"repeated seeds in {seeds}")
    cfg["seeds"] = seeds
    known = _train_params()
    train_axes = [a[6:] for a in list(cfg["grid"]) + list(rnd.get("axes", {})) if a.startswith("train.")]
    for name in list(cfg["train"]) + train_axes:
        if name not in known:
            bad(f"train.{name}", f"not an argument of train_model; expected some of "
                                 f"{', '.join(sorted(known))}")
    bs = cfg.get("batch_size", 30)
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        bad("batch_size", f"expected a whole number >= 1, got {bs!r}")
    cfg["batch_size"] = bs
    es = cfg.get("early_stop", True)
    if es is True:
        es = dict(_DEFAULT_EARLY_STOP)
    elif es in (False, None):
        es = False
    elif isinstance(es, dict):
        extra = sorted(set(es) - {"grace", "eta"})
        if extra:
            bad(f"early_stop.{extra[0]}", "unknown key; expected grace, eta")
        es = {**_DEFAULT_EARLY_STOP, **es}
        if not all(isinstance(es[k], int) and es[k] >= (1 if k == "grace" else 2) for k in es):
            bad("early_stop", f"expected grace >= 1 and eta >= 2 (whole numbers), got {es}")
    else:
        bad("early_stop", f"expected true, false or {{grace, eta}}, got {es!r}")
    cfg["early_stop"] = es
    mr = cfg.get("max_retries", 2)
    if not isinstance(mr, int) or isinstance(mr, bool) or mr < 0:
        bad("max_retries", f"expected a whole number >= 0, got {mr!r}")
    cfg["max_retries"] = mr
    if "data" in rnd.get("axes", {}):
        bad("random.axes.data", "the scan is a grid axis (a list of scan folders)")
    return cfg


def _check_random_axis(key, spec, bad):
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in ("loguniform", "uniform", "choice"):
            bad(key, f"expected [lo, hi], {{loguniform: [lo, hi]}} or {{choice: [...]}}, got {spec!r}")
        kind, v = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(v, list) or not v:
                bad(key, f"choice: expected a non-empty list, got {v!r}")
            return
        spec = v
        if kind == "loguniform" and isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, (int, float)) for x in v) and min(v) <= 0:
            bad(key, f"loguniform: expected positive bounds, got {v!r}")
    if not (isinstance(spec, list) and len(spec) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in spec)
            and spec[0] <= spec[1]):
        bad(key, f"expected [lo, hi] with lo <= hi, got {spec!r}")


def _draw(spec, rng):
    if isinstance(spec, dict):
        kind, v = next(iter(spec.items()))
        if kind == "choice":
            return copy.deepcopy(v[int(rng.integers(len(v)))])
        if kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(v[0]), math.log(v[1]))))
        spec = v
    lo, hi = spec
    if isinstance(lo, int) and isinstance(hi, int):
        return int(rng.integers(lo, hi + 1))
    return float(rng.uniform(lo, hi))


def _trial_id(trial):
    key = {k: trial[k] for k in ("model", "args", "train", "seed", "data", "batch_size")}
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def expand(config, data=None):
    """The list of trials of a config: dicts with id, model, args (every builder argument),
    axes (the swept values), seed, train, data (absolute scan path), batch_size. ``data`` is the
    scan unless the config sweeps ``data``."""
    cfg = load_config(config)
    grid = cfg["grid"]
    if "data" in grid and data is not None:
        raise ConfigError("--data: the config sweeps the scan (grid.data); give one or the other")
    if "data" not in grid and data is None:
        raise ConfigError("--data: no scan given (pass --data PATH, or sweep grid.data)")
    names = list(grid)
    points = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    rnd = cfg["random"]
    if rnd:
        rng = np.random.default_rng(rnd["seed"])
        draws = [{name: _draw(spec, rng) for name, spec in rnd["axes"].items()}
                 for _ in range(rnd["n"])]
        points = [{**p, **d} for p in points for d in draws]
    trials, seen = [], set()
    for point in points:
        for seed in cfg["seeds"]:
            args = dict(cfg["args"])
            train = dict(cfg["train"])
            scan = data
            bs = cfg["batch_size"]
            for name, value in point.items():
                if name == "data":
                    scan = value
                elif name == "batch_size":
                    bs = value
                elif name.startswith("train."):
                    train[name[6:]] = value
                else:
                    args[name] = value
            if not isinstance(scan, (str, os.PathLike)):
                raise ConfigError(f"grid.data: expected scan folders (strings), got {scan!r}")
            t = {"model": cfg["model"], "args": args, "axes": dict(point), "seed": seed,
                 "train": train, "data": os.path.abspath(os.fspath(scan)), "batch_size": bs}
            t["id"] = _trial_id(t)
            if t["id"] in seen:
                continue
            seen.add(t["id"])
            trials.append(t)
    return trials


# ----------------------------------------------------------------------------------- models

def _import_builder(spec):
    import importlib
    mod, _, fn = spec.partition(":")
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise ConfigError(f"model: cannot import {mod!r} for the builder {spec!r}: {e}") from None
    f = getattr(module, fn, None)
    if not callable(f):
        raise ConfigError(f"model: {mod!r} has no function {fn!r}")
    return f


def build_trial_model(trial, loaders):
    """The (untrained, seeded) model of a trial (or results.jsonl record) for ``loaders``.

    ``lurz`` / ``lurz-linear``: build_lurz2020_model with the course configuration updated by the
    args; ``ln``, ``cnn``, ``simple-cnn``: the course classes (``Linear``, ``CNN``, ``SimpleCNN``)
    with the args (the LN model's gamma defaults to the notebook's 0.1); ``module:function``:
    ``function(dataloaders=loaders, seed=seed, **args)``."""
    from .tensor import manual_seed
    name, args, seed = trial["model"], dict(trial.get("args") or {}), trial.get("seed")
    if name in ("lurz", "lurz-linear"):
        from .demo import build_model
        return build_model(name, loaders, seed=seed, lurz_config=args)
    if name in ("ln", "cnn", "simple-cnn"):
        from . import course
        if seed is not None:
            manual_seed(seed)
        h, w, n = course._dims(loaders)
        cls = {"ln": course.Linear, "cnn": course.CNN, "simple-cnn": course.SimpleCNN}[name]
        if name == "ln":
            args.setdefault("gamma", 0.1)
        return cls(input_height=h, input_width=w, n_neurons=n, **args)
    return _import_builder(name)(dataloaders=loaders, seed=seed, **args)


def load_trial_model(record, loaders, out=None):
    """A finished trial's trained model: built as in the sweep, its state dict loaded from
    ``out``/``record['state_dict']``, in eval mode."""
    from .serialization import load
    if not record.get("state_dict"):
        raise ValueError(f"trial {record.get('id')}: no state dict (status {record.get('status')})")
    path = record["state_dict"] if out is None else os.path.join(out, record["state_dict"])
    model = build_trial_model(record, loaders)
    model.load_state_dict(load(path))
    model.eval()
    return model


# ----------------------------------------------------------------------------------- early stop

class EarlyStop:
    """The ASHA rule: rungs at epochs grace * eta**k; a trial reporting at a rung continues if
    its value is at least the (1 - 1/eta) quantile of the values reported there by the trials of
    its group (the scan), once there are at least eta of them. Non-finite values stop at once."""

    def __init__(self, grace=4, eta=3, enabled=True):
        self.grace, self.eta, self.enabled = int(grace), int(eta), bool(enabled)
        self.rungs = {}        # (group, rung epoch) -> {trial id: value}
        self.starts = {}       # trial id -> number of starts (attempts)

    def rung_of(self, epoch):
        r = self.grace
        last = None
        while r <= epoch:
            last = r
            r *= self.eta
        return last

    def started(self, trial_id):
        self.starts[trial_id] = self.starts.get(trial_id, 0) + 1
        return self.starts[trial_id]

    def report(self, trial_id, group, epoch, value):
        """True to go on, False to stop."""
        if not self.enabled:
            return True
        value = float(value)
        if not math.isfinite(value):
            return False
        rung = self.rung_of(int(epoch))
        if rung is None or rung != int(epoch):
            return True
        seen = self.rungs.setdefault((group, rung), {})
        seen[trial_id] = value
        if len(seen) < self.eta:
            return True
        cutoff = float(np.percentile(list(seen.values()), 100.0 * (1.0 - 1.0 / self.eta)))
        return value >= cutoff

    def record_curve(self, trial_id, group, curve):
        """Remember a finished trial's rung values (validation_curve[e] = after e epochs)."""
        for e, v in enumerate(curve or []):
            if e and self.rung_of(e) == e and v is not None and math.isfinite(float(v)):
                self.rungs.setdefault((group, e), {})[trial_id] = float(v)


class _Stopped(KeyboardInterrupt):
    """Raised from train_model's report callback: the loop stops and restores the best state."""


# ----------------------------------------------------------------------------------- one trial

def _empty_record(trial):
    rec = dict.fromkeys(RECORD_FIELDS)
    for k in ("id", "model", "args", "axes", "seed", "train", "data", "batch_size"):
        rec[k] = copy.deepcopy(trial[k])
    rec["host"] = socket.gethostname()
    rec["timing"] = {}
    return rec


def _measure_trial(trial, keeper, runner, device_default, early_stop=True):
    """Run one trial; returns (record, state dict bytes or None). Never raises for the trial's
    own errors (they go in the record); a lost worker simply never returns."""
    from .demo import TestSet, evaluate, load_loaders
    from .serialization import save
    from .trainers import train_model
    t_start = time.perf_counter()
    rec = _empty_record(trial)
    rec["runner"] = runner
    timing = rec["timing"]
    attempts = keeper("started", trial["id"]) if keeper else 1
    rec["attempts"] = attempts
    stopped = {"at": None}
    try:
        t = time.perf_counter()
        loaders, repeats = load_loaders(trial["data"], batch_size=trial["batch_size"], seed=trial["seed"])
        timing["load"] = time.perf_counter() - t
        t = time.perf_counter()
        model = build_trial_model(trial, loaders)
        timing["build"] = time.perf_counter() - t
        kw = {"verbose": False, "device": device_default}
        kw.update(trial["train"])
        if keeper is not None and early_stop:
            def report(epoch, value):
                if not keeper("report", trial["id"], trial["data"], epoch, value):
                    stopped["at"] = epoch
                    raise _Stopped()
            kw["report"] = report
        if device_default == "cuda" and "device" not in trial["train"]:
            from .trainers import resolve_device
            if resolve_device("cuda", verbose=False) == "cuda":
                model = model.cuda()
        t = time.perf_counter()
        _, output, _ = train_model(model, loaders, seed=trial["seed"], **kw)
        timing["train"] = time.perf_counter() - t
        if hasattr(model, "cpu"):       # evaluation and the state dict from host memory
            model = model.cpu()
        t = time.perf_counter()
        measures, _ = evaluate(model, TestSet(loaders, repeats))
        timing["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        buf = io.BytesIO()
        save(model.state_dict(), buf)
        blob = buf.getvalue()
        timing["serialize"] = time.perf_counter() - t
        for k in ("validation_corr", "test_corr", "corr_to_average", "fraction_oracle", "feve"):
            v = measures.get(k)
            rec[k] = float(v) if v is not None and math.isfinite(float(v)) else None
        # stopped before epoch k+1, train_model counts k+1 (the epoch it was entering)
        rec["epochs"] = stopped["at"] if stopped["at"] is not None else output.get("epochs")
        curve = output.get("correlation")
        rec["validation_curve"] = [float(c) for c in curve] if curve else None
        rec["seconds"] = timing["train"]
        rec["stopped_at"] = stopped["at"]
        rec["status"] = "stopped" if stopped["at"] is not None else "ok"
        rec["state_dict"] = os.path.join("trials", trial["id"] + ".pt")
    except Exception as e:  # noqa: BLE001 - a trial's failure is recorded, not fatal
        blob = None
        rec["status"] = "error"
        rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        rec["traceback"] = traceback.format_exc()[-4000:]
    timing["total"] = time.perf_counter() - t_start
    return rec, blob


def _ray_trial(trial, keeper_handle, runner, device_default, early_stop):
    """The Ray task: one trial, talking to the driver's early-stop actor."""
    import ray

    def keeper(method, *args):
        if keeper_handle is None:
            return 1 if method == "started" else True
        try:
            return ray.get(getattr(keeper_handle, method).remote(*args), timeout=60)
        except Exception:  # noqa: BLE001 - never stop (or fail) a trial for the bookkeeping
            return 1 if method == "started" else True
    def logged(method, *args):
        v = keeper(method, *args)
        if method == "started":   # in the worker's log (the node's logs/worker-*.out)
            print(f"lviv_c sweep: trial {trial['id']} started, attempt {v}", flush=True)
        return v
    return _measure_trial(trial, logged, runner, device_default, early_stop)


# ----------------------------------------------------------------------------------- files

def read_results(out):
    """The records of ``out/results.jsonl``, the last line of each trial id, in file order
    (a torn last line from a killed writer is skipped)."""
    path = os.path.join(os.fspath(out), "results.jsonl")
    latest = {}
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                latest.pop(rec["id"], None)
                latest[rec["id"]] = rec
    return list(latest.values())


def _append_line(path, rec):
    """Append one JSON line under an exclusive lock, as one write, fsync'ed; a torn last line
    left by a killed writer is ended first so the new line stands alone."""
    line = json.dumps(rec, sort_keys=True, default=_json_default).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _finish(out, rec, blob):
    """Write a trial's state dict (atomically), then its line in results.jsonl."""
    from ._files import atomic_write
    t = time.perf_counter()
    if blob is not None:
        atomic_write(os.path.join(out, rec["state_dict"]), blob)
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    timing = dict(rec.get("timing") or {})
    timing["write"] = time.perf_counter() - t
    rec["timing"] = timing
    _append_line(os.path.join(out, "results.jsonl"), rec)


def _done_ids(records, retry_failed=False):
    done = set()
    for r in records:
        st = r.get("status")
        if st in ("ok", "stopped") or (st == "error" and not retry_failed):
            done.add(r["id"])
    return done


# ----------------------------------------------------------------------------------- summary

def _fmt(v, f="{:.4f}"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    try:
        return f.format(v)
    except (TypeError, ValueError):
        return str(v)


def _axis_label(name, v):
    if name == "data":
        return os.path.basename(os.path.normpath(str(v)))
    return _fmt(v, "{:.4g}") if isinstance(v, float) else str(v)


def summary_table(records, top=10):
    """Text table of the ``top`` trials by validation correlation, and a count by status."""
    ok = [r for r in records if r.get("status") in ("ok", "stopped") and r.get("validation_corr") is not None]
    ok.sort(key=lambda r: -r["validation_corr"])
    axes = []
    for r in records:
        for a in r.get("axes") or {}:
            if a not in axes:
                axes.append(a)
    head = ["#", "trial", "status"] + axes + ["seed", "val corr", "test corr", "epochs", "s"]
    body = []
    for i, r in enumerate(ok[:top], 1):
        body.append([str(i), r["id"], r["status"]]
                    + [_axis_label(a, (r.get("axes") or {}).get(a)) for a in axes]
                    + [str(r["seed"]), _fmt(r["validation_corr"]), _fmt(r.get("test_corr")),
                       str(r.get("epochs")), _fmt(r.get("seconds"), "{:.1f}")])
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w[i]) for i, c in enumerate(row)) for row in [head] + body]
    lines.insert(1, "  ".join("-" * x for x in w))
    counts = {}
    for r in records:
        counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    lines.append("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=str)))
    errs = [r for r in records if r.get("status") in ("error", "lost")]
    for r in errs[:5]:
        lines.append(f"  {r['status']} {r['id']}: {r.get('error')}")
    return "\n".join(lines)


def plot_axes(records, path):
    """Validation correlation against each swept axis (and the seed when several), one panel per axis, to
    ``path``; stopped trials as crosses. Returns the path, or None without matplotlib or data."""
    ok = [r for r in records if r.get("status") in ("ok", "stopped") and r.get("validation_corr") is not None]
    if not ok:
        return None
    try:
        from .demo import _pyplot
        plt = _pyplot()
    except ImportError:
        return None
    axes = []
    for r in ok:
        for a in r.get("axes") or {}:
            if a not in axes:
                axes.append(a)
    if len({r["seed"] for r in ok}) > 1:
        axes.append("seed")
    if not axes:
        axes.append("trial")
    fig, panels = plt.subplots(1, len(axes), figsize=(3.6 * len(axes), 3.4), squeeze=False)
    for ax, name in zip(panels[0], axes):
        vals = [r["seed"] if name == "seed" else r["id"] if name == "trial"
                else (r.get("axes") or {}).get(name) for r in ok]
        ys = [r["validation_corr"] for r in ok]
        numeric = name not in ("seed", "trial") and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        if numeric:
            xs = [float(v) for v in vals]
            pos = [x for x in xs if x > 0]
            if len(pos) == len(xs) and max(xs) / min(xs) > 30:
                ax.set_xscale("log")
        else:
            cats = []
            for v in vals:
                lab = _axis_label(name, v)
                if lab not in cats:
                    cats.append(lab)
            xs = [cats.index(_axis_label(name, v)) for v in vals]
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, rotation=30, ha="right", fontsize=7)
        for st, marker in (("ok", "o"), ("stopped", "x")):
            sel = [i for i, r in enumerate(ok) if r["status"] == st]
            if sel:
                ax.scatter([xs[i] for i in sel], [ys[i] for i in sel], marker=marker, s=22,
                           alpha=0.8, label=st)
        ax.set_xlabel(name)
        ax.set_ylabel("validation correlation")
    if any(r["status"] == "stopped" for r in ok):
        panels[0][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    from ._files import atomic_write
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------------- the driver

def _ray_or_none(use_ray):
    if use_ray is False:
        return None
    try:
        import ray
    except ImportError:
        if use_ray:
            raise ConfigError("Ray was asked for but is not installed "
                              "(pip install 'lviv_c[distributed]')") from None
        return None
    return ray


def _package_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config, data=None, out="sweep", address=None, cpus_per_trial=1, gpus_per_trial=0,
        use_ray=None, workers=None, early_stop=None, max_retries=None, retry_failed=False,
        verbose=True):
    """Run a sweep; returns the records of every trial of the config (results.jsonl's last
    line per trial, in the config's order).

    ``config``: a dict or a JSON/YAML file (see the module docstring); ``data``: the scan
    (unless the config sweeps ``data``); ``out``: the folder of results.jsonl, trials/, the
    summary and the plot. ``address``: a Ray cluster ("HOST:PORT", or "auto") to join; None
    starts a local Ray instance with ``workers * cpus_per_trial`` CPUs (default: all). Each
    trial asks Ray for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (and trains on the
    GPU when it asks for one). ``use_ray``: None = Ray when installed, False = never (trials run
    one after another in this process, the same files), True = fail without it. ``workers``:
    most trials at once. ``early_stop`` / ``max_retries`` override the config's.
    ``retry_failed``: run again the trials recorded with status 'error'."""
    cfg = load_config(config)
    if early_stop is not None:
        cfg["early_stop"] = (dict(_DEFAULT_EARLY_STOP) if early_stop is True else
                             {**_DEFAULT_EARLY_STOP, **early_stop} if isinstance(early_stop, dict)
                             else False)
    if max_retries is not None:
        cfg["max_retries"] = int(max_retries)
    if data is not None:
        from .demo import check_scan
        check_scan(data)
    if cpus_per_trial is None or cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial: expected a number > 0, got {cpus_per_trial!r}")
    if gpus_per_trial is None or gpus_per_trial < 0:
        raise ConfigError(f"--gpus-per-trial: expected a number >= 0, got {gpus_per_trial!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: expected a whole number >= 1, got {workers!r}")
    trials = expand(cfg, data)
    out = os.path.abspath(os.fspath(out))
    os.makedirs(os.path.join(out, "trials"), exist_ok=True)
    from ._files import atomic_write
    atomic_write(os.path.join(out, "config.json"), json.dumps(cfg, indent=1, sort_keys=True))
    previous = read_results(out)
    done = _done_ids(previous, retry_failed)
    todo = [t for t in trials if t["id"] not in done]
    n_done = len(trials) - len(todo)
    if verbose and n_done:
        _say(f"{n_done} of {len(trials)} trials already finished in {out}; running the other "
             f"{len(todo)}")
    keeper = EarlyStop(**cfg["early_stop"]) if cfg["early_stop"] else EarlyStop(enabled=False)
    if keeper.enabled:
        for r in previous:
            keeper.record_curve(r["id"], r.get("data"), r.get("validation_curve"))
    device = "cuda" if gpus_per_trial else "cpu"
    ray = _ray_or_none(use_ray) if todo else None
    if todo and ray is None:
        if verbose:
            why = "disabled" if use_ray is False else "not installed (pip install 'lviv_c[distributed]')"
            _say(f"Ray {why}: running the {len(todo)} trials one after another in this process")
        _run_local(todo, out, keeper, device, verbose)
    elif todo:
        _run_ray(ray, todo, out, keeper, cfg, address, cpus_per_trial, gpus_per_trial, workers,
                 device, verbose)
    by_id = {r["id"]: r for r in read_results(out)}
    records = [by_id[t["id"]] for t in trials if t["id"] in by_id]
    table = summary_table(records)
    atomic_write(os.path.join(out, "summary.txt"), table + "\n")
    plot_axes(records, os.path.join(out, "validation_vs_axes.png"))
    if verbose:
        print(table)
    return records


def _progress_line(rec, k, n):
    what = rec["status"]
    if rec["status"] in ("ok", "stopped"):
        what += f", val corr {_fmt(rec['validation_corr'])}, {rec['epochs']} epochs"
    else:
        what += f": {rec.get('error')}"
    return f"[{k}/{n}] trial {rec['id']} ({rec['model']}, seed {rec['seed']}): {what}"


def _run_local(todo, out, keeper, device, verbose):
    import signal
    import threading

    def call(method, *args):
        return getattr(keeper, method)(*args)
    # train_model takes Ctrl-C as "stop training, keep the best state"; in a sweep it means
    # stop the sweep, and the interrupted trial must not be recorded as finished
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        for k, trial in enumerate(todo, 1):
            rec, blob = _measure_trial(trial, call, "local", device, keeper.enabled)
            if interrupted:
                raise KeyboardInterrupt
            _finish(out, rec, blob)
            if verbose:
                _say(_progress_line(rec, k, len(todo)))
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _run_ray(ray, todo, out, keeper, cfg, address, cpus, gpus, workers, device, verbose):
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in [_package_root(), os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)}
    init = {"runtime_env": {"env_vars": env}, "configure_logging": False, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, **init)
        else:
            n_cpus = int(math.ceil(workers * cpus)) if workers else None
            ray.init(num_cpus=n_cpus, include_dashboard=False, **init)
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    if verbose:
        _say(f"running {len(todo)} trials on {where} ({cpus} CPU, {gpus} GPU per trial)")
    try:
        # the early-stop rule and attempt counter live on the head node (whose loss ends the
        # cluster anyway), else on the driver's; restarted empty if their node dies
        actor = ray.remote(num_cpus=0, max_restarts=-1)(_KeeperActor)
        head = "node:__internal_head__"
        if head in ray.cluster_resources():
            actor = actor.options(resources={head: 0.001})
        else:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            actor = actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=True))
        handle = actor.remote(keeper)
        task = ray.remote(_ray_trial).options(num_cpus=cpus, num_gpus=gpus,
                                              max_retries=cfg["max_retries"], retry_exceptions=False)
        queue = list(todo)
        pending = {}
        k = 0
        while queue or pending:
            while queue and (workers is None or len(pending) < workers):
                t = queue.pop(0)
                pending[task.remote(t, handle, "ray", device, keeper.enabled)] = t
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            for ref in ready:
                trial = pending.pop(ref)
                try:
                    rec, blob = ray.get(ref)
                except ray.exceptions.RayError as e:
                    rec, blob = _empty_record(trial), None
                    rec.update(status="lost", runner="ray", attempts=cfg["max_retries"] + 1,
                               error=f"{type(e).__name__}: {str(e).splitlines()[0][:400]}")
                _finish(out, rec, blob)
                k += 1
                if verbose:
                    _say(_progress_line(rec, k, len(todo)))
    finally:
        if started_here:
            ray.shutdown()


class _KeeperActor:
    """The early-stop rule (and the attempt counter) as a Ray actor shared by the trials."""

    def __init__(self, keeper):
        self.keeper = keeper

    def started(self, trial_id):
        return self.keeper.started(trial_id)

    def report(self, trial_id, group, epoch, value):
        return self.keeper.report(trial_id, group, epoch, value)


# ----------------------------------------------------------------------------------- ensembles

def ensemble(out, top=5, data=None, write=True, verbose=True):
    """The Ensemble of the ``top`` best finished trials of the sweep in ``out`` (by validation
    correlation, among the trials on scan ``data`` when given and recorded), evaluated on the
    test tier. Writes ``out/ensemble-top<K>.pt`` (its state dict) and ``.json`` (members and
    measures). Returns (ensemble, report dict)."""
    from .demo import TestSet, evaluate, load_loaders
    from .models import Ensemble
    from ._files import atomic_write
    from .serialization import save
    out = os.fspath(out)
    records = [r for r in read_results(out) if r.get("status") in ("ok", "stopped")
               and r.get("validation_corr") is not None and r.get("state_dict")]
    if not records:
        raise ConfigError(f"{out}: no finished trials with a state dict (is it a sweep folder "
                          "with results.jsonl?)")
    if top < 1:
        raise ConfigError(f"--top: expected a whole number >= 1, got {top}")
    if data is not None:
        same = [r for r in records if os.path.abspath(r["data"]) == os.path.abspath(data)]
        records = same or records
    scans = sorted({r["data"] for r in records})
    if len(scans) > 1:
        raise ConfigError(f"{out}: the sweep covers {len(scans)} scans; pass --data to pick one "
                          f"of {', '.join(scans)}")
    scan = data if data is not None else scans[0]
    records.sort(key=lambda r: -r["validation_corr"])
    chosen = records[:top]
    bs = chosen[0].get("batch_size") or 30
    loaders, repeats = load_loaders(scan, batch_size=bs)
    testset = TestSet(loaders, repeats)
    members, rows = [], []
    for r in chosen:
        m = load_trial_model(r, loaders, out)
        meas, _ = evaluate(m, testset)
        members.append(m)
        rows.append({"id": r["id"], "seed": r["seed"], "axes": r.get("axes"),
                     **{k: float(meas[k]) for k in ("validation_corr", "test_corr")}})
    ens = Ensemble(members)
    ens.eval()
    measures, _ = evaluate(ens, testset)
    report = {"members": rows, "data": os.path.abspath(scan), "top": top,
              "ensemble": {k: (float(v) if v is not None and math.isfinite(float(v)) else None)
                           for k, v in measures.items()}}
    if write:
        buf = io.BytesIO()
        save(ens.state_dict(), buf)
        base = os.path.join(out, f"ensemble-top{len(chosen)}")
        atomic_write(base + ".pt", buf.getvalue())
        report["state_dict"] = os.path.basename(base + ".pt")
        atomic_write(base + ".json", json.dumps(report, indent=1, sort_keys=True))
    if verbose:
        w = max(len(x["id"]) for x in rows)
        print(f"{'member'.ljust(w + 10)}  val corr  test corr")
        for x in rows:
            print(f"{x['id']} (seed {x['seed']})".ljust(w + 10)
                  + f"  {x['validation_corr']:8.4f}  {x['test_corr']:9.4f}")
        e = report["ensemble"]
        print(f"{('ensemble of ' + str(len(rows))).ljust(w + 10)}  {_fmt(e['validation_corr']):>8}  "
              f"{_fmt(e['test_corr']):>9}")
        if write:
            print(f"wrote {base}.pt and {base}.json")
    return ens, report


def load_ensemble(path, loaders=None):
    """An ensemble written by ``ensemble`` (its .json or .pt path): members rebuilt from the
    sweep's records, weights loaded. ``loaders`` default to the recorded scan's."""
    from .demo import load_loaders
    from .models import Ensemble
    from .serialization import load
    base = os.path.splitext(os.fspath(path))[0]
    with open(base + ".json") as fh:
        report = json.load(fh)
    out = os.path.dirname(os.path.abspath(base))
    by_id = {r["id"]: r for r in read_results(out)}
    members_rec = [by_id[m["id"]] for m in report["members"]]
    if loaders is None:
        loaders, _ = load_loaders(report["data"], batch_size=members_rec[0].get("batch_size") or 30)
    ens = Ensemble([build_trial_model(r, loaders) for r in members_rec])
    ens.load_state_dict(load(base + ".pt"))
    ens.eval()
    return ens


# ----------------------------------------------------------------------------------- command line

def add_parsers(sub, add_data):
    """The ``sweep`` and ``ensemble`` subcommands of ``lviv-c``."""
    p = sub.add_parser(
        "sweep", help="run a hyperparameter / seed / scan sweep (on Ray when installed)",
        description="Expand CONFIG (JSON or YAML: model, args, grid, random, seeds, train) into "
                    "trials, train each with train_model as a Ray task (or one after another in "
                    "this process without Ray), and write DIR/results.jsonl, DIR/trials/<id>.pt, "
                    "DIR/summary.txt and DIR/validation_vs_axes.png. Running it again skips the "
                    "finished trials.")
    p.add_argument("config", metavar="CONFIG", help="sweep config (.json, .yaml)")
    add_data(p)
    p.add_argument("--out", default="sweep", metavar="DIR", help="output folder (default: sweep)")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="join this Ray cluster ('auto': the one on this machine); default: start "
                        "a local Ray instance")
    p.add_argument("--cpus-per-trial", type=float, default=1, metavar="N",
                   help="CPUs Ray reserves for each trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, metavar="G",
                   help="GPUs per trial (default 0); with G > 0 the trial trains on the GPU")
    p.add_argument("--workers", type=int, metavar="N",
                   help="at most N trials at once (default: as many as the resources allow)")
    p.add_argument("--no-ray", action="store_true",
                   help="run the trials one after another in this process even if Ray is installed")
    p.add_argument("--no-early-stop", action="store_true",
                   help="train every trial to its end (no ASHA early termination)")
    p.add_argument("--max-retries", type=int, metavar="N",
                   help="retries of a trial whose worker died (default: the config's, else 2)")
    p.add_argument("--retry-failed", action="store_true",
                   help="also run again the trials recorded with status 'error'")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser(
        "ensemble", help="average the K best trials of a sweep and evaluate on the test tier",
        description="Build an Ensemble of the K best finished trials of the sweep in DIR (by "
                    "validation correlation), evaluate it and its members on the test tier and "
                    "write DIR/ensemble-top<K>.pt and .json.")
    e.add_argument("sweep_dir", metavar="DIR", help="a sweep's output folder")
    e.add_argument("--top", type=int, default=5, metavar="K", help="number of members (default 5)")
    e.add_argument("--data", metavar="PATH",
                   help="the scan (default: the one recorded in the sweep)")


def cli_sweep(args, data):
    """``lviv-c sweep`` with the scan already resolved (None when the config sweeps it)."""
    run(args.config, data=data, out=args.out, address=args.address,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        use_ray=False if args.no_ray else None, workers=args.workers,
        early_stop=False if args.no_early_stop else None, max_retries=args.max_retries,
        retry_failed=args.retry_failed, verbose=not args.quiet)
    return 0


def cli_ensemble(args):
    if not os.path.isdir(args.sweep_dir):
        raise ConfigError(f"{args.sweep_dir}: no such folder; expected a sweep's output folder")
    if args.data is not None:
        from .demo import check_scan
        check_scan(args.data)
    ensemble(args.sweep_dir, top=args.top, data=args.data)
    return 0


def sweeps_data(config):
    """True when the config sweeps the scan (then the CLI's --data must be absent)."""
    return "data" in load_config(config)["grid"]
