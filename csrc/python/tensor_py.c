/* The Tensor type (a thin handle on lv_tensor) and the tensor op bindings. */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL LVIV_ARRAY_API
#define NO_IMPORT_ARRAY
#include "lvpy.h"
#include <limits.h>
#include <numpy/arrayobject.h>
#include "ops/ops.h"
#include "backend.h"
#include "cpu/kernels.h" /* lv_num_threads */
#include "structmember.h"

typedef struct {
  PyObject_HEAD
  lv_tensor *t;
  PyObject *dict;
  PyObject *weaklist;
} TensorObject;

static PyTypeObject TensorBaseType;
static PyTypeObject *tensor_cls = NULL; /* the Python lviv_c.Tensor subclass, once registered */

int lvpy_is_tensor(PyObject *o) { return PyObject_TypeCheck(o, &TensorBaseType); }

lv_tensor *lvpy_get(PyObject *o, const char *what) {
  if (!PyObject_TypeCheck(o, &TensorBaseType)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a lviv_c Tensor, got %s", what, Py_TYPE(o)->tp_name);
    return NULL;
  }
  lv_tensor *t = ((TensorObject *)o)->t;
  if (!t) { PyErr_Format(PyExc_RuntimeError, "%s: uninitialised tensor", what); return NULL; }
  return t;
}

PyObject *lvpy_wrap(lv_tensor *t) {
  if (!t) return lvpy_err();
  PyTypeObject *tp = tensor_cls ? tensor_cls : &TensorBaseType;
  TensorObject *o = (TensorObject *)tp->tp_alloc(tp, 0);
  if (!o) { lv_tensor_decref(t); return NULL; }
  o->t = t;
  return (PyObject *)o;
}

static void tensor_dealloc(TensorObject *self) {
  PyObject_GC_UnTrack(self);
  if (self->weaklist) PyObject_ClearWeakRefs((PyObject *)self);
  Py_CLEAR(self->dict);
  lv_tensor_decref(self->t);
  self->t = NULL;
  Py_TYPE(self)->tp_free((PyObject *)self);
}
static int tensor_traverse(TensorObject *self, visitproc visit, void *arg) { Py_VISIT(self->dict); return 0; }
static int tensor_clear(TensorObject *self) { Py_CLEAR(self->dict); return 0; }

static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  TensorObject *o = (TensorObject *)type->tp_alloc(type, 0);
  return (PyObject *)o;
}

#define GET(self) lv_tensor *t = ((TensorObject *)(self))->t; if (!t) { PyErr_SetString(PyExc_RuntimeError, "uninitialised tensor"); return NULL; }

