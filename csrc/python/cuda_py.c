/* Bindings that connect the C core to the CUDA backend (lviv_c._cuda) and move tensors between
 * devices. No CUDA headers: everything goes through the op table in csrc/cuda_dispatch.h. */
#include "lvpy.h"
#include "cuda_dispatch.h"
#include "cpu/kernels.h"
#include <string.h>

#define LV_CUDA_CAPSULE "lviv_c._cuda.lv_cuda_table"

/* _set_cuda_table(capsule): install the backend's op table (called by lviv_c/cuda.py) */
static PyObject *f_set_cuda_table(PyObject *m, PyObject *cap) {
  if (cap == Py_None) { lv_cuda_install(NULL); Py_RETURN_NONE; }
  if (!PyCapsule_IsValid(cap, LV_CUDA_CAPSULE)) {
    PyErr_SetString(PyExc_TypeError, "_set_cuda_table: expected the capsule " LV_CUDA_CAPSULE);
    return NULL;
  }
  lv_cuda_table *t = PyCapsule_GetPointer(cap, LV_CUDA_CAPSULE);
  if (!t) return NULL;
  if (lv_cuda_install(t) < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyObject *f_cuda_loaded(PyObject *m, PyObject *noarg) { return PyBool_FromLong(lv_cuda != NULL); }

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

/* _nn_kernel(name, tensors, ints, floats): run one NN kernel (csrc/cpu/kernels.h on CPU
 * tensors, the CUDA table's on CUDA tensors) on caller-made buffers. For parity tests of the
 * kernels that the op layer (nn_ops.c) calls; not a user API. None in `tensors` is NULL. */
#define KMAX 10
static float *kp(lv_tensor **t, int i) { return t[i] ? lv_f32(t[i]) : NULL; }
static PyObject *f_nn_kernel(PyObject *m, PyObject *args) {
  const char *name; PyObject *tl, *il, *fl;
  if (!PyArg_ParseTuple(args, "sOOO", &name, &tl, &il, &fl)) return NULL;
  lv_tensor *t[KMAX] = {0};
  long long I[16] = {0}; double F[8] = {0};
  Py_ssize_t nt = PySequence_Size(tl), ni = PySequence_Size(il), nf = PySequence_Size(fl);
  if (nt < 0 || ni < 0 || nf < 0 || nt > KMAX || ni > 16 || nf > 8) {
    PyErr_SetString(PyExc_ValueError, "_nn_kernel: bad argument lists");
    return NULL;
  }
  int dev = -1;
  for (Py_ssize_t i = 0; i < nt; i++) {
    PyObject *o = PySequence_GetItem(tl, i);
    if (!o) return NULL;
    if (o != Py_None) {
      t[i] = lvpy_get(o, "_nn_kernel");
      if (!t[i]) { Py_DECREF(o); return NULL; }
      if (dev < 0) dev = t[i]->st->device;
      else if (dev != t[i]->st->device) { Py_DECREF(o); PyErr_SetString(PyExc_ValueError, "_nn_kernel: mixed devices"); return NULL; }
    }
    Py_DECREF(o);
  }
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
  int cu = dev == LV_CUDA;
  if (cu && !lv_cuda) { PyErr_SetString(PyExc_RuntimeError, "CUDA backend not loaded"); return NULL; }
  int rc = -2;
  double loss = 0;
  Py_BEGIN_ALLOW_THREADS
  if (!strcmp(name, "conv2d_forward") || !strcmp(name, "conv2d_backward_data") || !strcmp(name, "conv2d_backward_weight")) {
    /* ints: N C_in H W C_out kh kw sh sw ph pw dh dw groups */
    lv_conv2d_desc d = {(int)I[0], (int)I[1], (int)I[2], (int)I[3], (int)I[4], (int)I[5], (int)I[6], (int)I[7],
                        (int)I[8], (int)I[9], (int)I[10], (int)I[11], (int)I[12], (int)I[13], 0, 0};
    rc = lv_conv2d_prepare(&d);
    if (rc == 0 && name[7] == 'f') /* x w bias y */
      rc = cu ? lv_cuda->conv2d_forward(&d, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3))
              : lv_conv2d_forward(&d, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), NULL);
    else if (rc == 0 && name[16] == 'd') /* gy w gx */
      rc = cu ? lv_cuda->conv2d_backward_data(&d, kp(t, 0), kp(t, 1), kp(t, 2))
              : lv_conv2d_backward_data(&d, kp(t, 0), kp(t, 1), kp(t, 2), NULL);
    else if (rc == 0) /* x gy gw gb */
      rc = cu ? lv_cuda->conv2d_backward_weight(&d, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3))
              : lv_conv2d_backward_weight(&d, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), NULL);
  } else if (!strcmp(name, "bn_forward_train")) {
    /* ints N C HW elu; floats eps; x gamma beta y mean invstd var_unbiased */
    int N = (int)I[0], C = (int)I[1], HW = (int)I[2], elu = (int)I[3];
    if (cu) rc = lv_cuda->bn_forward_train(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), (float)F[0], elu, kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6));
    else rc = (elu ? lv_bn_elu_forward_train : lv_batchnorm_forward_train)(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), (float)F[0], kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6));
  } else if (!strcmp(name, "bn_forward_eval")) {
    /* x gamma beta rmean rvar y */
    int N = (int)I[0], C = (int)I[1], HW = (int)I[2], elu = (int)I[3];
    if (cu) rc = lv_cuda->bn_forward_eval(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), (float)F[0], elu, kp(t, 5));
    else rc = (elu ? lv_bn_elu_forward_eval : lv_batchnorm_forward_eval)(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), (float)F[0], kp(t, 5));
  } else if (!strcmp(name, "bn_backward_train")) {
    /* x y gy gamma mean invstd gx ggamma gbeta */
    int N = (int)I[0], C = (int)I[1], HW = (int)I[2], elu = (int)I[3];
    if (cu) rc = lv_cuda->bn_backward_train(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), elu, kp(t, 6), kp(t, 7), kp(t, 8));
    else if (elu) rc = lv_bn_elu_backward_train(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6), kp(t, 7), kp(t, 8));
    else rc = lv_batchnorm_backward_train(N, C, HW, kp(t, 0), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6), kp(t, 7), kp(t, 8));
  } else if (!strcmp(name, "bn_backward_eval")) {
    /* x y gy gamma rmean rvar gx ggamma gbeta */
    int N = (int)I[0], C = (int)I[1], HW = (int)I[2], elu = (int)I[3];
    if (cu) rc = lv_cuda->bn_backward_eval(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), (float)F[0], elu, kp(t, 6), kp(t, 7), kp(t, 8));
    else if (elu) rc = lv_bn_elu_backward_eval(N, C, HW, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), (float)F[0], kp(t, 6), kp(t, 7), kp(t, 8));
    else rc = lv_batchnorm_backward_eval(N, C, HW, kp(t, 0), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), (float)F[0], kp(t, 6), kp(t, 7), kp(t, 8));
  } else if (!strcmp(name, "readout_forward")) {
    /* ints B C H W Nn shared; x pos feat bias out */
    int B = (int)I[0], C = (int)I[1], H = (int)I[2], W = (int)I[3], Nn = (int)I[4], sh = (int)I[5];
    rc = (cu ? lv_cuda->readout_forward : lv_readout_forward)(B, C, H, W, Nn, sh, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4));
  } else if (!strcmp(name, "readout_backward")) {
    /* x pos feat gout gx gpos gfeat gbias */
    int B = (int)I[0], C = (int)I[1], H = (int)I[2], W = (int)I[3], Nn = (int)I[4], sh = (int)I[5];
    rc = (cu ? lv_cuda->readout_backward : lv_readout_backward)(B, C, H, W, Nn, sh, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), kp(t, 4), kp(t, 5), kp(t, 6), kp(t, 7));
  } else if (!strcmp(name, "poisson_loss")) {
    /* floats eps scale; yhat y loss(1) grad */
    int64_t n = lv_numel(t[0]);
    if (cu) rc = lv_cuda->poisson_loss(n, kp(t, 0), kp(t, 1), (float)F[0], (float)F[1], kp(t, 2), kp(t, 3));
    else { rc = lv_poisson_loss(n, kp(t, 0), kp(t, 1), (float)F[0], (float)F[1], &loss, kp(t, 3)); if (rc == 0) kp(t, 2)[0] = (float)loss; }
  } else if (!strcmp(name, "adam_step")) {
    /* ints step; floats lr b1 b2 eps wd; p g m v */
    int64_t n = lv_numel(t[0]);
    rc = (cu ? lv_cuda->adam_step : lv_adam_step)(n, kp(t, 0), kp(t, 1), kp(t, 2), kp(t, 3), (float)F[0], (float)F[1], (float)F[2], (float)F[3], (float)F[4], (int64_t)I[0]);
  }
  if (rc == 0 && cu) rc = lv_cuda->synchronize();
  Py_END_ALLOW_THREADS
  if (rc == -2) { PyErr_Format(PyExc_ValueError, "_nn_kernel: unknown kernel %s", name); return NULL; }
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyMethodDef cuda_methods[] = {
    {"_nn_kernel", f_nn_kernel, METH_VARARGS, "run one NN kernel on caller buffers (tests)"},
    {"_set_cuda_table", f_set_cuda_table, METH_O, "install the CUDA backend's op table (a capsule)"},
    {"_cuda_loaded", f_cuda_loaded, METH_NOARGS, NULL},
    {"_to_device", f_to_device, METH_VARARGS, "copy a tensor to device code 0 (cpu) or 1 (cuda)"},
    {"_cuda_synchronize", f_cuda_synchronize, METH_NOARGS, NULL},
    {"_move_storage", f_move_storage, METH_VARARGS, "move a leaf tensor (and its grad) to device code 0/1 in place"},
    {NULL}};

int lv_py_init_cuda(PyObject *m) {
  if (PyModule_AddIntConstant(m, "CUDA_TABLE_ABI", LV_CUDA_TABLE_ABI) < 0) return -1;
  return PyModule_AddFunctions(m, cuda_methods);
}
