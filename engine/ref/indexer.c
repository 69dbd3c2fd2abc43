/* The lightning indexer's block selection (V4_SPEC §3.5): the reference of shaders/indexer_*.comp
 * and what the attention of the forward pass selects with (engine/ref/v4_attn.c).
 *
 * Reference functions never allocate, so the k best blocks live in the output row itself as a
 * binary min-heap of block indices (the weakest at the root), and a score is recomputed whenever the
 * heap needs it. Recomputing repeats the same double arithmetic, so a block always gets the same
 * score. Cost: one score per block, plus about 2 log2(k) for each block that enters the heap (a few
 * thousand for random scores; every block when the scores rise with the index). */
#include <math.h>

#include "engine/ref/ref.h"

typedef struct query {
    const float *q;    /* [n_heads][head_dim] */
    const float *w;    /* [n_heads] unscaled head weights */
    const float *keys; /* [n_keys][head_dim] */
    uint32_t n_heads, head_dim;
    float w_scale;
} query;

/* sum_h max(q_h . key_j, 0) * w_h in double, w_h = w[h] * w_scale rounded to F32 first; a NaN dot
 * product counts as 0 (the ReLU's comparison fails) and a NaN score ranks as -inf. */
static double score(const query *qr, uint32_t j) {
    const float *key = qr->keys + (size_t)j * qr->head_dim;
    double s = 0;
    for (uint32_t h = 0; h < qr->n_heads; h++) {
        const float *qh = qr->q + (size_t)h * qr->head_dim;
        double qk = 0;
        for (uint32_t i = 0; i < qr->head_dim; i++) qk += (double)qh[i] * key[i];
        float wh = qr->w[h] * qr->w_scale;
        s += (qk > 0 ? qk : 0) * wh;
    }
    return isnan(s) ? -INFINITY : s;
}

/* Block a (score sa) ranks above block b (score sb): the higher score, equal scores by the lower
 * index (torch.topk leaves the order of ties open; this is the rule every backend follows). */
static bool above(double sa, uint32_t a, double sb, uint32_t b) { return sa > sb || (sa == sb && a < b); }

/* The block at slot i of the heap (score si) moves down until it ranks below both children
 * (every block ranks above its parent). */
static void sift_down(const query *qr, uint32_t *heap, uint32_t size, uint32_t i, double si) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, low = i;
        double s_low = si;
        if (l < size) {
            double sl = score(qr, heap[l]);
            if (above(s_low, heap[low], sl, heap[l])) low = l, s_low = sl;
        }
        if (r < size) {
            double sr = score(qr, heap[r]);
            if (above(s_low, heap[low], sr, heap[r])) low = r;
        }
        if (low == i) return;
        uint32_t tmp = heap[i];
        heap[i] = heap[low];
        heap[low] = tmp;
        i = low;
    }
}

/* The block at slot i moves up while it ranks below its parent. */
static void sift_up(const query *qr, uint32_t *heap, uint32_t i) {
    double si = score(qr, heap[i]);
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!above(score(qr, heap[parent]), heap[parent], si, heap[i])) return;
        uint32_t tmp = heap[i];
        heap[i] = heap[parent];
        heap[parent] = tmp;
        i = parent;
    }
}

/* Max-heap step of the final sort: v[c] moves down among v[0..size). */
static void sift_max(uint32_t *v, uint32_t size, uint32_t c) {
    for (;;) {
        uint32_t l = 2 * c + 1, big = c;
        if (l < size && v[l] > v[big]) big = l;
        if (l + 1 < size && v[l + 1] > v[big]) big = l + 1;
        if (big == c) return;
        uint32_t tmp = v[c];
        v[c] = v[big];
        v[big] = tmp;
        c = big;
    }
}

/* Ascending order of k indices, in place (heapsort: no allocation, O(k log k)). */
static void sort_indices(uint32_t *v, uint32_t k) {
    for (uint32_t i = k / 2; i-- > 0;) sift_max(v, k, i);
    for (uint32_t end = k; end > 1; end--) {
        uint32_t tmp = v[0];
        v[0] = v[end - 1];
        v[end - 1] = tmp;
        sift_max(v, end - 1, 0);
    }
}

void ms_ref_indexer(const float *q, const float *w, const float *keys, uint32_t pos0, uint32_t *sel,
                    uint32_t n, uint32_t n_heads, uint32_t head_dim, uint32_t ratio, uint32_t topk,
                    uint32_t n_keys, float w_scale) {
    for (uint32_t t = 0; t < n; t++) {
        uint64_t nb64 = ((uint64_t)pos0 + t + 1) / ratio; /* complete blocks, incl. one ending at p */
        uint32_t nb = nb64 < n_keys ? (uint32_t)nb64 : n_keys;
        uint32_t k = topk < nb ? topk : nb;
        uint32_t *row = sel + (size_t)t * topk;
        if (k == nb) { /* every visible block is selected; the scores cannot change that */
            for (uint32_t j = 0; j < nb; j++) row[j] = j;
        } else {
            query qr = {q + (size_t)t * n_heads * head_dim, w + (size_t)t * n_heads, keys, n_heads,
                        head_dim, w_scale};
            for (uint32_t j = 0; j < k; j++) {
                row[j] = j;
                sift_up(&qr, row, j);
            }
            double s_root = score(&qr, row[0]);
            for (uint32_t j = k; j < nb; j++) {
                double s = score(&qr, j);
                if (!above(s, j, s_root, row[0])) continue;
                row[0] = j;
                sift_down(&qr, row, k, 0, s);
                s_root = score(&qr, row[0]);
            }
            sort_indices(row, k);
        }
        for (uint32_t j = k; j < topk; j++) row[j] = UINT32_MAX;
    }
}

void ms_ref_indexer_scores(const float *q, const float *w, const float *keys, uint32_t n_heads,
                           uint32_t head_dim, uint32_t nb, float w_scale, float *out) {
    query qr = {q, w, keys, n_heads, head_dim, w_scale};
    for (uint32_t j = 0; j < nb; j++) out[j] = (float)score(&qr, j);
}
