/* Exact decoders for the checkpoint's number formats (V4_SPEC §2.1). */
#include <math.h>
#include <string.h>

#include "engine/ref/ref.h"

const char *ms_wenc_name(ms_wenc enc) {
    switch (enc) {
    case MS_WENC_F32: return "f32";
    case MS_WENC_BF16: return "bf16";
    case MS_WENC_FP8: return "fp8";
    case MS_WENC_FP4: return "fp4";
    case MS_WENC_COUNT: break;
    }
    return "?";
}

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

size_t ms_wenc_data_bytes(ms_wenc enc, uint32_t m, uint32_t k) {
    switch (enc) {
    case MS_WENC_F32: return (size_t)m * k * 4;
    case MS_WENC_BF16: return (size_t)m * k * 2;
    case MS_WENC_FP8: return (size_t)m * k;
    case MS_WENC_FP4: return (size_t)m * (k / 2);
    case MS_WENC_COUNT: break;
    }
    return 0;
}

size_t ms_wenc_scale_bytes(ms_wenc enc, uint32_t m, uint32_t k) {
    switch (enc) {
    case MS_WENC_FP8: return ceil_div(m, 128) * ceil_div(k, 128);
    case MS_WENC_FP4: return (size_t)m * (k / 32);
    case MS_WENC_F32:
    case MS_WENC_BF16:
    case MS_WENC_COUNT: break;
    }
    return 0;
}

float ms_ref_bf16_to_f32(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* OCP e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa; no infinities; S.1111.111 is NaN. */
float ms_ref_e4m3_to_f32(uint8_t v) {
    int sign = v >> 7;
    int e = (v >> 3) & 0xF;
    int m = v & 7;
    float mag;
    if (e == 15 && m == 7)
        return NAN;
    else if (e == 0)
        mag = ldexpf((float)m, -9); /* subnormal: m/8 * 2^-6 */
    else
        mag = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return sign ? -mag : mag;
}

/* e8m0: an unsigned biased exponent, 2^(v-127); 0xFF is NaN. */
float ms_ref_e8m0_to_f32(uint8_t v) {
    if (v == 0xFF) return NAN;
    return ldexpf(1.0f, (int)v - 127);
}

/* e2m1: 1 sign, 2 exponent (bias 1), 1 mantissa: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives. */
float ms_ref_fp4_to_f32(uint8_t nibble) {
    int sign = (nibble >> 3) & 1;
    int e = (nibble >> 1) & 3;
    int m = nibble & 1;
    float mag = e == 0 ? 0.5f * (float)m : ldexpf(1.0f + 0.5f * (float)m, e - 1);
    return sign ? -mag : mag;
}

float ms_ref_weight_at(const ms_weight_view *w, uint32_t row, uint32_t col) {
    size_t k = w->k;
    switch (w->enc) {
    case MS_WENC_F32: return ((const float *)w->data)[row * k + col];
    case MS_WENC_BF16: return ms_ref_bf16_to_f32(((const uint16_t *)w->data)[row * k + col]);
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
