/* tests/ops_perf.c — test_ops --perf beyond the GEMV: the routed-expert stages (moe_up, moe_down)
 * at the real expert shapes, and --sweep FILE, a list of measurements run in one process.
 *
 * moe: a pool of FP4 records (all holding one random expert: the bytes, not the values, matter
 * here) in one binding, and a chain of dispatches for n = 1 token, each reading k distinct records
 * that no other dispatch of the chain reads, so the chain streams the pool from memory (the pool
 * is much larger than the L2). Reported: the records' bytes the chain reads (weights and scales of
 * w1 + w3 for up, w2 for down; the activations are noise beside them) over its time, back to back
 * ("sustained") and with a barrier after each dispatch, as the forward pass runs them ("one at a
 * time", also in microseconds a dispatch, launch and drain included).
 *
 * The sweep file: one measurement a line, '#' starts a comment.
 *   gemv ENC M K N [key=value ...]                 keys: wg rows unroll sg kernel
 *   moe up|down|both DIM INTER K [key=value ...]   keys: wg rows unroll
 * (rows: per workgroup for gemv as in ms_vk_gemv_tune, per subgroup for moe as in ms_vk_moe_tune;
 * a missing key is 0, the default). Consecutive lines of one shape share the uploaded weights.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/vk/vk.h"
#include "tests/ops_perf.h"
#include "tests/ops_util.h"

#define MOE_MAX_RECORDS 48u
#define SWEEP_MAX_TUNES 64

typedef struct moe_bench {
    ms_vk_expert_layout L;
    uint32_t k, n_records, chain; /* chain: dispatches, each on its own k records */
    uint64_t idx_stride;          /* bytes between the dispatches' id ranges */
    ms_vk_buf pool, slots, idx, rw, x, act, ain, base, y;
} moe_bench;

static void moe_bench_close(ms_vk *vk, moe_bench *b) {
    ms_vk_buf *bufs[] = {&b->pool, &b->slots, &b->idx, &b->rw, &b->x, &b->act, &b->ain, &b->base, &b->y};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ms_vk_buf_free(vk, bufs[i]);
    memset(b, 0, sizeof *b);
}

static int moe_bench_open(ms_vk *vk, uint32_t dim, uint32_t inter, uint32_t k, moe_bench *b) {
    memset(b, 0, sizeof *b);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    int rc = ms_vk_expert_layout_make(MS_WENC_FP4, dim, inter, &b->L);
    if (rc) return rc;
    uint64_t fit = caps->max_storage_buffer_range / b->L.record_bytes;
    if (fit > MOE_MAX_RECORDS) fit = MOE_MAX_RECORDS;
    if (fit < k || k < 1) {
        printf("perf moe %ux%u: %llu records fit one binding, fewer than k = %u\n", dim, inter,
               (unsigned long long)fit, k);
        return -MS_E_UNSUPPORTED;
    }
    b->k = k;
    b->chain = (uint32_t)(fit / k);
    b->n_records = b->chain * k;
    const uint64_t align = caps->min_storage_offset_align ? caps->min_storage_offset_align : 16;
    b->idx_stride = (4ull * k + align - 1) / align * align;

    void *d[3] = {0};
    uint8_t *s[3] = {0};
    uint8_t *rec = ms_malloc(b->L.record_bytes);
    uint32_t *ids = ms_malloc(b->idx_stride * b->chain), *slots = ms_malloc(4ull * b->n_records);
    float *x = ms_malloc(4ull * (dim > k * inter ? dim : k * inter));
    if (!rec || !ids || !slots || !x) rc = -MS_E_NOMEM;
    const uint32_t m[3] = {inter, inter, dim}, kk[3] = {dim, dim, inter};
    for (int q = 0; q < 3 && !rc; q++) rc = make_weight(MS_WENC_FP4, m[q], kk[q], &d[q], &s[q]);
    if (!rc) {
        const ms_weight_view v1 = {MS_WENC_FP4, inter, dim, d[0], s[0]}, v3 = {MS_WENC_FP4, inter, dim, d[1], s[1]},
                             v2 = {MS_WENC_FP4, dim, inter, d[2], s[2]};
        rc = ms_vk_expert_pack(&b->L, &v1, &v3, &v2, rec);
    }
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, b->L.record_bytes * b->n_records, &b->pool);
    for (uint32_t j = 0; j < b->n_records && !rc; j++)
        rc = ms_vk_upload(vk, &b->pool, b->L.record_bytes * j, rec, b->L.record_bytes);
    for (uint32_t j = 0; !rc && j < b->n_records; j++) slots[j] = j;
    for (uint32_t c = 0; !rc && c < b->chain; c++)
        for (uint32_t a = 0; a < k; a++) ids[c * (b->idx_stride / 4) + a] = c * k + a;
    if (!rc) rc = upload_new(vk, slots, 4ull * b->n_records, &b->slots);
    if (!rc) rc = upload_new(vk, ids, b->idx_stride * b->chain, &b->idx);
    for (uint32_t i = 0; !rc && i < k; i++) x[i] = 0.5f;
    if (!rc) rc = upload_new(vk, x, 4ull * k, &b->rw);
    for (uint32_t i = 0; !rc && i < (dim > k * inter ? dim : k * inter); i++) x[i] = rng_uniform();
    if (!rc) rc = upload_new(vk, x, 4ull * dim, &b->x);
    if (!rc) rc = upload_new(vk, x, 4ull * k * inter, &b->ain);
    if (!rc) rc = upload_new(vk, x, 4ull * dim, &b->base);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4ull * k * inter * b->chain, &b->act);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4ull * dim * b->chain, &b->y);
    for (int q = 0; q < 3; q++) ms_free(d[q]), ms_free(s[q]);
    ms_free(rec);
    ms_free(ids);
    ms_free(slots);
    ms_free(x);
    if (rc) moe_bench_close(vk, b);
    return rc;
}

