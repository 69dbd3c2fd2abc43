/* test_ops — every Vulkan op against its CPU reference (engine/ref), in the manner of ggml's
 * test-backend-ops: a table of {op, shape, encoding, params}, seeded random inputs (the seed is
 * printed and -s repeats a run), NaN/Inf parity, guard words before, between and after every GPU
 * output, and a normalised mean squared error under a named per-op tolerance.
 *
 * usage: test_ops [-o OP] [-s SEED] [-q (print failures only)] [--list] [--exhaustive] [--perf [--peak GBPS]
 *                  [--perf-bytes BYTES] [--wg N --rows N --unroll N --sg N] [--sweep FILE] [--gemm-sweep]
 *                  [--gemm-shape ENC:MxK]]
 * --perf also measures the moe stages and runs --sweep files (tests/ops_perf.c).
 * Exit: 0 pass, 1 fail, 77 no Vulkan device, 2 bad usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "common/timer.h"
#include "engine/ref/ref.h"
#include "engine/vk/vk.h"
#include "tools/env.h"
#include "tests/ops_util.h"
#include "tests/ops_perf.h"

/* Tolerances: NMSE of the GPU result against the reference (which decodes exactly and sums in
 * double). Weights decode exactly on both sides, so only F32 summation order differs; the error
 * grows like K * eps^2. Observed on lavapipe and on an NVIDIA H200 (see docs/testing.md):
 * GEMV worst ~1e-13 (K = 16384), RMSNorm ~1e-14. The margins leave room for other summation
 * orders (other subgroup sizes) without hiding a wrong scale or a misplaced block, which give
 * NMSE > 1e-3. */
#define TOL_NMSE_GEMV 1e-9
#define TOL_NMSE_RMSNORM 1e-10
/* mHC: the GPU runs the sigmoids, softmax and Sinkhorn iterations in F32 where the reference uses
 * double; observed NMSE ~1e-14 (lavapipe); a wrong stream index or a missed normalisation gives
 * > 1e-3. */
#define TOL_NMSE_HC 1e-9
/* RoPE: cos/sin are F32 on both sides; the GPU rounds -b*s before its FMA, the reference sums in
 * double: ~1 ulp per element, NMSE ~1e-15. */
#define TOL_NMSE_ROPE 1e-12
/* The Hadamard rotation: F32 butterflies on the GPU, double in the reference; up to log2(n)
 * roundings per element, NMSE ~1e-14. The rounding itself (e4m3 / e2m1) is exact: required equal. */
#define TOL_NMSE_HADAMARD 1e-11
/* Router weights: F32 softplus/sqrt/sum on the GPU, double in the reference: a few ulps. The picks
 * must be the same, except where two candidates' values lie within TOL_ROUTER_TIE (relative) of
 * each other, where F32 and double may order them differently (counted and printed). */
#define TOL_NMSE_ROUTER 1e-12
#define TOL_ROUTER_TIE 1e-6
/* SwiGLU: F32 exp and products on the GPU, double in the reference: ~2 ulps, NMSE ~1e-15. */
#define TOL_NMSE_SWIGLU 1e-12

#define MAX_N 8

typedef enum op_kind { OP_GEMV, OP_RMSNORM, OP_HC_PRE, OP_HC_HEAD, OP_HC_POST, OP_HC_EMBED, OP_ROPE, OP_FQ, OP_ROUTER, OP_SWIGLU } op_kind;

typedef struct test_case {
    op_kind op;
    ms_wenc enc;          /* GEMV weight encoding; RMSNorm weight encoding (F32/BF16) */
    uint32_t m, k, n;     /* GEMV: rows, cols, activation columns. RMSNorm: n rows of dim k */
    uint32_t pad;         /* extra elements per activation/output column (strides) */
    uint64_t max_part;    /* force splitting into parts of at most this many bytes (0 = device) */
    int special;          /* inject NaN/Inf into activations and NaN codes into weights */
    const char *note;
} test_case;

#define G(enc, m, k, n) {OP_GEMV, MS_WENC_##enc, m, k, n, 0, 0, 0, NULL}
#define GN(enc, m, k, n, note) {OP_GEMV, MS_WENC_##enc, m, k, n, 0, 0, 0, note}

