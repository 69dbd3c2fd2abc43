/* tests/ops_attention.c — op families `attention` (ms_vk_rec_attention against ms_ref_attention)
 * and `kv_store` (ms_vk_rec_kv_store against ms_ref_kv_store).
 *
 * Every attention case fills the ring rows and compressed rows that no query of the case may see
 * with NaN, so a read outside the visible set shows up as NaN in the output; sel lists carry
 * 0xFFFFFFFF padding and, where asked, indices >= nb that must be ignored. The output and the split
 * scratch sit between guard words. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/ref/ref.h"
#include "engine/vk/vk.h"
#include "tests/ops_util.h"

/* F32 scores, exp and sums on the GPU against double in the reference. Observed on lavapipe:
 * NMSE 4e-15..4e-13 for most cases; up to 2e-12 where every weight is exp of an argument near -30
 * (sink 30) or the list has 7,940 entries, F32 rounding of z - m being ~1e-6 relative there.
 * Bugs measured by mutating the shader: the sink left out 5e-8 (7,940 entries) .. 3e+24, the
 * window one entry too long 5e-7 .. 3e-1 (or NaN from a row it must not read), no rescale by the
 * running max 1e-2 .. 3e-1; a sel index >= nb read gives NaN (unread rows hold NaN). */
#define TOL_NMSE_ATTN 1e-10

enum {
    SP_NAN_ROW = 1,  /* one visible window row NaN */
    SP_NAN_Q = 2,    /* q of one head of one query NaN */
    SP_NAN_SINK = 4, /* one head's sink NaN */
    SP_JUNK_SEL = 8, /* sel lists also hold indices >= nb (and >= n_rows) */
    SP_KV_STORE = 16 /* the chunk's own rows go in by ms_vk_rec_kv_store first */
};

typedef struct attn_case {
    uint32_t n, n_heads, head_dim, window, ring_len, ratio, topk, n_rows, pos0;
    float sink; /* NAN: random sinks in [-2, 2] */
    float qmag; /* q entries uniform in [-qmag, qmag] */
    int special;
    ms_vk_attention_tune tune;
    const char *note;
} attn_case;

