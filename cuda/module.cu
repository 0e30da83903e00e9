// lviv_c._cuda: the CPython extension that owns the GPU. It exposes device queries that never
// raise when there is no driver/GPU, and a capsule holding the op table (lv_backend) that
// the C core installs through _C._set_cuda_table.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <cstdarg>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include "common.cuh"

namespace lvc {

cudaStream_t stream = nullptr;
static std::atomic<bool> inited{false};
static std::mutex init_mu;
static bool use_pool = false;             // set once in init()
static std::atomic<int> lost{cudaSuccess};  // the sticky error that made the context unusable

const lv_device_flags &flags() {
  static const lv_device_flags defaults = {1, 0, 0, 0, 0};  // as csrc/backend.c until installed
  return table.core_flags ? *table.core_flags() : defaults;
}

int fail(int kind, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (table.core_set_error) table.core_set_error(kind, buf);
  return -1;
}

int cuda_fail(cudaError_t e, const char *what, int at) {
  char buf[1024];
  cudaError_t was = (cudaError_t)lost.load();
  lvc_error_text(buf, sizeof buf, e, what, at, flags().sync_launches != 0, was);
  if (was == cudaSuccess && lvc_is_sticky(e)) lost.store(e);
  // a call's own error stays as the thread's "last error" until read: clear it, so the next
  // launch check does not blame its kernel (sticky errors cannot be cleared, and need not be)
  if (!lvc_is_sticky(e)) cudaGetLastError();
  return fail(e == cudaErrorMemoryAllocation ? LVC_ENOMEM : LVC_ERUNTIME, "%s", buf);
}

int launched(const char *what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && flags().sync_launches) e = cudaStreamSynchronize(stream);
  return e == cudaSuccess ? 0 : cuda_fail(e, what, LVC_AT_LAUNCH);
}

int lib_fail(const char *what, const char *msg) {
  cudaError_t e = lost.load() != cudaSuccess ? (cudaError_t)lost.load() : cudaPeekAtLastError();
  if (lvc_is_sticky(e)) return cuda_fail(e, what, LVC_AT_LAUNCH);
  return fail(LVC_ERUNTIME, "%s: %s", what, msg);
}

int init() {
  if (lost.load() != cudaSuccess) return cuda_fail((cudaError_t)lost.load(), nullptr);
  if (inited.load(std::memory_order_acquire)) return 0;
  std::lock_guard<std::mutex> lk(init_mu);
  if (inited.load()) return 0;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) return fail(LVC_ERUNTIME, "CUDA: no usable GPU (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
  LVC_CHECK(cudaSetDevice(0), "cudaSetDevice");
  LVC_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  // the stream-ordered allocator only where the device supports memory pools (not every
  // driver/device/virtualisation does); else plain cudaMalloc/cudaFree
  int pools = 0;
  if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, 0) != cudaSuccess) { cudaGetLastError(); pools = 0; }
  const char *np = getenv("LVIV_CUDA_NO_POOL");
  use_pool = pools != 0 && !(np && *np && strcmp(np, "0") != 0);
  cudaMemPool_t pool;
  if (use_pool && cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
    // keep freed blocks cached in the pool (no cudaFree sync per step)
    uint64_t thr = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr);
  }
  cudaGetLastError();
  inited.store(true, std::memory_order_release);
  return 0;
}

bool uses_memory_pool() { return use_pool; }

cudaError_t dev_malloc(void **p, size_t n) {
  *p = nullptr;
  if (use_pool) return cudaMallocAsync(p, n ? n : 4, stream);
  return cudaMalloc(p, n ? n : 4);
}
void dev_free(void *p) {
  if (!p || !stream) return;  // errors (at interpreter exit, after a sticky error) are ignored
  if (use_pool) {
    if (cudaFreeAsync(p, stream) != cudaSuccess) cudaGetLastError();
    return;
  }
  cudaStreamSynchronize(stream);  // work queued on the memory finishes first
  cudaFree(p);
  cudaGetLastError();
}

// ---- scratch buffers: a few growing device buffers owned by the backend, one mutex each ----
static const int NSCRATCH = 8;
static std::mutex scr_mu[NSCRATCH];
static void *scr[NSCRATCH];
static size_t scr_n[NSCRATCH];
Scratch::Scratch(size_t nbytes, int slot) {
  if (slot < 0 || slot >= NSCRATCH) { fail(LVC_ERUNTIME, "scratch: bad slot %d", slot); return; }
  scr_mu[slot].lock();
  slot_ = slot;
  if (scr_n[slot] >= nbytes && scr[slot]) { p = scr[slot]; return; }
  dev_free(scr[slot]);
  scr[slot] = nullptr; scr_n[slot] = 0;
  size_t want = nbytes + nbytes / 4 + 256;
  cudaError_t e = dev_malloc(&scr[slot], want);
  if (e != cudaSuccess) { cuda_fail(e, "scratch allocation"); scr[slot] = nullptr; return; }
  scr_n[slot] = want;
  p = scr[slot];
}
Scratch::~Scratch() {
  if (slot_ >= 0) scr_mu[slot_].unlock();
}

