/* tests/ops_perf.h — test_ops --perf: its options, the timing helper and the GEMV measurement
 * (tests/test_ops.c), and the moe measurements and the sweep file (tests/ops_perf.c). */
#ifndef MS_TESTS_OPS_PERF_H
#define MS_TESTS_OPS_PERF_H

#include <stdint.h>

#include "engine/vk/vk.h"

typedef struct perf_opts {
    double peak_gbs;      /* 0: use the measured copy bandwidth */
    uint64_t total_bytes; /* distinct weight bytes per sustained GEMV run */
    ms_vk_gemv_tune tune; /* --wg/--rows/--unroll/--sg/--fp4 */
    int reps;
    const char *sweep;    /* --sweep FILE, or NULL */
    int gemm_sweep;       /* --gemm-sweep: also time every tune of ops_gemm_tunes */
    ms_wenc gemm_enc;     /* --gemm-shape ENC:MxK (gemm_m 0: the built-in shapes) */
    uint32_t gemm_m, gemm_k;
} perf_opts;

/* Replays the recorded buffer for >= 300 ms, then `reps` times; the median time between its first
 * and last timestamp in *med_ns. */
int time_cmd(ms_vk_cmd *cmd, int reps, double *med_ns);

/* Sustained GEMV bandwidth on [m x k] (n columns) over copies of total_bytes, one line per tune
 * (tunes NULL: po->tune or the defaults), all on the same uploaded copies. */
int perf_gemv(ms_vk *vk, ms_vk_cmd *cmd, ms_wenc enc, uint32_t m, uint32_t k, uint32_t n, const perf_opts *po,
              double peak, const ms_vk_gemv_tune *tunes, uint32_t n_tunes);

/* moe_up / moe_down at the V4-Flash and V4-Pro expert shapes (n 1, k 6), default tunes. */
int perf_moe_defaults(ms_vk *vk, ms_vk_cmd *cmd, const perf_opts *po, double peak);

/* The measurements listed in po->sweep, in order (format: tests/ops_perf.c). */
int run_sweep(ms_vk *vk, ms_vk_cmd *cmd, const perf_opts *po, double peak);

#endif
