/* DeepSeek-V4 reference: sessions and the top level of the forward pass (V4_SPEC §3.1–3.2, §3.11):
 * embedding into hc_mult residual streams, per layer mHC around attention and MoE, the final
 * hc_head, norm and head. */
#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/ref/v4_internal.h"

/* Zeroed allocation remembered for ms_ref_session_free; NULL when out of memory. */
static void *salloc(ms_ref_session *s, size_t count, size_t size) {
    if (s->n_allocs == s->cap_allocs) {
        uint32_t cap = s->cap_allocs ? 2 * s->cap_allocs : 64;
        void **a = ms_realloc(s->allocs, cap * sizeof *a);
        if (!a) return NULL;
        s->allocs = a;
        s->cap_allocs = cap;
    }
    void *p = ms_calloc(count ? count : 1, size);
    if (p) s->allocs[s->n_allocs++] = p;
    return p;
}

static bool cmp_state_alloc(ms_ref_session *s, v4_cmp_state *cs, const v4_compressor *c,
                            uint32_t max_tokens) {
    size_t slots = (size_t)c->coff * c->ratio * c->coff * c->d;
    cs->n_rows = max_tokens / c->ratio;
    cs->kv = salloc(s, slots, sizeof(float));
    cs->score = salloc(s, slots, sizeof(float));
    cs->rows = salloc(s, (size_t)cs->n_rows * c->d, sizeof(float));
    return cs->kv && cs->score && cs->rows;
}

static void cmp_state_reset(v4_cmp_state *cs, const v4_compressor *c) {
    size_t slots = (size_t)c->coff * c->ratio * c->coff * c->d;
    memset(cs->kv, 0, slots * sizeof(float));
    for (size_t i = 0; i < slots; i++) cs->score[i] = -INFINITY; /* empty slot */
    memset(cs->rows, 0, (size_t)cs->n_rows * c->d * sizeof(float));
}

static uint64_t cmp_state_bytes(const v4_cmp_state *cs, const v4_compressor *c) {
    uint64_t slots = (uint64_t)c->coff * c->ratio * c->coff * c->d;
    return (2 * slots + (uint64_t)cs->n_rows * c->d) * sizeof(float);
}

uint64_t ms_ref_session_kv_bytes(const ms_ref_session *s) {
    const ms_v4_config *c = &s->m->cfg;
    uint64_t b = 0;
    for (uint32_t li = 0; li < c->n_layers; li++) {
        const v4_layer *L = &s->m->layers[li];
        const v4_layer_state *st = &s->layers[li];
        b += (uint64_t)s->ring_len * c->head_dim * sizeof(float);
        if (L->ratio) b += cmp_state_bytes(&st->cmp, &L->cmp);
        if (L->ratio == 4) b += cmp_state_bytes(&st->idx, &L->idx_cmp);
    }
    return b;
}

void ms_ref_session_reset(ms_ref_session *s) {
    const ms_v4_config *c = &s->m->cfg;
    for (uint32_t li = 0; li < c->n_layers; li++) {
        const v4_layer *L = &s->m->layers[li];
        v4_layer_state *st = &s->layers[li];
        memset(st->ring, 0, (size_t)s->ring_len * c->head_dim * sizeof(float));
        if (L->ratio) cmp_state_reset(&st->cmp, &L->cmp);
        if (L->ratio == 4) cmp_state_reset(&st->idx, &L->idx_cmp);
    }
    s->pos = 0;
    s->nf_seen = false;
}

