// The words of a CUDA error, as lviv_c reports it: host code only (no kernels, no table, no
// Python), so that tests/test_cuda_errors.py can compile it into a small program and check every
// message without a GPU.
//
// Kernels run asynchronously: a fault inside one (an illegal address, a device assert) is
// returned by whatever CUDA call comes next: often the copy of a result back to the host. Such a
// message must not blame that copy; it says that a kernel launched earlier failed and how to find
// which (LVIV_CUDA_SYNC=1: every launch is then followed by a synchronisation and a check, so the
// fault is reported at the kernel, named by its op). Those faults are also "sticky": the
// process's CUDA context is unusable afterwards and every later call fails with the same error,
// so the message says so, and later calls report that state instead of errors of their own.
#pragma once
#include <cuda_runtime.h>
#include <cstdio>

// where an error was noticed
enum { LVC_AT_CALL = 0,    // the result of an API call itself (an allocation, a copy being queued)
       LVC_AT_LAUNCH = 1,  // right after a kernel launch or a cuBLAS/cuDNN call (LVC_LAUNCHED)
       LVC_AT_WAIT = 2 };  // a call that waits for queued work (a copy to the host, synchronize)

// errors of executing a kernel that leave the context unusable (driver_types.h: "the process must
// be terminated and relaunched")
inline bool lvc_is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorContained:
    case cudaErrorExternalDevice:
      return true;
    default:
      return false;
  }
}

#define LVC_UNUSABLE_HINT \
  "; the CUDA context of this process is unusable after this error: every later CUDA call fails, restart the Python process"

// The message of error e noticed at `what` (an op or call name), `at` one of LVC_AT_*;
// sync: LVIV_CUDA_SYNC is on; lost: the sticky error that already made the context unusable
// (cudaSuccess when none). Writes at most n bytes (NUL-terminated) into buf.
inline void lvc_error_text(char *buf, size_t n, cudaError_t e, const char *what, int at, bool sync,
                           cudaError_t lost) {
  if (lost != cudaSuccess) {
    snprintf(buf, n,
             "CUDA is unusable in this process since an earlier error (%s: %s)%s%s; restart the Python "
             "process",
             cudaGetErrorName(lost), cudaGetErrorString(lost), what ? ", refused: " : "", what ? what : "");
    return;
  }
  const char *hint = lvc_is_sticky(e) ? LVC_UNUSABLE_HINT : "";
  if (lvc_is_sticky(e) && !sync) {
    // noticed after the fact (kernels run asynchronously): not the fault of the call that noticed it
    snprintf(buf, n, "a CUDA kernel launched earlier failed: %s (%s) (set LVIV_CUDA_SYNC=1 to find which)%s",
             cudaGetErrorString(e), cudaGetErrorName(e), hint);
  } else if (at == LVC_AT_LAUNCH) {
    snprintf(buf, n, "CUDA kernel %s failed: %s (%s)%s", what, cudaGetErrorString(e), cudaGetErrorName(e), hint);
  } else {
    snprintf(buf, n, "CUDA error in %s: %s (%s)%s", what, cudaGetErrorString(e), cudaGetErrorName(e), hint);
  }
}
