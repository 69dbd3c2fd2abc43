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
    const float g0 = gs[j], u0 = us[j];
    float g = g0, u = u0;
    if (p.limit > 0.0) {
        u = clamp(u, -p.limit, p.limit);
        g = min(g, p.limit);
    }
    // clamp and min may turn a NaN into the bound (NVIDIA does); the reference keeps it NaN
    gs[j] = isnan(g0) || isnan(u0) ? g0 + u0 : g / (1.0 + exp(-g)) * u * ws[t];
}
