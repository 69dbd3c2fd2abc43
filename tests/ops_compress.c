/* tests/ops_compress.c — op family `compress`: ms_vk_rec_compress (the gated-pooling compressor,
 * V4_SPEC §3.4) against its CPU twin ms_ref_compress, and the twin against the compressor's
 * definition.
 *
 * A case is a session: fresh state (score -inf, kv random or NaN: an empty slot's kv must not
 * matter) at position pos0, then several calls of different lengths with the positions going on,
 * the GPU and the twin fed the same chunks. After every call the whole state (kv, score) must be
 * bit-identical (it only holds copies and one F32 add), and the rows the call could have written
 * (its block range, clipped to n_rows) must agree; at the end every other row and every guard word
 * must be untouched. Each quantised case runs twice: first with quant 0 (the rows then are the
 * pre-rounding values, compared by NMSE), then with its quant, where an element may differ from the
 * twin only as a rounding flip: GPU and twin rows before rounding differ by F32 vs double
 * summation, so a value within a hair of a rounding boundary (or a block maximum at a power of two)
 * may go either way. Each differing block is accepted only if rounding the twin's pre-rounding
 * values, moved by at most CMP_FLIP_DELTA of the block maximum, gives the GPU's block.
 *
 * The twin against the definition: from the whole token history (not a ring), block j pools the
 * tokens of blocks j-1 (channels [0, d)) and j (channels [d, 2d)) — or block j alone with coff 1 —
 * absent positions before pos0 empty, then RMSNorm, RoPE at j*ratio with double angles
 * (ms_ref_v4_rope, as cmp_push in engine/ref/v4_attn.c), Hadamard, rounding. The twin rotates by
 * the F32 cos/sin table instead, so the rotated dims (all dims after a Hadamard) differ by ~1 ulp;
 * the other dims must be bit-identical.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/ref/ref.h"
#include "engine/ref/v4_internal.h"
#include "tests/ops_util.h"

/* GPU rows vs the twin with quant 0: F32 exp/softmax and sum of squares and F32 Hadamard
 * butterflies on the GPU, double in the twin. Observed on lavapipe: NMSE <= 2e-14. A wrong slot,
 * channel, missing shift or wrong RoPE row gives NMSE > 1e-3 (or NaN from the NaN-filled unused
 * cs rows and kv slots). */
#define TOL_NMSE_CMP 1e-10
/* The twin vs the definition (double-angle RoPE): the table's cos/sin are F32-rounded, ~1 ulp on
 * the rotated dims. Observed NMSE <= 3e-15; the same bugs give > 1e-3. */
#define TOL_NMSE_CMP_DEF 1e-12
/* A rounding flip is accepted when the twin's pre-rounding value (or the block maximum) moved by
 * this fraction of the block maximum rounds to the GPU's value. The F32-vs-double differences
 * before rounding are ~1e-7 of the block maximum; every grid step is coarser than the margin (an
 * e2m1 step is >= 1/12 of the block maximum, an e4m3 subnormal step >= 2^-17.8 of it), so at most
 * one boundary lies within it, and a wrong block size or scale (different subnormal rounding of the
 * small channels) is not mistaken for a flip. */
#define CMP_FLIP_DELTA 0x1p-20
/* Flipped elements allowed per 1000 rounded ones (observed: 0 to a few per case). A systematic
 * rounding bug flips far more, and must also pass the test above. */
#define CMP_FLIP_PER_MILLE 2

static const uint32_t k_chunks[] = {1, 3, 4, 5, 130};
static const uint32_t k_chunks_long[] = {1, 3, 4, 5, 130, 260}; /* ratio 128: 3 blocks */
static const uint32_t k_chunks_tiny[] = {1, 3, 4, 5, 7, 2, 11};
static const uint32_t k_chunks_wrap[] = {1, 3, 4}; /* from 2^32 - 7: the last call passes 2^32 */

typedef struct cmp_case {
    uint32_t ratio, coff, d, rope_dim, quant;
    bool hadamard;
    uint32_t pos0;
    uint32_t skip;  /* the last `skip` blocks of the session lie beyond n_rows (store skipped) */
    uint32_t pad;   /* in_stride = coff*d + pad (padding NaN: never read) */
    bool nan;       /* NaN / +inf / -inf in a few inputs */
    const uint32_t *chunks;
    uint32_t n_chunks;
    const char *note;
    uint32_t n_rows; /* 0: every block of the session but the last `skip` */
} cmp_case;