int ms_ref_session_create(const ms_ref_model *m, uint32_t max_tokens, ms_ref_session **out) {
    *out = NULL;
    if (!m || max_tokens == 0) return -MS_E_INVALID_ARG;
    ms_ref_session *s = ms_calloc(1, sizeof *s);
    if (!s) return -MS_E_NOMEM;
    s->m = m;
    s->max_tokens = max_tokens;
    const ms_v4_config *c = &m->cfg;
    size_t B = MS_V4_SUB_BATCH, dim = c->dim, hc = c->hc_mult, mix = (2 + hc) * hc;
    size_t qdim = (size_t)c->n_heads * c->head_dim, uo = (size_t)c->o_groups * c->o_lora_rank;
    size_t dI = c->index_head_dim, nI = c->index_n_heads, K = c->n_active_experts;
    size_t I = c->moe_inter_dim, wide = 2 * (c->head_dim > dI ? c->head_dim : dI);
    /* Sized by what the session can hold, not by the config's maximum: a window of 2^20 with a
     * 3-token session costs 3 rows, not 2^20 (that once allocated and zeroed gigabytes). */
    s->ring_len = c->window < max_tokens ? c->window : max_tokens;
    bool ok = true;

    s->layers = salloc(s, c->n_layers, sizeof *s->layers);
    ok = s->layers != NULL;
    for (uint32_t li = 0; ok && li < c->n_layers; li++) {
        const v4_layer *L = &m->layers[li];
        v4_layer_state *st = &s->layers[li];
        st->ring = salloc(s, (size_t)s->ring_len * c->head_dim, sizeof(float));
        ok = st->ring != NULL;
        if (ok && L->ratio) ok = cmp_state_alloc(s, &st->cmp, &L->cmp, max_tokens);
        if (ok && L->ratio == 4) ok = cmp_state_alloc(s, &st->idx, &L->idx_cmp, max_tokens);
    }
    v4_scratch *sc = &s->sc;
    if (ok) {
        sc->h = salloc(s, B * hc * dim, sizeof(float));
        sc->res = salloc(s, B * hc * dim, sizeof(float));
        sc->x = salloc(s, B * dim, sizeof(float));
        sc->y = salloc(s, B * dim, sizeof(float));
        sc->post = salloc(s, B * hc, sizeof(float));
        sc->comb = salloc(s, B * hc * hc, sizeof(float));
        sc->mix = salloc(s, B * mix, sizeof(float));
        sc->qr = salloc(s, B * c->q_lora_rank, sizeof(float));
        sc->q = salloc(s, B * qdim, sizeof(float));
        sc->kv = salloc(s, B * c->head_dim, sizeof(float));
        sc->o = salloc(s, B * qdim, sizeof(float));
        sc->u = salloc(s, B * uo, sizeof(float));
        sc->u_full = salloc(s, B * uo, sizeof(float));
        sc->ca = salloc(s, B * wide, sizeof(float));
        sc->cg = salloc(s, B * wide, sizeof(float));
        sc->ia = salloc(s, B * 2 * dI, sizeof(float));
        sc->ig = salloc(s, B * 2 * dI, sizeof(float));
        sc->qi = salloc(s, B * nI * dI, sizeof(float));
        sc->wi = salloc(s, B * nI, sizeof(float));
        sc->crow = salloc(s, wide, sizeof(float));
        sc->isel_idx = salloc(s, c->index_topk, sizeof(uint32_t));
        sc->isel = salloc(s, max_tokens / 4 + 1, 1);
        sc->sel = salloc(s, c->index_topk ? c->index_topk : 1, sizeof(uint32_t));
        sc->glog = salloc(s, B * c->n_routed_experts, sizeof(float));
        sc->route = salloc(s, B * K, sizeof(uint32_t));
        sc->rw = salloc(s, B * K, sizeof(float));
        sc->ex_x = salloc(s, B * dim, sizeof(float));
        sc->ex_t = salloc(s, B, sizeof(uint32_t));
        sc->ex_w = salloc(s, B, sizeof(float));
        sc->ex_g = salloc(s, B * I, sizeof(float));
        sc->ex_u = salloc(s, B * I, sizeof(float));
        sc->ex_y = salloc(s, B * dim, sizeof(float));
        sc->moe_acc = salloc(s, B * dim, sizeof(double));
        sc->hfin = salloc(s, B * dim, sizeof(float));
        size_t tb = (size_t)max_tokens / 4 + 1;
        s->tap_buf = salloc(s, c->n_routed_experts > tb ? c->n_routed_experts : tb, sizeof(float));
        ok = sc->h && sc->res && sc->x && sc->y && sc->post && sc->comb && sc->mix && sc->qr &&
             sc->q && sc->kv && sc->o && sc->u && sc->u_full && sc->ca && sc->cg && sc->ia &&
             sc->ig && sc->qi && sc->wi && sc->crow && sc->isel_idx && sc->isel && sc->sel &&
             sc->glog && sc->route && sc->rw && sc->ex_x && sc->ex_t &&
             sc->ex_w && sc->ex_g && sc->ex_u && sc->ex_y && sc->moe_acc && sc->hfin && s->tap_buf;
    }
    if (!ok) {
        ms_ref_session_free(s);
        return -MS_E_NOMEM;
    }
    ms_ref_session_reset(s);
    *out = s;
    return 0;
}

