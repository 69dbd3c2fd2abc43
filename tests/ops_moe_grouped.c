/* tests/ops_moe_grouped.c — the op family `moe_grouped`: ms_vk_rec_moe_grouped (shaders/moe_group.comp,
 * moe_grouped.comp, moe_sum.comp) against ms_ref_moe_group, ms_ref_moe_up and ms_ref_moe_down
 * (engine/ref/moe.c), over pools packed by ms_vk_expert_pack.
 *
 * Each case packs random experts into a pool, routes n tokens to k experts each through a slot
 * table (duplicates within a token, idle and missing experts, all pairs on one expert, ids past the
 * table where the case says), records the four grouped dispatches in one command buffer and reads
 * back y and the whole scratch, which sits between guard words and starts filled with them:
 *   - offsets, list and pos must equal ms_ref_moe_group bit for bit, list entries past the valid
 *     pairs must be unwritten, the experts list must be the experts with pairs, and the twin is
 *     checked against the definition (each expert's pairs found by a scan in order of p);
 *   - act of every valid pair against ms_ref_moe_up from x, act and out rows of invalid pairs
 *     unwritten (guard words: "left out");
 *   - y against ms_ref_moe_down from the GPU's act (so each stage is judged on its own).
 * The real V4-Flash / V4-Pro cases use a pool of only the experts the routes draw from (as many as
 * one binding holds; ids share records beyond that), every other slot 0xFFFFFFFF.
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

/* NMSE of the GPU against the twin. The weights decode exactly on both sides; act differs from the
 * double sums of the reference by F32 rounding (error ~ K * eps^2), y also by the F32 sum over a
 * (the reference adds in double): observed on lavapipe act ~1e-14, y ~1e-15 (as tests/ops_moe.c).
 * A wrong row, scale block, record, slot or pair gives > 1e-3. */
#define TOL_NMSE_MOE_GROUPED 1e-10

enum {
    SP_MISSING = 1,   /* ids >= n_experts and 0xFFFFFFFF, a used id's slot 0xFFFFFFFF, another past the pool */
    SP_DUP = 2,       /* ids drawn with replacement: a token may take one expert twice */
    SP_ONE = 4,       /* every pair on one expert */
    SP_SHARED = 8,    /* the shared expert: k 1, all tokens on expert 0, rw 1, one record */
    SP_NAN_X = 16,    /* NaN in x of token 0 */
    SP_NAN_W = 32,    /* NaN weight codes: w1/w3 of record 0, w2 of record 1 */
    SP_ALIAS = 64,    /* y is base's range */
    SP_NOLIMIT = 128, /* limit 0: no clamp */
    SP_REST_NONE = 256, /* ids not drawn from map to 0xFFFFFFFF (else to records: resident but idle) */
    SP_ERRORS = 512,  /* the refusals and the scratch sizes, no data */
};

typedef struct mg_case {
    ms_wenc enc;
    uint32_t dim, inter;
    uint32_t n_experts; /* entries of the slot table */
    uint32_t n_used;    /* distinct ids the routes draw from (0: all) */
    uint32_t n_records; /* records in the pool (fewer where one binding holds fewer) */
    uint32_t n, k;
    uint32_t special;
    ms_vk_moe_grouped_tune tune; /* zero: the device default */
    const char *note;
} mg_case;

