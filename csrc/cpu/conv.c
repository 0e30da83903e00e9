/* conv2d forward / backward-data / backward-weight on CPU.
 *
 * Paths (chosen by conv_plan):
 *   P_1X1  kernel 1x1, stride 1, no padding: y[n,g] = W_g @ x[n,g], pure GEMM.
 *   P_DW   depthwise (groups == C_in == C_out), stride 1. With C % 8 == 0 ("channels-last"):
 *          each (image, 8-channel group) is transposed into a zero-padded (Hp, Wp, 8) buffer,
 *          so that every tap is one aligned 8-channel FMA with a per-tap weight vector (no
 *          broadcasts, no width rounding, no horizontal sums); forward tiles are 1 row x up to
 *          14 output columns, backward-weight keeps up to 13 taps of a kernel row in registers.
 *          Otherwise: register-blocked kernel on a zero-padded copy of each plane (8 output
 *          rows x 8 columns per block).
 *   P_FULL im2col (K = C_in/g*kh*kw rows, Ho*Wo columns) + one GEMM per image and group.
 *   P_ROW  stride_h == 1 and a large full column matrix: a "row im2col" with K = C_in/g*kw rows
 *          and one column per (padded input row, output column); the GEMM for kernel row ky
 *          reads it at a row offset ky*dh*Wo, so kh GEMMs share one column buffer that is kh
 *          times smaller than the full one.
 *   P_DIRECT groups 1, stride 1, few channels (C_out % 8 == 0, C_in and C_out <= 16: the course
 *          CNN's 1->8 and 8->8 'same' layers, where OpenBLAS is weak with M = 8): direct
 *          convolution vectorised over 8 output channels. Per image a zero-padded copy of x;
 *          forward tiles are 2 output rows x up to 6 columns (dilation_h 1: each broadcast
 *          input feeds both rows) or 1 row x up to 14 columns, each tap one weight-vector load
 *          per row and one broadcast input per column; output goes through an (Ho*Wo, 8)
 *          buffer and 8x8 transposes. Backward-weight keeps up to 13 kx taps of one (ci, ky) in
 *          registers, reduced over fixed image chunks (deterministic).
 * The two direct paths run OpenMP over their own work units (dynamic schedule; never more
 * threads than units). GEMM paths: batch-parallel (OpenMP over images, single-threaded BLAS
 * inside) when N >= threads, else a serial loop over images with multi-threaded BLAS. backward_data with stride 1 is a forward
 * conv of gy with the flipped, transposed kernel (padding d*(k-1)-p), accumulating into gx.
 */
#include "cpu/kernels.h"
#include "cpu/simd.h"
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { P_1X1 = 0, P_DW, P_FULL, P_ROW, P_DIRECT };
#define ROW_THRESHOLD ((size_t)1 << 20) /* full column matrix above this many floats -> P_ROW */

typedef struct {
  int path, Cin_g, Cout_g, K;
  int Hr;           /* P_ROW: padded input rows in the row column buffer */
  size_t col;       /* per-thread column buffer floats */
  size_t wsz;       /* weight floats */
  int wop, xrows, xld; /* P_DW: padded output width, padded plane rows, plane row stride */
  int cl, Hp, Wp, nch;  /* P_DW channels-last: padded buffer rows/cols, backward-weight image chunks */
} conv_plan;

#define DW_CL_CHUNKS 8 /* backward-weight image chunks per channel group (fixed: deterministic) */

static int round8(int v) { return (v + 7) & ~7; }

int lv_conv2d_prepare(lv_conv2d_desc *d) {
  if (!d) return lv_set_error(LV_EVALUE, "conv2d: NULL descriptor"), -1;
  if (d->N < 0 || d->C_in <= 0 || d->H <= 0 || d->W <= 0 || d->C_out <= 0 || d->kh <= 0 ||
      d->kw <= 0) {
    lv_set_error(LV_EVALUE, "conv2d: bad sizes (N %d, C_in %d, H %d, W %d, C_out %d, kernel %dx%d)",
                 d->N, d->C_in, d->H, d->W, d->C_out, d->kh, d->kw);
    return -1;
  }
  if (d->sh < 1 || d->sw < 1 || d->dh < 1 || d->dw < 1 || d->ph < 0 || d->pw < 0) {
    lv_set_error(LV_EVALUE, "conv2d: stride (%d, %d) and dilation (%d, %d) must be >= 1, padding (%d, %d) >= 0",
                 d->sh, d->sw, d->dh, d->dw, d->ph, d->pw);
    return -1;
  }
  if (d->groups < 1 || d->C_in % d->groups || d->C_out % d->groups) {
    lv_set_error(LV_EVALUE, "conv2d: groups %d must divide C_in %d and C_out %d", d->groups, d->C_in,
                 d->C_out);
    return -1;
  }
  int eh = d->H + 2 * d->ph - d->dh * (d->kh - 1), ew = d->W + 2 * d->pw - d->dw * (d->kw - 1);
  if (eh < 1 || ew < 1) {
    lv_set_error(LV_EVALUE, "conv2d: kernel %dx%d (dilation %d, %d) larger than padded input %dx%d",
                 d->kh, d->kw, d->dh, d->dw, d->H + 2 * d->ph, d->W + 2 * d->pw);
    return -1;
  }
  d->Ho = (eh - 1) / d->sh + 1;
  d->Wo = (ew - 1) / d->sw + 1;
  return 0;
}

static int check_prepared(const lv_conv2d_desc *d) {
  lv_conv2d_desc t = *d;
  if (lv_conv2d_prepare(&t)) return -1;
  if (t.Ho != d->Ho || t.Wo != d->Wo) {
    lv_set_error(LV_EVALUE, "conv2d: descriptor output %dx%d does not match %dx%d (call lv_conv2d_prepare)",
                 d->Ho, d->Wo, t.Ho, t.Wo);
    return -1;
  }
  return 0;
}

static void conv_plan_make(const lv_conv2d_desc *d, conv_plan *p) {
  memset(p, 0, sizeof *p);
  p->Cin_g = d->C_in / d->groups;
  p->Cout_g = d->C_out / d->groups;
  p->K = p->Cin_g * d->kh * d->kw;
  p->wsz = (size_t)d->C_out * p->K;
  size_t howo = (size_t)d->Ho * d->Wo;
  if (d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0) {
    p->path = P_1X1;
  } else if (d->groups == d->C_in && d->groups == d->C_out && d->sh == 1 && d->sw == 1) {
    p->path = P_DW;
    p->wop = round8(d->Wo);
    p->xrows = d->Ho + d->dh * (d->kh - 1);
    p->xld = p->wop + d->dw * (round8(d->kw) - 1);
    p->col = (size_t)p->xrows * p->xld + (size_t)d->Ho * p->wop;
    if (d->C_in % 8 == 0) {
      p->cl = 1;
      p->Hp = d->Ho + d->dh * (d->kh - 1);
      p->Wp = d->Wo + d->dw * (d->kw - 1);
      p->nch = d->N < DW_CL_CHUNKS ? (d->N > 0 ? d->N : 1) : DW_CL_CHUNKS;
      p->col = (size_t)p->Hp * p->Wp * 8 + (size_t)d->Ho * d->Wo * 8;
    }
  } else if (d->groups == 1 && d->sh == 1 && d->sw == 1 && d->C_out % 8 == 0 && d->C_out <= 16 &&
             d->C_in <= 16 && d->kh * d->kw > 1) {
    p->path = P_DIRECT;
    p->Hp = d->Ho + d->dh * (d->kh - 1);
    p->Wp = d->Wo + d->dw * (d->kw - 1);
    p->nch = d->N < DW_CL_CHUNKS ? (d->N > 0 ? d->N : 1) : DW_CL_CHUNKS;
    p->col = (size_t)round8(d->C_in * p->Hp * p->Wp) + (size_t)d->Ho * d->Wo * 8;
  } else if (d->sh == 1 && d->kh > 1 && (size_t)p->K * howo > ROW_THRESHOLD) {
    p->path = P_ROW;
    p->Hr = d->Ho + d->dh * (d->kh - 1);
    p->col = (size_t)p->Cin_g * d->kw * p->Hr * d->Wo;
  } else {
    p->path = P_FULL;
    p->col = (size_t)p->K * howo;
  }
}

