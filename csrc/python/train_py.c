/* Bindings of graph capture, Adam, and the C training/prediction loops. */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL LVIV_ARRAY_API
#define NO_IMPORT_ARRAY
#include "lvpy.h"
#include <limits.h>
#include <numpy/arrayobject.h>
#include "train.h"
#include "fuse.h"

static void graph_destructor(PyObject *cap) {
  lv_graph *g = PyCapsule_GetPointer(cap, "lviv_c.graph");
  lv_graph_free(g);
}
static void adam_destructor(PyObject *cap) {
  lv_adam *a = PyCapsule_GetPointer(cap, "lviv_c.adam");
  lv_adam_free(a);
}

static PyObject *f_capture_begin(PyObject *m, PyObject *noarg) {
  if (lv_capture_active()) { PyErr_SetString(PyExc_RuntimeError, "a graph capture is already in progress"); return NULL; }
  lv_capture *c = calloc(1, sizeof *c);
  if (!c) return PyErr_NoMemory();
  lv_capture_begin(c); /* the core holds the capture being recorded (lv_capture_current) */
  Py_RETURN_NONE;
}

static PyObject *f_capture_abort(PyObject *m, PyObject *noarg) {
  lv_capture *c = lv_capture_current();
  lv_capture_end();
  if (c) { lv_capture_free(c); free(c); }
  Py_RETURN_NONE;
}

static PyObject *f_capture_active(PyObject *m, PyObject *noarg) { return PyBool_FromLong(lv_capture_active()); }

static PyObject *f_capture_end(PyObject *m, PyObject *args) {
  PyObject *xo, *yo, *oo, *lo;
  long long batch;
  if (!PyArg_ParseTuple(args, "OOOOL", &xo, &yo, &oo, &lo, &batch)) return NULL;
  lv_capture *c = lv_capture_current();
  lv_capture_end();
  if (!c) { PyErr_SetString(PyExc_RuntimeError, "no graph capture in progress"); return NULL; }
  lv_graph *g = calloc(1, sizeof *g);
  if (!g) { lv_capture_free(c); free(c); return PyErr_NoMemory(); }
  g->cap = *c;
  free(c);
  g->batch = batch;
  lv_tensor *x = lvpy_get(xo, "capture input");
  lv_tensor *o = x ? lvpy_get(oo, "capture output") : NULL;
  if (!o) { lv_graph_free(g); return NULL; }
  g->x = x; lv_tensor_incref(x);
  g->out = o; lv_tensor_incref(o);
  if (yo != Py_None) { lv_tensor *y = lvpy_get(yo, "capture target"); if (!y) { lv_graph_free(g); return NULL; } g->y = y; lv_tensor_incref(y); }
  if (lo != Py_None) { lv_tensor *l = lvpy_get(lo, "capture loss"); if (!l) { lv_graph_free(g); return NULL; } g->loss = l; lv_tensor_incref(l); }
  return PyCapsule_New(g, "lviv_c.graph", graph_destructor);
}

static PyObject *f_graph_info(PyObject *m, PyObject *cap) {
  lv_graph *g = PyCapsule_GetPointer(cap, "lviv_c.graph");
  if (!g) return NULL;
  PyObject *names = PyList_New(g->cap.n);
  if (!names) return NULL;
  for (int i = 0; i < g->cap.n; i++) {
    PyObject *v = PyUnicode_FromString(g->cap.nodes[i]->op->name);
    if (!v) { Py_DECREF(names); return NULL; }
    PyList_SET_ITEM(names, i, v);
  }
  return names;
}

