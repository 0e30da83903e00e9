/* Binding of the .npy / FileTreeDataset reader and the loader gathers (lviv_c._C). */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL LVIV_ARRAY_API
#define NO_IMPORT_ARRAY
#include "lvpy.h"
#include <numpy/arrayobject.h>

#include "data/npy.h"

#include <stdlib.h>
#include <string.h>

/* path argument: str or os.PathLike -> bytes object (new reference) */
static PyObject *path_bytes(PyObject *p) {
  PyObject *b = NULL;
  if (!PyUnicode_FSConverter(p, &b)) return NULL;
  return b;
}

static PyObject *shape_tuple(int ndim, const int64_t *shape) {
  PyObject *t = PyTuple_New(ndim);
  if (!t) return NULL;
  for (int i = 0; i < ndim; i++) {
    PyObject *v = PyLong_FromLongLong(shape[i]);
    if (!v) { Py_DECREF(t); return NULL; }
    PyTuple_SET_ITEM(t, i, v);
  }
  return t;
}

/* NumPy refuses some shapes a header allows (e.g. huge empty arrays): re-raise naming the file */
static void name_numpy_error(const char *path, const char *descr) {
  if (PyErr_ExceptionMatches(PyExc_MemoryError)) return;
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  PyObject *msg = ev ? PyObject_Str(ev) : NULL;
  PyErr_Format(PyExc_ValueError, "%s: NumPy cannot create a %s array of this shape (%S)", path,
               descr, msg ? msg : Py_None);
  Py_XDECREF(msg);
  Py_XDECREF(et);
  Py_XDECREF(ev);
  Py_XDECREF(tb);
}

/* read + parse with the GIL released; on success the caller frees *buf */
static int read_npy(const char *path, unsigned char **buf, lv_npy_info *info,
                    const unsigned char **data) {
  int rc;
  size_t cap = 0;
  *buf = NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = lv_npy_read(path, buf, &cap, info, data);
  Py_END_ALLOW_THREADS
  if (rc) { free(*buf); *buf = NULL; lvpy_err(); }
  return rc;
}

PyDoc_STRVAR(npy_load_doc,
"npy_load(path) -> numpy.ndarray\n\n"
"Read an .npy file (format 1.0/2.0/3.0) without pickle. The array has the file's dtype,\n"
"byte order and memory order (float32/64, (u)int8..64, bool, unicode). Object arrays,\n"
"structured dtypes and malformed or truncated files raise ValueError naming the path;\n"
"a missing file raises FileNotFoundError.");

static PyObject *py_npy_load(PyObject *self, PyObject *arg) {
  PyObject *pb = path_bytes(arg);
  if (!pb) return NULL;
  const char *path = PyBytes_AS_STRING(pb);
  unsigned char *buf;
  lv_npy_info info;
  const unsigned char *data;
  if (read_npy(path, &buf, &info, &data)) { Py_DECREF(pb); return NULL; }
  PyArray_Descr *descr = NULL;
  PyObject *ds = PyUnicode_FromString(info.descr);
  if (!ds || !PyArray_DescrConverter(ds, &descr)) {
    Py_XDECREF(ds);
    free(buf);
    Py_DECREF(pb);
    return NULL;
  }
  Py_DECREF(ds);
  npy_intp dims[LV_NPY_MAXDIM];
  for (int i = 0; i < info.ndim; i++) dims[i] = (npy_intp)info.shape[i];
  /* NewFromDescr steals the descr reference */
  PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, descr, info.ndim, dims, NULL, NULL,
                                       info.fortran ? NPY_ARRAY_F_CONTIGUOUS : 0, NULL);
  if (!arr) {
    name_numpy_error(path, info.descr);
    free(buf);
    Py_DECREF(pb);
    return NULL;
  }
  if ((size_t)PyArray_NBYTES((PyArrayObject *)arr) != info.nbytes) {
    Py_DECREF(arr);
    free(buf);
    PyErr_Format(PyExc_ValueError, "%s: dtype '%s' does not match its element size", path,
                 info.descr);
    Py_DECREF(pb);
    return NULL;
  }
  if (info.nbytes) memcpy(PyArray_DATA((PyArrayObject *)arr), data, info.nbytes);
  free(buf);
  Py_DECREF(pb);
  return arr;
}

