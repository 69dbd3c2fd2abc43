// shaders/fq.comp — Hadamard rotation and the official e4m3 / e2m1 fake quantisation of rows, in
// place (layout and maths: shaders/fq.h; CPU reference ms_ref_fq, engine/ref/fq.c).
#version 450
#extension GL_GOOGLE_include_directive : require

#include "fq.h"

layout(constant_id = MS_FQ_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_FQ_SPEC_QUANT) const uint QUANT = 1;
layout(constant_id = MS_FQ_SPEC_HADAMARD) const uint HADAMARD = 0;
layout(local_size_x_id = MS_FQ_SPEC_WG) in;

layout(push_constant) uniform Push { ms_fq_push p; };

layout(set = 0, binding = MS_FQ_BIND_X, std430) restrict buffer Xbuf { float xs[]; };

shared float hv[HADAMARD != 0u ? MS_FQ_MAX_HADAMARD : 1];

// |x| (clamped to max_v) rounded to the minifloat grid with mbits mantissa bits and smallest normal
// exponent emin, ties to even: within [2^e, 2^(e+1)) the step is 2^(e - mbits), below 2^emin the
// subnormal step 2^(emin - mbits); a / step is exact, so roundEven is RNE on the grid.
float round_minifloat(float x, int mbits, int emin, float max_v) {
    if (isnan(x)) return x;
    x = clamp(x, -max_v, max_v);
    const float a = abs(x);
    if (a == 0.0) return x;
    int ex;
    frexp(a, ex); // a = f * 2^ex, f in [0.5, 1)
    const int e = max(ex - 1, emin);
    const float step = ldexp(1.0, e - mbits);
    const float q = min(roundEven(a / step) * step, max_v);
    return x < 0.0 ? -q : q;
}

float pow2_scale(float amax, float inv_max) {
    const float t = amax * inv_max;
    int ex;
    const float f = frexp(t, ex);
    return f == 0.5 ? t : ldexp(1.0, ex);
}

float load_v(uint base, uint i) { return HADAMARD != 0u ? hv[i] : xs[base + i]; }

void main() {
    const uint r = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    if (r >= p.n_rows) return; // whole workgroup
    const uint tid = gl_LocalInvocationID.x, base = r * p.row_stride, n = p.len;
    if (HADAMARD != 0u) {
        for (uint i = tid; i < n; i += WG) hv[i] = xs[base + i];
        barrier();
        // butterflies of H_2m = [[H, H], [H, -H]], natural order: one pair per invocation
        for (uint h = 1u; h < n; h *= 2u) {
            for (uint q = tid; q < n / 2u; q += WG) {
                const uint j = (q / h) * 2u * h + (q % h);
                const float a = hv[j], b = hv[j + h];
                hv[j] = a + b;
                hv[j + h] = a - b;
            }
            barrier();
        }
        const float scale = inversesqrt(float(n));
        for (uint i = tid; i < n; i += WG) hv[i] *= scale;
        barrier();
        if (QUANT == 0u)
            for (uint i = tid; i < n; i += WG) xs[base + i] = hv[i];
    }
    if (QUANT == 0u) return;
    const uint block = QUANT == 1u ? 64u : 32u;
    const float floor_amax = QUANT == 1u ? 1e-4 : 6.0 * uintBitsToFloat(0x00800000u);
    const float inv_max = QUANT == 1u ? 1.0 / 448.0 : 1.0 / 6.0;
    for (uint b0 = tid * block; b0 < n; b0 += WG * block) {
        float amax = floor_amax;
        for (uint i = b0; i < b0 + block; i++) {
            const float a = abs(load_v(base, i));
            if (a > amax) amax = a; // a NaN is skipped, as in the reference
        }
        const float s = pow2_scale(amax, inv_max);
        for (uint i = b0; i < b0 + block; i++) {
            const float v = load_v(base, i) / s;
            xs[base + i] = (QUANT == 1u ? round_minifloat(v, 3, -6, 448.0)
                                         : round_minifloat(v, 1, 0, 6.0)) * s;
        }
    }
}
