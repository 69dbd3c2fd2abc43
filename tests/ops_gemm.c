/* tests/ops_gemm.c — the op family `gemm`: ms_vk_rec_gemm (shaders/gemm.comp) against ms_ref_gemv
 * (engine/ref/gemv.c, double sums over exactly decoded weights), and the tune table that
 * `test_ops --perf -o gemm --sweep` measures.
 *
 * Each case makes a random weight and n tokens of x, runs the GEMM into a guarded output (guard
 * words around the range, stride padding between tokens untouched) and compares with the NMSE and
 * NaN/Inf parity of the GEMV cases. Shapes: every encoding at tiny and awkward sizes (m, k not
 * multiples of the tiles, n from 1 to 1024), weights split into parts, padded strides, NaN/Inf,
 * and real V4-Flash / V4-Pro projections at n 16 and 32. SP_TUNES cases run the tunes of
 * ops_gemm_tunes (the candidates a device default is picked from; each on one encoding, every one on
 * every encoding with test_ops --exhaustive), so each is checked on lavapipe too, K slices and
 * 8 x 8 invocation tiles included.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/ref/ref.h"
#include "engine/vk/vk.h"
#include "tests/ops_util.h"

/* As the GEMV (tests/test_ops.c TOL_NMSE_GEMV): weights decode exactly on both sides, so only the F32
 * summation differs from the reference's double sums. Each output is one F32 sum along K (per K
 * slice), so the error grows with K faster than the GEMV's lane partials: observed up to 5e-12 at
 * K 16384 and 8e-12 at K 28672 on lavapipe, 1e-14..1.3e-12 on an H200 (K <= 1004). A wrong scale
 * block, row, token or tile gives > 1e-3. */
#define TOL_NMSE_GEMM 1e-9

/* The tune candidates: all fit 32 KiB of shared memory and 1024 invocations. Tiles of 8 x 4 and more per
 * invocation unroll 4 k steps at a time: fully unrolled, a 128 x 128 x 16 tile of 8 x 8 took ~55 s to
 * become a pipeline on the H200's driver (580.159.04; 4 x 4 tiles took under 2 s). */
#define T(bm, bn, bk, tm, tn, ks) {bm, bn, bk, (bm / tm) * (bn / tn) * ks, tm, tn, tm * tn > 16 ? 4 : 0}
const ms_vk_gemm_tune ops_gemm_tunes[] = {
    /* 4 x 4 per invocation, small tiles and K slices first: they compile fast everywhere */
    T(32, 32, 32, 4, 4, 1), T(32, 32, 32, 4, 4, 4), T(32, 32, 64, 4, 4, 8), T(32, 64, 64, 4, 4, 8),
    T(64, 32, 64, 4, 4, 8), T(64, 64, 16, 4, 4, 1), T(64, 64, 32, 4, 4, 1), T(64, 64, 32, 4, 4, 2),
    T(64, 64, 32, 4, 4, 4), T(64, 32, 32, 4, 4, 2), T(128, 64, 32, 4, 4, 1), T(128, 128, 16, 4, 4, 1),
    T(128, 128, 32, 4, 4, 1),
    /* 8 x 4, 4 x 8 */
    T(128, 32, 32, 8, 4, 2), T(128, 64, 32, 8, 4, 1), T(64, 128, 32, 4, 8, 1), T(128, 128, 16, 8, 4, 1),
    /* 8 x 8 */
    T(32, 64, 32, 8, 8, 8), T(64, 64, 32, 8, 8, 4), T(64, 64, 64, 8, 8, 4), T(64, 64, 32, 8, 8, 8),
    T(64, 64, 64, 8, 8, 8), T(128, 64, 16, 8, 8, 1), T(128, 64, 32, 8, 8, 1), T(128, 64, 32, 8, 8, 2),
    T(64, 128, 32, 8, 8, 2), T(128, 128, 16, 8, 8, 1), T(128, 128, 32, 8, 8, 1), T(256, 64, 16, 8, 8, 1),
    T(256, 128, 16, 8, 8, 1), T(128, 256, 16, 8, 8, 1),
};
#undef T
const uint32_t ops_gemm_n_tunes = sizeof ops_gemm_tunes / sizeof ops_gemm_tunes[0];

