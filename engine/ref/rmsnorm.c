/* RMSNorm with a learned weight (V4_SPEC §3.0): y = w * x / sqrt(mean(x^2) + eps), in F32 with
 * the sum of squares accumulated in double. */
#include <math.h>

#include "engine/ref/ref.h"

/* x, y: [n_rows][dim] (may alias); w: [dim] F32 or BF16 */
void ms_ref_rmsnorm(const float *x, const void *w, ms_wenc w_enc, float *y, uint32_t dim,
                    uint32_t n_rows, float eps) {
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double ss = 0.0;
        for (uint32_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + (double)eps));
        for (uint32_t i = 0; i < dim; i++) {
            float wi = w_enc == MS_WENC_BF16 ? ms_ref_ld_bf16(w, i) : ms_ref_ld_f32(w, i);
            yr[i] = xr[i] * inv * wi;
        }
    }
}
