/* The base layer of lviv_c: errors and random numbers. Everything below the binding uses it; it
 * uses nothing of lviv_c. The reader (csrc/data) and the CPU kernels (csrc/cpu/kernels.h)
 * include only this, the op definition and their own headers. No Python.h. */
#ifndef LV_BASE_H
#define LV_BASE_H
#include <stddef.h>
#include <stdint.h>

/* ---- errors: functions return 0 / non-NULL on success; on failure they set a thread-local
 * message and an error kind that the binding maps to a Python exception. ---- */
typedef enum {
  LV_OK = 0,
  LV_EVALUE,     /* ValueError: bad shapes/arguments */
  LV_ETYPE,      /* TypeError: wrong dtype */
  LV_EINDEX,     /* IndexError */
  LV_ENOTFOUND,  /* FileNotFoundError */
  LV_EIO,        /* OSError */
  LV_ENOMEM,     /* MemoryError */
  LV_ERUNTIME,   /* RuntimeError (CUDA, internal) */
  LV_EINTR       /* KeyboardInterrupt (Ctrl-C seen between batches) */
} lv_errkind;

int lv_set_error(lv_errkind kind, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
lv_errkind lv_error_kind(void);
const char *lv_error_msg(void);
void lv_clear_error(void);

/* ---- random numbers (seeded, reproducible) ---- */
void lv_manual_seed(uint64_t seed);
uint64_t lv_rng_next(void);           /* global generator */
double lv_rng_uniform(void);          /* [0, 1) */
double lv_rng_normal(void);
typedef struct { uint64_t s[4]; } lv_rng;
void lv_rng_seed(lv_rng *r, uint64_t seed);
uint64_t lv_rng_u64(lv_rng *r);
double lv_rng_u01(lv_rng *r);
double lv_rng_gauss(lv_rng *r);

#endif
