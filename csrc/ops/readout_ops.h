/* Autograd ops of the Gaussian readout (neuralpredictors FullGaussian2d):
 *   lv_readout_positions  read positions per neuron: training draws eps ~ N(0, I) per image and
 *                         neuron inside forward (fresh on every replay, seeded by lv_manual_seed)
 *                         and returns clamp(mu + sigma @ eps, -1, 1); eval returns clamp(mu, -1, 1)
 *   lv_gaussian_readout   out[b, n] = sum_c feat[c, n] * bilinear(x[b, c], pos[., n]) + bias[n]
 *                         (align_corners True, zeros outside)
 * Both backpropagate to every input (through the clamp: the gradient passes where the unclamped
 * value lies in [-1, 1], like torch.clamp). */
#ifndef LV_READOUT_OPS_H
#define LV_READOUT_OPS_H
#include "lv.h"

/* lv_gauss_type (LV_GAUSS_FULL, ...): csrc/opdef.h */

/* mu: N*2 values (any shape, e.g. (N, 2) or (1, N, 1, 2)); sigma: N*4 (full: sigma[n] is the 2x2
 * matrix, pos = mu + sigma[n] @ eps), N*2 (uncorrelated: pos_c = mu_c + sigma_c eps_c) or N
 * (isotropic) values, NULL when not sampling. sample: draw eps and return (batch, N, 2); else
 * return (N, 2) (the same positions for every image). project (bits): 1 first clamps mu in place to
 * [-1, 1], 2 clamps sigma in place to >= 0 (non-full types), as neuralpredictors does with its
 * free parameters on every forward; only for leaf parameters. */
lv_tensor *lv_readout_positions(lv_tensor *mu, lv_tensor *sigma, int64_t batch, int sample,
                                int gauss_type, int project);

/* x (B, C, H, W); pos (B, N, 2) or (N, 2) (x, y in [-1, 1]); feat C*N values laid out (C, N)
 * (e.g. (1, C, 1, N)); bias (N) or NULL. Returns (B, N). */
lv_tensor *lv_gaussian_readout(lv_tensor *x, lv_tensor *pos, lv_tensor *feat, lv_tensor *bias);
#endif
