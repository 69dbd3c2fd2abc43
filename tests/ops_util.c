/* tests/ops_util.c — helpers shared by test_ops and its op families (tests/ops_util.h). */
#include "tests/ops_util.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"


uint64_t g_rng;
uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
float rng_uniform(void) { return (float)((double)(rng_next() >> 11) * 0x1p-53 * 2.0 - 1.0); }

void fill_bytes(uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = rng_next();
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++) p[i] = (uint8_t)rng_next();
}

uint16_t f32_to_bf16(float f) { /* round to nearest even; inputs are finite */
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7FFF + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

/* Random weights in an encoding. Scales stay within a few binades of 1 so products stay finite.
 * NaN codes are excluded here and injected on purpose by the NaN/Inf cases. */
int make_weight(ms_wenc enc, uint32_t m, uint32_t k, void **data, uint8_t **scale) {
    size_t nd = ms_wenc_data_bytes(enc, m, k), ns = ms_wenc_scale_bytes(enc, m, k);
    *data = ms_malloc(nd);
    *scale = ns ? ms_malloc(ns) : NULL;
    if (!*data || (ns && !*scale)) return -MS_E_NOMEM;
    switch (enc) {
    case MS_WENC_F32:
        for (size_t i = 0; i < (size_t)m * k; i++) ((float *)*data)[i] = rng_uniform();
        break;
    case MS_WENC_BF16:
        for (size_t i = 0; i < (size_t)m * k; i++) ((uint16_t *)*data)[i] = f32_to_bf16(rng_uniform());
        break;
    case MS_WENC_FP8: {
        uint8_t *d = *data;
        fill_bytes(d, nd);
        for (size_t i = 0; i < nd; i++)
            if ((d[i] & 0x7F) == 0x7F) d[i] ^= 1; /* no NaN codes */
        break;
    }
    case MS_WENC_FP4: fill_bytes(*data, nd); break;
    case MS_WENC_COUNT: return -MS_E_INVALID_ARG;
    }
    for (size_t i = 0; i < ns; i++) (*scale)[i] = (uint8_t)(123 + rng_next() % 8);
    return 0;
}

/* Compares n_cols columns of m values at stride `stride`: NaN must meet NaN, Inf the same Inf. */
void compare(const float *gpu, const float *ref, uint32_t m, uint32_t n_cols, uint32_t stride,
                    cmp_result *r) {
    double num = 0, den = 0;
    memset(r, 0, sizeof *r);
    r->first_bad = UINT64_MAX;
    for (uint32_t c = 0; c < n_cols; c++)
        for (uint32_t i = 0; i < m; i++) {
            size_t j = (size_t)c * stride + i;
            float g = gpu[j], e = ref[j];
            if (!isfinite(e) || !isfinite(g)) {
                int ok = isnan(e) ? isnan(g) : (isinf(e) ? (isinf(g) && signbit(g) == signbit(e)) : 0);
                if (isnan(e)) r->n_nan++;
                if (isinf(e)) r->n_inf++;
                if (!ok) {
                    if (r->first_bad == UINT64_MAX) r->first_bad = j;
                    r->n_nonfinite_mismatch++;
                }
                continue;
            }
            num += ((double)g - e) * ((double)g - e);
            den += (double)e * e;
        }
    r->nmse = den > 0 ? num / den : num;
}

/* A GPU output buffer with guard words before and after the bound range. Everything not written
 * by the op (guards, stride padding) must still hold GUARD_WORD afterwards. */
int guarded_alloc(ms_vk *vk, uint64_t bytes, guarded *g) {
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    g->guard_bytes = caps->min_storage_offset_align > 256 ? caps->min_storage_offset_align : 256;
    g->bytes = bytes;
    uint64_t total = g->guard_bytes * 2 + bytes;
    int rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, total, &g->buf);
    if (rc) return rc;
    uint32_t *pat = ms_malloc(total);
    if (!pat) return -MS_E_NOMEM;
    for (uint64_t i = 0; i < total / 4; i++) pat[i] = GUARD_WORD;
    rc = ms_vk_upload(vk, &g->buf, 0, pat, total);
    ms_free(pat);
    return rc;
}

ms_vk_range guarded_range(const guarded *g) {
    return ms_vk_buf_range(&g->buf, g->guard_bytes, g->bytes);
}

/* Reads the output back into out[bytes/4]; returns the number of damaged guard words. */
int guarded_read(ms_vk *vk, const guarded *g, float *out, uint64_t *n_damaged) {
    uint64_t total = g->guard_bytes * 2 + g->bytes;
    uint32_t *all = ms_malloc(total);
    if (!all) return -MS_E_NOMEM;
    int rc = ms_vk_download(vk, &g->buf, 0, all, total);
    *n_damaged = 0;
    for (uint64_t i = 0; i < g->guard_bytes / 4; i++) {
        *n_damaged += all[i] != GUARD_WORD;
        *n_damaged += all[(g->guard_bytes + g->bytes) / 4 + i] != GUARD_WORD;
    }
    memcpy(out, (char *)all + g->guard_bytes, g->bytes);
    ms_free(all);
    return rc;
}

int upload_new(ms_vk *vk, const void *src, uint64_t bytes, ms_vk_buf *out) {
    int rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, bytes, out);
    return rc ? rc : ms_vk_upload(vk, out, 0, src, bytes);
}

int ops_exhaustive;

int make_expert_pool(const ms_vk_expert_layout *L, uint32_t nrec, bool nan_w, uint8_t *pool) {
    const uint32_t I = L->inter, dim = L->dim;
    const ms_wenc enc = L->enc;
    int rc = 0;
    for (uint32_t j = 0; j < nrec && !rc; j++) {
        void *d[3] = {0};
        uint8_t *s[3] = {0};
        const uint32_t m[3] = {I, I, dim}, kk[3] = {dim, dim, I};
        for (int q = 0; q < 3 && !rc; q++) rc = make_weight(enc, m[q], kk[q], &d[q], &s[q]);
        if (!rc) {
            const ms_weight_view v1 = {enc, I, dim, d[0], s[0]}, v3 = {enc, I, dim, d[1], s[1]},
                                 v2 = {enc, dim, I, d[2], s[2]};
            rc = ms_vk_expert_pack(L, &v1, &v3, &v2, pool + (size_t)j * L->record_bytes);
        }
        for (int q = 0; q < 3; q++) ms_free(d[q]), ms_free(s[q]);
    }
    if (rc || !nan_w) return rc;
    uint8_t *r0 = pool, *r1 = pool + (nrec > 1 ? L->record_bytes : 0);
    if (enc == MS_WENC_FP4) { /* FP4 has no NaN code: a NaN scale byte (0xFF) poisons 32 weights of one row */
        r0[L->w1_scale + 3 * (dim / 32) + 1] = 0xFF; /* w1 row 3 -> act row 3 of record 0's pairs */
        r1[L->w2_scale + 5 * (I / 32) + 0] = 0xFF;   /* w2 row 5 -> y row 5 of record 1's tokens */
    } else {
        r0[L->w3_data + 2 * dim + 17] = 0x7F; /* w3 row 2: u NaN */
        r1[L->w2_data + 7 * I + 3] = 0xFF;    /* w2 row 7 */
    }
    return 0;
}
