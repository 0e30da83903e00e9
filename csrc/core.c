/* storage and tensors (errors and random numbers: csrc/base.c) */
#include "lv.h"
#include "backend.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/mman.h>

/* ---- storage ---- */
lv_storage *lv_storage_new(size_t nbytes, int device, int zero) {
  if (device != LV_CPU) { /* device memory comes from the device backend's table */
    const lv_backend *be = lv_backend_for(device);
    if (!be) return NULL;
    lv_storage *s = calloc(1, sizeof *s);
    if (!s) { lv_set_error(LV_ENOMEM, "out of memory allocating a tensor header"); return NULL; }
    s->data = be->alloc(nbytes ? nbytes : 4);
    if (!s->data) { free(s); return NULL; }
    if (zero && be->memset0(s->data, nbytes) < 0) { be->free(s->data); free(s); return NULL; }
    s->nbytes = nbytes; s->device = device; s->refcount = 1;
    return s;
  }
  lv_storage *s = calloc(1, sizeof *s);
  if (!s) { lv_set_error(LV_ENOMEM, "out of memory allocating a tensor header"); return NULL; }
  size_t n = nbytes ? nbytes : 1;
  /* 64-byte alignment for SIMD; round the size up to a multiple of the alignment */
  size_t padded = (n + 63) & ~(size_t)63;
  s->data = aligned_alloc(padded >= ((size_t)4 << 20) ? 2097152 : 64, padded >= ((size_t)4 << 20) ? (padded + 2097151) & ~(size_t)2097151 : padded);
  if (padded >= ((size_t)4 << 20)) padded = (padded + 2097151) & ~(size_t)2097151;
  if (!s->data) {
    free(s);
    lv_set_error(LV_ENOMEM, "out of memory allocating %zu bytes for a tensor", nbytes);
    return NULL;
  }
#ifdef MADV_HUGEPAGE
  if (padded >= ((size_t)4 << 20)) madvise(s->data, padded, MADV_HUGEPAGE);
#endif
  if (zero) memset(s->data, 0, padded);
  s->nbytes = nbytes;
  s->device = device;
  s->refcount = 1;
  return s;
}

lv_storage *lv_storage_wrap(void *data, size_t nbytes, int device, void (*release)(void *, void *),
                            void *ctx) {
  lv_storage *s = calloc(1, sizeof *s);
  if (!s) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  s->data = data; s->nbytes = nbytes; s->device = device; s->release = release; s->ctx = ctx;
  s->refcount = 1;
  return s;
}

void lv_storage_incref(lv_storage *s) { __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED); }

/* device free hook, set by the CUDA backend when it is loaded */
void (*lv_device_free_hook)(void *data) = NULL;

void lv_storage_decref(lv_storage *s) {
  if (!s) return;
  if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (s->release) s->release(s->ctx, s->data);
  else if (s->device == LV_CPU) free(s->data);
  else if (lv_device_free_hook) lv_device_free_hook(s->data);
  free(s);
}

/* ---- tensors ---- */
size_t lv_dtype_size(int dtype) { return dtype == LV_I64 ? 8 : 4; }

int64_t lv_numel(const lv_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

lv_tensor *lv_tensor_new(int ndim, const int64_t *shape, int dtype, int device, int zero) {
  if (ndim < 0 || ndim > LV_MAXDIM) {
    lv_set_error(LV_EVALUE, "tensors have at most %d dimensions, asked for %d", LV_MAXDIM, ndim);
    return NULL;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) { lv_set_error(LV_EVALUE, "negative dimension %lld", (long long)shape[i]); return NULL; }
    if (shape[i] && n > INT64_MAX / 16 / shape[i]) { lv_set_error(LV_EVALUE, "tensor too large"); return NULL; }
    n *= shape[i];
  }
  lv_tensor *t = calloc(1, sizeof *t);
  if (!t) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  t->st = lv_storage_new((size_t)n * lv_dtype_size(dtype), device, zero);
  if (!t->st) { free(t); return NULL; }
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->dtype = dtype;
  t->refcount = 1;
  return t;
}

lv_tensor *lv_tensor_new_like(const lv_tensor *t, int zero) {
  return lv_tensor_new(t->ndim, t->shape, t->dtype, t->st->device, zero);
}

lv_tensor *lv_tensor_view(lv_tensor *t, int ndim, const int64_t *shape, size_t offset_bytes) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  if (ndim > LV_MAXDIM || offset_bytes + (size_t)n * lv_dtype_size(t->dtype) > t->st->nbytes + 0) {
    lv_set_error(LV_EVALUE, "view: out of the bounds of the storage");
    return NULL;
  }
  lv_tensor *v = calloc(1, sizeof *v);
  if (!v) { lv_set_error(LV_ENOMEM, "out of memory"); return NULL; }
  v->st = t->st;
  lv_storage_incref(t->st);
  v->offset = offset_bytes;
  v->ndim = ndim;
  for (int i = 0; i < ndim; i++) v->shape[i] = shape[i];
  v->dtype = t->dtype;
  v->refcount = 1;
  return v;
}

lv_tensor *lv_tensor_detach(lv_tensor *t) { return lv_tensor_view(t, t->ndim, t->shape, t->offset); }

void lv_tensor_incref(lv_tensor *t) { if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED); }

void lv_tensor_decref(lv_tensor *t) {
  if (!t) return;
  if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  lv_storage_decref(t->st);
  lv_tensor_decref(t->grad);
  if (t->grad_fn) lv_node_decref(t->grad_fn);
  free(t);
}

int lv_same_shape(const lv_tensor *a, const lv_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++) if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

const char *lv_shape_str2(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t k = 0;
  k += snprintf(buf + k, n - k, "(");
  for (int i = 0; i < ndim && k < n; i++)
    k += snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (k < n) k += snprintf(buf + k, n - k, ndim == 1 ? ",)" : ")");
  return buf;
}
const char *lv_shape_str(const lv_tensor *t, char *buf, size_t n) {
  return lv_shape_str2(t->ndim, t->shape, buf, n);
}