static PyObject *t_shape(PyObject *self, void *c) {
  GET(self);
  PyObject *tup = PyTuple_New(t->ndim);
  if (!tup) return NULL;
  for (int i = 0; i < t->ndim; i++) {
    PyObject *v = PyLong_FromLongLong(t->shape[i]);
    if (!v) { Py_DECREF(tup); return NULL; }
    PyTuple_SET_ITEM(tup, i, v);
  }
  return tup;
}
static PyObject *t_ndim(PyObject *self, void *c) { GET(self); return PyLong_FromLong(t->ndim); }
static PyObject *t_dtype_code(PyObject *self, void *c) { GET(self); return PyLong_FromLong(t->dtype); }
static PyObject *t_device_code(PyObject *self, void *c) { GET(self); return PyLong_FromLong(t->st->device); }
static PyObject *t_rg(PyObject *self, void *c) { GET(self); return PyBool_FromLong(t->requires_grad); }
static int t_set_rg(PyObject *self, PyObject *v, void *c) {
  lv_tensor *t = ((TensorObject *)self)->t;
  int on = PyObject_IsTrue(v);
  if (on < 0) return -1;
  if (t->grad_fn && !on) {
    PyErr_SetString(PyExc_RuntimeError, "you can only change requires_grad flags of leaf variables; use .detach()");
    return -1;
  }
  if (on && t->dtype != LV_F32) {
    PyErr_SetString(PyExc_RuntimeError, "only float32 tensors can require gradients (this one is int64)");
    return -1;
  }
  t->requires_grad = on;
  return 0;
}
static PyObject *t_grad(PyObject *self, void *c) {
  GET(self);
  if (!t->grad) Py_RETURN_NONE;
  lv_tensor_incref(t->grad);
  return lvpy_wrap(t->grad);
}
static int t_set_grad(PyObject *self, PyObject *v, void *c) {
  lv_tensor *t = ((TensorObject *)self)->t;
  t->grad_stale = 0;
  if (v == NULL || v == Py_None) { lv_tensor_decref(t->grad); t->grad = NULL; return 0; }
  lv_tensor *g = lvpy_get(v, "grad assignment");
  if (!g) return -1;
  if (!lv_same_shape(g, t)) { PyErr_SetString(PyExc_RuntimeError, "assigned grad has a different shape than the tensor"); return -1; }
  lv_tensor *d = lv_tensor_detach(g);
  if (!d) { lvpy_err(); return -1; }
  lv_tensor_decref(t->grad);
  t->grad = d;
  return 0;
}
static PyObject *t_grad_fn(PyObject *self, void *c) {
  GET(self);
  if (!t->grad_fn) Py_RETURN_NONE;
  return PyUnicode_FromFormat("<%sBackward>", t->grad_fn->op->name);
}
static PyObject *t_is_leaf(PyObject *self, void *c) { GET(self); return PyBool_FromLong(t->grad_fn == NULL); }
static PyObject *t_ptr(PyObject *self, void *c) { GET(self); return PyLong_FromVoidPtr(lv_data(t)); }
static PyObject *t_storage_id(PyObject *self, void *c) { GET(self); return PyLong_FromVoidPtr(t->st); }

static PyGetSetDef tensor_getset[] = {
    {"shape", t_shape, NULL, "the tensor's shape", NULL},
    {"ndim", t_ndim, NULL, NULL, NULL},
    {"_dtype_code", t_dtype_code, NULL, NULL, NULL},
    {"_device_code", t_device_code, NULL, NULL, NULL},
    {"requires_grad", t_rg, t_set_rg, NULL, NULL},
    {"grad", t_grad, t_set_grad, NULL, NULL},
    {"_grad_fn_name", t_grad_fn, NULL, NULL, NULL},
    {"is_leaf", t_is_leaf, NULL, NULL, NULL},
    {"_data_ptr", t_ptr, NULL, NULL, NULL},
    {"_storage_id", t_storage_id, NULL, NULL, NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL}};

/* buffer protocol: zero-copy NumPy views of CPU tensors */
static int tensor_getbuffer(PyObject *self, Py_buffer *view, int flags) {
  lv_tensor *t = ((TensorObject *)self)->t;
  if (!t) { PyErr_SetString(PyExc_BufferError, "uninitialised tensor"); return -1; }
  if (t->st->device != LV_CPU) {
    PyErr_SetString(PyExc_BufferError, "a CUDA tensor has no host buffer; call .cpu() first");
    return -1;
  }
  Py_ssize_t *arr = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (t->ndim ? t->ndim : 1));
  if (!arr) { PyErr_NoMemory(); return -1; }
  size_t es = lv_dtype_size(t->dtype);
  Py_ssize_t s = (Py_ssize_t)es;
  for (int i = t->ndim - 1; i >= 0; i--) { arr[i] = t->shape[i]; arr[t->ndim + i] = s; s *= t->shape[i]; }
  view->buf = lv_data(t);
  view->obj = self; Py_INCREF(self);
  view->len = (Py_ssize_t)(lv_numel(t) * es);
  view->readonly = 0;
  view->itemsize = (Py_ssize_t)es;
  view->format = (flags & PyBUF_FORMAT) ? (t->dtype == LV_F32 ? "f" : "q") : NULL;
  view->ndim = t->ndim;
  view->shape = arr;
  view->strides = arr + t->ndim;
  view->suboffsets = NULL;
  view->internal = arr;
  return 0;
}
static void tensor_releasebuffer(PyObject *self, Py_buffer *view) { PyMem_Free(view->internal); }
static PyBufferProcs tensor_as_buffer = {tensor_getbuffer, tensor_releasebuffer};