/* BLAS threading: OpenBLAS always runs single-threaded (csrc/cpu/gemm.c); lv_sgemm splits
 * large products over the OpenMP threads itself and stays serial inside parallel regions. */

static int nthreads_for(int N) {
  int nt = lv_num_threads();
  return nt < 1 ? 1 : nt;
  (void)N;
}

/* ---------------------------------- column builders ---------------------------------- */

/* dst[ox] = src[ox*sw + off] where 0 <= index < W, else 0 (src NULL: all zero) */
static void fill_row(float *restrict dst, const float *restrict src, int Wo, int W, int sw, int off) {
  if (!src) { memset(dst, 0, sizeof(float) * Wo); return; }
  int lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
  int hi = (W - 1 - off) < 0 ? 0 : (W - 1 - off) / sw + 1;
  if (hi > Wo) hi = Wo;
  if (lo > hi) lo = hi;
  if (lo) memset(dst, 0, sizeof(float) * lo);
  if (sw == 1) {
    if (hi > lo) memcpy(dst + lo, src + lo + off, sizeof(float) * (hi - lo));
  } else {
    for (int ox = lo; ox < hi; ox++) dst[ox] = src[ox * sw + off];
  }
  if (hi < Wo) memset(dst + hi, 0, sizeof(float) * (Wo - hi));
}

/* full im2col of one group of one image: col (Cin_g*kh*kw, Ho*Wo) */
static void im2col_full(const lv_conv2d_desc *d, int Cin_g, const float *x /* (Cin_g,H,W) */,
                        float *col) {
  int Ho = d->Ho, Wo = d->Wo;
  for (int ci = 0; ci < Cin_g; ci++)
    for (int ky = 0; ky < d->kh; ky++)
      for (int kx = 0; kx < d->kw; kx++) {
        float *c = col + ((size_t)(ci * d->kh + ky) * d->kw + kx) * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++) {
          int iy = oy * d->sh + ky * d->dh - d->ph;
          const float *src = (iy >= 0 && iy < d->H) ? x + ((size_t)ci * d->H + iy) * d->W : NULL;
          fill_row(c + (size_t)oy * Wo, src, Wo, d->W, d->sw, kx * d->dw - d->pw);
        }
      }
}

/* row im2col: col (Cin_g*kw, Hr*Wo): col[ci*kw+kx][r*Wo+ox] = x[ci, r-ph, ox*sw+kx*dw-pw] */
static void im2col_row(const lv_conv2d_desc *d, int Cin_g, int Hr, const float *x, float *col) {
  int Wo = d->Wo;
  for (int ci = 0; ci < Cin_g; ci++)
    for (int kx = 0; kx < d->kw; kx++) {
      float *c = col + (size_t)(ci * d->kw + kx) * Hr * Wo;
      for (int r = 0; r < Hr; r++) {
        int iy = r - d->ph;
        const float *src = (iy >= 0 && iy < d->H) ? x + ((size_t)ci * d->H + iy) * d->W : NULL;
        fill_row(c + (size_t)r * Wo, src, Wo, d->W, d->sw, kx * d->dw - d->pw);
      }
    }
}

/* gx (Cin_g,H,W) += col2im(col) (full layout) */
static void col2im_full_add(const lv_conv2d_desc *d, int Cin_g, const float *col, float *gx) {
  int Ho = d->Ho, Wo = d->Wo;
  for (int ci = 0; ci < Cin_g; ci++)
    for (int ky = 0; ky < d->kh; ky++)
      for (int kx = 0; kx < d->kw; kx++) {
        const float *c = col + ((size_t)(ci * d->kh + ky) * d->kw + kx) * Ho * Wo;
        int off = kx * d->dw - d->pw;
        int lo = off >= 0 ? 0 : (-off + d->sw - 1) / d->sw;
        int hi = (d->W - 1 - off) < 0 ? 0 : (d->W - 1 - off) / d->sw + 1;
        if (hi > Wo) hi = Wo;
        for (int oy = 0; oy < Ho; oy++) {
          int iy = oy * d->sh + ky * d->dh - d->ph;
          if (iy < 0 || iy >= d->H) continue;
          float *dst = gx + ((size_t)ci * d->H + iy) * d->W;
          const float *s = c + (size_t)oy * Wo;
          for (int ox = lo; ox < hi; ox++) dst[ox * d->sw + off] += s[ox];
        }
      }
}

/* wr[g][ky][co][ci*kw+kx] = w[g*Cout_g+co][ci][ky][kx] */
static void reorder_row_weights(const lv_conv2d_desc *d, const conv_plan *p, const float *w, float *wr) {
  int kh = d->kh, kw = d->kw, Ci = p->Cin_g, Co = p->Cout_g;
  for (int g = 0; g < d->groups; g++)
    for (int co = 0; co < Co; co++)
      for (int ci = 0; ci < Ci; ci++)
        for (int ky = 0; ky < kh; ky++)
          for (int kx = 0; kx < kw; kx++)
            wr[((size_t)(g * kh + ky) * Co + co) * Ci * kw + ci * kw + kx] =
                w[(((size_t)(g * Co + co) * Ci + ci) * kh + ky) * kw + kx];
}

/* ---------------------------------- depthwise direct ---------------------------------- */

static inline __attribute__((always_inline)) void dw_block(const float *xp, int ldx,
                                                           const float *k, int kh, int kw, int dh,
                                                           int dw, float *yb, int ldy, const int RB) {
  lv_v8f acc[8];
  for (int r = 0; r < RB; r++) acc[r] = lv_bc8(0.f);
  for (int ky = 0; ky < kh; ky++)
    for (int kx = 0; kx < kw; kx++) {
      lv_v8f wv = lv_bc8(k[ky * kw + kx]);
      const float *xr = xp + (size_t)ky * dh * ldx + kx * dw;
      for (int r = 0; r < RB; r++) acc[r] += wv * lv_ld8(xr + (size_t)r * ldx);
    }
  for (int r = 0; r < RB; r++) lv_st8(yb + (size_t)r * ldy, acc[r]);
}

/* yb (Ho, wop) = depthwise correlation of the padded plane xp (xrows, xld) with k (kh, kw) */
LV_HOT static void dw_plane(const float *xp, int ldx, const float *k, int kh, int kw, int dh,
                            int dw, float *yb, int Ho, int wop) {
  int oy = 0;
  for (; oy + 8 <= Ho; oy += 8)
    for (int ox = 0; ox < wop; ox += 8)
      dw_block(xp + (size_t)oy * ldx + ox, ldx, k, kh, kw, dh, dw, yb + (size_t)oy * wop + ox, wop, 8);
  for (; oy + 4 <= Ho; oy += 4)
    for (int ox = 0; ox < wop; ox += 8)
      dw_block(xp + (size_t)oy * ldx + ox, ldx, k, kh, kw, dh, dw, yb + (size_t)oy * wop + ox, wop, 4);
  for (; oy + 2 <= Ho; oy += 2)
    for (int ox = 0; ox < wop; ox += 8)
      dw_block(xp + (size_t)oy * ldx + ox, ldx, k, kh, kw, dh, dw, yb + (size_t)oy * wop + ox, wop, 2);
  for (; oy < Ho; oy++)
    for (int ox = 0; ox < wop; ox += 8)
      dw_block(xp + (size_t)oy * ldx + ox, ldx, k, kh, kw, dh, dw, yb + (size_t)oy * wop + ox, wop, 1);
}

