/* The emulated CUDA device: a TEST DEVICE ONLY. A second backend that behaves as the GPU does
 * for the core (its own storage tag LV_CUDA, its own allocations, every transfer an explicit
 * copy in or out, the training loop's device-only entries: gathering batches into device memory,
 * the device loss accumulator), but computes with the CPU kernels. Switched on from Python by
 * LVIV_EMULATE_CUDA=1 (lviv_c/cuda.py), so that CI exercises the dispatch, the placement of
 * models, optimizer state and data, captured training on the device and every CUDA test on a
 * machine without a GPU. It proves nothing about the CUDA kernels themselves: those run only on
 * a GPU (scripts/gpu-check). */
#include "backend.h"
#include <stdlib.h>
#include <string.h>

/* transfers counted, so that tests can check what crosses between host and device */
static lv_emulated_stats stats;
lv_emulated_stats *lv_emulated_counters(void) { return &stats; }

static void *emu_alloc(size_t nbytes) {
  void *p = malloc(nbytes ? nbytes : 1);
  if (!p) lv_set_error(LV_ENOMEM, "emulated CUDA device: out of memory allocating %zu bytes", nbytes);
  return p;
}
static void emu_free(void *p) { free(p); }
static int emu_copy(void *dst, const void *src, size_t n) {
  if (n) memmove(dst, src, n);
  return 0;
}
static int emu_h2d(void *dst, const void *src, size_t n) { stats.h2d++; stats.h2d_bytes += n; return emu_copy(dst, src, n); }
static int emu_d2h(void *dst, const void *src, size_t n) { stats.d2h++; stats.d2h_bytes += n; return emu_copy(dst, src, n); }
static int emu_d2d(void *dst, const void *src, size_t n) { stats.d2d++; return emu_copy(dst, src, n); }

/* dst (nb, row) <- rows idx[i] of a block (host or device memory: both are host memory here) */
static int gather(float *dst, const float *block, int64_t row, const int64_t *idx, int64_t nb) {
  for (int64_t i = 0; i < nb; i++) memcpy(dst + i * row, block + idx[i] * row, sizeof(float) * (size_t)row);
  return 0;
}
/* from a host block: the rows cross to the device */
static int emu_gather_rows(float *dst, const float *block, int64_t row, const int64_t *idx, int64_t nb) {
  stats.h2d++;
  stats.h2d_bytes += (uint64_t)nb * (uint64_t)row * sizeof(float);
  return gather(dst, block, row, idx, nb);
}
/* from a device-resident block: only the indices cross */
static int emu_gather_rows_dev(float *dst, const float *block, int64_t row, const int64_t *idx, int64_t nb) {
  stats.h2d++;
  stats.h2d_bytes += (uint64_t)nb * sizeof(int64_t);
  return gather(dst, block, row, idx, nb);
}

static _Thread_local double emu_loss; /* per thread, as the GPU's (cuda/nn.cu) */
static int emu_loss_accumulate(const float *val_dev, int reset) {
  if (reset) emu_loss = 0.0;
  if (val_dev) emu_loss += *val_dev;
  return 0;
}
static int emu_loss_read(double *out) {
  stats.d2h++;
  stats.d2h_bytes += sizeof(double);
  *out = emu_loss;
  return 0;
}

static lv_backend emu;

lv_backend *lv_emulated_backend(void) {
  emu = lv_cpu_backend; /* every kernel entry: the CPU's */
  emu.name = "cuda";
  emu.device = LV_CUDA;
  emu.alloc = emu_alloc;
  emu.free = emu_free;
  emu.memcpy_h2d = emu_h2d;
  emu.memcpy_d2h = emu_d2h;
  emu.memcpy_d2d = emu_d2d;
  emu.gather_rows = emu_gather_rows;
  emu.gather_rows_dev = emu_gather_rows_dev;
  emu.loss_accumulate = emu_loss_accumulate;
  emu.loss_read = emu_loss_read;
  return &emu;
}
