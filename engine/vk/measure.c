/* engine/vk/measure.c — the device's memory bandwidth, measured (vk.h: ms_vk_measure_copy). */
#include <stdlib.h>

#include "common/status.h"
#include "common/timer.h"
#include "engine/vk/vk.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int ms_vk_measure_copy(ms_vk *vk, uint64_t bytes, int reps, double *gbs) {
    if (!vk || !gbs || bytes < 4 || reps < 1) return -MS_E_INVALID_ARG;
    if (reps > 64) reps = 64;
    bytes &= ~3ull;
    ms_vk_buf a = {0}, b = {0};
    ms_vk_cmd *cmd = NULL;
    int rc = ms_vk_cmd_create(vk, 2, &cmd);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, bytes, &a);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, bytes, &b);
    uint32_t i0, i1;
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc) {
        ms_vk_cmd_fill(cmd, ms_vk_buf_range(&a, 0, bytes), 0x3f800000u);
        ms_vk_cmd_barrier(cmd);
        rc = ms_vk_cmd_timestamp(cmd, &i0);
    }
    if (!rc) {
        ms_vk_cmd_copy(cmd, ms_vk_buf_range(&a, 0, bytes), ms_vk_buf_range(&b, 0, bytes));
        rc = ms_vk_cmd_timestamp(cmd, &i1);
    }
    if (!rc) rc = ms_vk_cmd_end(cmd);
    /* warm up (clocks ramp) for 300 ms, then the median of reps timed runs */
    uint64_t w0 = ms_time_ns();
    while (!rc && ms_elapsed_ms(w0) < 300.0) rc = ms_vk_cmd_run(cmd);
    double t[64];
    for (int r = 0; !rc && r < reps; r++) {
        double ts[2];
        rc = ms_vk_cmd_run(cmd);
        if (!rc) rc = ms_vk_cmd_timestamps(cmd, ts, 2);
        t[r] = ts[1] - ts[0];
    }
    if (!rc) {
        qsort(t, (size_t)reps, sizeof t[0], cmp_double);
        double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
        *gbs = med > 0 ? 2.0 * (double)bytes / med : 0;
    }
    ms_vk_cmd_free(cmd);
    ms_vk_buf_free(vk, &a);
    ms_vk_buf_free(vk, &b);
    return rc;
}
