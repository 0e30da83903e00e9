/* .npy header parser, file reads and conversion to float32 (see npy.h). */
#include "data/npy.h"
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG 1
#else
#define HOST_BIG 0
#endif

/* ------------------------------------------------------------------ header text parsing */

typedef struct {
  const char *p, *end;
  const char *name;
} scanner;

static void skip_ws(scanner *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

static int expect_char(scanner *s, char c, const char *what) {
  skip_ws(s);
  if (s->p >= s->end || *s->p != c)
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: expected '%c' %s", s->name, c, what);
  s->p++;
  return 0;
}

/* a quoted Python string without escapes into out (at most n-1 chars) */
static int parse_str(scanner *s, char *out, size_t n, const char *what) {
  skip_ws(s);
  if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: expected a quoted string for %s",
                        s->name, what);
  char q = *s->p++;
  size_t k = 0;
  while (s->p < s->end && *s->p != q) {
    unsigned char c = (unsigned char)*s->p;
    if (c < 0x20 || c > 0x7e)
      return lv_set_error(LV_EVALUE, "%s: malformed .npy header: byte 0x%02x in the %s string",
                          s->name, c, what);
    if (c == '\\' || k + 1 >= n)
      return lv_set_error(LV_EVALUE, "%s: malformed .npy header: unsupported %s string", s->name, what);
    out[k++] = *s->p++;
  }
  if (s->p >= s->end)
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: unterminated string", s->name);
  s->p++;
  out[k] = 0;
  return 0;
}

static int parse_bool(scanner *s, int *v) {
  skip_ws(s);
  size_t left = (size_t)(s->end - s->p);
  if (left >= 4 && memcmp(s->p, "True", 4) == 0) { *v = 1; s->p += 4; return 0; }
  if (left >= 5 && memcmp(s->p, "False", 5) == 0) { *v = 0; s->p += 5; return 0; }
  return lv_set_error(LV_EVALUE, "%s: malformed .npy header: fortran_order must be True or False",
                      s->name);
}

static int parse_shape(scanner *s, lv_npy_info *info) {
  if (expect_char(s, '(', "to open the shape tuple")) return -1;
  info->ndim = 0;
  for (;;) {
    skip_ws(s);
    if (s->p < s->end && *s->p == ')') { s->p++; return 0; }
    if (s->p >= s->end || *s->p < '0' || *s->p > '9')
      return lv_set_error(LV_EVALUE, "%s: malformed .npy header: shape must be a tuple of "
                          "non-negative integers", s->name);
    int64_t v = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
      int d = *s->p - '0';
      if (v > (INT64_MAX - d) / 10)
        return lv_set_error(LV_EVALUE, "%s: .npy header: shape entry too large", s->name);
      v = v * 10 + d;
      s->p++;
    }
    if (s->p < s->end && (*s->p == 'L' || *s->p == 'l')) s->p++; /* Python 2 long */
    if (info->ndim >= LV_NPY_MAXDIM)
      return lv_set_error(LV_EVALUE, "%s: .npy header: more than %d dimensions", s->name,
                          LV_NPY_MAXDIM);
    info->shape[info->ndim++] = v;
    skip_ws(s);
    if (s->p < s->end && *s->p == ',') { s->p++; continue; }
    if (s->p < s->end && *s->p == ')') { s->p++; return 0; }
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: expected ',' or ')' in the shape",
                        s->name);
  }
}