void ms_ref_session_free(ms_ref_session *s) {
    if (!s) return;
    for (uint32_t i = 0; i < s->n_allocs; i++) ms_free(s->allocs[i]);
    ms_free(s->allocs);
    ms_free(s);
}

uint32_t ms_ref_session_pos(const ms_ref_session *s) { return s->pos; }

void ms_ref_session_set_tap(ms_ref_session *s, ms_ref_tap_fn fn, void *ctx) {
    s->tap = fn;
    s->tap_ctx = fn ? ctx : NULL;
}

int ms_ref_session_nonfinite(const ms_ref_session *s, ms_ref_nonfinite *out) {
    if (!s->nf_seen) return -MS_E_NOT_FOUND;
    *out = s->nf;
    return 0;
}

/* Records the first non-finite value in a stage's output rows [n][row_len] for the sub-batch at
 * s->pos. Stages come in dataflow order, so a later stage can only improve on a record with an
 * earlier token, and a record from an earlier call (an earlier position) is final. A clean run
 * reads the streams once per sub-layer, next to the sub-layer's GEMVs over the same tokens: no
 * measurable cost (test_golden 21.4 s before and after, median of 3). */
static void watch_nonfinite(ms_ref_session *s, const float *rows, size_t row_len, uint32_t n,
                            uint32_t layer, const char *stage) {
    uint32_t n_scan = n;
    if (s->nf_seen) {
        if (s->nf.pos < s->pos) return;
        n_scan = s->nf.pos - s->pos;
    }
    for (uint32_t t = 0; t < n_scan; t++)
        for (size_t i = 0; i < row_len; i++)
            if (!isfinite(rows[(size_t)t * row_len + i])) {
                s->nf_seen = true;
                s->nf = (ms_ref_nonfinite){s->pos + t, layer, stage};
                return;
            }
}

/* mHC pre for n tokens (ms_ref_hc_pre, the twin of shaders/hc_pre.comp): the mixing GEMV of the
 * streams with the sub-layer's checkpoint F32 fn [mix][hc*dim], then x [n][dim], post [n][hc],
 * comb [n][hc][hc] (head: only x, into out). */
static void hc_pre(ms_ref_session *s, const void *fn, const void *scale, const void *base,
                   bool head, float *out, uint32_t n) {
    const ms_v4_config *c = &s->m->cfg;
    v4_scratch *sc = &s->sc;
    uint32_t hc = c->hc_mult, k = hc * c->dim, mix_n = head ? hc : (2 + hc) * hc;
    ms_weight_view w = {MS_WENC_F32, mix_n, k, fn, NULL};
    ms_ref_gemv(&w, sc->h, k, sc->mix, mix_n, n);
    ms_ref_hc_pre(sc->mix, sc->h, scale, base, c->dim, hc, n, c->hc_sinkhorn_iters, c->hc_eps,
                  c->rms_norm_eps, head, out, head ? NULL : sc->post, head ? NULL : sc->comb);
}

