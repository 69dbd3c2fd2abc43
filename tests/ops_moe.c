/* tests/ops_moe.c — the op family `moe`: ms_vk_rec_moe_up / ms_vk_rec_moe_down (shaders/moe.comp)
 * against ms_ref_moe_up / ms_ref_moe_down (engine/ref/moe.c), over pools packed by
 * ms_vk_expert_pack.
 *
 * Each case packs random experts into a pool, routes n tokens to k experts each through a slot
 * table, records up, a barrier and down in one command buffer, and compares act (against the
 * reference from x) and y (against the reference from the GPU's act, so each stage is judged on its
 * own). Outputs sit between guard words. The tiny cases also check that the twin is what the
 * forward pass computes: ms_ref_gemv + ms_ref_swiglu on views into the records, bit for bit, and
 * that other workgroup shapes (ms_vk_moe_tune) give the GPU's outputs bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "common/timer.h"
#include "engine/ref/ref.h"
#include "engine/vk/vk.h"
#include "tests/ops_util.h"

/* NMSE of the GPU against the twin. Weights decode exactly on both sides, so only the F32 sums
 * differ from the double ones (error ~ K * eps^2): observed on lavapipe act ~1e-14 and y ~1e-15
 * (Flash, Pro: K 4096..7168). A wrong row, scale block, record or slot gives > 1e-3; the margin
 * leaves room for other subgroup sizes and summation orders. */
#define TOL_NMSE_MOE 1e-10

enum {
    SP_PERMUTE = 1,  /* slot table: a random permutation of the records */
    SP_MISSING = 2,  /* slots 0xFFFFFFFF and past the pool, ids >= n_experts */
    SP_NAN_X = 4,    /* NaN in x of token 0 */
    SP_NAN_W = 8,    /* NaN weight codes: w1/w3 of record 0, w2 of record 1 */
    SP_ALIAS = 16,   /* y is base's range */
    SP_SHARED = 32,  /* the shared expert: k 1, idx all 0, rw all 1, one record */
    SP_NOLIMIT = 64, /* limit 0: no clamp */
    SP_TWIN = 128,   /* also check the twin against ms_ref_gemv + ms_ref_swiglu */
    SP_ERRORS = 256, /* the refusals, no data */
};

typedef struct moe_case {
    ms_wenc enc;
    uint32_t dim, inter;
    uint32_t n_records; /* records in the pool (fewer where the binding limit holds fewer) */
    uint32_t n_experts; /* entries of the slot table */
    uint32_t n, k;
    uint32_t special;
    const char *note;
} moe_case;

