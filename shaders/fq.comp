// shaders/fq.comp — Hadamard rotation and the official e4m3 / e2m1 fake quantisation of rows, in
// place (layout and maths: shaders/fq.h; CPU reference ms_ref_fq, engine/ref/fq.c). The rounding
// and the rotation are shaders/fq.glsl, shared with compress_emit.comp.
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
#define FQ_HV hv
#include "fq.glsl"

float load_v(uint base, uint i) { return HADAMARD != 0u ? hv[i] : xs[base + i]; }

void main() {
    const uint r = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    if (r >= p.n_rows) return; // whole workgroup
    const uint tid = gl_LocalInvocationID.x, base = r * p.row_stride, n = p.len;
    if (HADAMARD != 0u) {
        for (uint i = tid; i < n; i += WG) hv[i] = xs[base + i];
        barrier();
        fq_hadamard(n, tid, WG);
        if (QUANT == 0u)
            for (uint i = tid; i < n; i += WG) xs[base + i] = hv[i];
    }
    if (QUANT == 0u) return;
    const uint block = fq_block(QUANT);
    for (uint b0 = tid * block; b0 < n; b0 += WG * block) {
        float amax = fq_floor_amax(QUANT);
        for (uint i = b0; i < b0 + block; i++) {
            const float a = abs(load_v(base, i));
            if (a > amax) amax = a; // a NaN is skipped, as in the reference
        }
        const float s = fq_pow2_scale(amax, fq_inv_max(QUANT));
        for (uint i = b0; i < b0 + block; i++) xs[base + i] = fq_round(QUANT, load_v(base, i) / s) * s;
    }
}