#define FP4 MS_WENC_FP4
#define FP8 MS_WENC_FP8
#define DEF {0, 0, 0, 0, 0}
static const mg_case k_cases[] = {
    {FP4, 64, 32, 6, 0, 4, 1, 3, SP_MISSING, DEF, "n 1: ids past the table (n_experts and 0xFFFFFFFF)"},
    {FP4, 64, 32, 6, 0, 4, 5, 4, SP_DUP, DEF, "n 5: duplicate experts within tokens (drawn with replacement)"},
    {FP8, 64, 32, 6, 0, 4, 5, 3, SP_DUP | SP_MISSING, DEF, "fp8 n 5: duplicates and missing experts"},
    {FP4, 64, 32, 4, 0, 4, 64, 2, SP_ONE, {0, 0, 0, 0, 32},
     "n 64: all 128 pairs on one expert, 3 resident experts idle, 32 pairs a tile (or as many as fit)"},
    {FP8, 160, 112, 16, 8, 5, 64, 4, SP_MISSING | SP_REST_NONE, DEF,
     "fp8 n 64: 8 of 16 experts used, partial 128-blocks and row blocks"},
    {FP4, 96, 160, 300, 0, 7, 200, 6, SP_MISSING | SP_DUP, DEF,
     "n 200: 300 experts (more than a workgroup), 1200 pairs"},
    {FP4, 96, 160, 5, 0, 3, 4, 2, SP_NAN_X | SP_NAN_W, DEF, "NaN in x, NaN scale bytes in w1 and w2"},
    {FP8, 160, 112, 5, 0, 3, 4, 2, SP_NAN_X | SP_NAN_W, DEF, "fp8: NaN in x, NaN e4m3 codes in w3 and w2"},
    {FP4, 64, 32, 3, 0, 2, 5, 3, SP_ALIAS | SP_NOLIMIT | SP_DUP, {0, 1, 1, 2, 3},
     "y aliases base, limit 0; tune rows 1, unroll 2, 3 pairs a tile"},
    {FP4, 4096, 2048, 256, 10, 8, 32, 6, SP_REST_NONE | SP_MISSING, DEF,
     "V4-Flash prefill n 32: a pool of the 8 resident experts used; 2 used ids not resident, 2 past the table"},
    {FP4, 7168, 3072, 384, 8, 8, 32, 6, SP_REST_NONE, DEF,
     "V4-Pro prefill n 32: 8 experts used (on as many records as one binding holds)"},
    {FP8, 4096, 2048, 1, 0, 1, 32, 1, SP_SHARED | SP_ALIAS, DEF, "V4-Flash shared expert: fp8, n 32, k 1"},
    {FP8, 7168, 3072, 1, 0, 1, 32, 1, SP_SHARED, DEF, "V4-Pro shared expert: fp8, n 32, k 1"},
    {FP4, 64, 32, 1, 0, 1, 1, 1, SP_ERRORS, DEF, "refusals and the scratch sizes"},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static void describe(uint32_t i, char *buf, size_t len) {
    const mg_case *t = &k_cases[i];
    snprintf(buf, len, "%s dim=%u inter=%u experts=%u used=%u records=%u n=%u k=%u  # %s", ms_wenc_name(t->enc),
             t->dim, t->inter, t->n_experts, t->n_used, t->n_records, t->n, t->k, t->note);
}

static ms_ref_expert_layout ref_layout(const ms_vk_expert_layout *L) {
    ms_ref_expert_layout r = {L->enc, L->dim, L->inter, L->w1_data, L->w1_scale, L->w3_data,
                              L->w3_scale, L->w2_data, L->w2_scale, L->record_bytes};
    return r;
}

/* ---------------------------------------------------------------- refusals */

static int run_errors(ms_vk *vk, ms_vk_cmd *cmd, int verbose) {
    int fails = 0;
#define EXPECT(cond, what)                               \
    do {                                                 \
        if (!(cond)) {                                   \
            printf("  FAIL: moe_grouped: %s\n", what);   \
            fails++;                                     \
        }                                                \
    } while (0)
    /* The sizes the report quotes: n 512, top 6 (act + out dominate; each part 256-aligned). */
    const uint64_t flash = ms_vk_moe_grouped_scratch_bytes(512, 6, 256, 4096, 2048);
    const uint64_t pro = ms_vk_moe_grouped_scratch_bytes(512, 6, 384, 7168, 3072);
    EXPECT(flash == 25165824ull + 50331648 + 1280 + 1280 + 12288 + 12288, "V4-Flash n 512 scratch size");
    EXPECT(pro == 37748736ull + 88080384 + 1792 + 1792 + 12288 + 12288, "V4-Pro n 512 scratch size");
    if (verbose)
        printf("  moe_grouped scratch at n 512, k 6: V4-Flash %llu bytes, V4-Pro %llu bytes\n",
               (unsigned long long)flash, (unsigned long long)pro);

    ms_vk_expert_layout L;
    int rc = ms_vk_expert_layout_make(FP4, 64, 32, &L);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    ms_vk_buf pb = {0}, sm = {0}, sc = {0};
    const uint64_t sbytes = ms_vk_moe_grouped_scratch_bytes(2, 2, 4, 64, 32);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, L.record_bytes, &pb);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4096, &sm);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, sbytes + 1024, &sc);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (rc) {
        printf("  FAIL: moe_grouped: setup for the refusals: %s\n", ms_strerror(rc));
        ms_vk_buf_free(vk, &pb);
        ms_vk_buf_free(vk, &sm);
        ms_vk_buf_free(vk, &sc);
        return 1;
    }
    const ms_vk_range pool = ms_vk_buf_range(&pb, 0, L.record_bytes), r = ms_vk_buf_range(&sm, 0, 1024),
                      x = ms_vk_buf_range(&sm, 1024, 1024), y = ms_vk_buf_range(&sm, 2048, 1024),
                      s = ms_vk_buf_range(&sc, 0, sbytes);
    /* a well-formed call records (so that each refusal below is for its one change) */
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, s, 2, 2, 10.0f) == 0, "a valid call refused");
    ms_vk_cmd_barrier(cmd); /* the refusals below record nothing, but keep the recording hazard-free */
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, s, 2, 0, 10.0f) == -MS_E_INVALID_ARG,
           "k 0 not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, s, 2, 2, -1.0f) == -MS_E_INVALID_ARG,
           "a negative limit not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, s, 2, 2, NAN) == -MS_E_INVALID_ARG,
           "a NaN limit not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 2049, r, r, x, y, y, ms_vk_buf_range(&sc, 0, sbytes + 1024),
                                 1, 1, 10.0f) == -MS_E_UNSUPPORTED,
           "2049 experts not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, ms_vk_buf_range(&sc, 0, sbytes - 4), 2, 2,
                                 10.0f) == -MS_E_INVALID_ARG,
           "a short scratch not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, ms_vk_buf_range(&sm, 0, sbytes), 2, 2,
                                 10.0f) == -MS_E_INVALID_ARG,
           "scratch overlapping the inputs not refused");
    if (caps->min_storage_offset_align > 4)
        EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, y, ms_vk_buf_range(&sc, 4, sbytes), 2, 2,
                                     10.0f) == -MS_E_INVALID_ARG,
               "a scratch offset below the storage alignment not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, ms_vk_buf_range(&sm, 2048, 512),
                                 ms_vk_buf_range(&sm, 2304, 512), s, 2, 2, 10.0f) == -MS_E_INVALID_ARG,
           "y partly overlapping base not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, x, y, x, s, 2, 2, 10.0f) == -MS_E_INVALID_ARG,
           "y overlapping x not refused");
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, pool, r, 4, r, r, ms_vk_buf_range(&sm, 1024, 256), y, y, s, 2, 2,
                                 10.0f) == -MS_E_INVALID_ARG,
           "an x range too small for n 2 not refused");
    ms_vk_range big = pool;
    big.size = (caps->max_storage_buffer_range / L.record_bytes + 1) * L.record_bytes;
    EXPECT(ms_vk_rec_moe_grouped(cmd, &L, big, r, 4, r, r, x, y, y, s, 2, 2, 10.0f) == -MS_E_INVALID_ARG,
           "a pool range over maxStorageBufferRange not refused");
    ms_vk_expert_layout bad = L;
    bad.w2_scale += 16;
    EXPECT(ms_vk_rec_moe_grouped(cmd, &bad, pool, r, 4, r, r, x, y, y, s, 2, 2, 10.0f) == -MS_E_INVALID_ARG,
           "a layout with an unaligned part not refused");
    const ms_vk_moe_grouped_tune odd = {48, 0, 0, 0, 0};
    EXPECT(ms_vk_rec_moe_grouped_tuned(cmd, &L, pool, r, 4, r, r, x, y, y, s, 2, 2, 10.0f, &odd) ==
               -MS_E_UNSUPPORTED,
           "a workgroup of 48 not refused");
    ms_vk_cmd_end(cmd);
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &sm);
    ms_vk_buf_free(vk, &sc);
    if (fails || verbose) printf("  moe_grouped refusals: %s\n", fails ? "FAIL" : "ok");