/* The chain of up (or down) dispatches, a barrier after each when asked; median ns of reps. */
static int moe_bench_time(ms_vk *vk, ms_vk_cmd *cmd, const moe_bench *b, bool down, bool barriers,
                          const ms_vk_moe_tune *tune, int reps, double *ns) {
    (void)vk;
    const ms_vk_expert_layout *L = &b->L;
    const uint64_t n_act = 4ull * b->k * L->inter;
    const ms_vk_range pool = ms_vk_buf_range(&b->pool, 0, L->record_bytes * b->n_records),
                      slots = ms_vk_buf_range(&b->slots, 0, 4ull * b->n_records);
    uint32_t i0, i1;
    int rc = ms_vk_cmd_begin(cmd);
    if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i0);
    for (uint32_t c = 0; c < b->chain && !rc; c++) {
        const ms_vk_range idx = ms_vk_buf_range(&b->idx, b->idx_stride * c, 4ull * b->k);
        if (down)
            rc = ms_vk_rec_moe_down_tuned(cmd, L, pool, slots, b->n_records, idx, ms_vk_buf_range(&b->ain, 0, n_act),
                                          ms_vk_buf_range(&b->base, 0, 4ull * L->dim),
                                          ms_vk_buf_range(&b->y, 4ull * L->dim * c, 4ull * L->dim), 1, b->k, tune);
        else
            rc = ms_vk_rec_moe_up_tuned(cmd, L, pool, slots, b->n_records, idx, ms_vk_buf_range(&b->rw, 0, 4ull * b->k),
                                        ms_vk_buf_range(&b->x, 0, 4ull * L->dim),
                                        ms_vk_buf_range(&b->act, n_act * c, n_act), 1, b->k, 10.0f, tune);
        if (!rc && barriers) ms_vk_cmd_barrier(cmd);
    }
    if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i1);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd); /* pipeline creation */
    if (!rc) rc = time_cmd(cmd, reps, ns);
    return rc;
}

static void print_moe_tune(const ms_vk_moe_tune *t) {
    printf("  tune wg=%u rows=%u unroll=%u (0: default)", t->wg_size, t->rows_per_sg, t->unroll);
}

