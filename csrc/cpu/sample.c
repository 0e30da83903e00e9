/* Bilinear sampling: grid_sample (PyTorch semantics, zeros padding) and the Gaussian readout
 * (bilinear read at one position per neuron, align_corners True, then a per-neuron linear map
 * over channels). */
#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "formulas.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* bilinear taps at continuous pixel coordinate (ix, iy): indices (-1 if outside) and weights,
 * order nw, ne, sw, se. */
typedef struct { int idx[4]; float w[4]; float tx, ty; } taps_t;

static inline __attribute__((always_inline)) void make_taps(float ix, float iy, int H, int W, taps_t *t) {
  float fx = floorf(ix), fy = floorf(iy);
  int x0 = (int)fx, y0 = (int)fy;
  float tx = ix - fx, ty = iy - fy;
  t->tx = tx;
  t->ty = ty;
  t->w[0] = (1.f - tx) * (1.f - ty);
  t->w[1] = tx * (1.f - ty);
  t->w[2] = (1.f - tx) * ty;
  t->w[3] = tx * ty;
  int vx0 = x0 >= 0 && x0 < W, vx1 = x0 + 1 >= 0 && x0 + 1 < W;
  int vy0 = y0 >= 0 && y0 < H, vy1 = y0 + 1 >= 0 && y0 + 1 < H;
  t->idx[0] = (vx0 && vy0) ? y0 * W + x0 : -1;
  t->idx[1] = (vx1 && vy0) ? y0 * W + x0 + 1 : -1;
  t->idx[2] = (vx0 && vy1) ? (y0 + 1) * W + x0 : -1;
  t->idx[3] = (vx1 && vy1) ? (y0 + 1) * W + x0 + 1 : -1;
}

static inline float unnorm(float g, int S, int ac) {
  return ac ? (g + 1.f) * 0.5f * (float)(S - 1) : ((g + 1.f) * (float)S - 1.f) * 0.5f;
}

/* ------------------------------------------------------------------------ grid_sample */

static int gs_check(const char *who, int N, int C, int H, int W, int Ho, int Wo, const void *a,
                    const void *b) {
  if (N < 0 || C < 1 || H < 1 || W < 1 || Ho < 0 || Wo < 0 || !a || !b) {
    lv_set_error(LV_EVALUE, "%s: bad arguments (N %d, C %d, H %d, W %d, Ho %d, Wo %d)", who, N, C, H,
                 W, Ho, Wo);
    return -1;
  }
  return 0;
}

int lv_grid_sample_forward(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                           const float *x, const float *grid, float *y) {
  if (gs_check("grid_sample", N, C, H, W, Ho, Wo, x, grid) || !y) return y ? -1 : (lv_set_error(LV_EVALUE, "grid_sample: NULL output"), -1);
  size_t HW = (size_t)H * W, P = (size_t)Ho * Wo;
#pragma omp parallel for schedule(static) collapse(2) if ((double)N * C * Ho * Wo > 65536)
  for (int n = 0; n < N; n++)
    for (int oy = 0; oy < Ho; oy++)
      for (int ox = 0; ox < Wo; ox++) {
        size_t pix = (size_t)oy * Wo + ox;
        const float *g = grid + ((size_t)n * P + pix) * 2;
        taps_t t;
        make_taps(unnorm(g[0], W, align_corners), unnorm(g[1], H, align_corners), H, W, &t);
        for (int c = 0; c < C; c++) {
          const float *xc = x + ((size_t)n * C + c) * HW;
          float s = 0.f;
          for (int k = 0; k < 4; k++)
            if (t.idx[k] >= 0) s += t.w[k] * xc[t.idx[k]];
          y[((size_t)n * C + c) * P + pix] = s;
        }
      }
  return 0;
}

