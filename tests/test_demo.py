"""The demo pipeline (lviv_c.demo.run_demo) on a tiny synthetic scan: every model trained and
evaluated, results.json with all columns, the figures, the ground-truth ceiling; data-path
resolution and checks; the course model classes."""
import json
import os

import numpy as np
import pytest

from lviv_c import demo

COLUMNS = ("validation_corr", "test_corr", "corr_to_average", "fraction_oracle", "feve",
           "epochs", "seconds_per_epoch", "device", "gt_ceiling", "fraction_of_ceiling")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from lviv_c import synthetic
    return synthetic.make_scan(str(tmp_path_factory.mktemp("demo")), **synthetic.SMALL, seed=1,
                               progress=False)


@pytest.fixture(scope="module")
def results(scan, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    # the Lurz models narrower than the course's (64 channels) to keep the test short; the
    # pipeline is the same
    res = demo.run_demo(data=scan, out=out, max_iter=1, batch_size=32, verbose=False,
                        mei_iterations=3, n_analysis_neurons=3,
                        lurz_config={"hidden_channels": 8})
    return res, out


def test_results_json_has_every_model_and_column(results):
    res, out = results
    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)              # strict JSON: NaN would have been refused on write
    assert list(saved["models"]) == list(demo.DEMO_MODELS)
    for name, row in saved["models"].items():
        for col in COLUMNS:
            assert col in row, (name, col)
        assert row["epochs"] >= 1 and row["seconds_per_epoch"] > 0
        assert row["device"] in ("cpu", "cuda")
        assert -1 <= row["test_corr"] <= 1 and -1 <= row["validation_corr"] <= 1
        assert row["label"] == demo.MODELS[name]
    assert saved["synthetic"] is True
    assert saved["test_set"]["n_test_images"] == 10 and saved["test_set"]["n_test_trials"] == 50


def test_ground_truth_ceiling_beats_briefly_trained_models(results):
    res, _ = results
    gt = res["ground_truth"]
    # the true expected rates, scored like a model: far above one epoch of training
    assert gt["test_corr"] > 0.2
    for row in res["models"].values():
        assert row["gt_ceiling"] == gt["test_corr"]
        assert row["test_corr"] < gt["test_corr"]
        assert row["fraction_of_ceiling"] == pytest.approx(row["test_corr"] / gt["test_corr"])


def test_measures_agree_with_lviv_c_utility_measures(scan, results):
    # the demo scores predictions itself (one forward per tier); the library functions must agree
    from lviv_c.dataset import load_dataset
    from lviv_c.utility.measures import get_oracles
    res, _ = results
    loaders, repeats = demo.load_loaders(scan, batch_size=32)
    ts = demo.TestSet(loaders, repeats)
    np.testing.assert_allclose(ts.oracle, get_oracles({"test": repeats}), rtol=1e-6, atol=1e-9)
    assert res["test_set"]["oracle"] == pytest.approx(float(np.mean(ts.oracle)))


