/* Row gathers and per-column affine maps on float32 blocks (loader batches, normalization). */
#include "data/npy.h"
#include "base.h"

#include <inttypes.h>
#include <string.h>

int lv_gather_rows_f32(const float *src /* (n_rows, row_len) */, int64_t n_rows, int64_t row_len,
                       const int64_t *idx /* (n_idx,) */, int64_t n_idx,
                       float *dst /* (n_idx, row_len) */) {
  for (int64_t i = 0; i < n_idx; i++)
    if (idx[i] < 0 || idx[i] >= n_rows)
      return lv_set_error(LV_EINDEX, "gather: index %" PRId64 " (position %" PRId64 ") is out of "
                          "range for a block of %" PRId64 " rows", idx[i], i, n_rows);
  const size_t rb = (size_t)row_len * sizeof(float);
  for (int64_t i = 0; i < n_idx; i++)
    memcpy(dst + (size_t)i * (size_t)row_len, src + (size_t)idx[i] * (size_t)row_len, rb);
  return 0;
}

int lv_affine_cols_f32(const float *src /* (n_rows, row_len) */, int64_t n_rows, int64_t row_len,
                       const int64_t *cols /* (n_cols,) or NULL */, int64_t n_cols,
                       const double *offset /* (n_par,) or NULL */,
                       const double *factor /* (n_par,) */, int64_t n_par, int divide,
                       float *dst /* (n_rows, n_cols) */) {
  if (!cols && n_cols != row_len)
    return lv_set_error(LV_EVALUE, "affine: %" PRId64 " columns asked for, the block has %" PRId64,
                        n_cols, row_len);
  if (n_par != 1 && n_par != n_cols)
    return lv_set_error(LV_EVALUE, "affine: %" PRId64 " parameters for %" PRId64 " columns "
                        "(expected 1 or %" PRId64 ")", n_par, n_cols, n_cols);
  if (cols)
    for (int64_t j = 0; j < n_cols; j++)
      if (cols[j] < 0 || cols[j] >= row_len)
        return lv_set_error(LV_EINDEX, "affine: column %" PRId64 " is out of range for %" PRId64
                            " columns", cols[j], row_len);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n_rows * n_cols > (1 << 20))
#endif
  for (int64_t i = 0; i < n_rows; i++) {
    const float *s = src + (size_t)i * (size_t)row_len;
    float *d = dst + (size_t)i * (size_t)n_cols;
    for (int64_t j = 0; j < n_cols; j++) {
      int64_t p = n_par == 1 ? 0 : j;
      double x = (double)s[cols ? cols[j] : j];
      if (offset) x -= offset[p];
      d[j] = (float)(divide ? x / factor[p] : x * factor[p]);
    }
  }
  return 0;
}
