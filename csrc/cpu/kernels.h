/* lviv_c CPU compute kernels: plain C functions on contiguous float32 buffers (NCHW).
 *
 * Conventions (all kernels):
 *  - Return 0 on success, -1 after lv_set_error(LV_EVALUE | LV_ENOMEM, ...) on bad arguments or
 *    allocation failure. No exit/abort/assert.
 *  - Forward outputs are OVERWRITTEN. Backward gradients are ACCUMULATED (+=) into the caller's
 *    buffers (the op table hands backward a zeroed gradient tensor), unless stated otherwise.
 *    Any gradient pointer documented as "nullable" may be NULL to skip that gradient.
 *  - Threading: OpenMP over the available threads (lv_num_threads()); BLAS calls made inside a
 *    parallel region run single-threaded. Buffers must not alias unless stated.
 *  - Workspaces: conv kernels take an optional caller workspace `ws` of
 *    lv_conv2d_workspace_floats(d) floats (NULL: allocated internally per call). Every other
 *    kernel allocates what it needs internally (small, per call).
 */
#ifndef LV_CPU_KERNELS_H
#define LV_CPU_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include "base.h"
#include "opdef.h"

/* ------------------------------------------------------------------------------------------
 * conv2d: y = conv(x, w) (+ bias), cross-correlation like torch.nn.functional.conv2d.
 * Paths chosen internally: 1x1 (pure GEMM), depthwise direct (groups == C_in == C_out, stride 1;
 * channels-last 8-channel vectors when C % 8 == 0), direct over 8 output channels per vector
 * (groups 1, stride 1, C_out % 8 == 0, C_in and C_out <= 16), im2col + GEMM otherwise (a
 * row-shared im2col when stride_h == 1 and the full column matrix would be large); backward-data
 * with stride 1 runs as a forward conv with the flipped kernel. Results are deterministic run to
 * run for a given thread count; the two direct paths reduce over fixed image chunks, so theirs do
 * not depend on the thread count either.
 * ------------------------------------------------------------------------------------------ */
/* C(M,N) = alpha * op(A) op(B) + beta * C, row-major; ta/tb: transpose flags (OpenBLAS) */
void lv_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* threads the kernels use (OpenMP) */
int lv_num_threads(void);

/* lv_conv2d_desc: csrc/opdef.h */
int lv_conv2d_prepare(lv_conv2d_desc *d);
/* Floats of workspace sufficient for forward, backward_data and backward_weight of d
 * (d must be prepared). Passing ws == NULL to the kernels makes them allocate it themselves. */
size_t lv_conv2d_workspace_floats(const lv_conv2d_desc *d);

int lv_conv2d_forward(const lv_conv2d_desc *d,
                      const float *x,    /* (N, C_in, H, W) */
                      const float *w,    /* (C_out, C_in/groups, kh, kw) */
                      const float *bias, /* (C_out) nullable */
                      float *y,          /* (N, C_out, Ho, Wo) overwritten */
                      float *ws);        /* lv_conv2d_workspace_floats(d) floats, or NULL */
int lv_conv2d_backward_data(const lv_conv2d_desc *d,
                            const float *gy, /* (N, C_out, Ho, Wo) */
                            const float *w,  /* (C_out, C_in/groups, kh, kw) */
                            float *gx,       /* (N, C_in, H, W) accumulated (+=) */
                            float *ws);      /* or NULL */
int lv_conv2d_backward_weight(const lv_conv2d_desc *d,
                              const float *x,  /* (N, C_in, H, W) saved forward input */
                              const float *gy, /* (N, C_out, Ho, Wo) */
                              float *gw,       /* (C_out, C_in/groups, kh, kw) += , nullable */
                              float *gb,       /* (C_out) += , nullable */
                              float *ws);      /* or NULL */

/* ------------------------------------------------------------------------------------------
 * Batch normalisation over (N, HW) per channel: x viewed as (N, C, HW); BatchNorm1d on (N, C)
 * is HW = 1. gamma/beta nullable (affine=False: gamma = 1, beta = 0; when gamma is NULL the
 * weight/bias gradients are not computed). Training forward returns the batch mean and
 * invstd = 1/sqrt(biased_var + eps) (save both for backward); the caller updates its running
 * stats with the unbiased variance: var_unbiased = (1/invstd^2 - eps) * M / (M - 1), M = N*HW
 * (lv_batchnorm_forward_train also returns it directly through var_unbiased, nullable).
 * ------------------------------------------------------------------------------------------ */
