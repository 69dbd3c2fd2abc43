/* tools/bench/attention.c — timing of ms_vk_rec_attention at the V4-Flash and V4-Pro shapes
 * (decode and 512-token prefill chunks; correctness is test_ops -o attention's job).
 *
 * Not part of the CMake build (the C files of tools/ itself are the CLI); build it against a build tree:
 *   cc -O2 -std=c17 -D_GNU_SOURCE -I. -Ibuild tools/bench/attention.c build/libms_vk.a \
 *      build/shaders/libms_shaders.a build/libms_env.a build/libms_common.a -lvulkan -lm -lpthread \
 *      -o build/bench_attention
 * usage: bench_attention [-r REPS] [--ht N] [--et N] [--qc N] [--split N] [SHAPE...]
 * Each figure: the GPU time per call (timestamps around REPS calls recorded back to back, each
 * followed by a barrier as in a forward pass), the median of 5 replays after a >= 300 ms warm-up
 * (an idle H200 drops its clock). FLOP counted as 4 * n * heads * head_dim * entries. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "common/timer.h"
#include "engine/vk/vk.h"
#include "tools/env.h"

typedef struct shape {
    const char *name;
    uint32_t n, heads, window, ratio, topk, n_rows, pos0;
} shape;

static const shape k_shapes[] = {
    {"flash-swa-dec", 1, 64, 128, 0, 0, 0, 4095},
    {"flash-csa-dec-64k", 1, 64, 128, 4, 512, 16384, 65535},
    {"flash-hca-dec-1m", 1, 64, 128, 128, 0, 8192, 1048575},
    {"pro-csa-dec-64k", 1, 128, 128, 4, 1024, 16384, 65535},
    {"pro-hca-dec-64k", 1, 128, 128, 128, 0, 512, 65535},
    {"pro-hca-dec-1m", 1, 128, 128, 128, 0, 8192, 1048575},
    {"flash-csa-pre512", 512, 64, 128, 4, 512, 16384, 65024},
    {"pro-csa-pre512", 512, 128, 128, 4, 1024, 16384, 65024},
    {"pro-hca-pre512-64k", 512, 128, 128, 128, 0, 512, 65024},
};
#define N_SHAPES (sizeof k_shapes / sizeof k_shapes[0])
#define D 512u

static uint64_t g_state = 12345;
static float frand(void) {
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_state >> 40) * 0x1p-24 * 2.0 - 1.0);
}

static int upload(ms_vk *vk, const void *src, uint64_t bytes, ms_vk_buf *out) {
    int rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, bytes, out);
    return rc ? rc : ms_vk_upload(vk, out, 0, src, bytes);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench(ms_vk *vk, const shape *s, uint32_t reps, const ms_vk_attention_tune *tune) {
    const uint32_t n = s->n, H = s->heads, R = s->window + n - 1;
    const uint64_t nq = (uint64_t)n * H * D, nring = (uint64_t)R * D, nrows = (uint64_t)(s->n_rows ? s->n_rows : 1) * D;
    const uint64_t nsel = (uint64_t)n * (s->topk ? s->topk : 1);
    float *q = ms_malloc(nq * 4), *ring = ms_malloc(nring * 4), *rows = ms_malloc(nrows * 4), *sink = ms_malloc(H * 4);
    uint32_t *sel = ms_malloc(nsel * 4);
    if (!q || !ring || !rows || !sink || !sel) return -MS_E_NOMEM;
    for (uint64_t i = 0; i < nq; i++) q[i] = frand() * 2;
    for (uint64_t i = 0; i < nring; i++) ring[i] = frand();
    for (uint64_t i = 0; i < nrows; i++) rows[i] = frand();
    for (uint32_t h = 0; h < H; h++) sink[h] = frand();
    uint64_t entries = 0;
    for (uint32_t t = 0; t < n; t++) {
        uint64_t p = (uint64_t)s->pos0 + t, nb = s->ratio ? (p + 1) / s->ratio : 0;
        if (nb > s->n_rows) nb = s->n_rows;
        entries += (p + 1 < s->window ? p + 1 : s->window);
        if (s->ratio == 4) { /* a random ascending selection of topk among nb */
            uint32_t got = 0;
            for (uint32_t j = 0; j < nb && got < s->topk; j++)
                if ((uint64_t)(g_state = g_state * 6364136223846793005ull + 1) % (nb - j) < s->topk - got)
                    sel[(uint64_t)t * s->topk + got++] = j;
            while (got < s->topk) sel[(uint64_t)t * s->topk + got++] = 0xFFFFFFFFu;
            entries += nb < s->topk ? nb : s->topk;
        } else {
            entries += nb;
        }
    }
    const uint64_t sbytes = ms_vk_attention_scratch_bytes(vk, n, H, D, s->window, s->ratio, s->topk, s->n_rows, tune);
    ms_vk_buf qb, rb, cb, sb, kb, pb, ob, xb = {0};
    uint32_t pos0 = s->pos0;
    int rc = upload(vk, q, nq * 4, &qb);
    if (!rc) rc = upload(vk, ring, nring * 4, &rb);
    if (!rc) rc = upload(vk, rows, nrows * 4, &cb);
    if (!rc) rc = upload(vk, sel, nsel * 4, &sb);
    if (!rc) rc = upload(vk, sink, H * 4, &kb);
    if (!rc) rc = upload(vk, &pos0, 4, &pb);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, nq * 4, &ob);
    if (!rc && sbytes) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, sbytes, &xb);
    ms_free(q);
    ms_free(ring);
    ms_free(rows);
    ms_free(sink);
    ms_free(sel);
    if (rc) return rc;
    ms_vk_cmd *cmd;
    rc = ms_vk_cmd_create(vk, 4, &cmd);
    if (rc) return rc;
    uint32_t ts;
    rc = ms_vk_cmd_begin(cmd);
    if (!rc) rc = ms_vk_cmd_timestamp(cmd, &ts);
    for (uint32_t r = 0; r < reps && !rc; r++) {
        rc = ms_vk_rec_attention_tuned(cmd, ms_vk_buf_range(&qb, 0, nq * 4), ms_vk_buf_range(&rb, 0, nring * 4),
                                       ms_vk_buf_range(&cb, 0, nrows * 4), ms_vk_buf_range(&sb, 0, nsel * 4),
                                       ms_vk_buf_range(&kb, 0, H * 4), ms_vk_buf_range(&pb, 0, 4),
                                       ms_vk_buf_range(&ob, 0, nq * 4),
                                       sbytes ? ms_vk_buf_range(&xb, 0, sbytes) : ms_vk_buf_range(&pb, 0, 4), n, H,
                                       D, s->window, R, s->ratio, s->topk, s->n_rows, 0.044194173824159216f, tune);
        ms_vk_cmd_barrier(cmd);
    }
    if (!rc) rc = ms_vk_cmd_timestamp(cmd, &ts);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    double med = 0;
    if (!rc) {
        uint64_t t0 = ms_time_ns();
        while (!rc && ms_elapsed_ms(t0) < 300) rc = ms_vk_cmd_run(cmd); /* warm-up: clock up */
        double us[5];
        for (int i = 0; i < 5 && !rc; i++) {
            double ns[2];
            rc = ms_vk_cmd_run(cmd);
            if (!rc) rc = ms_vk_cmd_timestamps(cmd, ns, 2);
            us[i] = (ns[1] - ns[0]) * 1e-3 / reps;
        }
        qsort(us, 5, sizeof us[0], cmp_double);
        med = us[2];
    }
    if (!rc) {
        const double flop = 4.0 * H * D * (double)entries;
        printf("%-20s n=%-3u heads=%-3u entries/q=%-6.0f splits-scratch=%-9llu %9.2f us  %7.2f TFLOP/s\n", s->name,
               n, H, (double)entries / n, (unsigned long long)sbytes, med, flop / (med * 1e-6) * 1e-12);
    } else {
        printf("%-20s error: %s\n", s->name, ms_strerror(rc));
    }
    ms_vk_cmd_free(cmd);
    ms_vk_buf_free(vk, &qb);
    ms_vk_buf_free(vk, &rb);
    ms_vk_buf_free(vk, &cb);
    ms_vk_buf_free(vk, &sb);
    ms_vk_buf_free(vk, &kb);
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &ob);
    ms_vk_buf_free(vk, &xb);
    return rc;
}