#define CH(x) x, (uint32_t)(sizeof x / sizeof x[0])

static const cmp_case k_cases[] = {
    {4, 2, 512, 64, 1, false, 0, 2, 0, false, CH(k_chunks), "V4 Flash/Pro attention CSA compressor", 0},
    {4, 2, 512, 64, 1, false, 40003, 2, 3, false, CH(k_chunks), "CSA compressor mid-session, fresh state", 0},
    {4, 2, 128, 64, 2, true, 0, 2, 0, false, CH(k_chunks), "V4 Flash/Pro indexer compressor", 0},
    {4, 2, 128, 64, 2, true, 100003, 1, 0, false, CH(k_chunks), "indexer mid-session, fresh state", 0},
    {128, 1, 512, 64, 1, false, 0, 1, 0, false, CH(k_chunks_long), "V4 Flash/Pro HCA compressor", 0},
    {128, 1, 512, 64, 1, false, 1000003, 1, 0, false, CH(k_chunks_long), "HCA at position 10^6", 0},
    {4, 2, 512, 64, 0, false, 7, 0, 5, false, CH(k_chunks), "CSA without rounding, padded stride", 0},
    {3, 1, 64, 16, 2, true, 0, 1, 3, false, CH(k_chunks_tiny), "tiny", 0},
    {3, 2, 64, 16, 2, true, 30001, 2, 0, false, CH(k_chunks_tiny), "tiny, overlapping blocks of 3", 0},
    {5, 2, 80, 16, 1, false, 11, 1, 1, false, CH(k_chunks_tiny), "e4m3 on 64 of 80 dims, ratio 5", 0},
    {1, 1, 128, 64, 2, true, 5, 3, 0, false, CH(k_chunks_tiny), "ratio 1: every token a block", 0},
    {4, 2, 128, 64, 2, true, 0, 0, 0, true, CH(k_chunks), "NaN, +-inf inputs, NaN kv in empty slots", 0},
    {3, 2, 64, 16, 2, true, 4294967289u, 0, 0, false, CH(k_chunks_wrap), "p % 3 past 2^32 (no wrap)", 4},
    {1, 1, 64, 16, 0, false, 4294967289u, 0, 0, false, CH(k_chunks_wrap), "blocks past 2^32: not row 0", 4},
};
#define N_CMP_CASES (uint32_t)(sizeof k_cases / sizeof k_cases[0])
#define I_INVALID N_CMP_CASES /* the last case: invalid arguments are refused */

static void cmp_describe(uint32_t i, char *buf, size_t len) {
    if (i == I_INVALID) {
        snprintf(buf, len, "invalid arguments are refused");
        return;
    }
    const cmp_case *cc = &k_cases[i];
    snprintf(buf, len, "ratio=%u coff=%u d=%u rope=%u quant=%u%s%s pos0=%u  # %s", cc->ratio,
             cc->coff, cc->d, cc->rope_dim, cc->quant, cc->quant ? " (and 0)" : "",
             cc->hadamard ? " hadamard" : "", cc->pos0, cc->note);
}

/* The session's inputs, for all T tokens. */
typedef struct session {
    uint32_t T, w, in_stride, n_rows, max_chunk;
    float *a, *g;     /* [T][in_stride] */
    float *ape;       /* [ratio][w] */
    uint16_t *norm;   /* BF16 [d] */
    float *cs;        /* [T][rope_dim/2][2]; NaN where the token completes no block */
    float *kv0;       /* [coff*ratio][w] initial kv */
    double freq[MS_V4_MAX_ROPE_DIM / 2];
} session;

static void session_free(session *s) {
    ms_free(s->a);
    ms_free(s->g);
    ms_free(s->ape);
    ms_free(s->norm);
    ms_free(s->cs);
    ms_free(s->kv0);
}

