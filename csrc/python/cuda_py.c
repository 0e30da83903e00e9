/* Bindings that connect the C core to the CUDA backend (lviv_c._cuda) and move tensors between
 * devices. No CUDA headers: everything goes through the op table in csrc/backend.h. */
#include "lvpy.h"
#include "backend.h"
#include "cpu/kernels.h" /* lv_conv2d_prepare */
#include <string.h>

#define LV_CUDA_CAPSULE "lviv_c._cuda.lv_backend"

/* _set_cuda_table(capsule): install the backend's op table (called by lviv_c/cuda.py) */
static PyObject *f_set_cuda_table(PyObject *m, PyObject *cap) {
  if (cap == Py_None) { lv_cuda_install(NULL); Py_RETURN_NONE; }
  if (!PyCapsule_IsValid(cap, LV_CUDA_CAPSULE)) {
    PyErr_SetString(PyExc_TypeError, "_set_cuda_table: expected the capsule " LV_CUDA_CAPSULE);
    return NULL;
  }
  lv_backend *t = PyCapsule_GetPointer(cap, LV_CUDA_CAPSULE);
  if (!t) return NULL;
  if (lv_cuda_install(t) < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyObject *f_cuda_loaded(PyObject *m, PyObject *noarg) { return PyBool_FromLong(lv_cuda != NULL); }

/* _emulated_cuda_table(): the capsule of the emulated device's table (test device only) */
static PyObject *f_emulated_cuda_table(PyObject *m, PyObject *noarg) {
  return PyCapsule_New(lv_emulated_backend(), LV_CUDA_CAPSULE, NULL);
}

/* _emulated_transfers(): {h2d, h2d_bytes, d2h, d2h_bytes, d2d} counted since the start */
static PyObject *f_emulated_transfers(PyObject *m, PyObject *noarg) {
  const lv_emulated_stats *s = lv_emulated_counters();
  return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}", "h2d", (unsigned long long)s->h2d, "h2d_bytes",
                       (unsigned long long)s->h2d_bytes, "d2h", (unsigned long long)s->d2h, "d2h_bytes",
                       (unsigned long long)s->d2h_bytes, "d2d", (unsigned long long)s->d2d);
}