static PyObject *f_graph_replay(PyObject *m, PyObject *cap) {
  lv_graph *g = PyCapsule_GetPointer(cap, "lviv_c.graph");
  if (!g) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lv_capture_replay(&g->cap);
  Py_END_ALLOW_THREADS
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyObject *f_adam_new(PyObject *m, PyObject *args) {
  PyObject *plist; double lr, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0;
  if (!PyArg_ParseTuple(args, "Od|dddd", &plist, &lr, &b1, &b2, &eps, &wd)) return NULL;
  PyObject *f = PySequence_Fast(plist, "adam: expected a list of parameters");
  if (!f) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
  if (n > INT_MAX) { Py_DECREF(f); PyErr_SetString(PyExc_ValueError, "adam: too many parameters"); return NULL; }
  lv_tensor **ps = malloc(sizeof(lv_tensor *) * (n ? n : 1));
  if (!ps) { Py_DECREF(f); return PyErr_NoMemory(); }
  for (Py_ssize_t i = 0; i < n; i++) {
    ps[i] = lvpy_get(PySequence_Fast_GET_ITEM(f, i), "adam parameter");
    if (!ps[i]) { free(ps); Py_DECREF(f); return NULL; }
  }
  lv_adam *a = lv_adam_new((int)n, ps, lr, b1, b2, eps, wd);
  free(ps);
  Py_DECREF(f);
  if (!a) return lvpy_err();
  return PyCapsule_New(a, "lviv_c.adam", adam_destructor);
}

static PyObject *f_adam_set_lr(PyObject *m, PyObject *args) {
  PyObject *cap; double lr;
  if (!PyArg_ParseTuple(args, "Od", &cap, &lr)) return NULL;
  lv_adam *a = PyCapsule_GetPointer(cap, "lviv_c.adam");
  if (!a) return NULL;
  a->lr = lr;
  Py_RETURN_NONE;
}

static PyObject *f_adam_step(PyObject *m, PyObject *cap) {
  lv_adam *a = PyCapsule_GetPointer(cap, "lviv_c.adam");
  if (!a) return NULL;
  if (lv_adam_apply(a) < 0) return lvpy_err();
  Py_RETURN_NONE;
}

/* adam_moment_devices(adam): ['cpu' | 'cuda'] per parameter, where its moments live */
static PyObject *f_adam_moment_devices(PyObject *m, PyObject *cap) {
  lv_adam *a = PyCapsule_GetPointer(cap, "lviv_c.adam");
  if (!a) return NULL;
  PyObject *l = PyList_New(a->n);
  for (int i = 0; l && i < a->n; i++) {
    PyObject *s = PyUnicode_FromString(a->mdev[i] == LV_CUDA ? "cuda" : "cpu");
    if (!s) { Py_DECREF(l); return NULL; }
    PyList_SET_ITEM(l, i, s);
  }
  return l;
}

typedef struct { PyObject *cb; PyThreadState *ts; int stopped; } cbctx;

/* called from the loop with the GIL released: take it, check Ctrl-C, call the Python callback */
static int progress_cb(void *vctx, int64_t done, int64_t total, double loss_sum) {
  cbctx *c = vctx;
  PyEval_RestoreThread(c->ts);
  int stop = 0;
  if (PyErr_CheckSignals() < 0) stop = 1;
  else if (c->cb && c->cb != Py_None) {
    PyObject *r = PyObject_CallFunction(c->cb, "LLd", (long long)done, (long long)total, loss_sum);
    if (!r) stop = 1;
    Py_XDECREF(r);
  }
  c->ts = PyEval_SaveThread();
  c->stopped = stop;
  return stop;
}

static PyArrayObject *as_f32_block(PyObject *o, const char *what) {
  if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != NPY_FLOAT32 ||
      !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)o) || PyArray_NDIM((PyArrayObject *)o) < 1) {
    PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous float32 array", what);
    return NULL;
  }
  return (PyArrayObject *)o;
}

static int check_idx(PyObject *o, int64_t nrows, const char *what, PyArrayObject **out) {
  if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != NPY_INT64 || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)o)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous int64 index array", what);
    return -1;
  }
  PyArrayObject *a = (PyArrayObject *)o;
  const int64_t *d = PyArray_DATA(a);
  for (npy_intp i = 0; i < PyArray_SIZE(a); i++)
    if (d[i] < 0 || d[i] >= nrows) { PyErr_Format(PyExc_IndexError, "%s: index %lld out of range for %lld rows", what, (long long)d[i], (long long)nrows); return -1; }
  *out = a;
  return 0;
}

/* a data block: a C-contiguous float32 NumPy array (host) or a float32 lviv_c Tensor on the GPU
 * (load_dataset(..., cuda=True) keeps a device-resident copy); rows = dim 0 */
typedef struct { const float *data; int64_t rows, row; int dev; } block_t;
static int get_block(PyObject *o, const char *what, block_t *b) {
  if (lvpy_is_tensor(o)) {
    lv_tensor *t = lvpy_get(o, what);
    if (!t) return -1;
    if (t->dtype != LV_F32 || t->ndim < 1 || t->st->device != LV_CUDA) {
      PyErr_Format(PyExc_TypeError, "%s: a tensor block must be a float32 CUDA tensor (host blocks are NumPy arrays)", what);
      return -1;
    }
    b->data = lv_f32(t);
    b->rows = t->shape[0];
    b->row = t->shape[0] ? lv_numel(t) / t->shape[0] : 0;
    b->dev = LV_CUDA;
    return 0;
  }
  PyArrayObject *a = as_f32_block(o, what);
  if (!a) return -1;
  b->data = PyArray_DATA(a);
  b->rows = PyArray_DIM(a, 0);
  b->row = PyArray_NDIM(a) ? (int64_t)(PyArray_SIZE(a) / (PyArray_DIM(a, 0) ? PyArray_DIM(a, 0) : 1)) : 1;
  b->dev = LV_CPU;
  return 0;
}