static const test_case k_cases[] = {
    /* Real DeepSeek-V4 projection shapes (V4_SPEC §2.2). */
    GN(FP4, 3072, 7168, 1, "V4-Pro routed expert w1/w3"),
    GN(FP4, 7168, 3072, 2, "V4-Pro routed expert w2"),
    GN(FP4, 2048, 4096, 8, "V4-Flash routed expert w1/w3"),
    GN(FP4, 4096, 2048, 3, "V4-Flash routed expert w2"),
    GN(FP8, 1536, 7168, 1, "V4-Pro attn.wq_a"),
    GN(FP8, 7168, 16384, 1, "V4-Pro attn.wo_b"),
    GN(FP8, 65536, 1536, 1, "V4-Pro attn.wq_b"),
    GN(FP8, 3072, 7168, 4, "V4-Pro shared expert w1/w3"),
    GN(FP8, 7168, 3072, 5, "V4-Pro shared expert w2"),
    GN(FP8, 512, 7168, 6, "V4-Pro attn.wkv"),
    GN(BF16, 384, 7168, 1, "V4-Pro ffn.gate"),
    GN(BF16, 1024, 4096, 7, "V4-Flash compressor wkv (ratio 4)"),
    GN(BF16, 129280, 4096, 1, "V4-Flash head (split on small binding limits)"),
    GN(BF16, 129280, 7168, 1, "V4-Pro head (where memory allows)"),
    GN(F32, 40000, 1024, 2, "F32 larger than 128 MiB (split on lavapipe)"),
    GN(F32, 24, 16384, 1, "V4-Flash hc_attn_fn"),
    /* Awkward shapes: rows not a multiple of any workgroup, K not a multiple of 128. */
    G(FP4, 1, 32, 1),
    G(FP4, 3, 96, 8),
    G(FP4, 129, 3104, 2),
    G(FP4, 1000, 4128, 1),
    G(FP8, 1, 16, 1),
    G(FP8, 129, 4112, 3),
    G(FP8, 1000, 1040, 8),
    G(FP8, 257, 144, 2),
    G(BF16, 1, 8, 1),
    G(BF16, 1000, 1000, 4),
    G(BF16, 33, 4104, 8),
    G(F32, 1, 4, 1),
    G(F32, 1001, 1004, 2),
    G(F32, 7, 100, 7),
    /* Forced splitting into parts of a few rows; strides padded. */
    {OP_GEMV, MS_WENC_FP4, 1000, 4096, 2, 5, 256 * 1024, 0, "FP4 split into 256 KiB parts"},
    {OP_GEMV, MS_WENC_FP8, 1000, 2064, 3, 3, 512 * 1024, 0, "FP8 split into 512 KiB parts"},
    {OP_GEMV, MS_WENC_BF16, 700, 1024, 1, 1, 256 * 1024, 0, "BF16 split into 256 KiB parts"},
    {OP_GEMV, MS_WENC_F32, 300, 1024, 4, 7, 512 * 1024, 0, "F32 split into 512 KiB parts"},
    /* NaN/Inf parity: NaN and Inf activations, NaN weight codes (e4m3 0x7F, e8m0 0xFF). */
    {OP_GEMV, MS_WENC_FP4, 200, 1024, 3, 0, 0, 1, "NaN/Inf"},
    {OP_GEMV, MS_WENC_FP8, 200, 1024, 3, 0, 0, 1, "NaN/Inf"},
    {OP_GEMV, MS_WENC_BF16, 200, 1024, 3, 0, 0, 1, "NaN/Inf"},
    {OP_GEMV, MS_WENC_F32, 200, 1024, 3, 0, 0, 1, "NaN/Inf"},
    /* RMSNorm: n rows of dim k. */
    {OP_RMSNORM, MS_WENC_BF16, 0, 7168, 1, 0, 0, 0, "V4-Pro attn_norm"},
    {OP_RMSNORM, MS_WENC_BF16, 0, 1536, 5, 0, 0, 0, "V4-Pro q_norm"},
    {OP_RMSNORM, MS_WENC_F32, 0, 512, 8, 0, 0, 0, "kv_norm"},
    {OP_RMSNORM, MS_WENC_F32, 0, 1, 3, 0, 0, 0, NULL},
    {OP_RMSNORM, MS_WENC_F32, 0, 1001, 2, 0, 0, 0, NULL},
    {OP_RMSNORM, MS_WENC_BF16, 0, 4096, 4, 0, 0, 1, "NaN/Inf"},
    /* mHC: m = hc streams, k = dim, n = tokens, pad = Sinkhorn iterations. */
    {OP_HC_PRE, MS_WENC_F32, 4, 7168, 1, 20, 0, 0, "V4-Pro hc_attn (decode)"},
    {OP_HC_PRE, MS_WENC_F32, 4, 4096, 16, 20, 0, 0, "V4-Flash hc_ffn (prefill sub-batch)"},
    {OP_HC_PRE, MS_WENC_F32, 2, 64, 3, 3, 0, 0, "tiny"},
    {OP_HC_PRE, MS_WENC_F32, 16, 100, 2, 5, 0, 0, "hc 16 (the bound)"},
    {OP_HC_PRE, MS_WENC_F32, 4, 512, 2, 20, 0, 1, "NaN/Inf"},
    /* special bit 2: the sub-layer's RMSNorm fused in (BF16 weight) */
    {OP_HC_PRE, MS_WENC_F32, 4, 4096, 1, 20, 0, 2, "V4-Flash hc_attn + attn_norm (decode)"},
    {OP_HC_PRE, MS_WENC_F32, 4, 7168, 3, 20, 0, 2, "V4-Pro hc_ffn + ffn_norm"},
    {OP_HC_PRE, MS_WENC_F32, 3, 100, 5, 4, 0, 2, "odd dim + norm"},
    {OP_HC_PRE, MS_WENC_F32, 4, 512, 2, 20, 0, 3, "NaN/Inf + norm"},
    {OP_HC_HEAD, MS_WENC_F32, 4, 7168, 1, 0, 0, 0, "V4-Pro hc_head"},
    {OP_HC_HEAD, MS_WENC_F32, 4, 4096, 9, 0, 0, 0, "V4-Flash hc_head, prefill"},
    {OP_HC_POST, MS_WENC_F32, 4, 7168, 1, 0, 0, 0, "V4-Pro (decode)"},
    {OP_HC_POST, MS_WENC_F32, 4, 4096, 16, 0, 0, 0, "V4-Flash (prefill sub-batch)"},
    {OP_HC_POST, MS_WENC_F32, 3, 77, 5, 0, 0, 0, NULL},
    {OP_HC_POST, MS_WENC_F32, 4, 512, 2, 0, 0, 1, "NaN/Inf"},
    /* embedding into the streams: m = hc, k = dim, n = tokens, pad = vocab */
    {OP_HC_EMBED, MS_WENC_BF16, 4, 7168, 1, 300, 0, 0, "V4-Pro dim (decode)"},
    {OP_HC_EMBED, MS_WENC_BF16, 4, 4096, 16, 1000, 0, 0, "V4-Flash dim (prefill sub-batch)"},
    {OP_HC_EMBED, MS_WENC_BF16, 3, 33, 5, 7, 0, 1, "a token id >= vocab gives NaN rows"},
    /* RoPE: m = heads, k = head_dim, n = tokens, pad = rope_dim; special bit 1 RMS, bit 2
     * inverse, bit 4 NaN; the rotated part is the last rope_dim dims (V4), positions near 10^6 */
    {OP_ROPE, MS_WENC_F32, 128, 512, 1, 64, 0, 1, "V4-Pro queries: per-head RMS + RoPE"},
    {OP_ROPE, MS_WENC_F32, 64, 512, 16, 64, 0, 1, "V4-Flash queries, prefill sub-batch"},
    {OP_ROPE, MS_WENC_F32, 1, 512, 16, 64, 0, 0, "the KV latent"},
    {OP_ROPE, MS_WENC_F32, 128, 512, 2, 64, 0, 2, "inverse on the attention output"},
    {OP_ROPE, MS_WENC_F32, 64, 128, 3, 64, 0, 0, "indexer queries"},
    {OP_ROPE, MS_WENC_F32, 3, 10, 2, 4, 0, 5, "NaN"},
    /* special bit 8: RMSNorm with a BF16 weight (kv_norm fused) */
    {OP_ROPE, MS_WENC_F32, 1, 512, 1, 64, 0, 9, "V4 KV latent: kv_norm + RoPE (decode)"},
    {OP_ROPE, MS_WENC_F32, 1, 512, 8, 64, 0, 9, "V4 KV latent: kv_norm + RoPE, 8 tokens"},
    {OP_ROPE, MS_WENC_F32, 3, 12, 2, 4, 0, 13, "weighted + NaN"},
    /* stored-value rounding: m = quant (0 none, 1 e4m3, 2 e2m1), k = len, n = rows, pad = stride
     * extra, special bit 1 Hadamard, bit 2 NaN and huge values */
    {OP_FQ, MS_WENC_F32, 1, 448, 16, 64, 0, 0, "KV latent e4m3 (nope dims of 512)"},
    {OP_FQ, MS_WENC_F32, 1, 448, 3, 64, 0, 2, "e4m3 with NaN, clamping and tiny blocks"},
    {OP_FQ, MS_WENC_F32, 2, 128, 64, 0, 0, 0, "indexer e2m1 (no rotation)"},
    {OP_FQ, MS_WENC_F32, 2, 128, 5, 0, 0, 2, "e2m1 with NaN, clamping and tiny blocks"},
    {OP_FQ, MS_WENC_F32, 0, 128, 64, 0, 0, 1, "Hadamard 128 (indexer heads)"},
    {OP_FQ, MS_WENC_F32, 0, 4096, 2, 3, 0, 1, "Hadamard 4096 (the bound)"},
    /* router: m = experts, k = top-k, n = tokens; special 1 hash routing, 2 NaN logits */
    {OP_ROUTER, MS_WENC_F32, 384, 6, 1, 0, 0, 0, "V4-Pro score routing (decode)"},
    {OP_ROUTER, MS_WENC_F32, 256, 6, 16, 0, 0, 0, "V4-Flash score routing (prefill sub-batch)"},
    {OP_ROUTER, MS_WENC_F32, 384, 6, 8, 0, 0, 1, "V4-Pro hash routing (layers 0-2)"},
    {OP_ROUTER, MS_WENC_F32, 1024, 64, 3, 0, 0, 0, "the bounds: 1024 experts, top 64"},
    {OP_ROUTER, MS_WENC_F32, 384, 6, 2, 0, 0, 4, "no renormalisation"},
    {OP_ROUTER, MS_WENC_F32, 8, 8, 2, 0, 0, 0, "k = E"},
    {OP_ROUTER, MS_WENC_F32, 64, 6, 2, 0, 0, 2, "NaN logits rank last"},
    /* SwiGLU: k = inter, n = rows, pad = stride extra; special 1: no clamp, 2: NaN */
    {OP_SWIGLU, MS_WENC_F32, 0, 3072, 6, 0, 0, 0, "V4-Pro experts, 6 tokens' rows"},
    {OP_SWIGLU, MS_WENC_F32, 0, 2048, 16, 5, 0, 0, "V4-Flash, strided rows"},
    {OP_SWIGLU, MS_WENC_F32, 0, 100, 3, 0, 0, 1, "swiglu_limit 0: no clamp"},
    {OP_SWIGLU, MS_WENC_F32, 0, 64, 2, 0, 0, 2, "NaN"},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static const char *op_name(const test_case *t) {
    if (t->op == OP_RMSNORM) return "rmsnorm";
    if (t->op == OP_HC_PRE || t->op == OP_HC_HEAD) return "hc_pre";
    if (t->op == OP_HC_POST) return "hc_post";
    if (t->op == OP_HC_EMBED) return "hc_embed";
    if (t->op == OP_ROPE) return "rope";
    if (t->op == OP_FQ) return "fq";
    if (t->op == OP_ROUTER) return "router";
    if (t->op == OP_SWIGLU) return "swiglu";
    switch (t->enc) {
    case MS_WENC_F32: return "gemv_f32";
    case MS_WENC_BF16: return "gemv_bf16";
    case MS_WENC_FP8: return "gemv_fp8";
    case MS_WENC_FP4: return "gemv_fp4";
    case MS_WENC_COUNT: break;
    }
    return "?";
}

/* ------------------------------------------------------------------ correctness */

static int run_gemv_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed, int verbose) {
    uint32_t m = t->m, k = t->k, n = t->n, xs = k + t->pad, ys = m + t->pad;
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    uint64_t wbytes = ms_wenc_data_bytes(t->enc, m, k) + ms_wenc_scale_bytes(t->enc, m, k);
    if ((double)wbytes > 0.75 * (double)caps->device_local_bytes) {
        printf("  %-9s %6ux%-6u n=%u  not run: %.2f GiB weight exceeds 3/4 of this device's %.2f GiB\n",
               op_name(t), m, k, n, (double)wbytes / (1u << 30),
               (double)caps->device_local_bytes / (1u << 30));
        return 0;
    }
    void *wd = NULL;
    uint8_t *ws = NULL;
    float *x = ms_malloc((size_t)n * xs * 4), *yr = ms_malloc((size_t)n * ys * 4),
          *yg = ms_malloc((size_t)n * ys * 4);
    int rc = (x && yr && yg) ? make_weight(t->enc, m, k, &wd, &ws) : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < (size_t)n * xs; i++) x[i] = rng_uniform();
    if (t->special) {
        x[5] = NAN;                                   /* column 0: NaN everywhere */
        if (n > 1) x[(size_t)xs + 7] = INFINITY;      /* column 1: +Inf times mixed signs */
        if (t->enc == MS_WENC_FP8) ((uint8_t *)wd)[(size_t)3 * k + 9] = 0x7F;   /* row 3 NaN */
        if (t->enc == MS_WENC_FP4) ws[(size_t)4 * (k / 32) + 1] = 0xFF;         /* row 4 NaN */
        if (t->enc == MS_WENC_BF16) ((uint16_t *)wd)[(size_t)5 * k] = 0x7FC0;   /* row 5 NaN */
        if (t->enc == MS_WENC_F32) ((float *)wd)[(size_t)6 * k + 2] = -INFINITY; /* row 6 */
    }
    ms_weight_view view = {t->enc, m, k, wd, ws};
    ms_ref_gemv(&view, x, xs, yr, ys, n);

    ms_vk_weight w;
    memset(&w, 0, sizeof w);
    ms_vk_buf xb = {0};
    rc = ms_vk_weight_upload(vk, &view, t->max_part, &w);
    if (!rc) rc = upload_new(vk, x, (uint64_t)n * xs * 4, &xb);
    int fails = 0;
    /* Both kernels (gemv_<enc> and gemv_tiled_<enc>) must match the reference on every case. */
    static const char *const kname[] = {"auto", "classic", "tiled"};
    for (uint32_t kern = MS_VK_GEMV_CLASSIC; kern <= MS_VK_GEMV_TILED && !rc; kern++) {
        ms_vk_gemv_tune tune = {0};
        tune.kernel = kern;
        guarded yb = {0};
        rc = guarded_alloc(vk, (uint64_t)n * ys * 4, &yb);
        if (!rc) rc = ms_vk_cmd_begin(cmd);
        if (!rc)
            rc = ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, (uint64_t)n * xs * 4), xs,
                                guarded_range(&yb), ys, n, &tune);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        if (!rc) rc = ms_vk_cmd_run(cmd);
        uint64_t damaged = 0;
        if (!rc) rc = guarded_read(vk, &yb, yg, &damaged);
        ms_vk_buf_free(vk, &yb.buf);
        if (rc) break;
        cmp_result cr;
        compare(yg, yr, m, n, ys, &cr);
        for (uint32_t c = 0; c < n; c++) /* stride padding between columns must be untouched */
            for (uint32_t i = m; i < ys; i++) {
                uint32_t bits;
                memcpy(&bits, &yg[(size_t)c * ys + i], 4);
                damaged += bits != GUARD_WORD;
            }
        int ok = cr.nmse <= TOL_NMSE_GEMV && cr.n_nonfinite_mismatch == 0 && damaged == 0;
        if (!ok || verbose)
            printf("  %-9s %6ux%-6u n=%u %-7s parts=%u  nmse=%.2e (tol %.0e) nan=%llu inf=%llu "
                   "nonfinite_mismatch=%llu guard_damage=%llu  %s%s%s\n",
                   op_name(t), m, k, n, kname[kern], w.n_parts, cr.nmse, TOL_NMSE_GEMV,
                   (unsigned long long)cr.n_nan, (unsigned long long)cr.n_inf,
                   (unsigned long long)cr.n_nonfinite_mismatch, (unsigned long long)damaged,
                   ok ? "ok" : "FAIL", t->note ? "  # " : "", t->note ? t->note : "");
        if (!ok && cr.first_bad != UINT64_MAX)
            printf("    first non-finite mismatch at column %llu row %llu: gpu %g ref %g\n",
                   (unsigned long long)(cr.first_bad / ys), (unsigned long long)(cr.first_bad % ys),
                   yg[cr.first_bad], yr[cr.first_bad]);
        if (!ok) printf("    repeat with: test_ops -o %s -s %llu\n", op_name(t), (unsigned long long)seed);
        fails += !ok;
    }
    if (rc) {
        printf("  %-9s %6ux%-6u n=%u  error: %s\n", op_name(t), m, k, n, ms_strerror(rc));
        fails++;
    }
    rc = fails ? 1 : 0;
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
out:
    ms_free(wd);
    ms_free(ws);
    ms_free(x);
    ms_free(yr);
    ms_free(yg);
    return rc < 0 ? 1 : rc;
}