void release_caches() {
  if (!inited.load() || lost.load() != cudaSuccess) return;
  cudaStreamSynchronize(stream);
  conv_release();
  blas_release();
  nn_release();
  nn_ops_release();
  for (int i = 0; i < NSCRATCH; i++) {
    std::lock_guard<std::mutex> lk(scr_mu[i]);
    dev_free(scr[i]);
    scr[i] = nullptr; scr_n[i] = 0;
  }
  cudaStreamSynchronize(stream);
  cudaGetLastError();
}

// cuDNN keeps one shared workspace: nothing kept with the conv nodes
static size_t conv2d_workspace_floats(const lv_conv2d_desc *) { return 0; }

// ---- memory table entries ----
static void *t_alloc(size_t nbytes) {
  if (init() < 0) return nullptr;
  void *p = nullptr;
  cudaError_t e = dev_malloc(&p, nbytes);
  if (e != cudaSuccess) {
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not left for the next launch check
      fail(LVC_ENOMEM, "CUDA out of memory allocating %zu bytes (%s)", nbytes, cudaGetErrorString(e));
    } else {
      cuda_fail(e, "allocation");
    }
    return nullptr;
  }
  return p;
}
static void t_free(void *p) { dev_free(p); }
static int t_h2d(void *dst, const void *src, size_t n) {
  if (init() < 0) return -1;
  LVC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream), "copy to the GPU");
  // the source may be pageable memory the caller frees right away: make the copy complete
  LVC_WAIT(cudaStreamSynchronize(stream), "copy to the GPU");
  return 0;
}
static int t_d2h(void *dst, const void *src, size_t n) {
  if (init() < 0) return -1;
  LVC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream), "copy from the GPU");
  LVC_WAIT(cudaStreamSynchronize(stream), "copy from the GPU");
  return 0;
}
static int t_d2d(void *dst, const void *src, size_t n) {
  if (init() < 0) return -1;
  LVC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream), "device copy");
  return 0;
}
static int t_memset0(void *p, size_t n) {
  if (init() < 0) return -1;
  LVC_CHECK(cudaMemsetAsync(p, 0, n, stream), "memset");
  return 0;
}
static int t_sync() {
  if (!inited.load()) return 0;
  if (lost.load() != cudaSuccess) return init();
  LVC_WAIT(cudaStreamSynchronize(stream), "synchronize");
  return 0;
}

// every entry named, in the declaration order of csrc/backend.h (designated initializers): an
// entry can be neither swapped nor skipped (lv_cuda_install checks that every entry is filled)
lv_backend table = {
    .abi = LV_BACKEND_ABI,
    .table_size = (int)sizeof(lv_backend),
    .name = "cuda",
    .device = LV_CUDA,
    .core_set_error = nullptr,
    .core_rng_next = nullptr,
    .core_flags = nullptr,
    .alloc = t_alloc,
    .free = t_free,
    .memcpy_h2d = t_h2d,
    .memcpy_d2h = t_d2h,
    .memcpy_d2d = t_d2d,
    .memset0 = t_memset0,
    .synchronize = t_sync,
    .binary_fwd = binary_fwd,
    .binary_bwd = binary_bwd,
    .unary_fwd = unary_fwd,
    .unary_bwd = unary_bwd,
    .reduce_fwd = reduce_fwd,
    .reduce_bwd = reduce_bwd,
    .matmul_fwd = matmul_fwd,
    .matmul_bwd = matmul_bwd,
    .linear_fwd = linear_fwd,
    .linear_bwd = linear_bwd,
    .permute_fwd = permute_fwd,
    .permute_bwd = permute_bwd,
    .slice_fwd = slice_fwd,
    .slice_bwd = slice_bwd,
    .isel_fwd = isel_fwd,
    .isel_bwd = isel_bwd,
    .cat_fwd = cat_fwd,
    .cat_bwd = cat_bwd,
    .expand_fwd = expand_fwd,
    .expand_bwd = expand_bwd,
    .add_into = add_into,
    .mul_add = mul_add,
    .where_fwd = where_fwd,
    .where_bwd = where_bwd,
    .cast = cast,
    .fill_f32 = fill_f32,
    .conv2d_workspace_floats = conv2d_workspace_floats,
    .conv2d_forward = conv2d_forward,
    .conv2d_backward_data = conv2d_backward_data,
    .conv2d_backward_weight = conv2d_backward_weight,
    .bn_forward_train = bn_forward_train,
    .bn_forward_eval = bn_forward_eval,
    .bn_backward_train = bn_backward_train,
    .bn_backward_eval = bn_backward_eval,
    .bn_track = bn_track,
    .grid_sample_forward = grid_sample_forward,
    .grid_sample_backward = grid_sample_backward,
    .avg_pool2d_forward = avg_pool2d_forward,
    .avg_pool2d_backward = avg_pool2d_backward,
    .pad_forward = pad_forward,
    .pad_backward = pad_backward,
    .dropout_forward = dropout_forward,
    .poisson_loss = poisson_loss,
    .poisson_loss_backward = poisson_loss_backward,
    .readout_forward = readout_forward,
    .readout_backward = readout_backward,
    .readout_pos_forward = readout_pos_forward,
    .readout_pos_backward = readout_pos_backward,
    .adam_step = adam_step,
    .sgd_step = sgd_step,
    .gather_rows = gather_rows,
    .gather_rows_dev = gather_rows_dev,
    .loss_accumulate = loss_accumulate,
    .loss_read = loss_read,
    // input optimisation and gradient RFs (analysis.cu)
    .index_cols = index_cols,
    .blur_planes = blur_planes,
    .momentum_step = momentum_step,
    .renorm_rows = renorm_rows,
};

}  // namespace lvc