static int session_make(const cmp_case *cc, session *s) {
    memset(s, 0, sizeof *s);
    const uint32_t r = cc->ratio, d = cc->d, rd = cc->rope_dim;
    for (uint32_t i = 0; i < cc->n_chunks; i++) {
        s->T += cc->chunks[i];
        if (cc->chunks[i] > s->max_chunk) s->max_chunk = cc->chunks[i];
    }
    s->w = cc->coff * d;
    s->in_stride = s->w + cc->pad;
    s->n_rows = cc->n_rows ? cc->n_rows : (uint32_t)(((uint64_t)cc->pos0 + s->T) / r) - cc->skip;
    const size_t nin = (size_t)s->T * s->in_stride, nstate = (size_t)cc->coff * r * s->w;
    s->a = ms_malloc(nin * 4);
    s->g = ms_malloc(nin * 4);
    s->ape = ms_malloc((size_t)r * s->w * 4);
    s->norm = ms_malloc((size_t)d * 2);
    s->cs = ms_malloc(((size_t)s->T * rd + 2) * 4);
    s->kv0 = ms_malloc(nstate * 4);
    if (!s->a || !s->g || !s->ape || !s->norm || !s->cs || !s->kv0) return -MS_E_NOMEM;
    for (size_t i = 0; i < nin; i++) {
        uint32_t col = (uint32_t)(i % s->in_stride), ch = col % d;
        /* channels 48..63 of every 64 shrink by 2^-1 .. 2^-15: e4m3 blocks then hold values
         * down in the format's subnormal range, where the block size and scale matter */
        float mag = ch % 64 >= 48 ? ldexpf(1.0f, -(int)(ch % 16)) : 1.0f;
        s->a[i] = col < s->w ? rng_uniform() * 2.0f * mag : NAN;
        s->g[i] = col < s->w ? rng_uniform() * 3.0f : NAN;
    }
    for (size_t i = 0; i < (size_t)r * s->w; i++) s->ape[i] = rng_uniform();
    for (uint32_t i = 0; i < d; i++) s->norm[i] = f32_to_bf16(1.0f + 0.5f * rng_uniform());
    for (size_t i = 0; i < nstate; i++) s->kv0[i] = cc->nan ? NAN : rng_uniform() * 100.0f;
    for (uint32_t i = 0; i < rd / 2; i++) s->freq[i] = pow(160000.0, -(2.0 * i) / rd);
    for (uint32_t t = 0; t < s->T; t++) {
        uint64_t p = (uint64_t)cc->pos0 + t;
        float *c = s->cs + (size_t)t * rd;
        if ((p + 1) % r == 0) ms_ref_rope_table(s->freq, rd, p + 1 - r, c);
        else
            for (uint32_t i = 0; i < rd; i++) c[i] = NAN; /* must not be read */
    }
    if (cc->nan) { /* pos0 0, ratio 4, coff 2: columns < d pool in the next block, >= d in their own */
        s->a[5 * (size_t)s->in_stride + 7] = NAN;            /* token 5 (block 1): row 2 NaN */
        s->g[20 * (size_t)s->in_stride + d + 3] = NAN;       /* a NaN score: row 5 NaN */
        s->g[41 * (size_t)s->in_stride + 2] = INFINITY;      /* exp(inf - inf): row 11 NaN */
        s->g[60 * (size_t)s->in_stride + d + 5] = -INFINITY; /* an empty slot: row 15 finite */
    }
    return 0;
}

/* Block j from the token history as V4_SPEC §3.4 defines it (see the top of this file); row [d]. */
static void definition_row(const cmp_case *cc, const session *s, uint64_t j, uint32_t quant,
                           float *row) {
    const uint32_t r = cc->ratio, d = cc->d, w = s->w, n_slots = cc->coff * r, rd = cc->rope_dim;
    for (uint32_t ch = 0; ch < d; ch++) {
        double v[256], e[256]; /* n_slots <= 2 * 128 here */
        bool empty[256];
        double mx = -INFINITY;
        for (uint32_t sl = 0; sl < n_slots; sl++) {
            bool prev = cc->coff == 2 && sl < r;
            uint32_t k = sl % r, col = prev || cc->coff == 1 ? ch : d + ch;
            empty[sl] = prev && j == 0;
            uint64_t pp = ((prev ? j - 1 : j) * r) + k;
            empty[sl] = empty[sl] || pp < cc->pos0;
            if (empty[sl]) continue;
            size_t ti = (size_t)(pp - cc->pos0) * s->in_stride + col;
            e[sl] = s->g[ti] + s->ape[(size_t)k * w + col]; /* the F32 score, as stored */
            v[sl] = s->a[ti];
            if (e[sl] == -INFINITY) empty[sl] = true;
            if (e[sl] > mx) mx = e[sl];
        }
        double sum = 0, acc = 0;
        for (uint32_t sl = 0; sl < n_slots; sl++) {
            if (empty[sl]) continue;
            double x = exp(e[sl] - mx);
            sum += x;
            acc += x * v[sl];
        }
        row[ch] = (float)(acc / sum);
    }
    ms_ref_rmsnorm(row, s->norm, MS_WENC_BF16, row, d, 1, 1e-6f);
    ms_ref_v4_rope(row + d - rd, s->freq, rd, j * r, false);
    if (cc->hadamard) ms_ref_v4_hadamard(row, d);
    if (quant == 1) ms_ref_v4_fake_quant_fp8(row, d - rd, 64);
    if (quant == 2) ms_ref_v4_fake_quant_fp4(row, d, 32);
}

