/* tests/ops_hc_mix.c — the op family `hc_mix`: ms_vk_rec_hc_mix (shaders/hc_mix.comp, the mHC
 * mixing GEMV as split-K partials with the previous hc_post fused in) followed by
 * ms_vk_rec_hc_pre_parts, against ms_ref_hc_post + ms_ref_gemv_f32 + ms_ref_hc_pre (+
 * ms_ref_rmsnorm): the chain the forward pass runs between two sub-layers.
 *
 * Compared as one array: x | post | comb (block mode) and, with the post fused, the new streams
 * h. Outputs sit between guard words. With the post fused the non-finite watch is on: its flags
 * must mark exactly the tokens whose new streams hold a NaN or an infinity.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/ref/ref.h"
#include "engine/vk/vk.h"
#include "tests/ops_util.h"

/* F32 sums in another order than the reference's doubles; the mHC tolerance of test_ops. */
#define TOL_NMSE_HC_MIX 1e-9

enum { SP_POST = 1, SP_HEAD = 2, SP_NORM = 4, SP_NAN = 8 };

typedef struct mix_case {
    uint32_t hc, dim, n, iters, special;
    const char *note;
} mix_case;

static const mix_case k_cases[] = {
    {4, 4096, 1, 20, SP_POST | SP_NORM, "V4-Flash decode: hc_post + mix + hc_pre + ffn_norm"},
    {4, 7168, 1, 20, SP_POST | SP_NORM, "V4-Pro decode"},
    {4, 4096, 5, 20, SP_NORM, "V4-Flash, first sub-layer (streams read, no post)"},
    {4, 7168, 2, 0, SP_POST | SP_HEAD | SP_NORM, "V4-Pro hc_head after the last hc_post + final norm"},
    {3, 100, 3, 4, SP_POST, "odd dim, partial last slice"},
    {2, 64, 2, 3, 0, "tiny"},
    {4, 512, 2, 20, SP_POST | SP_NAN, "NaN in y of token 0"},
};
#define N_CASES (sizeof k_cases / sizeof k_cases[0])

static void describe(uint32_t i, char *buf, size_t len) {
    const mix_case *t = &k_cases[i];
    snprintf(buf, len, "hc=%u dim=%u n=%u iters=%u%s%s%s  # %s", t->hc, t->dim, t->n, t->iters,
             t->special & SP_POST ? " post" : "", t->special & SP_HEAD ? " head" : "",
             t->special & SP_NORM ? " norm" : "", t->note);
}