/* gk (kh, kw) += sum over (oy, ox) gyb[oy][ox] * xp[oy + ky*dh][ox + kx*dw]; gyb zero beyond Wo */
LV_HOT static void dw_plane_gradk(const float *xp, int ldx, const float *gyb, int Ho, int wop,
                                  int kh, int kw, int dh, int dw, float *gk) {
  for (int ky = 0; ky < kh; ky++)
    for (int kx0 = 0; kx0 < kw; kx0 += 8) {
      lv_v8f acc[8];
      for (int j = 0; j < 8; j++) acc[j] = lv_bc8(0.f);
      for (int oy = 0; oy < Ho; oy++) {
        const float *g = gyb + (size_t)oy * wop;
        const float *xr = xp + (size_t)(oy + ky * dh) * ldx + kx0 * dw;
        for (int ox = 0; ox < wop; ox += 8) {
          lv_v8f gv = lv_ld8(g + ox);
          for (int j = 0; j < 8; j++) acc[j] += gv * lv_ld8(xr + ox + j * dw);
        }
      }
      for (int j = 0; j < 8 && kx0 + j < kw; j++) gk[ky * kw + kx0 + j] += lv_hsum8(acc[j]);
    }
}

/* copy plane x (H, W) into zeroed xp (xrows, xld) at (ph, pw) */
static void dw_pad_plane(const lv_conv2d_desc *d, const conv_plan *p, const float *x, float *xp) {
  memset(xp, 0, sizeof(float) * (size_t)p->xrows * p->xld);
  for (int iy = 0; iy < d->H; iy++)
    memcpy(xp + (size_t)(iy + d->ph) * p->xld + d->pw, x + (size_t)iy * d->W, sizeof(float) * d->W);
}

static void dw_forward(const lv_conv2d_desc *d, const conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, float beta, float *ws) {
  int C = d->C_in, HW = d->H * d->W, HoWo = d->Ho * d->Wo;
  long planes = (long)d->N * C;
#pragma omp parallel
  {
    float *xp = ws + (size_t)omp_get_thread_num() * p->col;
    float *yb = xp + (size_t)p->xrows * p->xld;
#pragma omp for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
      int c = (int)(pl % C);
      dw_pad_plane(d, p, x + (size_t)pl * HW, xp);
      dw_plane(xp, p->xld, w + (size_t)c * d->kh * d->kw, d->kh, d->kw, d->dh, d->dw, yb, d->Ho, p->wop);
      float b = bias ? bias[c] : 0.f;
      float *yo = y + (size_t)pl * HoWo;
      for (int oy = 0; oy < d->Ho; oy++) {
        float *yr = yo + (size_t)oy * d->Wo;
        const float *br = yb + (size_t)oy * p->wop;
        if (beta == 0.f)
          for (int ox = 0; ox < d->Wo; ox++) yr[ox] = br[ox] + b;
        else
          for (int ox = 0; ox < d->Wo; ox++) yr[ox] += br[ox] + b;
      }
    }
  }
}

static void dw_backward_weight(const lv_conv2d_desc *d, const conv_plan *p, const float *x,
                               const float *gy, float *gw, float *ws) {
  int C = d->C_in, HW = d->H * d->W, HoWo = d->Ho * d->Wo;
#pragma omp parallel
  {
    float *xp = ws + (size_t)omp_get_thread_num() * p->col;
    float *gyb = xp + (size_t)p->xrows * p->xld;
#pragma omp for schedule(static)
    for (int c = 0; c < C; c++) {
      for (int n = 0; n < d->N; n++) {
        size_t pl = (size_t)n * C + c;
        dw_pad_plane(d, p, x + pl * HW, xp);
        for (int oy = 0; oy < d->Ho; oy++) {
          float *gr = gyb + (size_t)oy * p->wop;
          memcpy(gr, gy + pl * HoWo + (size_t)oy * d->Wo, sizeof(float) * d->Wo);
          for (int ox = d->Wo; ox < p->wop; ox++) gr[ox] = 0.f;
        }
        dw_plane_gradk(xp, p->xld, gyb, d->Ho, p->wop, d->kh, d->kw, d->dh, d->dw,
                       gw + (size_t)c * d->kh * d->kw);
      }
    }
  }
}

/* --------------------------- depthwise, channels-last (C % 8 == 0) --------------------------- */

static float *align8f(float *p) { return (float *)(((uintptr_t)p + 31) & ~(uintptr_t)31); }

/* xt (Hp, Wp, 8) = 8 planes x (plane stride HW, each (H, W)) placed at (ph, pw), zero around */
LV_HOT static void cl_pack_pad(const float *x, int H, int W, size_t HW, int ph, int pw, int Hp, int Wp,
                               float *xt) {
  for (int r = 0; r < Hp; r++) {
    float *row = xt + (size_t)r * Wp * 8;
    int iy = r - ph;
    if (iy < 0 || iy >= H) { memset(row, 0, sizeof(float) * 8 * Wp); continue; }
    int right = Wp - pw - W;
    if (pw > 0) memset(row, 0, sizeof(float) * 8 * pw);
    if (right > 0) memset(row + (size_t)(pw + W) * 8, 0, sizeof(float) * 8 * right);
    float *dst = row + (size_t)pw * 8;
    const float *src = x + (size_t)iy * W;
    int ix = 0;
    for (; ix + 8 <= W; ix += 8) {
      lv_v8f v[8];
      for (int c = 0; c < 8; c++) v[c] = lv_ld8(src + c * HW + ix);
      lv_tr8x8(v);
      for (int j = 0; j < 8; j++) lv_st8(dst + (size_t)(ix + j) * 8, v[j]);
    }
    for (; ix < W; ix++)
      for (int c = 0; c < 8; c++) dst[ix * 8 + c] = src[c * HW + ix];
  }
}

/* xt (n, 8) = 8 planes x (plane stride ps, n floats each) */
LV_HOT static void cl_pack(const float *x, int n, size_t ps, float *xt) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    lv_v8f v[8];
    for (int c = 0; c < 8; c++) v[c] = lv_ld8(x + c * ps + i);
    lv_tr8x8(v);
    for (int j = 0; j < 8; j++) lv_st8(xt + (size_t)(i + j) * 8, v[j]);
  }
  for (; i < n; i++)
    for (int c = 0; c < 8; c++) xt[i * 8 + c] = x[c * ps + i];
}

/* 8 planes y (plane stride ps, n floats each) = (beta 0) or += (beta 1) yt (n, 8) + bias (nullable) */
LV_HOT static void cl_unpack(const float *yt, int n, size_t ps, const float *bias, float beta, float *y) {
  lv_v8f b[8];
  for (int c = 0; c < 8; c++) b[c] = lv_bc8(bias ? bias[c] : 0.f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    lv_v8f v[8];
    for (int j = 0; j < 8; j++) v[j] = lv_ld8(yt + (size_t)(i + j) * 8);
    lv_tr8x8(v);
    for (int c = 0; c < 8; c++) {
      lv_v8f o = v[c] + b[c];
      if (beta != 0.f) o += lv_ld8(y + c * ps + i);
      lv_st8(y + c * ps + i, o);
    }
  }
  for (; i < n; i++)
    for (int c = 0; c < 8; c++) {
      float o = yt[i * 8 + c] + b[c][0];
      y[c * ps + i] = beta != 0.f ? y[c * ps + i] + o : o;
    }
}

