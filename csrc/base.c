/* The base layer: errors (a thread-local message and kind) and seeded random numbers. Depends on
 * nothing above it; the reader (csrc/data), the kernels (csrc/cpu) and the core use it. */
#include "base.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local lv_errkind err_kind = LV_OK;
static _Thread_local char err_msg[1024];

int lv_set_error(lv_errkind kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  err_kind = kind;
  return -1;
}
lv_errkind lv_error_kind(void) { return err_kind; }
const char *lv_error_msg(void) { return err_msg; }
void lv_clear_error(void) { err_kind = LV_OK; err_msg[0] = 0; }

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---- */
static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
void lv_rng_seed(lv_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t lv_rng_u64(lv_rng *r) {
  uint64_t *s = r->s;
  uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
  return res;
}
double lv_rng_u01(lv_rng *r) { return (lv_rng_u64(r) >> 11) * 0x1.0p-53; }
double lv_rng_gauss(lv_rng *r) {
  /* Box-Muller (one value per call; simple and reproducible) */
  double u1 = lv_rng_u01(r), u2 = lv_rng_u01(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static lv_rng global_rng = {{0x853c49e6748fea9bULL, 0xda3e39cb94b95bdbULL, 1, 2}};
void lv_manual_seed(uint64_t seed) { lv_rng_seed(&global_rng, seed); }
uint64_t lv_rng_next(void) { return lv_rng_u64(&global_rng); }
double lv_rng_uniform(void) { return lv_rng_u01(&global_rng); }
double lv_rng_normal(void) { return lv_rng_gauss(&global_rng); }
