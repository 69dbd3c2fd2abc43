// shaders/attention_reduce.comp — merges the split records of shaders/attention.comp (SPLIT 1)
// and adds the sink: one invocation per (query, head, vec4 of head_dim). Layout and maths:
// shaders/attention.h; CPU reference ms_ref_attention (engine/ref/attention.c).
#version 450
#extension GL_GOOGLE_include_directive : require

#include "attention.h"

layout(constant_id = MS_ATTN_RED_SPEC_WG) const uint WG = 256;
layout(constant_id = MS_ATTN_RED_SPEC_D) const uint D = 512;
layout(local_size_x_id = MS_ATTN_RED_SPEC_WG) in;

layout(push_constant) uniform Push { ms_attention_reduce_push p; };

layout(set = 0, binding = MS_ATTN_RED_BIND_SCRATCH, std430) readonly restrict buffer Rbuf { vec4 rec4[]; };
layout(set = 0, binding = MS_ATTN_RED_BIND_SINK, std430) readonly restrict buffer Kbuf { float sinks[]; };
layout(set = 0, binding = MS_ATTN_RED_BIND_O, std430) writeonly restrict buffer Obuf { vec4 o4[]; };

const uint NC = D / 4u, RSV = NC + 1u;

void main() {
    const uint gid = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    if (gid >= p.n * p.n_heads * NC) return;
    const uint c = gid % NC, th = gid / NC, h = th % p.n_heads, t = th / p.n_heads;
    const uint rec0 = t * p.n_split * p.n_heads + h; // record of split s: rec0 + s * n_heads

    // Every split's m starts at the sink, so M >= sink and no exp below overflows.
    float M = -1.0 / 0.0;
    bool bad = false;
    for (uint s = 0u; s < p.n_split; s++) {
        const vec4 ml = rec4[(rec0 + s * p.n_heads) * RSV + NC];
        if (isnan(ml.y)) bad = true; // the split saw a NaN score or a NaN sink
        M = ml.x > M ? ml.x : M;
    }
    const float sk = sinks[h];
    float l = sk == M ? 1.0 : exp(sk - M);
    vec4 acc = vec4(0.0);
    for (uint s = 0u; s < p.n_split; s++) {
        const uint r = (rec0 + s * p.n_heads) * RSV;
        const vec4 ml = rec4[r + NC];
        const float w = ml.x == M ? 1.0 : exp(ml.x - M);
        l += ml.y * w;
        acc += rec4[r + c] * w;
    }
    o4[th * NC + c] = bad || isnan(sk) ? vec4(uintBitsToFloat(0x7FC00000u)) : acc / l;
}
