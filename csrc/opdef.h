/* The op definition: every op code and every op's typed attributes, in one place.
 *
 * Read by the C ops (csrc/ops/), the CPU kernels (csrc/cpu/), the CUDA backend (cuda/, through
 * nvcc) and Python: the binding exports each code under its name without the LV_ prefix
 * (lviv_c._C.ADD, _C.NEG, _C.RSUM, ...; csrc/python/module.c), and lviv_c/tensor.py imports them
 * from there. Add an op code to one of the X-lists below and it exists everywhere.
 * Plain C99 (no Python.h, no CUDA headers). */
#ifndef LV_OPDEF_H
#define LV_OPDEF_H
#include <stdint.h>

#define LV_MAXDIM 8

/* ---- op codes (X-lists: the enum and the Python names come from the same list) ---- */
/* binary elementwise, NumPy broadcasting; EQ..GE are comparisons (not differentiable) */
#define LV_BINOP_LIST(X) X(ADD) X(SUB) X(MUL) X(DIV) X(POW) X(MAXIMUM) X(MINIMUM) \
  X(EQ) X(NE) X(LT) X(LE) X(GT) X(GE)
/* unary elementwise with up to two float parameters p0, p1:
 * ELU p0 = alpha; CLAMP p0 = min (or -inf), p1 = max (or +inf); AFFINE p0 * x + p1;
 * POWS x ** p0; RDIV p0 / x */
#define LV_UNOP_LIST(X) X(NEG) X(EXP) X(LOG) X(SQRT) X(ABS) X(SIGN) X(ELU) X(RELU) X(TANH) \
  X(SIGMOID) X(CLAMP) X(AFFINE) X(POWS) X(RDIV) X(SQUARE) X(LOG1P) X(SOFTPLUS) X(SIN) X(COS)
/* reductions over a bitmask of dims; VAR/STD take a correction */
#define LV_REDOP_LIST(X) X(RSUM) X(RMEAN) X(RVAR) X(RSTD) X(RMAX) X(RMIN) X(RARGMAX) X(RARGMIN)

#define LV_OPDEF_ENUM_(name) LV_##name,
typedef enum { LV_BINOP_LIST(LV_OPDEF_ENUM_) LV_N_BINOPS } lv_binop;
typedef enum { LV_UNOP_LIST(LV_OPDEF_ENUM_) LV_N_UNOPS } lv_unop;
typedef enum { LV_REDOP_LIST(LV_OPDEF_ENUM_) LV_N_REDOPS } lv_redop;
#undef LV_OPDEF_ENUM_

/* ---- typed attributes (what an op's forward and backward need besides its tensors) ---- */

/* conv2d: y = conv(x, w) (+ bias), cross-correlation like torch.nn.functional.conv2d.
 * Fill the first 13 fields and call lv_conv2d_prepare() (csrc/cpu/kernels.h), which validates
 * them and sets Ho, Wo. Padding is explicit and symmetric ('same' is resolved by the caller). */
typedef struct lv_conv2d_desc {
  int N, C_in, H, W;    /* input (N, C_in, H, W) */
  int C_out, kh, kw;    /* weight (C_out, C_in/groups, kh, kw) */
  int sh, sw;           /* stride >= 1 */
  int ph, pw;           /* zero padding >= 0 on each side */
  int dh, dw;           /* dilation >= 1 */
  int groups;           /* divides C_in and C_out */
  int Ho, Wo;           /* output (N, C_out, Ho, Wo): set by lv_conv2d_prepare */
} lv_conv2d_desc;

/* avg_pool2d (ceil_mode False, count_include_pad True) over planes = N*C images (H, W):
 * Ho = (H + 2ph - kh)/sh + 1, Wo = (W + 2pw - kw)/sw + 1 */
typedef struct lv_pool2d_desc {
  int planes, H, W;
  int kh, kw, sh, sw, ph, pw;
} lv_pool2d_desc;

/* constant padding: output dim i = in[i] + before[i] + after[i] */
typedef struct lv_pad_desc {
  int nd;
  int64_t in[LV_MAXDIM];     /* input shape */
  int64_t before[LV_MAXDIM]; /* leading pad per dim */
  int64_t out[LV_MAXDIM];    /* output shape */
} lv_pad_desc;

/* BatchNorm over x viewed as (N, C, HW); eps in the normalisation; momentum < 0: cumulative
 * average (factor 1/num_batches_tracked); use_batch_stats: training statistics; fuse_elu:
 * y = elu(bn(x)) with alpha 1 */
typedef struct lv_bn_attr {
  int N, C, HW;
  int use_batch_stats, fuse_elu;
  float eps;
  double momentum;
} lv_bn_attr;

/* Gaussian readout: how sigma maps eps to a position offset (full 2x2, per axis, one scalar) */
typedef enum { LV_GAUSS_FULL = 0, LV_GAUSS_UNCORRELATED = 1, LV_GAUSS_ISOTROPIC = 2 } lv_gauss_type;

/* Adam (PyTorch's formulas; step counts from 1) */
typedef struct lv_adam_attr {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  int amsgrad, maximize;
} lv_adam_attr;

/* SGD (PyTorch's formulas); first = 1 on the first step (the momentum buffer is then set) */
typedef struct lv_sgd_attr {
  float lr, momentum, dampening, weight_decay;
  int nesterov, maximize, first;
} lv_sgd_attr;

#endif
