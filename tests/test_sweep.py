"""lviv_c.sweep without Ray (trials one after another in this process): config, expansion,
the files, resuming, failures, early termination, the command line. The Ray cluster tests are
in test_sweep_ray.py."""
import json
import os
import sys

import pytest

from lviv_c import sweep, synthetic
from lviv_c.cli import main

CFG = {"model": "ln", "grid": {"gamma": [0.01, 0.1]}, "seeds": [1, 2],
       "train": {"max_iter": 2}, "early_stop": False}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return synthetic.make_scan(str(tmp_path_factory.mktemp("scan")), progress=False, **synthetic.SMALL)


def _lines(out):
    with open(os.path.join(out, "results.jsonl")) as fh:
        return [json.loads(x) for x in fh if x.strip()]


# ------------------------------------------------------------------------------ config

@pytest.mark.parametrize("cfg, key", [
    ({"model": "resnet"}, "model"),
    ({"model": "ln", "grdi": {}}, "grdi"),
    ({"model": "ln", "grid": {"gamma": 0.1}}, "grid.gamma"),
    ({"model": "ln", "grid": {"gamma": []}}, "grid.gamma"),
    ({"model": "ln", "random": {"n": 0, "axes": {"gamma": [0, 1]}}}, "random.n"),
    ({"model": "ln", "random": {"n": 2, "axes": {"gamma": [1, 0]}}}, "random.axes.gamma"),
    ({"model": "ln", "random": {"n": 2, "axes": {"gamma": {"loguniform": [0, 1]}}}}, "random.axes.gamma"),
    ({"model": "ln", "seeds": [1, 1]}, "seeds"),
    ({"model": "ln", "seeds": []}, "seeds"),
    ({"model": "ln", "train": {"max_iterations": 3}}, "train.max_iterations"),
    ({"model": "ln", "grid": {"train.lr": [0.1]}}, "train.lr"),
    ({"model": "ln", "early_stop": {"eta": 1}}, "early_stop"),
    ({"model": "ln", "batch_size": 0}, "batch_size"),
])
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(sweep.ConfigError, match=key.replace(".", r"\.")):
        sweep.load_config(cfg)


