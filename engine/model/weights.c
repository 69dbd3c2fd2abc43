/* engine/model/weights.c — weight-encoding byte maths (weights.h). */
#include "engine/model/weights.h"

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
    return ms_wenc_scale_rows_bytes(enc, 0, m, k);
}

size_t ms_wenc_scale_rows_bytes(ms_wenc enc, uint32_t row0, uint32_t rows, uint32_t k) {
    switch (enc) {
    case MS_WENC_FP8: /* the 128-row scale blocks that rows [row0, row0+rows) touch */
        return (ceil_div((size_t)row0 + rows, 128) - row0 / 128) * ceil_div(k, 128);
    case MS_WENC_FP4: return (size_t)rows * (k / 32);
    case MS_WENC_F32:
    case MS_WENC_BF16:
    case MS_WENC_COUNT: break;
    }
    return 0;
}

size_t ms_wenc_scale_rows_offset(ms_wenc enc, uint32_t row0, uint32_t k) {
    if (enc == MS_WENC_FP8) return (size_t)(row0 / 128) * ceil_div(k, 128);
    if (enc == MS_WENC_FP4) return (size_t)row0 * (k / 32);
    return 0;
}

ms_weight_view ms_weight_view_rows(const ms_weight_view *w, uint32_t r0, uint32_t m) {
    ms_weight_view v = *w;
    v.m = m;
    v.data = (const uint8_t *)w->data + ms_wenc_data_bytes(w->enc, r0, w->k);
    if (w->scale) v.scale = w->scale + ms_wenc_scale_rows_offset(w->enc, r0, w->k);
    return v;
}
