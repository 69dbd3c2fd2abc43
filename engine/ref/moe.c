/* The expert FFN over a pool of expert records (V4_SPEC §3.10; layout shaders/moe.h): the
 * references of shaders/moe.comp (moe_up_<enc>, moe_down_<enc>).
 *
 * What the forward pass computes per expert (engine/ref/v4_model.c run_experts): ms_ref_gemv for
 * w1 and w3, ms_ref_swiglu, ms_ref_gemv for w2, the w2 outputs added in double. The rows here give
 * ms_ref_gemv's results bit for bit (the same exact decode, the same double sum in order of the
 * column, one rounding to F32) but decode a 32/128-element scale block once and walk four rows at
 * a time: four independent sums keep the CPU busy where one is bound by the latency of the add,
 * which matters for the real expert shapes the tests run (hundreds of millions of products). */
#include "engine/ref/ref.h"

/* One matrix of one record: [m][k] in enc; lut: the decoded codes (16 e2m1 or 256 e4m3). */
typedef struct mat {
    ms_wenc enc;
    uint32_t m, k;
    const uint8_t *data, *scale;
    const float *lut;
} mat;

enum { NR = 4 }; /* rows per step */

/* The code of W[r][i] (an e2m1 nibble or an e4m3 byte). */
static uint8_t code_at(const mat *M, uint32_t r, uint32_t i) {
    if (M->enc == MS_WENC_FP8) return M->data[(size_t)r * M->k + i];
    const uint8_t byte = M->data[(size_t)r * (M->k / 2) + i / 2];
    return (i & 1) ? (uint8_t)(byte >> 4) : (uint8_t)(byte & 0xF);
}

/* y[j] = (float) sum_i W[r0 + j][i] * x[i] for j < nr (nr <= NR), each W decoded to F32 exactly as
 * ms_ref_weight_at (code value times the block scale, in float), the sum in order of i. */
static void dot_rows(const mat *M, uint32_t r0, uint32_t nr, const float *x, float *y) {
    double acc[NR] = {0};
    const uint32_t blk = M->enc == MS_WENC_FP4 ? 32 : 128;
    const uint32_t scols = (M->k + blk - 1) / blk;
    for (uint32_t b = 0; b < scols; b++) {
        float sc[NR] = {0};
        for (uint32_t j = 0; j < nr; j++) {
            const uint32_t srow = M->enc == MS_WENC_FP4 ? r0 + j : (r0 + j) / 128;
            sc[j] = ms_ref_e8m0_to_f32(M->scale[(size_t)srow * scols + b]);
        }
        const uint32_t i0 = b * blk, i1 = (b + 1) * blk < M->k ? (b + 1) * blk : M->k;
        if (nr == NR && M->enc == MS_WENC_FP4) {
            /* the common case, written so that the NR sums stay in registers and interleave */
            const uint8_t *d[NR];
            for (uint32_t j = 0; j < NR; j++) d[j] = M->data + (size_t)(r0 + j) * (M->k / 2) + i0 / 2;
            double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
            for (uint32_t i = 0; i < (i1 - i0) / 2; i++) {
                const double xl = x[i0 + 2 * i], xh = x[i0 + 2 * i + 1];
                a0 += (double)(M->lut[d[0][i] & 0xF] * sc[0]) * xl;
                a1 += (double)(M->lut[d[1][i] & 0xF] * sc[1]) * xl;
                a2 += (double)(M->lut[d[2][i] & 0xF] * sc[2]) * xl;
                a3 += (double)(M->lut[d[3][i] & 0xF] * sc[3]) * xl;
                a0 += (double)(M->lut[d[0][i] >> 4] * sc[0]) * xh;
                a1 += (double)(M->lut[d[1][i] >> 4] * sc[1]) * xh;
                a2 += (double)(M->lut[d[2][i] >> 4] * sc[2]) * xh;
                a3 += (double)(M->lut[d[3][i] >> 4] * sc[3]) * xh;
            }
            acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
        } else if (nr == NR) {
            const uint8_t *d[NR];
            for (uint32_t j = 0; j < NR; j++) d[j] = M->data + (size_t)(r0 + j) * M->k;
            double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
            for (uint32_t i = i0; i < i1; i++) {
                const double xv = x[i];
                a0 += (double)(M->lut[d[0][i]] * sc[0]) * xv;
                a1 += (double)(M->lut[d[1][i]] * sc[1]) * xv;
                a2 += (double)(M->lut[d[2][i]] * sc[2]) * xv;
                a3 += (double)(M->lut[d[3][i]] * sc[3]) * xv;
            }
            acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
        } else {
            for (uint32_t i = i0; i < i1; i++)
                for (uint32_t j = 0; j < nr; j++) acc[j] += (double)(M->lut[code_at(M, r0 + j, i)] * sc[j]) * x[i];
        }
    }
    for (uint32_t j = 0; j < nr; j++) y[j] = (float)acc[j];
}