static PyTypeObject TensorBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lviv_c._C.TensorBase",
    .tp_basicsize = sizeof(TensorObject),
    .tp_dealloc = (destructor)tensor_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)tensor_traverse,
    .tp_clear = (inquiry)tensor_clear,
    .tp_doc = "C tensor handle; use lviv_c.Tensor",
    .tp_getset = tensor_getset,
    .tp_new = tensor_new,
    .tp_as_buffer = &tensor_as_buffer,
    .tp_dictoffset = offsetof(TensorObject, dict),
    .tp_weaklistoffset = offsetof(TensorObject, weaklist),
};

/* ---------------- module functions ---------------- */
static PyObject *f_set_tensor_class(PyObject *m, PyObject *cls) {
  if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &TensorBaseType)) {
    PyErr_SetString(PyExc_TypeError, "expected a subclass of TensorBase");
    return NULL;
  }
  Py_INCREF(cls);
  Py_XDECREF((PyObject *)tensor_cls);
  tensor_cls = (PyTypeObject *)cls;
  Py_RETURN_NONE;
}

/* share: make `obj` (a fresh instance) refer to a new header on src's storage */
static PyObject *f_assign(PyObject *m, PyObject *args) {
  PyObject *obj, *src; int detach;
  if (!PyArg_ParseTuple(args, "OOp", &obj, &src, &detach)) return NULL;
  if (!PyObject_TypeCheck(obj, &TensorBaseType)) { PyErr_SetString(PyExc_TypeError, "_assign: not a tensor"); return NULL; }
  lv_tensor *s = lvpy_get(src, "_assign");
  if (!s) return NULL;
  lv_tensor *t;
  if (detach) { t = lv_tensor_detach(s); if (!t) return lvpy_err(); }
  else { t = s; lv_tensor_incref(t); }
  lv_tensor_decref(((TensorObject *)obj)->t);
  ((TensorObject *)obj)->t = t;
  Py_RETURN_NONE;
}

static void release_pyobj(void *ctx, void *data) {
  PyGILState_STATE st = PyGILState_Ensure();
  Py_DECREF((PyObject *)ctx);
  PyGILState_Release(st);
}

static PyObject *f_from_numpy(PyObject *m, PyObject *args) {
  PyObject *obj; int copy = 0;
  if (!PyArg_ParseTuple(args, "O|p", &obj, &copy)) return NULL;
  if (!PyArray_Check(obj)) { PyErr_Format(PyExc_TypeError, "from_numpy: expected a numpy.ndarray, got %s", Py_TYPE(obj)->tp_name); return NULL; }
  PyArrayObject *a = (PyArrayObject *)obj;
  int tn = PyArray_TYPE(a);
  int dtype;
  if (tn == NPY_FLOAT32) dtype = LV_F32;
  else if (tn == NPY_INT64) dtype = LV_I64;
  else {
    PyErr_Format(PyExc_TypeError, "from_numpy: expected a float32 or int64 array, got %s (convert with .astype)",
                 PyArray_DESCR(a)->typeobj->tp_name);
    return NULL;
  }
  int nd = PyArray_NDIM(a);
  if (nd > LV_MAXDIM) { PyErr_Format(PyExc_ValueError, "from_numpy: at most %d dimensions", LV_MAXDIM); return NULL; }
  int64_t shape[LV_MAXDIM];
  for (int i = 0; i < nd; i++) shape[i] = PyArray_DIM(a, i);
  int ok = PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a) && PyArray_ISWRITEABLE(a) &&
           PyArray_ISNOTSWAPPED(a) && !copy;
  if (ok) {
    Py_INCREF(obj);
    lv_storage *st = lv_storage_wrap(PyArray_DATA(a), PyArray_NBYTES(a), LV_CPU, release_pyobj, obj);
    if (!st) { Py_DECREF(obj); return lvpy_err(); }
    lv_tensor *t = calloc(1, sizeof *t);
    if (!t) { lv_storage_decref(st); return PyErr_NoMemory(); }
    t->st = st; t->ndim = nd; t->dtype = dtype; t->refcount = 1;
    for (int i = 0; i < nd; i++) t->shape[i] = shape[i];
    return lvpy_wrap(t);
  }
  lv_tensor *t = lv_tensor_new(nd, shape, dtype, LV_CPU, 0);
  if (!t) return lvpy_err();
  PyArrayObject *c = (PyArrayObject *)PyArray_FromAny(obj, PyArray_DescrFromType(tn), 0, 0,
                                                      NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
  if (!c) { lv_tensor_decref(t); return NULL; }
  memcpy(lv_data(t), PyArray_DATA(c), (size_t)lv_numel(t) * lv_dtype_size(dtype));
  Py_DECREF(c);
  return lvpy_wrap(t);
}