int lv_grid_sample_backward(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                            const float *x, const float *grid, const float *gy, float *gx,
                            float *ggrid) {
  if (gs_check("grid_sample_backward", N, C, H, W, Ho, Wo, grid, gy)) return -1;
  if (ggrid && !x) return lv_set_error(LV_EVALUE, "grid_sample_backward: x is needed for the grid gradient"), -1;
  size_t HW = (size_t)H * W, P = (size_t)Ho * Wo;
  float sx = align_corners ? 0.5f * (W - 1) : 0.5f * W, sy = align_corners ? 0.5f * (H - 1) : 0.5f * H;
#pragma omp parallel for schedule(static) if ((double)N * C * Ho * Wo > 65536)
  for (int n = 0; n < N; n++)
    for (size_t pix = 0; pix < P; pix++) {
      const float *g = grid + ((size_t)n * P + pix) * 2;
      taps_t t;
      make_taps(unnorm(g[0], W, align_corners), unnorm(g[1], H, align_corners), H, W, &t);
      float dx = 0.f, dy = 0.f;
      for (int c = 0; c < C; c++) {
        float go = gy[((size_t)n * C + c) * P + pix];
        if (gx) {
          float *gxc = gx + ((size_t)n * C + c) * HW;
          for (int k = 0; k < 4; k++)
            if (t.idx[k] >= 0) gxc[t.idx[k]] += t.w[k] * go;
        }
        if (ggrid) {
          const float *xc = x + ((size_t)n * C + c) * HW;
          float v[4];
          for (int k = 0; k < 4; k++) v[k] = t.idx[k] >= 0 ? xc[t.idx[k]] : 0.f;
          dx += go * ((v[1] - v[0]) * (1.f - t.ty) + (v[3] - v[2]) * t.ty);
          dy += go * ((v[2] - v[0]) * (1.f - t.tx) + (v[3] - v[1]) * t.tx);
        }
      }
      if (ggrid) {
        float *gg = ggrid + ((size_t)n * P + pix) * 2;
        gg[0] += dx * sx;
        gg[1] += dy * sy;
      }
    }
  return 0;
}

/* ------------------------------------------------------------------------ Gaussian readout */

static inline __attribute__((always_inline)) float dotC(const float *a, const float *b, int C) {
  lv_v8f acc0 = lv_bc8(0.f), acc1 = lv_bc8(0.f);
  int c = 0;
  for (; c + 16 <= C; c += 16) {
    acc0 += lv_ld8(a + c) * lv_ld8(b + c);
    acc1 += lv_ld8(a + c + 8) * lv_ld8(b + c + 8);
  }
  for (; c + 8 <= C; c += 8) acc0 += lv_ld8(a + c) * lv_ld8(b + c);
  float s = lv_hsum8(acc0 + acc1);
  for (; c < C; c++) s += a[c] * b[c];
  return s;
}

/* xh (H*W, C) = x (C, H*W) transposed */
static void to_hwc(const float *x, int C, int HW, float *xh) {
  for (int c = 0; c < C; c++) {
    const float *xc = x + (size_t)c * HW;
    for (int i = 0; i < HW; i++) xh[(size_t)i * C + c] = xc[i];
  }
}

LV_HOT static void readout_fwd_image(int C, int H, int W, int Nn, const float *xh, const float *pos,
                                     const float *featT, const float *bias, float *out) {
  float sx = 0.5f * (W - 1), sy = 0.5f * (H - 1);
  for (int n = 0; n < Nn; n++) {
    taps_t t;
    make_taps((pos[2 * n] + 1.f) * sx, (pos[2 * n + 1] + 1.f) * sy, H, W, &t);
    const float *f = featT + (size_t)n * C;
    float s = bias ? bias[n] : 0.f;
    for (int k = 0; k < 4; k++)
      if (t.idx[k] >= 0) s += t.w[k] * dotC(xh + (size_t)t.idx[k] * C, f, C);
    out[n] = s;
  }
}

LV_HOT static void readout_bwd_image(int C, int H, int W, int Nn, const float *xh, const float *pos,
                                     const float *featT, const float *gout, float *gxh, float *gpos,
                                     float *gfT) {
  float sx = 0.5f * (W - 1), sy = 0.5f * (H - 1);
  for (int n = 0; n < Nn; n++) {
    float g = gout[n];
    if (g == 0.f) continue;
    taps_t t;
    make_taps((pos[2 * n] + 1.f) * sx, (pos[2 * n + 1] + 1.f) * sy, H, W, &t);
    const float *f = featT + (size_t)n * C;
    if (gpos) {
      float v[4];
      for (int k = 0; k < 4; k++) v[k] = t.idx[k] >= 0 ? dotC(xh + (size_t)t.idx[k] * C, f, C) : 0.f;
      gpos[2 * n] += g * sx * ((v[1] - v[0]) * (1.f - t.ty) + (v[3] - v[2]) * t.ty);
      gpos[2 * n + 1] += g * sy * ((v[2] - v[0]) * (1.f - t.tx) + (v[3] - v[1]) * t.tx);
    }
    for (int k = 0; k < 4; k++) {
      if (t.idx[k] < 0) continue;
      float a = g * t.w[k];
      if (gxh) {
        float *d = gxh + (size_t)t.idx[k] * C;
        for (int c = 0; c < C; c++) d[c] += a * f[c];
      }
      if (gfT) {
        const float *s = xh + (size_t)t.idx[k] * C;
        float *d = gfT + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += a * s[c];
      }
    }
  }
}

