/* Matrix-vector / small-batch matrix-matrix products over checkpoint-encoded weights.
 * Each weight is decoded exactly (ms_ref_weight_at); sums are accumulated in double so the
 * reference is closer to the exact result than any F32 kernel it judges. */
#include "engine/ref/ref.h"

/* w: [m][k] encoded; x: [n][x_stride]; y: [n][y_stride].
 * Columns are taken 8 at a time so each weight is decoded once per 8 outputs. */
static void gemv_any(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n) {
    for (uint32_t c0 = 0; c0 < n; c0 += 8) {
        uint32_t nc = n - c0 < 8 ? n - c0 : 8;
        for (uint32_t r = 0; r < w->m; r++) {
            double acc[8] = {0};
            for (uint32_t i = 0; i < w->k; i++) {
                double wv = ms_ref_weight_at(w, r, i);
                for (uint32_t c = 0; c < nc; c++) acc[c] += wv * x[(size_t)(c0 + c) * x_stride + i];
            }
            for (uint32_t c = 0; c < nc; c++) y[(size_t)(c0 + c) * y_stride + r] = (float)acc[c];
        }
    }
}

void ms_ref_gemv_f32(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n) {
    gemv_any(w, x, x_stride, y, y_stride, n);
}

void ms_ref_gemv_bf16(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                      uint32_t y_stride, uint32_t n) {
    gemv_any(w, x, x_stride, y, y_stride, n);
}

void ms_ref_gemv_fp8(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n) {
    gemv_any(w, x, x_stride, y, y_stride, n);
}

void ms_ref_gemv_fp4(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n) {
    gemv_any(w, x, x_stride, y, y_stride, n);
}

void ms_ref_gemv(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                 uint32_t y_stride, uint32_t n) {
    switch (w->enc) {
    case MS_WENC_F32: ms_ref_gemv_f32(w, x, x_stride, y, y_stride, n); return;
    case MS_WENC_BF16: ms_ref_gemv_bf16(w, x, x_stride, y, y_stride, n); return;
    case MS_WENC_FP8: ms_ref_gemv_fp8(w, x, x_stride, y, y_stride, n); return;
    case MS_WENC_FP4: ms_ref_gemv_fp4(w, x, x_stride, y, y_stride, n); return;
    case MS_WENC_COUNT: break;
    }
}