def test_config_file_errors(tmp_path):
    with pytest.raises(sweep.ConfigError, match="no such file"):
        sweep.load_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{model: ln")
    with pytest.raises(sweep.ConfigError, match="bad.json: not valid JSON"):
        sweep.load_config(str(bad))
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(sweep.ConfigError, match="expected a mapping"):
        sweep.load_config(str(lst))


def test_expand_the_issue_example(tmp_path, scan):
    cfg = {"model": "lurz", "args": {"hidden_channels": 64},
           "grid": {"gamma_readout": [1.0, 2.439]},
           "random": {"n": 4, "seed": 0, "axes": {"init_sigma": [0.1, 0.6]}},
           "seeds": [1, 2, 3], "train": {"max_iter": 100}}
    trials = sweep.expand(cfg, scan)
    assert len(trials) == 2 * 4 * 3
    assert len({t["id"] for t in trials}) == len(trials)
    sig = sorted({t["args"]["init_sigma"] for t in trials})
    assert len(sig) == 4 and all(0.1 <= s <= 0.6 for s in sig)
    assert all(t["args"]["hidden_channels"] == 64 and t["train"] == {"max_iter": 100} for t in trials)
    assert sorted({(t["args"]["gamma_readout"], t["seed"]) for t in trials}) == sorted(
        (g, s) for g in (1.0, 2.439) for s in (1, 2, 3))
    # the draws and ids are reproducible; another random seed draws other values
    assert [t["id"] for t in sweep.expand(cfg, scan)] == [t["id"] for t in trials]
    other = dict(cfg, random={"n": 4, "seed": 1, "axes": {"init_sigma": [0.1, 0.6]}})
    assert sorted({t["args"]["init_sigma"] for t in sweep.expand(other, scan)}) != sig
    # the same config as JSON and as YAML files
    pytest.importorskip("yaml")
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    (tmp_path / "c.yaml").write_text(
        "model: lurz\nargs: {hidden_channels: 64}\ngrid:\n  gamma_readout: [1.0, 2.439]\n"
        "random:\n  n: 4\n  seed: 0\n  axes: {init_sigma: [0.1, 0.6]}\nseeds: [1, 2, 3]\n"
        "train: {max_iter: 100}\n")
    ids = [t["id"] for t in trials]
    assert [t["id"] for t in sweep.expand(str(tmp_path / "c.json"), scan)] == ids
    assert [t["id"] for t in sweep.expand(str(tmp_path / "c.yaml"), scan)] == ids


def test_expand_special_axes(scan):
    cfg = {"model": "ln", "grid": {"train.lr_init": [0.01, 0.001], "batch_size": [16],
                                   "data": [scan, scan + "-other"]},
           "random": {"n": 3, "seed": 5, "axes": {"gamma": {"loguniform": [1e-3, 1.0]},
                                                  "init_std": {"choice": [1e-3, 1e-2]}}}}
    trials = sweep.expand(cfg)
    assert len(trials) == 2 * 2 * 3
    assert {t["train"]["lr_init"] for t in trials} == {0.01, 0.001}
    assert {t["batch_size"] for t in trials} == {16}
    assert {t["data"] for t in trials} == {os.path.abspath(scan), os.path.abspath(scan + "-other")}
    assert all(1e-3 <= t["args"]["gamma"] <= 1.0 and t["args"]["init_std"] in (1e-3, 1e-2)
               for t in trials)
    with pytest.raises(sweep.ConfigError, match="--data"):
        sweep.expand(cfg, scan)
    with pytest.raises(sweep.ConfigError, match="--data"):
        sweep.expand({"model": "ln"})


# ------------------------------------------------------------------------------ early stop

def test_early_stop_rule():
    es = sweep.EarlyStop(grace=2, eta=2)
    assert [es.rung_of(e) for e in (1, 2, 3, 4, 7, 8)] == [None, 2, 2, 4, 4, 8]
    assert es.report("a", "s", 1, 0.0)            # not a rung
    assert es.report("a", "s", 2, 0.30)           # first at the rung: too few to judge
    assert not es.report("b", "s", 2, 0.10)       # below the median of {0.30, 0.10}
    assert es.report("c", "s", 2, 0.40)           # above the median of three
    assert es.report("d", "t", 2, 0.01)           # another scan is another group
    assert not es.report("e", "s", 3, float("nan"))
    assert es.started("a") == 1 and es.started("a") == 2
    off = sweep.EarlyStop(enabled=False)
    assert off.report("x", "s", 4, 0.0) and off.report("y", "s", 4, -1.0)
    es.record_curve("z", "u", [0.0, 0.1, 0.5, 0.6])   # after 0..3 epochs: rung 2 = 0.5
    assert es.rungs[("u", 2)] == {"z": 0.5}


def test_early_stop_in_a_sweep(tmp_path, scan):
    cfg = {"model": "ln", "grid": {"train.lr_init": [0.005, 1e-12]}, "seeds": [1],
           "train": {"max_iter": 5, "patience": 10}, "early_stop": {"grace": 2, "eta": 2}}
    recs = sweep.run(cfg, data=scan, out=str(tmp_path / "s"), use_ray=False, verbose=False)
    good, bad = recs
    assert good["status"] == "ok" and good["epochs"] == 5
    assert bad["status"] == "stopped" and bad["stopped_at"] == 2 and bad["epochs"] == 2
    assert bad["validation_corr"] < good["validation_corr"]
    assert os.path.isfile(tmp_path / "s" / bad["state_dict"])
    off = sweep.run(cfg, data=scan, out=str(tmp_path / "off"), use_ray=False, verbose=False,
                    early_stop=False)
    assert [r["status"] for r in off] == ["ok", "ok"] and off[1]["epochs"] == 5


# ------------------------------------------------------------------------------ the files

def test_local_sweep_files_resume(tmp_path, scan, capsys):
    out = str(tmp_path / "sweep")
    recs = sweep.run(CFG, data=scan, out=out, use_ray=False)
    err = capsys.readouterr().err
    assert err.count("one after another in this process") == 1
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    lines = _lines(out)
    assert len(lines) == 4
    assert all(set(r) == set(sweep.RECORD_FIELDS) for r in lines)
    assert {(r["args"]["gamma"], r["seed"]) for r in lines} == {(g, s) for g in (0.01, 0.1) for s in (1, 2)}
    for r in lines:
        assert r["runner"] == "local" and r["attempts"] == 1 and r["epochs"] == 2
        assert r["state_dict"] == f"trials/{r['id']}.pt"
        assert -1 <= r["validation_corr"] <= 1 and -1 <= r["test_corr"] <= 1
        assert r["seconds"] > 0 and r["timing"]["load"] > 0 and r["timing"]["write"] >= 0
        assert len(r["validation_curve"]) == 2
    # the saved weights reproduce the recorded validation correlation
    from lviv_c import demo
    loaders, repeats = demo.load_loaders(scan)
    m = sweep.load_trial_model(lines[0], loaders, out)
    meas, _ = demo.evaluate(m, demo.TestSet(loaders, repeats))
    assert meas["validation_corr"] == pytest.approx(lines[0]["validation_corr"], abs=1e-5)
    assert os.path.getsize(os.path.join(out, "validation_vs_axes.png")) > 1000
    summary = open(os.path.join(out, "summary.txt")).read()
    assert "gamma" in summary and "4 ok" in summary and lines[0]["id"] in summary

    # a second run finds everything finished and runs nothing
    before = open(os.path.join(out, "results.jsonl"), "rb").read()
    sweep.run(CFG, data=scan, out=out, use_ray=False, verbose=False)
    assert open(os.path.join(out, "results.jsonl"), "rb").read() == before

    # a driver killed after two trials, in the middle of writing the third line
    raw = before.splitlines(keepends=True)
    with open(os.path.join(out, "results.jsonl"), "wb") as fh:
        fh.write(b"".join(raw[:2]) + raw[2][:25])
    recs = sweep.run(CFG, data=scan, out=out, use_ray=False, verbose=False)
    after = open(os.path.join(out, "results.jsonl"), "rb").read().splitlines()
    assert after[:2] == [x.rstrip(b"\n") for x in raw[:2]]
    assert after[2] == raw[2][:25]                  # the torn line stays, ignored
    rerun = [json.loads(x) for x in after[3:]]
    assert sorted(r["id"] for r in rerun) == sorted(json.loads(x)["id"] for x in raw[2:])
    assert [r["id"] for r in sweep.read_results(out)] == [json.loads(x)["id"] for x in raw[:2]] + \
        [r["id"] for r in rerun]
    # the same seed and configuration give the same fit
    first = {json.loads(x)["id"]: json.loads(x) for x in raw}
    for r in rerun:
        assert r["validation_corr"] == pytest.approx(first[r["id"]]["validation_corr"], abs=1e-6)


def test_failing_trial_is_recorded(tmp_path, scan):
    missing = str(tmp_path / "no-such-scan")
    cfg = {"model": "ln", "grid": {"data": [scan, missing]}, "seeds": [1],
           "train": {"max_iter": 1}, "early_stop": False}
    out = str(tmp_path / "s")
    recs = sweep.run(cfg, out=out, use_ray=False, verbose=False)
    ok, err = recs
    assert ok["status"] == "ok" and err["status"] == "error"
    assert "no-such-scan" in err["error"] and "Traceback" in err["traceback"]
    assert err["state_dict"] is None and err["validation_corr"] is None
    assert set(err) == set(sweep.RECORD_FIELDS)
    assert not os.path.exists(os.path.join(out, "trials", err["id"] + ".pt"))
    assert "1 error" in open(os.path.join(out, "summary.txt")).read()
    # a failure is final unless asked to retry it
    sweep.run(cfg, out=out, use_ray=False, verbose=False)
    assert len(_lines(out)) == 2
    sweep.run(cfg, out=out, use_ray=False, verbose=False, retry_failed=True)
    lines = _lines(out)
    assert len(lines) == 3 and lines[2]["id"] == err["id"] and lines[2]["status"] == "error"


def test_module_function_builder(tmp_path, scan, monkeypatch):
    (tmp_path / "my_builders.py").write_text(
        "from lviv_c.course import Linear\n"
        "def tiny_ln(dataloaders, seed, gamma=0.0, scale=1.0):\n"
        "    x, y = next(iter(dataloaders['train']))[:2]\n"
        "    m = Linear(x.shape[2], x.shape[3], y.shape[1], gamma=gamma)\n"
        "    m.built_with = (seed, scale)\n"
        "    return m\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"model": "my_builders:tiny_ln", "args": {"scale": 2.0}, "grid": {"gamma": [0.0, 0.5]},
           "seeds": [3], "train": {"max_iter": 1}, "early_stop": False}
    recs = sweep.run(cfg, data=scan, out=str(tmp_path / "s"), use_ray=False, verbose=False)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    from lviv_c.demo import load_loaders
    m = sweep.build_trial_model(recs[1], load_loaders(scan)[0])
    assert m.built_with == (3, 2.0) and m.gamma == 0.5
    bad = dict(cfg, model="my_builders:nothing")
    recs = sweep.run(bad, data=scan, out=str(tmp_path / "b"), use_ray=False, verbose=False)
    assert recs[0]["status"] == "error" and "no function 'nothing'" in recs[0]["error"]


# ------------------------------------------------------------------------------ command line

def test_cli_sweep_and_ensemble(tmp_path, scan, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG))
    out = str(tmp_path / "sweep")
    assert main(["sweep", str(cfg), "--data", scan, "--out", out, "--no-ray"]) == 0
    printed = capsys.readouterr().out
    assert "val corr" in printed and "4 ok" in printed
    assert len(_lines(out)) == 4
    assert main(["ensemble", out, "--top", "3", "--data", scan]) == 0
    printed = capsys.readouterr().out
    assert "ensemble of 3" in printed
    rep = json.load(open(os.path.join(out, "ensemble-top3.json")))
    best3 = sorted(_lines(out), key=lambda r: -r["validation_corr"])[:3]
    assert [m["id"] for m in rep["members"]] == [r["id"] for r in best3]
    ens = sweep.load_ensemble(os.path.join(out, "ensemble-top3.json"))
    from lviv_c import demo
    meas, _ = demo.evaluate(ens, demo.TestSet(*demo.load_loaders(scan)))
    assert meas["test_corr"] == pytest.approx(rep["ensemble"]["test_corr"], abs=1e-6)


