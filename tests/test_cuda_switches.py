"""The GPU backend's switches and error reporting, and dropout's use of the global generator.

Without a GPU: the Python switches (lviv_c.backends, lviv_c.cuda.allow_tf32) and that they reach
the C core; LVIV_CUDA_SYNC's parsing; the words of every CUDA error (cuda/errors.cuh compiled by
nvcc into a small program, no GPU needed); dropout drawing once from the generator per call, the
same mask on the CPU and the (emulated) device. On a GPU only: a real kernel fault reported at the
kernel (LVIV_CUDA_SYNC=1) or at the next copy, then the unusable context; the fallback without
memory pools; the switches changing the cuDNN choice without changing results beyond rounding."""
import ctypes
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lviv_c as L
import lviv_c.nn.functional as F
from lviv_c import _C

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture
def restore_flags():
    old = _C._device_flags()
    yield
    for k, v in old.items():
        _C._set_device_flag(k, v)


# ---------------------------------------------------------------- switches (any build)
def test_switch_defaults():
    assert L.backends.cudnn.deterministic is True   # PyTorch: False (determinism by default here)
    assert L.backends.cudnn.benchmark is False
    assert L.backends.cudnn.allow_tf32 is False     # PyTorch: True (CPU parity by default here)
    assert L.backends.cuda.matmul.allow_tf32 is False
    assert _C._device_flags() == {"cudnn_deterministic": True, "cudnn_benchmark": False,
                                  "cudnn_allow_tf32": False, "matmul_allow_tf32": False,
                                  "sync_launches": L.cuda.env_flag("LVIV_CUDA_SYNC") if _C._cuda_loaded() else False}


@pytest.mark.parametrize("ns,attr,flag", [("cudnn", "deterministic", "cudnn_deterministic"),
                                          ("cudnn", "benchmark", "cudnn_benchmark"),
                                          ("cudnn", "allow_tf32", "cudnn_allow_tf32"),
                                          ("matmul", "allow_tf32", "matmul_allow_tf32")])
def test_each_switch_reaches_the_core(ns, attr, flag, restore_flags):
    obj = L.backends.cudnn if ns == "cudnn" else L.backends.cuda.matmul
    for v in (True, False, 1, 0, np.bool_(True)):
        setattr(obj, attr, v)
        assert getattr(obj, attr) is bool(v)
        assert _C._device_flags()[flag] is bool(v)
        others = {k: w for k, w in _C._device_flags().items() if k != flag}
        setattr(obj, attr, not bool(v))
        assert {k: w for k, w in _C._device_flags().items() if k != flag} == others  # only this one moved


def test_switches_refuse_bad_values_and_typos(restore_flags):
    with pytest.raises(TypeError, match=r"lviv_c.backends.cudnn.deterministic must be True or False, got 'yes'"):
        L.backends.cudnn.deterministic = "yes"
    with pytest.raises(TypeError, match="must be True or False, got 2"):
        L.backends.cuda.matmul.allow_tf32 = 2
    with pytest.raises(AttributeError, match="lviv_c.backends.cudnn has no switch 'determinstic'"):
        L.backends.cudnn.determinstic = False
    with pytest.raises(AttributeError, match="no switch 'matmul'"):
        L.backends.cuda.matmul = None
    with pytest.raises(ValueError, match="unknown switch 'nope'"):
        _C._set_device_flag("nope", True)
    assert L.backends.cudnn.deterministic is True


def test_flags_context_restores_even_on_error(restore_flags):
    with pytest.raises(KeyError):
        with L.backends.cudnn.flags(deterministic=False, benchmark=True):
            assert (L.backends.cudnn.deterministic, L.backends.cudnn.benchmark) == (False, True)
            assert L.backends.cudnn.allow_tf32 is False  # None: left as it was
            raise KeyError("inside")
    assert (L.backends.cudnn.deterministic, L.backends.cudnn.benchmark) == (True, False)


def test_cuda_allow_tf32_sets_both(restore_flags):
    L.cuda.allow_tf32 = True
    assert L.backends.cudnn.allow_tf32 and L.backends.cuda.matmul.allow_tf32 and L.cuda.allow_tf32
    L.backends.cudnn.allow_tf32 = False
    assert L.cuda.allow_tf32 is False  # True only when both are
    L.cuda.allow_tf32 = False
    assert not _C._device_flags()["matmul_allow_tf32"]