#define FP4 MS_WENC_FP4
#define FP8 MS_WENC_FP8
static const moe_case k_cases[] = {
    {FP4, 64, 32, 4, 6, 3, 3, SP_PERMUTE | SP_MISSING | SP_TWIN,
     "tiny: permuted slots, a 0xFFFFFFFF slot, a slot past the pool, ids >= n_experts"},
    {FP8, 64, 32, 4, 6, 3, 3, SP_PERMUTE | SP_MISSING | SP_TWIN, "tiny fp8, the same slot table"},
    {FP4, 96, 160, 3, 5, 4, 2, SP_NAN_X | SP_NAN_W | SP_TWIN, "NaN in x, NaN scale bytes in w1 and w2"},
    {FP8, 160, 112, 3, 5, 4, 2, SP_NAN_X | SP_NAN_W | SP_TWIN,
     "NaN in x, NaN e4m3 codes in w3 and w2, partial 128-blocks"},
    {FP4, 64, 32, 2, 2, 2, 2, SP_ALIAS | SP_NOLIMIT | SP_TWIN, "y aliases base, limit 0"},
    {FP8, 4096, 2048, 1, 1, 2, 1, SP_SHARED | SP_ALIAS, "V4-Flash shared expert: fp8, k 1, y aliases base"},
    {FP4, 4096, 2048, 8, 8, 1, 6, SP_PERMUTE, "V4-Flash decode: 8-record pool, top 6"},
    {FP4, 4096, 2048, 8, 8, 5, 6, SP_PERMUTE, "V4-Flash prefill: n 5, experts repeated across tokens"},
    {FP4, 7168, 3072, 6, 6, 1, 6, SP_PERMUTE,
     "V4-Pro decode: 6 experts (as many records as one binding holds, ids sharing them beyond)"},
    {FP4, 64, 32, 1, 1, 1, 1, SP_ERRORS, "refusals: encodings, shapes, views, ranges, the binding limit"},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static void describe(uint32_t i, char *buf, size_t len) {
    const moe_case *t = &k_cases[i];
    snprintf(buf, len, "%s dim=%u inter=%u records=%u experts=%u n=%u k=%u  # %s", ms_wenc_name(t->enc), t->dim,
             t->inter, t->n_records, t->n_experts, t->n, t->k, t->note);
}

static ms_ref_expert_layout ref_layout(const ms_vk_expert_layout *L) {
    ms_ref_expert_layout r = {L->enc, L->dim, L->inter, L->w1_data, L->w1_scale, L->w3_data,
                              L->w3_scale, L->w2_data, L->w2_scale, L->record_bytes};
    return r;
}

/* ---------------------------------------------------------------- refusals */

static int run_errors(ms_vk *vk, ms_vk_cmd *cmd, int verbose) {
    int fails = 0;
#define EXPECT(cond, what)                          \
    do {                                            \
        if (!(cond)) {                              \
            printf("  FAIL: moe: %s\n", what);      \
            fails++;                                \
        }                                           \
    } while (0)
    ms_vk_expert_layout L;
    EXPECT(ms_vk_expert_layout_make(MS_WENC_BF16, 64, 32, &L) == -MS_E_UNSUPPORTED, "bf16 experts not refused");
    EXPECT(ms_vk_expert_layout_make(FP4, 48, 32, &L) == -MS_E_UNSUPPORTED, "fp4 dim 48 not refused");
    EXPECT(ms_vk_expert_layout_make(FP8, 64, 24, &L) == -MS_E_UNSUPPORTED, "fp8 inter 24 not refused");
    EXPECT(ms_vk_expert_layout_make(FP4, 4096, 2048, &L) == 0 && L.record_bytes == 13369344 &&
               L.w3_data == 4456448 && L.w2_scale == 13107200,
           "the V4-Flash fp4 record is not 3 x (4 MiB + 256 KiB), parts in order");
    EXPECT(ms_vk_expert_layout_make(FP8, 160, 112, &L) == 0 && L.w1_scale == 17920 && L.w3_data == 18176 &&
               L.record_bytes % 256 == 0,
           "the fp8 160 x 112 layout is not 256-aligned parts");
    int rc = ms_vk_expert_layout_make(FP4, 64, 32, &L);
    uint8_t d[64 * 32] = {0}, s[64 * 2] = {0}, rec[8192];
    const ms_weight_view w1 = {FP4, 32, 64, d, s}, w2 = {FP4, 64, 32, d, s}, w8 = {FP8, 32, 64, d, s};
    EXPECT(!rc && L.record_bytes <= sizeof rec, "tiny layout");
    EXPECT(ms_vk_expert_pack(&L, &w1, &w1, &w2, rec) == 0, "a matching pack refused");
    EXPECT(ms_vk_expert_pack(&L, &w1, &w2, &w2, rec) == -MS_E_INVALID_ARG, "w3 of the wrong shape packed");
    EXPECT(ms_vk_expert_pack(&L, &w8, &w1, &w2, rec) == -MS_E_INVALID_ARG, "an fp8 w1 packed into fp4");

    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    ms_vk_buf pb = {0}, sm = {0};
    rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, L.record_bytes, &pb);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4096, &sm);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (rc) {
        printf("  FAIL: moe: setup for the refusals: %s\n", ms_strerror(rc));
        ms_vk_buf_free(vk, &pb);
        ms_vk_buf_free(vk, &sm);
        return 1;
    }
    const ms_vk_range pool = ms_vk_buf_range(&pb, 0, L.record_bytes), r = ms_vk_buf_range(&sm, 0, 1024),
                      r2 = ms_vk_buf_range(&sm, 1024, 1024);
    /* The binding limit: a range one record past maxStorageBufferRange (never bound: refused first). */
    ms_vk_range big = pool;
    big.size = (caps->max_storage_buffer_range / L.record_bytes + 1) * L.record_bytes;
    EXPECT(ms_vk_rec_moe_up(cmd, &L, big, r, 1, r, r, r, r2, 1, 1, 10.0f) == -MS_E_INVALID_ARG,
           "a pool range over maxStorageBufferRange not refused (up)");
    EXPECT(ms_vk_rec_moe_down(cmd, &L, big, r, 1, r, r, r, r2, 1, 1) == -MS_E_INVALID_ARG,
           "a pool range over maxStorageBufferRange not refused (down)");
    ms_vk_range short_pool = pool;
    short_pool.size = L.record_bytes - 256;
    EXPECT(ms_vk_rec_moe_up(cmd, &L, short_pool, r, 1, r, r, r, r2, 1, 1, 10.0f) == -MS_E_INVALID_ARG,
           "a pool smaller than one record not refused");
    EXPECT(ms_vk_rec_moe_up(cmd, &L, pool, r, 1, r, r, r, r2, 9, 1, 10.0f) == -MS_E_INVALID_ARG,
           "an act range too small for n 9 not refused");
    EXPECT(ms_vk_rec_moe_up(cmd, &L, pool, r, 1, r, r, r, r2, 1, 1, -1.0f) == -MS_E_INVALID_ARG,
           "a negative limit not refused");
    EXPECT(ms_vk_rec_moe_up(cmd, &L, pool, r, 1, r, r, r, r, 1, 1, 10.0f) == -MS_E_INVALID_ARG,
           "act overlapping x not refused");
    EXPECT(ms_vk_rec_moe_down(cmd, &L, pool, r, 1, r, r2, ms_vk_buf_range(&sm, 2048, 256),
                              ms_vk_buf_range(&sm, 2176, 256), 1, 1) == -MS_E_INVALID_ARG,
           "y partly overlapping base not refused");
    EXPECT(ms_vk_rec_moe_down(cmd, &L, pool, r, 1, r, r2, r, r, 1, 0) == -MS_E_INVALID_ARG, "k 0 not refused");
    ms_vk_expert_layout bad = L;
    bad.w2_scale += 16;
    EXPECT(ms_vk_rec_moe_down(cmd, &bad, pool, r, 1, r, r2, r, r, 1, 1) ==
               -MS_E_INVALID_ARG,
           "a layout with an unaligned part not refused");
    ms_vk_cmd_end(cmd);
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &sm);
    if (fails || verbose) printf("  moe       refusals: %s\n", fails ? "FAIL" : "ok");