static int check_graph_shapes(lv_graph *g, int64_t xrow, int64_t yrow, const char *what) {
  if (lv_numel(g->x) != g->batch * xrow) {
    PyErr_Format(PyExc_ValueError, "%s: images have %lld values per trial, the graph's input %lld", what,
                 (long long)xrow, (long long)(lv_numel(g->x) / g->batch));
    return -1;
  }
  if (g->y && yrow >= 0 && lv_numel(g->y) != g->batch * yrow) {
    PyErr_Format(PyExc_ValueError, "%s: responses have %lld values per trial, the graph's target %lld", what,
                 (long long)yrow, (long long)(lv_numel(g->y) / g->batch));
    return -1;
  }
  return 0;
}

static PyObject *f_train_epoch(PyObject *m, PyObject *args) {
  PyObject *gf, *gr, *ad, *xb, *yb, *ord, *cb = Py_None; int accum = 1;
  if (!PyArg_ParseTuple(args, "OOOOOO|iO", &gf, &gr, &ad, &xb, &yb, &ord, &accum, &cb)) return NULL;
  lv_graph *full = PyCapsule_GetPointer(gf, "lviv_c.graph");
  lv_graph *rem = gr == Py_None ? NULL : PyCapsule_GetPointer(gr, "lviv_c.graph");
  lv_adam *a = PyCapsule_GetPointer(ad, "lviv_c.adam");
  if (!full || (gr != Py_None && !rem) || !a) return NULL;
  if (!full->loss || (rem && !rem->loss)) { PyErr_SetString(PyExc_ValueError, "train_epoch: the graph has no loss"); return NULL; }
  block_t X, Y;
  PyArrayObject *O;
  if (get_block(xb, "train_epoch images", &X) < 0 || get_block(yb, "train_epoch responses", &Y) < 0) return NULL;
  if (X.dev != Y.dev) { PyErr_SetString(PyExc_ValueError, "train_epoch: images and responses blocks are on different devices"); return NULL; }
  if (check_idx(ord, X.rows < Y.rows ? X.rows : Y.rows, "train_epoch order", &O) < 0) return NULL;
  int64_t xrow = X.row, yrow = Y.row;
  if (check_graph_shapes(full, xrow, yrow, "train_epoch") < 0 || (rem && check_graph_shapes(rem, xrow, yrow, "train_epoch") < 0)) return NULL;
  int64_t n = PyArray_SIZE(O);
  if (n % full->batch && (!rem || rem->batch != n % full->batch)) {
    PyErr_Format(PyExc_ValueError, "train_epoch: %lld trials need a graph for a last batch of %lld", (long long)n, (long long)(n % full->batch));
    return NULL;
  }
  cbctx c = {cb, NULL, 0};
  double loss = 0;
  int rc;
  c.ts = PyEval_SaveThread();
  rc = lv_train_epoch(full, rem, a, X.data, xrow, Y.data, yrow, PyArray_DATA(O), n, accum,
                      progress_cb, &c, &loss, X.dev);
  PyEval_RestoreThread(c.ts);
  if (rc < 0) return lvpy_err();
  if (rc == 1 && PyErr_Occurred()) return NULL; /* KeyboardInterrupt or the callback's error */
  return Py_BuildValue("id", rc, loss);
}

/* train_multi_epoch([(graph, X, Y), ...], kind int32 (nb,), start int64 (nb,), order int64, adam,
 * step_every[, progress]) -> (status, loss sum): batch b runs kind[b] on rows order[start[b]:start[b] + B] */
