/* Sparse attention with a per-head sink and the KV ring store (V4_SPEC §3.3, §3.6): the references
 * of shaders/attention.comp (with attention_reduce.comp) and shaders/kv_store.comp, and what the
 * forward pass (engine/ref/v4_attn.c) attends with, one query at a time.
 *
 * The per-head maths is the two-pass softmax of the forward pass, in double: the max over the
 * sink and every score, then the denominator (the sink's term first, then the entries in visiting
 * order) and the weighted sum of the rows in the same order. The scores are computed twice (once
 * per pass) instead of being stored, so the function needs no scratch beyond a stack block of the
 * output accumulators; recomputing gives the same doubles, hence the same bits. */
#include <math.h>

#include "engine/ref/ref.h"

#define ACC_CHUNK 512 /* output dims accumulated per pass over the entries (V4 head_dim: one) */

/* The entries one query at position p sees, in visiting order (window oldest first, then the
 * compressed rows): k < n_win are ring rows, the rest compressed slots. */
typedef struct att_entries {
    const float *ring, *rows;
    const uint32_t *sel; /* [topk] this query's list (ratio 4), else NULL */
    uint64_t w0;         /* first window position */
    uint32_t n_win, n_cmp, nb, ring_len, hd;
} att_entries;

/* Row of entry k, or NULL when the slot lists no visible block (0xFFFFFFFF, index >= nb). */
static const float *entry_row(const att_entries *a, uint32_t k) {
    if (k < a->n_win) return a->ring + (size_t)((a->w0 + k) % a->ring_len) * a->hd;
    uint32_t j = k - a->n_win;
    if (a->sel) {
        j = a->sel[j];
        if (j == 0xFFFFFFFFu || j >= a->nb) return NULL;
    }
    return a->rows + (size_t)j * a->hd;
}

static double dot(const float *a, const float *b, uint32_t n) {
    double acc = 0;
    for (uint32_t i = 0; i < n; i++) acc += (double)a[i] * b[i];
    return acc;
}

/* One head of one query: qh [hd], o [hd]. */
static void attend_head(const att_entries *a, const float *qh, double sink, double scale, float *o) {
    const uint32_t hd = a->hd, n_ent = a->n_win + a->n_cmp;
    double mx = sink; /* max(m, sink): the same result, no overflow when the sink dominates */
    for (uint32_t k = 0; k < n_ent; k++) {
        const float *r = entry_row(a, k);
        if (!r) continue;
        double z = dot(qh, r, hd) * scale;
        if (z > mx) mx = z;
    }
    double acc[ACC_CHUNK];
    for (uint32_t c0 = 0; c0 < hd; c0 += ACC_CHUNK) {
        const uint32_t cw = hd - c0 < ACC_CHUNK ? hd - c0 : ACC_CHUNK;
        double denom = exp(sink - mx);
        for (uint32_t i = 0; i < cw; i++) acc[i] = 0;
        for (uint32_t k = 0; k < n_ent; k++) {
            const float *r = entry_row(a, k);
            if (!r) continue;
            double w = exp(dot(qh, r, hd) * scale - mx);
            denom += w;
            for (uint32_t i = 0; i < cw; i++) acc[i] += w * r[c0 + i];
        }
        for (uint32_t i = 0; i < cw; i++) o[c0 + i] = (float)(acc[i] / denom);
    }
}

void ms_ref_attention(const float *q, const float *ring, const float *rows, const uint32_t *sel,
                      const void *sink, uint32_t pos0, float *o, uint32_t n, uint32_t n_heads,
                      uint32_t head_dim, uint32_t window, uint32_t ring_len, uint32_t ratio,
                      uint32_t topk, uint32_t n_rows, double scale) {
    for (uint32_t t = 0; t < n; t++) {
        const uint64_t p = (uint64_t)pos0 + t;
        att_entries a = {.ring = ring, .rows = rows, .ring_len = ring_len, .hd = head_dim};
        a.n_win = (uint32_t)(p + 1 < window ? p + 1 : window);
        a.w0 = p + 1 - a.n_win;
        if (ratio) {
            uint64_t nb = (p + 1) / ratio; /* complete blocks, incl. one ending at p */
            a.nb = (uint32_t)(nb < n_rows ? nb : n_rows);
        }
        if (ratio == 4) {
            a.sel = sel + (size_t)t * topk;
            a.n_cmp = topk;
        } else {
            a.n_cmp = a.nb;
        }
        const size_t qt = (size_t)t * n_heads * head_dim;
        for (uint32_t h = 0; h < n_heads; h++)
            attend_head(&a, q + qt + (size_t)h * head_dim, ms_ref_ld_f32(sink, h), scale,
                        o + qt + (size_t)h * head_dim);
    }
}

void ms_ref_kv_store(const float *src, float *ring, uint32_t pos0, uint32_t n, uint32_t head_dim,
                     uint32_t ring_len) {
    for (uint32_t t = 0; t < n; t++) {
        float *dst = ring + (size_t)(((uint64_t)pos0 + t) % ring_len) * head_dim;
        memcpy(dst, src + (size_t)t * head_dim, head_dim * sizeof(float));
    }
}
