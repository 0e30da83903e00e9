"""Time to result of the course LN with the course's own recipe, end to end: the notebook's cells
(`load_dataset(path, batch_size=30)`, `Linear(input_height=64, input_width=36, n_neurons=5335,
gamma=0.1)`, `train_model(model=ln_model, dataloader=dataloaders)` with its defaults: early
stopping, learning-rate decay, best state restored) on a full-size scan, timed from the load to
the returned score. Issue 17's goal: <= 90 s on 2 cores.

    python bench/bench_time_to_result.py [--data SCAN] [--device cpu]

--data: a scan folder (default: $LVIV_DATA, else the demo's cached full-size synthetic scan,
generated first when missing; its generation is not timed)."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    a = ap.parse_args()
    import lviv_c as L
    from lviv_c.course import Linear
    from lviv_c.dataset import load_dataset
    from lviv_c.demo import resolve_data
    from lviv_c.trainers import train_model
    from lviv_c.utility.measures import get_correlations
    path, _ = resolve_data(a.data)
    dev = ("cuda" if L.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    t0 = time.perf_counter()
    dataloaders = load_dataset(path=path, batch_size=30, cuda=dev == "cuda")
    t1 = time.perf_counter()
    L.manual_seed(0)
    ln_model = Linear(input_height=64, input_width=36, n_neurons=5335, gamma=0.1)
    epochs = []
    score, output, _ = train_model(model=ln_model, dataloader=dataloaders, device=dev, verbose=False,
                                   report=lambda n, corr: epochs.append(n))
    t2 = time.perf_counter()
    test = get_correlations(ln_model, dataloaders["test"], as_dict=False, per_neuron=False)
    print(f"course LN, course recipe, {os.path.basename(os.path.normpath(path))} on {dev}: "
          f"{t2 - t0:.1f} s to result (load {t1 - t0:.1f} s, train_model {t2 - t1:.1f} s, "
          f"{max(epochs, default=0) + 1} epochs); validation correlation {score:.4f}, "
          f"test {float(test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
