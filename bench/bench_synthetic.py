"""Seconds to generate the full-size synthetic scan (course size: 5993 trials x 5335 neurons).

    python bench/bench_synthetic.py [--runs 3] [--dir DIR] [--no-ground-truth] [--json]

Each run writes a fresh scan into a temporary folder under DIR (default: the system temporary
folder) and removes it afterwards. Reports the median wall time and the process CPU time. The
generation writes ~24,000 small files (plus ~180 MB of ground truth), so on a busy or slow disk
the wall time is dominated by file creation; compare with a RAM-backed DIR (e.g. /dev/shm) to
see the compute part.
"""
import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_synthetic():
    try:
        from lviv_c import synthetic
        return synthetic
    except ImportError:  # unbuilt checkout: the generator needs only NumPy
        spec = importlib.util.spec_from_file_location(
            "lviv_c_synthetic_standalone", os.path.join(ROOT, "lviv_c", "synthetic.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dir", default=None, help="parent folder for the temporary scans")
    p.add_argument("--no-ground-truth", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    a = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    S = _load_synthetic()
    walls, cpus, info = [], [], None
    for r in range(a.runs):
        tmp = tempfile.mkdtemp(prefix="lviv_c_synth_bench_", dir=a.dir)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            path = S.make_scan(tmp, seed=a.seed, progress=False,
                               ground_truth=not a.no_ground_truth, **S.DEFAULTS)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            if info is None and not a.no_ground_truth:
                info = S.load_ground_truth(path, mmap=True)["params"]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not a.json:
            print(f"run {r + 1}/{a.runs}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU",
                  flush=True)
    res = dict(bench="synthetic_full_scan", n_trials=S.DEFAULTS["n_trials"],
               n_neurons=S.DEFAULTS["n_neurons"], runs=a.runs,
               median_wall_s=round(statistics.median(walls), 3),
               min_wall_s=round(min(walls), 3), median_cpu_s=round(statistics.median(cpus), 3),
               cpu_count=os.cpu_count(), ground_truth=not a.no_ground_truth)
    if info:
        res["ceiling_per_tier"] = {k: round(v, 4) for k, v in info["ceiling_per_tier"].items()}
        res["test_oracle_jackknife"] = round(info["test_oracle_jackknife"], 4)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