// ---------------------------------------------------------------- Python module
static PyObject *py_device_count(PyObject *, PyObject *) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); n = 0; }  // no driver/GPU: 0
  return PyLong_FromLong(n);
}

static PyObject *py_device_name(PyObject *, PyObject *args) {
  int i = 0;
  if (!PyArg_ParseTuple(args, "|i", &i)) return nullptr;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || i < 0 || i >= n) {
    cudaGetLastError();
    PyErr_Format(PyExc_RuntimeError, "CUDA device %d is not available (%d devices)", i, n);
    return nullptr;
  }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
    PyErr_SetString(PyExc_RuntimeError, "cudaGetDeviceProperties failed");
    return nullptr;
  }
  return PyUnicode_FromString(p.name);
}

static PyObject *py_capability(PyObject *, PyObject *args) {
  int i = 0;
  if (!PyArg_ParseTuple(args, "|i", &i)) return nullptr;
  int ma = 0, mi = 0;
  if (cudaDeviceGetAttribute(&ma, cudaDevAttrComputeCapabilityMajor, i) != cudaSuccess ||
      cudaDeviceGetAttribute(&mi, cudaDevAttrComputeCapabilityMinor, i) != cudaSuccess) {
    cudaGetLastError();
    PyErr_Format(PyExc_RuntimeError, "CUDA device %d is not available", i);
    return nullptr;
  }
  return Py_BuildValue("(ii)", ma, mi);
}

static PyObject *py_mem_info(PyObject *, PyObject *) {
  if (lvc::init() < 0) {
    PyErr_SetString(PyExc_RuntimeError, "mem_info: no usable CUDA GPU");
    return nullptr;
  }
  size_t fr = 0, tot = 0;
  if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
    PyErr_SetString(PyExc_RuntimeError, "cudaMemGetInfo failed");
    return nullptr;
  }
  return Py_BuildValue("(KK)", (unsigned long long)fr, (unsigned long long)tot);
}

static PyObject *py_empty_cache(PyObject *, PyObject *) {
  Py_BEGIN_ALLOW_THREADS
  lvc::release_caches();
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

static PyObject *py_uses_memory_pool(PyObject *, PyObject *) {
  if (lvc::init() < 0) {
    PyErr_SetString(PyExc_RuntimeError, "uses_memory_pool: no usable CUDA GPU");
    return nullptr;
  }
  return PyBool_FromLong(lvc::uses_memory_pool());
}

static PyObject *py_synchronize(PyObject *, PyObject *) {
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lvc::table.synchronize();
  Py_END_ALLOW_THREADS
  if (rc < 0) { PyErr_SetString(PyExc_RuntimeError, "CUDA synchronize failed"); return nullptr; }
  Py_RETURN_NONE;
}

static PyObject *py_runtime_version(PyObject *, PyObject *) {
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  cudaGetLastError();
  return Py_BuildValue("(ii)", rt, drv);
}

static PyMethodDef methods[] = {
    {"device_count", py_device_count, METH_NOARGS, "number of CUDA GPUs (0 without a driver; never raises)"},
    {"device_name", py_device_name, METH_VARARGS, "name of GPU i"},
    {"get_device_capability", py_capability, METH_VARARGS, "(major, minor) of GPU i"},
    {"mem_info", py_mem_info, METH_NOARGS, "(free, total) bytes of GPU 0"},
    {"empty_cache", py_empty_cache, METH_NOARGS, "free the backend's caches (cuDNN plans, workspaces, scratch, staging)"},
    {"uses_memory_pool", py_uses_memory_pool, METH_NOARGS, "whether allocations use the stream-ordered pool"},
    {"synchronize", py_synchronize, METH_NOARGS, "wait for the backend's stream"},
    {"runtime_version", py_runtime_version, METH_NOARGS, "(runtime, driver) CUDA versions"},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_cuda",
                                    "lviv_c CUDA backend (loaded on demand)", -1, methods};

PyMODINIT_FUNC PyInit__cuda(void) {
  PyObject *m = PyModule_Create(&moddef);
  if (!m) return nullptr;
  PyObject *cap = PyCapsule_New(&lvc::table, "lviv_c._cuda.lv_backend", nullptr);
  if (!cap || PyModule_AddObject(m, "table", cap) < 0) {
    Py_XDECREF(cap);
    Py_DECREF(m);
    return nullptr;
  }
  PyModule_AddIntConstant(m, "TABLE_ABI", LV_BACKEND_ABI);
  return m;
}