/* The record of expert id e, or NULL when the id or its slot is out of range. */
static const uint8_t *record_of(const ms_ref_expert_layout *L, const void *pool, size_t pool_bytes,
                                const uint32_t *slots, uint32_t n_experts, uint32_t e) {
    if (e >= n_experts) return NULL;
    const uint64_t n_records = pool_bytes / L->record_bytes;
    if (slots[e] >= n_records) return NULL;
    return (const uint8_t *)pool + (size_t)slots[e] * L->record_bytes;
}

static void fill_lut(ms_wenc enc, float *lut) {
    if (enc == MS_WENC_FP4)
        for (uint32_t c = 0; c < 16; c++) lut[c] = ms_ref_fp4_to_f32((uint8_t)c);
    else
        for (uint32_t c = 0; c < 256; c++) lut[c] = ms_ref_e4m3_to_f32((uint8_t)c);
}

static mat mat_at(const ms_ref_expert_layout *L, const uint8_t *rec, uint64_t data, uint64_t scale, uint32_t m,
                  uint32_t k, const float *lut) {
    mat M = {L->enc, m, k, rec + data, rec + scale, lut};
    return M;
}

void ms_ref_moe_up(const ms_ref_expert_layout *L, const void *pool, size_t pool_bytes,
                   const uint32_t *slots, uint32_t n_experts, const uint32_t *idx, const float *rw,
                   const float *x, float *act, uint32_t n, uint32_t k, double limit) {
    float lut[256];
    fill_lut(L->enc, lut);
    const uint32_t dim = L->dim, I = L->inter;
    for (size_t pair = 0; pair < (size_t)n * k; pair++) {
        float *out = act + pair * I;
        const uint8_t *rec = record_of(L, pool, pool_bytes, slots, n_experts, idx[pair]);
        if (!rec) {
            for (uint32_t i = 0; i < I; i++) out[i] = 0.0f;
            continue;
        }
        const mat w1 = mat_at(L, rec, L->w1_data, L->w1_scale, I, dim, lut);
        const mat w3 = mat_at(L, rec, L->w3_data, L->w3_scale, I, dim, lut);
        const float *xt = x + (pair / k) * dim;
        for (uint32_t r = 0; r < I; r += NR) {
            const uint32_t nr = I - r < NR ? I - r : NR;
            float u[NR];
            dot_rows(&w1, r, nr, xt, out + r);
            dot_rows(&w3, r, nr, xt, u);
            ms_ref_swiglu(out + r, u, rw + pair, 1, nr, nr, limit);
        }
    }
}

void ms_ref_moe_down(const ms_ref_expert_layout *L, const void *pool, size_t pool_bytes,
                     const uint32_t *slots, uint32_t n_experts, const uint32_t *idx,
                     const float *act, const float *base, float *y, uint32_t n, uint32_t k) {
    float lut[256];
    fill_lut(L->enc, lut);
    const uint32_t dim = L->dim, I = L->inter;
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t r = 0; r < dim; r += NR) {
            const uint32_t nr = dim - r < NR ? dim - r : NR;
            double tot[NR];
            for (uint32_t j = 0; j < nr; j++) tot[j] = base[(size_t)t * dim + r + j];
            for (uint32_t a = 0; a < k; a++) {
                const uint8_t *rec = record_of(L, pool, pool_bytes, slots, n_experts, idx[(size_t)t * k + a]);
                if (!rec) continue;
                const mat w2 = mat_at(L, rec, L->w2_data, L->w2_scale, dim, I, lut);
                float ya[NR];
                dot_rows(&w2, r, nr, act + ((size_t)t * k + a) * I, ya);
                for (uint32_t j = 0; j < nr; j++) tot[j] += ya[j];
            }
            for (uint32_t j = 0; j < nr; j++) y[(size_t)t * dim + r + j] = (float)tot[j];
        }
}

void ms_ref_moe_group(const uint32_t *idx, const uint32_t *slots, uint32_t n_experts, uint64_t n_records,
                      uint32_t n, uint32_t k, uint32_t *offsets, uint32_t *list, uint32_t *pos) {
    const size_t np = (size_t)n * k;
    for (uint32_t e = 0; e <= n_experts; e++) offsets[e] = 0;
    for (size_t p = 0; p < np; p++) {
        const uint32_t e = idx[p];
        if (e < n_experts && slots[e] < n_records) offsets[e + 1]++;
    }
    for (uint32_t e = 0; e < n_experts; e++) offsets[e + 1] += offsets[e];
    /* pairs in ascending p: each lands after the earlier pairs of its expert */
    for (size_t p = 0; p < np; p++) {
        const uint32_t e = idx[p];
        if (e < n_experts && slots[e] < n_records) {
            pos[p] = offsets[e]++;
            list[pos[p]] = (uint32_t)p;
        } else {
            pos[p] = 0xFFFFFFFFu;
        }
    }
    /* offsets[e] now holds the start of e + 1: shift back */
    for (uint32_t e = n_experts; e > 0; e--) offsets[e] = offsets[e - 1];
    offsets[0] = 0;
}