#define RND NAN
static const attn_case k_attn[] = {
    {1, 3, 64, 5, 9, 0, 0, 0, 3, RND, 1, 0, {0}, "tiny: 3 heads x 64, window not yet full"},
    {1, 3, 64, 5, 9, 0, 0, 0, 17, RND, 4, 0, {0}, "tiny: ring wrapped, sharp softmax"},
    {7, 5, 128, 6, 12, 0, 0, 0, 2, RND, 2, 0, {0}, "window only, chunk of 7 from position 2"},
    {7, 3, 64, 5, 11, 0, 0, 0, 40, RND, 2, SP_KV_STORE, {0}, "chunk of 7 stored by kv_store, windows overlap it"},
    {7, 4, 64, 16, 22, 8, 0, 40, 37, RND, 2, 0, {0}, "ratio 8: nb grows 4 -> 5 inside the chunk"},
    {7, 3, 64, 5, 11, 4, 6, 16, 20, RND, 2, SP_JUNK_SEL, {0}, "ratio 4: sel with padding and indices >= nb"},
    {7, 4, 64, 128, 134, 128, 0, 7900, 1000000, RND, 3, 0, {0}, "pos0 1e6, ring wrap, ratio 128: 7812 blocks"},
    {2, 3, 64, 5, 9, 0, 0, 0, 30, 30.0f, 1, 0, {0}, "sink 30 dominates"},
    {2, 3, 64, 5, 9, 0, 0, 0, 30, -30.0f, 1, 0, {0}, "sink -30 negligible"},
    {2, 3, 64, 5, 9, 4, 4, 10, 30, -INFINITY, 1, SP_JUNK_SEL, {0}, "sink -inf: plain softmax"},
    {5, 3, 64, 5, 9, 0, 0, 0, 30, RND, 1, SP_NAN_ROW, {0}, "NaN in one window row"},
    {2, 3, 64, 5, 9, 0, 0, 0, 30, RND, 1, SP_NAN_Q | SP_NAN_SINK, {0}, "NaN in one head's q, another's sink"},
    {2, 64, 512, 128, 129, 4, 512, 600, 2200, RND, 2, SP_JUNK_SEL, {0}, "V4-Flash CSA: 128 + 512 of 550 blocks"},
    {1, 128, 512, 128, 128, 128, 0, 400, 128 * 300 + 5, RND, 2, 0, {0}, "V4-Pro HCA decode: 128 + 300 blocks"},
    {1, 128, 512, 128, 128, 4, 1024, 1200, 4 * 1100 + 1, RND, 2, 0, {0}, "V4-Pro CSA decode: 128 + 1024 of 1100"},
    {8, 64, 512, 128, 135, 0, 0, 0, 300, RND, 2, SP_KV_STORE, {0}, "V4-Flash SWA prefill chunk of 8"},
    /* forced plans: split records + reduce, other tiles, q resident in shared memory */
    {3, 3, 64, 5, 9, 4, 6, 16, 20, RND, 2, SP_JUNK_SEL, {0, 0, 0, 3}, "3 splits (reduce pass)"},
    {2, 3, 64, 5, 9, 0, 0, 0, 30, RND, 1, SP_NAN_ROW | SP_NAN_SINK, {0, 0, 0, 4}, "4 splits, NaN row and sink"},
    {1, 3, 64, 5, 9, 0, 0, 0, 1, -INFINITY, 1, 0, {0, 0, 0, 5}, "5 splits, 2 entries: empty splits, sink -inf"},
    {2, 64, 512, 128, 129, 4, 512, 600, 2200, RND, 2, SP_JUNK_SEL, {0, 4, 0, 7}, "V4-Flash CSA, 7 splits, ET 4"},
    {1, 128, 512, 128, 128, 128, 0, 400, 128 * 300 + 5, RND, 2, 0, {32, 2, 0, 2}, "V4-Pro HCA, 32 heads/wg, ET 2"},
    {2, 8, 128, 9, 12, 128, 0, 4, 300, RND, 2, 0, {0, 4, 128, 0}, "q resident (QC = head_dim), ET 4"},
};
#define N_ATTN (sizeof k_attn / sizeof k_attn[0])

static void attn_describe(uint32_t i, char *buf, size_t len) {
    if (i == N_ATTN) {
        snprintf(buf, len, "bad arguments (and kv_store's) come back as errors, nothing recorded");
        return;
    }
    const attn_case *a = &k_attn[i];
    snprintf(buf, len, "n=%u heads=%u x %u window=%u ring=%u ratio=%u topk=%u rows=%u pos0=%u  # %s", a->n,
             a->n_heads, a->head_dim, a->window, a->ring_len, a->ratio, a->topk, a->n_rows, a->pos0, a->note);
}

static uint32_t n_blocks(uint64_t p, uint32_t ratio, uint32_t n_rows) {
    if (!ratio) return 0;
    uint64_t nb = (p + 1) / ratio;
    return (uint32_t)(nb < n_rows ? nb : n_rows);
}

/* k distinct values of [0, m), ascending, into out (selection sampling). */
static uint32_t pick_sorted(uint32_t k, uint32_t m, uint32_t *out) {
    uint32_t got = 0;
    for (uint32_t j = 0; j < m && got < k; j++)
        if (rng_next() % (m - j) < k - got) out[got++] = j;
    return got;
}

/* Every call must fail with a negative status (and record nothing the validation layer sees). */
static int attn_bad_args(ms_vk *vk, ms_vk_cmd *cmd, uint64_t seed, int verbose) {
    ms_vk_buf b = {0};
    int rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 1 << 20, &b);
    if (rc) return 1;
    const ms_vk_range big = ms_vk_buf_range(&b, 0, 1 << 20), small = ms_vk_buf_range(&b, 0, 64);
    const ms_vk_range odd = ms_vk_buf_range(&b, 4, (1 << 20) - 4), none = {0};
    const ms_vk_attention_tune split4 = {0, 0, 0, 4};
    int bad = 0, n_calls = 0;
    rc = ms_vk_cmd_begin(cmd);
