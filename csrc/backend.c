/* Dispatch: the loaded CUDA backend, the one device check of the ops, and the device-independent
 * copy helpers. No CUDA headers here. */
#include "backend.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

lv_backend *lv_cuda = NULL;

/* deterministic cuDNN algorithms and no TF32 unless asked (lviv_c.backends) */
static lv_device_flags flags = {.cudnn_deterministic = 1, .cudnn_benchmark = 0, .cudnn_allow_tf32 = 0,
                                .matmul_allow_tf32 = 0, .sync_launches = 0};
lv_device_flags *lv_flags(void) { return &flags; }
static const lv_device_flags *core_flags(void) { return &flags; }

extern void (*lv_device_free_hook)(void *data);

static const char *dev_name(int d) { return d == LV_CUDA ? "cuda" : "cpu"; }

int lv_check_devices(const char *op, lv_tensor *const *ts, const char *const *what, int n) {
  int first = -1;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (first < 0) { first = i; continue; }
    int d0 = ts[first]->st->device, d1 = ts[i]->st->device;
    if (d1 == d0) continue;
#define LV_DEVICE_FIX "; move one to the other's device: model.to(device) for a model, x.to(device) for a tensor"
    if (what)
      return lv_set_error(LV_EVALUE, "%s: expected all tensors on the same device, got %s (%s) and %s (%s)" LV_DEVICE_FIX,
                          op, dev_name(d0), what[first], dev_name(d1), what[i]);
    return lv_set_error(LV_EVALUE, "%s: expected all tensors on the same device, got %s (tensor %d) and %s (tensor %d)"
                        LV_DEVICE_FIX, op, dev_name(d0), first, dev_name(d1), i);
#undef LV_DEVICE_FIX
  }
  if (first >= 0 && ts[first]->st->device == LV_CUDA && !lv_cuda)
    return lv_set_error(LV_ERUNTIME, "%s: CUDA backend not loaded", op);
  return 0;
}

const lv_backend *lv_backend_for(int device) {
  if (device == LV_CPU) return &lv_cpu_backend;
  if (device == LV_CUDA && lv_cuda) return lv_cuda;
  lv_set_error(LV_ERUNTIME, device == LV_CUDA ? "CUDA backend not loaded (see lviv_c.cuda.is_available())"
                                              : "unknown device %d", device);
  return NULL;
}

static int core_set_error(int kind, const char *msg) {
  return lv_set_error((lv_errkind)kind, "%s", msg);
}

static void device_free(void *p) { if (lv_cuda) lv_cuda->free(p); }

int lv_cuda_install(lv_backend *t) {
  if (!t) { lv_cuda = NULL; lv_device_free_hook = NULL; return 0; }
  if (t->abi != LV_BACKEND_ABI || t->table_size != (int)sizeof(lv_backend))
    return lv_set_error(LV_ERUNTIME,
                        "CUDA backend: op table version %d (size %d) does not match the core's "
                        "version %d (size %d); rebuild lviv_c",
                        t->abi, t->table_size, LV_BACKEND_ABI, (int)sizeof(lv_backend));
  /* every entry after the header is a function pointer and must be filled */
  void *const *fp = (void *const *)&t->alloc, *const *end = (void *const *)(t + 1);
  for (int i = 0; fp + i < end; i++)
    if (!fp[i])
      return lv_set_error(LV_ERUNTIME, "CUDA backend: op table entry %d is empty; rebuild lviv_c", i);
  t->core_set_error = core_set_error;
  t->core_rng_next = lv_rng_next;
  t->core_flags = core_flags;
  lv_cuda = t;
  lv_device_free_hook = device_free;
  return 0;
}

int lv_copy_bytes(void *dst, int dst_dev, const void *src, int src_dev, size_t n) {
  if (n == 0) return 0;
  if (dst_dev == LV_CPU && src_dev == LV_CPU) { memmove(dst, src, n); return 0; }
  if (!lv_cuda) return lv_set_error(LV_ERUNTIME, "CUDA backend not loaded");
  if (dst_dev == LV_CPU) return lv_cuda->memcpy_d2h(dst, src, n);
  if (src_dev == LV_CPU) return lv_cuda->memcpy_h2d(dst, src, n);
  return lv_cuda->memcpy_d2d(dst, src, n);
}

lv_tensor *lv_tensor_to_device(lv_tensor *t, int device) {
  lv_tensor *o = lv_tensor_new(t->ndim, t->shape, t->dtype, device, 0);
  if (!o) return NULL;
  if (lv_copy_bytes(lv_data(o), device, lv_data(t), t->st->device,
                    (size_t)lv_numel(t) * lv_dtype_size(t->dtype)) < 0) {
    lv_tensor_decref(o);
    return NULL;
  }
  return o;
}
