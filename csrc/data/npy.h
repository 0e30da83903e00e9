/* .npy reader: header parser (format versions 1.0, 2.0, 3.0), whole-file reads, conversion to
 * float32, and the FileTreeDataset folder loader. Pure C; no Python.h.
 *
 * Supported dtypes: f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1 and U<n> (UCS-4 strings), either byte order,
 * C or Fortran order. Object arrays (pickles), structured and other dtypes are rejected with a
 * message. Every size the header claims is checked against the bytes that are really there. */
#ifndef LV_NPY_H
#define LV_NPY_H
#include <stddef.h>
#include <stdint.h>

#define LV_NPY_MAXDIM 32

typedef struct lv_npy_info {
  char kind;            /* 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool, 'U' unicode */
  int itemsize;         /* bytes per element (U<n>: 4 * n) */
  int big_endian;       /* data stored big-endian ('>' in descr) */
  int swap;             /* data byte order differs from this machine's */
  int fortran;          /* fortran_order: True */
  int ndim;
  int64_t shape[LV_NPY_MAXDIM];
  int64_t count;        /* product of shape */
  size_t nbytes;        /* count * itemsize */
  size_t data_offset;   /* bytes from the start of the file to the data */
  char descr[24];       /* the descr as written in the header, e.g. "<f8" */
} lv_npy_info;

/* Parse the header at the start of buf (len bytes available, file_size bytes in the whole file)
 * and check that the data fits into file_size. `name` names the file in messages.
 * Errors: LV_EVALUE (not an .npy file, malformed or truncated header, unsupported dtype,
 * truncated data). */
int lv_npy_parse(const void *buf, size_t len, size_t file_size, const char *name, lv_npy_info *info);

/* Read a whole file into *buf (grown with realloc as needed; *cap its capacity); *size gets the
 * file size. Errors: LV_ENOTFOUND (missing), LV_EIO (other read errors), LV_ENOMEM. */
int lv_read_file(const char *path, unsigned char **buf, size_t *cap, size_t *size);

/* Read and parse a file: *data points into *buf (owned by the caller, free() it) at the first
 * data byte, in the file's byte order. */
int lv_npy_read(const char *path, unsigned char **buf, size_t *cap, lv_npy_info *info,
                const unsigned char **data);

/* Convert info->count elements at src (file layout: byte order and C/Fortran order as in info)
 * to float32 in C order. Errors: LV_ETYPE for strings. */
int lv_npy_to_f32(const lv_npy_info *info, const void *src, float *dst);

/* "float64", "int16", "bool", "<U10" ...; returns buf */
const char *lv_npy_dtype_name(const lv_npy_info *info, char *buf, size_t n);
/* "(5335,)", "(1, 36, 64)"; returns buf */
const char *lv_npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* Load one file directly into a float32 destination (C order). When `want` is not NULL the file
 * must have want's kind, itemsize and shape (byte order and C/Fortran order may differ), else
 * LV_EVALUE "path: expected float64 (5335,), found float32 (5334,)". dst_count must equal the
 * file's element count. info (may be NULL) receives the header. *buf / *cap: scratch buffer
 * reused between calls (free() it at the end). */
int lv_npy_load_f32(const char *path, const lv_npy_info *want, float *dst, int64_t dst_count,
                    lv_npy_info *info, unsigned char **buf, size_t *cap);

/* Count the files 0.npy .. n-1.npy in a folder. Names that are not <decimal>.npy are ignored;
 * a gap in the numbering is an error naming the first missing file (LV_ENOTFOUND), as is a
 * missing folder. */
int lv_npy_dir_count(const char *dir, int64_t *n);

/* Load dir/0.npy .. dir/(n-1).npy into dst (n * info0->count float32, C order) with up to
 * nthreads threads (<= 0: a default suited to file reads). Every file must have the dtype kind,
 * itemsize and shape of info0 (obtain it by parsing dir/0.npy). check_finite: a NaN or infinity
 * (also after conversion to float32) is an error naming the file. When several files fail the
 * error of the lowest index is reported. */
int lv_npy_load_dir_f32(const char *dir, int64_t n, const lv_npy_info *info0, int check_finite,
                        int nthreads, float *dst);

/* dst[i, :] = src[idx[i], :] for a row-major (n_rows, row_len) float32 block.
 * Errors: LV_EINDEX when an index is outside [0, n_rows). */
int lv_gather_rows_f32(const float *src, int64_t n_rows, int64_t row_len, const int64_t *idx,
                       int64_t n_idx, float *dst);

/* Per-column affine map of a row-major (n_rows, row_len) block, computed in double and rounded
 * once: dst[i, j] = (src[i, cols[j]] - offset[j]) * factor[j]   (divide == 0)
 *                 = (src[i, cols[j]] - offset[j]) / factor[j]   (divide != 0)
 * cols NULL: all columns (n_cols == row_len). offset / factor have n_par entries, 1 (broadcast)
 * or n_cols; offset may be NULL (0). dst is (n_rows, n_cols). Errors: LV_EINDEX / LV_EVALUE. */
int lv_affine_cols_f32(const float *src, int64_t n_rows, int64_t row_len, const int64_t *cols,
                       int64_t n_cols, const double *offset, const double *factor, int64_t n_par,
                       int divide, float *dst);
#endif