static int parse_shape(PyObject *seq, int64_t *shape, const char *what) {
  PyObject *f = PySequence_Fast(seq, "shape must be a sequence of ints");
  if (!f) return -1;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
  if (n > LV_MAXDIM) { Py_DECREF(f); PyErr_Format(PyExc_ValueError, "%s: at most %d dimensions", what, LV_MAXDIM); return -1; }
  for (Py_ssize_t i = 0; i < n; i++) {
    shape[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(f, i));
    if (shape[i] == -1 && PyErr_Occurred()) { Py_DECREF(f); return -1; }
  }
  Py_DECREF(f);
  return (int)n;
}

static PyObject *f_empty(PyObject *m, PyObject *args) {
  PyObject *shp; int dtype = LV_F32, zero = 0;
  if (!PyArg_ParseTuple(args, "O|ip", &shp, &dtype, &zero)) return NULL;
  if (dtype != LV_F32 && dtype != LV_I64) {
    PyErr_Format(PyExc_ValueError, "empty: unknown dtype code %d (0 float32, 1 int64)", dtype);
    return NULL;
  }
  int64_t shape[LV_MAXDIM];
  int nd = parse_shape(shp, shape, "empty");
  if (nd < 0) return NULL;
  return lvpy_wrap(lv_tensor_new(nd, shape, dtype, LV_CPU, zero));
}

/* in-place fills: kind 0 uniform [a,b), 1 normal(a, b), 2 constant a */
static PyObject *f_fill(PyObject *m, PyObject *args) {
  PyObject *o; int kind; double a = 0, b = 1;
  if (!PyArg_ParseTuple(args, "Oi|dd", &o, &kind, &a, &b)) return NULL;
  if (kind < 0 || kind > 2) { PyErr_Format(PyExc_ValueError, "fill_: unknown kind %d", kind); return NULL; }
  lv_tensor *t = lvpy_get(o, "fill");
  if (!t) return NULL;
  int64_t n = lv_numel(t);
  if (t->st->device != LV_CPU) {
    /* CUDA: fill a host tensor with the same code (so a seeded fill draws the same numbers on
     * both devices) and copy it over */
    lv_tensor *h = lv_tensor_new(t->ndim, t->shape, t->dtype, LV_CPU, 0);
    if (!h) return lvpy_err();
    PyObject *ho = lvpy_wrap(h);
    if (!ho) return NULL;
    PyObject *a2 = Py_BuildValue("(Oidd)", ho, kind, a, b);
    PyObject *r = a2 ? f_fill(m, a2) : NULL; /* h is on the CPU: no further recursion */
    Py_XDECREF(a2);
    if (!r) { Py_DECREF(ho); return NULL; }
    Py_DECREF(r);
    int rc = lv_copy_bytes(lv_data(t), t->st->device, lv_data(h), LV_CPU, (size_t)n * lv_dtype_size(t->dtype));
    Py_DECREF(ho);
    if (rc < 0) return lvpy_err();
    Py_RETURN_NONE;
  }
  if (t->dtype == LV_I64) {
    int64_t *d = lv_i64(t);
    for (int64_t i = 0; i < n; i++) d[i] = kind == 2 ? (int64_t)a : (int64_t)(a + (b - a) * lv_rng_uniform());
    Py_RETURN_NONE;
  }
  float *d = lv_f32(t);
  if (kind == 0) for (int64_t i = 0; i < n; i++) d[i] = (float)(a + (b - a) * lv_rng_uniform());
  else if (kind == 1) for (int64_t i = 0; i < n; i++) d[i] = (float)(a + b * lv_rng_normal());
  else for (int64_t i = 0; i < n; i++) d[i] = (float)a;
  Py_RETURN_NONE;
}