/* yt[0..XO) (8 channels each) = sum over taps wt[ky][kx] * xt[ky*dh][j + kx*dw] */
static inline __attribute__((always_inline)) void cl_fwd_tile(const float *xt, size_t ldr,
                                                              const float *wt, int kh, int kw, int dh,
                                                              int dw, float *yt, const int XO) {
  lv_v8f acc[XO];
  for (int j = 0; j < XO; j++) acc[j] = lv_bc8(0.f);
  for (int ky = 0; ky < kh; ky++) {
    const float *xr = xt + (size_t)ky * dh * ldr;
    const float *wr = wt + (size_t)ky * kw * 8;
    for (int kx = 0; kx < kw; kx++) {
      lv_v8f wv = lv_ld8(wr + kx * 8);
      const float *xk = xr + (size_t)kx * dw * 8;
      #pragma GCC unroll 16
      for (int j = 0; j < XO; j++) acc[j] += wv * lv_ld8(xk + j * 8);
    }
  }
  for (int j = 0; j < XO; j++) lv_st8(yt + j * 8, acc[j]);
}

#define CL_XO 14 /* widest forward tile: 14 accumulators + the tap's weight vector */
/* yt (Ho, Wo, 8) = depthwise correlation of xt (Hp, Wp, 8) with wt (kh, kw, 8); each output row
 * is split into ceil(Wo / CL_XO) tiles of near-equal width (Wo 50: 13+13+12+12), so that every
 * tile has enough independent accumulators to hide the FMA latency */
LV_HOT static void cl_fwd_plane(const float *xt, int Wp, const float *wt, int kh, int kw, int dh,
                                int dw, float *yt, int Ho, int Wo) {
  size_t ldr = (size_t)Wp * 8;
  int nt = (Wo + CL_XO - 1) / CL_XO, base = Wo / nt, rem = Wo % nt;
  for (int oy = 0; oy < Ho; oy++) {
    const float *xr = xt + oy * ldr;
    float *yr = yt + (size_t)oy * Wo * 8;
    for (int t = 0, ox = 0; t < nt; t++) {
      int n = base + (t < rem);
      const float *xo = xr + ox * 8;
      float *yo = yr + ox * 8;
      switch (n) {
#define CASE(n) case n: cl_fwd_tile(xo, ldr, wt, kh, kw, dh, dw, yo, n); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11)
        CASE(12) CASE(13) CASE(14)
#undef CASE
        default: break;
      }
      ox += n;
    }
  }
}

/* gk[kx0 + j] (8 channels, j < KB) += sum over (oy, ox) gyt[oy][ox] * xt[oy + ky*dh][ox + (kx0+j)*dw] */
static inline __attribute__((always_inline)) void cl_gw_block(const float *xt, size_t ldr,
                                                              const float *gyt, int Ho, int Wo,
                                                              int dw, float *gk, const int KB) {
  lv_v8f a[KB];
  for (int j = 0; j < KB; j++) a[j] = lv_bc8(0.f);
  for (int oy = 0; oy < Ho; oy++) {
    const float *g = gyt + (size_t)oy * Wo * 8;
    const float *xr = xt + oy * ldr;
    for (int ox = 0; ox < Wo; ox++) {
      lv_v8f gv = lv_ld8(g + ox * 8);
      const float *xo = xr + ox * 8;
      #pragma GCC unroll 16
      for (int j = 0; j < KB; j++) a[j] += gv * lv_ld8(xo + (size_t)j * dw * 8);
    }
  }
  for (int j = 0; j < KB; j++) lv_st8(gk + j * 8, lv_ld8(gk + j * 8) + a[j]);
}

#define CL_KB 13
/* gk (kh, kw, 8) += correlation of gyt (Ho, Wo, 8) with xt (Hp, Wp, 8) */
LV_HOT static void cl_gw_plane(const float *xt, int Wp, const float *gyt, int Ho, int Wo, int kh,
                               int kw, int dh, int dw, float *gk) {
  size_t ldr = (size_t)Wp * 8;
  int nb = (kw + CL_KB - 1) / CL_KB, kb = (kw + nb - 1) / nb;
  for (int ky = 0; ky < kh; ky++)
    for (int kx0 = 0; kx0 < kw; kx0 += kb) {
      const float *xk = xt + (size_t)ky * dh * ldr + (size_t)kx0 * dw * 8;
      float *g = gk + ((size_t)ky * kw + kx0) * 8;
      switch (kw - kx0 < kb ? kw - kx0 : kb) {
#define CASE(n) case n: cl_gw_block(xk, ldr, gyt, Ho, Wo, dw, g, n); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11)
        CASE(12) CASE(13)
#undef CASE
        default: break;
      }
    }
}

/* wt[g][ky][kx][c] = w[g*8 + c][ky][kx] */
static void cl_weights(int C, int kk, const float *w, float *wt) {
  for (int g = 0; g < C / 8; g++)
    for (int t = 0; t < kk; t++)
      for (int c = 0; c < 8; c++) wt[((size_t)g * kk + t) * 8 + c] = w[(size_t)(g * 8 + c) * kk + t];
}

static size_t cl_wt_floats(const lv_conv2d_desc *d) { return (size_t)round8(d->C_in * d->kh * d->kw); }
static size_t cl_part_floats(const lv_conv2d_desc *d, const conv_plan *p) {
  return (size_t)p->nch * round8(d->C_in * d->kh * d->kw);
}

static void cl_dw_forward(const lv_conv2d_desc *d, const conv_plan *p, const float *x, const float *w,
                          const float *bias, float *y, float beta, float *ws, int nt) {
  int C = d->C_in, G = C / 8, kk = d->kh * d->kw;
  size_t HW = (size_t)d->H * d->W, HoWo = (size_t)d->Ho * d->Wo;
  ws = align8f(ws);
  float *wt = ws, *bufs = ws + cl_wt_floats(d);
  cl_weights(C, kk, w, wt);
  long units = (long)d->N * G;
#pragma omp parallel num_threads(units < nt ? (int)units : nt)
  {
    float *xt = bufs + (size_t)omp_get_thread_num() * p->col;
    float *yt = xt + (size_t)p->Hp * p->Wp * 8;
#pragma omp for schedule(dynamic, 1)
    for (long u = 0; u < units; u++) {
      int g = (int)(u % G);
      size_t off = (size_t)u * 8; /* (n*G + g)*8 == n*C + g*8 planes */
      cl_pack_pad(x + off * HW, d->H, d->W, HW, d->ph, d->pw, p->Hp, p->Wp, xt);
      cl_fwd_plane(xt, p->Wp, wt + (size_t)g * kk * 8, d->kh, d->kw, d->dh, d->dw, yt, d->Ho, d->Wo);
      cl_unpack(yt, (int)HoWo, HoWo, bias ? bias + g * 8 : NULL, beta, y + off * HoWo);
    }
  }
}

