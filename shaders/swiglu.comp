// shaders/swiglu.comp — clamped SwiGLU with the routing weight, in place on the gate rows
// (layout and maths: shaders/swiglu.h; CPU reference ms_ref_swiglu, engine/ref/swiglu.c).
#version 450
#extension GL_GOOGLE_include_directive : require

#include "swiglu.h"

layout(constant_id = MS_SWIGLU_SPEC_WG) const uint WG = 256;
layout(local_size_x_id = MS_SWIGLU_SPEC_WG) in;

layout(push_constant) uniform Push { ms_swiglu_push p; };

layout(set = 0, binding = MS_SWIGLU_BIND_GATE, std430) restrict buffer Gbuf { float gs[]; };
layout(set = 0, binding = MS_SWIGLU_BIND_UP, std430) readonly restrict buffer Ubuf { float us[]; };
layout(set = 0, binding = MS_SWIGLU_BIND_W, std430) readonly restrict buffer Wbuf { float ws[]; };

void main() {
    const uint gid = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    if (gid >= p.n * p.inter) return;
    const uint t = gid / p.inter, i = gid - t * p.inter, j = t * p.stride + i;
    float g = gs[j], u = us[j];
    if (p.limit > 0.0) {
        // comparisons, not clamp/min: a NaN stays NaN (clamp and min may return the bound)
        u = u < -p.limit ? -p.limit : (u > p.limit ? p.limit : u);
        g = g > p.limit ? p.limit : g;
    }
    gs[j] = g / (1.0 + exp(-g)) * u * ws[t];
}