#define EXPECT_ERR(call) (n_calls++, bad += (call) >= 0)
    if (!rc) {
        /* head_dim not a multiple of 4; window 0; ring_len 0; n 0 */
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, big, big, big, big, 1, 4, 6, 5, 9, 0, 0, 0, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, big, big, big, big, 1, 4, 64, 0, 9, 0, 0, 0, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, big, big, big, big, 1, 4, 64, 5, 0, 0, 0, 0, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, big, big, big, big, 0, 4, 64, 5, 9, 0, 0, 0, 0.1f));
        /* head_dim whose quarter neither divides nor is a multiple of the workgroup */
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, big, big, big, big, 1, 4, 100, 5, 9, 0, 0, 0, 0.1f));
        /* q too small, o unaligned, an unbound sink, rows too small for n_rows, sel too small */
        EXPECT_ERR(ms_vk_rec_attention(cmd, small, big, big, big, big, big, big, big, 1, 4, 64, 5, 9, 0, 0, 0, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, big, big, odd, big, 1, 4, 64, 5, 9, 0, 0, 0, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, big, none, big, big, big, 1, 4, 64, 5, 9, 0, 0, 0, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, small, big, big, big, big, big, 1, 4, 64, 5, 9, 128, 0, 100, 0.1f));
        EXPECT_ERR(ms_vk_rec_attention(cmd, big, big, big, small, big, big, big, big, 2, 4, 64, 5, 9, 4, 64, 100, 0.1f));
        /* forced splits without room for their records */
        EXPECT_ERR(ms_vk_rec_attention_tuned(cmd, big, big, big, big, big, big, big, small, 1, 4, 64, 5, 9, 0, 0, 0,
                                             0.1f, &split4));
        /* a tile that cannot fit: ET 16 with a whole 1024-wide q in shared memory */
        const ms_vk_attention_tune huge = {16, 16, 1024, 1};
        EXPECT_ERR(ms_vk_rec_attention_tuned(cmd, big, big, big, big, big, big, big, big, 1, 16, 1024, 5, 9, 0, 0, 0,
                                             0.1f, &huge));
        /* kv_store: n > ring_len, ring too small, head_dim 0 */
        EXPECT_ERR(ms_vk_rec_kv_store(cmd, big, big, big, 10, 64, 9));
        EXPECT_ERR(ms_vk_rec_kv_store(cmd, big, small, big, 1, 64, 9));
        EXPECT_ERR(ms_vk_rec_kv_store(cmd, big, big, big, 1, 0, 9));
        rc = ms_vk_cmd_end(cmd);
    }
#undef EXPECT_ERR
    ms_vk_buf_free(vk, &b);
    const int ok = rc == 0 && bad == 0;
    if (!ok || verbose)
        printf("  attention bad arguments: %d of %d calls accepted, end %s  %s\n", bad, n_calls,
               rc ? ms_strerror(rc) : "ok", ok ? "ok" : "FAIL");
    if (!ok) printf("    repeat with: test_ops -o attention -s %llu\n", (unsigned long long)seed);
    return ok ? 0 : 1;
}

