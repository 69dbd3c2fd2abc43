/* Exact decoders for the checkpoint's number formats (V4_SPEC §2.1). */
#include <math.h>
#include <string.h>

#include "engine/ref/ref.h"

float ms_ref_bf16_to_f32(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* OCP e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa; no infinities; S.1111.111 is NaN.
 * Normal codes are rebuilt as F32 bits (exponent rebased by 127 - 7 = 120); subnormals are
 * m/8 * 2^-6 = m * 2^-9. Bits, not ldexpf: the reference decodes every weight through here. */
float ms_ref_e4m3_to_f32(uint8_t v) {
    uint32_t sign = (uint32_t)(v >> 7) << 31;
    uint32_t e = (v >> 3) & 0xF;
    uint32_t m = v & 7;
    if (e == 15 && m == 7) return NAN;
    if (e == 0) {
        float mag = (float)m * 0x1p-9f;
        return sign ? -mag : mag;
    }
    return bits_to_f32(sign | (e + 120) << 23 | m << 20);
}

/* e8m0: an unsigned biased exponent, 2^(v-127); 0xFF is NaN; 0 is 2^-127, an F32 subnormal. */
float ms_ref_e8m0_to_f32(uint8_t v) {
    if (v == 0xFF) return NAN;
    return v == 0 ? bits_to_f32(0x00400000u) : bits_to_f32((uint32_t)v << 23);
}

/* e2m1: 1 sign, 2 exponent (bias 1), 1 mantissa: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives. */
float ms_ref_fp4_to_f32(uint8_t nibble) {
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = mag[nibble & 7];
    return (nibble & 8) ? -v : v;
}

float ms_ref_weight_at(const ms_weight_view *w, uint32_t row, uint32_t col) {
    size_t k = w->k;
    switch (w->enc) {
    case MS_WENC_F32: return ms_ref_ld_f32(w->data, row * k + col);
    case MS_WENC_BF16: return ms_ref_ld_bf16(w->data, row * k + col);
    case MS_WENC_FP8: {
        size_t scale_cols = (k + 127) / 128;
        float q = ms_ref_e4m3_to_f32(((const uint8_t *)w->data)[row * k + col]);
        return q * ms_ref_e8m0_to_f32(w->scale[(row / 128) * scale_cols + col / 128]);
    }
    case MS_WENC_FP4: {
        uint8_t byte = ((const uint8_t *)w->data)[row * (k / 2) + col / 2];
        uint8_t nib = (col & 1) ? (uint8_t)(byte >> 4) : (uint8_t)(byte & 0xF);
        return ms_ref_fp4_to_f32(nib) * ms_ref_e8m0_to_f32(w->scale[row * (k / 32) + col / 32]);
    }
    case MS_WENC_COUNT: break;
    }
    return NAN;
}