static int ro_check(const char *who, int B, int C, int H, int W, int Nn, const void *x,
                    const void *pos, const void *feat) {
  if (B < 0 || C < 1 || H < 1 || W < 1 || Nn < 0 || !x || !pos || !feat) {
    lv_set_error(LV_EVALUE, "%s: bad arguments (B %d, C %d, H %d, W %d, neurons %d)", who, B, C, H, W, Nn);
    return -1;
  }
  return 0;
}

int lv_readout_forward(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                       const float *pos, const float *feat, const float *bias, float *out) {
  if (ro_check("readout", B, C, H, W, Nn, x, pos, feat)) return -1;
  if (!out) return lv_set_error(LV_EVALUE, "readout: NULL output"), -1;
  int nt = omp_get_max_threads();
  if ((double)B * Nn * C < 200000 || B < 2) nt = 1; /* small problems: no thread wake-ups */
  size_t HW = (size_t)H * W, per = HW * C;
  float *featT = malloc(sizeof(float) * ((size_t)Nn * C + per * nt + 1));
  if (!featT) return lv_set_error(LV_ENOMEM, "readout: out of memory"), -1;
  for (int c = 0; c < C; c++)
    for (int n = 0; n < Nn; n++) featT[(size_t)n * C + c] = feat[(size_t)c * Nn + n];
  float *bufs = featT + (size_t)Nn * C;
#pragma omp parallel num_threads(nt)
  {
    float *xh = bufs + per * omp_get_thread_num();
#pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
      to_hwc(x + (size_t)b * per, C, (int)HW, xh);
      readout_fwd_image(C, H, W, Nn, xh, pos + (shared_pos ? 0 : (size_t)b * Nn * 2), featT, bias,
                        out + (size_t)b * Nn);
    }
  }
  free(featT);
  return 0;
}