static PyObject *f_manual_seed(PyObject *m, PyObject *arg) {
  unsigned long long s = PyLong_AsUnsignedLongLongMask(arg);
  if (PyErr_Occurred()) return NULL;
  lv_manual_seed(s);
  Py_RETURN_NONE;
}

static PyObject *f_binary(PyObject *m, PyObject *args) {
  int op; PyObject *a, *b;
  if (!PyArg_ParseTuple(args, "iOO", &op, &a, &b)) return NULL;
  lv_tensor *x = lvpy_get(a, "binary op"), *y = x ? lvpy_get(b, "binary op") : NULL;
  if (!y) return NULL;
  if (op < 0 || op > LV_GE) { PyErr_SetString(PyExc_ValueError, "bad binary op"); return NULL; }
  return lvpy_wrap(lv_binary(op, x, y));
}

static PyObject *f_where(PyObject *m, PyObject *args) {
  PyObject *c, *a, *b;
  if (!PyArg_ParseTuple(args, "OOO", &c, &a, &b)) return NULL;
  lv_tensor *x = lvpy_get(c, "where"), *y = x ? lvpy_get(a, "where") : NULL, *z = y ? lvpy_get(b, "where") : NULL;
  if (!z) return NULL;
  return lvpy_wrap(lv_where(x, y, z));
}

static PyObject *f_unary(PyObject *m, PyObject *args) {
  int op; PyObject *a; double p0 = 0, p1 = 0;
  if (!PyArg_ParseTuple(args, "iO|dd", &op, &a, &p0, &p1)) return NULL;
  lv_tensor *x = lvpy_get(a, "unary op");
  if (!x) return NULL;
  if (op < 0 || op > LV_COS) { PyErr_SetString(PyExc_ValueError, "bad unary op"); return NULL; }
  return lvpy_wrap(lv_unary(op, x, p0, p1));
}

static PyObject *f_reduce(PyObject *m, PyObject *args) {
  int op, keepdim; unsigned long dims; PyObject *a; double corr = 0;
  if (!PyArg_ParseTuple(args, "iOkp|d", &op, &a, &dims, &keepdim, &corr)) return NULL;
  lv_tensor *x = lvpy_get(a, "reduction");
  if (!x) return NULL;
  if (op < LV_RSUM || op > LV_RARGMIN) { PyErr_Format(PyExc_ValueError, "bad reduction op %d", op); return NULL; }
  if (dims >> LV_MAXDIM) { PyErr_Format(PyExc_IndexError, "reduction: dims mask %lu names a dimension beyond %d", dims, LV_MAXDIM - 1); return NULL; }
  return lvpy_wrap(lv_reduce(op, x, (uint32_t)dims, keepdim, corr));
}

