"""The Sensorium models on synthetic Sensorium-layout scans: the plain model (images only) and the
p model (behavior channels + eye-position shifter) trained on two scans at once, their Sensorium
measures on the test tier, the correlation of the p model's learned shifts with the true
eye-movement shifts, and the ground truth scored like a model.

    PYTHONPATH=. python bench/sensorium_synthetic.py [--max-iter 25]
"""
import argparse
import tempfile
import time

import numpy as np

import lviv_c
from lviv_c.dataset import static_loaders
from lviv_c.models import build_sensorium_model
from lviv_c.sensorium_training import sensorium_measures
from lviv_c.synthetic import make_sensorium_scans
from lviv_c.synthetic_sensorium import load_sensorium_ground_truth
from lviv_c.trainers import train_model

GMP = {"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 30, "final_tanh": True}
CFG = dict(hidden_channels=16, input_kern=9, hidden_kern=7, layers=3, stack=-1, depth_separable=True,
           grid_mean_predictor=GMP, gamma_input=6.3831, gamma_readout=0.0076, init_sigma=0.1, init_mu_range=0.3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-iter", type=int, default=25)
    args = ap.parse_args()
    d = tempfile.mkdtemp()
    paths = make_sensorium_scans(d, n_scans=2, seed=0, n_trials=1500, n_neurons=150, n_test_images=40, n_repeats=5,
                                 n_validation=150, shift_std_px=2.5)
    print("2 synthetic scans x 1500 trials x 150 neurons, 36x64; core: 16 channels, 3 depth-separable layers")
    for p in (False, True):
        L = static_loaders(paths, 64, seed=0, include_behavior=p, include_eye_position=p)
        m = build_sensorium_model(L, seed=42, shifter=p, **CFG)
        t = time.time()
        score, out, _ = train_model(m, L, seed=1, max_iter=args.max_iter, verbose=False)
        M = sensorium_measures(m, L)
        print(f"{'p model' if p else 'plain model'}: validation {score:.3f}, {out['epochs']} epochs, "
              f"{time.time() - t:.0f} s")
        for k, v in M["per_scan"].items():
            print(f"   {k}: single-trial {v['single_trial_correlation']:.3f}, corr to avg "
                  f"{v['correlation_to_average']:.3f}, FEVE {v['feve']:.3f}")
        print("   all:", {k: round(v, 3) for k, v in M["all"].items()})
        if p:
            for path, (k, loader) in zip(paths, L["test"].items()):
                pc = np.ascontiguousarray(loader.blocks["pupil_center"][loader.indices])
                with lviv_c.no_grad():
                    sh = np.asarray(m.shifter[k](lviv_c.from_numpy(pc)))
                true = load_sensorium_ground_truth(path)["shifts_px"][loader.indices]
                print(f"   {k}: learned vs true shift, correlation x {np.corrcoef(sh[:, 0], true[:, 0])[0, 1]:.3f}, "
                      f"y {np.corrcoef(sh[:, 1], true[:, 1])[0, 1]:.3f}")
    L = static_loaders(paths, 64, seed=0)
    preds = {}
    for path, (k, loader) in zip(paths, L["test"].items()):
        prec = loader.dataset.transforms[0]._response_precision  # the loaders' response units
        preds[k] = load_sensorium_ground_truth(path)["mean_rates"][loader.indices] * prec
    gt = sensorium_measures(None, L, predictions=preds)["all"]
    print("ground truth (true rates):", {k: round(v, 3) for k, v in gt.items()})


if __name__ == "__main__":
    main()