int main(int argc, char **argv) {
    ms_vk_attention_tune tune = {0};
    uint32_t reps = 20;
    const char *only[32];
    int n_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-r") && v) reps = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(a, "--ht") && v) tune.heads_per_wg = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(a, "--et") && v) tune.entries_per_tile = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(a, "--qc") && v) tune.q_chunk = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(a, "--split") && v) tune.n_split = (uint32_t)atoi(argv[++i]);
        else if (n_only < 32) only[n_only++] = a;
    }
    ms_vk_opts opts = ms_vk_opts_default();
    char err[256];
    if (ms_env_vk_opts(&opts, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    ms_vk *vk;
    int rc = ms_vk_open(&vk, &opts);
    if (rc) {
        fprintf(stderr, "ms_vk_open: %s\n", ms_strerror(rc));
        return 1;
    }
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    printf("device: %s, shared %u B, tune ht=%u et=%u qc=%u split=%u, reps %u\n", caps->device_name,
           caps->max_shared_memory, tune.heads_per_wg, tune.entries_per_tile, tune.q_chunk, tune.n_split, reps);
    int fails = 0;
    for (size_t i = 0; i < N_SHAPES; i++) {
        int want = n_only == 0;
        for (int j = 0; j < n_only; j++) want |= strcmp(only[j], k_shapes[i].name) == 0;
        if (want) fails += bench(vk, &k_shapes[i], k_shapes[i].n > 1 ? (reps + 9) / 10 : reps, &tune) != 0;
    }
    ms_vk_close(vk);
    return fails != 0;
}
