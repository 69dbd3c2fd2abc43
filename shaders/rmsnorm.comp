// shaders/rmsnorm.comp — RMSNorm of rows with a weight.
// y = x * (1 / sqrt(mean(x^2) + eps)) * w, as ms_ref_rmsnorm (engine/ref/rmsnorm.c).
// Layout and constants: shaders/rmsnorm.h.
// One workgroup per row; F32 sum of squares per invocation, subgroupAdd, shared memory across
// subgroups. x and y may alias: each element is read, then written, by the same invocation.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_shader_16bit_storage : require

#include "rmsnorm.h"

layout(constant_id = MS_RMSNORM_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_RMSNORM_SPEC_W_BF16) const uint W_BF16 = 0;
layout(constant_id = MS_RMSNORM_SPEC_SG_MIN) const uint SG_MIN = 4;
layout(local_size_x_id = MS_RMSNORM_SPEC_WG) in;

layout(push_constant) uniform Push { ms_rmsnorm_push p; };

layout(set = 0, binding = MS_RMSNORM_BIND_X, std430) readonly buffer Xbuf { float xs[]; };
// Two views of w; the specialization constant picks one.
layout(set = 0, binding = MS_RMSNORM_BIND_W, std430) readonly buffer Wf { float wf[]; };
layout(set = 0, binding = MS_RMSNORM_BIND_W, std430) readonly buffer Wh { uint16_t wh[]; };
layout(set = 0, binding = MS_RMSNORM_BIND_Y, std430) writeonly buffer Ybuf { float ys[]; };

const uint NSG_MAX = (WG + SG_MIN - 1u) / SG_MIN;
shared float red[NSG_MAX];

void main() {
    const uint row = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (row >= p.n_rows) return; // whole workgroup: the 2-D grid may overshoot
    const uint tid = gl_LocalInvocationID.x;
    const uint base = row * p.dim;

    float ss = 0.0;
    for (uint i = tid; i < p.dim; i += WG) {
        const float v = xs[base + i];
        ss = fma(v, v, ss);
    }
    ss = subgroupAdd(ss);
    if (subgroupElect()) red[gl_SubgroupID] = ss;
    barrier();
    float tot = 0.0;
    for (uint g = 0u; g < gl_NumSubgroups; g++) tot += red[g];
    // As the reference: one reciprocal, then x * inv * w.
    const float inv = 1.0 / sqrt(tot / float(p.dim) + p.eps);

    for (uint i = tid; i < p.dim; i += WG) {
        const float w = W_BF16 != 0u ? uintBitsToFloat(uint(wh[i]) << 16) : wf[i];
        ys[base + i] = xs[base + i] * inv * w;
    }
}