static int run_rmsnorm_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed, int verbose) {
    uint32_t dim = t->k, rows = t->n;
    size_t nx = (size_t)dim * rows;
    float *x = ms_malloc(nx * 4), *yr = ms_malloc(nx * 4), *yg = ms_malloc(nx * 4);
    void *w = ms_malloc((size_t)dim * 4);
    int rc = (x && yr && yg && w) ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < nx; i++) x[i] = rng_uniform() * 3.0f;
    for (uint32_t i = 0; i < dim; i++) {
        float v = 1.0f + 0.5f * rng_uniform();
        if (t->enc == MS_WENC_BF16)
            ((uint16_t *)w)[i] = f32_to_bf16(v);
        else
            ((float *)w)[i] = v;
    }
    if (t->special) {
        x[3] = NAN;
        if (rows > 1) x[dim + 1] = INFINITY;
    }
    const float eps = 1e-6f;
    ms_ref_rmsnorm(x, w, t->enc, yr, dim, rows, eps);
    uint64_t wbytes = (uint64_t)dim * (t->enc == MS_WENC_BF16 ? 2 : 4);
    ms_vk_buf xb = {0}, wb = {0};
    guarded yb = {0};
    rc = upload_new(vk, x, nx * 4, &xb);
    if (!rc) rc = upload_new(vk, w, wbytes, &wb);
    if (!rc) rc = guarded_alloc(vk, nx * 4, &yb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_rmsnorm(cmd, ms_vk_buf_range(&xb, 0, nx * 4), ms_vk_buf_range(&wb, 0, wbytes),
                               t->enc, guarded_range(&yb), dim, rows, eps);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t damaged = 0;
    if (!rc) rc = guarded_read(vk, &yb, yg, &damaged);
    if (!rc) {
        cmp_result cr;
        compare(yg, yr, dim, rows, dim, &cr);
        int ok = cr.nmse <= TOL_NMSE_RMSNORM && cr.n_nonfinite_mismatch == 0 && damaged == 0;
        if (!ok || verbose)
            printf("  %-9s dim=%-6u rows=%u w=%s  nmse=%.2e (tol %.0e) nan=%llu nonfinite_mismatch=%llu "
                   "guard_damage=%llu  %s%s%s\n",
                   op_name(t), dim, rows, ms_wenc_name(t->enc), cr.nmse, TOL_NMSE_RMSNORM,
                   (unsigned long long)cr.n_nan, (unsigned long long)cr.n_nonfinite_mismatch,
                   (unsigned long long)damaged, ok ? "ok" : "FAIL", t->note ? "  # " : "",
                   t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o rmsnorm -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  rmsnorm dim=%u rows=%u  error: %s\n", dim, rows, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &wb);
    ms_vk_buf_free(vk, &yb.buf);
out:
    ms_free(x);
    ms_free(yr);
    ms_free(yg);
    ms_free(w);
    return rc < 0 ? 1 : rc;
}

/* mHC pre (block or head mode) or post: inputs as the forward pass sees them, every output
 * compared (pre: x, post and comb; head: x; post: h). */
static int run_hc_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed, int verbose) {
    const uint32_t hc = t->m, dim = t->k, n = t->n, iters = t->pad;
    const bool head = t->op == OP_HC_HEAD, post_op = t->op == OP_HC_POST;
    const uint32_t mix_n = head ? hc : (2 + hc) * hc;
    const size_t nh = (size_t)n * hc * dim, nx = (size_t)n * dim;
    /* outputs, each in its guarded buffer, compared as one array: pre: x | post | comb; head: x;
     * post: h */
    const size_t n_post = head || post_op ? 0 : (size_t)n * hc, n_comb = n_post * hc;
    const size_t n_x = post_op ? nh : nx, n_out = n_x + n_post + n_comb;
    float *h = ms_malloc(nh * 4), *mix = ms_malloc((size_t)n * mix_n * 4), *y = ms_malloc(nx * 4);
    float *pw = ms_malloc((size_t)n * hc * 4), *cw = ms_malloc((size_t)n * hc * hc * 4);
    float *ref = ms_malloc(n_out * 4), *gpu = ms_malloc(n_out * 4), scale[3], *base = ms_malloc(mix_n * 4);
    uint16_t *nw = ms_malloc((size_t)dim * 2);
    const bool fuse_norm = (t->special & 2) != 0;
    int rc = h && mix && y && pw && cw && ref && gpu && base && nw ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < nh; i++) h[i] = rng_uniform() * 2.0f;
    for (size_t i = 0; i < (size_t)n * mix_n; i++) mix[i] = rng_uniform() * 3.0f;
    for (size_t i = 0; i < nx; i++) y[i] = rng_uniform();
    for (int i = 0; i < 3; i++) scale[i] = 0.5f + 0.5f * rng_uniform();
    for (uint32_t i = 0; i < mix_n; i++) base[i] = rng_uniform();
    /* post inputs: weights like the ones hc_pre makes (positive, comb columns summing near 1) */
    for (size_t i = 0; i < (size_t)n * hc; i++) pw[i] = 1.0f + rng_uniform();
    for (size_t i = 0; i < (size_t)n * hc * hc; i++) cw[i] = (1.0f + rng_uniform()) / (float)hc;
    for (uint32_t i = 0; i < dim; i++) nw[i] = f32_to_bf16(1.0f + 0.5f * rng_uniform());
    if (t->special & 1) {
        h[7] = NAN;                          /* token 0: NaN everywhere downstream */
        if (n > 1) h[nh / n + 3] = INFINITY; /* token 1 */
        if (post_op) y[nx - 1] = NAN;
    }
    const double hc_eps = 1e-6, rms_eps = 1e-6;
    if (post_op)
        ms_ref_hc_post(y, h, pw, cw, dim, hc, n, ref);
    else
        ms_ref_hc_pre(mix, h, scale, base, dim, hc, n, iters, hc_eps, rms_eps, head, ref,
                      head ? NULL : ref + nx, head ? NULL : ref + nx + (size_t)n * hc);
    if (fuse_norm)
        ms_ref_rmsnorm(ref, nw, MS_WENC_BF16, ref, dim, n, (float)rms_eps);

    ms_vk_buf hb = {0}, mb = {0}, sb = {0}, bb = {0}, yb = {0}, pb = {0}, cb = {0}, nb = {0};
    guarded ob = {0}, opb = {0}, ocb = {0};
    rc = upload_new(vk, h, nh * 4, &hb);
    if (!rc) rc = guarded_alloc(vk, n_x * 4, &ob);
    if (!rc && n_post) rc = guarded_alloc(vk, n_post * 4, &opb);
    if (!rc && n_post) rc = guarded_alloc(vk, n_comb * 4, &ocb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    ms_vk_range o = guarded_range(&ob);
    if (!rc && post_op) {
        rc = upload_new(vk, y, nx * 4, &yb);
        if (!rc) rc = upload_new(vk, pw, (size_t)n * hc * 4, &pb);
        if (!rc) rc = upload_new(vk, cw, (size_t)n * hc * hc * 4, &cb);
        if (!rc)
            rc = ms_vk_rec_hc_post(cmd, ms_vk_buf_range(&yb, 0, nx * 4), ms_vk_buf_range(&hb, 0, nh * 4),
                                   ms_vk_buf_range(&pb, 0, (size_t)n * hc * 4),
                                   ms_vk_buf_range(&cb, 0, (size_t)n * hc * hc * 4), o, dim, hc, n);
    } else if (!rc) {
        rc = upload_new(vk, mix, (size_t)n * mix_n * 4, &mb);
        if (!rc) rc = upload_new(vk, scale, 12, &sb);
        if (!rc) rc = upload_new(vk, base, mix_n * 4, &bb);
        if (!rc) rc = upload_new(vk, nw, (size_t)dim * 2, &nb);
        ms_vk_range ox = o, op = n_post ? guarded_range(&opb) : o, oc = n_post ? guarded_range(&ocb) : o;
        ms_vk_range nr = fuse_norm ? ms_vk_buf_range(&nb, 0, (size_t)dim * 2) : ms_vk_buf_range(&nb, 0, 0);
        if (!rc)
            rc = ms_vk_rec_hc_pre(cmd, ms_vk_buf_range(&mb, 0, (size_t)n * mix_n * 4),
                                  ms_vk_buf_range(&hb, 0, nh * 4), ms_vk_buf_range(&sb, 0, 12),
                                  ms_vk_buf_range(&bb, 0, mix_n * 4), ox, op, oc, nr, dim, hc, n, iters,
                                  (float)hc_eps, (float)rms_eps, head);
    }
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t damaged = 0, d2 = 0, d3 = 0;
    if (!rc) rc = guarded_read(vk, &ob, gpu, &damaged);
    if (!rc && n_post) rc = guarded_read(vk, &opb, gpu + n_x, &d2);
    if (!rc && n_post) rc = guarded_read(vk, &ocb, gpu + n_x + n_post, &d3);
    damaged += d2 + d3;
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)n_out, 1, (uint32_t)n_out, &cr);
        int ok = cr.nmse <= TOL_NMSE_HC && cr.n_nonfinite_mismatch == 0 && damaged == 0;
        if (!ok || verbose)
            printf("  %-9s hc=%-2u dim=%-5u n=%-2u %s nmse=%.2e (tol %.0e) nan=%llu "
                   "nonfinite_mismatch=%llu guard_damage=%llu  %s%s%s\n",
                   op_name(t), hc, dim, n, head ? "head " : post_op ? "" : "block", cr.nmse,
                   TOL_NMSE_HC, (unsigned long long)cr.n_nan,
                   (unsigned long long)cr.n_nonfinite_mismatch, (unsigned long long)damaged,
                   ok ? "ok" : "FAIL", t->note ? "  # " : "", t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o %s -s %llu\n", op_name(t), (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  %s hc=%u dim=%u n=%u  error: %s\n", op_name(t), hc, dim, n, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &hb);
    ms_vk_buf_free(vk, &mb);
    ms_vk_buf_free(vk, &sb);
    ms_vk_buf_free(vk, &bb);
    ms_vk_buf_free(vk, &yb);
    ms_vk_buf_free(vk, &pb);
    ms_vk_buf_free(vk, &cb);
    ms_vk_buf_free(vk, &nb);
    ms_vk_buf_free(vk, &ob.buf);
    ms_vk_buf_free(vk, &opb.buf);
    ms_vk_buf_free(vk, &ocb.buf);