@pytest.mark.parametrize("argv, msg", [
    (["sweep", "{cfg}", "--data", "{tmp}/nowhere", "--no-ray"], "nowhere: no such folder"),
    (["sweep", "{tmp}/none.json", "--data", "{scan}", "--no-ray"], "none.json: no such file"),
    (["sweep", "{bad}", "--data", "{scan}", "--no-ray"], "model"),
    (["ensemble", "{tmp}", "--top", "2"], "no finished trials"),
    (["ensemble", "{tmp}/nowhere"], "no such folder"),
])
def test_cli_errors(tmp_path, scan, capsys, argv, msg):
    (tmp_path / "cfg.json").write_text(json.dumps(CFG))
    (tmp_path / "bad.json").write_text(json.dumps({"model": "resnet"}))
    fill = {"cfg": str(tmp_path / "cfg.json"), "bad": str(tmp_path / "bad.json"),
            "tmp": str(tmp_path), "scan": scan}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_ray_demanded_but_missing(monkeypatch, tmp_path, scan):
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray -> ImportError
    with pytest.raises(sweep.ConfigError, match="not installed"):
        sweep.run(CFG, data=scan, out=str(tmp_path / "s"), use_ray=True, verbose=False)


def test_without_ray_installed_runs_in_process(monkeypatch, tmp_path, scan, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    recs = sweep.run(dict(CFG, seeds=[1]), data=scan, out=str(tmp_path / "s"))
    assert [r["runner"] for r in recs] == ["local", "local"]
    assert capsys.readouterr().err.count("Ray not installed") == 1


def test_ctrl_c_stops_the_sweep_without_recording_the_trial(tmp_path, scan, monkeypatch):
    """train_model alone takes Ctrl-C as "stop, keep the best state"; a sweep must not record
    the cut-short trial as finished, and must stop."""
    import signal
    (tmp_path / "int_builders.py").write_text(
        "import os, signal\n"
        "from lviv_c.course import Linear\n"
        "def interrupting_ln(dataloaders, seed):\n"
        "    x, y = next(iter(dataloaders['train']))[:2]\n"
        "    m = Linear(x.shape[2], x.shape[3], y.shape[1], gamma=0.1)\n"
        "    calls, reg = [0], m.regularizer\n"
        "    def regularizer():\n"
        "        calls[0] += 1\n"
        "        if calls[0] == 3:\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return reg()\n"
        "    m.regularizer = regularizer\n"
        "    return m\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"model": "int_builders:interrupting_ln", "seeds": [1, 2],
           "train": {"max_iter": 3, "capture": False}, "early_stop": False}
    out = str(tmp_path / "s")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(cfg, data=scan, out=out, use_ray=False, verbose=False)
    assert sweep.read_results(out) == []
    assert signal.getsignal(signal.SIGINT) is before


def test_the_scan_as_an_axis(tmp_path, scan):
    other = synthetic.make_scan(str(tmp_path / "other"), seed=1, progress=False,
                                **dict(synthetic.SMALL, n_neurons=30))
    cfg = {"model": "ln", "grid": {"data": [scan, other]}, "seeds": [1, 2],
           "train": {"max_iter": 1}, "early_stop": False}
    out = str(tmp_path / "s")
    recs = sweep.run(cfg, out=out, use_ray=False, verbose=False)
    assert [r["status"] for r in recs] == ["ok"] * 4
    assert sorted({r["data"] for r in recs}) == sorted({os.path.abspath(scan), os.path.abspath(other)})
    from lviv_c.serialization import load
    shapes = {r["data"]: load(os.path.join(out, r["state_dict"]))["linear.weight"].shape for r in recs}
    assert shapes[os.path.abspath(other)][0] == 30 and shapes[os.path.abspath(scan)][0] == 50
    with pytest.raises(sweep.ConfigError, match="covers 2 scans"):
        sweep.ensemble(out, top=2, verbose=False)
    ens, rep = sweep.ensemble(out, top=5, data=other, verbose=False)
    assert len(ens) == 2 and rep["data"] == os.path.abspath(other)
    assert {m["id"] for m in rep["members"]} == {r["id"] for r in recs if r["data"] == os.path.abspath(other)}


def test_train_model_report_hook(scan):
    """train_model(report=fn): fn(epochs trained, validation correlation) before each next
    epoch, the values the loop's tracker records."""
    from lviv_c import demo
    from lviv_c.trainers import train_model
    loaders, _ = demo.load_loaders(scan)
    seen = []
    model = demo.build_model("ln", loaders, seed=1)
    _, out, _ = train_model(model, loaders, seed=1, max_iter=3, patience=10, verbose=False,
                            device="cpu", report=lambda e, v: seen.append((e, v)))
    assert [e for e, _ in seen] == [1, 2]
    assert [v for _, v in seen] == pytest.approx(out["correlation"][1:3], abs=1e-9)