/* One sub-batch of n <= MS_V4_SUB_BATCH tokens at positions s->pos...; logits: [n][vocab]. */
static void forward_batch(ms_ref_session *s, const uint32_t *tokens, uint32_t n, float *logits) {
    const ms_ref_model *m = s->m;
    const ms_v4_config *c = &m->cfg;
    v4_scratch *sc = &s->sc;
    uint32_t dim = c->dim, hc = c->hc_mult;
    float eps = (float)c->rms_norm_eps;
    size_t stream_bytes = (size_t)n * hc * dim * sizeof(float);
    uint32_t p = s->pos;
    s->tap_on = s->tap && n == 1;

    /* Embedding copied into every stream: no scaling, no gate. */
    ms_ref_hc_embed(m->embed, c->vocab_size, tokens, dim, hc, n, sc->h);

    for (uint32_t li = 0; li < c->n_layers; li++) {
        const v4_layer *L = &m->layers[li];
        memcpy(sc->res, sc->h, stream_bytes);
        hc_pre(s, L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, false, sc->x, n);
        ms_ref_rmsnorm(sc->x, L->attn_norm, MS_WENC_BF16, sc->x, dim, n, eps);
        v4_tap(s, p, li, "attn.x", false, sc->x, dim);
        ms_ref_v4_attention(s, li, sc->x, s->pos, n, sc->y);
        v4_tap(s, p, li, "attn.y", false, sc->y, dim);
        ms_ref_hc_post(sc->y, sc->res, sc->post, sc->comb, dim, hc, n, sc->h);
        v4_tap(s, p, li, "attn.h", false, sc->h, (uint64_t)hc * dim);
        watch_nonfinite(s, sc->h, (size_t)hc * dim, n, li, "attention");

        memcpy(sc->res, sc->h, stream_bytes);
        hc_pre(s, L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, false, sc->x, n);
        ms_ref_rmsnorm(sc->x, L->ffn_norm, MS_WENC_BF16, sc->x, dim, n, eps);
        v4_tap(s, p, li, "ffn.x", false, sc->x, dim);
        ms_ref_v4_moe(s, li, sc->x, tokens, n, sc->y);
        v4_tap(s, p, li, "ffn.y", false, sc->y, dim);
        ms_ref_hc_post(sc->y, sc->res, sc->post, sc->comb, dim, hc, n, sc->h);
        v4_tap(s, p, li, "ffn.h", false, sc->h, (uint64_t)hc * dim);
        watch_nonfinite(s, sc->h, (size_t)hc * dim, n, li, "moe");
    }

    /* hc_head: the streams' weighted sum (sigmoid weights, no Sinkhorn), then norm and head. */
    hc_pre(s, m->hc_head_fn, m->hc_head_scale, m->hc_head_base, true, sc->hfin, n);
    ms_ref_rmsnorm(sc->hfin, m->norm, MS_WENC_BF16, sc->hfin, dim, n, eps);
    ms_ref_gemv(&m->head, sc->hfin, dim, logits, c->vocab_size, n);
    v4_tap(s, p, c->n_layers, "head.logits", false, logits, c->vocab_size);
    watch_nonfinite(s, logits, c->vocab_size, n, c->n_layers, "head");
    s->tap_on = false;
    s->pos += n;
}

int ms_ref_session_forward(ms_ref_session *s, const uint32_t *tokens, uint32_t n, float *logits) {
    const ms_v4_config *c = &s->m->cfg;
    if (n == 0 || !tokens || !logits) return -MS_E_INVALID_ARG;
    if ((uint64_t)s->pos + n > s->max_tokens) return -MS_E_RANGE;
    for (uint32_t t = 0; t < n; t++)
        if (tokens[t] >= c->vocab_size) return -MS_E_INVALID_ARG;
    for (uint32_t t0 = 0; t0 < n; t0 += MS_V4_SUB_BATCH) {
        uint32_t nb = n - t0 < MS_V4_SUB_BATCH ? n - t0 : MS_V4_SUB_BATCH;
        forward_batch(s, tokens + t0, nb, logits + (size_t)t0 * c->vocab_size);
    }
    return 0;
}