out:
    ms_free(nw);
    ms_free(h);
    ms_free(mix);
    ms_free(y);
    ms_free(pw);
    ms_free(cw);
    ms_free(ref);
    ms_free(gpu);
    ms_free(base);
    return rc < 0 ? 1 : rc;
}

static int run_hc_embed_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed,
                             int verbose) {
    const uint32_t hc = t->m, dim = t->k, n = t->n, vocab = t->pad;
    const size_t nh = (size_t)n * hc * dim, ne = (size_t)vocab * dim;
    uint16_t *emb = ms_malloc(ne * 2);
    uint32_t *tok = ms_malloc((size_t)n * 4);
    float *ref = ms_malloc(nh * 4), *gpu = ms_malloc(nh * 4);
    int rc = emb && tok && ref && gpu ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < ne; i++) emb[i] = f32_to_bf16(rng_uniform());
    for (uint32_t i = 0; i < n; i++) tok[i] = (uint32_t)(rng_next() % vocab);
    if (t->special) tok[n - 1] = vocab;
    ms_ref_hc_embed(emb, vocab, tok, dim, hc, n, ref);
    ms_vk_buf tb = {0}, eb = {0};
    guarded hb = {0};
    rc = upload_new(vk, tok, (size_t)n * 4, &tb);
    if (!rc) rc = upload_new(vk, emb, ne * 2, &eb);
    if (!rc) rc = guarded_alloc(vk, nh * 4, &hb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_hc_embed(cmd, ms_vk_buf_range(&tb, 0, (size_t)n * 4),
                                ms_vk_buf_range(&eb, 0, ne * 2), guarded_range(&hb), vocab, dim,
                                hc, n);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t damaged = 0;
    if (!rc) rc = guarded_read(vk, &hb, gpu, &damaged);
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)nh, 1, (uint32_t)nh, &cr);
        /* a copy: exact, not merely close */
        int ok = cr.nmse == 0 && cr.n_nonfinite_mismatch == 0 && damaged == 0;
        if (!ok || verbose)
            printf("  %-9s hc=%-2u dim=%-5u n=%-2u vocab=%u nmse=%.2e (exact) nan=%llu "
                   "nonfinite_mismatch=%llu guard_damage=%llu  %s%s%s\n",
                   op_name(t), hc, dim, n, vocab, cr.nmse, (unsigned long long)cr.n_nan,
                   (unsigned long long)cr.n_nonfinite_mismatch, (unsigned long long)damaged,
                   ok ? "ok" : "FAIL", t->note ? "  # " : "", t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o hc_embed -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  hc_embed hc=%u dim=%u n=%u  error: %s\n", hc, dim, n, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &tb);
    ms_vk_buf_free(vk, &eb);
    ms_vk_buf_free(vk, &hb.buf);
out:
    ms_free(emb);
    ms_free(tok);
    ms_free(ref);
    ms_free(gpu);
    return rc < 0 ? 1 : rc;
}

static int run_rope_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed, int verbose) {
    const uint32_t H = t->m, hd = t->k, n = t->n, rd = t->pad, off = hd - rd;
    const bool rms = t->special & 1, inverse = t->special & 2, nan = t->special & 4, weighted = t->special & 8;
    const uint32_t hs = hd + 3, ts = H * hs + 5; /* padded strides: untouched gaps */
    const size_t nx = (size_t)n * ts;
    float *x = ms_malloc(nx * 4), *ref = ms_malloc(nx * 4), *gpu = ms_malloc(nx * 4);
    float *cs = ms_malloc((size_t)n * rd * 4);
    uint16_t *w = ms_malloc((size_t)hd * 2);
    double freq[512];
    int rc = x && ref && gpu && cs && w && rd / 2 <= 512 ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < nx; i++) x[i] = rng_uniform() * 2.0f;
    if (nan) x[1] = NAN;
    for (uint32_t i = 0; i < rd / 2; i++) freq[i] = pow(160000.0, -(2.0 * i) / rd);
    for (uint32_t p = 0; p < n; p++)
        ms_ref_rope_table(freq, rd, 1000000u - 37u + 13u * p, cs + (size_t)p * rd);
    for (uint32_t i = 0; i < hd; i++) w[i] = f32_to_bf16(1.0f + 0.5f * rng_uniform());
    memcpy(ref, x, nx * 4);
    if (weighted) /* RMSNorm of every head, then the plain rotation */
        for (uint32_t p = 0; p < n; p++)
            for (uint32_t h = 0; h < H; h++) {
                float *r = ref + (size_t)p * ts + (size_t)h * hs;
                ms_ref_rmsnorm(r, w, MS_WENC_BF16, r, hd, 1, 1e-6f);
            }
    ms_ref_rope(ref, n, H, hd, hs, ts, off, rd, cs, rms && !weighted, 1e-6f, inverse);
    ms_vk_buf xb = {0}, cb = {0}, wb = {0};
    rc = upload_new(vk, x, nx * 4, &xb);
    if (!rc) rc = upload_new(vk, cs, (size_t)n * rd * 4, &cb);
    if (!rc) rc = upload_new(vk, w, (size_t)hd * 2, &wb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_rope_norm(cmd, ms_vk_buf_range(&xb, 0, nx * 4),
                                 ms_vk_buf_range(&cb, 0, (size_t)n * rd * 4),
                                 ms_vk_buf_range(&wb, 0, weighted ? (size_t)hd * 2 : 0), n, H, hd, hs, ts, off,
                                 rd, rms, 1e-6f, inverse);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    if (!rc) rc = ms_vk_download(vk, &xb, 0, gpu, nx * 4);
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)nx, 1, (uint32_t)nx, &cr);
        uint64_t gaps = 0; /* stride padding must be untouched */
        for (uint32_t p = 0; p < n; p++)
            for (uint32_t e = 0; e < ts; e++) {
                uint32_t h = e / hs, i = e % hs;
                if (h < H && i < hd) continue;
                size_t j = (size_t)p * ts + e;
                gaps += memcmp(&gpu[j], &x[j], 4) != 0;
            }
        int ok = cr.nmse <= TOL_NMSE_ROPE && cr.n_nonfinite_mismatch == 0 && gaps == 0;
        if (!ok || verbose)
            printf("  %-9s heads=%-3u head_dim=%-4u n=%-2u rope=%-3u %s%s nmse=%.2e (tol %.0e) "
                   "nan=%llu nonfinite_mismatch=%llu gaps_changed=%llu  %s%s%s\n",
                   op_name(t), H, hd, n, rd, weighted ? "rmsnorm " : rms ? "rms " : "", inverse ? "inverse " : "", cr.nmse,
                   TOL_NMSE_ROPE, (unsigned long long)cr.n_nan,
                   (unsigned long long)cr.n_nonfinite_mismatch, (unsigned long long)gaps,
                   ok ? "ok" : "FAIL", t->note ? "  # " : "", t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o rope -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  rope heads=%u n=%u  error: %s\n", H, n, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &cb);
    ms_vk_buf_free(vk, &wb);
out:
    ms_free(x);
    ms_free(ref);
    ms_free(gpu);
    ms_free(cs);
    ms_free(w);
    return rc < 0 ? 1 : rc;
}

static int run_fq_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed, int verbose) {
    const uint32_t quant = t->m, len = t->k, n = t->n, stride = t->k + t->pad;
    const bool had = t->special & 1, odd = t->special & 2;
    const size_t nx = (size_t)n * stride;
    float *x = ms_malloc(nx * 4), *ref = ms_malloc(nx * 4), *gpu = ms_malloc(nx * 4);
    int rc = x && ref && gpu ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    /* magnitudes over many binades, so blocks get very different scales */
    for (size_t i = 0; i < nx; i++) x[i] = rng_uniform() * ldexpf(1.0f, (int)(rng_next() % 24) - 12);
    if (odd) {
        x[3] = NAN;
        x[70] = 1e30f;                                   /* clamps to the format's max */
        for (uint32_t i = 0; i < 64 && stride + i < nx; i++) x[stride + i] = 1e-9f * (float)i; /* below the floor */
    }
    memcpy(ref, x, nx * 4);
    ms_ref_fq(ref, n, stride, len, (ms_ref_fq_kind)quant, had);
    ms_vk_buf xb = {0};
    rc = upload_new(vk, x, nx * 4, &xb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc) rc = ms_vk_rec_fq(cmd, ms_vk_buf_range(&xb, 0, nx * 4), n, stride, len, quant, had);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    if (!rc) rc = ms_vk_download(vk, &xb, 0, gpu, nx * 4);
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)nx, 1, (uint32_t)nx, &cr);
        uint64_t differ = 0; /* bitwise, where both are numbers */
        for (size_t i = 0; i < nx; i++) differ += !isnan(ref[i]) && memcmp(&gpu[i], &ref[i], 4) != 0;
        double tol = had ? TOL_NMSE_HADAMARD : 0.0;
        int ok = cr.nmse <= tol && cr.n_nonfinite_mismatch == 0 && (had || differ == 0);
        if (!ok || verbose)
            printf("  %-9s %s%s len=%-4u rows=%-2u nmse=%.2e (tol %.0e) bits_differ=%llu nan=%llu "
                   "nonfinite_mismatch=%llu  %s%s%s\n",
                   op_name(t), had ? "hadamard+" : "", quant == 1 ? "e4m3" : quant == 2 ? "e2m1" : "none",
                   len, n, cr.nmse, tol, (unsigned long long)differ, (unsigned long long)cr.n_nan,
                   (unsigned long long)cr.n_nonfinite_mismatch, ok ? "ok" : "FAIL",
                   t->note ? "  # " : "", t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o fq -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  fq len=%u rows=%u  error: %s\n", len, n, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &xb);
out:
    ms_free(x);
    ms_free(ref);
    ms_free(gpu);
    return rc < 0 ? 1 : rc;
}