static PyObject *f_matmul(PyObject *m, PyObject *args) {
  PyObject *a, *b;
  if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
  lv_tensor *x = lvpy_get(a, "matmul"), *y = x ? lvpy_get(b, "matmul") : NULL;
  if (!y) return NULL;
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_matmul(x, y);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyObject *f_reshape(PyObject *m, PyObject *args) {
  PyObject *a, *shp;
  if (!PyArg_ParseTuple(args, "OO", &a, &shp)) return NULL;
  lv_tensor *x = lvpy_get(a, "reshape");
  if (!x) return NULL;
  int64_t shape[LV_MAXDIM];
  int nd = parse_shape(shp, shape, "reshape");
  if (nd < 0) return NULL;
  return lvpy_wrap(lv_reshape(x, nd, shape));
}

static PyObject *f_expand(PyObject *m, PyObject *args) {
  PyObject *a, *shp;
  if (!PyArg_ParseTuple(args, "OO", &a, &shp)) return NULL;
  lv_tensor *x = lvpy_get(a, "expand");
  if (!x) return NULL;
  int64_t shape[LV_MAXDIM];
  int nd = parse_shape(shp, shape, "expand");
  if (nd < 0) return NULL;
  return lvpy_wrap(lv_expand(x, nd, shape));
}

static PyObject *f_permute(PyObject *m, PyObject *args) {
  PyObject *a, *p;
  if (!PyArg_ParseTuple(args, "OO", &a, &p)) return NULL;
  lv_tensor *x = lvpy_get(a, "permute");
  if (!x) return NULL;
  int64_t pp[LV_MAXDIM];
  int nd = parse_shape(p, pp, "permute");
  if (nd < 0) return NULL;
  if (nd != x->ndim) { PyErr_Format(PyExc_ValueError, "permute: got %d dims for a %d-d tensor", nd, x->ndim); return NULL; }
  int perm[LV_MAXDIM];
  for (int i = 0; i < nd; i++) perm[i] = (int)(pp[i] < 0 ? pp[i] + nd : pp[i]);
  return lvpy_wrap(lv_permute(x, perm));
}

static PyObject *f_slice(PyObject *m, PyObject *args) {
  PyObject *a, *s0, *s1, *s2;
  if (!PyArg_ParseTuple(args, "OOOO", &a, &s0, &s1, &s2)) return NULL;
  lv_tensor *x = lvpy_get(a, "slice");
  if (!x) return NULL;
  int64_t st[LV_MAXDIM], sp[LV_MAXDIM], ln[LV_MAXDIM];
  if (parse_shape(s0, st, "slice") != x->ndim || parse_shape(s1, sp, "slice") != x->ndim ||
      parse_shape(s2, ln, "slice") != x->ndim) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "slice: one start/step/length per dimension");
    return NULL;
  }
  return lvpy_wrap(lv_slice(x, st, sp, ln));
}

static PyObject *f_index_select(PyObject *m, PyObject *args) {
  PyObject *a, *i; int dim;
  if (!PyArg_ParseTuple(args, "OiO", &a, &dim, &i)) return NULL;
  lv_tensor *x = lvpy_get(a, "index_select"), *ix = x ? lvpy_get(i, "index_select") : NULL;
  if (!ix) return NULL;
  return lvpy_wrap(lv_index_select(x, dim, ix));
}

static PyObject *f_cat(PyObject *m, PyObject *args) {
  PyObject *seq; int dim;
  if (!PyArg_ParseTuple(args, "Oi", &seq, &dim)) return NULL;
  PyObject *f = PySequence_Fast(seq, "cat: expected a sequence of tensors");
  if (!f) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
  if (n > INT_MAX) { Py_DECREF(f); PyErr_SetString(PyExc_ValueError, "cat: too many tensors"); return NULL; }
  lv_tensor **ts = malloc(sizeof(lv_tensor *) * (n ? n : 1));
  if (!ts) { Py_DECREF(f); return PyErr_NoMemory(); }
  for (Py_ssize_t k = 0; k < n; k++) {
    ts[k] = lvpy_get(PySequence_Fast_GET_ITEM(f, k), "cat");
    if (!ts[k]) { free(ts); Py_DECREF(f); return NULL; }
  }
  lv_tensor *r = lv_cat((int)n, ts, dim);
  free(ts);
  Py_DECREF(f);
  return lvpy_wrap(r);
}

static PyObject *f_clone(PyObject *m, PyObject *a) {
  lv_tensor *x = lvpy_get(a, "clone");
  return x ? lvpy_wrap(lv_copy(x)) : NULL;
}
static PyObject *f_detach(PyObject *m, PyObject *a) {
  lv_tensor *x = lvpy_get(a, "detach");
  return x ? lvpy_wrap(lv_tensor_detach(x)) : NULL;
}
static PyObject *f_to_dtype(PyObject *m, PyObject *args) {
  PyObject *a; int dt;
  if (!PyArg_ParseTuple(args, "Oi", &a, &dt)) return NULL;
  if (dt != LV_F32 && dt != LV_I64) { PyErr_Format(PyExc_ValueError, "to: unknown dtype code %d (0 float32, 1 int64)", dt); return NULL; }
  lv_tensor *x = lvpy_get(a, "to");
  return x ? lvpy_wrap(lv_to_dtype(x, dt)) : NULL;
}

