// shaders/rope.comp — rotary embedding of part of every head, optionally after an unweighted
// per-head RMS (layout and maths: shaders/rope.h; CPU reference ms_ref_rope, engine/ref/rope.c).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_shader_16bit_storage : require

#include "rope.h"

layout(constant_id = MS_ROPE_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_ROPE_SPEC_RMS) const uint RMS = 0;
layout(constant_id = MS_ROPE_SPEC_INVERSE) const uint INVERSE = 0;
layout(constant_id = MS_ROPE_SPEC_SG_MIN) const uint SG_MIN = 4;
layout(local_size_x_id = MS_ROPE_SPEC_WG) in;

layout(push_constant) uniform Push { ms_rope_push p; };

layout(set = 0, binding = MS_ROPE_BIND_X, std430) restrict buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_ROPE_BIND_CS, std430) readonly restrict buffer Cbuf { vec2 cs[]; };
layout(set = 0, binding = MS_ROPE_BIND_W, std430) readonly restrict buffer Wbuf { uint16_t wh[]; };

// The RMS weight of element i (RMS == 2), else 1.
float wt(uint i) { return RMS == 2u ? uintBitsToFloat(uint(wh[i]) << 16) : 1.0; }

const uint NSG_MAX = (WG + SG_MIN - 1u) / SG_MIN;
shared float red[NSG_MAX];

void main() {
    const uint wid = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    if (wid >= p.n * p.n_heads) return; // whole workgroup
    const uint t = wid / p.n_heads, h = wid - t * p.n_heads, tid = gl_LocalInvocationID.x;
    const uint base = t * p.token_stride + h * p.head_stride;
    float inv = 1.0;
    if (RMS != 0u) {
        float ss = 0.0;
        for (uint i = tid; i < p.head_dim; i += WG) ss = fma(xs[base + i], xs[base + i], ss);
        ss = subgroupAdd(ss);
        if (subgroupElect()) red[gl_SubgroupID] = ss;
        barrier();
        float tot = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++) tot += red[g];
        inv = 1.0 / sqrt(tot / float(p.head_dim) + p.eps);
        // normalise the dims outside the rotated part here; the rotated ones below
        for (uint i = tid; i < p.head_dim; i += WG)
            if (i < p.off || i >= p.off + p.rope_dim) xs[base + i] = xs[base + i] * inv * wt(i);
    }
    const uint half_dim = p.rope_dim / 2u;
    for (uint i = tid; i < half_dim; i += WG) {
        const vec2 c = cs[t * half_dim + i];
        const float sn = INVERSE != 0u ? -c.y : c.y;
        const uint j = base + p.off + 2u * i;
        const uint e = p.off + 2u * i;
        const float a = RMS == 2u ? xs[j] * inv * wt(e) : xs[j] * inv;
        const float b = RMS == 2u ? xs[j + 1u] * inv * wt(e + 1u) : xs[j + 1u] * inv;
        xs[j] = fma(a, c.x, -b * sn);
        xs[j + 1u] = fma(a, sn, b * c.x);
    }
}