static int run_router_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed,
                           int verbose) {
    const uint32_t E = t->m, K = t->k, n = t->n, vocab = 50;
    const bool hash = t->special & 1, nan = t->special & 2;
    float *lg = ms_malloc((size_t)n * E * 4), *bias = ms_malloc((size_t)E * 4);
    float *wr = ms_malloc((size_t)n * K * 4), *wg = ms_malloc((size_t)n * K * 4);
    uint32_t *ir = ms_malloc((size_t)n * K * 4), *ig = ms_malloc((size_t)n * K * 4);
    uint32_t *tok = ms_malloc((size_t)n * 4);
    int32_t *t2e = ms_malloc((size_t)vocab * K * 4);
    int rc = lg && bias && wr && wg && ir && ig && tok && t2e ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < (size_t)n * E; i++) lg[i] = rng_uniform() * 4.0f;
    for (uint32_t e = 0; e < E; e++) bias[e] = rng_uniform() * 0.1f;
    for (uint32_t i = 0; i < n; i++) tok[i] = (uint32_t)(rng_next() % vocab);
    for (uint32_t v = 0; v < vocab; v++)
        for (uint32_t j = 0; j < K; j++) t2e[v * K + j] = (int32_t)((v * 7 + j * 13) % E);
    if (nan) lg[0] = lg[5] = NAN;
    const bool norm = !(t->special & 4);
    ms_ref_router(lg, bias, hash ? t2e : NULL, tok, n, E, K, norm, 2.5, ir, wr);
    ms_vk_buf lb = {0}, bb = {0}, tb = {0}, hb = {0}, ib = {0}, wb = {0};
    rc = upload_new(vk, lg, (size_t)n * E * 4, &lb);
    if (!rc) rc = upload_new(vk, bias, (size_t)E * 4, &bb);
    if (!rc) rc = upload_new(vk, tok, (size_t)n * 4, &tb);
    if (!rc) rc = upload_new(vk, t2e, (size_t)vocab * K * 4, &hb);
    /* outputs start as a pattern the router never writes: a dispatch that does not run fails */
    for (size_t i = 0; i < (size_t)n * K; i++) ig[i] = GUARD_WORD, memcpy(&wg[i], &ig[i], 4);
    if (!rc) rc = upload_new(vk, ig, (size_t)n * K * 4, &ib);
    if (!rc) rc = upload_new(vk, wg, (size_t)n * K * 4, &wb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_router(cmd, ms_vk_buf_range(&lb, 0, (size_t)n * E * 4),
                              ms_vk_buf_range(&bb, 0, (size_t)E * 4), ms_vk_buf_range(&tb, 0, (size_t)n * 4),
                              ms_vk_buf_range(&hb, 0, (size_t)vocab * K * 4),
                              ms_vk_buf_range(&ib, 0, (size_t)n * K * 4),
                              ms_vk_buf_range(&wb, 0, (size_t)n * K * 4), n, E, K, vocab, hash, norm, 2.5f);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    if (!rc) rc = ms_vk_download(vk, &ib, 0, ig, (size_t)n * K * 4);
    if (!rc) rc = ms_vk_download(vk, &wb, 0, wg, (size_t)n * K * 4);
    if (!rc) {
        uint64_t wrong = 0, ties = 0;
        for (uint32_t p = 0; p < n; p++)
            for (uint32_t j = 0; j < K; j++) {
                uint32_t a = ir[p * K + j], b = ig[p * K + j];
                if (a == b) continue;
                /* a near-tie: both candidates' selection values within TOL_ROUTER_TIE */
                double va = lg[(size_t)p * E + a], vb = b < E ? lg[(size_t)p * E + b] : NAN;
                double sa = sqrt(va > 0 ? va + log1p(exp(-va)) : log1p(exp(va))) + bias[a];
                double sb = b < E ? sqrt(vb > 0 ? vb + log1p(exp(-vb)) : log1p(exp(vb))) + bias[b] : NAN;
                if (!hash && fabs(sa - sb) <= TOL_ROUTER_TIE * fabs(sa)) ties++;
                else if (wrong++ < 3)
                    printf("    token %u pick %u: reference %u (%.9g), gpu %u (%.9g)\n", p, j, a, sa, b, sb);
            }
        cmp_result cr;
        compare(wg, wr, n * K, 1, n * K, &cr);
        int ok = wrong == 0 && (ties || cr.nmse <= TOL_NMSE_ROUTER) && cr.n_nonfinite_mismatch == 0;
        if (!ok || verbose)
            printf("  %-9s E=%-4u k=%-2u n=%-2u %s picks_wrong=%llu near_ties=%llu weights nmse=%.2e "
                   "(tol %.0e)  %s%s%s\n",
                   op_name(t), E, K, n, hash ? "hash " : "score", (unsigned long long)wrong,
                   (unsigned long long)ties, cr.nmse, TOL_NMSE_ROUTER, ok ? "ok" : "FAIL",
                   t->note ? "  # " : "", t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o router -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  router E=%u k=%u n=%u  error: %s\n", E, K, n, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &lb);
    ms_vk_buf_free(vk, &bb);
    ms_vk_buf_free(vk, &tb);
    ms_vk_buf_free(vk, &hb);
    ms_vk_buf_free(vk, &ib);
    ms_vk_buf_free(vk, &wb);
out:
    ms_free(lg);
    ms_free(bias);
    ms_free(wr);
    ms_free(wg);
    ms_free(ir);
    ms_free(ig);
    ms_free(tok);
    ms_free(t2e);
    return rc < 0 ? 1 : rc;
}

static int run_swiglu_case(ms_vk *vk, ms_vk_cmd *cmd, const test_case *t, uint64_t seed,
                           int verbose) {
    const uint32_t inter = t->k, n = t->n, stride = t->k + t->pad;
    const float limit = t->special & 1 ? 0.0f : 10.0f;
    const size_t nx = (size_t)n * stride;
    float *g = ms_malloc(nx * 4), *u = ms_malloc(nx * 4), *w = ms_malloc((size_t)n * 4);
    float *ref = ms_malloc(nx * 4), *gpu = ms_malloc(nx * 4);
    int rc = g && u && w && ref && gpu ? 0 : -MS_E_NOMEM;
    if (rc) goto out;
    for (size_t i = 0; i < nx; i++) g[i] = rng_uniform() * 16.0f, u[i] = rng_uniform() * 16.0f;
    for (uint32_t i = 0; i < n; i++) w[i] = 0.5f + 0.5f * rng_uniform();
    if (t->special & 2) g[1] = NAN, u[stride + 2] = NAN;
    memcpy(ref, g, nx * 4);
    ms_ref_swiglu(ref, u, w, n, inter, stride, limit);
    ms_vk_buf gb = {0}, ub = {0}, wb = {0};
    rc = upload_new(vk, g, nx * 4, &gb);
    if (!rc) rc = upload_new(vk, u, nx * 4, &ub);
    if (!rc) rc = upload_new(vk, w, (size_t)n * 4, &wb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (!rc)
        rc = ms_vk_rec_swiglu(cmd, ms_vk_buf_range(&gb, 0, nx * 4), ms_vk_buf_range(&ub, 0, nx * 4),
                              ms_vk_buf_range(&wb, 0, (size_t)n * 4), n, inter, stride, limit);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    if (!rc) rc = ms_vk_download(vk, &gb, 0, gpu, nx * 4);
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)nx, 1, (uint32_t)nx, &cr);
        uint64_t gaps = 0;
        for (size_t i = 0; i < nx; i++)
            if (i % stride >= inter) gaps += memcmp(&gpu[i], &g[i], 4) != 0;
        int ok = cr.nmse <= TOL_NMSE_SWIGLU && cr.n_nonfinite_mismatch == 0 && gaps == 0;
        if (!ok || verbose)
            printf("  %-9s inter=%-5u n=%-2u limit=%-2g nmse=%.2e (tol %.0e) nan=%llu "
                   "nonfinite_mismatch=%llu gaps_changed=%llu  %s%s%s\n",
                   op_name(t), inter, n, (double)limit, cr.nmse, TOL_NMSE_SWIGLU,
                   (unsigned long long)cr.n_nan, (unsigned long long)cr.n_nonfinite_mismatch,
                   (unsigned long long)gaps, ok ? "ok" : "FAIL", t->note ? "  # " : "",
                   t->note ? t->note : "");
        if (!ok) printf("    repeat with: test_ops -o swiglu -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  swiglu inter=%u n=%u  error: %s\n", inter, n, ms_strerror(rc));
        rc = 1;
    }
    ms_vk_buf_free(vk, &gb);
    ms_vk_buf_free(vk, &ub);
    ms_vk_buf_free(vk, &wb);
out:
    ms_free(g);
    ms_free(u);
    ms_free(w);
    ms_free(ref);
    ms_free(gpu);
    return rc < 0 ? 1 : rc;
}