#undef EXPECT
    return fails ? 1 : 0;
}

/* ---------------------------------------------------------------- the grouping's twin */

/* ms_ref_moe_group against its definition: for each expert in order, a scan of the pairs in order of
 * p. Returns the number of differing words. */
static uint64_t group_twin_mismatches(const uint32_t *idx, const uint32_t *slots, uint32_t E, uint64_t n_records,
                                      uint32_t np, const uint32_t *offsets, const uint32_t *list,
                                      const uint32_t *pos) {
    uint64_t bad = 0;
    uint32_t at = 0;
    for (uint32_t e = 0; e < E; e++) {
        bad += offsets[e] != at;
        const bool resident = slots[e] < n_records;
        for (uint32_t p = 0; p < np && resident; p++)
            if (idx[p] == e) {
                bad += list[at] != p;
                bad += pos[p] != at;
                at++;
            }
    }
    bad += offsets[E] != at;
    for (uint32_t p = 0; p < np; p++)
        if (idx[p] >= E || slots[idx[p]] >= n_records) bad += pos[p] != 0xFFFFFFFFu;
    return bad;
}

/* ---------------------------------------------------------------- one case */

static bool pair_valid(const uint32_t *idx, const uint32_t *slots, uint32_t E, uint64_t n_records, size_t p) {
    return idx[p] < E && slots[idx[p]] < n_records;
}

