"""Training speed of the Sensorium 2022 models (the published configuration: 4-layer depth-separable
core with 64 channels, 9x9 / 7x7 kernels, cortex grid predictor with a hidden layer; "p": 3 behavior
channels and the MLP shifter) at the reference's size (36x64 images, 7776 neurons, batch 128), next
to the Lurz 2020 course configuration (5335 neurons) at its batch (60) and at 128, all in the same
run. One training step = gather, replay forward + loss + backward, Adam (as train_model runs it,
through lviv_c.sensorium_training's per-scan graphs for the Sensorium models). Random data of the
right shapes; medians of repeats (the machine may be shared).

    python bench/bench_sensorium.py [--steps 3] [--repeats 3] [--profile]

--profile adds each model's op profile (lviv_c._C.profile: time per op kind, share of the step).
"""
import argparse
import collections
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lviv_c  # noqa: E402
from lviv_c import _C  # noqa: E402
from lviv_c.capture import capture_graph  # noqa: E402
from lviv_c.demo import LURZ_COURSE_CONFIG  # noqa: E402
from lviv_c.models import SENSORIUM_2022_CONFIG, build_lurz2020_model, build_sensorium_model  # noqa: E402
from lviv_c.sensorium_training import MultiScanEngine  # noqa: E402
from lviv_c.trainers import poisson_loss_fn  # noqa: E402

from common import machine, median_time, op_profile  # noqa: E402

Batch2 = collections.namedtuple("Batch", "images responses")
Batch4 = collections.namedtuple("Batch", "images responses behavior pupil_center")


class _NS:
    pass


class RandomLoader:
    """Stands in for a static_loaders loader: blocks of random data, a first batch, the grid."""

    def __init__(self, rng, n, n_neurons, channels, batch, p=False, n_all=None):
        self.dataset = _NS()
        self.dataset.neurons = _NS()
        self.dataset.neurons.cell_motor_coordinates = rng.normal(size=(n_neurons, 3)) * 200
        self.batch_size = batch
        self.indices = np.arange(n, dtype=np.int64)
        self.blocks = {"images": rng.normal(size=(n, channels, 36, 64)).astype(np.float32),
                       "responses": rng.gamma(0.5, size=(n, n_neurons)).astype(np.float32)}
        if p:
            self.blocks["behavior"] = rng.normal(size=(n, 3)).astype(np.float32)
            self.blocks["pupil_center"] = rng.normal(size=(n, 2)).astype(np.float32)
        self.p = p
        self._n_all = n_all or n

    def __iter__(self):
        b = self.blocks
        i = slice(0, self.batch_size)
        if self.p:
            yield Batch4(*[lviv_c.from_numpy(np.ascontiguousarray(b[k][i])) for k in Batch4._fields])
        else:
            yield Batch2(lviv_c.from_numpy(b["images"][i]), lviv_c.from_numpy(b["responses"][i]))


class _Sized(list):
    pass


PROFILE, PROFILE_ON = [], False


def sensorium_step(p, n_neurons, batch, steps, repeats, rng):
    n = batch * steps
    loader = RandomLoader(rng, n, n_neurons, 4 if p else 1, batch, p=p)
    key = "26872-17-20"
    cfg = dict(SENSORIUM_2022_CONFIG, shifter=p)
    model = build_sensorium_model({key: loader}, 42, **cfg)
    loader.dataset = _Sized(range(5994))   # len(dataset): the loss scale of a 5994-trial scan
    loader.dataset.neurons = None
    eng = MultiScanEngine(model, {key: loader})
    s = eng.scan(key, loader)
    g = eng._train_graph(key, batch)
    order = np.arange(n, dtype=np.int64)

    def run():
        _C.train_epoch(g.handle, None, eng.adam, s.X, s.Y, order, 1, None)
    t = median_time(run, repeats=repeats, warmup=1) / steps
    PROFILE[:] = op_profile(run, steps) if PROFILE_ON else []
    n_par = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return t, n_par


def lurz_step(batch, steps, repeats, rng, n_neurons=5335):
    n = batch * steps
    loader = RandomLoader(rng, batch, n_neurons, 1, batch)
    model = build_lurz2020_model(loader, 1234, **LURZ_COURSE_CONFIG)
    scale = math.sqrt(5993 / batch)
    base = poisson_loss_fn(False)

    def loss_fn(out, y):
        return base(out, y) * scale + model.regularizer()
    params = [q for q in model.parameters() if q.requires_grad]
    X = np.ascontiguousarray(rng.uniform(0, 255, size=(n, 1, 36, 64)), dtype=np.float32)
    Y = np.ascontiguousarray(rng.gamma(0.5, size=(n, n_neurons)), dtype=np.float32)
    g = capture_graph(model, X[:batch], Y[:batch], loss_fn, train=True)
    adam = _C.adam_new(params, 0.005)
    order = np.arange(n, dtype=np.int64)

    def run():
        _C.train_epoch(g.handle, None, adam, X, Y, order, 1, None)
    t = median_time(run, repeats=repeats, warmup=1) / steps
    PROFILE[:] = op_profile(run, steps) if PROFILE_ON else []
    return t, sum(q.numel() for q in params)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print each model's op profile")
    args = ap.parse_args()
    global PROFILE_ON
    PROFILE_ON = args.profile
    rng = np.random.default_rng(0)
    print(f"training steps at 36x64, CPU ({machine()}); medians of {args.repeats} runs of {args.steps} steps")
    rows = []
    for label, fn in (("Lurz 2020 course config, batch 60, 5335 neurons", lambda: lurz_step(60, args.steps,
                                                                                             args.repeats, rng)),
                      ("Lurz 2020 course config, batch 128, 5335 neurons", lambda: lurz_step(128, args.steps,
                                                                                              args.repeats, rng)),
                      ("Sensorium 2022 (sota), batch 128, 7776 neurons", lambda: sensorium_step(
                          False, 7776, 128, args.steps, args.repeats, rng)),
                      ("Sensorium 2022 p (behavior + shifter), batch 128, 7538 neurons", lambda: sensorium_step(
                          True, 7538, 128, args.steps, args.repeats, rng))):
        t, n_par = fn()
        bs = int(label.split("batch ")[1].split(",")[0])
        rows.append((label, t, bs, n_par))
        print(f"  {label}: {t * 1e3:.0f} ms per step, {bs / t:.0f} images/s ({n_par:,} parameters)", flush=True)
        for line in PROFILE:
            print(f"      {line}")


if __name__ == "__main__":
    main()