/* Bad arguments must come back as errors, never crash or record garbage. */
static int run_error_cases(ms_vk *vk, ms_vk_cmd *cmd) {
    int fails = 0;
    uint8_t d[64 * 24] = {0}, s[64] = {0};
    ms_vk_weight w;
    memset(&w, 0, sizeof w);
    ms_weight_view bad_k = {MS_WENC_FP4, 2, 48, d, s}; /* FP4 needs k % 32 == 0 */
    if (ms_vk_weight_upload(vk, &bad_k, 0, &w) != -MS_E_UNSUPPORTED) {
        printf("  FAIL: FP4 with k=48 was not rejected\n");
        fails++;
        ms_vk_weight_free(vk, &w);
    }
    ms_weight_view bad_k8 = {MS_WENC_FP8, 2, 24, d, s}; /* FP8 needs k % 16 == 0 */
    if (ms_vk_weight_upload(vk, &bad_k8, 0, &w) != -MS_E_UNSUPPORTED) {
        printf("  FAIL: FP8 with k=24 was not rejected\n");
        fails++;
        ms_vk_weight_free(vk, &w);
    }
    ms_weight_view ok = {MS_WENC_FP8, 16, 32, d, s};
    int rc = ms_vk_weight_upload(vk, &ok, 0, &w);
    ms_vk_buf xb = {0}, yb = {0};
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 256, &xb);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 256, &yb);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    if (rc) {
        printf("  FAIL: setup for error cases: %s\n", ms_strerror(rc));
        return fails + 1;
    }
    /* n = 9 columns is above the supported 1..8; x too small for 2 columns of 32 floats+stride. */
    if (ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, 256), 32, ms_vk_buf_range(&yb, 0, 256), 16, 9,
                       NULL) != -MS_E_INVALID_ARG) {
        printf("  FAIL: n=9 was not rejected\n");
        fails++;
    }
    if (ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, 64), 32, ms_vk_buf_range(&yb, 0, 256), 16, 2,
                       NULL) != -MS_E_INVALID_ARG) {
        printf("  FAIL: too-small activation range was not rejected\n");
        fails++;
    }
    if (ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, 256), 16, ms_vk_buf_range(&yb, 0, 256), 16, 1,
                       NULL) != -MS_E_INVALID_ARG) {
        printf("  FAIL: x_stride < k was not rejected\n");
        fails++;
    }
    ms_vk_gemv_tune bad_kernel = {0};
    bad_kernel.kernel = 7;
    if (ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, 256), 32, ms_vk_buf_range(&yb, 0, 256), 16, 1,
                       &bad_kernel) != -MS_E_INVALID_ARG) {
        printf("  FAIL: an unknown kernel choice was not rejected\n");
        fails++;
    }
    ms_vk_cmd_end(cmd);
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &yb);
    printf("  error cases: %s\n", fails ? "FAIL" : "ok");
    return fails;
}

/* ------------------------------------------------------------------ performance */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Times the recorded buffer `reps` times between its first and last timestamp; median in ns.
 * It is first replayed for >= 300 ms: GPU clock governors drop the SM clock during the idle gaps
 * of a benchmark (uploads run on the CPU) — seen on an H200 at 660-810 MHz instead of 1980, which
 * made n > 1 GEMVs and the dispatch chain 2.5-3x slower after the large shapes than alone. */
int time_cmd(ms_vk_cmd *cmd, int reps, double *med_ns) {
    double t[64];
    if (reps > 64) reps = 64;
    uint64_t w0 = ms_time_ns();
    do {
        int rc = ms_vk_cmd_run(cmd);
        if (rc) return rc;
    } while (ms_elapsed_ms(w0) < 300.0);
    for (int r = 0; r < reps; r++) {
        int rc = ms_vk_cmd_run(cmd);
        double ts[2];
        if (!rc) rc = ms_vk_cmd_timestamps(cmd, ts, 2);
        if (rc) return rc;
        t[r] = ts[1] - ts[0];
    }
    *med_ns = median(t, reps);
    return 0;
}

int perf_gemv(ms_vk *vk, ms_vk_cmd *cmd, ms_wenc enc, uint32_t m, uint32_t k, uint32_t n, const perf_opts *po,
              double peak, const ms_vk_gemv_tune *tunes, uint32_t n_tunes) {
    void *wd = NULL;
    uint8_t *ws = NULL;
    int rc = make_weight(enc, m, k, &wd, &ws);
    ms_weight_view view = {enc, m, k, wd, ws};
    uint64_t wbytes = ms_wenc_data_bytes(enc, m, k) + ms_wenc_scale_bytes(enc, m, k);
    uint32_t copies = (uint32_t)((po->total_bytes + wbytes - 1) / wbytes);
    if (copies < 1) copies = 1;
    ms_vk_weight *w = ms_calloc(copies, sizeof *w);
    ms_vk_buf xb = {0}, yb = {0};
    uint64_t ybytes = (uint64_t)m * n * 4 * copies;
    if (!w) rc = -MS_E_NOMEM;
    for (uint32_t i = 0; !rc && i < copies; i++) rc = ms_vk_weight_upload(vk, &view, 0, &w[i]);
    float *x = ms_malloc((size_t)k * n * 4);
    for (size_t i = 0; x && i < (size_t)k * n; i++) x[i] = rng_uniform();
    if (!rc) rc = x ? upload_new(vk, x, (uint64_t)k * n * 4, &xb) : -MS_E_NOMEM;
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, ybytes, &yb);
    ms_vk_range xr = ms_vk_buf_range(&xb, 0, (uint64_t)k * n * 4);
    /* Each tune on the same copies (a sweep uploads once); the latency for the first only. */
    const ms_vk_gemv_tune *one = po->tune.wg_size ? &po->tune : NULL;
    for (uint32_t ti = 0; ti < (n_tunes ? n_tunes : 1) && !rc; ti++) {
        const ms_vk_gemv_tune *tune = n_tunes ? &tunes[ti] : one;
        uint32_t i0, i1;
        double sustained_ns = 0, latency_ns = 0;
        /* (a) sustained: one GEMV per distinct copy, back to back in one command buffer. */
        rc = ms_vk_cmd_begin(cmd);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i0);
        for (uint32_t i = 0; !rc && i < copies; i++)
            rc = ms_vk_rec_gemv(cmd, &w[i], xr, k,
                                ms_vk_buf_range(&yb, (uint64_t)i * m * n * 4, (uint64_t)m * n * 4), m, n, tune);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i1);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        if (!rc) rc = ms_vk_cmd_run(cmd); /* warm-up: clocks, pipeline creation */
        if (!rc) rc = time_cmd(cmd, po->reps, &sustained_ns);
        /* (b) latency of one GEMV on one matrix (its bytes may partly sit in L2 after a repeat). */
        if (!rc && ti == 0) {
            rc = ms_vk_cmd_begin(cmd);
            if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i0);
            if (!rc) rc = ms_vk_rec_gemv(cmd, &w[0], xr, k, ms_vk_buf_range(&yb, 0, (uint64_t)m * n * 4), m, n, tune);
            if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i1);
            if (!rc) rc = ms_vk_cmd_end(cmd);
            if (!rc) rc = ms_vk_cmd_run(cmd);
            if (!rc) rc = time_cmd(cmd, po->reps, &latency_ns);
        }
        if (!rc) {
            double moved = (double)(wbytes + (uint64_t)k * n * 4 + (uint64_t)m * n * 4) * copies;
            double gbs = moved / sustained_ns;
            ms_vk_gemv_tune used;
            if (tune)
                used = *tune;
            else
                ms_vk_gemv_tune_default(vk, enc, &used);
            printf("perf %-9s %6ux%-6u n=%u  sustained %8.1f GB/s = %5.1f%% of %.0f GB/s  (%u distinct "
                   "matrices, %.2f GB, median of %d)",
                   ms_wenc_name(enc), m, k, n, gbs, 100.0 * gbs / peak, peak, copies, moved * 1e-9, po->reps);
            if (ti == 0) printf("  one GEMV %8.2f us (%.1f GB/s)", latency_ns * 1e-3, moved / copies / latency_ns);
            printf("  tune wg=%u rows=%u unroll=%u sg=%u\n", used.wg_size, used.rows_per_wg, used.unroll,
                   used.subgroup_size);
        } else {
            printf("perf %-9s %6ux%-6u n=%u  error: %s\n", ms_wenc_name(enc), m, k, n, ms_strerror(rc));
            if (n_tunes && rc == -MS_E_INVALID_ARG) rc = 0; /* a sweep goes on past a refused tune */
        }
        fflush(stdout);
    }
    for (uint32_t i = 0; w && i < copies; i++) ms_vk_weight_free(vk, &w[i]);
    ms_free(w);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &yb);
    ms_free(x);
    ms_free(wd);
    ms_free(ws);
    return rc;
}

/* Per-dispatch overhead: a chain of tiny dependent GEMVs separated by barriers. */
static int perf_dispatch(ms_vk *vk, ms_vk_cmd *cmd, int reps) {
    enum { CHAIN = 1000, M = 64, K = 256 };
    void *wd = NULL;
    uint8_t *ws = NULL;
    int rc = make_weight(MS_WENC_F32, M, K, &wd, &ws);
    ms_weight_view view = {MS_WENC_F32, M, K, wd, ws};
    ms_vk_weight w;
    memset(&w, 0, sizeof w);
    ms_vk_buf xb = {0}, yb = {0};
    if (!rc) rc = ms_vk_weight_upload(vk, &view, 0, &w);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, K * 4, &xb);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, M * 4, &yb);
    double ns[2] = {0, 0};
    for (int barriers = 0; barriers < 2 && !rc; barriers++) {
        uint32_t i0, i1;
        rc = ms_vk_cmd_begin(cmd);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i0);
        for (int i = 0; i < CHAIN && !rc; i++) {
            rc = ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, K * 4), K, ms_vk_buf_range(&yb, 0, M * 4), M, 1, NULL);
            if (barriers) ms_vk_cmd_barrier(cmd);
        }
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, &i1);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        if (!rc) rc = ms_vk_cmd_run(cmd);
        if (!rc) rc = time_cmd(cmd, reps, &ns[barriers]);
    }
    if (!rc)
        printf("perf dispatch overhead (tiny %ux%u F32 GEMV, chain of %d): %.2f us/dispatch without "
               "barriers, %.2f us/dispatch with a barrier after each (median of %d)\n",
               M, K, CHAIN, ns[0] / CHAIN * 1e-3, ns[1] / CHAIN * 1e-3, reps);
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &yb);
    ms_free(wd);
    ms_free(ws);
    return rc;
}

/* ------------------------------------------------------------------ GEMM performance */

/* Median time per dispatch of one recording of `reps` replays after the 300 ms warm-up of time_cmd;
 * per = dispatches between the recording's two timestamps. */