int lv_batchnorm_forward_train(int N, int C, int HW,
                               const float *x,     /* (N, C, HW) */
                               const float *gamma, /* (C) nullable */
                               const float *beta,  /* (C) nullable */
                               float eps,
                               float *y,            /* (N, C, HW) overwritten; may alias x */
                               float *mean,         /* (C) out: batch mean */
                               float *invstd,       /* (C) out: 1/sqrt(biased var + eps) */
                               float *var_unbiased); /* (C) out, nullable */
int lv_batchnorm_forward_eval(int N, int C, int HW,
                              const float *x,     /* (N, C, HW) */
                              const float *gamma, /* (C) nullable */
                              const float *beta,  /* (C) nullable */
                              const float *running_mean, /* (C) */
                              const float *running_var,  /* (C) */
                              float eps,
                              float *y);          /* (N, C, HW) overwritten; may alias x */
int lv_batchnorm_backward_train(int N, int C, int HW,
                                const float *x,      /* (N, C, HW) saved forward input */
                                const float *gy,     /* (N, C, HW) */
                                const float *gamma,  /* (C) nullable */
                                const float *mean,   /* (C) from forward_train */
                                const float *invstd, /* (C) from forward_train */
                                float *gx,           /* (N, C, HW) += , nullable */
                                float *ggamma,       /* (C) += , nullable */
                                float *gbeta);       /* (C) += , nullable */
int lv_batchnorm_backward_eval(int N, int C, int HW,
                               const float *x,      /* (N, C, HW) saved forward input */
                               const float *gy,     /* (N, C, HW) */
                               const float *gamma,  /* (C) nullable */
                               const float *running_mean, /* (C) as used in forward */
                               const float *running_var,  /* (C) as used in forward */
                               float eps,
                               float *gx,           /* (N, C, HW) += , nullable */
                               float *ggamma,       /* (C) += , nullable */
                               float *gbeta);       /* (C) += , nullable */

/* Fused BatchNorm + ELU(alpha = 1): y = elu(bn(x)). Forward: same arguments as the plain
 * versions (y must NOT alias x in training: backward needs both x and y). Backward needs the
 * saved x and y (ELU'(z) = 1 if y > 0 else y + 1) and, for training, mean/invstd. */
int lv_bn_elu_forward_train(int N, int C, int HW, const float *x, const float *gamma,
                            const float *beta, float eps,
                            float *y, float *mean, float *invstd, float *var_unbiased);
int lv_bn_elu_forward_eval(int N, int C, int HW, const float *x, const float *gamma,
                           const float *beta, const float *running_mean,
                           const float *running_var, float eps, float *y);
int lv_bn_elu_backward_train(int N, int C, int HW,
                             const float *x,  /* (N, C, HW) saved forward input */
                             const float *y,  /* (N, C, HW) saved forward output */
                             const float *gy, /* (N, C, HW) */
                             const float *gamma, const float *mean, const float *invstd,
                             float *gx, float *ggamma, float *gbeta); /* all += , nullable */
int lv_bn_elu_backward_eval(int N, int C, int HW, const float *x, const float *y,
                            const float *gy, const float *gamma, const float *running_mean,
                            const float *running_var, float eps,
                            float *gx, float *ggamma, float *gbeta); /* all += , nullable */

/* ------------------------------------------------------------------------------------------
 * Elementwise
 * ------------------------------------------------------------------------------------------ */
/* y = x > 0 ? x : alpha * (exp(x) - 1); y may alias x. alpha > 0. */
int lv_elu_forward(int64_t n, const float *x /* (n) */, float alpha, float *y /* (n) */);
/* gx += gy * (y > 0 ? 1 : y + alpha), from the saved OUTPUT y (valid for alpha > 0). */
int lv_elu_backward(int64_t n, const float *y /* (n) */, const float *gy /* (n) */, float alpha,
                    float *gx /* (n) += */);
