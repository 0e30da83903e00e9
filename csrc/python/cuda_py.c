/* Bindings that connect the C core to the CUDA backend (lviv_c._cuda) and move tensors between
 * devices. No CUDA headers: everything goes through the op table in csrc/backend.h. */
#include "lvpy.h"
#include "backend.h"
#include "ops/ops.h"
#include <stddef.h>
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

/* _to_device(tensor, device_code): a copy on that device (the same tensor when already there),
 * tracked by autograd like torch's .to(device) */
static PyObject *f_to_device(PyObject *m, PyObject *args) {
  PyObject *o; int dev;
  if (!PyArg_ParseTuple(args, "Oi", &o, &dev)) return NULL;
  lv_tensor *t = lvpy_get(o, "to");
  if (!t) return NULL;
  if (dev != LV_CPU && dev != LV_CUDA) { PyErr_Format(PyExc_ValueError, "to: unknown device code %d", dev); return NULL; }
  if (t->st->device == dev) { Py_INCREF(o); return o; }
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_to_device(t, dev);
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

/* the device backends' run-time switches (csrc/backend.h lv_device_flags), set by lviv_c.backends
 * and lviv_c.cuda (LVIV_CUDA_SYNC); they live in the core, so they exist on a CPU-only build */
static const struct { const char *name; size_t off; } flag_fields[] = {
    {"cudnn_deterministic", offsetof(lv_device_flags, cudnn_deterministic)},
    {"cudnn_benchmark", offsetof(lv_device_flags, cudnn_benchmark)},
    {"cudnn_allow_tf32", offsetof(lv_device_flags, cudnn_allow_tf32)},
    {"matmul_allow_tf32", offsetof(lv_device_flags, matmul_allow_tf32)},
    {"sync_launches", offsetof(lv_device_flags, sync_launches)},
};
#define N_FLAGS ((int)(sizeof flag_fields / sizeof flag_fields[0]))

static PyObject *f_device_flags(PyObject *m, PyObject *noarg) {
  PyObject *d = PyDict_New();
  if (!d) return NULL;
  for (int i = 0; i < N_FLAGS; i++) {
    PyObject *v = PyBool_FromLong(*(int *)((char *)lv_flags() + flag_fields[i].off));
    if (!v || PyDict_SetItemString(d, flag_fields[i].name, v) < 0) { Py_XDECREF(v); Py_DECREF(d); return NULL; }
    Py_DECREF(v);
  }
  return d;
}

/* _set_device_flag(name, value): one switch; ValueError naming the known ones otherwise */
static PyObject *f_set_device_flag(PyObject *m, PyObject *args) {
  const char *name; PyObject *val;
  if (!PyArg_ParseTuple(args, "sO", &name, &val)) return NULL;
  int v = PyObject_IsTrue(val);
  if (v < 0) return NULL;
  for (int i = 0; i < N_FLAGS; i++)
    if (!strcmp(name, flag_fields[i].name)) {
      *(int *)((char *)lv_flags() + flag_fields[i].off) = v;
      Py_RETURN_NONE;
    }
  PyErr_Format(PyExc_ValueError, "_set_device_flag: unknown switch '%s' (cudnn_deterministic, cudnn_benchmark, "
               "cudnn_allow_tf32, matmul_allow_tf32, sync_launches)", name);
  return NULL;
}

static PyMethodDef cuda_methods[] = {
    {"_device_flags", f_device_flags, METH_NOARGS, "the device backends' run-time switches (a dict)"},
    {"_set_device_flag", f_set_device_flag, METH_VARARGS, "set one device switch: (name, bool)"},
    {"_set_cuda_table", f_set_cuda_table, METH_O, "install the CUDA backend's op table (a capsule)"},
    {"_cuda_loaded", f_cuda_loaded, METH_NOARGS, NULL},
    {"_emulated_cuda_table", f_emulated_cuda_table, METH_NOARGS, "the emulated CUDA device's op table (a capsule; test device only)"},
    {"_emulated_transfers", f_emulated_transfers, METH_NOARGS, "the emulated device's transfer counters (a dict)"},
    {"_to_device", f_to_device, METH_VARARGS, "copy a tensor to device code 0 (cpu) or 1 (cuda)"},
    {"_cuda_synchronize", f_cuda_synchronize, METH_NOARGS, NULL},
    {"_move_storage", f_move_storage, METH_VARARGS, "move a leaf tensor (and its grad) to device code 0/1 in place"},
    {NULL}};

int lv_py_init_cuda(PyObject *m) {
  if (PyModule_AddIntConstant(m, "BACKEND_ABI", LV_BACKEND_ABI) < 0) return -1;
  return PyModule_AddFunctions(m, cuda_methods);
}
