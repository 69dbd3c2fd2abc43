/* DeepSeek-V4 reference: attention of one layer (V4_SPEC §3.3–3.6) — low-rank queries, the shared
 * KV latent and its window ring, the gated-pooling compressors, the lightning indexer, sparse
 * attention with a per-head sink, inverse RoPE and the grouped output projection.
 *
 * Projections run over the whole sub-batch (they depend on nothing but the token); everything that
 * touches state — ring writes, compressor pooling, index selection, attention — runs token by token
 * in position order, exactly as the per-token rules say. So any split of a sequence into calls
 * computes every value with the same operations in the same order: bit-identical logits. */
#include <math.h>
#include <string.h>

#include "engine/ref/v4_internal.h"

/* Unweighted RMS normalisation of x[n] (the per-head query norm). */
static void rms_unweighted(float *x, uint32_t n, double eps) {
    double ss = 0;
    for (uint32_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (uint32_t i = 0; i < n; i++) x[i] *= inv;
}

/* Feeds token p to a compressor (V4_SPEC §3.4). a, g: [coff*d] the token's wkv and wgate outputs.
 * When p completes block j = p / r, pools the block into row[d] (per-channel softmax over the
 * slots), applies the learned RMSNorm and RoPE at the block's first position j*r, and returns
 * true; the caller applies the stored-value fake quantisation. */
static bool cmp_push(const v4_compressor *c, v4_cmp_state *st, const float *a, const float *g,
                     uint64_t p, const double *freq, uint32_t rope_dim, float eps, float *row) {
    uint32_t r = c->ratio, d = c->d, w = c->coff * d;
    uint32_t slot = (c->coff - 1) * r + (uint32_t)(p % r);
    size_t ape0 = (size_t)(p % r) * w; /* row p % r of ape */
    for (uint32_t i = 0; i < w; i++) {
        st->kv[(size_t)slot * w + i] = a[i];
        st->score[(size_t)slot * w + i] = g[i] + ms_ref_ld_f32(c->ape, ape0 + i);
    }
    if ((p + 1) % r) return false;

    /* Overlap (ratio 4): slots 0..r-1 hold block j-1 and use channels [0, d); slots r..2r-1
     * hold block j and use channels [d, 2d). Empty slots score -inf and weigh nothing. */
    uint32_t n_slots = c->coff * r;
    for (uint32_t ch = 0; ch < d; ch++) {
        double mx = -INFINITY;
        for (uint32_t sl = 0; sl < n_slots; sl++) {
            uint32_t col = sl >= r ? d * (c->coff - 1) + ch : ch;
            double v = st->score[(size_t)sl * w + col];
            if (v > mx) mx = v;
        }
        double sum = 0, acc = 0;
        for (uint32_t sl = 0; sl < n_slots; sl++) {
            uint32_t col = sl >= r ? d * (c->coff - 1) + ch : ch;
            double v = st->score[(size_t)sl * w + col];
            if (v == -INFINITY) continue;
            double e = exp(v - mx);
            sum += e;
            acc += e * st->kv[(size_t)sl * w + col];
        }
        row[ch] = (float)(acc / sum);
    }
    if (c->coff == 2) { /* block j becomes the "previous" block of j+1 */
        memcpy(st->kv, st->kv + (size_t)r * w, (size_t)r * w * sizeof(float));
        memcpy(st->score, st->score + (size_t)r * w, (size_t)r * w * sizeof(float));
    }
    ms_ref_rmsnorm(row, c->norm, MS_WENC_BF16, row, d, 1, eps);
    ms_ref_v4_rope(row + d - rope_dim, freq, rope_dim, p + 1 - r, false);
    return true;
}

/* Lightning-indexer selection for one query (V4_SPEC §3.5): marks sel[j] for the top
 * k = min(index_topk, nb) of the nb valid blocks (ms_ref_indexer: the GPU op's twin). qi:
 * [n_heads][head_dim] rotated FP4-valued queries; wi: [n_heads] head weights, already scaled (in
 * double, then rounded: hence w_scale 1, which leaves them unchanged); keys: [nb][head_dim]. */
static void index_select(const ms_v4_config *c, const float *qi, const float *wi,
                         const float *keys, uint64_t p, uint32_t nb, v4_scratch *sc, uint8_t *sel) {
    uint32_t k = c->index_topk < nb ? c->index_topk : nb;
    ms_ref_indexer(qi, wi, keys, (uint32_t)p, sc->isel_idx, 1, c->index_n_heads, c->index_head_dim,
                   4, c->index_topk, nb, 1.0f);
    memset(sel, 0, nb);
    for (uint32_t i = 0; i < k; i++) sel[sc->isel_idx[i]] = 1;
}

void ms_ref_v4_attention(ms_ref_session *s, uint32_t li, const float *x, uint32_t pos0, uint32_t n,
                         float *out) {
    const ms_ref_model *m = s->m;
    const ms_v4_config *c = &m->cfg;
    const v4_layer *L = &m->layers[li];
    v4_layer_state *st = &s->layers[li];
    v4_scratch *sc = &s->sc;
    uint32_t dim = c->dim, H = c->n_heads, hd = c->head_dim, rd = c->rope_dim, nope = hd - rd;
    uint32_t ql = c->q_lora_rank, G = c->o_groups, ol = c->o_lora_rank, qdim = H * hd;
    uint32_t nI = c->index_n_heads, dI = c->index_head_dim, r = L->ratio;
    float eps = (float)c->rms_norm_eps;

    /* Queries: wq_a -> q_norm -> wq_b; per-head RMS over all head_dim dims, then RoPE. */
    ms_ref_gemv(&L->wq_a, x, dim, sc->qr, ql, n);
    ms_ref_rmsnorm(sc->qr, L->q_norm, MS_WENC_BF16, sc->qr, ql, n, eps);
    ms_ref_gemv(&L->wq_b, sc->qr, ql, sc->q, qdim, n);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t h = 0; h < H; h++) {
            float *qh = sc->q + (size_t)t * qdim + (size_t)h * hd;
            rms_unweighted(qh, hd, c->rms_norm_eps);
            ms_ref_v4_rope(qh + nope, L->rope_freq, rd, pos0 + t, false);
        }
    v4_tap(s, pos0, li, "attn.q", false, sc->q, qdim);

    /* The single KV latent: wkv -> kv_norm -> RoPE; non-RoPE dims stored as e4m3 (block 64). */
    ms_ref_gemv(&L->wkv, x, dim, sc->kv, hd, n);
    ms_ref_rmsnorm(sc->kv, L->kv_norm, MS_WENC_BF16, sc->kv, hd, n, eps);
    for (uint32_t t = 0; t < n; t++) {
        float *kv = sc->kv + (size_t)t * hd;
        ms_ref_v4_rope(kv + nope, L->rope_freq, rd, pos0 + t, false);
        if (m->fq_kv_fp8) ms_ref_v4_fake_quant_fp8(kv, nope, 64);
    }
    v4_tap(s, pos0, li, "attn.kv", false, sc->kv, hd);

    if (r) {
        uint32_t w = L->cmp.coff * hd;
        ms_ref_gemv(&L->cmp.wkv, x, dim, sc->ca, w, n);
        ms_ref_gemv(&L->cmp.wgate, x, dim, sc->cg, w, n);
    }
    if (r == 4) {
        /* Indexer queries from the shared qr: RoPE on each head's last rope_dim dims, Hadamard,
         * FP4 (block 32). Head weights from x, scaled by index_head_dim^-0.5 * n_heads^-0.5. */
        ms_ref_gemv(&L->idx_wq_b, sc->qr, ql, sc->qi, nI * dI, n);
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t h = 0; h < nI; h++) {
                float *qh = sc->qi + ((size_t)t * nI + h) * dI;
                ms_ref_v4_rope(qh + dI - rd, L->rope_freq, rd, pos0 + t, false);
                ms_ref_v4_hadamard(qh, dI);
                if (m->fq_index_fp4) ms_ref_v4_fake_quant_fp4(qh, dI, 32);
            }
        ms_ref_gemv(&L->idx_wproj, x, dim, sc->wi, nI, n);
        double wscale = 1.0 / sqrt((double)dI) / sqrt((double)nI);
        for (uint32_t i = 0; i < n * nI; i++) sc->wi[i] = (float)(sc->wi[i] * wscale);
        ms_ref_gemv(&L->idx_cmp.wkv, x, dim, sc->ia, 2 * dI, n);
        ms_ref_gemv(&L->idx_cmp.wgate, x, dim, sc->ig, 2 * dI, n);
    }

    /* Token by token: ring write -> indexer (its compressor, then selection) -> compressor ->
     * attention -> inverse RoPE of the output at the query position. */
    for (uint32_t t = 0; t < n; t++) {
        uint64_t p = (uint64_t)pos0 + t;
        memcpy(st->ring + (size_t)(p % c->window) * hd, sc->kv + (size_t)t * hd, hd * sizeof(float));
        uint32_t nb = r ? (uint32_t)((p + 1) / r) : 0; /* complete blocks, incl. one ending at p */
        if (r == 4) {
            if (cmp_push(&L->idx_cmp, &st->idx, sc->ia + (size_t)t * 2 * dI,
                         sc->ig + (size_t)t * 2 * dI, p, L->rope_freq, rd, eps, sc->crow)) {
                ms_ref_v4_hadamard(sc->crow, dI);
                if (m->fq_index_fp4) ms_ref_v4_fake_quant_fp4(sc->crow, dI, 32);
                memcpy(st->idx.rows + (size_t)(p / 4) * dI, sc->crow, dI * sizeof(float));
            }
            index_select(c, sc->qi + (size_t)t * nI * dI, sc->wi + (size_t)t * nI, st->idx.rows,
                         p, nb, sc, sc->isel);
        }
        if (r) {
            uint32_t w = L->cmp.coff * hd;
            if (cmp_push(&L->cmp, &st->cmp, sc->ca + (size_t)t * w, sc->cg + (size_t)t * w, p,
                         L->rope_freq, rd, eps, sc->crow)) {
                if (m->fq_kv_fp8) ms_ref_v4_fake_quant_fp8(sc->crow, nope, 64);
                memcpy(st->cmp.rows + (size_t)(p / r) * hd, sc->crow, hd * sizeof(float));
            }
        }
        if (r) v4_tap(s, (uint32_t)p, li, "attn.cmp_rows", false, st->cmp.rows, (uint64_t)nb * hd);

        /* Visible rows: the window (oldest first), then compressed blocks in index order; for
         * ratio 4 the selected ones, listed ascending. The ring holds position x at x % window. */
        if (r == 4) {
            uint32_t ns = 0;
            for (uint32_t j = 0; j < nb; j++)
                if (sc->isel[j]) sc->sel[ns++] = j;
            if (s->tap_on && nb > c->index_topk) {
                ms_ref_indexer_scores(sc->qi + (size_t)t * nI * dI, sc->wi + (size_t)t * nI, st->idx.rows,
                                      nI, dI, nb, 1.0f, s->tap_buf);
                v4_tap(s, (uint32_t)p, li, "attn.idx_score", false, s->tap_buf, nb);
            }
            v4_tap(s, (uint32_t)p, li, "attn.idx_sel", true, sc->sel, ns);
            while (ns < c->index_topk) sc->sel[ns++] = 0xFFFFFFFFu;
        }
        float *o = sc->o + (size_t)t * qdim;
        ms_ref_attention(sc->q + (size_t)t * qdim, st->ring, st->cmp.rows, sc->sel, L->attn_sink,
                         (uint32_t)p, o, 1, H, hd, c->window, c->window, r, c->index_topk,
                         st->cmp.n_rows, 1.0 / sqrt((double)hd)); /* no YaRN mscale */
        for (uint32_t h = 0; h < H; h++) ms_ref_v4_rope(o + (size_t)h * hd + nope, L->rope_freq, rd, p, true);
    }
    v4_tap(s, pos0, li, "attn.o", false, sc->o, qdim);

    /* Grouped output: group g (heads g*H/G ...) through rows [g*ol, (g+1)*ol) of wo_a, then wo_b. */
    uint32_t gin = qdim / G;
    for (uint32_t g = 0; g < G; g++) {
        if ((size_t)g * ol % 128 == 0) {
            ms_weight_view wg = ms_weight_view_rows(&L->wo_a, g * ol, ol);
            ms_ref_gemv(&wg, sc->o + (size_t)g * gin, qdim, sc->u + (size_t)g * ol, G * ol, n);
        } else { /* group rows share a scale block with the previous group: use the full matrix */
            ms_ref_gemv(&L->wo_a, sc->o + (size_t)g * gin, qdim, sc->u_full, G * ol, n);
            for (uint32_t t = 0; t < n; t++)
                memcpy(sc->u + (size_t)t * G * ol + (size_t)g * ol,
                       sc->u_full + (size_t)t * G * ol + (size_t)g * ol, ol * sizeof(float));
        }
    }
    ms_ref_gemv(&L->wo_b, sc->u, G * ol, out, dim, n);
}