#undef EXPECT
    return fails ? 1 : 0;
}

/* ---------------------------------------------------------------- the twin is the forward pass's maths */

static bool same_float(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, 4) == 0; }

static ms_weight_view view_at(const ms_vk_expert_layout *L, const uint8_t *rec, uint64_t data, uint64_t scale,
                              uint32_t m, uint32_t k) {
    ms_weight_view v = {L->enc, m, k, rec + data, rec + scale};
    return v;
}

/* act and y of the twin against run_experts' steps (ms_ref_gemv, ms_ref_swiglu, a double sum in
 * order of a) on views into the records. Returns the number of differing values. */
static uint64_t twin_mismatches(const ms_vk_expert_layout *L, const uint8_t *pool, uint64_t pool_bytes,
                                const uint32_t *slots, uint32_t n_experts, const uint32_t *idx, const float *rw,
                                const float *x, const float *act_ref, const float *act_in, const float *base,
                                const float *y_ref, uint32_t n, uint32_t k, double limit) {
    const uint32_t dim = L->dim, I = L->inter;
    float *g = ms_malloc((size_t)(I + dim) * 4 * 2);
    if (!g) return UINT64_MAX;
    float *u = g + I, *ya = u + I;
    double *tot = ms_malloc((size_t)dim * sizeof(double));
    uint64_t bad = tot ? 0 : UINT64_MAX;
    const uint64_t n_records = pool_bytes / L->record_bytes;
    for (uint32_t t = 0; t < n && tot; t++) {
        for (uint32_t i = 0; i < dim; i++) tot[i] = base[(size_t)t * dim + i];
        for (uint32_t a = 0; a < k; a++) {
            const size_t pair = (size_t)t * k + a;
            const uint32_t e = idx[pair];
            const bool valid = e < n_experts && slots[e] < n_records;
            if (!valid) {
                for (uint32_t i = 0; i < I; i++) bad += act_ref[pair * I + i] != 0.0f;
                continue;
            }
            const uint8_t *rec = pool + (size_t)slots[e] * L->record_bytes;
            const ms_weight_view w1 = view_at(L, rec, L->w1_data, L->w1_scale, I, dim);
            const ms_weight_view w3 = view_at(L, rec, L->w3_data, L->w3_scale, I, dim);
            const ms_weight_view w2 = view_at(L, rec, L->w2_data, L->w2_scale, dim, I);
            ms_ref_gemv(&w1, x + (size_t)t * dim, dim, g, I, 1);
            ms_ref_gemv(&w3, x + (size_t)t * dim, dim, u, I, 1);
            ms_ref_swiglu(g, u, rw + pair, 1, I, I, limit);
            for (uint32_t i = 0; i < I; i++) bad += !same_float(g[i], act_ref[pair * I + i]);
            ms_ref_gemv(&w2, act_in + pair * I, I, ya, dim, 1);
            for (uint32_t i = 0; i < dim; i++) tot[i] += ya[i];
        }
        for (uint32_t i = 0; i < dim; i++) bad += !same_float((float)tot[i], y_ref[(size_t)t * dim + i]);
    }
    ms_free(g);
    ms_free(tot);
    return bad;
}

