"""scripts/gpu-check's dry run (CI runs it on every commit, no GPU needed) and the CUDA library
discovery of setup.py (the toolkit first, then NVIDIA's pip packages with versioned libraries only)."""
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu-check")


def _dry_run(tmp_path, *args, env_extra=None):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    env.update(env_extra or {})
    out = tmp_path / "out"
    p = subprocess.run(["bash", SCRIPT, "--dry-run", "--out", str(out), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=240)
    return p, out


def _fake_bundle(path, good=True):
    path.mkdir()
    whl = path / "scipy_openblas32-0.0.1-py3-none-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("scipy_openblas32/__init__.py", "")
    import hashlib
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    if not good:
        digest = "0" * 64
    (path / "MANIFEST").write_text(f"{digest}  {whl.name}\n")
    return path


def test_dry_run_passes_and_writes_its_results(tmp_path):
    p, out = _dry_run(tmp_path, "--bundle", str(_fake_bundle(tmp_path / "bundle")))
    assert p.returncode == 0, p.stdout + p.stderr
    summary = (out / "summary.txt").read_text()
    assert "FAIL" not in summary
    # the budgets of the sections fit the outer limit of 9 minutes
    line = next(l for l in summary.splitlines() if "budgets:" in l)
    total, outer = (int(x) for x in re.search(r"= (\d+) s <= outer (\d+) s", line).groups())
    assert total <= outer <= 540
    assert "ok    bundle: 1 wheel(s)" in summary
    assert "tests collected" in summary and "ok    bench:" in summary
    # the summary is printed last, whole
    assert p.stdout.rstrip().endswith(summary.rstrip().splitlines()[-1])
    for f in ("gpu-check.log", "build.log", "tests.log", "bench.log"):
        assert (out / f).exists(), f


def test_dry_run_refuses_a_bundle_that_does_not_match_its_manifest(tmp_path):
    p, out = _dry_run(tmp_path, "--bundle", str(_fake_bundle(tmp_path / "bundle", good=False)))
    assert p.returncode == 1
    assert "does not match its MANIFEST" in (out / "summary.txt").read_text()


def test_results_go_to_the_device_out_folder_when_set(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "devout"))
    p = subprocess.run(["bash", SCRIPT, "--dry-run", "--bundle", str(_fake_bundle(tmp_path / "b"))], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "devout" / "summary.txt").exists()


def test_unknown_option_is_exit_2():
    p = subprocess.run(["bash", SCRIPT, "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "unknown option --frobnicate" in p.stderr


def test_cuda_config_finds_cudnn_in_nvidia_pip_packages(tmp_path):
    """A toolkit with cuBLAS but no cuDNN, and cuDNN as NVIDIA's pip package holding only
    libcudnn.so.9 (no unversioned name): linked as -l:libcudnn.so.9 from the package folder."""
    tk = tmp_path / "toolkit"
    (tk / "bin").mkdir(parents=True)
    (tk / "include").mkdir()
    (tk / "lib64").mkdir()
    nvcc = tk / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho fake\n")
    nvcc.chmod(0o755)
    (tk / "include" / "cublas_v2.h").write_text("")
    (tk / "lib64" / "libcublas.so").write_text("")
    site = tmp_path / "site"
    for d in ("nvidia/cudnn/include", "nvidia/cudnn/lib"):
        (site / d).mkdir(parents=True)
    (site / "nvidia/cudnn/include/cudnn.h").write_text("")
    (site / "nvidia/cudnn/lib/libcudnn.so.9").write_text("")
    env = dict(os.environ, PATH=f"{tk / 'bin'}:{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(site)] + sys.path))
    env.pop("LVIV_NO_CUDA", None)
    p = subprocess.run([sys.executable, "setup.py", "--cuda-config"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout[p.stdout.index("{"):])
    assert cfg["nvcc"] == str(nvcc) and "why" not in cfg
    assert cfg["libs"]["cublas"] == {"include": f"{tk}/include", "lib": f"{tk}/lib64", "link": "-lcublas"}
    assert cfg["libs"]["cudnn"] == {"include": str(site / "nvidia/cudnn/include"),
                                    "lib": str(site / "nvidia/cudnn/lib"), "link": "-l:libcudnn.so.9"}


def test_cuda_config_says_what_is_missing(tmp_path):
    tk = tmp_path / "toolkit"
    (tk / "bin").mkdir(parents=True)
    (tk / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (tk / "bin" / "nvcc").chmod(0o755)
    env = dict(os.environ, PATH=f"{tk / 'bin'}:{os.environ['PATH']}", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "setup.py", "--cuda-config"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    cfg = json.loads(p.stdout[p.stdout.index("{"):])
    assert cfg["why"] == "not found (headers and library): cublas, cudnn"
