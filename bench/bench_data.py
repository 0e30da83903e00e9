"""Benchmark the dataset reader and the loaders (not a test: prints figures and ratios).

    python bench/bench_data.py [--path SCAN] [--repeats 3] [--batch-size 60] [--keep]

Without --path a full-size scan (5993 trials x 5335 neurons, 36x64 images) is written with
np.save into a temporary folder first. Figures (medians over --repeats, warm page cache):
  - FileTreeDataset(path, 'images', 'responses') load time vs a NumPy per-file np.load loop
    (np.stack of np.load per file, converted to float32) in the same run;
  - batches/s of a train loader at --batch-size (C gathers from the normalized block), next to
    a per-item Python loop (ds[i] + np.stack, what a torch DataLoader does) on the same data.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lviv_c.dataset import FileTreeDataset, load_dataset  # noqa: E402


def write_scan(root, n_train=4472, n_val=522, n_test_images=100, repeats=10, n_neurons=5335,
               shape=(1, 36, 64), seed=0):
    rng = np.random.default_rng(seed)
    path = os.path.join(root, "static20457-5-9-preproc0")
    n_test = n_test_images * repeats - 1  # 999 as in the course scan
    tiers = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * n_test, "<U10")
    n = len(tiers)
    perm = rng.permutation(n)
    tiers = tiers[perm]
    ids = np.concatenate([np.arange(1000, 1000 + n_train + n_val),
                          np.repeat(np.arange(n_test_images), repeats)[:n_test]])[perm]
    for key in ("images", "responses"):
        os.makedirs(os.path.join(path, "data", key))
    for i in range(n):
        np.save(os.path.join(path, "data/images", f"{i}.npy"),
                rng.integers(0, 256, size=shape).astype(np.float32))
        np.save(os.path.join(path, "data/responses", f"{i}.npy"),
                rng.gamma(0.5, 1.0, size=n_neurons))
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump({"links": {"targets": "responses", "inputs": "images"}}, fh)
    meta = {
        "trials": {"tiers": tiers, "frame_image_id": ids.astype(np.int64),
                   "frame_image_class": np.array(["imagenet"] * n, "<U64")},
        "neurons": {"unit_ids": np.arange(1, n_neurons + 1).astype(np.uint16),
                    "area": np.array(["V1"] * n_neurons, "<U2"),
                    "layer": np.array(["L2/3"] * n_neurons, "<U4"),
                    "cell_motor_coordinates": rng.normal(size=(n_neurons, 3)) * 100},
    }
    for group, fields in meta.items():
        os.makedirs(os.path.join(path, "meta", group))
        for k, v in fields.items():
            np.save(os.path.join(path, "meta", group, k + ".npy"), v)
    stats = {"images": {"mean": np.float32(111.3), "std": np.float32(60.94),
                        "min": np.float32(0), "max": np.float32(255),
                        "median": np.float32(110)},
             "responses": {k: rng.gamma(2.0, 0.2, size=n_neurons)
                           for k in ("mean", "std", "min", "max", "median")}}
    for key, fields in stats.items():
        for src in ("all", "stimulus_frame"):
            d = os.path.join(path, "meta", "statistics", key, src)
            os.makedirs(d)
            for k, v in fields.items():
                np.save(os.path.join(d, k + ".npy"), v)
    return path


def numpy_loop(path, n):
    out = {}
    for key in ("images", "responses"):
        d = os.path.join(path, "data", key)
        out[key] = np.stack([np.load(os.path.join(d, f"{i}.npy")) for i in range(n)]
                            ).astype(np.float32)
    return out


def median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", help="an existing scan folder (default: generate one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=60)
    ap.add_argument("--tmpdir", default=None, help="where to generate the scan")
    ap.add_argument("--keep", action="store_true", help="keep the generated scan")
    args = ap.parse_args()

    tmp = None
    path = args.path
    if path is None:
        tmp = tempfile.mkdtemp(prefix="lviv-bench-", dir=args.tmpdir)
        t0 = time.perf_counter()
        path = write_scan(tmp)
        print(f"generated a full-size scan in {time.perf_counter() - t0:.1f} s: {path}")
    try:
        ds = FileTreeDataset(path, "images", "responses")  # also warms the page cache
        n = len(ds)
        nbytes = sum(ds.block(k).nbytes for k in ds.data_keys)
        print(f"scan: {n} trials, images {ds.block('images').shape[1:]}, "
              f"{ds.block('responses').shape[1]} neurons, {nbytes / 2**20:.0f} MiB as float32")

        t_c, ts_c = median_time(lambda: FileTreeDataset(path, "images", "responses"),
                                args.repeats)
        t_np, ts_np = median_time(lambda: numpy_loop(path, n), args.repeats)
        ref = numpy_loop(path, n)
        same = all(np.array_equal(ds.block(k), ref[k]) for k in ref)
        print(f"load, lviv_c C reader (threads): median {t_c:.3f} s  "
              f"({n / t_c:.0f} trials/s; runs {', '.join(f'{t:.3f}' for t in ts_c)})")
        print(f"load, NumPy np.load per file   : median {t_np:.3f} s  "
              f"({n / t_np:.0f} trials/s; runs {', '.join(f'{t:.3f}' for t in ts_np)})")
        print(f"speed-up vs NumPy: {t_np / t_c:.1f}x   (blocks identical: {same})")

        t0 = time.perf_counter()
        loaders = load_dataset(path, batch_size=args.batch_size, seed=0)
        t_ld = time.perf_counter() - t0
        train = loaders["train"]
        print(f"load_dataset (read + normalize): {t_ld:.3f} s")

        def epoch():
            k = 0
            for _ in train:
                k += 1
            return k

        epoch()
        t_ep, _ = median_time(epoch, args.repeats)
        nb = len(train)
        print(f"train loader, batch {args.batch_size}: {nb} batches/epoch, median epoch "
              f"{t_ep * 1e3:.1f} ms = {nb / t_ep:.0f} batches/s "
              f"({len(train.sampler) / t_ep:.0f} images/s)")

        # per-item Python baseline on the same dataset and transforms (first 20 batches)
        dsn = train.dataset
        idx = train.batch_indices()[:20]

        def per_item():
            for b in idx:
                items = [dsn[int(i)] for i in b]
                np.stack([np.asarray(x.images) for x in items])
                np.stack([np.asarray(x.responses) for x in items])

        t_pi, _ = median_time(per_item, args.repeats)
        print(f"per-item Python loop (ds[i] + np.stack): {len(idx) / t_pi:.0f} batches/s "
              f"-> C gather is {(nb / t_ep) / (len(idx) / t_pi):.0f}x faster")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
