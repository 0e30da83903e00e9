"""Command line (python -m lviv_c / lviv-c): help texts, one-line errors with exit status 2,
synthesize -> load_dataset, train -> state dict -> evaluate reproduces the score."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None, env=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("LVIV_DATA", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "lviv_c", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=600)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from lviv_c import synthetic
    return synthetic.make_scan(str(tmp_path_factory.mktemp("cli")), **synthetic.SMALL, seed=3,
                               progress=False)


@pytest.mark.parametrize("cmd,expect", [
    ([], ["demo", "train", "evaluate", "synthesize"]),
    (["demo"], ["--data", "--quick", "--out", "--max-iter", "--batch-size", "--seed", "--models"]),
    (["train"], ["--data", "--model", "--batch-size", "--max-iter", "--seed", "--out",
                 "lurz-linear", "simple-cnn"]),
    (["evaluate"], ["--data", "--model", "--weights", "--batch-size"]),
    (["synthesize"], ["OUT_DIR", "--small", "--n-trials", "--n-neurons", "--seed"]),
])
def test_help(cmd, expect):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    for word in expect:
        assert word in r.stdout, (word, r.stdout)


def test_no_command_prints_help_and_fails():
    r = run()
    assert r.returncode == 2
    assert "train" in r.stdout


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_missing_data_path(tmp_path):
    missing = str(tmp_path / "no_such_scan")
    r = run("train", "--data", missing, "--model", "ln")
    _one_line_error(r, missing, "no such folder", "config.json")


def test_folder_that_is_not_a_scan(tmp_path):
    (tmp_path / "data").mkdir()
    r = run("evaluate", "--data", str(tmp_path), "--model", "ln", "--weights", "x.pt")
    _one_line_error(r, str(tmp_path), "not a scan folder", "expected")


def test_parent_of_a_scan_names_the_scan(scan):
    parent = os.path.dirname(scan)
    r = run("train", "--data", parent, "--model", "ln")
    _one_line_error(r, parent, os.path.basename(scan))


def test_data_path_from_environment_is_checked(tmp_path):
    r = run("demo", "--quiet", env={"LVIV_DATA": str(tmp_path / "nope")})
    _one_line_error(r, str(tmp_path / "nope"))


def test_unknown_model_is_a_usage_error(scan):
    r = run("train", "--data", scan, "--model", "resnet")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--model" in r.stderr


def test_synthesize_writes_a_scan_load_dataset_reads(tmp_path):
    r = run("synthesize", str(tmp_path), "--small", "--n-trials", "240", "--n-neurons", "30",
            "--seed", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isfile(os.path.join(path, "config.json"))
    from lviv_c.dataset import load_dataset
    loaders = load_dataset(path, batch_size=16)
    n = sum(len(loaders[t].sampler) for t in ("train", "validation", "test"))
    assert n == 240
    images, responses = next(iter(loaders["train"]))
    assert tuple(images.shape) == (16, 1, 36, 64) and tuple(responses.shape) == (16, 30)
    # refuses to overwrite without --overwrite, with a one-line error
    r2 = run("synthesize", str(tmp_path), "--small", "--quiet")
    _one_line_error(r2, "exists")


def test_train_then_evaluate_reproduces_the_score(scan, tmp_path):
    weights = str(tmp_path / "w" / "ln.pt")
    r = run("train", "--data", scan, "--model", "ln", "--max-iter", "2", "--batch-size", "32",
            "--out", weights, "--quiet")
    assert r.returncode == 0, r.stderr
    trained_line = [ln for ln in r.stdout.splitlines() if "test corr" in ln]
    assert len(trained_line) == 1 and os.path.isfile(weights)
    from lviv_c.serialization import load
    state = load(weights)
    assert state["linear.weight"].shape == (50, 36 * 64)
    assert {"bn.running_mean", "bn.running_var", "linear.bias"} <= set(state)

    r = run("evaluate", "--data", scan, "--model", "ln", "--weights", weights)
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stdout.splitlines() if "test corr" in ln] == trained_line

    r = run("evaluate", "--data", scan, "--model", "ln", "--weights", weights, "--json")
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(m) >= {"validation_corr", "test_corr", "corr_to_average", "fraction_oracle", "feve"}
    assert f"test corr {m['test_corr']:.4f}" in trained_line[0]
    assert np.isfinite(m["test_corr"])

    # weights of another model: one line naming the file
    r = run("evaluate", "--data", scan, "--model", "simple-cnn", "--weights", weights)
    _one_line_error(r, weights, "simple-cnn")
    r = run("evaluate", "--data", scan, "--model", "ln", "--weights", str(tmp_path / "none.pt"))
    _one_line_error(r, "none.pt", "no such file")


@pytest.mark.parametrize("args,words", [(["--budget", "-1"], ["--budget", "minutes >= 0"]),
                                        (["--budget", "5", "--max-iter", "2"], ["--budget", "--max-iter"])])
def test_demo_budget_errors(scan, args, words):
    _one_line_error(run("demo", "--data", scan, *args), *words)