/* descr like "<f8", "|b1", ">U10" -> kind / itemsize / byte order */
static int parse_descr(const char *d, const char *name, lv_npy_info *info) {
  const char *p = d;
  char order = '=';
  if (*p == '<' || *p == '>' || *p == '|' || *p == '=') order = *p++;
  char kind = *p++;
  if (kind == 'O')
    return lv_set_error(LV_EVALUE, "%s: object arrays ('%s') hold pickled Python objects, which "
                        "lviv_c does not read; save plain numeric or unicode arrays", name, d);
  if (kind == '?') { kind = 'b'; if (!*p) { info->kind = 'b'; info->itemsize = 1; goto order; } }
  if (!(kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b' || kind == 'U'))
    return lv_set_error(LV_EVALUE, "%s: unsupported dtype '%s' (expected float32/64, (u)int8..64, "
                        "bool or unicode)", name, d);
  if (*p < '0' || *p > '9')
    return lv_set_error(LV_EVALUE, "%s: unsupported dtype '%s'", name, d);
  long sz = 0;
  while (*p >= '0' && *p <= '9') {
    sz = sz * 10 + (*p - '0');
    if (sz > 100000000L) return lv_set_error(LV_EVALUE, "%s: unsupported dtype '%s'", name, d);
    p++;
  }
  if (*p) return lv_set_error(LV_EVALUE, "%s: unsupported dtype '%s'", name, d);
  int ok = 0;
  switch (kind) {
    case 'f': ok = sz == 4 || sz == 8; break;
    case 'i': case 'u': ok = sz == 1 || sz == 2 || sz == 4 || sz == 8; break;
    case 'b': ok = sz == 1; break;
    case 'U': ok = sz >= 0; break;
  }
  if (!ok)
    return lv_set_error(LV_EVALUE, "%s: unsupported dtype '%s' (expected float32/64, (u)int8..64, "
                        "bool or unicode)", name, d);
  info->kind = kind;
  info->itemsize = kind == 'U' ? (int)(4 * sz) : (int)sz;
order:
  info->big_endian = order == '>' || (order == '=' && HOST_BIG);
  {
    int elem = kind == 'U' ? 4 : info->itemsize;
    info->swap = elem > 1 && info->big_endian != HOST_BIG;
  }
  return 0;
}

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

int lv_npy_parse(const void *buf, size_t len, size_t file_size, const char *name,
                 lv_npy_info *info) {
  const unsigned char *b = buf;
  memset(info, 0, sizeof *info);
  if (len > file_size) len = file_size;
  if (len < 10 || memcmp(b, MAGIC, 6) != 0)
    return lv_set_error(LV_EVALUE, "%s: not an .npy file (expected the \\x93NUMPY magic, file has "
                        "%zu bytes)", name, file_size);
  int major = b[6], minor = b[7];
  size_t pre, hlen;
  if (major == 1) {
    pre = 10;
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
  } else if (major == 2 || major == 3) {
    if (len < 12)
      return lv_set_error(LV_EVALUE, "%s: truncated .npy header (%zu bytes)", name, file_size);
    pre = 12;
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
  } else {
    return lv_set_error(LV_EVALUE, "%s: unsupported .npy format version %d.%d (expected 1.0, 2.0 "
                        "or 3.0)", name, major, minor);
  }
  if (hlen > len - pre)
    return lv_set_error(LV_EVALUE, "%s: truncated .npy header: it claims %zu bytes, the file has "
                        "%zu after the preamble", name, hlen, file_size - pre);
  scanner s = {(const char *)b + pre, (const char *)b + pre + hlen, name};
  int have_descr = 0, have_fo = 0, have_shape = 0;
  if (expect_char(&s, '{', "at the start of the header dict")) return -1;
  for (;;) {
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') { s.p++; break; }
    char key[32];
    if (parse_str(&s, key, sizeof key, "a header key")) return -1;
    if (expect_char(&s, ':', "after a header key")) return -1;
    if (strcmp(key, "descr") == 0) {
      skip_ws(&s);
      if (s.p < s.end && *s.p == '[')
        return lv_set_error(LV_EVALUE, "%s: structured dtypes are not supported (expected a plain "
                            "numeric or unicode array)", name);
      if (parse_str(&s, info->descr, sizeof info->descr, "descr")) return -1;
      if (parse_descr(info->descr, name, info)) return -1;
      have_descr = 1;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (parse_bool(&s, &info->fortran)) return -1;
      have_fo = 1;
    } else if (strcmp(key, "shape") == 0) {
      if (parse_shape(&s, info)) return -1;
      have_shape = 1;
    } else {
      return lv_set_error(LV_EVALUE, "%s: malformed .npy header: unexpected key '%s'", name, key);
    }
    skip_ws(&s);
    if (s.p < s.end && *s.p == ',') { s.p++; continue; }
    if (s.p < s.end && *s.p == '}') { s.p++; break; }
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: expected ',' or '}'", name);
  }
  /* like NumPy (which evaluates the header as one dict literal): only padding may follow */
  skip_ws(&s);
  if (s.p < s.end)
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: unexpected '%c' after the closing "
                        "'}'", name, (*s.p >= 32 && *s.p < 127) ? *s.p : '?');
  if (!have_descr || !have_fo || !have_shape)
    return lv_set_error(LV_EVALUE, "%s: malformed .npy header: missing '%s'", name,
                        !have_descr ? "descr" : !have_fo ? "fortran_order" : "shape");
  /* element count and byte size, with overflow checks */
  /* NumPy needs the product of the non-zero dimensions times max(itemsize, 1) to fit an
   * intp even for empty arrays; count is the element count. */
  uint64_t count = 1, nz = info->itemsize > 1 ? (uint64_t)info->itemsize : 1;
  for (int i = 0; i < info->ndim; i++) {
    uint64_t d = (uint64_t)info->shape[i];
    if (d && nz > (uint64_t)INT64_MAX / d) {
      char sh[256];
      return lv_set_error(LV_EVALUE, "%s: .npy header: shape %s is too large", name,
                          lv_npy_shape_str(info->ndim, info->shape, sh, sizeof sh));
    }
    if (d) nz *= d;
    count *= d;
  }
  if (info->itemsize && count > (uint64_t)(SIZE_MAX / 2) / (uint64_t)info->itemsize)
    return lv_set_error(LV_EVALUE, "%s: .npy header: the data would be too large", name);
  info->count = (int64_t)count;
  info->nbytes = (size_t)count * (size_t)info->itemsize;
  info->data_offset = pre + hlen;
  if (info->nbytes > file_size - info->data_offset) {
    char sh[128], dt[32];
    return lv_set_error(LV_EVALUE, "%s: truncated .npy data: header says %s %s = %zu bytes, the "
                        "file has %zu after the header", name,
                        lv_npy_dtype_name(info, dt, sizeof dt),
                        lv_npy_shape_str(info->ndim, info->shape, sh, sizeof sh), info->nbytes,
                        file_size - info->data_offset);
  }
  return 0;
}

const char *lv_npy_dtype_name(const lv_npy_info *info, char *buf, size_t n) {
  switch (info->kind) {
    case 'f': snprintf(buf, n, "float%d", info->itemsize * 8); break;
    case 'i': snprintf(buf, n, "int%d", info->itemsize * 8); break;
    case 'u': snprintf(buf, n, "uint%d", info->itemsize * 8); break;
    case 'b': snprintf(buf, n, "bool"); break;
    case 'U': snprintf(buf, n, "%cU%d", info->big_endian ? '>' : '<', info->itemsize / 4); break;
    default: snprintf(buf, n, "?"); break;
  }
  return buf;
}

const char *lv_npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  if (!n) return buf;
  size_t k = 0;
  buf[0] = 0;
#define PUT(...) do { if (k < n) { int w = snprintf(buf + k, n - k, __VA_ARGS__); if (w > 0) k += (size_t)w; } } while (0)
  PUT("(");
  for (int i = 0; i < ndim; i++) PUT(i ? ", %" PRId64 : "%" PRId64, shape[i]);
  PUT(ndim == 1 ? ",)" : ")");
#undef PUT
  return buf;
}

