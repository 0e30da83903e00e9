/* CPU backend: the reduction op node (csrc/ops/reduce.c): sum, mean, var, std, max, min, argmax,
 * argmin over a bitmask of dims, forward and backward. Sums in double; full sums in lv_sum_f64's
 * fixed order (csrc/cpu/kernels.h), the same for any thread count. Node attributes: ia[0] the op
 * code, ia[1] the dims bitmask, fa[0] the correction; aux[0] the mean (var/std) or the arg index
 * (max/min). */
#include "cpu/cpu_ops.h"
#include "cpu/kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int nd;
  int64_t shape[LV_MAXDIM];
  int64_t ost[LV_MAXDIM];  /* output stride per input dim, 0 on reduced dims */
  int64_t rst[LV_MAXDIM];  /* index stride in the reduced sub-space, 0 on kept dims */
  int64_t count;           /* elements reduced into each output */
} rplan;

static void plan(const lv_tensor *a, uint32_t dims, rplan *p) {
  p->nd = a->ndim;
  int64_t so = 1, sr = 1;
  p->count = 1;
  for (int i = a->ndim - 1; i >= 0; i--) {
    p->shape[i] = a->shape[i];
    if (dims & (1u << i)) { p->ost[i] = 0; p->rst[i] = sr; sr *= a->shape[i]; p->count *= a->shape[i]; }
    else { p->ost[i] = so; p->rst[i] = 0; so *= a->shape[i]; }
  }
}

/* vectorised per clone; lanes are independent, so every clone adds the same numbers in the same
 * order */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LVIV_NO_CLONES)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
double lv_sum_seg(const float *x, int64_t len, int absval) {
  double a[16] = {0};
  int64_t k = 0;
  if (absval) {
    for (; k + 16 <= len; k += 16)
      for (int j = 0; j < 16; j++) a[j] += fabs((double)x[k + j]);
    for (int j = 0; k + j < len; j++) a[j] += fabs((double)x[k + j]);
  } else {
    for (; k + 16 <= len; k += 16)
      for (int j = 0; j < 16; j++) a[j] += (double)x[k + j];
    for (int j = 0; k + j < len; j++) a[j] += (double)x[k + j];
  }
  for (int j = 0; j < 8; j++) a[j] += a[j + 8];
  for (int j = 0; j < 4; j++) a[j] += a[j + 4];
  a[0] += a[2];
  a[1] += a[3];
  return a[0] + a[1];
}

int lv_sum_f64(const float *x, int64_t n, int absval, double *out) {
  int64_t nseg = (n + LV_SUM_SEG - 1) / LV_SUM_SEG;
  if (nseg <= 1) { *out = n > 0 ? lv_sum_seg(x, n, absval) : 0.0; return 0; }
  double *ss = malloc((size_t)nseg * sizeof(double));
  if (!ss) return lv_set_error(LV_ENOMEM, "sum: out of memory");
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t s = 0; s < nseg; s++) {
    int64_t o = s * LV_SUM_SEG;
    ss[s] = lv_sum_seg(x + o, n - o < LV_SUM_SEG ? n - o : LV_SUM_SEG, absval);
  }
  double t = 0;
  for (int64_t s = 0; s < nseg; s++) t += ss[s];
  free(ss);
  *out = t;
  return 0;
}

#define WALK(p, N, body)                                                  \
  do {                                                                    \
    int64_t idx_[LV_MAXDIM] = {0}, off = 0, roff = 0;                     \
    for (int64_t k = 0; k < (N); k++) {                                   \
      body;                                                               \
      for (int i_ = (p)->nd - 1; i_ >= 0; i_--) {                         \
        idx_[i_]++; off += (p)->ost[i_]; roff += (p)->rst[i_];            \
        if (idx_[i_] < (p)->shape[i_]) break;                             \
        off -= (p)->ost[i_] * (p)->shape[i_];                             \
        roff -= (p)->rst[i_] * (p)->shape[i_];                            \
        idx_[i_] = 0;                                                     \
      }                                                                   \
    }                                                                     \
  } while (0)