static float round_q(uint32_t quant, float x) {
    return quant == 1 ? ms_ref_v4_round_e4m3(x) : ms_ref_v4_round_e2m1(x);
}

static bool same_bits(float x, float y) { return (isnan(x) && isnan(y)) || memcmp(&x, &y, 4) == 0; }

/* Is gpu[len] a rounding of pre[len] (one block) moved by at most CMP_FLIP_DELTA of its maximum? */
static bool flip_ok(uint32_t quant, const float *pre, const float *gpu, uint32_t len) {
    const float floor_amax = quant == 1 ? 1e-4f : 6.0f * 0x1p-126f;
    const float inv_max = quant == 1 ? 1.0f / 448.0f : 1.0f / 6.0f;
    float amax = floor_amax;
    for (uint32_t i = 0; i < len; i++)
        if (fabsf(pre[i]) > amax) amax = fabsf(pre[i]);
    const float dl = (float)CMP_FLIP_DELTA * amax;
    for (int sv = -1; sv <= 1; sv++) {
        const float s = ms_ref_v4_pow2_scale(amax + (float)sv * dl, inv_max);
        bool ok = true;
        for (uint32_t i = 0; i < len && ok; i++) {
            bool hit = false;
            for (int ev = -1; ev <= 1 && !hit; ev++)
                hit = same_bits(round_q(quant, (pre[i] + (float)ev * dl) / s) * s, gpu[i]);
            ok = hit;
        }
        if (ok) return true;
    }
    return false;
}

typedef struct pass_stats {
    double nmse;           /* NMSE of the unrounded dims over the rows of all calls */
    uint64_t nonfinite;    /* NaN/Inf parity failures */
    uint64_t state_bad;    /* state elements not bit-identical */
    uint64_t flips, rounded, bad_blocks;
    uint64_t guards, untouched_changed;
    uint64_t n_nan, rows_checked, rows_expected;
    double def_nmse;       /* twin vs definition, rotated dims */
    uint64_t def_bits, def_nonfinite;
    double call_us;        /* GPU time of the longest call (timestamps; 0 without them) */
    uint32_t call_n;       /* its tokens */
} pass_stats;

typedef struct gpu_bufs {
    ms_vk_buf a, g, ape, norm, cs, pos;
    guarded kv, score, rows;
} gpu_bufs;

static void bufs_free(ms_vk *vk, gpu_bufs *b) {
    ms_vk_buf_free(vk, &b->a);
    ms_vk_buf_free(vk, &b->g);
    ms_vk_buf_free(vk, &b->ape);
    ms_vk_buf_free(vk, &b->norm);
    ms_vk_buf_free(vk, &b->cs);
    ms_vk_buf_free(vk, &b->pos);
    ms_vk_buf_free(vk, &b->kv.buf);
    ms_vk_buf_free(vk, &b->score.buf);
    ms_vk_buf_free(vk, &b->rows.buf);
}

/* One session with the given quant; pre: the twin's rows of the quant-0 session (pre-rounding
 * values) when quant != 0. rows_out [n_rows][d]: the twin's rows at the end. */
