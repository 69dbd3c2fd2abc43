/* tests/ops_gemv_grouped.c — the op family `gemv_grouped`: ms_vk_rec_gemv_grouped (gemv.comp and
 * gemv_tiled.comp with group_rows / group_x), the block-diagonal GEMV of V4's grouped output
 * projection wo_a, against ms_ref_gemv of each group's rows (ms_weight_view_rows) on its slice of
 * x. Outputs sit between guard words; stride padding must stay untouched.
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/ref/ref.h"
#include "engine/vk/vk.h"
#include "tests/ops_util.h"

/* F32 sums in another order than the reference's doubles: the GEMV tolerance of test_ops. */
#define TOL_NMSE_GEMV_GROUPED 1e-9

typedef struct gg_case {
    ms_wenc enc;
    uint32_t groups, group_rows, k, n;
    uint32_t kernel;        /* ms_vk_gemv_kernel */
    uint64_t max_part;      /* force parts of at most this many bytes (0 = device) */
    const char *note;
} gg_case;

static const gg_case k_cases[] = {
    {MS_WENC_FP8, 8, 1024, 4096, 1, 0, 0, "V4-Flash wo_a, decode"},
    {MS_WENC_FP8, 16, 1024, 4096, 2, 0, 0, "V4-Pro wo_a, 2 tokens (tiled)"},
    {MS_WENC_FP8, 4, 128, 256, 8, MS_VK_GEMV_CLASSIC, 0, "8 tokens, the classic kernel"},
    {MS_WENC_FP8, 4, 256, 512, 3, MS_VK_GEMV_TILED, 96 * 1024, "tiled, parts of 128 rows across groups"},
    {MS_WENC_BF16, 3, 128, 200, 5, 0, 64 * 1024, "BF16, parts"},
    {MS_WENC_FP4, 2, 128, 128, 1, 0, 0, "FP4"},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static void describe(uint32_t i, char *buf, size_t len) {
    const gg_case *t = &k_cases[i];
    snprintf(buf, len, "%s %u groups x %u rows, k %u, n %u  # %s", ms_wenc_name(t->enc), t->groups, t->group_rows,
             t->k, t->n, t->note);
}

static int run_case(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    const gg_case *t = &k_cases[ci];
    const uint32_t G = t->groups, gr = t->group_rows, k = t->k, n = t->n, m = G * gr;
    const uint32_t gx = k + 4, xs = G * gx + 8, ys = m + 3; /* padded: untouched gaps */
    void *data = NULL;
    uint8_t *scale = NULL;
    float *x = ms_malloc((size_t)n * xs * 4), *ref = ms_malloc((size_t)n * ys * 4), *gpu = ms_malloc((size_t)n * ys * 4);
    int rc = x && ref && gpu ? make_weight(t->enc, m, k, &data, &scale) : -MS_E_NOMEM;
    ms_vk_weight w = {0};
    ms_vk_buf xb = {0};
    guarded yg = {0};
    if (rc) goto out;
    for (size_t i = 0; i < (size_t)n * xs; i++) x[i] = rng_uniform();
    for (size_t i = 0; i < (size_t)n * ys; i++) memcpy(&ref[i], &(uint32_t){GUARD_WORD}, 4);
    const ms_weight_view v = {t->enc, m, k, data, scale};
    for (uint32_t g = 0; g < G; g++) {
        ms_weight_view vg = ms_weight_view_rows(&v, g * gr, gr);
        ms_ref_gemv(&vg, x + (size_t)g * gx, xs, ref + (size_t)g * gr, ys, n);
    }
    rc = ms_vk_weight_upload(vk, &v, t->max_part, &w);
    if (!rc) rc = upload_new(vk, x, (size_t)n * xs * 4, &xb);
    if (!rc) rc = guarded_alloc(vk, (size_t)n * ys * 4, &yg);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    ms_vk_gemv_tune tune = {0};
    tune.kernel = t->kernel;
    if (!rc)
        rc = ms_vk_rec_gemv_grouped(cmd, &w, ms_vk_buf_range(&xb, 0, (size_t)n * xs * 4), xs, gr, gx,
                                    guarded_range(&yg), ys, n, &tune);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t dmg = 0;
    if (!rc) rc = guarded_read(vk, &yg, gpu, &dmg);
    char d[160];
    describe(ci, d, sizeof d);
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, m, n, ys, &cr);
        uint64_t gaps = 0;
        for (uint32_t c = 0; c < n; c++)
            for (uint32_t r = m; r < ys && c + 1 < n; r++) gaps += memcmp(&gpu[(size_t)c * ys + r], &(uint32_t){GUARD_WORD}, 4) != 0;
        int ok = cr.nmse <= TOL_NMSE_GEMV_GROUPED && cr.n_nonfinite_mismatch == 0 && dmg == 0 && gaps == 0;
        if (!ok || verbose)
            printf("  gemv_grouped %s: nmse=%.2e (tol %.0e) guard_damage=%llu gaps_changed=%llu parts=%u  %s\n", d,
                   cr.nmse, TOL_NMSE_GEMV_GROUPED, (unsigned long long)dmg, (unsigned long long)gaps, w.n_parts,
                   ok ? "ok" : "FAIL");
        if (!ok) printf("    repeat with: test_ops -o gemv_grouped -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  gemv_grouped %s: error: %s\n", d, ms_strerror(rc));
        rc = 1;
    }
    /* the refusal: groups that are not whole 128-row blocks */
    if (ci == 0) {
        int r = ms_vk_cmd_begin(cmd);
        if (!r) r = ms_vk_rec_gemv_grouped(cmd, &w, ms_vk_buf_range(&xb, 0, (size_t)n * xs * 4), xs, 100, gx,
                                           guarded_range(&yg), ys, n, NULL);
        ms_vk_cmd_end(cmd);
        if (r != -MS_E_INVALID_ARG) {
            printf("  gemv_grouped: groups of 100 rows were not refused (%s)  FAIL\n", ms_strerror(r));
            rc = 1;
        }
    }
out:
    ms_vk_weight_free(vk, &w);
    ms_vk_buf_free(vk, &xb);
    ms_vk_buf_free(vk, &yg.buf);
    ms_free(data);
    ms_free(scale);
    ms_free(x);
    ms_free(ref);
    ms_free(gpu);
    return rc < 0 ? 1 : rc;
}

const ops_family ops_fam_gemv_grouped = {"gemv_grouped", (uint32_t)N_CASES, describe, run_case};