static void cl_dw_backward_weight(const lv_conv2d_desc *d, const conv_plan *p, const float *x,
                                  const float *gy, float *gw, float *ws, int nt) {
  int C = d->C_in, G = C / 8, kk = d->kh * d->kw, nch = p->nch;
  size_t HW = (size_t)d->H * d->W, HoWo = (size_t)d->Ho * d->Wo, pst = (size_t)round8(C * kk);
  ws = align8f(ws);
  float *part = ws, *bufs = ws + cl_part_floats(d, p);
  memset(part, 0, sizeof(float) * cl_part_floats(d, p));
  long units = (long)G * nch;
#pragma omp parallel num_threads(units < nt ? (int)units : nt)
  {
    float *xt = bufs + (size_t)omp_get_thread_num() * p->col;
    float *gyt = xt + (size_t)p->Hp * p->Wp * 8;
#pragma omp for schedule(dynamic, 1)
    for (long u = 0; u < units; u++) {
      int g = (int)(u / nch), ch = (int)(u % nch);
      int n0 = (int)((long)ch * d->N / nch), n1 = (int)((long)(ch + 1) * d->N / nch);
      float *gk = part + ch * pst + (size_t)g * kk * 8;
      for (int n = n0; n < n1; n++) {
        size_t off = (size_t)n * C + (size_t)g * 8;
        cl_pack_pad(x + off * HW, d->H, d->W, HW, d->ph, d->pw, p->Hp, p->Wp, xt);
        cl_pack(gy + off * HoWo, (int)HoWo, HoWo, gyt);
        cl_gw_plane(xt, p->Wp, gyt, d->Ho, d->Wo, d->kh, d->kw, d->dh, d->dw, gk);
      }
    }
  }
  /* fixed-order reduction over the image chunks, then back to (C, kh, kw) */
  for (int g = 0; g < G; g++)
    for (int t = 0; t < kk; t++)
      for (int c = 0; c < 8; c++) {
        float s = 0.f;
        for (int ch = 0; ch < nch; ch++) s += part[ch * pst + ((size_t)g * kk + t) * 8 + c];
        gw[(size_t)(g * 8 + c) * kk + t] += s;
      }
}

/* ------------------------ direct, 8 output channels per vector (P_DIRECT) ------------------------ */

/* xp (C, Hp, Wp) = x (C, H, W) placed at (ph, pw), zero around */
static void pad_planes(const float *x, int C, int H, int W, int ph, int pw, int Hp, int Wp, float *xp) {
  for (int c = 0; c < C; c++)
    for (int r = 0; r < Hp; r++) {
      float *row = xp + ((size_t)c * Hp + r) * Wp;
      int iy = r - ph;
      if (iy < 0 || iy >= H) { memset(row, 0, sizeof(float) * Wp); continue; }
      int right = Wp - pw - W;
      if (pw > 0) memset(row, 0, sizeof(float) * pw);
      memcpy(row + pw, x + ((size_t)c * H + iy) * W, sizeof(float) * W);
      if (right > 0) memset(row + pw + W, 0, sizeof(float) * right);
    }
}

/* yt[0..XO) (8 output channels each) = sum over (ci, ky, kx) wt[ci][ky][kx] * xp[ci][ky*dh][j + kx*dw] */
static inline __attribute__((always_inline)) void dr_fwd_tile(const float *xp, size_t ldr, size_t lds,
                                                              int Cin, const float *wt, int kh, int kw,
                                                              int dh, int dw, float *yt, const int XO) {
  lv_v8f acc[XO];
  for (int j = 0; j < XO; j++) acc[j] = lv_bc8(0.f);
  for (int ci = 0; ci < Cin; ci++)
    for (int ky = 0; ky < kh; ky++) {
      const float *xr = xp + ci * lds + (size_t)ky * dh * ldr;
      const float *wr = wt + (size_t)(ci * kh + ky) * kw * 8;
      for (int kx = 0; kx < kw; kx++) {
        lv_v8f wv = lv_ld8(wr + kx * 8);
        const float *xk = xr + kx * dw;
        #pragma GCC unroll 16
        for (int j = 0; j < XO; j++) acc[j] += wv * lv_bc8(xk[j]);
      }
    }
  for (int j = 0; j < XO; j++) lv_st8(yt + j * 8, acc[j]);
}

/* two output rows (dilation_h 1): each broadcast input x[ci][t][j + kx] feeds row 0 with kernel row
 * t and row 1 with kernel row t - 1; yt0/yt1[0..XO) (8 output channels each) */
static inline __attribute__((always_inline)) void dr_fwd_tile2(const float *xp, size_t ldr, size_t lds,
                                                               int Cin, const float *wt, int kh, int kw,
                                                               int dw, float *yt0, float *yt1,
                                                               const int XO) {
  lv_v8f a0[XO], a1[XO];
  for (int j = 0; j < XO; j++) a0[j] = a1[j] = lv_bc8(0.f);
  for (int ci = 0; ci < Cin; ci++) {
    const float *xc = xp + ci * lds;
    const float *wc = wt + (size_t)ci * kh * kw * 8;
    for (int kx = 0; kx < kw; kx++) { /* input row 0: output row 0 only */
      lv_v8f w0 = lv_ld8(wc + kx * 8);
      const float *xk = xc + kx * dw;
#pragma GCC unroll 16
      for (int j = 0; j < XO; j++) a0[j] += w0 * lv_bc8(xk[j]);
    }
    for (int t = 1; t < kh; t++) {
      const float *xr = xc + t * ldr;
      const float *w0r = wc + (size_t)t * kw * 8, *w1r = w0r - (size_t)kw * 8;
      for (int kx = 0; kx < kw; kx++) {
        lv_v8f w0 = lv_ld8(w0r + kx * 8), w1 = lv_ld8(w1r + kx * 8);
        const float *xk = xr + kx * dw;
#pragma GCC unroll 16
        for (int j = 0; j < XO; j++) {
          lv_v8f b = lv_bc8(xk[j]);
          a0[j] += w0 * b;
          a1[j] += w1 * b;
        }
      }
    }
    const float *xr = xc + kh * ldr, *w1r = wc + (size_t)(kh - 1) * kw * 8;
    for (int kx = 0; kx < kw; kx++) { /* input row kh: output row 1 only */
      lv_v8f w1 = lv_ld8(w1r + kx * 8);
      const float *xk = xr + kx * dw;
#pragma GCC unroll 16
      for (int j = 0; j < XO; j++) a1[j] += w1 * lv_bc8(xk[j]);
    }
  }
  for (int j = 0; j < XO; j++) {
    lv_st8(yt0 + j * 8, a0[j]);
    lv_st8(yt1 + j * 8, a1[j]);
  }
}

#define DR_XO2 6 /* two-row tiles: 2 x 6 accumulators, two weight vectors, one broadcast */