def test_env_flag_parsing(monkeypatch):
    for v, want in [("1", True), ("true", True), (" ON ", True), ("yes", True), ("0", False), ("", False),
                    ("off", False), ("False", False)]:
        monkeypatch.setenv("LVIV_TEST_FLAG", v)
        assert L.cuda.env_flag("LVIV_TEST_FLAG") is want
    monkeypatch.delenv("LVIV_TEST_FLAG")
    assert L.cuda.env_flag("LVIV_TEST_FLAG") is False and L.cuda.env_flag("LVIV_TEST_FLAG", True) is True
    monkeypatch.setenv("LVIV_TEST_FLAG", "2")
    with pytest.raises(ValueError, match=r"LVIV_TEST_FLAG must be 0 or 1 .* got '2'"):
        L.cuda.env_flag("LVIV_TEST_FLAG")


def test_cuda_sync_env_reaches_the_core(monkeypatch, restore_flags):
    monkeypatch.setenv("LVIV_CUDA_SYNC", "1")
    L.cuda._apply_env()
    assert _C._device_flags()["sync_launches"] is True
    monkeypatch.setenv("LVIV_CUDA_SYNC", "0")
    L.cuda._apply_env()
    assert _C._device_flags()["sync_launches"] is False
    monkeypatch.setenv("LVIV_CUDA_SYNC", "sometimes")
    with pytest.raises(ValueError, match="LVIV_CUDA_SYNC must be 0 or 1"):
        L.cuda._apply_env()


# ---------------------------------------------------------------- the words of CUDA errors (nvcc, no GPU)
def _nvcc():
    n = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    return n


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found")
def test_cuda_error_messages(tmp_path):
    exe = tmp_path / "errors_main"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # not under the ASan run's preload
    subprocess.run([_nvcc(), "-std=c++17", "-I" + os.path.join(ROOT, "cuda"), "-o", str(exe),
                    os.path.join(HERE, "cuda_unit", "errors_main.cu")], check=True, capture_output=True,
                   timeout=300, env=env)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60, env=env).stdout
    rows = {line.split("|")[0]: line.split("|", 2)[1:] for line in out.splitlines()}
    unusable = "the CUDA context of this process is unusable after this error"
    sticky, msg = rows["fault_at_copy"]
    assert sticky == "1"
    assert msg.startswith("a CUDA kernel launched earlier failed: an illegal memory access was encountered")
    assert "(set LVIV_CUDA_SYNC=1 to find which)" in msg and unusable in msg
    assert "copy from the GPU" not in msg  # the copy is not blamed
    sticky, msg = rows["fault_at_launch_sync"]
    assert msg.startswith("CUDA kernel batch_norm failed: an illegal memory access") and unusable in msg
    assert "LVIV_CUDA_SYNC" not in msg
    assert rows["fault_at_launch_nosync"][1].startswith("a CUDA kernel launched earlier failed")
    assert rows["assert_at_sync"][1].startswith("a CUDA kernel launched earlier failed: device-side assert")
    sticky, msg = rows["bad_launch"]
    assert sticky == "0" and msg.startswith("CUDA kernel readout failed: invalid configuration") and unusable not in msg
    sticky, msg = rows["oom"]
    assert sticky == "0" and msg == "CUDA error in scratch allocation: out of memory (cudaErrorMemoryAllocation)"
    for k in ("later", "later_init"):
        assert rows[k][1].startswith("CUDA is unusable in this process since an earlier error (cudaError")
        assert rows[k][1].endswith("restart the Python process")
    assert "refused: allocation" in rows["later"][1]


# ---------------------------------------------------------------- dropout and the global generator
def test_dropout_draws_once_per_call_from_the_generator():
    # the same generator state after a dropout of 10 or 10^5 elements: one draw per call
    after = []
    for n in (10, 100000):
        L.manual_seed(7)
        F.dropout(L.ones(n), 0.5)
        after.append(L.rand(4).numpy())
    np.testing.assert_array_equal(after[0], after[1])
    L.manual_seed(7)
    L.rand(1)  # exactly one draw, like the dropout above
    skip_one = L.rand(4).numpy()
    L.manual_seed(7)
    F.dropout(L.ones(3), 0.2)
    np.testing.assert_array_equal(L.rand(4).numpy(), skip_one)


