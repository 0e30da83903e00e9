// Test program for cuda/errors.cuh (tests/test_cuda_errors.py compiles and runs it; no GPU
// needed): prints the message of each case on its own line, the test checks the words.
#include <cstdio>
#include "errors.cuh"

static void show(const char *label, cudaError_t e, const char *what, int at, bool sync, cudaError_t lost) {
  char buf[1024];
  lvc_error_text(buf, sizeof buf, e, what, at, sync, lost);
  printf("%s|%d|%s\n", label, lvc_is_sticky(e) ? 1 : 0, buf);
}

int main() {
  // a kernel's illegal address noticed by the next copy, without and with LVIV_CUDA_SYNC
  show("fault_at_copy", cudaErrorIllegalAddress, "copy from the GPU", LVC_AT_WAIT, false, cudaSuccess);
  show("fault_at_launch_sync", cudaErrorIllegalAddress, "batch_norm", LVC_AT_LAUNCH, true, cudaSuccess);
  show("fault_at_launch_nosync", cudaErrorIllegalAddress, "batch_norm", LVC_AT_LAUNCH, false, cudaSuccess);
  show("assert_at_sync", cudaErrorAssert, "synchronize", LVC_AT_WAIT, false, cudaSuccess);
  // a launch's own (not sticky) error: too many threads
  show("bad_launch", cudaErrorInvalidConfiguration, "readout", LVC_AT_LAUNCH, false, cudaSuccess);
  // an allocation's own error
  show("oom", cudaErrorMemoryAllocation, "scratch allocation", LVC_AT_CALL, false, cudaSuccess);
  // after the context was lost: every later call
  show("later", cudaErrorIllegalAddress, "allocation", LVC_AT_CALL, false, cudaErrorIllegalAddress);
  show("later_init", cudaErrorIllegalAddress, nullptr, LVC_AT_CALL, false, cudaErrorLaunchFailure);
  return 0;
}
