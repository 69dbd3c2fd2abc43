/* The expert activation (V4_SPEC §3.10): the reference of shaders/swiglu.comp and what the MoE
 * of the forward pass applies. */
#include <math.h>

#include "engine/ref/ref.h"

void ms_ref_swiglu(float *gate, const float *up, const float *w, uint32_t n, uint32_t inter,
                   uint32_t stride, double limit) {
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t i = 0; i < inter; i++) {
            size_t j = (size_t)t * stride + i;
            double gv = gate[j], uv = up[j];
            if (limit > 0) {
                uv = uv < -limit ? -limit : uv > limit ? limit : uv;
                gv = gv > limit ? limit : gv;
            }
            gate[j] = (float)(gv / (1.0 + exp(-gv)) * uv * w[t]);
        }
}