static PyObject *f_train_multi_epoch(PyObject *m, PyObject *args) {
  PyObject *kl, *kb, *st, *ord, *ad, *cb = Py_None;
  int step_every = 1;
  if (!PyArg_ParseTuple(args, "OOOOOi|O", &kl, &kb, &st, &ord, &ad, &step_every, &cb)) return NULL;
  lv_adam *a = PyCapsule_GetPointer(ad, "lviv_c.adam");
  if (!a) return NULL;
  if (!PyList_Check(kl) || PyList_GET_SIZE(kl) < 1 || PyList_GET_SIZE(kl) > INT_MAX) {
    PyErr_SetString(PyExc_TypeError, "train_multi_epoch: kinds must be a non-empty list of (graph, images, responses)");
    return NULL;
  }
  if (step_every < 1) { PyErr_Format(PyExc_ValueError, "train_multi_epoch: step_every must be >= 1, got %d", step_every); return NULL; }
  if (!PyArray_Check(kb) || PyArray_TYPE((PyArrayObject *)kb) != NPY_INT32 || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)kb) ||
      PyArray_NDIM((PyArrayObject *)kb) != 1) {
    PyErr_SetString(PyExc_TypeError, "train_multi_epoch: kind must be a C-contiguous 1-d int32 array");
    return NULL;
  }
  int nk = (int)PyList_GET_SIZE(kl);
  PyArrayObject *S, *O;
  if (check_idx(st, INT64_MAX, "train_multi_epoch start", &S) < 0 || check_idx(ord, INT64_MAX, "train_multi_epoch order", &O) < 0)
    return NULL;
  int64_t nb = PyArray_SIZE((PyArrayObject *)kb), n = PyArray_SIZE(O);
  if (PyArray_SIZE(S) != nb) {
    PyErr_Format(PyExc_ValueError, "train_multi_epoch: %lld kinds but %lld starts", (long long)nb, (long long)PyArray_SIZE(S));
    return NULL;
  }
  lv_multi_kind *kinds = calloc((size_t)nk, sizeof *kinds);
  int64_t *rows = calloc((size_t)nk, sizeof *rows);
  if (!kinds || !rows) { free(kinds); free(rows); return PyErr_NoMemory(); }
  for (int i = 0; i < nk; i++) {
    PyObject *t = PyList_GET_ITEM(kl, i);
    block_t X, Y;
    lv_graph *g = PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 3 ? PyCapsule_GetPointer(PyTuple_GET_ITEM(t, 0), "lviv_c.graph") : NULL;
    if (!g) {
      if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "train_multi_epoch: kind %d is not a (graph, images, responses) tuple", i);
      goto fail;
    }
    if (!g->loss) { PyErr_Format(PyExc_ValueError, "train_multi_epoch: the graph of kind %d has no loss", i); goto fail; }
    if (get_block(PyTuple_GET_ITEM(t, 1), "train_multi_epoch images", &X) < 0 ||
        get_block(PyTuple_GET_ITEM(t, 2), "train_multi_epoch responses", &Y) < 0)
      goto fail;
    if (X.dev != Y.dev) { PyErr_SetString(PyExc_ValueError, "train_multi_epoch: images and responses blocks are on different devices"); goto fail; }
    if (check_graph_shapes(g, X.row, Y.row, "train_multi_epoch") < 0) goto fail;
    kinds[i] = (lv_multi_kind){g, X.data, Y.data, X.row, Y.row, X.dev};
    rows[i] = X.rows < Y.rows ? X.rows : Y.rows;
  }
  const int32_t *kd = PyArray_DATA((PyArrayObject *)kb);
  const int64_t *sd = PyArray_DATA(S), *od = PyArray_DATA(O);
  for (int64_t b = 0; b < nb; b++) {
    if (kd[b] < 0 || kd[b] >= nk) { PyErr_Format(PyExc_IndexError, "train_multi_epoch: batch %lld has kind %d of %d", (long long)b, kd[b], nk); goto fail; }
    int64_t B = kinds[kd[b]].g->batch;
    if (sd[b] > n - B) { PyErr_Format(PyExc_IndexError, "train_multi_epoch: batch %lld starts at %lld, past the %lld indices", (long long)b, (long long)sd[b], (long long)n); goto fail; }
    for (int64_t i = sd[b]; i < sd[b] + B; i++)
      if (od[i] >= rows[kd[b]]) { PyErr_Format(PyExc_IndexError, "train_multi_epoch: index %lld out of range for %lld rows", (long long)od[i], (long long)rows[kd[b]]); goto fail; }
  }
  cbctx c = {cb, NULL, 0};
  double loss = 0;
  c.ts = PyEval_SaveThread();
  int rc = lv_train_multi_epoch(kinds, nk, kd, sd, nb, od, a, step_every, progress_cb, &c, cb != Py_None, &loss);
  PyEval_RestoreThread(c.ts);
  free(kinds);
  free(rows);
  if (rc < 0) return lvpy_err();
  if (rc == 1 && PyErr_Occurred()) return NULL;
  return Py_BuildValue("id", rc, loss);
fail:
  free(kinds);
  free(rows);
  return NULL;
}