static PyObject *f_backward(PyObject *m, PyObject *args) {
  PyObject *a, *g = Py_None;
  int retain = 0;
  if (!PyArg_ParseTuple(args, "O|Op", &a, &g, &retain)) return NULL;
  lv_tensor *x = lvpy_get(a, "backward");
  if (!x) return NULL;
  lv_tensor *gt = NULL;
  if (g != Py_None && !(gt = lvpy_get(g, "backward gradient"))) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lv_backward_ex(x, gt, retain);
  Py_END_ALLOW_THREADS
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyObject *f_set_grad_enabled(PyObject *m, PyObject *arg) {
  int prev = lv_grad_enabled();
  lv_set_grad_enabled(PyObject_IsTrue(arg));
  return PyBool_FromLong(prev);
}
static PyObject *f_is_grad_enabled(PyObject *m, PyObject *noarg) { return PyBool_FromLong(lv_grad_enabled()); }
static PyObject *f_num_threads(PyObject *m, PyObject *noarg) { return PyLong_FromLong(lv_num_threads()); }

/* copy src's values into dst (same numel), no autograd: for .data assignment and copy_ */
static PyObject *f_copy_into(PyObject *m, PyObject *args) {
  PyObject *a, *b;
  if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
  lv_tensor *d = lvpy_get(a, "copy_"), *s = d ? lvpy_get(b, "copy_") : NULL;
  if (!s) return NULL;
  if (lv_numel(d) != lv_numel(s) || d->dtype != s->dtype) {
    char s1[96], s2[96];
    PyErr_Format(PyExc_ValueError, "copy_: source %s does not match destination %s",
                 lv_shape_str(s, s1, sizeof s1), lv_shape_str(d, s2, sizeof s2));
    return NULL;
  }
  if (lv_copy_bytes(lv_data(d), d->st->device, lv_data(s), s->st->device,
                    (size_t)lv_numel(d) * lv_dtype_size(d->dtype)) < 0)
    return lvpy_err();
  Py_RETURN_NONE;
}

static PyMethodDef tensor_methods[] = {
    {"_set_tensor_class", f_set_tensor_class, METH_O, NULL},
    {"_assign", f_assign, METH_VARARGS, NULL},
    {"from_numpy", f_from_numpy, METH_VARARGS, "zero-copy tensor from a float32/int64 C-contiguous array"},
    {"empty", f_empty, METH_VARARGS, NULL},
    {"fill_", f_fill, METH_VARARGS, NULL},
    {"manual_seed", f_manual_seed, METH_O, NULL},
    {"binary", f_binary, METH_VARARGS, NULL},
    {"where", f_where, METH_VARARGS, "where(cond, a, b): same-shaped float32 tensors"},
    {"unary", f_unary, METH_VARARGS, NULL},
    {"reduce", f_reduce, METH_VARARGS, NULL},
    {"matmul", f_matmul, METH_VARARGS, NULL},
    {"reshape", f_reshape, METH_VARARGS, NULL},
    {"expand", f_expand, METH_VARARGS, NULL},
    {"permute", f_permute, METH_VARARGS, NULL},
    {"slice", f_slice, METH_VARARGS, NULL},
    {"index_select", f_index_select, METH_VARARGS, NULL},
    {"cat", f_cat, METH_VARARGS, NULL},
    {"clone", f_clone, METH_O, NULL},
    {"detach", f_detach, METH_O, NULL},
    {"to_dtype", f_to_dtype, METH_VARARGS, NULL},
    {"backward", f_backward, METH_VARARGS, NULL},
    {"set_grad_enabled", f_set_grad_enabled, METH_O, NULL},
    {"is_grad_enabled", f_is_grad_enabled, METH_NOARGS, NULL},
    {"num_threads", f_num_threads, METH_NOARGS, NULL},
    {"copy_into", f_copy_into, METH_VARARGS, NULL},
    {NULL}};

int lv_py_init_tensor(PyObject *m) {
  if (PyType_Ready(&TensorBaseType) < 0) return -1;
  Py_INCREF(&TensorBaseType);
  if (PyModule_AddObject(m, "TensorBase", (PyObject *)&TensorBaseType) < 0) return -1;
  return PyModule_AddFunctions(m, tensor_methods);
}