/* ---------------------------------------------------------------- one case */

/* The device side of a case: pool, slot table and inputs uploaded, outputs between guards. */
typedef struct stage_io {
    const ms_vk_expert_layout *L;
    ms_vk_range pool, slots, idx, rw, x, base;
    guarded *act, *y;
    const float *base_host; /* re-uploaded into y before each run when base aliases y */
    uint32_t n_experts, n, k;
    float limit;
} stage_io;

/* Back to GUARD_WORD everywhere, so that a run that skips an output is seen, not hidden by the
 * previous run's values. */
static int refill(ms_vk *vk, const guarded *g) {
    const uint64_t total = g->guard_bytes * 2 + g->bytes;
    uint32_t *pat = ms_malloc(total);
    if (!pat) return -MS_E_NOMEM;
    for (uint64_t i = 0; i < total / 4; i++) pat[i] = GUARD_WORD;
    int rc = ms_vk_upload(vk, &g->buf, 0, pat, total);
    ms_free(pat);
    return rc;
}

/* Up, a barrier and down in one command buffer (tune NULL: the defaults) on outputs refilled with
 * guard words (y with base where they alias); act and y read back. */
static int run_stages(ms_vk *vk, ms_vk_cmd *cmd, const stage_io *io, const ms_vk_moe_tune *tune, float *act,
                      float *y, uint64_t *damaged) {
    int rc = refill(vk, io->act);
    if (!rc) rc = refill(vk, io->y);
    if (!rc && io->base_host) rc = ms_vk_upload(vk, &io->y->buf, io->y->guard_bytes, io->base_host, io->base.size);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_moe_up_tuned(cmd, io->L, io->pool, io->slots, io->n_experts, io->idx, io->rw, io->x,
                                    guarded_range(io->act), io->n, io->k, io->limit, tune);
    if (!rc) ms_vk_cmd_barrier(cmd);
    if (!rc)
        rc = ms_vk_rec_moe_down_tuned(cmd, io->L, io->pool, io->slots, io->n_experts, io->idx,
                                      guarded_range(io->act), io->base, guarded_range(io->y), io->n, io->k, tune);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t da = 0, dy = 0;
    if (!rc) rc = guarded_read(vk, io->act, act, &da);
    if (!rc) rc = guarded_read(vk, io->y, y, &dy);
    *damaged = da + dy;
    return rc;
}