int lv_readout_backward(int B, int C, int H, int W, int Nn, int shared_pos, const float *x,
                        const float *pos, const float *feat, const float *gout, float *gx,
                        float *gpos, float *gfeat, float *gbias) {
  if (ro_check("readout_backward", B, C, H, W, Nn, x, pos, feat)) return -1;
  if (!gout) return lv_set_error(LV_EVALUE, "readout_backward: NULL gout"), -1;
  if (gbias)
    for (int b = 0; b < B; b++)
      for (int n = 0; n < Nn; n++) gbias[n] += gout[(size_t)b * Nn + n];
  if (!gx && !gpos && !gfeat) return 0;
  int nt = omp_get_max_threads();
  if ((double)B * Nn * C < 200000 || B < 2) nt = 1; /* small problems: no thread wake-ups */
  size_t HW = (size_t)H * W, per = HW * C, nc = (size_t)Nn * C;
  size_t gpos_priv = (gpos && shared_pos) ? (size_t)Nn * 2 : 0;
  size_t thr = per + (gx ? per : 0) + (gfeat ? nc : 0) + gpos_priv;
  float *featT = malloc(sizeof(float) * (nc + thr * nt + 1));
  if (!featT) return lv_set_error(LV_ENOMEM, "readout_backward: out of memory"), -1;
  for (int c = 0; c < C; c++)
    for (int n = 0; n < Nn; n++) featT[(size_t)n * C + c] = feat[(size_t)c * Nn + n];
  float *bufs = featT + nc;
#pragma omp parallel num_threads(nt)
  {
    int tid = omp_get_thread_num();
    float *xh = bufs + thr * tid;
    float *gxh = gx ? xh + per : NULL;
    float *gfT = gfeat ? xh + per + (gx ? per : 0) : NULL;
    float *gp = gpos_priv ? xh + per + (gx ? per : 0) + (gfeat ? nc : 0) : NULL;
    if (gfT) memset(gfT, 0, sizeof(float) * nc);
    if (gp) memset(gp, 0, sizeof(float) * gpos_priv);
#pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
      to_hwc(x + (size_t)b * per, C, (int)HW, xh);
      if (gxh) memset(gxh, 0, sizeof(float) * per);
      float *gpb = gpos ? (shared_pos ? gp : gpos + (size_t)b * Nn * 2) : NULL;
      readout_bwd_image(C, H, W, Nn, xh, pos + (shared_pos ? 0 : (size_t)b * Nn * 2), featT,
                        gout + (size_t)b * Nn, gxh, gpb, gfT);
      if (gxh) {
        float *gxb = gx + (size_t)b * per;
        for (int c = 0; c < C; c++) {
          float *d = gxb + (size_t)c * HW;
          for (size_t i = 0; i < HW; i++) d[i] += gxh[i * C + c];
        }
      }
    }
    /* reductions of the per-thread accumulators, one thread after another */
#pragma omp for ordered schedule(static, 1)
    for (int t = 0; t < omp_get_num_threads(); t++) {
#pragma omp ordered
      {
        if (gfT)
          for (int c = 0; c < C; c++)
            for (int n = 0; n < Nn; n++) gfeat[(size_t)c * Nn + n] += gfT[(size_t)n * C + c];
        if (gp)
          for (size_t i = 0; i < gpos_priv; i++) gpos[i] += gp[i];
      }
    }
  }
  free(featT);
  return 0;
}

/* ---------------------------------------------------------------- Gaussian readout positions */
#define CHUNK 128


int lv_readout_pos_forward(int64_t B, int64_t N, int sample, int type, int project, float *mu, float *sg,
                           uint64_t seed, float *eps, float *mask, float *out) {
  /* projection of the free parameters, in place */
  if (project & 1)
    for (int64_t i = 0; i < 2 * N; i++) mu[i] = lv_f_clamp1(mu[i]);
  if (project & 2) {
    if (sg && type != LV_GAUSS_FULL) {
      int64_t m = (type == LV_GAUSS_UNCORRELATED ? 2 : 1) * N;
      for (int64_t i = 0; i < m; i++) if (sg[i] < 0.f) sg[i] = 0.f;
    }
  }
  if (!sample) {
    for (int64_t i = 0; i < 2 * N; i++) {
      float v = mu[i];
      mask[i] = lv_f_inside1(v);
      out[i] = lv_f_clamp1(v);
    }
    return 0;
  }
  int64_t nchunks = (N + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (B * N > 20000)
  for (int64_t k = 0; k < nchunks; k++) {
    lv_rng r;
    lv_rng_seed(&r, seed ^ ((uint64_t)(k + 1) * 0x9E3779B97F4A7C15ULL));
    int64_t n0 = k * CHUNK, n1 = n0 + CHUNK < N ? n0 + CHUNK : N;
    for (int64_t b = 0; b < B; b++)
      for (int64_t n = n0; n < n1; n++) {
        size_t o = ((size_t)b * N + n) * 2;
        lv_f_readout_sample(type, mu, sg, n, lv_rng_u64(&r), eps + o, mask + o, out + o);
      }
  }
  return 0;
}

int lv_readout_pos_backward(int64_t B, int64_t N, int sample, int type, const float *g, const float *mask,
                            const float *eps, float *gmu, float *gsg) {
  if (!sample) {
    if (gmu) for (int64_t i = 0; i < 2 * N; i++) gmu[i] += g[i] * mask[i];
    return 0;
  }
#pragma omp parallel for schedule(static) if (B * N > 20000)
  for (int64_t n = 0; n < N; n++) {
    double acc[6] = {0, 0, 0, 0, 0, 0};
    for (int64_t b = 0; b < B; b++) {
      size_t o = ((size_t)b * N + n) * 2;
      lv_f_readout_pos_acc(g + o, mask + o, eps + o, acc);
    }
    lv_f_readout_pos_grad(type, n, acc, gmu, gsg);
  }
  return 0;
}