/* ------------------------------------------------------------------ file reads */

int lv_read_file(const char *path, unsigned char **buf, size_t *cap, size_t *size) {
  /* non-blocking, so a FIFO (or device) named like a trial is refused by the fstat below
   * instead of blocking the open forever */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      return lv_set_error(LV_ENOTFOUND, "%s: no such file", path);
    return lv_set_error(LV_EIO, "%s: cannot open: %s", path, strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return lv_set_error(LV_EIO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return lv_set_error(LV_EIO, "%s: not a regular file (%s)", path,
                        S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a folder"
                        : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "special");
  }
  { /* a regular file: back to blocking reads */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  }
  size_t want = (size_t)st.st_size;
  if (!*buf || *cap < want + 1) {
    unsigned char *nb = realloc(*buf, want + 1);
    if (!nb) {
      close(fd);
      return lv_set_error(LV_ENOMEM, "%s: out of memory reading %zu bytes", path, want);
    }
    *buf = nb;
    *cap = want + 1;
  }
  size_t got = 0;
  while (got < want) {
    ssize_t r = read(fd, *buf + got, want - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return lv_set_error(LV_EIO, "%s: read error: %s", path, strerror(e));
    }
    if (r == 0) break; /* file shrank: parse what is there */
    got += (size_t)r;
  }
  close(fd);
  *size = got;
  return 0;
}

int lv_npy_read(const char *path, unsigned char **buf, size_t *cap, lv_npy_info *info,
                const unsigned char **data) {
  size_t size = 0;
  if (lv_read_file(path, buf, cap, &size)) return -1;
  if (lv_npy_parse(*buf, size, size, path, info)) return -1;
  *data = *buf + info->data_offset;
  return 0;
}

/* ------------------------------------------------------------------ conversion */

static inline void load_bytes(unsigned char *t, const unsigned char *p, int size, int swap) {
  if (swap)
    for (int i = 0; i < size; i++) t[i] = p[size - 1 - i];
  else
    memcpy(t, p, (size_t)size);
}

static inline float elem_f32(char kind, int size, int swap, const unsigned char *p) {
  unsigned char t[8];
  load_bytes(t, p, size, swap);
  switch (kind) {
    case 'f':
      if (size == 4) { float v; memcpy(&v, t, 4); return v; }
      else { double v; memcpy(&v, t, 8); return (float)v; }
    case 'b': return t[0] ? 1.0f : 0.0f;
    case 'i':
      switch (size) {
        case 1: { int8_t v; memcpy(&v, t, 1); return (float)v; }
        case 2: { int16_t v; memcpy(&v, t, 2); return (float)v; }
        case 4: { int32_t v; memcpy(&v, t, 4); return (float)v; }
        default: { int64_t v; memcpy(&v, t, 8); return (float)v; }
      }
    default: /* 'u' */
      switch (size) {
        case 1: return (float)t[0];
        case 2: { uint16_t v; memcpy(&v, t, 2); return (float)v; }
        case 4: { uint32_t v; memcpy(&v, t, 4); return (float)v; }
        default: { uint64_t v; memcpy(&v, t, 8); return (float)v; }
      }
  }
}

int lv_npy_to_f32(const lv_npy_info *info, const void *src_, float *dst) {
  const unsigned char *src = src_;
  const char kind = info->kind;
  const int size = info->itemsize, swap = info->swap;
  const int64_t n = info->count;
  if (kind == 'U') {
    char dt[32];
    return lv_set_error(LV_ETYPE, "cannot convert a %s (string) array to float32",
                        lv_npy_dtype_name(info, dt, sizeof dt));
  }
  if (!info->fortran || info->ndim <= 1) {
    if (kind == 'f' && size == 4 && !swap) {
      memcpy(dst, src, (size_t)n * 4);
    } else if (kind == 'f' && size == 8 && !swap) {
      for (int64_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, src + 8 * i, 8);
        dst[i] = (float)v;
      }
    } else {
      for (int64_t i = 0; i < n; i++) dst[i] = elem_f32(kind, size, swap, src + (size_t)size * i);
    }
    return 0;
  }
  /* Fortran order: walk the C-order output, track the Fortran-order source offset */
  if (n == 0) return 0;
  const int nd = info->ndim;
  int64_t idx[LV_NPY_MAXDIM] = {0}, fstride[LV_NPY_MAXDIM];
  fstride[0] = 1;
  for (int d = 1; d < nd; d++) fstride[d] = fstride[d - 1] * info->shape[d - 1];
  int64_t off = 0;
  for (int64_t k = 0; k < n; k++) {
    dst[k] = elem_f32(kind, size, swap, src + (size_t)size * off);
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < info->shape[d]) { off += fstride[d]; break; }
      off -= fstride[d] * (info->shape[d] - 1);
      idx[d] = 0;
    }
  }
  return 0;
}

