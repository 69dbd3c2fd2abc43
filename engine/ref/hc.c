/* Manifold-constrained hyper-connections around a sub-layer (V4_SPEC §3.2): the references of
 * shaders/hc_pre.comp and hc_post.comp, and what the forward pass (v4_session.c) runs. */
#include <math.h>

#include "engine/ref/ref.h"
#include "engine/ref/v4_internal.h"

void ms_ref_hc_pre(const float *mixraw, const float *h, const void *scale, const void *base,
                   uint32_t dim, uint32_t hc, uint32_t n, uint32_t sinkhorn_iters, double hc_eps,
                   double rms_eps, bool head, float *x, float *post, float *comb) {
    const uint32_t mix_n = head ? hc : (2 + hc) * hc, k = hc * dim;
    for (uint32_t t = 0; t < n; t++) {
        const float *ht = h + (size_t)t * k;
        double ss = 0;
        for (uint32_t i = 0; i < k; i++) ss += (double)ht[i] * ht[i];
        double rs = 1.0 / sqrt(ss / k + rms_eps);
        float mix[(2 + MS_V4_MAX_HC) * MS_V4_MAX_HC], pre[MS_V4_MAX_HC];
        for (uint32_t j = 0; j < mix_n; j++) mix[j] = (float)(mixraw[(size_t)t * mix_n + j] * rs);
        if (head) {
            for (uint32_t c = 0; c < hc; c++) {
                double v = (double)mix[c] * ms_ref_ld_f32(scale, 0) + ms_ref_ld_f32(base, c);
                pre[c] = (float)(1.0 / (1.0 + exp(-v)) + hc_eps);
            }
        } else {
            ms_ref_v4_hc_split(mix, scale, base, hc, sinkhorn_iters, hc_eps, pre,
                               post + (size_t)t * hc, comb + (size_t)t * hc * hc);
        }
        for (uint32_t i = 0; i < dim; i++) {
            double acc = 0;
            for (uint32_t c = 0; c < hc; c++) acc += (double)pre[c] * ht[(size_t)c * dim + i];
            x[(size_t)t * dim + i] = (float)acc;
        }
    }
}

void ms_ref_hc_post(const float *y, const float *res, const float *post, const float *comb,
                    uint32_t dim, uint32_t hc, uint32_t n, float *h) {
    for (uint32_t t = 0; t < n; t++) {
        const float *yt = y + (size_t)t * dim, *rt = res + (size_t)t * hc * dim;
        const float *pt = post + (size_t)t * hc, *ct = comb + (size_t)t * hc * hc;
        float *out = h + (size_t)t * hc * dim;
        for (uint32_t k = 0; k < hc; k++)
            for (uint32_t i = 0; i < dim; i++) {
                double acc = (double)pt[k] * yt[i];
                for (uint32_t j = 0; j < hc; j++) acc += (double)ct[j * hc + k] * rt[(size_t)j * dim + i];
                out[(size_t)k * dim + i] = (float)acc;
            }
    }
}

void ms_ref_hc_embed(const void *embed, uint32_t vocab, const uint32_t *tokens, uint32_t dim,
                     uint32_t hc, uint32_t n, float *h) {
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t c = 0; c < hc; c++)
            for (uint32_t i = 0; i < dim; i++) {
                float v = NAN;
                if (tokens[t] < vocab) v = ms_ref_ld_bf16(embed, (size_t)tokens[t] * dim + i);
                h[((size_t)t * hc + c) * dim + i] = v;
            }
}
