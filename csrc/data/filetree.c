/* FileTreeDataset folder reads: count <i>.npy files, load them all into one float32 block with
 * threads (see npy.h). */
#include "data/npy.h"
#include "base.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* "<decimal>.npy" without leading zeros (except "0.npy") -> index, else -1 */
static int64_t file_index(const char *name) {
  const char *p = name;
  if (*p < '0' || *p > '9') return -1;
  if (*p == '0' && p[1] != '.') return -1;
  int64_t v = 0;
  while (*p >= '0' && *p <= '9') {
    if (v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (*p - '0');
    p++;
  }
  return strcmp(p, ".npy") == 0 ? v : -1;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int lv_npy_dir_count(const char *dir, int64_t *n_out) {
  DIR *d = opendir(dir);
  if (!d) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      return lv_set_error(LV_ENOTFOUND, "%s: no such folder (expected files 0.npy, 1.npy, ...)", dir);
    return lv_set_error(LV_EIO, "%s: cannot list folder: %s", dir, strerror(e));
  }
  int64_t *idx = NULL, n = 0, cap = 0;
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    int64_t k = file_index(ent->d_name);
    if (k < 0) continue;
    if (n == cap) {
      int64_t nc = cap ? 2 * cap : 1024;
      int64_t *ni = realloc(idx, (size_t)nc * sizeof *ni);
      if (!ni) {
        free(idx);
        closedir(d);
        return lv_set_error(LV_ENOMEM, "%s: out of memory listing the folder", dir);
      }
      idx = ni;
      cap = nc;
    }
    idx[n++] = k;
  }
  closedir(d);
  qsort(idx, (size_t)n, sizeof *idx, cmp_i64);
  for (int64_t i = 0; i < n; i++) {
    if (idx[i] != i) {
      int64_t largest = idx[n - 1];
      free(idx);
      return lv_set_error(LV_ENOTFOUND, "%s/%" PRId64 ".npy: missing (the folder has %" PRId64
                          " numbered files, the largest %" PRId64 ".npy; expected 0.npy .. %" PRId64
                          ".npy)", dir, i, n, largest, n - 1);
    }
  }
  free(idx);
  *n_out = n;
  return 0;
}

typedef struct {
  int64_t index;   /* lowest failing file index, or -1 */
  lv_errkind kind;
  char msg[1024];
} first_error;

static void record_error(first_error *fe, int64_t i) {
#ifdef _OPENMP
#pragma omp critical(lv_npy_dir_error)
#endif
  {
    if (fe->index < 0 || i < fe->index) {
      fe->index = i;
      fe->kind = lv_error_kind();
      snprintf(fe->msg, sizeof fe->msg, "%s", lv_error_msg());
    }
  }
  lv_clear_error();
}

static int default_threads(void) {
  long nc = sysconf(_SC_NPROCESSORS_ONLN);
  if (nc < 1) nc = 1;
  /* file reads wait on the kernel / disk: a few more threads than cores keep it busy */
  long t = 2 * nc;
  if (t < 4) t = 4;
  if (t > 32) t = 32;
  return (int)t;
}

int lv_npy_load_dir_f32(const char *dir, int64_t n, const lv_npy_info *info0, int check_finite,
                        int nthreads, float *dst /* (n, *info0->shape) */) {
  if (info0->kind == 'U') {
    char dt[32];
    return lv_set_error(LV_ETYPE, "%s/0.npy: %s (string) files cannot be loaded as float32 data",
                        dir, lv_npy_dtype_name(info0, dt, sizeof dt));
  }
  const int64_t per = info0->count;
  if (nthreads <= 0) nthreads = default_threads();
  if (n < 64 && nthreads > 1) nthreads = n < 4 ? 1 : 2;
  first_error fe;
  fe.index = -1;
  fe.kind = LV_OK;
  fe.msg[0] = 0;
  volatile int64_t stop_at = INT64_MAX; /* files above a failed index need no reading */
  size_t dlen = strlen(dir);

#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
#endif
  {
    unsigned char *buf = NULL;
    size_t cap = 0;
    char *path = malloc(dlen + 32);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 8)
#endif
    for (int64_t i = 0; i < n; i++) {
      int64_t stop;
#ifdef _OPENMP
#pragma omp atomic read
#endif
      stop = stop_at;
      if (i > stop) continue;
      if (!path) {
        lv_set_error(LV_ENOMEM, "%s: out of memory", dir);
        record_error(&fe, i);
        continue;
      }
      snprintf(path, dlen + 32, "%s/%" PRId64 ".npy", dir, i);
      float *row = dst + (size_t)i * (size_t)per;
      int rc = lv_npy_load_f32(path, info0, row, per, NULL, &buf, &cap);
      if (rc == 0 && check_finite) {
        for (int64_t j = 0; j < per; j++) {
          if (!isfinite(row[j])) {
            int64_t bad = 0;
            for (int64_t k = j; k < per; k++) bad += !isfinite(row[k]);
            lv_set_error(LV_EVALUE, "%s: %" PRId64 " non-finite value%s (first at flat index %"
                         PRId64 ": %g); pass allow_nan=True to load such data", path, bad,
                         bad == 1 ? "" : "s", j, (double)row[j]);
            rc = -1;
            break;
          }
        }
      }
      if (rc) {
        record_error(&fe, i);
#ifdef _OPENMP
#pragma omp critical(lv_npy_dir_stop)
#endif
        if (i < stop_at) stop_at = i;
      }
    }
    free(buf);
    free(path);
  }
  if (fe.index >= 0) return lv_set_error(fe.kind, "%s", fe.msg);
  return 0;
}
