// shaders/moe_sum.comp — y[t] = base[t] + the valid pairs' down outputs of token t, added in order of
// a (shaders/moe_grouped.h). One invocation per element of y, so the order is fixed and y may be
// base's range (each element is read, then written, by the same invocation). The CPU reference of
// the whole chain is ms_ref_moe_down (engine/ref/moe.c), whose sum is in double.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "moe_grouped.h"

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push { ms_moe_grouped_push p; };

layout(set = 0, binding = MS_MOE_SUM_BIND_POS, std430) readonly restrict buffer Pos { uint pos[]; };
layout(set = 0, binding = MS_MOE_SUM_BIND_OUT, std430) readonly restrict buffer Obuf { float outs[]; };
// base and y may be one range: no restrict.
layout(set = 0, binding = MS_MOE_SUM_BIND_BASE, std430) readonly buffer Base { float base[]; };
layout(set = 0, binding = MS_MOE_SUM_BIND_Y, std430) writeonly buffer Ybuf { float ys[]; };

void main() {
    const uint i = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    if (i >= p.n * p.dim) return;
    const uint t = i / p.dim, r = i - t * p.dim;
    float tot = base[i];
    for (uint a = 0u; a < p.k; a++) {
        const uint q = t * p.k + a;
        if (pos[q] != MS_MOE_NO_SLOT) tot += outs[q * p.dim + r];
    }
    ys[i] = tot;
}
