/* Bindings of the nn ops and the optimizer steps (lviv_c._C.nn_*). */
#include "lvpy.h"
#include "ops/nn_ops.h"
#include <stdlib.h>

/* optional tensor argument: None -> NULL (ok = 1), tensor -> pointer, else error (ok = 0) */
static int opt_tensor(PyObject *o, const char *what, lv_tensor **out) {
  if (o == Py_None) { *out = NULL; return 1; }
  *out = lvpy_get(o, what);
  return *out != NULL;
}

static PyObject *f_linear(PyObject *m, PyObject *args) {
  PyObject *a, *b, *c;
  if (!PyArg_ParseTuple(args, "OOO", &a, &b, &c)) return NULL;
  lv_tensor *x = lvpy_get(a, "linear"), *w, *bias;
  if (!x || !(w = lvpy_get(b, "linear weight")) || !opt_tensor(c, "linear bias", &bias)) return NULL;
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_linear(x, w, bias);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyObject *f_conv2d(PyObject *m, PyObject *args) {
  PyObject *a, *b, *c;
  int sh, sw, ph, pw, dh, dw, groups;
  if (!PyArg_ParseTuple(args, "OOOiiiiiii", &a, &b, &c, &sh, &sw, &ph, &pw, &dh, &dw, &groups)) return NULL;
  lv_tensor *x = lvpy_get(a, "conv2d"), *w, *bias;
  if (!x || !(w = lvpy_get(b, "conv2d weight")) || !opt_tensor(c, "conv2d bias", &bias)) return NULL;
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_conv2d(x, w, bias, sh, sw, ph, pw, dh, dw, groups);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyObject *f_batch_norm(PyObject *m, PyObject *args) {
  PyObject *o[6];
  int use_batch, fuse;
  double mom, eps;
  if (!PyArg_ParseTuple(args, "OOOOOOpddp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &use_batch, &mom, &eps, &fuse))
    return NULL;
  lv_tensor *t[6];
  const char *names[6] = {"batch_norm", "batch_norm weight", "batch_norm bias", "batch_norm running_mean",
                          "batch_norm running_var", "batch_norm num_batches_tracked"};
  for (int i = 0; i < 6; i++)
    if (!opt_tensor(o[i], names[i], &t[i])) return NULL;
  if (!t[0]) { PyErr_SetString(PyExc_TypeError, "batch_norm: input must be a tensor"); return NULL; }
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_batch_norm(t[0], t[1], t[2], t[3], t[4], t[5], use_batch, mom, eps, fuse);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyObject *f_grid_sample(PyObject *m, PyObject *args) {
  PyObject *a, *b;
  int align;
  if (!PyArg_ParseTuple(args, "OOp", &a, &b, &align)) return NULL;
  lv_tensor *x = lvpy_get(a, "grid_sample"), *g;
  if (!x || !(g = lvpy_get(b, "grid_sample grid"))) return NULL;
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_grid_sample(x, g, align);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyObject *f_avg_pool2d(PyObject *m, PyObject *args) {
  PyObject *a;
  int kh, kw, sh, sw, ph, pw;
  if (!PyArg_ParseTuple(args, "Oiiiiii", &a, &kh, &kw, &sh, &sw, &ph, &pw)) return NULL;
  lv_tensor *x = lvpy_get(a, "avg_pool2d");
  if (!x) return NULL;
  return lvpy_wrap(lv_avg_pool2d(x, kh, kw, sh, sw, ph, pw));
}

static PyObject *f_pad(PyObject *m, PyObject *args) {
  PyObject *a, *p;
  double value;
  if (!PyArg_ParseTuple(args, "OOd", &a, &p, &value)) return NULL;
  lv_tensor *x = lvpy_get(a, "pad");
  if (!x) return NULL;
  PyObject *f = PySequence_Fast(p, "pad: expected a sequence of ints");
  if (!f) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
  if (n % 2 || n > 2 * LV_MAXDIM) {
    Py_DECREF(f);
    PyErr_Format(PyExc_ValueError, "pad: padding length must be even and at most %d, got %zd", 2 * LV_MAXDIM, n);
    return NULL;
  }
  int64_t pads[2 * LV_MAXDIM];
  for (Py_ssize_t i = 0; i < n; i++) {
    pads[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(f, i));
    if (pads[i] == -1 && PyErr_Occurred()) { Py_DECREF(f); return NULL; }
  }
  Py_DECREF(f);
  return lvpy_wrap(lv_pad(x, (int)(n / 2), pads, value));
}

static PyObject *f_dropout(PyObject *m, PyObject *args) {
  PyObject *a;
  double p;
  if (!PyArg_ParseTuple(args, "Od", &a, &p)) return NULL;
  lv_tensor *x = lvpy_get(a, "dropout");
  if (!x) return NULL;
  return lvpy_wrap(lv_dropout(x, p));
}

static PyObject *f_poisson_loss(PyObject *m, PyObject *args) {
  PyObject *a, *b;
  double eps;
  int mean;
  if (!PyArg_ParseTuple(args, "OOdp", &a, &b, &eps, &mean)) return NULL;
  lv_tensor *x = lvpy_get(a, "poisson_loss"), *y;
  if (!x || !(y = lvpy_get(b, "poisson_loss target"))) return NULL;
  return lvpy_wrap(lv_poisson_loss_op(x, y, eps, mean));
}

/* ---- optimizers: lists of parameters and state tensors, one C call per step ---- */
static lv_tensor *list_tensor(PyObject *lst, Py_ssize_t i, const char *what) {
  if (lst == Py_None) return NULL;
  PyObject *o = PySequence_Fast_GET_ITEM(lst, i);
  if (o == Py_None) return NULL;
  return lvpy_get(o, what);
}

static int check_state(lv_tensor *p, lv_tensor *s, const char *what) {
  if (!s) return 0;
  if (s->st->device != p->st->device) {
    PyErr_Format(PyExc_ValueError, "optimizer: %s is on %s, the parameter on %s", what,
                 s->st->device ? "cuda" : "cpu", p->st->device ? "cuda" : "cpu");
    return -1;
  }
  if (lv_numel(s) != lv_numel(p) || s->dtype != LV_F32) {
    char a[96], b[96];
    PyErr_Format(PyExc_ValueError, "optimizer: %s has shape %s, the parameter %s", what,
                 lv_shape_str(s, a, sizeof a), lv_shape_str(p, b, sizeof b));
    return -1;
  }
  return 0;
}

/* params, m, v, vmax (lists; m/v/vmax entries may be None or the list None), steps (list of
 * ints) -> slots; parameters without .grad are skipped. Returns count or -1. */
static int make_slots(PyObject *params, PyObject *ms, PyObject *vs, PyObject *vmaxs, PyObject *steps,
                      lv_optim_slot **out, PyObject **fast) {
  for (int i = 0; i < 5; i++) fast[i] = NULL;
  PyObject *src[5] = {params, ms, vs, vmaxs, steps};
  Py_ssize_t n = -1;
  for (int i = 0; i < 5; i++) {
    if (src[i] == Py_None) continue;
    fast[i] = PySequence_Fast(src[i], "optimizer: expected lists");
    if (!fast[i]) return -1;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(fast[i]);
    if (n >= 0 && k != n) { PyErr_SetString(PyExc_ValueError, "optimizer: state lists differ in length"); return -1; }
    n = k;
  }
  if (n < 0) n = 0;
  lv_optim_slot *s = calloc((size_t)(n ? n : 1), sizeof *s);
  if (!s) { PyErr_NoMemory(); return -1; }
  for (Py_ssize_t i = 0; i < n; i++) {
    lv_tensor *p = lvpy_get(PySequence_Fast_GET_ITEM(fast[0], i), "optimizer parameter");
    if (!p) { free(s); return -1; }
    if (p->dtype != LV_F32) { free(s); PyErr_SetString(PyExc_TypeError, "optimizer: parameters must be float32"); return -1; }
    s[i].p = lv_f32(p);
    s[i].n = lv_numel(p);
    s[i].device = p->st->device;
    if (p->grad && p->grad->st->device != p->st->device) {
      free(s);
      PyErr_SetString(PyExc_ValueError, "optimizer: a gradient is on another device than its parameter");
      return -1;
    }
    if (p->grad) {
      if (lv_numel(p->grad) != s[i].n) { free(s); PyErr_SetString(PyExc_ValueError, "optimizer: gradient and parameter differ in size"); return -1; }
      s[i].g = lv_f32(p->grad);
    }
    lv_tensor *t;
    const char *names[3] = {"exp_avg / momentum buffer", "exp_avg_sq", "max_exp_avg_sq"};
    float **dst[3] = {&s[i].m, &s[i].v, &s[i].vmax};
    for (int j = 0; j < 3; j++) {
      if (!fast[j + 1]) continue;
      t = list_tensor(fast[j + 1], i, names[j]);
      if (!t && PyErr_Occurred()) { free(s); return -1; }
      if (check_state(p, t, names[j]) < 0) { free(s); return -1; }
      *dst[j] = t ? lv_f32(t) : NULL;
    }
    if (fast[4]) {
      s[i].step = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast[4], i));
      if (s[i].step == -1 && PyErr_Occurred()) { free(s); return -1; }
    }
  }
  *out = s;
  return (int)n;
}

static PyObject *f_adam_step(PyObject *m, PyObject *args) {
  PyObject *params, *ms, *vs, *vmaxs, *steps;
  double lr, b1, b2, eps, wd;
  int ams, maxi;
  if (!PyArg_ParseTuple(args, "OOOOOdddddpp", &params, &ms, &vs, &vmaxs, &steps, &lr, &b1, &b2, &eps, &wd, &ams, &maxi))
    return NULL;
  PyObject *fast[5];
  lv_optim_slot *s = NULL;
  int n = make_slots(params, ms, vs, vmaxs, steps, &s, fast);
  int rc = 0;
  if (n >= 0) {
    for (int i = 0; i < n; i++)
      if (s[i].g && (!s[i].m || !s[i].v)) { PyErr_SetString(PyExc_ValueError, "adam: missing state"); rc = -2; break; }
    if (!rc) {
      Py_BEGIN_ALLOW_THREADS
      rc = lv_adam_update(n, s, lr, b1, b2, eps, wd, ams, maxi);
      Py_END_ALLOW_THREADS
    }
  }
  free(s);
  for (int i = 0; i < 5; i++) Py_XDECREF(fast[i]);
  if (n < 0 || rc == -2) return NULL;
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyObject *f_sgd_step(PyObject *m, PyObject *args) {
  PyObject *params, *bufs, *steps;
  double lr, mo, da, wd;
  int nest, maxi;
  if (!PyArg_ParseTuple(args, "OOOddddpp", &params, &bufs, &steps, &lr, &mo, &da, &wd, &nest, &maxi)) return NULL;
  PyObject *fast[5];
  lv_optim_slot *s = NULL;
  int n = make_slots(params, bufs, Py_None, Py_None, steps, &s, fast);
  int rc = 0;
  if (n >= 0) {
    Py_BEGIN_ALLOW_THREADS
    rc = lv_sgd_update(n, s, lr, mo, da, wd, nest, maxi);
    Py_END_ALLOW_THREADS
  }
  free(s);
  for (int i = 0; i < 5; i++) Py_XDECREF(fast[i]);
  if (n < 0) return NULL;
  if (rc < 0) return lvpy_err();
  Py_RETURN_NONE;
}

static PyMethodDef nn_methods[] = {
    {"nn_linear", f_linear, METH_VARARGS, "linear(x, w, b|None)"},
    {"nn_conv2d", f_conv2d, METH_VARARGS, "conv2d(x, w, b|None, sh, sw, ph, pw, dh, dw, groups)"},
    {"nn_batch_norm", f_batch_norm, METH_VARARGS,
     "batch_norm(x, w, b, running_mean, running_var, num_batches_tracked, use_batch_stats, momentum(<0: cumulative), eps, fuse_elu)"},
    {"nn_grid_sample", f_grid_sample, METH_VARARGS, "grid_sample(x, grid, align_corners)"},
    {"nn_avg_pool2d", f_avg_pool2d, METH_VARARGS, "avg_pool2d(x, kh, kw, sh, sw, ph, pw)"},
    {"nn_pad", f_pad, METH_VARARGS, "pad(x, pads, value)"},
    {"nn_dropout", f_dropout, METH_VARARGS, "dropout(x, p) (training mode)"},
    {"nn_poisson_loss", f_poisson_loss, METH_VARARGS, "poisson_loss(yhat, y, eps, mean)"},
    {"nn_adam_step", f_adam_step, METH_VARARGS, NULL},
    {"nn_sgd_step", f_sgd_step, METH_VARARGS, NULL},
    {NULL}};

int lv_py_init_nn(PyObject *m) { return PyModule_AddFunctions(m, nn_methods); }