int lv_cpu_reduce_fwd(lv_node *n) {
  lv_tensor *a = n->in[0], *o = n->out;
  rplan p;
  plan(a, (uint32_t)n->ia[1], &p);
  int op = (int)n->ia[0];
  int64_t N = lv_numel(a), M = lv_numel(o);
  const float *x = lv_f32(a);
  double corr = n->fa[0];
  if (op == LV_RSUM || op == LV_RMEAN || op == LV_RVAR || op == LV_RSTD) {
    double *acc = calloc((size_t)(M ? M : 1), sizeof(double));
    if (!acc) return lv_set_error(LV_ENOMEM, "reduction: out of memory");
    if (M == 1) {
      if (lv_sum_f64(x, N, 0, &acc[0]) < 0) { free(acc); return -1; }
    } else {
      WALK(&p, N, acc[off] += x[k]);
    }
    float *y = lv_f32(o);
    if (op == LV_RSUM) { for (int64_t j = 0; j < M; j++) y[j] = (float)acc[j]; }
    else {
      for (int64_t j = 0; j < M; j++) acc[j] /= (double)p.count;
      if (op == LV_RMEAN) { for (int64_t j = 0; j < M; j++) y[j] = (float)acc[j]; }
      else {
        double *sq = calloc((size_t)(M ? M : 1), sizeof(double));
        if (!sq) { free(acc); return lv_set_error(LV_ENOMEM, "reduction: out of memory"); }
        WALK(&p, N, { double d = x[k] - acc[off]; sq[off] += d * d; });
        double den = (double)p.count - corr;
        for (int64_t j = 0; j < M; j++) {
          double v = den > 0 ? sq[j] / den : NAN;
          y[j] = (float)(op == LV_RSTD ? sqrt(v) : v);
        }
        /* keep the mean for backward */
        if (n->aux[0]) { float *mu = lv_f32(n->aux[0]); for (int64_t j = 0; j < M; j++) mu[j] = (float)acc[j]; }
        free(sq);
      }
    }
    free(acc);
    return 0;
  }
  /* max / min / argmax / argmin */
  int is_max = (op == LV_RMAX || op == LV_RARGMAX);
  float *best = malloc((size_t)(M ? M : 1) * sizeof(float));
  int64_t *bi = malloc((size_t)(M ? M : 1) * sizeof(int64_t));
  char *seen = calloc((size_t)(M ? M : 1), 1);
  if (!best || !bi || !seen) { free(best); free(bi); free(seen); return lv_set_error(LV_ENOMEM, "reduction: out of memory"); }
  WALK(&p, N, {
    float v = x[k];
    if (!seen[off] || (is_max ? (v > best[off] || (isnan(v) && !isnan(best[off])))
                              : (v < best[off] || (isnan(v) && !isnan(best[off]))))) {
      best[off] = v; bi[off] = roff; seen[off] = 1;
    }
  });
  if (op == LV_RMAX || op == LV_RMIN) {
    memcpy(lv_f32(o), best, (size_t)M * sizeof(float));
    if (n->aux[0]) memcpy(lv_i64(n->aux[0]), bi, (size_t)M * sizeof(int64_t));
  } else {
    memcpy(lv_i64(o), bi, (size_t)M * sizeof(int64_t));
  }
  free(best); free(bi); free(seen);
  return 0;
}

int lv_cpu_reduce_bwd(lv_node *n, lv_tensor *gout, lv_tensor **gin) {
  if (!gin[0]) return 0;
  lv_tensor *a = n->in[0];
  rplan p;
  plan(a, (uint32_t)n->ia[1], &p);
  int op = (int)n->ia[0];
  int64_t N = lv_numel(a);
  const float *x = lv_f32(a), *g = lv_f32(gout), *y = lv_f32(n->out);
  float *d = lv_f32(gin[0]);
  double den = (double)p.count - n->fa[0];
  if ((op == LV_RSUM || op == LV_RMEAN) && lv_numel(n->out) == 1) { /* full reduction */
    float c = g[0] * (op == LV_RMEAN ? 1.f / (float)p.count : 1.f);
#pragma omp parallel for schedule(static) if (N > 65536)
    for (int64_t k = 0; k < N; k++) d[k] += c;
    return 0;
  }
  switch (op) {
    case LV_RSUM: WALK(&p, N, d[k] += g[off]); break;
    case LV_RMEAN: { float c = 1.f / (float)p.count; WALK(&p, N, d[k] += g[off] * c); } break;
    case LV_RVAR: { const float *mu = lv_f32(n->aux[0]); float c = (float)(2.0 / den);
      WALK(&p, N, d[k] += g[off] * c * (x[k] - mu[off])); } break;
    case LV_RSTD: { const float *mu = lv_f32(n->aux[0]); float c = (float)(1.0 / den);
      WALK(&p, N, d[k] += y[off] > 0 ? g[off] * c * (x[k] - mu[off]) / y[off] : 0.f); } break;
    case LV_RMAX: case LV_RMIN: { const int64_t *bi = lv_i64(n->aux[0]);
      WALK(&p, N, if (roff == bi[off]) d[k] += g[off]); } break;
    default: break;
  }
  return 0;
}