enum {
    SP_NAN = 1,    /* NaN/Inf activations and NaN weight codes */
    SP_TUNES = 2,  /* every tune of ops_gemm_tunes, not only the default */
    SP_ERRORS = 4, /* the refusals, no data */
};

typedef struct gemm_case {
    ms_wenc enc;
    uint32_t m, k, n;
    uint32_t pad_x, pad_y; /* extra floats per token in x and y */
    uint64_t max_part;     /* force parts of at most this many bytes (0 = device limits) */
    uint32_t special;
    const char *note;
} gemm_case;

#define F32 MS_WENC_F32
#define BF16 MS_WENC_BF16
#define FP8 MS_WENC_FP8
#define FP4 MS_WENC_FP4
static const gemm_case k_cases[] = {
    /* tiny and awkward: m, k not multiples of the tiles (k only of the 16-byte chunk), n 1 .. 1024 */
    {F32, 1, 4, 1, 0, 0, 0, 0, "the smallest"},
    {F32, 7, 100, 9, 3, 1, 0, 0, "odd x stride: scalar x loads"},
    {F32, 33, 52, 63, 0, 0, 0, 0, NULL},
    {F32, 130, 1004, 65, 4, 5, 0, 0, NULL},
    {F32, 65, 260, 512, 0, 3, 0, 0, NULL},
    {BF16, 1, 8, 1, 0, 0, 0, 0, NULL},
    {BF16, 33, 1000, 7, 0, 0, 0, 0, NULL},
    {BF16, 129, 264, 64, 8, 2, 0, 0, NULL},
    {BF16, 257, 520, 200, 0, 0, 0, 0, NULL},
    {FP8, 1, 16, 1, 0, 0, 0, 0, NULL},
    {FP8, 129, 4112, 9, 0, 0, 0, 0, "k not a multiple of the 128-wide scale blocks"},
    {FP8, 257, 144, 63, 5, 0, 0, 0, NULL},
    {FP8, 1000, 1040, 65, 0, 7, 0, 0, NULL},
    {FP8, 200, 400, 512, 0, 0, 0, 0, NULL},
    {FP8, 96, 160, 1024, 4, 4, 0, 0, "n 1024"},
    {FP4, 1, 32, 1, 0, 0, 0, 0, NULL},
    {FP4, 3, 96, 7, 0, 0, 0, 0, NULL},
    {FP4, 129, 3104, 64, 0, 0, 0, 0, NULL},
    {FP4, 300, 4128, 9, 1, 0, 0, 0, NULL},
    {FP4, 100, 320, 200, 0, 0, 0, 0, NULL},
    /* every tune candidate: several K tiles, partial row and token tiles */
    {FP8, 200, 400, 77, 0, 0, 0, SP_TUNES, "all tunes"},
    {BF16, 136, 264, 65, 0, 2, 0, SP_TUNES, "all tunes"},
    {F32, 70, 132, 33, 1, 0, 0, SP_TUNES, "all tunes, scalar x loads"},
    {FP4, 130, 320, 40, 0, 0, 0, SP_TUNES, "all tunes"},
    /* parts: rows split at multiples of 128, strides padded */
    {FP4, 1000, 4096, 65, 5, 3, 256 * 1024, 0, "split into 256 KiB parts"},
    {FP8, 1000, 2064, 33, 3, 1, 512 * 1024, 0, "split into 512 KiB parts"},
    {BF16, 700, 1024, 9, 1, 0, 256 * 1024, 0, "split into 256 KiB parts"},
    {F32, 300, 1024, 64, 0, 8, 512 * 1024, 0, "split into 512 KiB parts"},
    /* NaN/Inf parity: NaN and Inf activations, NaN weight codes (e4m3 0x7F, e8m0 0xFF, bf16 NaN) */
    {F32, 200, 1024, 9, 0, 0, 0, SP_NAN, "NaN/Inf"},
    {BF16, 200, 1024, 9, 0, 0, 0, SP_NAN, "NaN/Inf"},
    {FP8, 200, 1024, 65, 0, 0, 0, SP_NAN, "NaN/Inf"},
    {FP4, 200, 1024, 65, 0, 0, 0, SP_NAN, "NaN/Inf"},
    /* real projections (V4_SPEC §1): V4-Flash dim 4096, V4-Pro dim 7168 */
    {FP8, 1024, 4096, 32, 0, 0, 0, 0, "V4-Flash attn.wq_a [q_lora_rank x dim]"},
    {FP8, 512, 4096, 32, 0, 0, 0, 0, "V4-Flash attn.wkv [head_dim x dim]"},
    {FP8, 4096, 8192, 16, 0, 0, 0, 0, "V4-Flash attn.wo_b [dim x o_groups*o_lora_rank]"},
    {BF16, 1024, 4096, 32, 0, 0, 0, 0, "V4-Flash compressor wkv (ratio 4, 2 x head_dim)"},
    {F32, 24, 16384, 32, 0, 0, 0, 0, "V4-Flash hc_attn_fn [(2+hc)*hc x hc*dim]"},
    {FP4, 2048, 4096, 32, 0, 0, 0, 0, "V4-Flash routed expert w1/w3"},
    {FP8, 1536, 7168, 16, 0, 0, 0, 0, "V4-Pro attn.wq_a"},
    {FP8, 512, 7168, 32, 0, 0, 0, 0, "V4-Pro attn.wkv"},
    {FP8, 7168, 16384, 16, 0, 0, 0, 0, "V4-Pro attn.wo_b"},
    {BF16, 1024, 7168, 16, 0, 0, 0, 0, "V4-Pro compressor wkv (ratio 4)"},
    {F32, 24, 28672, 16, 0, 0, 0, 0, "V4-Pro hc_ffn_fn"},
    {FP4, 7168, 3072, 16, 0, 0, 0, 0, "V4-Pro routed expert w2"},
    {FP8, 64, 128, 1, 0, 0, 0, SP_ERRORS, "refusals: n 0, ranges, strides, tunes, device limits"},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static const char *const k_names[MS_WENC_COUNT] = {"gemm_f32", "gemm_bf16", "gemm_fp8", "gemm_fp4"};

static void describe(uint32_t i, char *buf, size_t len) {
    const gemm_case *t = &k_cases[i];
    snprintf(buf, len, "%s m=%u k=%u n=%u pad=%u/%u%s%s", ms_wenc_name(t->enc), t->m, t->k, t->n, t->pad_x,
             t->pad_y, t->note ? "  # " : "", t->note ? t->note : "");
}

static uint32_t chunk_elems(ms_wenc enc) { return enc == F32 ? 4 : enc == BF16 ? 8 : enc == FP8 ? 16 : 32; }

static void tune_str(const ms_vk_gemm_tune *t, char *buf, size_t len) {
    snprintf(buf, len, "%ux%ux%u/%ux%u/%u%s", t->tile_rows, t->tile_tokens, t->tile_k, t->rows_per_inv,
             t->tokens_per_inv, t->wg_size, t->k_unroll ? (t->k_unroll == 4 ? " u4" : " u*") : "");
}

/* ---------------------------------------------------------------- refusals */

static int run_errors(ms_vk *vk, ms_vk_cmd *cmd, int verbose) {
    int fails = 0;
#define EXPECT(cond, what)                          \
    do {                                            \
        if (!(cond)) {                              \
            printf("  FAIL: gemm: %s\n", what);     \
            fails++;                                \
        }                                           \
    } while (0)
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    uint8_t d[64 * 128] = {0}, s[4] = {127, 127, 127, 127};
    const ms_weight_view view = {FP8, 64, 128, d, s};
    ms_vk_weight w;
    ms_vk_buf xb = {0}, yb = {0};
    int rc = ms_vk_weight_upload(vk, &view, 0, &w);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4096, &xb);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 4096, &yb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (rc) {
        printf("  FAIL: gemm: setup for the refusals: %s\n", ms_strerror(rc));
        ms_vk_weight_free(vk, &w);
        ms_vk_buf_free(vk, &xb);
        ms_vk_buf_free(vk, &yb);
        return 1;
    }
    const ms_vk_range x = ms_vk_buf_range(&xb, 0, 4096), y = ms_vk_buf_range(&yb, 0, 4096);
    EXPECT(ms_vk_rec_gemm(cmd, &w, x, 128, y, 64, 0, NULL) == -MS_E_INVALID_ARG, "n 0 not refused");
    EXPECT(ms_vk_rec_gemm(cmd, &w, x, 128, y, 64, 9, NULL) == -MS_E_INVALID_ARG,
           "an x range too small for 9 tokens not refused");
    EXPECT(ms_vk_rec_gemm(cmd, &w, x, 128, ms_vk_buf_range(&yb, 0, 256), 64, 2, NULL) == -MS_E_INVALID_ARG,
           "a y range too small for 2 tokens not refused");
    EXPECT(ms_vk_rec_gemm(cmd, &w, x, 64, y, 64, 1, NULL) == -MS_E_INVALID_ARG, "x_stride < k not refused");
    EXPECT(ms_vk_rec_gemm(cmd, &w, x, 128, y, 32, 1, NULL) == -MS_E_INVALID_ARG, "y_stride < m not refused");
    ms_vk_range big = x;
    big.size = caps->max_storage_buffer_range + 16; /* never bound: refused first */
    EXPECT(ms_vk_rec_gemm(cmd, &w, big, 128, y, 64, 1, NULL) == -MS_E_UNSUPPORTED,
           "an x range over maxStorageBufferRange not refused");
    static const struct {
        ms_vk_gemm_tune t;
        int rc;
        const char *what;
    } tunes[] = {
        {{64, 64, 32, 0, 3, 4, 0}, -MS_E_INVALID_ARG, "3 rows per invocation not refused"},
        {{64, 64, 32, 0, 4, 4, 3}, -MS_E_INVALID_ARG, "k_unroll 3 not refused"},
        {{64, 64, 32, 0, 4, 4, 64}, -MS_E_INVALID_ARG, "k_unroll 64 > tile_k 32 not refused"},
        {{64, 64, 32, 0, 2, 4, 0}, -MS_E_INVALID_ARG, "2 rows per invocation not refused"},
        {{48, 64, 32, 0, 4, 4, 0}, -MS_E_INVALID_ARG, "a 48-row tile not refused"},
        {{64, 64, 8, 0, 4, 4, 0}, -MS_E_INVALID_ARG, "tile_k 8 for FP8 (16 per chunk) not refused"},
        {{64, 64, 32, 128, 4, 4, 0}, -MS_E_INVALID_ARG, "128 invocations for a 256-invocation tile not refused"},
        {{64, 64, 32, 384, 4, 4, 0}, -MS_E_INVALID_ARG, "a non-power-of-two workgroup not refused"},
        {{32, 32, 16, 64 * 32, 4, 4, 0}, -MS_E_INVALID_ARG, "more K slices than tile_k not refused"},
        {{256, 256, 64, 1024, 8, 8, 0}, -MS_E_UNSUPPORTED, "128 KiB of shared memory not refused"},
        {{256, 256, 16, 4096, 4, 4, 0}, -MS_E_UNSUPPORTED, "4096 invocations not refused"},
    };
    for (size_t i = 0; i < sizeof tunes / sizeof tunes[0]; i++)
        EXPECT(ms_vk_rec_gemm(cmd, &w, x, 128, y, 64, 4, &tunes[i].t) == tunes[i].rc, tunes[i].what);
    ms_vk_cmd_counts counts;
    ms_vk_cmd_get_counts(cmd, &counts);
    EXPECT(counts.dispatches == 0, "a refused call recorded a dispatch");
    ms_vk_cmd_end(cmd);
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &yb);
    if (fails || verbose) printf("  gemm      refusals: %s\n", fails ? "FAIL" : "ok");