static int time_per(ms_vk_cmd *cmd, int reps, uint32_t per, double *ns) {
    int rc = time_cmd(cmd, reps, ns);
    if (!rc) *ns /= per;
    return rc;
}

/* Every tune of ops_gemm_tunes this device takes, one after another: the time to create its pipeline,
 * then the median per GEMM of a chain of SWEEP_CHAIN dispatches (no barriers) after time_cmd's warm-up.
 * Each line is printed as soon as it is measured, so a run cut short keeps what it has; the fastest is
 * named at the end. */
#define SWEEP_CHAIN 4
static int sweep_gemm(ms_vk_cmd *cmd, const ms_vk_weight *w, ms_vk_range xr, ms_vk_range yr, uint32_t n,
                      int reps) {
    const double flop = 2.0 * w->m * w->k * n;
    double best = 0;
    uint32_t best_i = 0;
    int rc = 0;
    for (uint32_t i = 0; !rc && i < ops_gemm_n_tunes; i++) {
        const ms_vk_gemm_tune *tu = &ops_gemm_tunes[i];
        uint64_t t0 = ms_time_ns();
        rc = ms_vk_cmd_begin(cmd);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
        for (uint32_t c = 0; !rc && c < SWEEP_CHAIN; c++) rc = ms_vk_rec_gemm(cmd, w, xr, w->k, yr, w->m, n, tu);
        const double create_ms = ms_elapsed_ms(t0); /* the first record creates the pipeline */
        if (rc == -MS_E_UNSUPPORTED || rc == -MS_E_INVALID_ARG) { /* not for this device / encoding (logged) */
            rc = ms_vk_cmd_end(cmd);
            continue;
        }
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        double ns = 0;
        if (!rc) rc = time_per(cmd, reps, SWEEP_CHAIN, &ns);
        if (rc) break;
        if (!best || ns < best) best = ns, best_i = i;
        const uint32_t ks = tu->wg_size / ((tu->tile_rows / tu->rows_per_inv) * (tu->tile_tokens / tu->tokens_per_inv));
        printf("sweep %-9s %6ux%-6u n=%-4u tune %3ux%3ux%2u/%ux%u/%4u (ks %u, k_unroll %u)  %9.2f us  %7.0f GFLOP/s"
               "  (pipeline %.0f ms)\n",
               ms_wenc_name(w->enc), w->m, w->k, n, tu->tile_rows, tu->tile_tokens, tu->tile_k, tu->rows_per_inv,
               tu->tokens_per_inv, tu->wg_size, ks, tu->k_unroll, ns * 1e-3, flop / ns, create_ms);
    }
    if (rc) printf("sweep %s %ux%u n=%u  error: %s\n", ms_wenc_name(w->enc), w->m, w->k, n, ms_strerror(rc));
    else if (best) {
        const ms_vk_gemm_tune *tu = &ops_gemm_tunes[best_i];
        printf("sweep %-9s %6ux%-6u n=%-4u best tune %ux%ux%u/%ux%u/%u k_unroll %u: %.2f us, %.0f GFLOP/s\n",
               ms_wenc_name(w->enc), w->m, w->k, n, tu->tile_rows, tu->tile_tokens, tu->tile_k, tu->rows_per_inv,
               tu->tokens_per_inv, tu->wg_size, tu->k_unroll, best * 1e-3, flop / best);
    }
    return rc;
}

/* The GEMM at n tokens with the default tune: a chain of 8 with a barrier after each (as a GEMM whose
 * output the next op reads) and a chain of 8 without (throughput), GFLOP/s and weight GB/s; then the
 * GEMV at n = 8 on the same weight (chain of 8), scaled to n tokens. A single dispatch per submit is not
 * used: an H200 kept its clock low through such replays (1024x4096 n = 64: 205 us alone, 26 us in a
 * chain). */
static int perf_gemm(ms_vk *vk, ms_vk_cmd *cmd, ms_wenc enc, uint32_t m, uint32_t k, const perf_opts *po, int sweep) {
    static const uint32_t ns[] = {64, 512};
    const uint32_t n_max = 512, chain = 8;
    void *wd = NULL;
    uint8_t *ws = NULL;
    int rc = make_weight(enc, m, k, &wd, &ws);
    ms_weight_view view = {enc, m, k, wd, ws};
    const uint64_t wbytes = ms_wenc_data_bytes(enc, m, k) + ms_wenc_scale_bytes(enc, m, k);
    ms_vk_weight w;
    memset(&w, 0, sizeof w);
    ms_vk_buf xb = {0}, yb = {0};
    float *x = ms_malloc((size_t)k * n_max * 4);
    if (!rc) rc = ms_vk_weight_upload(vk, &view, 0, &w);
    for (size_t i = 0; x && i < (size_t)k * n_max; i++) x[i] = rng_uniform();
    if (!rc) rc = x ? upload_new(vk, x, (uint64_t)k * n_max * 4, &xb) : -MS_E_NOMEM;
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, (uint64_t)m * n_max * 4, &yb);
    double gemv_ns = 0;
    for (size_t ni = 0; !rc && ni < sizeof ns / sizeof ns[0]; ni++) {
        const uint32_t n = ns[ni];
        const ms_vk_range xr = ms_vk_buf_range(&xb, 0, (uint64_t)k * n * 4), yr = ms_vk_buf_range(&yb, 0, (uint64_t)m * n * 4);
        double one_ns = 0, chain_ns = 0;
        rc = ms_vk_cmd_begin(cmd);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
        for (uint32_t i = 0; !rc && i < chain; i++) {
            rc = ms_vk_rec_gemm(cmd, &w, xr, k, yr, m, n, NULL);
            ms_vk_cmd_barrier(cmd);
        }
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        if (!rc) rc = time_per(cmd, po->reps, chain, &one_ns);
        if (!rc) rc = ms_vk_cmd_begin(cmd);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
        for (uint32_t i = 0; !rc && i < chain; i++) rc = ms_vk_rec_gemm(cmd, &w, xr, k, yr, m, n, NULL);
        if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
        if (!rc) rc = ms_vk_cmd_end(cmd);
        if (!rc) rc = time_per(cmd, po->reps, chain, &chain_ns);
        if (!rc && !gemv_ns) { /* the GEMV at its widest, n = 8 (MS_GEMV_MAX_COLS), same weight */
            rc = ms_vk_cmd_begin(cmd);
            if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
            for (uint32_t i = 0; !rc && i < chain; i++)
                rc = ms_vk_rec_gemv(cmd, &w, ms_vk_buf_range(&xb, 0, (uint64_t)k * 8 * 4), k,
                                    ms_vk_buf_range(&yb, 0, (uint64_t)m * 8 * 4), m, 8, NULL);
            if (!rc) rc = ms_vk_cmd_timestamp(cmd, NULL);
            if (!rc) rc = ms_vk_cmd_end(cmd);
            if (!rc) rc = time_per(cmd, po->reps, chain, &gemv_ns);
        }
        if (rc) break;
        ms_vk_gemm_tune used;
        ms_vk_gemm_tune_default(vk, enc, m, k, n, &used);
        const double flop = 2.0 * m * k * n, gemv_tok = gemv_ns * n / 8;
        printf("perf gemm_%-4s %6ux%-6u n=%-3u  with barriers %9.2f us %7.0f GFLOP/s %6.0f GB/s  chain of %u "
               "%9.2f us %7.0f GFLOP/s  |  GEMV n=8 %8.2f us/call -> %9.2f us per %u tokens (%5.0f GFLOP/s): "
               "GEMM %.1fx  tune %ux%ux%u/%ux%u/%u k_unroll %u\n",
               ms_wenc_name(enc), m, k, n, one_ns * 1e-3, flop / one_ns, wbytes / one_ns, chain, chain_ns * 1e-3,
               flop / chain_ns, gemv_ns * 1e-3, gemv_tok * 1e-3, n, flop / gemv_tok, gemv_tok / chain_ns,
               used.tile_rows, used.tile_tokens, used.tile_k, used.rows_per_inv, used.tokens_per_inv, used.wg_size,
               used.k_unroll);
        if (sweep) rc = sweep_gemm(cmd, &w, xr, yr, n, po->reps);
    }
    if (rc) printf("perf gemm_%s %ux%u  error: %s\n", ms_wenc_name(enc), m, k, ms_strerror(rc));
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &yb);
    ms_free(x);
    ms_free(wd);
    ms_free(ws);
    return rc;
}

