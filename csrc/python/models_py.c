/* Bindings of the model ops (lviv_c._C.readout_positions, lviv_c._C.gaussian_readout). */
#include "lvpy.h"
#include "ops/readout_ops.h"

static int opt_tensor(PyObject *o, const char *what, lv_tensor **out) {
  if (o == Py_None) { *out = NULL; return 1; }
  *out = lvpy_get(o, what);
  return *out != NULL;
}

static PyObject *f_readout_positions(PyObject *m, PyObject *args) {
  PyObject *a, *b;
  long long batch;
  int sample, type, project;
  if (!PyArg_ParseTuple(args, "OOLpii", &a, &b, &batch, &sample, &type, &project)) return NULL;
  lv_tensor *mu = lvpy_get(a, "readout_positions mu"), *sigma;
  if (!mu || !opt_tensor(b, "readout_positions sigma", &sigma)) return NULL;
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_readout_positions(mu, sigma, (int64_t)batch, sample, type, project);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyObject *f_gaussian_readout(PyObject *m, PyObject *args) {
  PyObject *a, *b, *c, *d;
  if (!PyArg_ParseTuple(args, "OOOO", &a, &b, &c, &d)) return NULL;
  lv_tensor *x = lvpy_get(a, "gaussian_readout input"), *pos, *feat, *bias;
  if (!x || !(pos = lvpy_get(b, "gaussian_readout positions")) ||
      !(feat = lvpy_get(c, "gaussian_readout features")) || !opt_tensor(d, "gaussian_readout bias", &bias))
    return NULL;
  lv_tensor *r;
  Py_BEGIN_ALLOW_THREADS
  r = lv_gaussian_readout(x, pos, feat, bias);
  Py_END_ALLOW_THREADS
  return lvpy_wrap(r);
}

static PyMethodDef models_methods[] = {
    {"readout_positions", f_readout_positions, METH_VARARGS,
     "readout_positions(mu, sigma|None, batch, sample, gauss_type, project) -> (batch, N, 2) or (N, 2)"},
    {"gaussian_readout", f_gaussian_readout, METH_VARARGS,
     "gaussian_readout(x (B,C,H,W), pos (B,N,2)|(N,2), feat (C,N), bias|None) -> (B, N)"},
    {NULL, NULL, 0, NULL}};

int lv_py_init_models(PyObject *m) { return PyModule_AddFunctions(m, models_methods); }