/* _to_device(tensor, device_code): a copy on that device (the same tensor when already there) */
static PyObject *f_to_device(PyObject *m, PyObject *args) {
  PyObject *o; int dev;
  if (!PyArg_ParseTuple(args, "Oi", &o, &dev)) return NULL;
  lv_tensor *t = lvpy_get(o, "to");
  if (!t) return NULL;
  if (dev != LV_CPU && dev != LV_CUDA) { PyErr_Format(PyExc_ValueError, "to: unknown device code %d", dev); return NULL; }
  if (t->st->device == dev) { Py_INCREF(o); return o; }
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_tensor_to_device(t, dev);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

/* move t's data to `device` IN PLACE: t gets a fresh storage there (offset 0) holding its
 * values, so every Python object and C structure that holds this lv_tensor (a Parameter, a
 * module's buffer, the C Adam's parameter list) sees it on the new device. Views made earlier
 * keep the old storage (like torch's param.data = ...). The gradient moves too. Leaves only. */
static int move_one(lv_tensor *t, int dev) {
  if (t->st->device == dev) return 0;
  size_t nb = (size_t)lv_numel(t) * lv_dtype_size(t->dtype);
  lv_storage *s = lv_storage_new(nb, dev, 0);
  if (!s) return -1;
  if (lv_copy_bytes(s->data, dev, lv_data(t), t->st->device, nb) < 0) { lv_storage_decref(s); return -1; }
  lv_storage_decref(t->st);
  t->st = s;
  t->offset = 0;
  return 0;
}
static PyObject *f_move_storage(PyObject *m, PyObject *args) {
  PyObject *o; int dev;
  if (!PyArg_ParseTuple(args, "Oi", &o, &dev)) return NULL;
  lv_tensor *t = lvpy_get(o, "_move_storage");
  if (!t) return NULL;
  if (dev != LV_CPU && dev != LV_CUDA) { PyErr_Format(PyExc_ValueError, "_move_storage: unknown device code %d", dev); return NULL; }
  if (t->grad_fn) { PyErr_SetString(PyExc_RuntimeError, "_move_storage: only leaf tensors can be moved in place"); return NULL; }
  if (dev == LV_CUDA && !lv_cuda) { PyErr_SetString(PyExc_RuntimeError, "CUDA backend not loaded"); return NULL; }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = move_one(t, dev);
  if (rc == 0 && t->grad) rc = move_one(t->grad, dev);
  Py_END_ALLOW_THREADS
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyObject *f_cuda_synchronize(PyObject *m, PyObject *noarg) {
  if (!lv_cuda) Py_RETURN_NONE;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lv_cuda->synchronize();
  Py_END_ALLOW_THREADS
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

/* _nn_kernel(name, tensors, ints, floats): run one kernel-level entry of the backend table
 * (csrc/backend.h) of the tensors' device on caller-made buffers: the CPU and the CUDA backend
 * through the same code, for parity tests of the kernels the op layer calls; not a user API.
 * None in `tensors` is NULL. Every tensor must be float32; the number of tensors, ints and floats
 * is checked against the kernel's argument list below. */
#define KMAX 10
typedef enum { K_CONV_F, K_CONV_BD, K_CONV_BW, K_BN_FT, K_BN_FE, K_BN_BT, K_BN_BE, K_RO_F, K_RO_B, K_PL, K_ADAM, K_N } kid;
static const struct { const char *name; int nt, ni, nf; } kspec[K_N] = {
    [K_CONV_F] = {"conv2d_forward", 4, 14, 0},         /* x w bias y */
    [K_CONV_BD] = {"conv2d_backward_data", 3, 14, 0},  /* gy w gx */
    [K_CONV_BW] = {"conv2d_backward_weight", 4, 14, 0},/* x gy gw gb */
    [K_BN_FT] = {"bn_forward_train", 7, 4, 1},         /* x gamma beta y mean invstd var_unbiased */
    [K_BN_FE] = {"bn_forward_eval", 6, 4, 1},          /* x gamma beta rmean rvar y */
    [K_BN_BT] = {"bn_backward_train", 9, 4, 0},        /* x y gy gamma mean invstd gx ggamma gbeta */
    [K_BN_BE] = {"bn_backward_eval", 9, 4, 1},         /* x y gy gamma rmean rvar gx ggamma gbeta */
    [K_RO_F] = {"readout_forward", 5, 6, 0},           /* x pos feat bias out */
    [K_RO_B] = {"readout_backward", 8, 6, 0},          /* x pos feat gout gx gpos gfeat gbias */
    [K_PL] = {"poisson_loss", 4, 0, 2},                /* yhat y loss(1) grad; eps scale */
    [K_ADAM] = {"adam_step", 5, 3, 5},                 /* p g m v vmax; step amsgrad maximize; lr b1 b2 eps wd */
};
static float *kp(lv_tensor **t, int i) { return t[i] ? lv_f32(t[i]) : NULL; }
static PyObject *f_nn_kernel(PyObject *m, PyObject *args) {
  const char *name; PyObject *tl, *il, *fl;
  if (!PyArg_ParseTuple(args, "sOOO", &name, &tl, &il, &fl)) return NULL;
  int k = 0;
  while (k < K_N && strcmp(name, kspec[k].name)) k++;
  if (k == K_N) { PyErr_Format(PyExc_ValueError, "_nn_kernel: unknown kernel %s", name); return NULL; }
  lv_tensor *t[KMAX] = {0};
  long long I[16] = {0}; double F[8] = {0};
  Py_ssize_t nt = PySequence_Size(tl), ni = PySequence_Size(il), nf = PySequence_Size(fl);
  if (nt < 0 || ni < 0 || nf < 0) return NULL;
  if (nt != kspec[k].nt || ni != kspec[k].ni || nf != kspec[k].nf) {
    PyErr_Format(PyExc_ValueError, "_nn_kernel %s: expected %d tensors, %d ints and %d floats, got %zd, %zd and %zd",
                 name, kspec[k].nt, kspec[k].ni, kspec[k].nf, nt, ni, nf);
    return NULL;
  }
  for (Py_ssize_t i = 0; i < nt; i++) {
    PyObject *o = PySequence_GetItem(tl, i);
    if (!o) return NULL;
    if (o != Py_None) {
      t[i] = lvpy_get(o, "_nn_kernel");
      if (!t[i]) { Py_DECREF(o); return NULL; }
      if (t[i]->dtype != LV_F32) { Py_DECREF(o); PyErr_Format(PyExc_TypeError, "_nn_kernel %s: tensor %zd is not float32", name, i); return NULL; }
    }
    Py_DECREF(o);
  }
  if (lv_check_devices(name, t, NULL, (int)nt) < 0) return lvpy_err();
  for (Py_ssize_t i = 0; i < ni; i++) {
    PyObject *o = PySequence_GetItem(il, i);
    if (!o) return NULL;
    I[i] = PyLong_AsLongLong(o); Py_DECREF(o);
    if (PyErr_Occurred()) return NULL;
  }
  for (Py_ssize_t i = 0; i < nf; i++) {
    PyObject *o = PySequence_GetItem(fl, i);
    if (!o) return NULL;
    F[i] = PyFloat_AsDouble(o); Py_DECREF(o);
    if (PyErr_Occurred()) return NULL;
  }
  int dev = LV_CPU;
  for (Py_ssize_t i = 0; i < nt; i++) if (t[i]) { dev = t[i]->st->device; break; }
  const lv_backend *be = lv_backend_for(dev);
  if (!be) return lvpy_err();
  int rc = 0;
  int N = (int)I[0], C = (int)I[1], HW = (int)I[2], elu = (int)I[3]; /* batch norm */
  int B = (int)I[0], H = (int)I[2], W = (int)I[3], Nn = (int)I[4], sh = (int)I[5]; /* readout */
  lv_conv2d_desc d = {(int)I[0], (int)I[1], (int)I[2], (int)I[3], (int)I[4], (int)I[5], (int)I[6], (int)I[7],
                      (int)I[8], (int)I[9], (int)I[10], (int)I[11], (int)I[12], (int)I[13], 0, 0};
  lv_adam_attr at = {(float)F[0], (float)F[1], (float)F[2], (float)F[3], (float)F[4], (int64_t)I[0], (int)I[1], (int)I[2]};
  Py_BEGIN_ALLOW_THREADS
  switch ((kid)k) {
    case K_CONV_F: case K_CONV_BD: case K_CONV_BW:
      /* ints: N C_in H W C_out kh kw sh sw ph pw dh dw groups */
      rc = lv_conv2d_prepare(&d);
      if (rc == 0 && k == K_CONV_F) rc = be->conv2d_forward(&d, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), NULL);
      else if (rc == 0 && k == K_CONV_BD) rc = be->conv2d_backward_data(&d, kp(t, 0), kp(t, 1), kp(t, 2), NULL);
      else if (rc == 0) rc = be->conv2d_backward_weight(&d, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), NULL);
      break;
    case K_BN_FT:
      rc = be->bn_forward_train(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), (float)F[0], elu, kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6));
      break;
    case K_BN_FE:
      rc = be->bn_forward_eval(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), (float)F[0], elu, kp(t, 5));
      break;
    case K_BN_BT:
      rc = be->bn_backward_train(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), elu, kp(t, 6), kp(t, 7), kp(t, 8));
      break;
    case K_BN_BE:
      rc = be->bn_backward_eval(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), (float)F[0], elu, kp(t, 6), kp(t, 7), kp(t, 8));
      break;
    case K_RO_F:
      rc = be->readout_forward(B, C, H, W, Nn, sh, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4));
      break;
    case K_RO_B:
      rc = be->readout_backward(B, C, H, W, Nn, sh, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6), kp(t, 7));
      break;
    case K_PL:
      rc = be->poisson_loss(t[0] ? lv_numel(t[0]) : 0, kp(t, 0), kp(t, 1), (float)F[0], (float)F[1], kp(t, 2), kp(t, 3));
      break;
    case K_ADAM:
      rc = be->adam_step(t[0] ? lv_numel(t[0]) : 0, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), &at);
      break;
    default: break;
  }
  if (rc == 0) rc = be->synchronize();
  Py_END_ALLOW_THREADS
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyMethodDef cuda_methods[] = {
    {"_nn_kernel", f_nn_kernel, METH_VARARGS, "run one NN kernel on caller buffers (tests)"},
    {"_set_cuda_table", f_set_cuda_table, METH_O, "install the CUDA backend's op table (a capsule)"},
    {"_cuda_loaded", f_cuda_loaded, METH_NOARGS, NULL},
    {"_emulated_cuda_table", f_emulated_cuda_table, METH_NOARGS, "the emulated CUDA device's op table (a capsule; test device only)"},
    {"_emulated_transfers", f_emulated_transfers, METH_NOARGS, "the emulated device's transfer counters (a dict)"},
    {"_to_device", f_to_device, METH_VARARGS, "copy a tensor to device code 0 (cpu) or 1 (cuda)"},
    {"_cuda_synchronize", f_cuda_synchronize, METH_NOARGS, NULL},
    {"_move_storage", f_move_storage, METH_VARARGS, "move a leaf tensor (and its grad) to device code 0/1 in place"},
    {NULL}};

int lv_py_init_cuda(PyObject *m) {
  if (PyModule_AddIntConstant(m, "CUDA_TABLE_ABI", LV_BACKEND_ABI) < 0) return -1;
  return PyModule_AddFunctions(m, cuda_methods);
}