static int run_session(ms_vk *vk, ms_vk_cmd *cmd, const cmp_case *cc, const session *s, uint32_t quant,
                       const float *pre, float *rows_out, pass_stats *st) {
    const uint32_t r = cc->ratio, d = cc->d, rd = cc->rope_dim, nope = d - rd;
    const size_t nstate = (size_t)cc->coff * r * s->w, nrows = (size_t)s->n_rows * d;
    const size_t rows_bytes = (nrows ? nrows : 1) * 4;
    memset(st, 0, sizeof *st);
    float *kv = ms_malloc(nstate * 4), *sc = ms_malloc(nstate * 4);
    float *gkv = ms_malloc(nstate * 4), *gsc = ms_malloc(nstate * 4);
    float *win = ms_malloc((size_t)(s->max_chunk / r + 2) * d * 4), *def = ms_malloc((size_t)d * 4);
    float *gall = ms_malloc(rows_bytes);
    gpu_bufs b;
    memset(&b, 0, sizeof b);
    int rc = kv && sc && gkv && gsc && win && def && gall ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    memcpy(kv, s->kv0, nstate * 4);
    for (size_t i = 0; i < nstate; i++) sc[i] = -INFINITY;
    for (size_t i = 0; i < nrows; i++) memcpy(&rows_out[i], &(uint32_t){GUARD_WORD}, 4);

    const uint64_t in_bytes = ((uint64_t)(s->max_chunk - 1) * s->in_stride + s->w) * 4;
    const uint64_t cs_bytes = ((uint64_t)s->max_chunk * rd + 2) * 4;
    rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, in_bytes, &b.a);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, in_bytes, &b.g);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, cs_bytes, &b.cs);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4, &b.pos);
    if (!rc) rc = upload_new(vk, s->ape, (uint64_t)r * s->w * 4, &b.ape);
    if (!rc) rc = upload_new(vk, s->norm, (uint64_t)d * 2, &b.norm);
    if (!rc) rc = guarded_alloc(vk, nstate * 4, &b.kv);
    if (!rc) rc = guarded_alloc(vk, nstate * 4, &b.score);
    if (!rc) rc = guarded_alloc(vk, rows_bytes, &b.rows);
    if (!rc) rc = ms_vk_upload(vk, &b.kv.buf, b.kv.guard_bytes, kv, nstate * 4);
    if (!rc) rc = ms_vk_upload(vk, &b.score.buf, b.score.guard_bytes, sc, nstate * 4);
    if (rc) goto out;

    double num = 0, den = 0;
    uint32_t t0 = 0;
    for (uint32_t ci = 0; ci < cc->n_chunks && !rc; ci++) {
        const uint32_t n = cc->chunks[ci], p0 = cc->pos0 + t0;
        const uint64_t nb = ((uint64_t)(n - 1) * s->in_stride + s->w) * 4;
        const float *at = s->a + (size_t)t0 * s->in_stride, *gt = s->g + (size_t)t0 * s->in_stride;
        const float *ct = s->cs + (size_t)t0 * rd;
        rc = ms_vk_upload(vk, &b.a, 0, at, nb);
        if (!rc) rc = ms_vk_upload(vk, &b.g, 0, gt, nb);
        if (!rc && rd) rc = ms_vk_upload(vk, &b.cs, 0, ct, (uint64_t)n * rd * 4);
        if (!rc) rc = ms_vk_upload(vk, &b.pos, 0, &p0, 4);
        const bool timed = ms_vk_get_caps(vk)->timestamp_period_ns > 0;
        if (!rc) rc = ms_vk_cmd_begin(cmd);
        if (!rc && timed) rc = ms_vk_cmd_timestamp(cmd, NULL);
        if (!rc)
            rc = ms_vk_rec_compress(cmd, ms_vk_buf_range(&b.a, 0, nb), ms_vk_buf_range(&b.g, 0, nb),
                                    s->in_stride, ms_vk_buf_range(&b.ape, 0, (uint64_t)r * s->w * 4),
                                    ms_vk_buf_range(&b.norm, 0, (uint64_t)d * 2),
                                    ms_vk_buf_range(&b.cs, 0, rd ? (uint64_t)n * rd * 4 : 8),
                                    ms_vk_buf_range(&b.pos, 0, 4), guarded_range(&b.kv),
                                    guarded_range(&b.score), guarded_range(&b.rows), n, r, cc->coff,
                                    d, rd, s->n_rows, 1e-6f, quant, cc->hadamard);
        if (!rc && timed) rc = ms_vk_cmd_timestamp(cmd, NULL);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        if (!rc) rc = ms_vk_cmd_run(cmd);
        double ns[2];
        if (!rc && timed) rc = ms_vk_cmd_timestamps(cmd, ns, 2);
        if (rc) break;
        if (timed && n > st->call_n) {
            st->call_n = n;
            st->call_us = (ns[1] - ns[0]) * 1e-3;
        }
        ms_ref_compress(at, gt, s->in_stride, s->ape, s->norm, ct, p0, kv, sc, rows_out, n, r,
                        cc->coff, d, rd, s->n_rows, 1e-6f, quant, cc->hadamard);
        uint64_t dmg = 0;
        rc = guarded_read(vk, &b.kv, gkv, &dmg);
        st->guards += dmg;
        if (!rc) rc = guarded_read(vk, &b.score, gsc, &dmg);
        st->guards += dmg;
        for (size_t i = 0; i < nstate; i++)
            st->state_bad += !same_bits(gkv[i], kv[i]) + !same_bits(gsc[i], sc[i]);
        /* rows this call may write: blocks completed by positions p0 .. p0+n-1, below n_rows */
        uint64_t j0 = p0 / r, j1 = ((uint64_t)p0 + n) / r;
        if (j1 > s->n_rows) j1 = s->n_rows;
        if (!rc && j1 > j0)
            rc = ms_vk_download(vk, &b.rows.buf, b.rows.guard_bytes + j0 * d * 4, win, (j1 - j0) * d * 4);
        for (uint64_t j = j0; j < j1 && !rc; j++) {
            const float *gr = win + (j - j0) * d, *tr = rows_out + j * d;
            st->rows_checked++;
            /* the unrounded dims: all (quant 0), the rotated ones (quant 1), none (quant 2) */
            uint32_t u0 = quant == 0 ? 0 : quant == 1 ? nope : d;
            for (uint32_t i = 0; i < d; i++) {
                if (!isfinite(tr[i]) || !isfinite(gr[i])) {
                    st->n_nan += isnan(tr[i]);
                    st->nonfinite += !same_bits(tr[i], gr[i]);
                    continue;
                }
                if (i >= u0) {
                    num += ((double)gr[i] - tr[i]) * ((double)gr[i] - tr[i]);
                    den += (double)tr[i] * tr[i];
                }
            }
            if (quant == 0) continue;
            const uint32_t block = quant == 1 ? 64 : 32, len = quant == 1 ? nope : d;
            for (uint32_t b0 = 0; b0 < len; b0 += block) {
                uint32_t differ = 0;
                for (uint32_t i = b0; i < b0 + block; i++) differ += !same_bits(gr[i], tr[i]);
                st->rounded += block;
                if (!differ) continue;
                st->flips += differ;
                st->bad_blocks += !flip_ok(quant, pre + j * d + b0, gr + b0, block);
            }
        }
        t0 += n;
    }
    if (rc) goto out;
    st->nmse = den > 0 ? num / den : num;

    /* every row outside the blocks of the session untouched, every guard intact */
    uint64_t dmg = 0;
    rc = guarded_read(vk, &b.rows, gall, &dmg);
    st->guards += dmg;
    const uint64_t js = cc->pos0 / r, je = ((uint64_t)cc->pos0 + s->T) / r;
    st->rows_expected = (je < s->n_rows ? je : s->n_rows) - (js < s->n_rows ? js : s->n_rows);
    for (size_t j = 0; j < s->n_rows && !rc; j++) {
        if (j >= js && j < je) continue;
        st->untouched_changed += memcmp(gall + j * d, rows_out + j * d, (size_t)d * 4) != 0 ? d : 0;
    }

    /* the twin against the definition */
    double dn = 0, dd = 0;
    const bool def_exact = !cc->hadamard; /* without the rotation the unrotated dims are exact */
    for (uint64_t j = js; j < je && j < s->n_rows && !rc; j++) {
        if (quant != 0 && !(quant == 1 && def_exact)) break; /* rounding of ~1-ulp differences */
        definition_row(cc, s, j, quant, def);
        const float *tr = rows_out + j * d;
        for (uint32_t i = 0; i < d; i++) {
            if (!isfinite(def[i]) || !isfinite(tr[i])) {
                st->def_nonfinite += !same_bits(def[i], tr[i]);
                continue;
            }
            if (def_exact && i < nope) {
                st->def_bits += memcmp(&def[i], &tr[i], 4) != 0;
            } else if (quant == 0 || i >= nope) {
                dn += ((double)def[i] - tr[i]) * ((double)def[i] - tr[i]);
                dd += (double)def[i] * def[i];
            }
        }
    }
    st->def_nmse = dd > 0 ? dn / dd : dn;