static int run_case(ms_vk *vk, ms_vk_cmd *cmd, uint32_t ci, uint64_t seed, int verbose) {
    const mix_case *t = &k_cases[ci];
    const uint32_t hc = t->hc, dim = t->dim, n = t->n;
    const bool post_fused = t->special & SP_POST, head = t->special & SP_HEAD, norm = t->special & SP_NORM;
    const uint32_t mix_n = head ? hc : (2 + hc) * hc, K = hc * dim, slices = ms_vk_hc_mix_slices(vk, dim, hc);
    const size_t nh = (size_t)n * K, nx = (size_t)n * dim;
    const size_t n_post = head ? 0 : (size_t)n * hc, n_comb = n_post * hc, n_h = post_fused ? nh : 0;
    const size_t n_out = nx + n_post + n_comb + n_h;
    float *fn = ms_malloc((size_t)mix_n * K * 4), *res = ms_malloc(nh * 4), *y = ms_malloc(nx * 4);
    float *pw = ms_malloc((size_t)n * hc * 4), *cw = ms_malloc((size_t)n * hc * hc * 4);
    float *href = ms_malloc(nh * 4), *mix = ms_malloc((size_t)n * mix_n * 4), *base = ms_malloc(mix_n * 4);
    float *ref = ms_malloc(n_out * 4), *gpu = ms_malloc(n_out * 4), scale[3];
    uint16_t *nw = ms_malloc((size_t)dim * 2);
    int rc = fn && res && y && pw && cw && href && mix && base && ref && gpu && nw ? 0 : -MS_E_NOMEM;
    ms_vk_buf b_fn = {0}, b_res = {0}, b_y = {0}, b_pw = {0}, b_cw = {0}, b_sc = {0}, b_base = {0}, b_nw = {0},
              b_part = {0}, b_h = {0}, b_fl = {0};
    ms_vk_weight w = {0};
    guarded gx = {0}, gp = {0}, gc = {0};
    if (rc) goto out;
    for (size_t i = 0; i < (size_t)mix_n * K; i++) fn[i] = rng_uniform() * 0.05f;
    for (size_t i = 0; i < nh; i++) res[i] = rng_uniform() * 2.0f;
    for (size_t i = 0; i < nx; i++) y[i] = rng_uniform();
    for (size_t i = 0; i < (size_t)n * hc; i++) pw[i] = 1.0f + rng_uniform();
    for (size_t i = 0; i < (size_t)n * hc * hc; i++) cw[i] = (1.0f + rng_uniform()) / (float)hc;
    for (int i = 0; i < 3; i++) scale[i] = 0.5f + 0.5f * rng_uniform();
    for (uint32_t i = 0; i < mix_n; i++) base[i] = rng_uniform();
    for (uint32_t i = 0; i < dim; i++) nw[i] = f32_to_bf16(1.0f + 0.5f * rng_uniform());
    if (t->special & SP_NAN) y[3] = NAN;

    /* the reference chain */
    if (post_fused)
        ms_ref_hc_post(y, res, pw, cw, dim, hc, n, href);
    else
        memcpy(href, res, nh * 4);
    ms_weight_view fv = {MS_WENC_F32, mix_n, K, fn, NULL};
    ms_ref_gemv_f32(&fv, href, K, mix, mix_n, n);
    ms_ref_hc_pre(mix, href, scale, base, dim, hc, n, t->iters, 1e-6, 1e-6, head, ref,
                  head ? NULL : ref + nx, head ? NULL : ref + nx + n_post);
    if (norm) ms_ref_rmsnorm(ref, nw, MS_WENC_BF16, ref, dim, n, 1e-6f);
    if (post_fused) memcpy(ref + nx + n_post + n_comb, href, nh * 4);

    rc = ms_vk_weight_upload(vk, &fv, 0, &w);
    if (!rc) rc = upload_new(vk, res, nh * 4, &b_res);
    if (!rc) rc = upload_new(vk, y, nx * 4, &b_y);
    if (!rc) rc = upload_new(vk, pw, (size_t)n * hc * 4, &b_pw);
    if (!rc) rc = upload_new(vk, cw, (size_t)n * hc * hc * 4, &b_cw);
    if (!rc) rc = upload_new(vk, scale, 12, &b_sc);
    if (!rc) rc = upload_new(vk, base, mix_n * 4, &b_base);
    if (!rc) rc = upload_new(vk, nw, (size_t)dim * 2, &b_nw);
    /* the streams: the new ones are written there (post), or the old ones read from there */
    if (!rc) rc = post_fused ? ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, nh * 4, &b_h) : upload_new(vk, res, nh * 4, &b_h);
    if (!rc) rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, (uint64_t)n * slices * (mix_n + 1) * 4, &b_part);
    uint32_t flags[64];
    for (uint32_t i = 0; i < 64; i++) flags[i] = 0xFFFFFFFFu;
    if (!rc) rc = n <= 64 ? upload_new(vk, flags, sizeof flags, &b_fl) : -MS_E_INVALID_ARG;
    if (!rc) rc = guarded_alloc(vk, nx * 4, &gx);
    if (!rc && n_post) rc = guarded_alloc(vk, n_post * 4, &gp);
    if (!rc && n_post) rc = guarded_alloc(vk, n_comb * 4, &gc);
    if (!rc) rc = ms_vk_cmd_begin(cmd);
    ms_vk_range hr = ms_vk_buf_range(&b_h, 0, nh * 4), pr = ms_vk_buf_range(&b_part, 0, b_part.size);
    ms_vk_range yr = ms_vk_buf_range(&b_y, 0, nx * 4), rr = ms_vk_buf_range(&b_res, 0, nh * 4);
    ms_vk_range pwr = ms_vk_buf_range(&b_pw, 0, (size_t)n * hc * 4), cwr = ms_vk_buf_range(&b_cw, 0, (size_t)n * hc * hc * 4);
    if (!rc && post_fused)
        rc = ms_vk_rec_hc_mix_watch(cmd, &w, yr, rr, pwr, cwr, hr, pr, ms_vk_buf_range(&b_fl, 0, 4ull * n), 7, dim,
                                    hc, n);
    else if (!rc)
        rc = ms_vk_rec_hc_mix(cmd, &w, yr, rr, pwr, cwr, hr, pr, dim, hc, n, false);
    ms_vk_cmd_barrier(cmd);
    ms_vk_range ox = guarded_range(&gx), op = n_post ? guarded_range(&gp) : ox, oc = n_post ? guarded_range(&gc) : ox;
    if (!rc)
        rc = ms_vk_rec_hc_pre_parts(cmd, pr, slices, hr, ms_vk_buf_range(&b_sc, 0, 12),
                                    ms_vk_buf_range(&b_base, 0, mix_n * 4), ox, op, oc,
                                    norm ? ms_vk_buf_range(&b_nw, 0, (size_t)dim * 2) : ms_vk_buf_range(&b_nw, 0, 0),
                                    dim, hc, n, t->iters, 1e-6f, 1e-6f, head);
    if (!rc) rc = ms_vk_cmd_end(cmd);
    if (!rc) rc = ms_vk_cmd_run(cmd);
    uint64_t dmg = 0, d2 = 0, d3 = 0;
    if (!rc) rc = guarded_read(vk, &gx, gpu, &dmg);
    if (!rc && n_post) rc = guarded_read(vk, &gp, gpu + nx, &d2);
    if (!rc && n_post) rc = guarded_read(vk, &gc, gpu + nx + n_post, &d3);
    if (!rc && post_fused) rc = ms_vk_download(vk, &b_h, 0, gpu + nx + n_post + n_comb, nh * 4);
    dmg += d2 + d3;
    uint32_t flag_bad = 0;
    if (!rc) rc = ms_vk_download(vk, &b_fl, 0, flags, 4ull * n);
    for (uint32_t i = 0; !rc && i < n; i++) {
        bool nf = false;
        for (size_t e = 0; post_fused && e < K; e++) nf |= !isfinite(href[(size_t)i * K + e]);
        flag_bad += flags[i] != (nf ? 7u : 0xFFFFFFFFu);
    }
    if (!rc) {
        cmp_result cr;
        compare(gpu, ref, (uint32_t)n_out, 1, (uint32_t)n_out, &cr);
        int ok = cr.nmse <= TOL_NMSE_HC_MIX && cr.n_nonfinite_mismatch == 0 && dmg == 0 && flag_bad == 0;
        char d[200];
        describe(ci, d, sizeof d);
        if (!ok || verbose)
            printf("  hc_mix    %s: nmse=%.2e (tol %.0e) nan=%llu nonfinite_mismatch=%llu guard_damage=%llu "
                   "wrong_flags=%u  %s\n",
                   d, cr.nmse, TOL_NMSE_HC_MIX, (unsigned long long)cr.n_nan,
                   (unsigned long long)cr.n_nonfinite_mismatch, (unsigned long long)dmg, flag_bad, ok ? "ok" : "FAIL");
        if (!ok) printf("    repeat with: test_ops -o hc_mix -s %llu\n", (unsigned long long)seed);
        rc = ok ? 0 : 1;
    } else {
        printf("  hc_mix    case %u: error: %s\n", ci, ms_strerror(rc));
        rc = 1;
    }
out:
    ms_vk_weight_free(vk, &w);
    ms_vk_buf *bs[] = {&b_fl, &b_fn, &b_res, &b_y, &b_pw, &b_cw, &b_sc, &b_base, &b_nw, &b_part, &b_h, &gx.buf, &gp.buf, &gc.buf};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) ms_vk_buf_free(vk, bs[i]);
    ms_free(fn);
    ms_free(res);
    ms_free(y);
    ms_free(pw);
    ms_free(cw);
    ms_free(href);
    ms_free(mix);
    ms_free(base);
    ms_free(ref);
    ms_free(gpu);
    ms_free(nw);
    return rc < 0 ? 1 : rc;
}

const ops_family ops_fam_hc_mix = {"hc_mix", (uint32_t)N_CASES, describe, run_case};