/* Poisson loss with fused gradient:
 *   *loss = scale * sum_i (yhat_i - y_i * log(yhat_i + eps))   (accumulated in double)
 *   grad_i = scale * (1 - y_i / (yhat_i + eps))                  (OVERWRITTEN; nullable)
 * The op's backward then computes gyhat += gout * grad. */
int lv_poisson_loss(int64_t n, const float *yhat /* (n) */, const float *y /* (n) */, float eps,
                    float scale, double *loss /* scalar out */, float *grad /* (n) nullable */);

/* avg_pool2d (ceil_mode False, count_include_pad True), planes = N*C:
 * Ho = (H + 2ph - kh)/sh + 1, Wo = (W + 2pw - kw)/sw + 1. */
int lv_avg_pool2d_forward(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                          const float *x /* (planes, H, W) */,
                          float *y /* (planes, Ho, Wo) overwritten */);
int lv_avg_pool2d_backward(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph,
                           int pw, const float *gy /* (planes, Ho, Wo) */,
                           float *gx /* (planes, H, W) += */);

/* ------------------------------------------------------------------------------------------
 * grid_sample: bilinear, padding_mode 'zeros', PyTorch semantics. grid[...,0] = x (width),
 * grid[...,1] = y (height), in [-1, 1]. align_corners: 1 -> -1/1 are the centres of the edge
 * pixels; 0 -> the outer edges of the edge pixels.
 * ------------------------------------------------------------------------------------------ */
int lv_grid_sample_forward(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                           const float *x,    /* (N, C, H, W) */
                           const float *grid, /* (N, Ho, Wo, 2) */
                           float *y);         /* (N, C, Ho, Wo) overwritten */
int lv_grid_sample_backward(int N, int C, int H, int W, int Ho, int Wo, int align_corners,
                            const float *x,    /* (N, C, H, W) (needed for ggrid) */
                            const float *grid, /* (N, Ho, Wo, 2) */
                            const float *gy,   /* (N, C, Ho, Wo) */
                            float *gx,         /* (N, C, H, W) += , nullable */
                            float *ggrid);     /* (N, Ho, Wo, 2) += , nullable */

/* ------------------------------------------------------------------------------------------
 * Gaussian readout (FullGaussian2d read step): bilinear sample of x at pos (align_corners True,
 * zeros outside), then a per-neuron linear map over channels:
 *   out[b,n] = sum_c feat[c,n] * bilinear(x[b,c], pos[b,n]) + bias[n]
 * pos[...,0] = x (width), pos[...,1] = y (height), in [-1, 1].
 * shared_pos = 0: pos is (B, Nn, 2) (training: one sampled position per image and neuron);
 * shared_pos = 1: pos is (Nn, 2), the same for every image (eval mode).
 * Allocates its workspace internally (per thread: one HWC copy of an image, and for backward
 * a (Nn, C) feature-gradient accumulator).
 * ------------------------------------------------------------------------------------------ */
int lv_readout_forward(int B, int C, int H, int W, int Nn, int shared_pos,
                       const float *x,    /* (B, C, H, W) */
                       const float *pos,  /* (B, Nn, 2) or (Nn, 2) if shared_pos */
                       const float *feat, /* (C, Nn) */
                       const float *bias, /* (Nn) nullable */
                       float *out);       /* (B, Nn) overwritten */
int lv_readout_backward(int B, int C, int H, int W, int Nn, int shared_pos,
                        const float *x,    /* (B, C, H, W) */
                        const float *pos,  /* (B, Nn, 2) or (Nn, 2) */
                        const float *feat, /* (C, Nn) */
                        const float *gout, /* (B, Nn) */
                        float *gx,         /* (B, C, H, W) += , nullable */
                        float *gpos,       /* like pos, += , nullable */
                        float *gfeat,      /* (C, Nn) += , nullable */
                        float *gbias);     /* (Nn) += , nullable */

/* Read positions of the Gaussian readout (ReadoutPositions op, csrc/ops/readout_ops.c).
 * project bit 0: clamp mu (2N) to [-1, 1] in place; bit 1: sigma >= 0 in place unless type
 * LV_GAUSS_FULL. sample: out/eps/mask (B, N, 2), eps ~ N(0, 1) drawn from seed (the CPU: a
 * xoshiro stream per chunk of 128 neurons; the GPU: a counter-based hash); pos = mu + sigma eps
 * (full: sigma (N, 2, 2) row-major, uncorrelated (N, 2), isotropic (N)); else out/mask (N, 2)
 * from mu. out = clamp(pos, -1, 1), mask = 1 inside [-1, 1], else 0. */