/* One line per stage: sustained and one-at-a-time bandwidth of the records read. */
static int perf_moe_one(ms_vk *vk, ms_vk_cmd *cmd, const moe_bench *b, bool down, const ms_vk_moe_tune *tune,
                        const perf_opts *po, double peak) {
    const ms_vk_expert_layout *L = &b->L;
    const uint64_t part = ms_wenc_data_bytes(MS_WENC_FP4, L->inter, L->dim) +
                          ms_wenc_scale_bytes(MS_WENC_FP4, L->inter, L->dim);
    const double bytes = (double)part * (down ? 1 : 2) * b->k * b->chain;
    double ns_free = 0, ns_bar = 0;
    int rc = moe_bench_time(vk, cmd, b, down, false, tune, po->reps, &ns_free);
    if (!rc) rc = moe_bench_time(vk, cmd, b, down, true, tune, po->reps, &ns_bar);
    if (rc) {
        printf("perf moe_%-4s fp4 %ux%u k=%u  error: %s\n", down ? "down" : "up", L->dim, L->inter, b->k,
               ms_strerror(rc));
        return rc;
    }
    printf("perf moe_%-4s fp4 dim=%u inter=%u k=%u n=1  sustained %7.1f GB/s = %5.1f%% of %.0f; one at a time "
           "%7.1f GB/s = %5.1f%%, %7.2f us a dispatch  (chain of %u, %.2f GB, median of %d)",
           down ? "down" : "up", L->dim, L->inter, b->k, bytes / ns_free, 100.0 * bytes / ns_free / peak, peak,
           bytes / ns_bar, 100.0 * bytes / ns_bar / peak, ns_bar * 1e-3 / b->chain, b->chain, bytes * 1e-9,
           po->reps);
    ms_vk_moe_tune z = {0};
    print_moe_tune(tune ? tune : &z);
    printf("\n");
    fflush(stdout);
    return 0;
}

