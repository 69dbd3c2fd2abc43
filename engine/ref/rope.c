/* Rotary embedding on a table of cos/sin (the reference of shaders/rope.comp, V4_SPEC §3.7). */
#include <math.h>

#include "engine/ref/ref.h"

void ms_ref_rope_table(const double *freq, uint32_t rope_dim, uint64_t pos, float *cs) {
    for (uint32_t i = 0; i < rope_dim / 2; i++) {
        double ang = (double)pos * freq[i];
        cs[2 * i] = (float)cos(ang);
        cs[2 * i + 1] = (float)sin(ang);
    }
}

void ms_ref_rope(float *x, uint32_t n, uint32_t n_heads, uint32_t head_dim, uint32_t head_stride,
                 uint32_t token_stride, uint32_t off, uint32_t rope_dim, const float *cs,
                 bool rms, float eps, bool inverse) {
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            float *v = x + (size_t)t * token_stride + (size_t)h * head_stride;
            if (rms) {
                double ss = 0;
                for (uint32_t i = 0; i < head_dim; i++) ss += (double)v[i] * v[i];
                float inv = (float)(1.0 / sqrt(ss / head_dim + eps));
                for (uint32_t i = 0; i < head_dim; i++) v[i] *= inv;
            }
            const float *c = cs + (size_t)t * rope_dim;
            for (uint32_t i = 0; i < rope_dim / 2; i++) {
                double a = v[off + 2 * i], b = v[off + 2 * i + 1];
                double co = c[2 * i], sn = inverse ? -c[2 * i + 1] : c[2 * i + 1];
                v[off + 2 * i] = (float)(a * co - b * sn);
                v[off + 2 * i + 1] = (float)(a * sn + b * co);
            }
        }
}