/* Values of b unlike a's (NaN equals NaN). */
static uint64_t n_differ(const float *a, const float *b, size_t n) {
    uint64_t d = 0;
    for (size_t i = 0; i < n; i++) d += !same_float(a[i], b[i]);
    return d;
}

static int run_case(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    const moe_case *t = &k_cases[ci];
    if (t->special & SP_ERRORS) {
        int f = run_errors(vk, cmd, verbose);
        if (f) printf("    repeat with: test_ops -o moe -s %llu\n", (unsigned long long)seed);
        return f;
    }
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t t0 = ms_time_ns();
    ms_vk_expert_layout L;
    int rc = ms_vk_expert_layout_make(t->enc, t->dim, t->inter, &L);
    if (rc) {
        printf("  FAIL: moe: layout %s %u x %u: %s\n", ms_wenc_name(t->enc), t->dim, t->inter, ms_strerror(rc));
        return 1;
    }
    const ms_ref_expert_layout RL = ref_layout(&L);
    const uint32_t dim = t->dim, I = t->inter, n = t->n, k = t->k, E = t->n_experts;
    uint32_t nrec = t->n_records;
    const uint64_t fit = caps->max_storage_buffer_range / L.record_bytes;
    if (nrec > fit) nrec = (uint32_t)fit;
    const uint64_t pool_bytes = (uint64_t)nrec * L.record_bytes;
    const double limit = t->special & SP_NOLIMIT ? 0.0 : 10.0;
    const size_t n_act = (size_t)n * k * I, n_y = (size_t)n * dim;

    uint8_t *pool = ms_malloc(pool_bytes);
    uint32_t *slots = ms_malloc(E * 4), *idx = ms_malloc((size_t)n * k * 4);
    float *rw = ms_malloc((size_t)n * k * 4), *x = ms_malloc(n_y * 4), *base = ms_malloc(n_y * 4);
    float *act_ref = ms_malloc(n_act * 4), *act_gpu = ms_malloc(n_act * 4);
    float *y_ref = ms_malloc(n_y * 4), *y_gpu = ms_malloc(n_y * 4);
    ms_vk_buf pb = {0}, sb = {0}, ib = {0}, rb = {0}, xb = {0}, bb = {0};
    guarded ag = {0}, yg = {0};
    uint64_t twin_bad = 0;
    if (!pool || !slots || !idx || !rw || !x || !base || !act_ref || !act_gpu || !y_ref || !y_gpu) {
        rc = -MS_E_NOMEM;
        goto out;
    }

    rc = make_expert_pool(&L, nrec, (t->special & SP_NAN_W) != 0, pool);
    if (rc) goto out;

    /* Slot table: records in order or permuted, ids past the records sharing them. */
    uint32_t perm[64];
    for (uint32_t j = 0; j < nrec && j < 64; j++) perm[j] = j;
    if (t->special & SP_PERMUTE)
        for (uint32_t j = nrec; j > 1; j--) {
            uint32_t q = (uint32_t)(rng_next() % j), tmp = perm[j - 1];
            perm[j - 1] = perm[q], perm[q] = tmp;
        }
    for (uint32_t e = 0; e < E; e++) slots[e] = perm[e % nrec];
    if (t->special & SP_NAN_W) /* record 0 (NaN in w1/w3: all of y NaN) only for id 0, which only token 1 takes */
        for (uint32_t e = 0; e < E; e++) slots[e] = e == 0 ? 0 : 1 + (e - 1) % (nrec - 1);
    if (t->special & SP_MISSING) {
        slots[E - 1] = 0xFFFFFFFFu;
        slots[E - 2] = nrec; /* one past the pool: not resident either */
    }
    /* Routes: k distinct ids per token (all 0 for the shared expert). */
    for (uint32_t tk = 0; tk < n; tk++)
        for (uint32_t a = 0; a < k; a++) {
            uint32_t e;
            bool dup;
            do {
                e = t->special & SP_SHARED ? 0
                    : t->special & SP_NAN_W ? 1 + (uint32_t)(rng_next() % (E - 1))
                                            : (uint32_t)(rng_next() % E);
                dup = false;
                for (uint32_t b = 0; b < a && !(t->special & SP_SHARED); b++) dup |= idx[tk * k + b] == e;
            } while (dup);
            idx[tk * k + a] = e;
            rw[tk * k + a] = t->special & SP_SHARED ? 1.0f : 0.25f + 0.5f * (rng_uniform() + 1.0f) * 0.5f;
        }
    if (t->special & SP_MISSING) {
        idx[0 * k + 1] = E;           /* an id past the slot table */
        idx[1 * k + 0] = 0xFFFFFFFFu; /* and the largest one */
        idx[2 * k + 2] = E - 1;       /* slot 0xFFFFFFFF */
        idx[0 * k + 2] = E - 2;       /* slot past the pool */
    }
    if (t->special & SP_NAN_W) {
        idx[1 * k + 0] = 0; /* record 0 */
        idx[2 * k + 1] = 1; /* record 1: NaN in y row 5 (fp4) / 7 (fp8) */
    }
    /* Input sizes that put g and u on both sides of the clamp (rms ~6) and base on the scale of the
     * expert sums, from the rms of record 0's decoded w1. */
    double ss = 0;
    const ms_weight_view w1v = view_at(&L, pool, L.w1_data, L.w1_scale, I, dim);
    for (uint32_t i = 0; i < 4096; i++) {
        const double v = ms_ref_weight_at(&w1v, (uint32_t)(rng_next() % I), (uint32_t)(rng_next() % dim));
        ss += isfinite(v) ? v * v : 0;
    }
    const double w_rms = sqrt(ss / 4096) + 1e-30;
    const float xs = (float)(10.0 / (w_rms * sqrt(dim))), bs = (float)(w_rms * 10.0 * sqrt(I));
    for (size_t i = 0; i < n_y; i++) x[i] = rng_uniform() * xs, base[i] = rng_uniform() * bs;
    if (t->special & SP_NAN_X) x[5] = NAN;

    /* GPU: up, barrier, down in one command buffer. */
    rc = upload_new(vk, pool, pool_bytes, &pb);
    if (!rc) rc = upload_new(vk, slots, E * 4, &sb);
    if (!rc) rc = upload_new(vk, idx, (size_t)n * k * 4, &ib);
    if (!rc) rc = upload_new(vk, rw, (size_t)n * k * 4, &rb);
    if (!rc) rc = upload_new(vk, x, n_y * 4, &xb);
    if (!rc) rc = guarded_alloc(vk, n_act * 4, &ag);
    if (!rc) rc = guarded_alloc(vk, n_y * 4, &yg);
    ms_vk_range base_r = {0};
    if (!rc && (t->special & SP_ALIAS)) {
        rc = ms_vk_upload(vk, &yg.buf, yg.guard_bytes, base, n_y * 4);
        base_r = guarded_range(&yg);
    } else if (!rc) {
        rc = upload_new(vk, base, n_y * 4, &bb);
        base_r = ms_vk_buf_range(&bb, 0, n_y * 4);
    }
    const stage_io io = {&L, ms_vk_buf_range(&pb, 0, pool_bytes), ms_vk_buf_range(&sb, 0, E * 4),
                         ms_vk_buf_range(&ib, 0, (size_t)n * k * 4), ms_vk_buf_range(&rb, 0, (size_t)n * k * 4),
                         ms_vk_buf_range(&xb, 0, n_y * 4), base_r, &ag, &yg,
                         t->special & SP_ALIAS ? base : NULL, E, n, k, (float)limit};
    const uint64_t t_gpu = ms_time_ns();
    uint64_t dmg = 0;
    if (!rc) rc = run_stages(vk, cmd, &io, NULL, act_gpu, y_gpu, &dmg);
    const double gpu_ms = ms_elapsed_ms(t_gpu);
    if (rc) goto out;
    /* Other workgroup shapes (8 warps where 4 run by default on NVIDIA, 32 subgroups of 8 on
     * lavapipe; rows past the end clamped) give the default run's act and y bit for bit: each
     * subgroup sums its own rows in the same order whatever the group. Small cases only. */
    static const ms_vk_moe_tune k_shapes[] = {{256, 0, 0}, {128, 4, 1}};
    const size_t n_shapes = dim < 1024 ? sizeof k_shapes / sizeof k_shapes[0] : 0;
    uint64_t shape_differ = 0;
    for (size_t si = 0; si < n_shapes && !rc; si++) {
        uint64_t d2 = 0;
        rc = run_stages(vk, cmd, &io, &k_shapes[si], act_ref, y_ref, &d2); /* act_ref, y_ref as scratch */
        if (!rc) shape_differ += n_differ(act_gpu, act_ref, n_act) + n_differ(y_gpu, y_ref, n_y) + d2;
    }
    if (rc) goto out;
    ms_ref_moe_up(&RL, pool, pool_bytes, slots, E, idx, rw, x, act_ref, n, k, limit);

    ms_ref_moe_down(&RL, pool, pool_bytes, slots, E, idx, act_gpu, base, y_ref, n, k);
    if (t->special & SP_TWIN)
        twin_bad = twin_mismatches(&L, pool, pool_bytes, slots, E, idx, rw, x, act_ref, act_gpu, base, y_ref, n, k,
                                   limit);

    cmp_result ca, cy;
    compare(act_gpu, act_ref, (uint32_t)n_act, 1, (uint32_t)n_act, &ca);
    compare(y_gpu, y_ref, (uint32_t)n_y, 1, (uint32_t)n_y, &cy);
    /* The cases must exercise what they claim: NaN reaches both outputs, missing experts give zero rows. */
    bool claims = true;
    if (t->special & (SP_NAN_X | SP_NAN_W)) claims = ca.n_nan > 0 && cy.n_nan > 0 && cy.n_nan < n_y;
    const int ok = ca.nmse <= TOL_NMSE_MOE && cy.nmse <= TOL_NMSE_MOE && !ca.n_nonfinite_mismatch &&
                   !cy.n_nonfinite_mismatch && !dmg && !twin_bad && claims && !shape_differ;
    if (!ok || verbose)
        printf("  moe       %s dim=%-4u inter=%-4u rec=%u n=%u k=%u  act nmse=%.2e y nmse=%.2e (tol %.0e) "
               "nan=%llu/%llu mismatch=%llu/%llu guards=%llu%s%s gpu %.0f ms, all %.0f ms  %s  # %s\n",
               ms_wenc_name(t->enc), dim, I, nrec, n, k, ca.nmse, cy.nmse, TOL_NMSE_MOE,
               (unsigned long long)ca.n_nan, (unsigned long long)cy.n_nan,
               (unsigned long long)ca.n_nonfinite_mismatch, (unsigned long long)cy.n_nonfinite_mismatch,
               (unsigned long long)dmg, t->special & SP_TWIN ? (twin_bad ? " twin DIFFERS" : " twin=gemv") : "",
               !n_shapes ? "" : shape_differ ? " shapes DIFFER" : " shapes=", gpu_ms, ms_elapsed_ms(t0),
               ok ? "ok" : "FAIL", t->note);
    if (!ok) printf("    repeat with: test_ops -o moe -s %llu\n", (unsigned long long)seed);
    rc = ok ? 0 : 1;
out:
    if (rc < 0) {
        printf("  FAIL: moe %s dim=%u inter=%u: %s\n", ms_wenc_name(t->enc), dim, I, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &sb);
    ms_vk_buf_free(vk, &ib);
    ms_vk_buf_free(vk, &rb);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &bb);
    ms_vk_buf_free(vk, &ag.buf);
    ms_vk_buf_free(vk, &yg.buf);
    ms_free(pool);
    ms_free(slots);
    ms_free(idx);
    ms_free(rw);
    ms_free(x);
    ms_free(base);
    ms_free(act_ref);
    ms_free(act_gpu);
    ms_free(y_ref);
    ms_free(y_gpu);
    return rc;
}

const ops_family ops_fam_moe = {"moe", (uint32_t)N_CASES, describe, run_case};