out:
    bufs_free(vk, &b);
    ms_free(kv);
    ms_free(sc);
    ms_free(gkv);
    ms_free(gsc);
    ms_free(win);
    ms_free(def);
    ms_free(gall);
    return rc;
}

static bool pass_ok(const pass_stats *st, uint32_t quant) {
    return (st->rounded > 0) == (quant != 0 && st->rows_expected > 0) && st->nmse <= TOL_NMSE_CMP &&
           st->nonfinite == 0 && st->state_bad == 0 && st->bad_blocks == 0 && st->flips * 1000 <= st->rounded * CMP_FLIP_PER_MILLE &&
           st->guards == 0 && st->untouched_changed == 0 && st->def_nmse <= TOL_NMSE_CMP_DEF &&
           st->def_bits == 0 && st->def_nonfinite == 0 && st->rows_checked == st->rows_expected;
}

static void pass_print(const cmp_case *cc, uint32_t quant, const pass_stats *st, bool ok) {
    printf("  compress  r=%-3u coff=%u d=%-3u rope=%-2u %s%s pos0=%-10u nmse=%.2e (tol %.0e) "
           "rows=%llu flips=%llu/%llu bad_blocks=%llu state_bad=%llu nan=%llu nonfinite_mismatch=%llu "
           "guards=%llu untouched_changed=%llu def_nmse=%.2e def_bits=%llu gpu(n=%u)=%.0fus  %s  "
           "# %s\n",
           cc->ratio, cc->coff, cc->d, cc->rope_dim, cc->hadamard ? "hadamard+" : "",
           quant == 1 ? "e4m3" : quant == 2 ? "e2m1" : "none", cc->pos0, st->nmse, TOL_NMSE_CMP,
           (unsigned long long)st->rows_checked, (unsigned long long)st->flips, (unsigned long long)st->rounded,
           (unsigned long long)st->bad_blocks, (unsigned long long)st->state_bad,
           (unsigned long long)st->n_nan, (unsigned long long)(st->nonfinite + st->def_nonfinite),
           (unsigned long long)st->guards, (unsigned long long)st->untouched_changed, st->def_nmse,
           (unsigned long long)st->def_bits, st->call_n, st->call_us, ok ? "ok" : "FAIL", cc->note);
}