/* yt (Ho, Wo, 8) = conv of the padded image xp (Cin, Hp, Wp) with wt (Cin, kh, kw, 8) */
LV_HOT_BC static void dr_fwd_image(const float *xp, int Hp, int Wp, int Cin, const float *wt, int kh,
                                int kw, int dh, int dw, float *yt, int Ho, int Wo) {
  size_t ldr = (size_t)Wp, lds = (size_t)Hp * Wp;
  int oy = 0;
  if (dh == 1) {
    int nt = (Wo + DR_XO2 - 1) / DR_XO2, base = Wo / nt, rem = Wo % nt;
    for (; oy + 2 <= Ho; oy += 2) {
      const float *xr = xp + oy * ldr;
      float *yr = yt + (size_t)oy * Wo * 8;
      for (int t = 0, ox = 0; t < nt; t++) {
        int n = base + (t < rem);
        const float *xo = xr + ox;
        float *y0 = yr + ox * 8, *y1 = y0 + (size_t)Wo * 8;
        switch (n) {
#define CASE(n) case n: dr_fwd_tile2(xo, ldr, lds, Cin, wt, kh, kw, dw, y0, y1, n); break;
          CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
#undef CASE
          default: break;
        }
        ox += n;
      }
    }
  }
  int nt = (Wo + CL_XO - 1) / CL_XO, base = Wo / nt, rem = Wo % nt;
  for (; oy < Ho; oy++) {
    const float *xr = xp + oy * ldr;
    float *yr = yt + (size_t)oy * Wo * 8;
    for (int t = 0, ox = 0; t < nt; t++) {
      int n = base + (t < rem);
      const float *xo = xr + ox;
      float *yo = yr + ox * 8;
      switch (n) {
#define CASE(n) case n: dr_fwd_tile(xo, ldr, lds, Cin, wt, kh, kw, dh, dw, yo, n); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11)
        CASE(12) CASE(13) CASE(14)
#undef CASE
        default: break;
      }
      ox += n;
    }
  }
}

/* gk[j] (8 output channels, j < KB) += sum over (oy, ox) gyt[oy][ox] * xr0[oy*ldr + ox + j*dw] */
static inline __attribute__((always_inline)) void dr_gw_block(const float *xr0, size_t ldr,
                                                              const float *gyt, int Ho, int Wo,
                                                              int dw, float *gk, const int KB) {
  lv_v8f a[KB];
  for (int j = 0; j < KB; j++) a[j] = lv_bc8(0.f);
  for (int oy = 0; oy < Ho; oy++) {
    const float *g = gyt + (size_t)oy * Wo * 8;
    const float *xr = xr0 + oy * ldr;
    for (int ox = 0; ox < Wo; ox++) {
      lv_v8f gv = lv_ld8(g + ox * 8);
      const float *xo = xr + ox;
      #pragma GCC unroll 16
      for (int j = 0; j < KB; j++) a[j] += gv * lv_bc8(xo[j * dw]);
    }
  }
  for (int j = 0; j < KB; j++) lv_st8(gk + j * 8, lv_ld8(gk + j * 8) + a[j]);
}

/* gk (Cin, kh, kw, 8) += correlation of gyt (Ho, Wo, 8) with the padded image xp (Cin, Hp, Wp) */
LV_HOT_BC static void dr_gw_image(const float *xp, int Hp, int Wp, int Cin, const float *gyt, int Ho,
                               int Wo, int kh, int kw, int dh, int dw, float *gk) {
  size_t ldr = (size_t)Wp;
  int nb = (kw + CL_KB - 1) / CL_KB, kb = (kw + nb - 1) / nb;
  for (int ci = 0; ci < Cin; ci++)
    for (int ky = 0; ky < kh; ky++)
      for (int kx0 = 0; kx0 < kw; kx0 += kb) {
        const float *xk = xp + ((size_t)ci * Hp + (size_t)ky * dh) * Wp + (size_t)kx0 * dw;
        float *g = gk + (((size_t)ci * kh + ky) * kw + kx0) * 8;
        switch (kw - kx0 < kb ? kw - kx0 : kb) {
#define CASE(n) case n: dr_gw_block(xk, ldr, gyt, Ho, Wo, dw, g, n); break;
          CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11)
          CASE(12) CASE(13)
#undef CASE
          default: break;
        }
      }
}

static size_t dr_w_floats(const lv_conv2d_desc *d) { return (size_t)round8(d->C_out * d->C_in * d->kh * d->kw); }

static void dr_forward(const lv_conv2d_desc *d, const conv_plan *p, const float *x, const float *w,
                       const float *bias, float *y, float beta, float *ws, int nt) {
  int Cin = d->C_in, G = d->C_out / 8, K = p->K; /* K = Cin*kh*kw */
  size_t HW = (size_t)d->H * d->W, HoWo = (size_t)d->Ho * d->Wo;
  ws = align8f(ws);
  float *wt = ws, *bufs = ws + dr_w_floats(d);
  for (int g = 0; g < G; g++) /* wt[g][ci][ky][kx][c] = w[g*8 + c][ci][ky][kx] */
    for (int t = 0; t < K; t++)
      for (int c = 0; c < 8; c++) wt[((size_t)g * K + t) * 8 + c] = w[(size_t)(g * 8 + c) * K + t];
#pragma omp parallel num_threads(d->N < nt ? d->N : nt)
  {
    float *xp = bufs + (size_t)omp_get_thread_num() * p->col;
    float *yt = xp + round8(Cin * p->Hp * p->Wp);
#pragma omp for schedule(dynamic, 1)
    for (int n = 0; n < d->N; n++) {
      pad_planes(x + (size_t)n * Cin * HW, Cin, d->H, d->W, d->ph, d->pw, p->Hp, p->Wp, xp);
      for (int g = 0; g < G; g++) {
        dr_fwd_image(xp, p->Hp, p->Wp, Cin, wt + (size_t)g * K * 8, d->kh, d->kw, d->dh, d->dw, yt,
                     d->Ho, d->Wo);
        cl_unpack(yt, (int)HoWo, HoWo, bias ? bias + g * 8 : NULL, beta,
                  y + ((size_t)n * d->C_out + (size_t)g * 8) * HoWo);
      }
    }
  }
}

static void dr_backward_weight(const lv_conv2d_desc *d, const conv_plan *p, const float *x,
                               const float *gy, float *gw, float *ws, int nt) {
  int Cin = d->C_in, G = d->C_out / 8, K = p->K, nch = p->nch;
  size_t HW = (size_t)d->H * d->W, HoWo = (size_t)d->Ho * d->Wo, pst = dr_w_floats(d);
  ws = align8f(ws);
  float *part = ws, *bufs = ws + (size_t)nch * pst;
  memset(part, 0, sizeof(float) * nch * pst);
#pragma omp parallel num_threads(nch < nt ? nch : nt)
  {
    float *xp = bufs + (size_t)omp_get_thread_num() * p->col;
    float *gyt = xp + round8(Cin * p->Hp * p->Wp);
#pragma omp for schedule(dynamic, 1)
    for (int ch = 0; ch < nch; ch++) {
      int n0 = (int)((long)ch * d->N / nch), n1 = (int)((long)(ch + 1) * d->N / nch);
      for (int n = n0; n < n1; n++) {
        pad_planes(x + (size_t)n * Cin * HW, Cin, d->H, d->W, d->ph, d->pw, p->Hp, p->Wp, xp);
        for (int g = 0; g < G; g++) {
          cl_pack(gy + ((size_t)n * d->C_out + (size_t)g * 8) * HoWo, (int)HoWo, HoWo, gyt);
          dr_gw_image(xp, p->Hp, p->Wp, Cin, gyt, d->Ho, d->Wo, d->kh, d->kw, d->dh, d->dw,
                      part + ch * pst + (size_t)g * K * 8);
        }
      }
    }
  }
  for (int g = 0; g < G; g++) /* fixed-order reduction over the chunks */
    for (int t = 0; t < K; t++)
      for (int c = 0; c < 8; c++) {
        float s = 0.f;
        for (int ch = 0; ch < nch; ch++) s += part[ch * pst + ((size_t)g * K + t) * 8 + c];
        gw[(size_t)(g * 8 + c) * K + t] += s;
      }
}

/* ---------------------------------- GEMM paths ---------------------------------- */