static int attn_run(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    if (ci == N_ATTN) return attn_bad_args(vk, cmd, seed, verbose);
    const attn_case *a = &k_attn[ci];
    const uint32_t n = a->n, H = a->n_heads, D = a->head_dim, R = a->ring_len;
    const size_t nq = (size_t)n * H * D, nring = (size_t)R * D, nrows = (size_t)(a->n_rows ? a->n_rows : 1) * D;
    const size_t nsel = (size_t)n * (a->topk ? a->topk : 1);
    const float qnan = NAN;
    float *q = ms_malloc(nq * 4), *ring = ms_malloc(nring * 4), *rows = ms_malloc(nrows * 4);
    float *sink = ms_malloc((size_t)H * 4), *src = ms_malloc((size_t)n * D * 4);
    float *ref = ms_malloc(nq * 4), *gpu = ms_malloc(nq * 4), *ring_ref = ms_malloc(nring * 4);
    uint32_t *sel = ms_malloc(nsel * 4);
    uint8_t *row_seen = ms_calloc(a->n_rows + 1, 1), *ring_seen = ms_calloc(R, 1);
    ms_vk_buf qb = {0}, rb = {0}, cb = {0}, sb = {0}, kb = {0}, pb = {0}, srcb = {0};
    guarded ob = {0}, xb = {0};
    int rc = q && ring && rows && sink && src && ref && gpu && ring_ref && sel && row_seen && ring_seen ? 0 : -MS_E_NOMEM;
    if (rc) goto out;

    for (size_t i = 0; i < nq; i++) q[i] = rng_uniform() * a->qmag;
    for (uint32_t h = 0; h < H; h++) sink[h] = isnan(a->sink) ? 2.0f * rng_uniform() : a->sink;
    for (size_t i = 0; i < nsel; i++) sel[i] = 0xFFFFFFFFu;
    /* What the chunk's queries see: window positions and compressed blocks. */
    const uint64_t p_first = a->pos0, p_last = (uint64_t)a->pos0 + n - 1;
    const uint64_t x0 = p_first + 1 > a->window ? p_first + 1 - a->window : 0;
    for (uint64_t x = x0; x <= p_last; x++) ring_seen[x % R] = 1;
    for (uint32_t t = 0; t < n; t++) {
        const uint32_t nb = n_blocks(p_first + t, a->ratio, a->n_rows);
        if (a->ratio == 4) {
            uint32_t *st = sel + (size_t)t * a->topk;
            const uint32_t junk = a->special & SP_JUNK_SEL ? (a->topk > 2 ? 2 : a->topk - 1) : 0;
            uint32_t k = a->topk - junk < nb ? a->topk - junk : nb;
            k = pick_sorted(k, nb, st);
            for (uint32_t i = 0; i < k; i++) row_seen[st[i]] = 1;
            for (uint32_t i = 0; i < junk; i++) st[k + i] = nb + i * (a->n_rows + 3); /* >= nb, then >= n_rows */
        } else {
            for (uint32_t j = 0; j < nb; j++) row_seen[j] = 1;
        }
    }
    for (size_t r = 0; r < R; r++)
        for (uint32_t i = 0; i < D; i++) ring[r * D + i] = ring_seen[r] ? rng_uniform() : qnan;
    for (size_t r = 0; r < (a->n_rows ? a->n_rows : 1); r++)
        for (uint32_t i = 0; i < D; i++) rows[r * D + i] = row_seen[r] && a->n_rows ? rng_uniform() : qnan;
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t i = 0; i < D; i++) src[(size_t)t * D + i] = rng_uniform();
    if (a->special & SP_NAN_ROW) { /* a position the first queries see and the last does not */
        const uint64_t x = p_first >= 2 ? p_first - 2 : 0;
        ring[(x % R) * D + 7] = qnan;
    }
    if (a->special & SP_NAN_Q) q[(size_t)(n - 1) * H * D + (size_t)(H - 1) * D + 3] = qnan;
    if (a->special & SP_NAN_SINK) sink[0] = qnan;

    memcpy(ring_ref, ring, nring * 4);
    if (a->special & SP_KV_STORE) ms_ref_kv_store(src, ring_ref, a->pos0, n, D, R);
    const float scale = (float)(1.0 / sqrt((double)D));
    ms_ref_attention(q, ring_ref, rows, sel, sink, a->pos0, ref, n, H, D, a->window, R, a->ratio, a->topk,
                     a->n_rows, scale);

    const uint64_t sbytes = ms_vk_attention_scratch_bytes(vk, n, H, D, a->window, a->ratio, a->topk, a->n_rows,
                                                          &a->tune);
    uint32_t pos0 = a->pos0;
    rc = upload_new(vk, q, nq * 4, &qb);
    if (!rc) rc = upload_new(vk, ring, nring * 4, &rb);
    if (!rc) rc = upload_new(vk, rows, nrows * 4, &cb);
    if (!rc) rc = upload_new(vk, sel, nsel * 4, &sb);
    if (!rc) rc = upload_new(vk, sink, (size_t)H * 4, &kb);
    if (!rc) rc = upload_new(vk, &pos0, 4, &pb);
    if (!rc) rc = upload_new(vk, src, (size_t)n * D * 4, &srcb);
    if (!rc) rc = guarded_alloc(vk, nq * 4, &ob);
    if (!rc && sbytes) rc = guarded_alloc(vk, sbytes, &xb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    const ms_vk_range rring = ms_vk_buf_range(&rb, 0, nring * 4), rpos = ms_vk_buf_range(&pb, 0, 4);
    if (!rc && (a->special & SP_KV_STORE)) {
        rc = ms_vk_rec_kv_store(cmd, ms_vk_buf_range(&srcb, 0, (size_t)n * D * 4), rring, rpos, n, D, R);
        ms_vk_cmd_barrier(cmd);
    }
    if (!rc)
        rc = ms_vk_rec_attention_tuned(cmd, ms_vk_buf_range(&qb, 0, nq * 4), rring,
                                       ms_vk_buf_range(&cb, 0, a->n_rows ? nrows * 4 : 16),
                                       ms_vk_buf_range(&sb, 0, nsel * 4), ms_vk_buf_range(&kb, 0, (size_t)H * 4),
                                       rpos, guarded_range(&ob), sbytes ? guarded_range(&xb) : rpos, n, H, D,
                                       a->window, R, a->ratio, a->topk, a->n_rows, scale, &a->tune);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t damaged = 0, sdamaged = 0;
    if (!rc) rc = guarded_read(vk, &ob, gpu, &damaged);
    if (!rc && sbytes) {
        float *tmp = ms_malloc(sbytes);
        rc = tmp ? guarded_read(vk, &xb, tmp, &sdamaged) : -MS_E_NOMEM;
        ms_free(tmp);
    }
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)nq, 1, (uint32_t)nq, &cr);
        const int ok = cr.nmse <= TOL_NMSE_ATTN && cr.n_nonfinite_mismatch == 0 && damaged == 0 && sdamaged == 0;
        if (!ok || verbose)
            printf("  attention n=%u h=%u d=%u win=%u ratio=%u topk=%u pos0=%u scratch=%lluB nmse=%.2e (tol %.0e) "
                   "nan=%llu nonfinite_mismatch=%llu guards=%llu  %s  # %s\n",
                   n, H, D, a->window, a->ratio, a->topk, a->pos0, (unsigned long long)sbytes, cr.nmse,
                   TOL_NMSE_ATTN, (unsigned long long)cr.n_nan, (unsigned long long)cr.n_nonfinite_mismatch,
                   (unsigned long long)(damaged + sdamaged), ok ? "ok" : "FAIL", a->note);
        if (!ok) printf("    repeat with: test_ops -o attention -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  attention case %u (%s)  error: %s\n", ci, a->note, ms_strerror(rc));
        rc = 1;
    }