int lv_readout_pos_forward(int64_t B, int64_t N, int sample, int type, int project, float *mu,
                           float *sigma, uint64_t seed, float *eps, float *mask, float *out);
/* gmu (2N) += sum_b g*mask; gsigma += sum_b (g*mask) eps^T reduced per type (both nullable) */
int lv_readout_pos_backward(int64_t B, int64_t N, int sample, int type, const float *g,
                            const float *mask, const float *eps, float *gmu, float *gsigma);

/* ------------------------------------------------------------------------------------------
 * The full sum of a float array in double, in one fixed order that does not depend on the
 * thread count: segments of LV_SUM_SEG consecutive elements (the last one shorter), each summed
 * in 16 interleaved lanes (element k of the segment into lane k % 16, in order; the lanes then
 * combined pairwise: lane j + lane j+8, then j + j+4, j + j+2, 0 + 1), the segment sums added
 * in segment order. Every full sum/mean reduction of the CPU uses it, and the fused Linear+Adam
 * step (lv_linear_adam_step) reproduces it for sum |w|, so both give the same bits.
 * ------------------------------------------------------------------------------------------ */
#define LV_SUM_SEG 256
/* one segment (len <= LV_SUM_SEG, starting at a multiple of it); absval: sum |x| */
double lv_sum_seg(const float *x, int64_t len, int absval);
/* *out = the sum of n floats (of |x| with absval); 0, or -1 on allocation failure */
int lv_sum_f64(const float *x, int64_t n, int absval, double *out);

/* ------------------------------------------------------------------------------------------
 * Optimizer updates, in place on flat arrays (PyTorch formulas).
 * ------------------------------------------------------------------------------------------ */
/* Adam (lv_f_adam in csrc/formulas.h: PyTorch's formula with the bias corrections folded into
 * two per-step constants) on n floats; vmax (n) the amsgrad maximum, NULL without amsgrad;
 * a->maximize negates g. a->step counts from 1. */
int lv_adam_step(int64_t n, float *p /* (n) */, const float *g /* (n) */, float *m /* (n) */,
                 float *v /* (n) */, float *vmax /* (n) nullable */, const lv_adam_attr *a);
/* The fused weight step of a Linear layer trained by Adam (the C training loop, csrc/fuse.c): for
 * w (O, K) with y = x w^T (x (M, K), the output gradient gy (M, O)), one pass over w that, tile by
 * tile, computes the weight gradient gy^T x of the tile into cache (each element one FMA chain over
 * the batch, as OpenBLAS's kernels compute it for the unfused backward: the same bits), adds
 * the L1 term lv_f_unop_grad(LV_ABS, w, |w|, l1g) when has_l1 (the gradient of a regularizer
 * l1g-weighted sum |w|), and applies lv_f_adam to w, m, v: the full gradient is never written to
 * memory. gy NULL: no Linear gradient (only the L1 term). abs_sum (nullable): when K is a
 * multiple of LV_SUM_SEG, set to sum |w| after the step in lv_sum_f64's order (the next forward's
 * regularizer, without a pass over w), else NAN. ws: lv_linear_adam_ws_floats(M) floats, segsum:
 * O*K/LV_SUM_SEG doubles (nullable when abs_sum is NULL). a: lr, betas, eps, weight decay, step
 * (amsgrad and maximize are not supported). */
size_t lv_linear_adam_ws_floats(int64_t M);
int lv_linear_adam_step(int64_t O, int64_t K, int64_t M, const float *gy /* (M, O) nullable */,
                        const float *x /* (M, K) */, float *w, float *m, float *v, int has_l1,
                        float l1g, const lv_adam_attr *a, float *ws, double *segsum,
                        double *abs_sum);
/* SGD (lv_f_sgd in csrc/formulas.h) on n floats; buf (n) may be NULL when a->momentum == 0;
 * a->first = 1 on the first step (buf uninitialised); a->maximize negates g. */
int lv_sgd_step(int64_t n, float *p, const float *g, float *buf, const lv_sgd_attr *a);

#endif