static PyObject *f_predict(PyObject *m, PyObject *args) {
  PyObject *gf, *gr, *xb, *ord, *cb = Py_None;
  if (!PyArg_ParseTuple(args, "OOOO|O", &gf, &gr, &xb, &ord, &cb)) return NULL;
  lv_graph *full = PyCapsule_GetPointer(gf, "lviv_c.graph");
  lv_graph *rem = gr == Py_None ? NULL : PyCapsule_GetPointer(gr, "lviv_c.graph");
  if (!full || (gr != Py_None && !rem)) return NULL;
  block_t X;
  PyArrayObject *O;
  if (get_block(xb, "predict images", &X) < 0) return NULL;
  if (check_idx(ord, X.rows, "predict indices", &O) < 0) return NULL;
  int64_t xrow = X.row;
  if (check_graph_shapes(full, xrow, -1, "predict") < 0 || (rem && check_graph_shapes(rem, xrow, -1, "predict") < 0)) return NULL;
  int64_t n = PyArray_SIZE(O);
  if (n % full->batch && (!rem || rem->batch != n % full->batch)) {
    PyErr_Format(PyExc_ValueError, "predict: %lld trials need a graph for a last batch of %lld", (long long)n, (long long)(n % full->batch));
    return NULL;
  }
  int64_t N = lv_numel(full->out) / full->batch;
  npy_intp dims[2] = {(npy_intp)n, (npy_intp)N};
  PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
  if (!out) return NULL;
  cbctx c = {cb, NULL, 0};
  c.ts = PyEval_SaveThread();
  int rc = lv_predict(full, rem, X.data, xrow, PyArray_DATA(O), n, PyArray_DATA((PyArrayObject *)out), progress_cb, &c, X.dev);
  PyEval_RestoreThread(c.ts);
  if (rc < 0) { Py_DECREF(out); return lvpy_err(); }
  if (rc == 1) { Py_DECREF(out); if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt); return NULL; }
  return out;
}

static PyObject *f_profile(PyObject *m, PyObject *arg) {
  if (arg != Py_None) { lv_profile_enable(PyObject_IsTrue(arg)); Py_RETURN_NONE; }
  PyObject *d = PyDict_New();
  if (!d) return NULL;
  const char *name; double f, b; int64_t calls;
  for (int i = 0; lv_profile_get(i, &name, &f, &b, &calls); i++) {
    PyObject *v = Py_BuildValue("(ddL)", f, b, (long long)calls);
    if (!v || PyDict_SetItemString(d, name, v) < 0) { Py_XDECREF(v); Py_DECREF(d); return NULL; }
    Py_DECREF(v);
  }
  return d;
}

static PyObject *f_fused_updates(PyObject *m, PyObject *arg) {
  int on = PyObject_IsTrue(arg);
  if (on < 0) return NULL;
  return PyBool_FromLong(lv_fuse_set_enabled(on));
}

static PyObject *f_fused_steps(PyObject *m, PyObject *noarg) { return PyLong_FromLongLong(lv_fuse_steps()); }

static PyMethodDef train_methods[] = {
    {"fused_steps", f_fused_steps, METH_NOARGS, "fused_steps() -> the number of fused Linear-weight "
     "Adam steps taken so far (one per weight and step)"},
    {"fused_updates", f_fused_updates, METH_O, "fused_updates(on) switches the C training loop's fused "
     "Linear-weight Adam steps (csrc/fuse.c) on or off; returns the previous setting"},
    {"profile", f_profile, METH_O, "profile(True/False) switches op timing on/off; profile(None) returns {op: (fwd_s, bwd_s, calls)}"},
    {"capture_begin", f_capture_begin, METH_NOARGS, NULL},
    {"capture_end", f_capture_end, METH_VARARGS, NULL},
    {"capture_abort", f_capture_abort, METH_NOARGS, NULL},
    {"capture_active", f_capture_active, METH_NOARGS, NULL},
    {"graph_info", f_graph_info, METH_O, NULL},
    {"graph_replay", f_graph_replay, METH_O, NULL},
    {"adam_new", f_adam_new, METH_VARARGS, NULL},
    {"adam_set_lr", f_adam_set_lr, METH_VARARGS, NULL},
    {"adam_step", f_adam_step, METH_O, NULL},
    {"adam_moment_devices", f_adam_moment_devices, METH_O, "where each parameter's Adam moments live"},
    {"train_epoch", f_train_epoch, METH_VARARGS, NULL},
    {"train_multi_epoch", f_train_multi_epoch, METH_VARARGS, "one multi-scan epoch, cycling the scans in C"},
    {"predict", f_predict, METH_VARARGS, NULL},
    {NULL}};

int lv_py_init_train(PyObject *m) { return PyModule_AddFunctions(m, train_methods); }
