/* shared declarations of the CPython binding files */
#ifndef LVPY_H
#define LVPY_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "lv.h"

/* Raise the pending lv error as the matching Python exception; returns NULL. */
PyObject *lvpy_err(void);
/* Wrap a tensor (steals the reference) in a new lviv_c.Tensor; NULL on error. */
PyObject *lvpy_wrap(lv_tensor *t);
/* The lv_tensor inside a Tensor object (borrowed), or NULL with TypeError naming `what`. */
lv_tensor *lvpy_get(PyObject *o, const char *what);
int lvpy_is_tensor(PyObject *o);

/* Each binding file exposes one init hook; module.c calls those that are linked in. */
int lv_py_init_tensor(PyObject *m);
int lv_py_init_data(PyObject *m);
int lv_py_init_nn(PyObject *m);
int lv_py_init_train(PyObject *m);
int lv_py_init_analysis(PyObject *m);
int lv_py_init_models(PyObject *m);
#endif
/* Files that use the NumPy C-API include it like this (module.c owns the API table):
 *   #define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
 *   #define PY_ARRAY_UNIQUE_SYMBOL LVIV_ARRAY_API
 *   #define NO_IMPORT_ARRAY
 *   #include <numpy/arrayobject.h>
 */
