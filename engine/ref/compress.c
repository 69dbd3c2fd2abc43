/* The gated-pooling compressor of V4_SPEC §3.4, state update and emission (the reference of
 * shaders/compress_pool.comp + compress_emit.comp). The pooling, shift, norm and stored-value
 * rounding are cmp_push's in engine/ref/v4_attn.c and its callers', operation for operation; the
 * one difference is RoPE, which rotates by the caller's F32 cos/sin table (ms_ref_rope_table, as
 * the shader) where cmp_push evaluates double angles: the rotated dims differ by ~1 ulp. */
#include <math.h>
#include <string.h>

#include "engine/ref/ref.h"
#include "engine/ref/v4_internal.h"

/* rows[j][ch] for every channel: per-channel softmax over the coff*ratio slots (coff 2: slots
 * < ratio hold the previous block and use channels [0, d), the others channels [d, 2d)); a slot
 * scoring -inf is empty and weighs nothing, whatever its kv holds. */
static void pool(const float *kv, const float *score, uint32_t ratio, uint32_t coff, uint32_t d,
                 float *row) {
    uint32_t w = coff * d, n_slots = coff * ratio;
    for (uint32_t ch = 0; ch < d; ch++) {
        double mx = -INFINITY;
        for (uint32_t sl = 0; sl < n_slots; sl++) {
            uint32_t col = sl >= ratio ? d * (coff - 1) + ch : ch;
            double v = score[(size_t)sl * w + col];
            if (v > mx) mx = v;
        }
        double sum = 0, acc = 0;
        for (uint32_t sl = 0; sl < n_slots; sl++) {
            uint32_t col = sl >= ratio ? d * (coff - 1) + ch : ch;
            double v = score[(size_t)sl * w + col];
            if (v == -INFINITY) continue;
            double e = exp(v - mx);
            sum += e;
            acc += e * kv[(size_t)sl * w + col];
        }
        row[ch] = (float)(acc / sum);
    }
}

void ms_ref_compress(const float *a, const float *g, uint32_t in_stride, const void *ape,
                     const void *norm, const float *cs, uint32_t pos0, float *kv, float *score,
                     float *rows, uint32_t n, uint32_t ratio, uint32_t coff, uint32_t d,
                     uint32_t rope_dim, uint32_t n_rows, float eps, uint32_t quant, bool hadamard) {
    uint32_t w = coff * d;
    for (uint32_t t = 0; t < n; t++) {
        uint64_t p = (uint64_t)pos0 + t;
        uint32_t ps = (uint32_t)(p % ratio), slot = (coff - 1) * ratio + ps;
        const float *at = a + (size_t)t * in_stride, *gt = g + (size_t)t * in_stride;
        for (uint32_t i = 0; i < w; i++) {
            kv[(size_t)slot * w + i] = at[i];
            score[(size_t)slot * w + i] = gt[i] + ms_ref_ld_f32(ape, (size_t)ps * w + i);
        }
        if (ps != ratio - 1) continue;
        uint64_t j = p / ratio;
        float *row = j < n_rows ? rows + (size_t)j * d : NULL; /* the emission is only seen here */
        if (row) pool(kv, score, ratio, coff, d, row);
        if (coff == 2) { /* block j becomes the "previous" block of j+1 */
            memcpy(kv, kv + (size_t)ratio * w, (size_t)ratio * w * sizeof(float));
            memcpy(score, score + (size_t)ratio * w, (size_t)ratio * w * sizeof(float));
        }
        if (!row) continue;
        ms_ref_rmsnorm(row, norm, MS_WENC_BF16, row, d, 1, eps);
        if (rope_dim)
            ms_ref_rope(row, 1, 1, d, d, d, d - rope_dim, rope_dim, cs + (size_t)t * rope_dim, false,
                        0.0f, false);
        if (hadamard) ms_ref_v4_hadamard(row, d);
        if (quant == 1) ms_ref_v4_fake_quant_fp8(row, d - rope_dim, 64);
        if (quant == 2) ms_ref_v4_fake_quant_fp4(row, d, 32);
    }
}