PyDoc_STRVAR(npy_header_doc,
"npy_header(path) -> dict(descr=str, dtype=str, shape=tuple, fortran_order=bool, offset=int)\n\n"
"Parse and check an .npy file's header (the data must fit into the file).");

static PyObject *py_npy_header(PyObject *self, PyObject *arg) {
  PyObject *pb = path_bytes(arg);
  if (!pb) return NULL;
  unsigned char *buf;
  lv_npy_info info;
  const unsigned char *data;
  int rc = read_npy(PyBytes_AS_STRING(pb), &buf, &info, &data);
  Py_DECREF(pb);
  if (rc) return NULL;
  free(buf);
  char dt[32];
  PyObject *shape = shape_tuple(info.ndim, info.shape);
  if (!shape) return NULL;
  return Py_BuildValue("{s:s,s:s,s:N,s:O,s:n}", "descr", info.descr, "dtype",
                       lv_npy_dtype_name(&info, dt, sizeof dt), "shape", shape, "fortran_order",
                       info.fortran ? Py_True : Py_False, "offset", (Py_ssize_t)info.data_offset);
}

PyDoc_STRVAR(npy_load_f32_doc,
"npy_load_f32(path, dtype=None, shape=None) -> float32 ndarray (C order)\n\n"
"Load a numeric .npy file converted to float32 (the C path the dataset reader uses). With\n"
"dtype and/or shape the file must match them, else ValueError\n"
"'<path>: expected float64 (5335,), found float32 (5334,)'.");

static PyObject *py_npy_load_f32(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"path", "dtype", "shape", NULL};
  PyObject *p, *dto = Py_None, *sho = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO:npy_load_f32", kwlist, &p, &dto, &sho))
    return NULL;
  PyObject *pb = path_bytes(p);
  if (!pb) return NULL;
  const char *path = PyBytes_AS_STRING(pb);
  unsigned char *buf;
  lv_npy_info info;
  const unsigned char *data;
  if (read_npy(path, &buf, &info, &data)) { Py_DECREF(pb); return NULL; }
  lv_npy_info want = info;
  int check = 0;
  if (dto != Py_None) {
    PyArray_Descr *d = NULL;
    if (!PyArray_DescrConverter(dto, &d)) goto fail;
    want.kind = d->kind == '?' ? 'b' : d->kind;
    want.itemsize = (int)PyDataType_ELSIZE(d);
    Py_DECREF(d);
    check = 1;
  }
  if (sho != Py_None) {
    PyObject *seq = PySequence_Fast(sho, "npy_load_f32: shape must be a sequence of ints");
    if (!seq) goto fail;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    if (nd > LV_NPY_MAXDIM) {
      Py_DECREF(seq);
      PyErr_SetString(PyExc_ValueError, "npy_load_f32: too many dimensions");
      goto fail;
    }
    want.ndim = (int)nd;
    for (Py_ssize_t i = 0; i < nd; i++) {
      want.shape[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
      if (want.shape[i] == -1 && PyErr_Occurred()) { Py_DECREF(seq); goto fail; }
    }
    Py_DECREF(seq);
    check = 1;
  }
  if (check) {
    int same = want.kind == info.kind && want.itemsize == info.itemsize && want.ndim == info.ndim;
    for (int i = 0; same && i < info.ndim; i++) same = want.shape[i] == info.shape[i];
    if (!same) {
      char d1[32], d2[32], s1[256], s2[256];
      PyErr_Format(PyExc_ValueError, "%s: expected %s %s, found %s %s", path,
                   lv_npy_dtype_name(&want, d1, sizeof d1),
                   lv_npy_shape_str(want.ndim, want.shape, s1, sizeof s1),
                   lv_npy_dtype_name(&info, d2, sizeof d2),
                   lv_npy_shape_str(info.ndim, info.shape, s2, sizeof s2));
      goto fail;
    }
  }
  if (info.kind == 'U') {
    PyErr_Format(PyExc_TypeError, "%s: cannot load a %s (string) array as float32", path,
                 info.descr);
    goto fail;
  }
  {
    npy_intp dims[LV_NPY_MAXDIM];
    for (int i = 0; i < info.ndim; i++) dims[i] = (npy_intp)info.shape[i];
    PyObject *arr = PyArray_SimpleNew(info.ndim, dims, NPY_FLOAT32);
    if (!arr) { name_numpy_error(path, "float32"); goto fail; }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = lv_npy_to_f32(&info, data, (float *)PyArray_DATA((PyArrayObject *)arr));
    Py_END_ALLOW_THREADS
    if (rc) { Py_DECREF(arr); lvpy_err(); goto fail; }
    free(buf);
    Py_DECREF(pb);
    return arr;
  }
fail:
  free(buf);
  Py_DECREF(pb);
  return NULL;
}

