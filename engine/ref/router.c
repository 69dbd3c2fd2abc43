/* The MoE router after the gate GEMV (V4_SPEC §3.10): the reference of shaders/router.comp. */
#include <math.h>
#include <string.h>

#include "engine/ref/ref.h"

static double softplus(double v) { return v > 0 ? v + log1p(exp(-v)) : log1p(exp(v)); }

/* What expert e is ranked by: its F32 score plus the bias (in double). */
static double rank_score(const float *l, const void *bias, uint32_t e) {
    return (double)(float)sqrt(softplus(l[e])) + (bias ? ms_ref_ld_f32(bias, e) : 0.0);
}

/* (v, e) ranks above (w, f): the higher value, equal values by the lower id, NaN last */
static bool above(double v, uint32_t e, double w, uint32_t f) {
    if (isnan(w)) return !isnan(v) || e < f;
    if (isnan(v)) return false;
    return v > w || (v == w && e < f);
}

void ms_ref_router(const float *logits, const void *bias, const int32_t *tid2eid,
                   const uint32_t *tokens, uint32_t n, uint32_t n_experts, uint32_t k, bool norm,
                   double scale, uint32_t *idx, float *w) {
    for (uint32_t t = 0; t < n; t++) {
        const float *l = logits + (size_t)t * n_experts;
        uint32_t *it = idx + (size_t)t * k;
        float *wt = w + (size_t)t * k;
        for (uint32_t j = 0; j < k; j++) {
            if (tid2eid) {
                it[j] = (uint32_t)tid2eid[(size_t)tokens[t] * k + j];
                continue;
            }
            uint32_t best = UINT32_MAX;
            double best_v = 0;
            for (uint32_t e = 0; e < n_experts; e++) {
                bool taken = false;
                for (uint32_t q = 0; q < j; q++) taken |= it[q] == e;
                if (taken) continue;
                double v = rank_score(l, bias, e);
                if (best == UINT32_MAX || above(v, e, best_v, best)) best = e, best_v = v;
            }
            it[j] = best;
        }
        double sum = 0;
        for (uint32_t j = 0; j < k; j++) sum += (float)sqrt(softplus(l[it[j]]));
        for (uint32_t j = 0; j < k; j++) {
            double s = (float)sqrt(softplus(l[it[j]]));
            wt[j] = (float)((norm ? s / sum : s) * scale);
        }
    }
}

void ms_ref_router_scores(const float *logits, const void *bias, uint32_t n_experts, float *score) {
    for (uint32_t e = 0; e < n_experts; e++) score[e] = (float)rank_score(logits, bias, e);
}
