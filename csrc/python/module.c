/* lviv_c._C module: each binding file registers its functions through an init hook. */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL LVIV_ARRAY_API
#include "lvpy.h"
#include <numpy/arrayobject.h>

/* hooks that a binding file may not provide yet are weak */
#pragma weak lv_py_init_tensor
#pragma weak lv_py_init_data
#pragma weak lv_py_init_nn
#pragma weak lv_py_init_train
#pragma weak lv_py_init_analysis
#pragma weak lv_py_init_models
#pragma weak lv_py_init_cuda

PyObject *lvpy_err(void) {
  PyObject *exc;
  switch (lv_error_kind()) {
    case LV_EVALUE: exc = PyExc_ValueError; break;
    case LV_ETYPE: exc = PyExc_TypeError; break;
    case LV_EINDEX: exc = PyExc_IndexError; break;
    case LV_ENOTFOUND: exc = PyExc_FileNotFoundError; break;
    case LV_EIO: exc = PyExc_OSError; break;
    case LV_ENOMEM: exc = PyExc_MemoryError; break;
    case LV_EINTR: exc = PyExc_KeyboardInterrupt; break;
    case LV_OK:
      if (PyErr_Occurred()) return NULL;
      exc = PyExc_RuntimeError;
      PyErr_SetString(exc, "lviv_c: internal error without a message");
      return NULL;
    default: exc = PyExc_RuntimeError; break;
  }
  PyErr_SetString(exc, lv_error_msg());
  lv_clear_error();
  return NULL;
}

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_C",
                                    "lviv_c C core (tensors, kernels, reader, trainer)", -1, NULL};

/* the op codes of csrc/opdef.h under their names without LV_ (lviv_c/tensor.py reads them) */
static int add_op_codes(PyObject *m) {
#define LV_ADD_CODE_(name) if (PyModule_AddIntConstant(m, #name, LV_##name) < 0) return -1;
  LV_BINOP_LIST(LV_ADD_CODE_)
  LV_UNOP_LIST(LV_ADD_CODE_)
  LV_REDOP_LIST(LV_ADD_CODE_)
#undef LV_ADD_CODE_
  return 0;
}

PyMODINIT_FUNC PyInit__C(void) {
  import_array();
  PyObject *m = PyModule_Create(&moddef);
  if (!m) return NULL;
  if (add_op_codes(m) < 0) { Py_DECREF(m); return NULL; }
  int (*hooks[])(PyObject *) = {lv_py_init_tensor, lv_py_init_data, lv_py_init_nn,
                                lv_py_init_train, lv_py_init_analysis, lv_py_init_models,
                                lv_py_init_cuda};
  for (size_t i = 0; i < sizeof hooks / sizeof hooks[0]; i++)
    if (hooks[i] && hooks[i](m) < 0) { Py_DECREF(m); return NULL; }
  return m;
}