PyDoc_STRVAR(count_npy_files_doc,
"count_npy_files(folder) -> int\n\n"
"Number of files 0.npy .. n-1.npy in folder; a gap in the numbering raises FileNotFoundError\n"
"naming the first missing file.");

static PyObject *py_count_npy_files(PyObject *self, PyObject *arg) {
  PyObject *pb = path_bytes(arg);
  if (!pb) return NULL;
  int64_t n = 0;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = lv_npy_dir_count(PyBytes_AS_STRING(pb), &n);
  Py_END_ALLOW_THREADS
  Py_DECREF(pb);
  if (rc) return lvpy_err();
  return PyLong_FromLongLong(n);
}

PyDoc_STRVAR(load_npy_dir_doc,
"load_npy_dir(folder, n=None, check_finite=True, nthreads=0) -> (block, descr, shape)\n\n"
"Load folder/0.npy .. folder/(n-1).npy into one float32 block of shape (n, *shape), with\n"
"threads, the GIL released. n=None counts the files. Every file must have the dtype and shape\n"
"of 0.npy (ValueError naming the file otherwise); check_finite: NaN/inf is a ValueError.\n"
"descr is file 0's dtype string (e.g. '<f8'), shape its shape.");

static PyObject *py_load_npy_dir(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"folder", "n", "check_finite", "nthreads", NULL};
  PyObject *p, *no = Py_None;
  int check_finite = 1, nthreads = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Opi:load_npy_dir", kwlist, &p, &no,
                                   &check_finite, &nthreads))
    return NULL;
  PyObject *pb = path_bytes(p);
  if (!pb) return NULL;
  const char *dir = PyBytes_AS_STRING(pb);
  int64_t n = 0;
  int rc = 0;
  if (no == Py_None) {
    Py_BEGIN_ALLOW_THREADS
    rc = lv_npy_dir_count(dir, &n);
    Py_END_ALLOW_THREADS
    if (rc) { Py_DECREF(pb); return lvpy_err(); }
  } else {
    n = PyLong_AsLongLong(no);
    if (n == -1 && PyErr_Occurred()) { Py_DECREF(pb); return NULL; }
    if (n < 0) {
      Py_DECREF(pb);
      return PyErr_Format(PyExc_ValueError, "load_npy_dir: n must be >= 0, got %lld", (long long)n);
    }
  }
  if (n == 0) {
    PyErr_Format(PyExc_FileNotFoundError, "%s: no .npy files (expected 0.npy, 1.npy, ...)", dir);
    Py_DECREF(pb);
    return NULL;
  }
  size_t dlen = strlen(dir);
  char *path0 = malloc(dlen + 16);
  if (!path0) { Py_DECREF(pb); return PyErr_NoMemory(); }
  snprintf(path0, dlen + 16, "%s/0.npy", dir);
  unsigned char *buf;
  lv_npy_info info0;
  const unsigned char *data;
  rc = read_npy(path0, &buf, &info0, &data);
  free(path0);
  if (rc) { Py_DECREF(pb); return NULL; }
  free(buf);
  if (info0.ndim + 1 > LV_NPY_MAXDIM) {
    Py_DECREF(pb);
    return PyErr_Format(PyExc_ValueError, "%s/0.npy: too many dimensions", dir);
  }
  npy_intp dims[LV_NPY_MAXDIM + 1];
  dims[0] = (npy_intp)n;
  for (int i = 0; i < info0.ndim; i++) dims[i + 1] = (npy_intp)info0.shape[i];
  PyObject *arr = PyArray_SimpleNew(info0.ndim + 1, dims, NPY_FLOAT32);
  if (!arr) { name_numpy_error(dir, "float32"); Py_DECREF(pb); return NULL; }
  Py_BEGIN_ALLOW_THREADS
  rc = lv_npy_load_dir_f32(dir, n, &info0, check_finite, nthreads,
                           (float *)PyArray_DATA((PyArrayObject *)arr));
  Py_END_ALLOW_THREADS
  Py_DECREF(pb);
  if (rc) { Py_DECREF(arr); return lvpy_err(); }
  PyObject *shape = shape_tuple(info0.ndim, info0.shape);
  if (!shape) { Py_DECREF(arr); return NULL; }
  return Py_BuildValue("NsN", arr, info0.descr, shape);
}