def test_dropout_mask_prefix_is_stable():
    # counter-based: element i's draw depends only on (seed, i), not on the tensor's size
    L.manual_seed(3)
    a = F.dropout(L.ones(1000), 0.4).numpy()
    L.manual_seed(3)
    b = F.dropout(L.ones(50), 0.4).numpy()
    np.testing.assert_array_equal(a[:50], b)
    kept = a != 0
    assert 0.55 < kept.mean() < 0.65 and np.allclose(a[kept], 1 / 0.6)


HAVE_DEVICE = L.cuda.is_available()
device = pytest.mark.skipif(not HAVE_DEVICE, reason="no CUDA device (nor LVIV_EMULATE_CUDA=1)")
real_gpu = pytest.mark.skipif(not HAVE_DEVICE or L.cuda.emulated(), reason="needs a real GPU")


@pytest.mark.cuda
@device
def test_dropout_same_mask_and_generator_use_on_both_devices():
    x = np.random.default_rng(0).standard_normal((33, 70)).astype(np.float32)
    out = {}
    for dev in ("cpu", "cuda"):
        L.manual_seed(11)
        y1 = F.dropout(L.tensor(x, device=dev), 0.3)
        y2 = F.dropout(L.tensor(x, device=dev), 0.7)
        out[dev] = (y1.cpu().numpy(), y2.cpu().numpy(), L.rand(5).numpy())
    for c, g in zip(out["cpu"], out["cuda"]):
        np.testing.assert_array_equal(g, c)  # bit for bit, and the generator left in the same state
    assert not np.array_equal(out["cpu"][0] != 0, out["cpu"][1] != 0)


class _Flags(ctypes.Structure):  # csrc/backend.h lv_device_flags, in declaration order
    _fields_ = [(n, ctypes.c_int) for n in ("cudnn_deterministic", "cudnn_benchmark", "cudnn_allow_tf32",
                                            "matmul_allow_tf32", "sync_launches")]


@pytest.mark.cuda
@device
def test_the_installed_table_reads_the_switches_the_python_side_sets(restore_flags):
    # the path the CUDA backend takes at every op: table.core_flags(), filled in by the core
    sys.path.insert(0, HERE)
    from backend_ffi import backend
    L.zeros(1, device="cuda")  # the table is installed
    t = backend("cuda")
    assert t.core_flags
    get = ctypes.CFUNCTYPE(ctypes.POINTER(_Flags))(t.core_flags)
    for det, bench, tf32 in [(False, True, True), (True, False, False)]:
        L.backends.cudnn.deterministic, L.backends.cudnn.benchmark = det, bench
        L.cuda.allow_tf32 = tf32
        f = get().contents
        assert {n: bool(getattr(f, n)) for n, _ in _Flags._fields_} == _C._device_flags()
        assert (f.cudnn_deterministic, f.cudnn_benchmark, f.cudnn_allow_tf32, f.matmul_allow_tf32) == (
            det, bench, tf32, tf32)


@pytest.mark.cuda
@device
def test_empty_cache_and_synchronize_keep_tensors():
    x = L.randn(5, 6, device="cuda")
    ref = x.cpu().numpy()
    L.cuda.empty_cache()
    L.cuda.synchronize()
    np.testing.assert_array_equal((x * 2).cpu().numpy(), ref * 2)


# ---------------------------------------------------------------- a real GPU only
def _run(code, **env):
    e = dict(os.environ, **env)
    e.pop("LVIV_EMULATE_CUDA", None)
    e["PYTHONPATH"] = os.pathsep.join([ROOT, HERE] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=e, cwd=HERE)


_FAULT = """
import ctypes, lviv_c as L
from backend_ffi import backend, lib
x = L.ones(4, device="cuda")
fill = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64)(backend("cuda").fill_f32)
rc = fill(ctypes.c_void_p(0x10), 1.0, 1 << 20)   # an illegal address: a real kernel fault
print("FILL", rc, lib.lv_error_msg().decode() if rc else "")
for name, f in (("COPY", lambda: x.cpu()), ("LATER", lambda: L.zeros(3, device="cuda"))):
    try:
        f()
        print(name, "ok")
    except RuntimeError as e:
        print(name, e)
"""