out:
    ms_vk_buf_free(vk, &qb);
    ms_vk_buf_free(vk, &rb);
    ms_vk_buf_free(vk, &cb);
    ms_vk_buf_free(vk, &sb);
    ms_vk_buf_free(vk, &kb);
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &srcb);
    ms_vk_buf_free(vk, &ob.buf);
    ms_vk_buf_free(vk, &xb.buf);
    ms_free(q);
    ms_free(ring);
    ms_free(rows);
    ms_free(sink);
    ms_free(src);
    ms_free(ref);
    ms_free(gpu);
    ms_free(ring_ref);
    ms_free(sel);
    ms_free(row_seen);
    ms_free(ring_seen);
    return rc < 0 ? 1 : rc;
}

const ops_family ops_fam_attention = {"attention", (uint32_t)N_ATTN + 1, attn_describe, attn_run};

/* ---------------------------------------------------------------- kv_store */

typedef struct kvs_case {
    uint32_t n, head_dim, ring_len, pos0;
    const char *note;
} kvs_case;

static const kvs_case k_kvs[] = {
    {1, 512, 128, 1000000, "decode at position 1e6"},
    {7, 64, 9, 5, "chunk of 7 wrapping a ring of 9"},
    {9, 6, 9, 0xFFFFFFFBu, "a full ring from position 2^32 - 5 (the row index is exact)"},
    {5, 512, 135, 130, "V4 latent, chunk of 5 over the wrap"},
};
#define N_KVS (sizeof k_kvs / sizeof k_kvs[0])