static int same_layout(const lv_npy_info *a, const lv_npy_info *b) {
  if (a->kind != b->kind || a->itemsize != b->itemsize || a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

int lv_npy_load_f32(const char *path, const lv_npy_info *want, float *dst, int64_t dst_count,
                    lv_npy_info *info_out, unsigned char **buf, size_t *cap) {
  lv_npy_info info;
  const unsigned char *data;
  if (lv_npy_read(path, buf, cap, &info, &data)) return -1;
  if (info_out) *info_out = info;
  if (want && !same_layout(want, &info)) {
    char d1[32], d2[32], s1[256], s2[256];
    return lv_set_error(LV_EVALUE, "%s: expected %s %s, found %s %s", path,
                        lv_npy_dtype_name(want, d1, sizeof d1),
                        lv_npy_shape_str(want->ndim, want->shape, s1, sizeof s1),
                        lv_npy_dtype_name(&info, d2, sizeof d2),
                        lv_npy_shape_str(info.ndim, info.shape, s2, sizeof s2));
  }
  if (info.count != dst_count) {
    char s2[256];
    return lv_set_error(LV_EVALUE, "%s: expected %" PRId64 " elements, found %" PRId64 " %s", path,
                        dst_count, info.count, lv_npy_shape_str(info.ndim, info.shape, s2, sizeof s2));
  }
  if (info.kind == 'U') {
    char d2[32];
    return lv_set_error(LV_ETYPE, "%s: cannot load a %s (string) array as float32", path,
                        lv_npy_dtype_name(&info, d2, sizeof d2));
  }
  return lv_npy_to_f32(&info, data, dst);
}