static void count_errors(ms_log_level level, const char *msg, void *user) {
    (void)msg;
    if (level == MS_LOG_ERROR) ++*(uint32_t *)user;
}

/* Every invalid shape or binding is refused, with one logged reason, before anything is recorded. */
static int run_invalid(ms_vk *vk, ms_vk_cmd *cmd, uint64_t seed, int verbose) {
    ms_vk_buf buf = {0};
    int rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 1 << 20, &buf);
    if (rc) return 1;
    const uint64_t al = ms_vk_get_caps(vk)->min_storage_offset_align > 256
                            ? ms_vk_get_caps(vk)->min_storage_offset_align : 256;
    /* disjoint 64 KiB ranges */
    ms_vk_range rg[9];
    for (int i = 0; i < 9; i++) rg[i] = ms_vk_buf_range(&buf, (uint64_t)i * (al > 65536 ? al : 65536), 65536);
    struct {
        uint32_t n, ratio, coff, d, rd, quant;
        bool had;
        int bad_range; /* -1 none; 0..8 that binding (a, g, ape, norm, cs, pos, kv, score, rows) too
                        * small; 10 rows = kv */
    } k_bad[] = {
        {0, 4, 2, 128, 64, 2, true, -1},   /* no tokens */
        {1, 0, 1, 128, 64, 0, false, -1},  /* ratio 0 */
        {1, 4, 3, 128, 64, 0, false, -1},  /* coff 3 */
        {1, 4, 2, 127, 63, 0, false, -1},  /* d odd */
        {1, 4, 2, 96, 64, 0, true, -1},    /* Hadamard of 96 */
        {1, 3, 1, 64, 16, 1, false, -1},   /* e4m3 on 48 dims */
        {1, 4, 2, 48, 16, 2, false, -1},   /* e2m1 on 48 dims */
        {1, 4, 2, 128, 130, 0, false, -1}, /* rope_dim > d */
        {1, 4, 1, 8192, 64, 0, false, -1}, /* d beyond the bound */
        {2, 4, 2, 128, 64, 2, true, 6},    /* kv range too small */
        {2, 4, 2, 128, 64, 2, true, 0},    /* a range too small */
        {2, 4, 2, 128, 64, 2, true, 10},   /* rows overlaps kv */
    };
    rc = ms_vk_cmd_begin(cmd);
    int fails = rc != 0;
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0] && !rc; i++) {
        ms_vk_range x[9];
        memcpy(x, rg, sizeof x);
        if (k_bad[i].bad_range >= 0 && k_bad[i].bad_range < 9) x[k_bad[i].bad_range].size = 4;
        if (k_bad[i].bad_range == 10) x[8] = x[6];
        uint32_t n_logged = 0;
        ms_log_set_sink(count_errors, &n_logged);
        int r = ms_vk_rec_compress(cmd, x[0], x[1], 2 * 128, x[2], x[3], x[4], x[5], x[6], x[7], x[8],
                                   k_bad[i].n, k_bad[i].ratio, k_bad[i].coff, k_bad[i].d, k_bad[i].rd,
                                   8, 1e-6f, k_bad[i].quant, k_bad[i].had);
        ms_log_set_sink(NULL, NULL);
        if (r != -MS_E_INVALID_ARG || n_logged != 1) {
            printf("  compress invalid case %zu: returned %d with %u logged errors, expected "
                   "-MS_E_INVALID_ARG with one  FAIL\n", i, r, n_logged);
            fails++;
        }
    }
    /* and a valid call with the same ranges is accepted */
    if (!rc && ms_vk_rec_compress(cmd, rg[0], rg[1], 2 * 128, rg[2], rg[3], rg[4], rg[5], rg[6], rg[7],
                                  rg[8], 2, 4, 2, 128, 64, 8, 1e-6f, 2, true) != 0) {
        printf("  compress: a valid call was refused  FAIL\n");
        fails++;
    }
    if (!rc) rc = ms_vk_cmd_end(cmd);
    ms_vk_buf_free(vk, &buf);
    fails += rc != 0;
    if (fails || verbose) printf("  compress  invalid arguments refused: %s\n", fails ? "FAIL" : "ok");
    if (fails) printf("    repeat with: test_ops -o compress -s %llu\n", (unsigned long long)seed);
    return fails ? 1 : 0;
}