/* float32 C-contiguous block (borrowed check) */
static PyArrayObject *as_block(PyObject *o, const char *fn) {
  if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != NPY_FLOAT32 ||
      !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)o) || PyArray_NDIM((PyArrayObject *)o) < 1) {
    PyErr_Format(PyExc_TypeError, "%s: block must be a C-contiguous float32 numpy array with at "
                 "least one dimension", fn);
    return NULL;
  }
  return (PyArrayObject *)o;
}

PyDoc_STRVAR(gather_rows_doc,
"gather_rows(block, index, out=None) -> float32 ndarray (len(index), *block.shape[1:])\n\n"
"out[i] = block[index[i]] for a C-contiguous float32 block and int64 indices, in C with the\n"
"GIL released. IndexError for an index outside [0, len(block)). out (optional) must be a\n"
"C-contiguous float32 array of the result shape; it is filled and returned.");

static PyObject *py_gather_rows(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"block", "index", "out", NULL};
  PyObject *bo, *io, *oo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O:gather_rows", kwlist, &bo, &io, &oo))
    return NULL;
  PyArrayObject *blk = as_block(bo, "gather_rows");
  if (!blk) return NULL;
  PyArrayObject *idx = (PyArrayObject *)PyArray_FROMANY(io, NPY_INT64, 1, 1, NPY_ARRAY_CARRAY_RO);
  if (!idx) return NULL;
  int nd = PyArray_NDIM(blk);
  npy_intp dims[NPY_MAXDIMS];
  dims[0] = PyArray_DIM(idx, 0);
  int64_t row_len = 1;
  for (int i = 1; i < nd; i++) { dims[i] = PyArray_DIM(blk, i); row_len *= dims[i]; }
  PyObject *out;
  if (oo == Py_None) {
    out = PyArray_SimpleNew(nd, dims, NPY_FLOAT32);
    if (!out) { Py_DECREF(idx); return NULL; }
  } else {
    PyArrayObject *oa = as_block(oo, "gather_rows(out=)");
    int ok = oa && PyArray_NDIM(oa) == nd;
    for (int i = 0; ok && i < nd; i++) ok = PyArray_DIM(oa, i) == dims[i];
    if (!ok) {
      if (oa) PyErr_SetString(PyExc_ValueError, "gather_rows: out has the wrong shape");
      Py_DECREF(idx);
      return NULL;
    }
    if (!PyArray_ISWRITEABLE(oa)) {
      PyErr_SetString(PyExc_ValueError, "gather_rows: out is read-only");
      Py_DECREF(idx);
      return NULL;
    }
    Py_INCREF(oo);
    out = oo;
  }
  int rc;
  const float *src = PyArray_DATA(blk);
  float *dst = PyArray_DATA((PyArrayObject *)out);
  const int64_t *ix = PyArray_DATA(idx);
  int64_t nrows = PyArray_DIM(blk, 0), nidx = PyArray_DIM(idx, 0);
  Py_BEGIN_ALLOW_THREADS
  rc = lv_gather_rows_f32(src, nrows, row_len, ix, nidx, dst);
  Py_END_ALLOW_THREADS
  Py_DECREF(idx);
  if (rc) { Py_DECREF(out); return lvpy_err(); }
  return out;
}