#undef EXPECT
    return fails ? 1 : 0;
}

/* ---------------------------------------------------------------- cases */

/* One GEMM with `tune` (NULL: the default) into a fresh guarded output, compared with yr.
 * 0 ok, 1 mismatch, or a negative status. */
static int run_tune(ms_vk *vk, ms_vk_cmd *cmd, const gemm_case *t, const ms_vk_weight *w, const ms_vk_buf *xb,
                    uint32_t xs, uint32_t ys, const float *yr, float *yg, const ms_vk_gemm_tune *tune,
                    uint64_t seed, int verbose, double *nmse) {
    const uint32_t m = t->m, n = t->n;
    guarded yb = {0};
    int rc = guarded_alloc(vk, (uint64_t)n * ys * 4, &yb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_gemm(cmd, w, ms_vk_buf_range(xb, 0, ((uint64_t)(n - 1) * xs + t->k) * 4), xs,
                            guarded_range(&yb), ys, n, tune);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t damaged = 0;
    if (!rc) rc = guarded_read(vk, &yb, yg, &damaged);
    ms_vk_buf_free(vk, &yb.buf);
    if (rc) return rc;
    cmp_result cr;
    compare(yg, yr, m, n, ys, &cr);
    for (uint32_t c = 0; c < n; c++) /* the padding between tokens must be untouched */
        for (uint32_t i = m; i < ys; i++) {
            uint32_t bits;
            memcpy(&bits, &yg[(size_t)c * ys + i], 4);
            damaged += bits != GUARD_WORD;
        }
    const int ok = cr.nmse <= TOL_NMSE_GEMM && cr.n_nonfinite_mismatch == 0 && damaged == 0;
    *nmse = cr.nmse;
    if (!ok || verbose) {
        ms_vk_gemm_tune used;
        if (tune)
            used = *tune;
        else
            ms_vk_gemm_tune_default(vk, t->enc, m, t->k, n, &used);
        char ts[48];
        tune_str(&used, ts, sizeof ts);
        printf("  %-9s %6ux%-6u n=%-4u tune %-18s parts=%u  nmse=%.2e (tol %.0e) nan=%llu inf=%llu "
               "nonfinite_mismatch=%llu guard_damage=%llu  %s%s%s\n",
               k_names[t->enc], m, t->k, n, ts, w->n_parts, cr.nmse, TOL_NMSE_GEMM, (unsigned long long)cr.n_nan,
               (unsigned long long)cr.n_inf, (unsigned long long)cr.n_nonfinite_mismatch,
               (unsigned long long)damaged, ok ? "ok" : "FAIL", t->note ? "  # " : "", t->note ? t->note : "");
    }
    if (!ok && cr.first_bad != UINT64_MAX)
        printf("    first non-finite mismatch at token %llu row %llu: gpu %g ref %g\n",
               (unsigned long long)(cr.first_bad / ys), (unsigned long long)(cr.first_bad % ys), yg[cr.first_bad],
               yr[cr.first_bad]);
    if (!ok) printf("    repeat with: test_ops -o gemm -s %llu\n", (unsigned long long)seed);
    return ok ? 0 : 1;
}

static int run_case(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    const gemm_case *t = &k_cases[ci];
    if (t->special & SP_ERRORS) return run_errors(vk, cmd, verbose);
    const uint32_t m = t->m, k = t->k, n = t->n, xs = k + t->pad_x, ys = m + t->pad_y;
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t wbytes = ms_wenc_data_bytes(t->enc, m, k) + ms_wenc_scale_bytes(t->enc, m, k);
    if ((double)wbytes > 0.75 * (double)caps->device_local_bytes) {
        printf("  %-9s %6ux%-6u n=%u  not run: the weight exceeds 3/4 of this device's memory\n", k_names[t->enc], m,
               k, n);
        return 0;
    }
    void *wd = NULL;
    uint8_t *ws = NULL;
    float *x = ms_malloc((size_t)n * xs * 4), *yr = ms_malloc((size_t)n * ys * 4), *yg = ms_malloc((size_t)n * ys * 4);
    int rc = (x && yr && yg) ? make_weight(t->enc, m, k, &wd, &ws) : -MS_E_NOMEM;
    ms_vk_weight w;
    memset(&w, 0, sizeof w);
    ms_vk_buf xb = {0};
    int fails = 0;
    if (rc) goto out;
    for (size_t i = 0; i < (size_t)n * xs; i++) x[i] = rng_uniform();
    if (t->special & SP_NAN) {
        x[5] = NAN;                                            /* token 0: NaN everywhere */
        if (n > 1) x[(size_t)xs + 7] = INFINITY;               /* token 1: +Inf times mixed signs */
        if (n > 64) x[(size_t)64 * xs + 3] = -INFINITY;        /* a token of the second token tile */
        if (t->enc == FP8) ((uint8_t *)wd)[(size_t)3 * k + 9] = 0x7F;      /* row 3 NaN */
        if (t->enc == FP8) ((uint8_t *)wd)[(size_t)130 * k + 600] = 0xFF;  /* row 130 NaN */
        if (t->enc == FP4) ws[(size_t)4 * (k / 32) + 1] = 0xFF;            /* row 4 NaN */
        if (t->enc == BF16) ((uint16_t *)wd)[(size_t)5 * k] = 0x7FC0;      /* row 5 NaN */
        if (t->enc == F32) ((float *)wd)[(size_t)6 * k + 2] = -INFINITY;   /* row 6 */
    }
    const ms_weight_view view = {t->enc, m, k, wd, ws};
    ms_ref_gemv(&view, x, xs, yr, ys, n);
    rc = ms_vk_weight_upload(vk, &view, t->max_part, &w);
    if (!rc) rc = upload_new(vk, x, (uint64_t)n * xs * 4, &xb);
    if (rc) goto out;
    double nmse = 0;
    if (!(t->special & SP_TUNES)) {
        rc = run_tune(vk, cmd, t, &w, &xb, xs, ys, yr, yg, NULL, seed, verbose, &nmse);
        if (rc > 0) fails += rc, rc = 0;
        goto out;
    }
    double worst = 0;
    uint32_t ran = 0, skipped = 0;
    for (uint32_t i = 0; i < ops_gemm_n_tunes && !rc; i++) {
        const ms_vk_gemm_tune *tu = &ops_gemm_tunes[i];
        if (tu->tile_k < chunk_elems(t->enc)) continue; /* a K tile below one 16-byte chunk: not a tune for it */
        /* Each tune on one encoding (round robin; FP8 for those FP4 cannot take), all with --exhaustive:
         * the decoders and the tile mappings are independent, and lavapipe's compile time adds up. */
        ms_wenc owner = (ms_wenc)(i % MS_WENC_COUNT);
        if (tu->tile_k < chunk_elems(owner)) owner = FP8;
        if (!ops_exhaustive && owner != t->enc) continue;
        rc = run_tune(vk, cmd, t, &w, &xb, xs, ys, yr, yg, tu, seed, 0, &nmse);
        if (rc == -MS_E_UNSUPPORTED) { /* over this device's limits (logged) */
            skipped++;
            rc = 0;
            continue;
        }
        if (rc > 0) fails++, rc = 0;
        if (nmse > worst) worst = nmse;
        ran++;
    }
    if (!rc && (verbose || fails))
        printf("  %-9s %6ux%-6u n=%-4u %u tunes%s (%u over this device's limits)  worst nmse=%.2e (tol %.0e)  "
               "%s%s%s\n",
               k_names[t->enc], m, k, n, ran, ops_exhaustive ? "" : " of this encoding's share", skipped, worst,
               TOL_NMSE_GEMM, fails ? "FAIL" : "ok",
               t->note ? "  # " : "", t->note ? t->note : "");
out:
    if (rc) {
        printf("  %-9s %6ux%-6u n=%u  error: %s\n", k_names[t->enc], m, k, n, ms_strerror(rc));
        fails++;
    }
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
    ms_free(wd);
    ms_free(ws);
    ms_free(x);
    ms_free(yr);
    ms_free(yg);
    return fails ? 1 : 0;
}

const ops_family ops_fam_gemm = {"gemm", (uint32_t)N_CASES, describe, run_case};