@pytest.mark.cuda
@real_gpu
def test_kernel_fault_reported_at_the_copy_then_context_unusable():
    r = _run(_FAULT, LVIV_CUDA_SYNC="0")
    lines = {ln.split(" ", 1)[0]: ln for ln in r.stdout.splitlines()}
    assert lines["FILL"].startswith("FILL 0"), r.stdout + r.stderr  # queued: noticed later
    assert "a CUDA kernel launched earlier failed" in lines["COPY"] and "LVIV_CUDA_SYNC=1" in lines["COPY"]
    assert "unusable" in lines["COPY"] and "copy from the GPU" not in lines["COPY"]
    assert "CUDA is unusable in this process since an earlier error" in lines["LATER"]


@pytest.mark.cuda
@real_gpu
def test_kernel_fault_reported_at_the_kernel_with_cuda_sync():
    r = _run(_FAULT, LVIV_CUDA_SYNC="1")
    lines = {ln.split(" ", 1)[0]: ln for ln in r.stdout.splitlines()}
    assert lines["FILL"].startswith("FILL -1 CUDA kernel fill failed: an illegal memory access"), r.stdout + r.stderr
    assert "CUDA is unusable in this process since an earlier error" in lines["COPY"]


_CONV = """
import hashlib, numpy as np, lviv_c as L, lviv_c.nn.functional as F
from lviv_c import _cuda
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
for _ in range(3):  # allocations, frees and regrowth through the allocator in use
    xg = L.tensor(x, device="cuda", requires_grad=True)
    y = F.conv2d(xg, L.tensor(w, device="cuda"), padding=1)
    (y * y).sum().backward()
    L.cuda.empty_cache()
print("POOL", _cuda.uses_memory_pool())
print("SHA", hashlib.sha256(y.detach().cpu().numpy().tobytes() + xg.grad.cpu().numpy().tobytes()).hexdigest())
"""


@pytest.mark.cuda
@real_gpu
def test_without_memory_pools_the_results_are_the_same():
    outs = {}
    for no_pool in ("0", "1"):
        r = _run(_CONV, LVIV_CUDA_NO_POOL=no_pool)
        assert r.returncode == 0, r.stderr
        outs[no_pool] = dict(ln.split(" ", 1) for ln in r.stdout.splitlines() if " " in ln)
    assert outs["1"]["POOL"] == "False"
    assert outs["0"]["SHA"] == outs["1"]["SHA"]  # deterministic algorithms: the same bits


@pytest.mark.cuda
@device
@pytest.mark.parametrize("det,bench,tf32", [(True, False, False), (True, True, False), (False, True, False),
                                            (False, False, True)])
def test_conv_under_each_switch_setting(det, bench, tf32, restore_flags):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 4, 10, 9)).astype(np.float32), rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    ref_x = L.tensor(x, requires_grad=True)
    ref = F.conv2d(ref_x, L.tensor(w), padding=1)
    (ref * ref).sum().backward()
    with L.backends.cudnn.flags(deterministic=det, benchmark=bench, allow_tf32=tf32):
        runs = []
        for _ in range(2):
            xg = L.tensor(x, device="cuda", requires_grad=True)
            y = F.conv2d(xg, L.tensor(w, device="cuda"), padding=1)
            (y * y).sum().backward()
            runs.append((y.detach().cpu().numpy(), xg.grad.cpu().numpy()))
    tol = 2e-2 if tf32 else 1e-4
    np.testing.assert_allclose(runs[0][0], ref.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(runs[0][1], ref_x.grad.numpy(), rtol=tol, atol=tol * 10)
    if det:  # deterministic algorithms: the same bits on the second run
        np.testing.assert_array_equal(runs[1][0], runs[0][0])
        np.testing.assert_array_equal(runs[1][1], runs[0][1])


@pytest.mark.parametrize("value,emulated", [("1", True), ("yes", True), ("0", False), ("false", False),
                                            ("maybe", None)])
def test_emulate_cuda_variable_is_read_as_a_boolean(value, emulated):
    """LVIV_EMULATE_CUDA takes the values LVIV_CUDA_SYNC takes; anything else is refused, named by
    why_unavailable(), and is_available() still does not raise."""
    code = "import lviv_c as L; print(L.cuda.is_available(), L.cuda.emulated(), L.cuda.why_unavailable())"
    env = dict(os.environ, LVIV_EMULATE_CUDA=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    avail, emu, why = out.stdout.split(" ", 2)
    if emulated is None:
        assert avail == "False" and "LVIV_EMULATE_CUDA must be 0 or 1" in why
    else:
        assert emu == str(emulated)