/* y (Cout, Ho*Wo) = conv of one image; beta 0 overwrites, 1 accumulates */
static void gemm_forward_image(const lv_conv2d_desc *d, const conv_plan *p, const float *x,
                               const float *w, const float *wr, float *y, float beta, float *col) {
  int HW = d->H * d->W, HoWo = d->Ho * d->Wo, Ci = p->Cin_g, Co = p->Cout_g;
  for (int g = 0; g < d->groups; g++) {
    const float *xg = x + (size_t)g * Ci * HW;
    float *yg = y + (size_t)g * Co * HoWo;
    if (p->path == P_1X1) {
      lv_sgemm(0, 0, Co, HoWo, Ci, 1.f, w + (size_t)g * Co * Ci, Ci, xg, HoWo, beta, yg, HoWo);
    } else if (p->path == P_FULL) {
      im2col_full(d, Ci, xg, col);
      lv_sgemm(0, 0, Co, HoWo, p->K, 1.f, w + (size_t)g * Co * p->K, p->K, col, HoWo, beta, yg, HoWo);
    } else { /* P_ROW */
      int Kr = Ci * d->kw;
      im2col_row(d, Ci, p->Hr, xg, col);
      for (int ky = 0; ky < d->kh; ky++)
        lv_sgemm(0, 0, Co, HoWo, Kr, 1.f, wr + (size_t)(g * d->kh + ky) * Co * Kr, Kr,
                 col + (size_t)ky * d->dh * d->Wo, (int64_t)p->Hr * d->Wo, ky == 0 ? beta : 1.f, yg, HoWo);
    }
  }
}

static void add_bias(const float *bias, int C, int HoWo, float *y) {
  if (!bias) return;
  for (int c = 0; c < C; c++) {
    float b = bias[c];
    float *yc = y + (size_t)c * HoWo;
    for (int i = 0; i < HoWo; i++) yc[i] += b;
  }
}

static size_t ws_forward(const lv_conv2d_desc *d, const conv_plan *p, int nt) {
  if (p->path == P_1X1) return 0;
  if (p->path == P_DW && p->cl) return 8 + cl_wt_floats(d) + (size_t)nt * p->col;
  if (p->path == P_DW) return (size_t)nt * p->col;
  if (p->path == P_DIRECT) return 8 + dr_w_floats(d) + (size_t)nt * p->col;
  return (p->path == P_ROW ? p->wsz : 0) + (size_t)nt * p->col;
}

/* forward with beta (0: y = conv, 1: y += conv); ws has ws_forward floats */
static void conv_forward_impl(const lv_conv2d_desc *d, const conv_plan *p, const float *x,
                              const float *w, const float *bias, float *y, float beta, float *ws) {
  int nt = nthreads_for(d->N);
  if (p->path == P_DW && p->cl) { cl_dw_forward(d, p, x, w, bias, y, beta, ws, nt); return; }
  if (p->path == P_DIRECT) { dr_forward(d, p, x, w, bias, y, beta, ws, nt); return; }
  if (p->path == P_DW) { dw_forward(d, p, x, w, bias, y, beta, ws); return; }
  const float *wr = NULL;
  float *cols = ws;
  if (p->path == P_ROW) {
    reorder_row_weights(d, p, w, ws);
    wr = ws;
    cols = ws + p->wsz;
  }
  size_t xs = (size_t)d->C_in * d->H * d->W, ys = (size_t)d->C_out * d->Ho * d->Wo;
  int HoWo = d->Ho * d->Wo;
  if (d->N >= nt && nt > 1) {
#pragma omp parallel num_threads(nt)
    {
      float *col = cols ? cols + (size_t)omp_get_thread_num() * p->col : NULL;
#pragma omp for schedule(static)
      for (int n = 0; n < d->N; n++) {
        gemm_forward_image(d, p, x + n * xs, w, wr, y + n * ys, beta, col);
        add_bias(bias, d->C_out, HoWo, y + n * ys);
      }
    }
  } else {
    for (int n = 0; n < d->N; n++) {
      gemm_forward_image(d, p, x + n * xs, w, wr, y + n * ys, beta, cols);
      add_bias(bias, d->C_out, HoWo, y + n * ys);
    }
  }
}

/* transposed descriptor for stride-1 backward-data; returns 0 if not applicable */
/* The input gradient as the forward of the transposed convolution (flipped weights, "full"
 * padding) when that forward has a good path: a depthwise or direct kernel, or at least 8 output
 * channels for its GEMMs. Otherwise (few input channels, e.g. a first layer 1 -> 64 of k=15,
 * whose transposed forward is a GEMM with one output row) the col2im path below is used:
 * W^T @ gy per image, an efficient GEMM of (C_in*kh*kw) x (Ho*Wo) x C_out, scattered into gx. */
static int transposed_desc(const lv_conv2d_desc *d, lv_conv2d_desc *t) {
  if (d->sh != 1 || d->sw != 1) return 0;
  int ph = d->dh * (d->kh - 1) - d->ph, pw = d->dw * (d->kw - 1) - d->pw;
  if (ph < 0 || pw < 0) return 0;
  *t = *d;
  t->C_in = d->C_out; t->H = d->Ho; t->W = d->Wo; t->C_out = d->C_in;
  t->ph = ph; t->pw = pw;
  if (lv_conv2d_prepare(t)) { lv_clear_error(); return 0; }
  if (t->Ho != d->H || t->Wo != d->W) return 0;
  conv_plan tp;
  conv_plan_make(t, &tp);
  return tp.path == P_DW || tp.path == P_DIRECT || tp.Cout_g >= 8;
}

/* wt (C_in, Cout_g, kh, kw) = flipped, transposed w (C_out, Cin_g, kh, kw) */
static void flip_weights(const lv_conv2d_desc *d, const conv_plan *p, const float *w, float *wt) {
  int kh = d->kh, kw = d->kw, Ci = p->Cin_g, Co = p->Cout_g, kk = kh * kw;
  for (int g = 0; g < d->groups; g++)
    for (int co = 0; co < Co; co++)
      for (int ci = 0; ci < Ci; ci++) {
        const float *src = w + ((size_t)(g * Co + co) * Ci + ci) * kk;
        float *dst = wt + ((size_t)(g * Ci + ci) * Co + co) * kk;
        for (int i = 0; i < kk; i++) dst[kk - 1 - i] = src[i];
      }
}

static size_t ws_backward_data(const lv_conv2d_desc *d, const conv_plan *p, int nt) {
  if (p->path == P_1X1) return 0;
  lv_conv2d_desc t;
  if (transposed_desc(d, &t)) {
    conv_plan tp;
    conv_plan_make(&t, &tp);
    return p->wsz + ws_forward(&t, &tp, nt);
  }
  return (size_t)nt * p->K * d->Ho * d->Wo;
}

static size_t ws_backward_weight(const lv_conv2d_desc *d, const conv_plan *p, int nt) {
  if (p->path == P_DW && p->cl) return 8 + cl_part_floats(d, p) + (size_t)nt * p->col;
  if (p->path == P_DIRECT) return 8 + (size_t)p->nch * dr_w_floats(d) + (size_t)nt * p->col;
  if (p->path == P_DW) return (size_t)nt * p->col;
  return (size_t)nt * (p->col + p->wsz);
}

size_t lv_conv2d_workspace_floats(const lv_conv2d_desc *d) {
  conv_plan p;
  conv_plan_make(d, &p);
  int nt = nthreads_for(d->N);
  size_t a = ws_forward(d, &p, nt), b = ws_backward_data(d, &p, nt), c = ws_backward_weight(d, &p, nt);
  size_t m = a > b ? a : b;
  return (m > c ? m : c) + 1;
}