static int run_perf(ms_vk *vk, ms_vk_cmd *cmd, const perf_opts *po, const char *only) {
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    double copy_gbs = 0;
    int rc = ms_vk_measure_copy(vk, 1ull << 30, po->reps, &copy_gbs);
    if (rc) {
        printf("perf: copy measurement failed: %s\n", ms_strerror(rc));
        return rc;
    }
    double peak = po->peak_gbs > 0 ? po->peak_gbs : copy_gbs;
    printf("perf device: %s; device-local copy %.1f GB/s (read+write); percentages are of %.0f GB/s%s\n",
           caps->device_name, copy_gbs, peak, po->peak_gbs > 0 ? " (--peak)" : " (measured copy)");
    if (po->sweep) return run_sweep(vk, cmd, po, peak);
    static const struct {
        ms_wenc enc;
        uint32_t m, k, n;
    } shapes[] = {
        {MS_WENC_FP4, 3072, 7168, 1}, {MS_WENC_FP4, 7168, 3072, 1}, {MS_WENC_FP8, 7168, 16384, 1},
        {MS_WENC_FP8, 1536, 7168, 1}, {MS_WENC_BF16, 7168, 4096, 1}, {MS_WENC_FP4, 3072, 7168, 4},
        {MS_WENC_FP8, 7168, 16384, 8}, {MS_WENC_FP4, 2048, 4096, 1}, {MS_WENC_FP4, 4096, 2048, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "gemv_%s", ms_wenc_name(shapes[i].enc));
        if (only && strcmp(only, name) != 0) continue;
        rc = perf_gemv(vk, cmd, shapes[i].enc, shapes[i].m, shapes[i].k, shapes[i].n, po, peak, NULL, 0);
        if (rc) return rc;
    }
    if (!only || strcmp(only, "dispatch") == 0) rc = perf_dispatch(vk, cmd, po->reps);
    /* prefill GEMM shapes: V4-Pro wo_b and wq_a (FP8), a BF16 square, a V4-Flash expert (FP4) */
    static const struct {
        ms_wenc enc;
        uint32_t m, k;
    } gemm_shapes[] = {
        {MS_WENC_FP8, 7168, 16384}, {MS_WENC_FP8, 1536, 7168}, {MS_WENC_BF16, 4096, 4096}, {MS_WENC_FP4, 2048, 4096},
    };
    if (po->gemm_m) /* --gemm-shape: that one instead */
        return !only || strcmp(only, "gemm") == 0 ? perf_gemm(vk, cmd, po->gemm_enc, po->gemm_m, po->gemm_k, po, po->gemm_sweep)
                                                   : rc;
    for (size_t i = 0; !rc && i < sizeof gemm_shapes / sizeof gemm_shapes[0]; i++)
        if (!only || strcmp(only, "gemm") == 0)
            rc = perf_gemm(vk, cmd, gemm_shapes[i].enc, gemm_shapes[i].m, gemm_shapes[i].k, po, po->gemm_sweep);
    if (!rc && (!only || strcmp(only, "moe") == 0)) rc = perf_moe_defaults(vk, cmd, po, peak);
    return rc;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f, "usage: test_ops [-o OP] [-s SEED] [-q] [--list] [--exhaustive] [--perf [--peak GBPS] [--perf-bytes N]\n"
               "                [--reps N] [--wg N --rows N --unroll N --sg N] [--sweep FILE] [--gemm-sweep]\n"
               "                [--gemm-shape ENC:MxK]]\n"
               "  OP: gemv_f32 gemv_bf16 gemv_fp8 gemv_fp4 rmsnorm, a family (--list) (with --perf: gemv_*, dispatch,\n"
               "      gemm, moe)\n"
               "  FILE: one measurement a line (tests/ops_perf.c says how); --gemm-sweep: every gemm tune candidate\n"
               "  --exhaustive: families run every variant (gemm: every tune on every encoding)\n");
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (!*s || *end) return -1;
    *out = v;
    return 0;
}

/* ENC:MxK, e.g. fp8:1536x7168 */
static int parse_gemm_shape(const char *s, perf_opts *po) {
    static const char *const names[MS_WENC_COUNT] = {"f32", "bf16", "fp8", "fp4"};
    for (int e = 0; e < MS_WENC_COUNT; e++) {
        size_t l = strlen(names[e]);
        unsigned m, k;
        char tail;
        if (strncmp(s, names[e], l) == 0 && s[l] == ':' && sscanf(s + l + 1, "%ux%u%c", &m, &k, &tail) == 2 && m && k) {
            po->gemm_enc = (ms_wenc)e;
            po->gemm_m = m;
            po->gemm_k = k;
            return 0;
        }
    }
    return -1;
}

int main(int argc, char **argv) {
    const char *only = NULL;
    uint64_t seed = 20261129, v;
    int list = 0, perf = 0, verbose = 1;
    perf_opts po = {0, 2ull << 30, {0}, 7, NULL, 0, MS_WENC_F32, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "-o") == 0 && val) only = val;
        else if (strcmp(a, "-s") == 0 && val && !parse_u64(val, &v)) seed = v;
        else if (strcmp(a, "--peak") == 0 && val) po.peak_gbs = atof(val);
        else if (strcmp(a, "--perf-bytes") == 0 && val && !parse_u64(val, &v)) po.total_bytes = v;
        else if (strcmp(a, "--reps") == 0 && val && !parse_u64(val, &v) && v >= 1) po.reps = (int)v;
        else if (strcmp(a, "--wg") == 0 && val && !parse_u64(val, &v)) po.tune.wg_size = (uint32_t)v;
        else if (strcmp(a, "--rows") == 0 && val && !parse_u64(val, &v)) po.tune.rows_per_wg = (uint32_t)v;
        else if (strcmp(a, "--unroll") == 0 && val && !parse_u64(val, &v)) po.tune.unroll = (uint32_t)v;
        else if (strcmp(a, "--sg") == 0 && val && !parse_u64(val, &v)) po.tune.subgroup_size = (uint32_t)v;
        else if (strcmp(a, "--gemm-shape") == 0 && val && !parse_gemm_shape(val, &po)) {
        }
        else if (strcmp(a, "--sweep") == 0 && val) po.sweep = val;
        else {
            takes = 0;
            if (strcmp(a, "--list") == 0) list = 1;
            else if (strcmp(a, "--perf") == 0) perf = 1;
            else if (strcmp(a, "--gemm-sweep") == 0) po.gemm_sweep = 1;
            else if (strcmp(a, "--exhaustive") == 0) ops_exhaustive = 1;
            else if (strcmp(a, "-q") == 0) verbose = 0;
            else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                usage(stdout);
                return 0;
            } else {
                fprintf(stderr, "test_ops: unknown or incomplete argument '%s'\n", a);
                usage(stderr);
                return 2;
            }
        }
        i += takes;
    }
    if (list) {
        for (size_t i = 0; i < N_CASES; i++) {
            const test_case *t = &k_cases[i];
            printf("%-9s m=%-6u k=%-6u n=%u enc=%s%s%s\n", op_name(t), t->m, t->k, t->n,
                   ms_wenc_name(t->enc), t->note ? "  # " : "", t->note ? t->note : "");
        }
        for (const ops_family *const *f = ops_families; *f; f++)
            for (uint32_t i = 0; i < (*f)->n_cases; i++) {
                char line[256];
                (*f)->describe(i, line, sizeof line);
                printf("%-9s %s\n", (*f)->op, line);
            }
        return 0;
    }
    if (po.tune.wg_size || po.tune.rows_per_wg || po.tune.unroll || po.tune.subgroup_size) {
        if (!po.tune.wg_size || !po.tune.rows_per_wg || !po.tune.unroll) {
            fprintf(stderr, "test_ops: --wg, --rows and --unroll go together\n");
            return 2;
        }
    }

    ms_vk *vk = NULL;
    ms_vk_opts opts = ms_vk_opts_default();
    char env_err[256];
    int rc = ms_env_vk_opts(&opts, env_err, sizeof env_err);
    if (rc) {
        fprintf(stderr, "test_ops: %s\n", env_err);
        return 2;
    }
    rc = ms_vk_open(&vk, &opts);
    if (rc == -MS_E_NO_DEVICE) {
        printf("SKIP: no Vulkan device (%s)\n", ms_strerror(rc));
        return 77;
    }
    if (rc) {
        printf("FAIL: ms_vk_open: %s\n", ms_strerror(rc));
        return 1;
    }
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    printf("device: %s (%s), subgroup %u, max binding %.0f MiB, validation %s, seed %llu\n",
           caps->device_name, caps->driver_name, caps->subgroup_size,
           (double)caps->max_storage_buffer_range / (1 << 20), ms_vk_validation_enabled(vk) ? "on" : "off",
           (unsigned long long)seed);
    ms_vk_cmd *cmd = NULL;
    rc = ms_vk_cmd_create(vk, 16, &cmd);
    if (rc) {
        printf("FAIL: ms_vk_cmd_create: %s\n", ms_strerror(rc));
        ms_vk_close(vk);
        return 1;
    }
    int fails = 0, ran = 0;
    if (perf) {
        g_rng = seed;
        fails += run_perf(vk, cmd, &po, only) != 0;
    } else {
        for (size_t i = 0; i < N_CASES; i++) {
            const test_case *t = &k_cases[i];
            if (only && strcmp(only, op_name(t)) != 0) continue;
            g_rng = seed ^ (0x100000001b3ull * (i + 1)); /* each case reproducible alone */
            uint64_t t0 = ms_time_ns();
            int f = t->op == OP_GEMV      ? run_gemv_case(vk, cmd, t, seed, verbose)
                    : t->op == OP_RMSNORM ? run_rmsnorm_case(vk, cmd, t, seed, verbose)
                    : t->op == OP_HC_EMBED ? run_hc_embed_case(vk, cmd, t, seed, verbose)
                    : t->op == OP_ROPE    ? run_rope_case(vk, cmd, t, seed, verbose)
                    : t->op == OP_FQ      ? run_fq_case(vk, cmd, t, seed, verbose)
                    : t->op == OP_ROUTER  ? run_router_case(vk, cmd, t, seed, verbose)
                    : t->op == OP_SWIGLU  ? run_swiglu_case(vk, cmd, t, seed, verbose)
                                          : run_hc_case(vk, cmd, t, seed, verbose);
            if (ms_elapsed_ms(t0) > 2000) printf("    (%.1f s)\n", ms_elapsed_ms(t0) * 1e-3);
            fails += f;
            ran++;
        }
        for (const ops_family *const *fam = ops_families; *fam; fam++) {
            if (only && strcmp(only, (*fam)->op) != 0) continue;
            for (uint32_t i = 0; i < (*fam)->n_cases; i++) {
                /* reproducible alone: the seed mixed with the family's name and the case index */
                uint64_t h = 0xcbf29ce484222325ull;
                for (const char *q = (*fam)->op; *q; q++) h = (h ^ (uint8_t)*q) * 0x100000001b3ull;
                g_rng = seed ^ h ^ (0x9e3779b97f4a7c15ull * (i + 1));
                uint64_t t0 = ms_time_ns();
                fails += (*fam)->run(vk, cmd, i, seed, verbose) != 0;
                if (ms_elapsed_ms(t0) > 2000) printf("    (%.1f s)\n", ms_elapsed_ms(t0) * 1e-3);
                ran++;
            }
        }
        if (!only) fails += run_error_cases(vk, cmd);
        if (only && ran == 0) {
            fprintf(stderr, "test_ops: no case matches op '%s' (see --list)\n", only);
            fails++;
        }
    }
    uint32_t vmsgs = ms_vk_validation_count(vk);
    if (vmsgs) {
        printf("FAIL: %u validation message(s) (see log above)\n", vmsgs);
        fails++;
    }
    ms_vk_cmd_free(cmd);
    ms_vk_close(vk);
    ms_alloc_stats st;
    ms_alloc_get_stats(&st);
    if (st.n_live) {
        printf("FAIL: %llu host allocation(s) leaked\n", (unsigned long long)st.n_live);
        fails++;
    }
    printf("%s: %d case(s) run, %d failure(s)\n", fails ? "FAIL" : "PASS", ran, fails);
    return fails ? 1 : 0;
}