static int cmp_run(ms_vk *vk, ms_vk_cmd *cmd, uint32_t i, uint64_t seed, int verbose) {
    if (i == I_INVALID) return run_invalid(vk, cmd, seed, verbose);
    const cmp_case *cc = &k_cases[i];
    session s;
    int rc = session_make(cc, &s);
    float *pre = ms_malloc(((size_t)s.n_rows * cc->d + 1) * 4);
    float *rows = ms_malloc(((size_t)s.n_rows * cc->d + 1) * 4);
    int fails = 0;
    if (!rc && (!pre || !rows)) rc = -MS_E_NOMEM;
    /* quant 0 first (its rows are the pre-rounding values), then the case's quant */
    for (uint32_t pass = 0; pass < (cc->quant ? 2u : 1u) && !rc; pass++) {
        const uint32_t quant = pass ? cc->quant : 0;
        pass_stats st;
        rc = run_session(vk, cmd, cc, &s, quant, pre, pass ? rows : pre, &st);
        if (rc) break;
        bool ok = pass_ok(&st, quant);
        if (!ok || verbose) pass_print(cc, quant, &st, ok);
        fails += !ok;
    }
    if (rc) {
        printf("  compress r=%u d=%u  error: %s  FAIL\n", cc->ratio, cc->d, ms_strerror(rc));
        fails++;
    }
    if (fails) printf("    repeat with: test_ops -o compress -s %llu\n", (unsigned long long)seed);
    session_free(&s);
    ms_free(pre);
    ms_free(rows);
    return fails ? 1 : 0;
}

const ops_family ops_fam_compress = {"compress", N_CMP_CASES + 1, cmp_describe, cmp_run};