static int run_case(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    const mg_case *t = &k_cases[ci];
    if (t->special & SP_ERRORS) {
        int f = run_errors(vk, cmd, verbose);
        if (f) printf("    repeat with: test_ops -o moe_grouped -s %llu\n", (unsigned long long)seed);
        return f;
    }
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t t0 = ms_time_ns();
    ms_vk_expert_layout L;
    int rc = ms_vk_expert_layout_make(t->enc, t->dim, t->inter, &L);
    if (rc) {
        printf("  FAIL: moe_grouped: layout %s %u x %u: %s\n", ms_wenc_name(t->enc), t->dim, t->inter,
               ms_strerror(rc));
        return 1;
    }
    const ms_ref_expert_layout RL = ref_layout(&L);
    const uint32_t dim = t->dim, I = t->inter, n = t->n, k = t->k, E = t->n_experts;
    const uint32_t np = n * k, n_used = t->n_used ? t->n_used : E;
    uint32_t nrec = t->n_records;
    const uint64_t fit = caps->max_storage_buffer_range / L.record_bytes;
    if (nrec > fit) nrec = (uint32_t)fit;
    const uint64_t pool_bytes = (uint64_t)nrec * L.record_bytes;
    const double limit = t->special & SP_NOLIMIT ? 0.0 : 10.0;
    const size_t n_act = (size_t)np * I, n_y = (size_t)n * dim;
    ms_vk_moe_grouped_scratch S;
    ms_vk_moe_grouped_scratch_layout(n, k, E, dim, I, &S);

    uint8_t *pool = ms_malloc(pool_bytes);
    uint32_t *slots = ms_malloc(E * 4), *idx = ms_malloc((size_t)np * 4), *used = ms_malloc(n_used * 4);
    uint32_t *r_off = ms_malloc(((size_t)E + 1) * 4), *r_list = ms_malloc((size_t)np * 4),
             *r_pos = ms_malloc((size_t)np * 4);
    float *rw = ms_malloc((size_t)np * 4), *x = ms_malloc(n_y * 4), *base = ms_malloc(n_y * 4);
    float *act_ref = ms_malloc(n_act * 4), *act_v = ms_malloc(n_act * 4), *act_rv = ms_malloc(n_act * 4);
    float *y_ref = ms_malloc(n_y * 4), *y_gpu = ms_malloc(n_y * 4), *scr = ms_malloc(S.bytes);
    ms_vk_buf pb = {0}, sb = {0}, ib = {0}, rb = {0}, xb = {0}, bb = {0};
    guarded sg = {0}, yg = {0};
    if (!pool || !slots || !idx || !used || !r_off || !r_list || !r_pos || !rw || !x || !base || !act_ref ||
        !act_v || !act_rv || !y_ref || !y_gpu || !scr) {
        rc = -MS_E_NOMEM;
        goto out;
    }

    rc = make_expert_pool(&L, nrec, (t->special & SP_NAN_W) != 0, pool);
    if (rc) goto out;

    /* The ids routes draw from: n_used distinct ids (all of them when n_used = E). */
    for (uint32_t e = 0, c = 0; e < E && c < n_used; e++)
        if ((uint64_t)(rng_next() % (E - e)) < n_used - c) used[c++] = e; /* selection sampling: ascending */
    for (uint32_t j = n_used; j > 1; j--) { /* shuffled, so records are not in id order */
        uint32_t q = (uint32_t)(rng_next() % j), tmp = used[j - 1];
        used[j - 1] = used[q], used[q] = tmp;
    }
    /* Slots: used id j -> record j % nrec; the rest idle on a record, or 0xFFFFFFFF. */
    for (uint32_t e = 0; e < E; e++) slots[e] = t->special & SP_REST_NONE ? 0xFFFFFFFFu : e % nrec;
    for (uint32_t j = 0; j < n_used; j++) slots[used[j]] = j % nrec;
    if (t->special & SP_NAN_W) /* record 0 (NaN in w1/w3) only for one id, taken only by token 1 */
        for (uint32_t j = 0; j < n_used; j++) slots[used[j]] = j == 0 ? 0 : 1 + (j - 1) % (nrec - 1);
    if (t->special & SP_MISSING) {
        slots[used[n_used - 1]] = 0xFFFFFFFFu; /* a drawn id, not resident */
        slots[used[n_used - 2]] = nrec;        /* one past the pool: not resident either */
    }
    /* Routes: k ids per token from the used set (less the two made missing: those only where placed
     * below), distinct unless SP_DUP. */
    const uint32_t one = used[n_used > 1 ? 1 : 0], n_draw = t->special & SP_MISSING ? n_used - 2 : n_used;
    for (uint32_t tk = 0; tk < n; tk++)
        for (uint32_t a = 0; a < k; a++) {
            uint32_t e;
            bool dup;
            do {
                e = t->special & SP_SHARED ? used[0]
                    : t->special & SP_ONE  ? one
                    : t->special & SP_NAN_W ? used[1 + (uint32_t)(rng_next() % (n_used - 1))]
                                            : used[rng_next() % n_draw];
                dup = false;
                if (!(t->special & (SP_SHARED | SP_ONE | SP_DUP)))
                    for (uint32_t b = 0; b < a; b++) dup |= idx[tk * k + b] == e;
            } while (dup);
            idx[tk * k + a] = e;
            rw[tk * k + a] = t->special & SP_SHARED ? 1.0f : 0.25f + 0.5f * (rng_uniform() + 1.0f) * 0.5f;
        }
    if (t->special & SP_MISSING) {
        idx[np - 1] = E;                              /* an id past the slot table */
        if (np > 2) idx[np / 2] = 0xFFFFFFFFu;        /* and the largest one */
        if (np > 3) idx[1] = used[n_used - 1];        /* slot 0xFFFFFFFF */
        if (np > 4) idx[np - 2] = used[n_used - 2];   /* slot past the pool */
    }
    if (t->special & SP_DUP) idx[2] = idx[0]; /* one certain duplicate (k >= 3; idx[0] stays valid) */
    if (t->special & SP_NAN_W) {
        idx[1 * k + 0] = used[0]; /* record 0 */
        idx[2 * k + 1] = used[1]; /* record 1: NaN in y row 5 (fp4) / 7 (fp8) */
    }
    /* Input sizes that put g and u on both sides of the clamp (rms ~6) and base on the scale of the
     * expert sums, from the rms of record 0's decoded w1. */
    double ss = 0;
    const ms_weight_view w1v = {L.enc, I, dim, pool + L.w1_data, pool + L.w1_scale};
    for (uint32_t i = 0; i < 4096; i++) {
        const double v = ms_ref_weight_at(&w1v, (uint32_t)(rng_next() % I), (uint32_t)(rng_next() % dim));
        ss += isfinite(v) ? v * v : 0;
    }
    const double w_rms = sqrt(ss / 4096) + 1e-30;
    const float xs = (float)(10.0 / (w_rms * sqrt(dim))), bs = (float)(w_rms * 10.0 * sqrt(I));
    for (size_t i = 0; i < n_y; i++) x[i] = rng_uniform() * xs, base[i] = rng_uniform() * bs;
    if (t->special & SP_NAN_X) x[5] = NAN;

    /* GPU: the four grouped dispatches in one command buffer. */
    rc = upload_new(vk, pool, pool_bytes, &pb);
    if (!rc) rc = upload_new(vk, slots, E * 4, &sb);
    if (!rc) rc = upload_new(vk, idx, (size_t)np * 4, &ib);
    if (!rc) rc = upload_new(vk, rw, (size_t)np * 4, &rb);
    if (!rc) rc = upload_new(vk, x, n_y * 4, &xb);
    if (!rc) rc = guarded_alloc(vk, S.bytes, &sg);
    if (!rc) rc = guarded_alloc(vk, n_y * 4, &yg);
    ms_vk_range base_r = {0};
    if (!rc && (t->special & SP_ALIAS)) {
        rc = ms_vk_upload(vk, &yg.buf, yg.guard_bytes, base, n_y * 4);
        base_r = guarded_range(&yg);
    } else if (!rc) {
        rc = upload_new(vk, base, n_y * 4, &bb);
        base_r = ms_vk_buf_range(&bb, 0, n_y * 4);
    }
    const bool tuned = t->tune.wg || t->tune.rows_up || t->tune.rows_down || t->tune.unroll || t->tune.tok;
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_moe_grouped_tuned(cmd, &L, ms_vk_buf_range(&pb, 0, pool_bytes), ms_vk_buf_range(&sb, 0, E * 4),
                                         E, ms_vk_buf_range(&ib, 0, (size_t)np * 4),
                                         ms_vk_buf_range(&rb, 0, (size_t)np * 4), ms_vk_buf_range(&xb, 0, n_y * 4),
                                         base_r, guarded_range(&yg), guarded_range(&sg), n, k, (float)limit,
                                         tuned ? &t->tune : NULL);
    ms_vk_cmd_counts counts = {0};
    ms_vk_cmd_get_counts(cmd, &counts);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    const uint64_t t_gpu = ms_time_ns();
    if (!rc) rc = ms_vk_cmd_run(cmd);
    const double gpu_ms = ms_elapsed_ms(t_gpu);
    uint64_t dmg_s = 0, dmg_y = 0;
    if (!rc) rc = guarded_read(vk, &sg, (float *)scr, &dmg_s);
    if (!rc) rc = guarded_read(vk, &yg, y_gpu, &dmg_y);
    if (rc) goto out;
    const uint8_t *sc8 = (const uint8_t *)scr;
    const float *act_gpu = (const float *)(sc8 + S.act), *out_gpu = (const float *)(sc8 + S.out);
    const uint32_t *g_off = (const uint32_t *)(sc8 + S.offsets), *g_list = (const uint32_t *)(sc8 + S.list),
                   *g_pos = (const uint32_t *)(sc8 + S.pos), *g_exp = (const uint32_t *)(sc8 + S.experts);

    /* The grouping: bit for bit, the twin against its definition, unused list entries untouched. */
    ms_ref_moe_group(idx, slots, E, nrec, n, k, r_off, r_list, r_pos);
    uint64_t group_bad = group_twin_mismatches(idx, slots, E, nrec, np, r_off, r_list, r_pos);
    uint64_t gpu_group_bad = 0;
    uint32_t n_busy = 0; /* experts with pairs: their count, then their ids ascending */
    for (uint32_t e = 0; e <= E; e++) gpu_group_bad += g_off[e] != r_off[e];
    for (uint32_t e = 0; e < E; e++)
        if (r_off[e + 1] > r_off[e]) gpu_group_bad += g_exp[1 + n_busy++] != e;
    gpu_group_bad += g_exp[0] != n_busy;
    for (uint32_t j = n_busy; j < E; j++) gpu_group_bad += g_exp[1 + j] != GUARD_WORD;
    for (uint32_t p = 0; p < np; p++) {
        gpu_group_bad += g_pos[p] != r_pos[p];
        gpu_group_bad += p < r_off[E] ? g_list[p] != r_list[p] : g_list[p] != GUARD_WORD;
    }

    /* act: the valid pairs against the reference; invalid pairs' act and out rows untouched. */
    ms_ref_moe_up(&RL, pool, pool_bytes, slots, E, idx, rw, x, act_ref, n, k, limit);
    size_t nv = 0;
    uint64_t touched = 0;
    for (uint32_t p = 0; p < np; p++) {
        if (pair_valid(idx, slots, E, nrec, p)) {
            memcpy(act_v + nv, act_gpu + (size_t)p * I, (size_t)I * 4);
            memcpy(act_rv + nv, act_ref + (size_t)p * I, (size_t)I * 4);
            nv += I;
            continue;
        }
        const uint32_t *a = (const uint32_t *)(act_gpu + (size_t)p * I);
        const uint32_t *o = (const uint32_t *)(out_gpu + (size_t)p * dim);
        for (uint32_t i = 0; i < I; i++) touched += a[i] != GUARD_WORD;
        for (uint32_t i = 0; i < dim; i++) touched += o[i] != GUARD_WORD;
    }
    ms_ref_moe_down(&RL, pool, pool_bytes, slots, E, idx, act_gpu, base, y_ref, n, k);

    cmp_result ca, cy;
    compare(act_v, act_rv, (uint32_t)(nv ? nv : 1), 1, (uint32_t)nv, &ca);
    if (!nv) memset(&ca, 0, sizeof ca);
    compare(y_gpu, y_ref, (uint32_t)n_y, 1, (uint32_t)n_y, &cy);
    /* The cases must exercise what they claim. */
    bool claims = counts.dispatches == 4 && r_off[E] > 0;
    if (t->special & (SP_NAN_X | SP_NAN_W)) claims &= ca.n_nan > 0 && cy.n_nan > 0 && cy.n_nan < n_y;
    if (t->special & SP_MISSING) claims &= r_off[E] < np;
    if (t->special & SP_ONE) claims &= r_off[E] == np;
    bool dup_seen = false, idle_seen = false;
    for (uint32_t tk = 0; tk < n; tk++)
        for (uint32_t a = 1; a < k; a++) dup_seen |= idx[tk * k + a] == idx[tk * k];
    for (uint32_t e = 0; e < E; e++) idle_seen |= r_off[e + 1] == r_off[e];
    if (t->special & SP_DUP) claims &= dup_seen;
    if (n_used < E || (t->special & (SP_ONE | SP_MISSING))) claims &= idle_seen;
    const int ok = ca.nmse <= TOL_NMSE_MOE_GROUPED && cy.nmse <= TOL_NMSE_MOE_GROUPED && !ca.n_nonfinite_mismatch &&
                   !cy.n_nonfinite_mismatch && !dmg_s && !dmg_y && !group_bad && !gpu_group_bad && !touched &&
                   claims;
    if (!ok || verbose)
        printf("  moe_grouped %s dim=%-4u inter=%-4u E=%u rec=%u n=%u k=%u pairs=%u/%u  act nmse=%.2e y nmse=%.2e "
               "(tol %.0e) nan=%llu/%llu mismatch=%llu/%llu group=%s%s left-out=%s guards=%llu%s gpu %.0f ms, "
               "all %.0f ms  %s  # %s\n",
               ms_wenc_name(t->enc), dim, I, E, nrec, n, k, r_off[E], np, ca.nmse, cy.nmse, TOL_NMSE_MOE_GROUPED,
               (unsigned long long)ca.n_nan, (unsigned long long)cy.n_nan,
               (unsigned long long)ca.n_nonfinite_mismatch, (unsigned long long)cy.n_nonfinite_mismatch,
               gpu_group_bad ? "DIFFERS" : "exact", group_bad ? " twin DIFFERS" : "", touched ? "WRITTEN" : "ok",
               (unsigned long long)(dmg_s + dmg_y), claims ? "" : " claims FAIL", gpu_ms, ms_elapsed_ms(t0),
               ok ? "ok" : "FAIL", t->note);
    if (!ok) printf("    repeat with: test_ops -o moe_grouped -s %llu\n", (unsigned long long)seed);
    rc = ok ? 0 : 1;
out:
    if (rc < 0) {
        printf("  FAIL: moe_grouped %s dim=%u inter=%u: %s\n", ms_wenc_name(t->enc), dim, I, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &sb);
    ms_vk_buf_free(vk, &ib);
    ms_vk_buf_free(vk, &rb);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &bb);
    ms_vk_buf_free(vk, &sg.buf);
    ms_vk_buf_free(vk, &yg.buf);
    ms_free(pool);
    ms_free(slots);
    ms_free(idx);
    ms_free(used);
    ms_free(r_off);
    ms_free(r_list);
    ms_free(r_pos);
    ms_free(rw);
    ms_free(x);
    ms_free(base);
    ms_free(act_ref);
    ms_free(act_v);
    ms_free(act_rv);
    ms_free(y_ref);
    ms_free(y_gpu);
    ms_free(scr);
    return rc;
}

const ops_family ops_fam_moe_grouped = {"moe_grouped", (uint32_t)N_CASES, describe, run_case};
