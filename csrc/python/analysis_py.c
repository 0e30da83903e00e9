/* Binding of the C input-optimisation loop (MEI). */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL LVIV_ARRAY_API
#define NO_IMPORT_ARRAY
#include "lvpy.h"
#include <numpy/arrayobject.h>
#include "analysis.h"
#include "train.h"

typedef struct { PyObject *cb; PyThreadState *ts; } actx;

static int acb(void *vctx, int64_t done, int64_t total) {
  actx *c = vctx;
  PyEval_RestoreThread(c->ts);
  int stop = 0;
  if (PyErr_CheckSignals() < 0) stop = 1;
  else if (c->cb && c->cb != Py_None) {
    PyObject *r = PyObject_CallFunction(c->cb, "LL", (long long)done, (long long)total);
    if (!r) stop = 1;
    Py_XDECREF(r);
  }
  c->ts = PyEval_SaveThread();
  return stop;
}

static PyObject *f_optimize_input(PyObject *m, PyObject *args, PyObject *kw) {
  static char *kws[] = {"graph", "x", "neurons", "iterations", "lr", "momentum", "blur_sigma", "clip_lo",
                        "clip_hi", "l2_norm", "progress", NULL};
  PyObject *gcap, *xo, *no, *cb = Py_None, *clo = Py_None, *chi = Py_None;
  int iters;
  lv_optin_opts o = {1.0, 0.9, 0, 0, 0, 0, 0};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOi|dddOOdO", kws, &gcap, &xo, &no, &iters, &o.lr, &o.momentum,
                                   &o.blur_sigma, &clo, &chi, &o.l2_norm, &cb))
    return NULL;
  lv_graph *g = PyCapsule_GetPointer(gcap, "lviv_c.graph");
  if (!g) return NULL;
  lv_tensor *x = lvpy_get(xo, "optimize_input image");
  if (!x) return NULL;
  if (!g->loss) { PyErr_SetString(PyExc_ValueError, "optimize_input: the graph has no loss"); return NULL; }
  if (clo != Py_None || chi != Py_None) {
    o.clip = 1;
    o.clip_lo = clo == Py_None ? -INFINITY : PyFloat_AsDouble(clo);
    o.clip_hi = chi == Py_None ? INFINITY : PyFloat_AsDouble(chi);
    if (PyErr_Occurred()) return NULL;
  }
  PyArrayObject *na = (PyArrayObject *)PyArray_FROMANY(no, NPY_INT64, 1, 1, NPY_ARRAY_C_CONTIGUOUS);
  if (!na) return NULL;
  int64_t K = x->shape[0], N = lv_numel(g->out) / (g->out->shape[0] ? g->out->shape[0] : 1);
  if (PyArray_SIZE(na) != K) { Py_DECREF(na); PyErr_Format(PyExc_ValueError, "optimize_input: %lld neuron indices for %lld images", (long long)PyArray_SIZE(na), (long long)K); return NULL; }
  const int64_t *nd = PyArray_DATA(na);
  for (int64_t k = 0; k < K; k++)
    if (nd[k] < 0 || nd[k] >= N) { Py_DECREF(na); PyErr_Format(PyExc_IndexError, "neuron index %lld out of range for %lld neurons", (long long)nd[k], (long long)N); return NULL; }
  if (iters < 0) { Py_DECREF(na); PyErr_SetString(PyExc_ValueError, "iterations must be >= 0"); return NULL; }
  npy_intp dims[2] = {iters, (npy_intp)K};
  PyObject *trace = PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
  if (!trace) { Py_DECREF(na); return NULL; }
  actx c = {cb, NULL};
  c.ts = PyEval_SaveThread();
  int rc = lv_optimize_input(x, &g->cap, g->loss, g->out, nd, iters, &o, PyArray_DATA((PyArrayObject *)trace), acb, &c);
  PyEval_RestoreThread(c.ts);
  Py_DECREF(na);
  if (rc < 0) { Py_DECREF(trace); return lvpy_err(); }
  if (rc == 1) { Py_DECREF(trace); if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt); return NULL; }
  return trace;
}

/* gradient_rfs(x, out, neurons) -> float32 (n, *x.shape[1:]): see lv_gradient_rfs */
static PyObject *f_gradient_rfs(PyObject *m, PyObject *args) {
  PyObject *xo, *oo, *no;
  if (!PyArg_ParseTuple(args, "OOO", &xo, &oo, &no)) return NULL;
  lv_tensor *x = lvpy_get(xo, "gradient_rfs image");
  if (!x) return NULL;
  lv_tensor *out = lvpy_get(oo, "gradient_rfs output");
  if (!out) return NULL;
  if (x->dtype != LV_F32 || out->dtype != LV_F32 || x->ndim < 1 || x->ndim > 7 || out->ndim != 2 ||
      out->shape[0] != x->shape[0] || x->shape[0] < 1) {
    PyErr_SetString(PyExc_ValueError, "gradient_rfs: expected float32 images (K, ...) and outputs (K, neurons)");
    return NULL;
  }
  PyArrayObject *na = (PyArrayObject *)PyArray_FROMANY(no, NPY_INT64, 1, 1, NPY_ARRAY_C_CONTIGUOUS);
  if (!na) return NULL;
  int64_t n = PyArray_SIZE(na), N = out->shape[1];
  const int64_t *nd = PyArray_DATA(na);
  for (int64_t k = 0; k < n; k++)
    if (nd[k] < 0 || nd[k] >= N) { Py_DECREF(na); PyErr_Format(PyExc_IndexError, "neuron index %lld out of range for %lld neurons", (long long)nd[k], (long long)N); return NULL; }
  npy_intp dims[8];
  dims[0] = (npy_intp)n;
  for (int i = 1; i < x->ndim; i++) dims[i] = (npy_intp)x->shape[i];
  PyObject *rf = PyArray_EMPTY(x->ndim, dims, NPY_FLOAT32, 0);
  if (!rf) { Py_DECREF(na); return NULL; }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lv_gradient_rfs(x, out, nd, n, PyArray_DATA((PyArrayObject *)rf));
  Py_END_ALLOW_THREADS
  Py_DECREF(na);
  if (rc < 0) { Py_DECREF(rf); return lvpy_err(); }
  return rf;
}

static PyMethodDef analysis_methods[] = {
    {"gradient_rfs", (PyCFunction)f_gradient_rfs, METH_VARARGS, NULL},
    {"optimize_input", (PyCFunction)(void (*)(void))f_optimize_input, METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL}};

int lv_py_init_analysis(PyObject *m) { return PyModule_AddFunctions(m, analysis_methods); }
