"""Run a snippet in a child Python whose address space is capped, so a memory bomb fails the test
(MemoryError) instead of eating the machine.

The child imports numpy and lviv_c first, then caps its address space (RLIMIT_AS) at what it
uses at that point plus ``extra_mb``. Under AddressSanitizer (scripts/asan-test preloads
libasan, which reserves terabytes of shadow memory, so RLIMIT_AS cannot work) the cap is ASan's
``max_allocation_size_mb`` with ``allocator_may_return_null``: any single allocation above it
becomes a MemoryError."""
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = """
import json, os, resource, sys
sys.path.insert(0, {root!r})
import numpy as np
import lviv_c
if "asan" not in os.environ.get("LD_PRELOAD", ""):
    with open("/proc/self/status") as fh:
        vm = [l for l in fh if l.startswith("VmSize:")][0]
    cap = int(vm.split()[1]) * 1024 + {extra} * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
"""


def under_asan():
    return "asan" in os.environ.get("LD_PRELOAD", "")


def run_capped(code, extra_mb=384, timeout=600, env=None):
    """Run ``code`` (it may print one JSON line last) in a capped child; returns
    (returncode, stdout, stderr, parsed last JSON line or None)."""
    src = _PRELUDE.format(root=ROOT, extra=int(extra_mb)) + textwrap.dedent(code)
    e = dict(os.environ if env is None else env)
    if under_asan():
        e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1"
                             f":max_allocation_size_mb={int(extra_mb)}").lstrip(":")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    p = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                       timeout=timeout, env=e)
    last = None
    for line in reversed(p.stdout.strip().splitlines()):
        try:
            last = json.loads(line)
            break
        except ValueError:
            continue
    return p.returncode, p.stdout, p.stderr, last