static void kvs_describe(uint32_t i, char *buf, size_t len) {
    const kvs_case *k = &k_kvs[i];
    snprintf(buf, len, "n=%u head_dim=%u ring=%u pos0=%u  # %s", k->n, k->head_dim, k->ring_len, k->pos0, k->note);
}

static int kvs_run(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    const kvs_case *k = &k_kvs[ci];
    const size_t ns = (size_t)k->n * k->head_dim, nr = (size_t)k->ring_len * k->head_dim;
    float *src = ms_malloc(ns * 4), *ring = ms_malloc(nr * 4), *ref = ms_malloc(nr * 4), *gpu = ms_malloc(nr * 4);
    ms_vk_buf sb = {0}, pb = {0};
    guarded rg = {0};
    int rc = src && ring && ref && gpu ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < ns; i++) src[i] = rng_uniform();
    for (size_t i = 0; i < nr; i++) ring[i] = rng_uniform();
    src[0] = NAN; /* copied bit for bit */
    memcpy(ref, ring, nr * 4);
    ms_ref_kv_store(src, ref, k->pos0, k->n, k->head_dim, k->ring_len);
    uint32_t pos0 = k->pos0;
    rc = upload_new(vk, src, ns * 4, &sb);
    if (!rc) rc = upload_new(vk, &pos0, 4, &pb);
    if (!rc) rc = guarded_alloc(vk, nr * 4, &rg);
    if (!rc) rc = ms_vk_upload(vk, &rg.buf, rg.guard_bytes, ring, nr * 4);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_kv_store(cmd, ms_vk_buf_range(&sb, 0, ns * 4), guarded_range(&rg), ms_vk_buf_range(&pb, 0, 4),
                                k->n, k->head_dim, k->ring_len);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t damaged = 0;
    if (!rc) rc = guarded_read(vk, &rg, gpu, &damaged);
    if (!rc) {
        const int same = memcmp(gpu, ref, nr * 4) == 0, ok = same && damaged == 0;
        if (!ok || verbose)
            printf("  kv_store  n=%u head_dim=%u ring=%u pos0=%u bit-exact=%s guards=%llu  %s  # %s\n", k->n,
                   k->head_dim, k->ring_len, k->pos0, same ? "yes" : "no", (unsigned long long)damaged,
                   ok ? "ok" : "FAIL", k->note);
        if (!ok) printf("    repeat with: test_ops -o kv_store -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  kv_store case %u (%s)  error: %s\n", ci, k->note, ms_strerror(rc));
        rc = 1;
    }
out:
    ms_vk_buf_free(vk, &sb);
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &rg.buf);
    ms_free(src);
    ms_free(ring);
    ms_free(ref);
    ms_free(gpu);
    return rc < 0 ? 1 : rc;
}

const ops_family ops_fam_kv_store = {"kv_store", (uint32_t)N_KVS, kvs_describe, kvs_run};