def test_figures_written(results):
    res, out = results
    expected = {"correlation_histograms.png", "model_comparison.png", "scatter.png", "oracle.png",
                "training_curves.png", "lurz_rfs.png", "lurz_meis.png", "lurz_linear_rfs.png",
                "lurz_linear_meis.png", "lurz_ground_truth.png", "lurz_linear_ground_truth.png",
                "lurz_cross_activation.png"}
    assert expected <= set(res["figures"])
    for name in res["figures"]:
        with open(os.path.join(out, name), "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n", name
        assert os.path.getsize(os.path.join(out, name)) > 2000


def test_ground_truth_match_of_simple_cells(results):
    res, _ = results
    for name in ("lurz", "lurz-linear"):
        a = res["analysis"][name]
        assert len(a["simple_cells"]) == 3
        assert all(-1 <= c <= 1 for c in a["rf_gt_corr"] + a["mei_gt_corr"])


def test_table_lists_models_and_ground_truth(results):
    res, _ = results
    text = demo.format_table(res)
    for label in list(demo.MODELS.values()) + ["ground truth"]:
        assert label in text
    assert "of GT ceil" in text and "frac oracle" in text and "FEVE" in text


def test_table_shows_missing_values_as_dash():
    res = {"models": {"ln": {"label": "course LN", "validation_corr": 0.1, "test_corr": 0.2,
                             "corr_to_average": float("nan"), "fraction_oracle": None,
                             "feve": float("nan"), "epochs": 3, "seconds_per_epoch": 1.5,
                             "device": "cpu"}}}
    row = demo.format_table(res).splitlines()[2]
    assert row.split()[:4] == ["course", "LN", "0.100", "0.200"] and row.count("-") == 3


def test_check_scan_messages(tmp_path, scan):
    with pytest.raises(demo.DataPathError, match="no such folder"):
        demo.check_scan(tmp_path / "missing")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(demo.DataPathError, match="not a folder"):
        demo.check_scan(f)
    with pytest.raises(demo.DataPathError, match="no config.json"):
        demo.check_scan(tmp_path)
    assert demo.check_scan(scan) == scan


def test_resolve_data_environment_and_cache(tmp_path, monkeypatch, scan):
    monkeypatch.setenv("LVIV_DATA", scan)
    assert demo.resolve_data(None) == (scan, True)
    monkeypatch.delenv("LVIV_DATA")
    monkeypatch.setenv("LVIV_CACHE", str(tmp_path))
    path = demo.synthetic_scan(quick=True, progress=False, n_trials=160, n_neurons=12,
                               n_test_images=4, n_validation=16)
    assert path.startswith(str(tmp_path)) and os.path.isfile(os.path.join(path, "config.json"))
    stamp = os.path.getmtime(os.path.join(path, "ground_truth", "params.json"))
    again = demo.synthetic_scan(quick=True, progress=False, n_trials=160, n_neurons=12,
                                n_test_images=4, n_validation=16)
    assert again == path
    assert os.path.getmtime(os.path.join(path, "ground_truth", "params.json")) == stamp


def test_unknown_model_rejected(scan):
    with pytest.raises(ValueError, match="unknown model"):
        demo.run_demo(data=scan, models=("ln", "vgg"), verbose=False)


def test_course_models_shapes_and_parameter_counts(scan):
    import lviv_c as torch
    from lviv_c.course import CNN, Linear, SimpleCNN
    loaders, _ = demo.load_loaders(scan, batch_size=8)
    x = next(iter(loaders["train"]))[0]
    ln = demo.build_model("ln", loaders, seed=0)
    assert isinstance(ln, Linear) and ln.gamma == 0.1
    assert demo.n_parameters(ln) == 36 * 64 * 50 + 50
    cnn = demo.build_model("cnn", loaders, seed=0)
    assert isinstance(cnn, CNN)
    # the notebook's CNN: 15x15 + 3 x 13x13 convs (8 channels), BN affine, fc + BN1d
    assert demo.n_parameters(cnn) == (8 * 225 + 3 * 8 * 8 * 169 + 4 * 16
                                      + 36 * 64 * 8 * 50 + 50 + 2 * 50)
    simple = demo.build_model("simple-cnn", loaders, seed=0)
    assert isinstance(simple, SimpleCNN)
    assert simple.linear.weight.shape[1] == 36 * 64      # the LN model's readout size
    for m in (ln, cnn, simple):
        m.eval()
        with torch.no_grad():
            y = np.asarray(m(x))
        assert y.shape == (8, 50) and np.isfinite(y).all() and (y >= 0).all()   # ELU + 1
        assert float(np.asarray(m.regularizer())) > 0


def test_scan_without_ground_truth_has_no_ceiling_column(tmp_path):
    from lviv_c import synthetic
    scan = synthetic.make_scan(str(tmp_path), **synthetic.SMALL, seed=4, progress=False,
                               ground_truth=False)
    res = demo.run_demo(data=scan, out=str(tmp_path / "out"), models=("ln",), max_iter=1,
                        batch_size=32, verbose=False)
    assert res["synthetic"] is False and "ground_truth" not in res
    assert "gt_ceiling" not in res["models"]["ln"]
    assert "of GT ceil" not in demo.format_table(res)
    assert {"correlation_histograms.png", "scatter.png"} <= set(res["figures"])
    assert "lurz_rfs.png" not in res["figures"]


# ------------------------------------------------------------------ the time budget
def test_plan_epochs_shares_the_budget_in_proportion_to_the_asks():
    asks = {"ln": 20, "cnn": 4}
    secs = {"ln": 10.0, "cnn": 100.0}
    plan = demo.plan_epochs(secs, 300.0, asks)        # the asks cost 200 + 400 = 600 s
    assert plan == {"ln": 10, "cnn": 2}
    assert sum(plan[m] * secs[m] for m in plan) <= 300.0
    assert demo.plan_epochs(secs, 1.0, asks) == {"ln": 1, "cnn": 1}        # at least one epoch
    assert demo.plan_epochs(secs, 1e9, asks) == {"ln": 200, "cnn": 200}    # at most the course's 200
    half = demo.PLAN_EPOCHS["ln"] // 2                # default asks: half the LN's ask fits
    assert demo.plan_epochs({"ln": 10.0}, 10.0 * half) == {"ln": half}


def test_budgeted_run_prints_its_plan_first_and_keeps_to_it(scan, tmp_path, capsys):
    res = demo.run_demo(data=scan, out=str(tmp_path / "out"), models=("ln", "simple-cnn"), batch_size=32,
                        budget=0.5, figures=False)
    printed = capsys.readouterr().out
    plan = res["plan"]
    assert plan["budget_minutes"] == 0.5 and set(plan["max_epochs"]) == {"ln", "simple-cnn"}
    assert all(t > 0 for t in plan["epoch_seconds_estimate"].values())
    assert printed.index("plan: 0.5 minutes") < printed.index("=== course LN")
    assert "estimate: at most" in printed
    for m, row in res["models"].items():
        assert 1 <= row["epochs"] <= 200
    assert res["max_iter"] is None
    assert "of a 0.5-minute budget" in printed


def test_budget_arguments_are_checked(scan, tmp_path):
    with pytest.raises(ValueError, match="budget"):
        demo.run_demo(data=scan, out=str(tmp_path), budget=-1, verbose=False)
    with pytest.raises(ValueError, match="max_iter or budget"):
        demo.run_demo(data=scan, out=str(tmp_path), budget=1, max_iter=2, verbose=False)