static float *ws_get(float *ws, size_t need, float **owned) {
  *owned = NULL;
  if (ws || need == 0) return ws;
  *owned = (float *)malloc(sizeof(float) * need);
  if (!*owned) lv_set_error(LV_ENOMEM, "conv2d: out of memory for a %zu-float workspace", need);
  return *owned;
}

int lv_conv2d_forward(const lv_conv2d_desc *d, const float *x, const float *w, const float *bias,
                      float *y, float *ws) {
  if (check_prepared(d)) return -1;
  if (!x || !w || !y) return lv_set_error(LV_EVALUE, "conv2d_forward: NULL buffer"), -1;
  conv_plan p;
  conv_plan_make(d, &p);
  float *owned;
  size_t need = ws_forward(d, &p, nthreads_for(d->N));
  float *buf = ws_get(ws, need, &owned);
  if (need && !buf) return -1;
  if (d->N > 0) conv_forward_impl(d, &p, x, w, bias, y, 0.f, buf);
  free(owned);
  return 0;
}

int lv_conv2d_backward_data(const lv_conv2d_desc *d, const float *gy, const float *w, float *gx,
                            float *ws) {
  if (check_prepared(d)) return -1;
  if (!gy || !w || !gx) return lv_set_error(LV_EVALUE, "conv2d_backward_data: NULL buffer"), -1;
  conv_plan p;
  conv_plan_make(d, &p);
  int nt = nthreads_for(d->N);
  float *owned;
  size_t need = ws_backward_data(d, &p, nt);
  float *buf = ws_get(ws, need, &owned);
  if (need && !buf) return -1;
  if (d->N == 0) { free(owned); return 0; }
  size_t xs = (size_t)d->C_in * d->H * d->W, ys = (size_t)d->C_out * d->Ho * d->Wo;
  int HW = d->H * d->W, HoWo = d->Ho * d->Wo, Ci = p.Cin_g, Co = p.Cout_g;
  lv_conv2d_desc t;
  if (p.path == P_1X1) {
    int par = d->N >= nt && nt > 1;
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
      for (int n = 0; n < d->N; n++)
        for (int g = 0; g < d->groups; g++)
          lv_sgemm(1, 0, Ci, HW, Co, 1.f, w + (size_t)g * Co * Ci, Ci, gy + n * ys + (size_t)g * Co * HoWo,
                   HoWo, 1.f, gx + n * xs + (size_t)g * Ci * HW, HW);
    }
  } else if (transposed_desc(d, &t)) {
    conv_plan tp;
    conv_plan_make(&t, &tp);
    flip_weights(d, &p, w, buf);
    conv_forward_impl(&t, &tp, gy, buf, NULL, gx, 1.f, buf + p.wsz);
  } else {
    int par = d->N >= nt && nt > 1;
#pragma omp parallel if (par)
    {
      float *col = buf + (size_t)omp_get_thread_num() * p.K * HoWo;
#pragma omp for schedule(static)
      for (int n = 0; n < d->N; n++)
        for (int g = 0; g < d->groups; g++) {
          lv_sgemm(1, 0, p.K, HoWo, Co, 1.f, w + (size_t)g * Co * p.K, p.K,
                   gy + n * ys + (size_t)g * Co * HoWo, HoWo, 0.f, col, HoWo);
          col2im_full_add(d, Ci, col, gx + n * xs + (size_t)g * Ci * HW);
        }
    }
  }
  free(owned);
  return 0;
}

int lv_conv2d_backward_weight(const lv_conv2d_desc *d, const float *x, const float *gy, float *gw,
                              float *gb, float *ws) {
  if (check_prepared(d)) return -1;
  if (!gy || (gw && !x)) return lv_set_error(LV_EVALUE, "conv2d_backward_weight: NULL buffer"), -1;
  conv_plan p;
  conv_plan_make(d, &p);
  int nt = nthreads_for(d->N);
  size_t xs = (size_t)d->C_in * d->H * d->W, ys = (size_t)d->C_out * d->Ho * d->Wo;
  int HW = d->H * d->W, HoWo = d->Ho * d->Wo, Ci = p.Cin_g, Co = p.Cout_g;
  if (gb) {
#pragma omp parallel for schedule(static)
    for (int co = 0; co < d->C_out; co++) {
      double s = 0;
      for (int n = 0; n < d->N; n++) {
        const float *g = gy + n * ys + (size_t)co * HoWo;
        float t = 0.f;
        for (int i = 0; i < HoWo; i++) t += g[i];
        s += t;
      }
      gb[co] += (float)s;
    }
  }
  if (!gw || d->N == 0) return 0;
  float *owned;
  size_t need = ws_backward_weight(d, &p, nt);
  float *buf = ws_get(ws, need, &owned);
  if (need && !buf) return -1;
  if (p.path == P_DIRECT) {
    dr_backward_weight(d, &p, x, gy, gw, buf, nt);
    free(owned);
    return 0;
  }
  if (p.path == P_DW) {
    if (p.cl)
      cl_dw_backward_weight(d, &p, x, gy, gw, buf, nt);
    else
      dw_backward_weight(d, &p, x, gy, gw, buf);
    free(owned);
    return 0;
  }
  int par = d->N >= nt && nt > 1;
  int nacc = par ? nt : 1;
  float *accs = buf + (size_t)nt * p.col; /* nacc x wsz accumulators */
  memset(accs, 0, sizeof(float) * nacc * p.wsz);
  int Kr = Ci * d->kw;
#pragma omp parallel if (par)
  {
    int tid = omp_get_thread_num();
    float *col = buf + (size_t)tid * p.col;
    float *acc = accs + (size_t)tid * p.wsz;
#pragma omp for schedule(static)
    for (int n = 0; n < d->N; n++)
      for (int g = 0; g < d->groups; g++) {
        const float *xg = x + n * xs + (size_t)g * Ci * HW;
        const float *gyg = gy + n * ys + (size_t)g * Co * HoWo;
        if (p.path == P_1X1) {
          lv_sgemm(0, 1, Co, Ci, HoWo, 1.f, gyg, HoWo, xg, HW, 1.f, acc + (size_t)g * Co * Ci, Ci);
        } else if (p.path == P_FULL) {
          im2col_full(d, Ci, xg, col);
          lv_sgemm(0, 1, Co, p.K, HoWo, 1.f, gyg, HoWo, col, HoWo, 1.f, acc + (size_t)g * Co * p.K, p.K);
        } else {
          im2col_row(d, Ci, p.Hr, xg, col);
          for (int ky = 0; ky < d->kh; ky++)
            lv_sgemm(0, 1, Co, Kr, HoWo, 1.f, gyg, HoWo, col + (size_t)ky * d->dh * d->Wo,
                     (int64_t)p.Hr * d->Wo, 1.f, acc + (size_t)(g * d->kh + ky) * Co * Kr, Kr);
        }
      }
  }
  for (int t = 1; t < nacc; t++) {
    float *a = accs + (size_t)t * p.wsz;
    for (size_t i = 0; i < p.wsz; i++) accs[i] += a[i];
  }
  if (p.path == P_ROW) {
    int kh = d->kh, kw = d->kw;
    for (int g = 0; g < d->groups; g++)
      for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
          for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++)
              gw[(((size_t)(g * Co + co) * Ci + ci) * kh + ky) * kw + kx] +=
                  accs[((size_t)(g * kh + ky) * Co + co) * Kr + ci * kw + kx];
  } else {
    for (size_t i = 0; i < p.wsz; i++) gw[i] += accs[i];
  }
  free(owned);
  return 0;
}
