/* Multi-scan (Sensorium) training: one epoch that cycles through the scans inside one C call.
 * Each batch names a "kind" (a captured graph of one scan and batch size, with that scan's image
 * and response blocks); the loop gathers, replays forward + loss, runs the backward and steps Adam
 * every `step_every` batches, exactly as the per-batch calls of lv_train_epoch (accum 0) and
 * adam steps from Python did, without Python between batches. */
#include "train.h"
#include "backend.h"
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int lv_train_multi_epoch(const lv_multi_kind *kinds, int nkinds, const int32_t *kind, const int64_t *start,
                         int64_t nbatch, const int64_t *order, lv_adam *opt, int step_every, lv_progress_fn cb,
                         void *ctx, int report_loss, double *loss_sum) {
  if (nkinds < 1 || nbatch < 0 || step_every < 1)
    return lv_set_error(LV_EVALUE, "train_multi_epoch: %d kinds, %lld batches, step every %d", nkinds,
                        (long long)nbatch, step_every);
  int dev = lv_on_cuda(kinds[0].g->loss);
  for (int k = 1; k < nkinds; k++)
    if (lv_on_cuda(kinds[k].g->loss) != dev)
      return lv_set_error(LV_EVALUE, "train_multi_epoch: the graphs are on different devices");
  double last = now_s(), total = 0;
  int read_last = 0;
  if (dev && lv_cuda->loss_accumulate(NULL, 1) < 0) return -1;
  for (int64_t b = 0; b < nbatch; b++) {
    if (kind[b] < 0 || kind[b] >= nkinds)
      return lv_set_error(LV_EVALUE, "train_multi_epoch: batch %lld has kind %d of %d", (long long)b, kind[b], nkinds);
    const lv_multi_kind *k = &kinds[kind[b]];
    lv_graph *g = k->g;
    if (lv_graph_gather(g, k->x, k->xrow, k->y, k->yrow, order + start[b], g->batch, k->dev) < 0) return -1;
    if (lv_capture_replay(&g->cap) < 0) return -1;
    if (dev) { if (lv_cuda->loss_accumulate(lv_f32(g->loss), 0) < 0) return -1; }
    else total += lv_f32(g->loss)[0];
    if (lv_backward(g->loss, NULL) < 0) return -1;
    if ((b + 1) % step_every == 0 && lv_adam_apply(opt) < 0) return -1;
    double t = now_s();
    if (cb && (t - last > 0.1 || b == 0 || b == nbatch - 1)) {
      last = t;
      if (dev && report_loss) {
        if (lv_cuda->loss_read(&total) < 0) return -1;
        read_last = b == nbatch - 1;
      }
      if (cb(ctx, b + 1, nbatch, total)) { if (loss_sum) *loss_sum = total; return 1; }
    }
  }
  if (dev && !read_last && lv_cuda->loss_read(&total) < 0) return -1;
  if (loss_sum) *loss_sum = total;
  return 0;
}