PyDoc_STRVAR(affine_cols_doc,
"affine_cols(block, cols, offset, factor, divide=False) -> float32 ndarray\n\n"
"View block as (n, m) (m = prod(block.shape[1:])); out[i, j] = (block[i, cols[j]] - offset[j])\n"
"* factor[j] (or / factor[j] with divide=True), computed in float64 and rounded once.\n"
"cols=None keeps every column and block's shape; offset None means 0; offset/factor hold one\n"
"value (broadcast) or one per output column.");

static PyObject *py_affine_cols(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"block", "cols", "offset", "factor", "divide", NULL};
  PyObject *bo, *co, *oo, *fo;
  int divide = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|p:affine_cols", kwlist, &bo, &co, &oo, &fo,
                                   &divide))
    return NULL;
  PyArrayObject *blk = as_block(bo, "affine_cols");
  if (!blk) return NULL;
  PyArrayObject *cols = NULL, *off = NULL, *fac = NULL;
  PyObject *out = NULL;
  int nd = PyArray_NDIM(blk);
  int64_t n = PyArray_DIM(blk, 0), m = 1;
  for (int i = 1; i < nd; i++) m *= PyArray_DIM(blk, i);
  if (co != Py_None) {
    cols = (PyArrayObject *)PyArray_FROMANY(co, NPY_INT64, 1, 1, NPY_ARRAY_CARRAY_RO);
    if (!cols) goto done;
  }
  if (oo != Py_None) {
    off = (PyArrayObject *)PyArray_FROMANY(oo, NPY_FLOAT64, 0, 1, NPY_ARRAY_CARRAY_RO);
    if (!off) goto done;
  }
  fac = (PyArrayObject *)PyArray_FROMANY(fo, NPY_FLOAT64, 0, 1, NPY_ARRAY_CARRAY_RO);
  if (!fac) goto done;
  int64_t ncols = cols ? PyArray_DIM(cols, 0) : m;
  int64_t npar = PyArray_SIZE(fac);
  if (off && PyArray_SIZE(off) != npar) {
    PyErr_Format(PyExc_ValueError, "affine_cols: offset has %lld values, factor %lld",
                 (long long)PyArray_SIZE(off), (long long)npar);
    goto done;
  }
  if (cols) {
    npy_intp dims[2] = {(npy_intp)n, (npy_intp)ncols};
    out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
  } else {
    out = PyArray_SimpleNew(nd, PyArray_DIMS(blk), NPY_FLOAT32);
  }
  if (!out) goto done;
  {
    int rc;
    const float *src = PyArray_DATA(blk);
    const int64_t *cp = cols ? PyArray_DATA(cols) : NULL;
    const double *op = off ? PyArray_DATA(off) : NULL, *fp = PyArray_DATA(fac);
    float *dst = PyArray_DATA((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS
    rc = lv_affine_cols_f32(src, n, m, cp, ncols, op, fp, npar, divide, dst);
    Py_END_ALLOW_THREADS
    if (rc) { Py_CLEAR(out); lvpy_err(); }
  }
done:
  Py_XDECREF(cols);
  Py_XDECREF(off);
  Py_XDECREF(fac);
  return out;
}

static PyMethodDef data_methods[] = {
    {"npy_load", py_npy_load, METH_O, npy_load_doc},
    {"npy_header", py_npy_header, METH_O, npy_header_doc},
    {"npy_load_f32", (PyCFunction)(void (*)(void))py_npy_load_f32, METH_VARARGS | METH_KEYWORDS,
     npy_load_f32_doc},
    {"count_npy_files", py_count_npy_files, METH_O, count_npy_files_doc},
    {"load_npy_dir", (PyCFunction)(void (*)(void))py_load_npy_dir, METH_VARARGS | METH_KEYWORDS,
     load_npy_dir_doc},
    {"gather_rows", (PyCFunction)(void (*)(void))py_gather_rows, METH_VARARGS | METH_KEYWORDS,
     gather_rows_doc},
    {"affine_cols", (PyCFunction)(void (*)(void))py_affine_cols, METH_VARARGS | METH_KEYWORDS,
     affine_cols_doc},
    {NULL, NULL, 0, NULL}};

int lv_py_init_data(PyObject *m) { return PyModule_AddFunctions(m, data_methods); }
