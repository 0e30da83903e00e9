// lviv_c._cuda: the CPython extension that owns the GPU. It exposes device queries that never
// raise when there is no driver/GPU, and a capsule holding the op table (lv_backend) that
// the C core installs through _C._set_cuda_table.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <cstdarg>
#include <mutex>
#include "common.cuh"

namespace lvc {

cudaStream_t stream = nullptr;
bool allow_tf32 = false;
static bool inited = false;
static std::mutex init_mu;

int fail(int kind, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (table.core_set_error) table.core_set_error(kind, buf);
  return -1;
}

int cuda_fail(cudaError_t e, const char *what) {
  return fail(e == cudaErrorMemoryAllocation ? LVC_ENOMEM : LVC_ERUNTIME, "CUDA error in %s: %s (%s)",
              what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int init() {
  if (inited) return 0;
  std::lock_guard<std::mutex> lk(init_mu);
  if (inited) return 0;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) return fail(LVC_ERUNTIME, "CUDA: no usable GPU (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
  LVC_CHECK(cudaSetDevice(0), "cudaSetDevice");
  LVC_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  // stream-ordered allocator: keep freed blocks cached in the pool (no cudaFree sync per step)
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
    uint64_t thr = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr);
  }
  inited = true;
  return 0;
}

// ---- scratch buffers: a few growing device buffers owned by the backend ----
static void *scr[8];
static size_t scr_n[8];
void *scratch(size_t nbytes, int slot) {
  if (slot < 0 || slot >= 8) { fail(LVC_ERUNTIME, "scratch: bad slot %d", slot); return nullptr; }
  if (scr_n[slot] >= nbytes && scr[slot]) return scr[slot];
  if (scr[slot]) cudaFreeAsync(scr[slot], stream);
  scr[slot] = nullptr; scr_n[slot] = 0;
  size_t want = nbytes + nbytes / 4 + 256;
  cudaError_t e = cudaMallocAsync(&scr[slot], want, stream);
  if (e != cudaSuccess) { cuda_fail(e, "scratch allocation"); scr[slot] = nullptr; return nullptr; }
  scr_n[slot] = want;
  return scr[slot];
}

// cuDNN keeps one shared workspace: nothing kept with the conv nodes
static size_t conv2d_workspace_floats(const lv_conv2d_desc *) { return 0; }

// ---- memory table entries ----
static void *t_alloc(size_t nbytes) {
  if (init() < 0) return nullptr;
  void *p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, nbytes ? nbytes : 4, stream);
  if (e != cudaSuccess) {
    fail(LVC_ENOMEM, "CUDA out of memory allocating %zu bytes (%s)", nbytes, cudaGetErrorString(e));
    return nullptr;
  }
  return p;
}
static void t_free(void *p) {
  if (p && stream) cudaFreeAsync(p, stream);  // errors at interpreter exit are ignored
}
static int t_h2d(void *dst, const void *src, size_t n) {
  if (init() < 0) return -1;
  LVC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream), "copy to the GPU");
  // the source may be pageable memory the caller frees right away: make the copy complete
  LVC_CHECK(cudaStreamSynchronize(stream), "copy to the GPU");
  return 0;
}
static int t_d2h(void *dst, const void *src, size_t n) {
  if (init() < 0) return -1;
  LVC_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream), "copy from the GPU");
  LVC_CHECK(cudaStreamSynchronize(stream), "copy from the GPU");
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
  if (!inited) return 0;
  LVC_CHECK(cudaStreamSynchronize(stream), "synchronize");
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

static PyObject *py_set_allow_tf32(PyObject *, PyObject *arg) {
  int v = PyObject_IsTrue(arg);
  if (v < 0) return nullptr;
  lvc::allow_tf32 = v != 0;
  Py_RETURN_NONE;
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
    {"set_allow_tf32", py_set_allow_tf32, METH_O, "allow TF32 tensor cores in matmul/conv"},
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