int perf_moe_defaults(ms_vk *vk, ms_vk_cmd *cmd, const perf_opts *po, double peak) {
    static const uint32_t shapes[2][2] = {{4096, 2048}, {7168, 3072}}; /* V4-Flash, V4-Pro */
    for (int s = 0; s < 2; s++) {
        moe_bench b;
        int rc = moe_bench_open(vk, shapes[s][0], shapes[s][1], 6, &b);
        if (rc == -MS_E_UNSUPPORTED) continue; /* the binding holds too few records (lavapipe) */
        if (!rc) rc = perf_moe_one(vk, cmd, &b, false, NULL, po, peak);
        if (!rc) rc = perf_moe_one(vk, cmd, &b, true, NULL, po, peak);
        moe_bench_close(vk, &b);
        if (rc) return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- the sweep file */

typedef struct sweep_line {
    int kind; /* 1 gemv, 2 moe up, 3 moe down, 4 moe both */
    ms_wenc enc;
    uint32_t a, b, c, d; /* gemv m k n; moe dim inter k */
    ms_vk_gemv_tune gt;
    ms_vk_moe_tune mt;
} sweep_line;

static int parse_line(char *s, sweep_line *o, const char *file, int lineno) {
    memset(o, 0, sizeof *o);
    char *save = NULL, *tok[24];
    int nt = 0;
    for (char *t = strtok_r(s, " \t\r\n", &save); t && nt < 24; t = strtok_r(NULL, " \t\r\n", &save)) tok[nt++] = t;
    if (nt == 0) return 0;
    int first_kv;
    if (strcmp(tok[0], "gemv") == 0 && nt >= 5) {
        o->kind = 1;
        const char *const names[] = {"f32", "bf16", "fp8", "fp4"};
        o->enc = MS_WENC_COUNT;
        for (int e = 0; e < 4; e++)
            if (strcmp(tok[1], names[e]) == 0) o->enc = (ms_wenc)e;
        o->a = (uint32_t)strtoul(tok[2], NULL, 0);
        o->b = (uint32_t)strtoul(tok[3], NULL, 0);
        o->c = (uint32_t)strtoul(tok[4], NULL, 0);
        first_kv = 5;
        if (o->enc == MS_WENC_COUNT) goto bad;
    } else if (strcmp(tok[0], "moe") == 0 && nt >= 5) {
        o->kind = strcmp(tok[1], "up") == 0 ? 2 : strcmp(tok[1], "down") == 0 ? 3 : strcmp(tok[1], "both") == 0 ? 4 : 0;
        o->a = (uint32_t)strtoul(tok[2], NULL, 0);
        o->b = (uint32_t)strtoul(tok[3], NULL, 0);
        o->c = (uint32_t)strtoul(tok[4], NULL, 0);
        first_kv = 5;
        if (!o->kind) goto bad;
    } else {
        goto bad;
    }
    for (int i = first_kv; i < nt; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq) goto bad;
        *eq = 0;
        const uint32_t v = (uint32_t)strtoul(eq + 1, NULL, 0);
        const char *key = tok[i];
        if (strcmp(key, "wg") == 0) o->gt.wg_size = o->mt.wg_size = v;
        else if (strcmp(key, "rows") == 0) o->gt.rows_per_wg = o->mt.rows_per_sg = v;
        else if (strcmp(key, "unroll") == 0) o->gt.unroll = o->mt.unroll = v;
        else if (strcmp(key, "sg") == 0 && o->kind == 1) o->gt.subgroup_size = v;
        else if (strcmp(key, "kernel") == 0 && o->kind == 1) o->gt.kernel = v;
        else goto bad;
    }
    return 1;
bad:
    printf("perf sweep %s:%d: not a measurement (see tests/ops_perf.c)\n", file, lineno);
    return -1;
}

int run_sweep(ms_vk *vk, ms_vk_cmd *cmd, const perf_opts *po, double peak) {
    FILE *f = fopen(po->sweep, "r");
    if (!f) {
        printf("perf sweep: cannot open %s\n", po->sweep);
        return -MS_E_IO;
    }
    sweep_line *lines = ms_calloc(1024, sizeof *lines);
    int n = 0, rc = lines ? 0 : -MS_E_NOMEM;
    char buf[512];
    for (int lineno = 1; !rc && n < 1024 && fgets(buf, sizeof buf, f); lineno++) {
        char *hash = strchr(buf, '#');
        if (hash) *hash = 0;
        int r = parse_line(buf, &lines[n], po->sweep, lineno);
        if (r < 0) rc = -MS_E_INVALID_ARG;
        n += r > 0;
    }
    fclose(f);
    /* Runs of one shape share one upload. */
    for (int i = 0; i < n && !rc;) {
        int j = i + 1;
        while (j < n && lines[j].kind == 1 && lines[i].kind == 1 && lines[j].enc == lines[i].enc &&
               lines[j].a == lines[i].a && lines[j].b == lines[i].b && lines[j].c == lines[i].c && j - i < SWEEP_MAX_TUNES)
            j++;
        while (j < n && lines[j].kind >= 2 && lines[i].kind >= 2 && lines[j].a == lines[i].a &&
               lines[j].b == lines[i].b && lines[j].c == lines[i].c)
            j++;
        if (lines[i].kind == 1) {
            ms_vk_gemv_tune tunes[SWEEP_MAX_TUNES];
            for (int q = i; q < j; q++) tunes[q - i] = lines[q].gt;
            rc = perf_gemv(vk, cmd, lines[i].enc, lines[i].a, lines[i].b, lines[i].c, po, peak, tunes,
                           (uint32_t)(j - i));
        } else {
            moe_bench b;
            rc = moe_bench_open(vk, lines[i].a, lines[i].b, lines[i].c, &b);
            for (int q = i; q < j && !rc; q++) {
                if (lines[q].kind != 3) rc = perf_moe_one(vk, cmd, &b, false, &lines[q].mt, po, peak);
                if (!rc && lines[q].kind != 2) rc = perf_moe_one(vk, cmd, &b, true, &lines[q].mt, po, peak);
                /* a tune the device refuses is reported and skipped, not fatal */
                if (rc == -MS_E_INVALID_ARG) rc = 0;
            }
            moe_bench_close(vk, &b);
        }
        if (rc == -MS_E_INVALID_ARG) rc = 0;
        i = j;
    }
    ms_free(lines);
    return rc;
}
