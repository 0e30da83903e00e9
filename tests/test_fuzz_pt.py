"""Fuzz lviv_c.load with byte flips, field overwrites, insertions and truncations of real
lviv_c.save output and of the PyTorch-written fixtures in tests/data. The loop runs in a child
process with a capped address space (tests/memlimit.py; under ASan a cap on single allocations):
every file must load or raise LoadError, never another exception, a crash or a memory bomb.
LVIV_FUZZ_ITERS sets the number of mutated files (default 1500; scripts/asan-test uses 4000)."""
import collections
import io
import os

import numpy as np

from lviv_c import serialization as S

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
N_ITER = int(os.environ.get("LVIV_FUZZ_ITERS", "1500"))


def saved_seed():
    sd = collections.OrderedDict([
        ("core.0.weight", np.linspace(-1, 1, 2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)),
        ("core.1.running_mean", np.array([0.1, 0.2], np.float32)),
        ("core.1.num_batches_tracked", np.array(7, np.int64)),
        ("readout.mu", np.arange(6, dtype=np.float64).reshape(3, 2) / 7),
        ("mask", np.array([True, False, True])),
        ("small", np.array([-3, 4], np.int8)),
    ])
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("core.1", {"version": 2})])
    buf = io.BytesIO()
    S.save(sd, buf)
    return buf.getvalue()


def seeds():
    out = [saved_seed()]
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".pt"):
            with open(os.path.join(DATA, name), "rb") as fh:
                out.append(fh.read())
    return out


CHILD = """
import io, random, struct, traceback
from lviv_c import serialization as S
seeds = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
rng = random.Random(20261130)
N = __N__
INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0xffffffff, 1 << 31, 1 << 40,
               (1 << 63) - 1, 1 << 62]


def pickle_span(b):
    # where the pickle lies: the data.pkl record of a zip, else the head of a legacy file
    i = b.find(b"data.pkl")
    if b[:4] == b"PK\\x03\\x04" and i >= 0:
        start = b.find(b"\\x80\\x02", i)
        if start >= 0:
            end = b.find(b".PK", start)
            return start, (end + 1 if end > 0 else len(b))
    return 0, min(len(b), 1200)


def mutate(b):
    b = bytearray(b)
    lo, hi = pickle_span(bytes(b))
    op = rng.randrange(8)
    if op == 0:                                  # flip bytes anywhere
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:                                # flip bytes in the pickle
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(lo, hi)] = rng.randrange(256)
    elif op == 2:                                # truncate
        b = b[:rng.randrange(len(b))]
    elif op == 3:                                # an integer field set to an extreme value
        i = rng.randrange(len(b) - 8)
        w = rng.choice((1, 2, 4, 8))
        v = rng.choice(INTERESTING) & ((1 << (8 * w)) - 1)
        b[i:i + w] = v.to_bytes(w, "little")
    elif op == 4:                                # an integer inside the pickle
        i = rng.randrange(lo, max(lo + 1, hi - 8))
        w = rng.choice((1, 2, 4))
        b[i:i + w] = (rng.choice(INTERESTING) & ((1 << (8 * w)) - 1)).to_bytes(w, "little")
    elif op == 5:                                # insert or delete bytes in the pickle
        i = rng.randrange(lo, hi)
        if rng.random() < 0.5:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            del b[i:i + rng.randint(1, 8)]
    elif op == 6:                                # pickle opcodes swapped for others
        i = rng.randrange(lo, hi)
        b[i] = ord(rng.choice("()}]tRQKMJXqrhjgG.\\x85\\x86\\x87\\x89\\x88\\x8a\\x94\\x95"))
    else:                                        # a zip header field overwritten
        sig = rng.choice([b"PK\\x03\\x04", b"PK\\x01\\x02", b"PK\\x05\\x06"])
        hits = [j for j in range(len(b)) if b[j:j + 4] == sig]
        if hits:
            j = rng.choice(hits) + rng.randrange(4, 30)
            if j + 4 <= len(b):
                b[j:j + 4] = rng.choice(INTERESTING).to_bytes(8, "little")[:4]
        else:
            b[rng.randrange(len(b))] ^= 0xFF
    return bytes(b)


counts = {"tried": 0, "loaded": 0, "refused": 0, "failed": 0}
failures = []
for it in range(N):
    blob = mutate(seeds[it % len(seeds)])
    if rng.random() < 0.3:
        blob = mutate(blob)
    counts["tried"] += 1
    try:
        S.load(io.BytesIO(blob))
        counts["loaded"] += 1
    except S.LoadError as e:
        if not str(e).startswith("lviv_c.load: "):
            counts["failed"] += 1
            failures.append(["message", str(e)[:200], blob.hex()])
        else:
            counts["refused"] += 1
    except BaseException as e:
        counts["failed"] += 1
        if len(failures) < 5:
            failures.append([type(e).__name__, str(e)[:200], blob.hex()[:4000]])
print(json.dumps({"counts": counts, "failures": failures}))
"""


def test_fuzz_pt_files_under_a_memory_cap():
    import json
    import subprocess
    import sys
    from memlimit import ROOT, _PRELUDE, under_asan
    blobs = seeds()
    assert len(blobs) >= 5
    for b in blobs:                      # the seeds themselves load
        S.load(io.BytesIO(b))
    src = _PRELUDE.format(root=ROOT, extra=384) + CHILD.replace("__N__", str(N_ITER))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if under_asan():
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                               ":allocator_may_return_null=1:max_allocation_size_mb=384")
    p = subprocess.run([sys.executable, "-c", src], input=json.dumps([b.hex() for b in blobs]),
                       capture_output=True, text=True, timeout=1200, env=env)
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
    res = json.loads(p.stdout.strip().splitlines()[-1])
    counts, failures = res["counts"], res["failures"]
    print("fuzz .pt:", counts)
    assert counts["tried"] == N_ITER
    assert not failures, failures
    # both outcomes were exercised
    assert counts["loaded"] > N_ITER // 50 and counts["refused"] > N_ITER // 4, counts
