// shaders/hc_mix.comp — the mHC mixing GEMV (fn @ h) as split-K partial sums for hc_pre, with
// the previous sub-layer's hc_post optionally fused in (layout and maths: shaders/hc.h; CPU
// references ms_ref_hc_post + ms_ref_gemv_f32, engine/ref/).
//
// Workgroup (g, t) owns elements [g*WG, (g+1)*WG) of token t's hc*dim stream vector, one per
// invocation: with POST it first computes that element of the new streams (as hc_post.comp, the
// sum over source streams in order) and writes it; without, it reads it. Every invocation then
// multiplies its element by its column of all MIX rows of fn (coalesced across the workgroup) and
// by itself (the sum of squares hc_pre's RMS scale needs); the workgroup's sums go to part.
// At n = 1 this turns a GEMV of MIX long rows on a handful of workgroups, plus a separate hc_post
// dispatch and barrier, into one dispatch over hc*dim/WG workgroups.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "hc.h"

layout(constant_id = MS_HC_MIX_SPEC_WG) const uint WG = 256;
layout(constant_id = MS_HC_MIX_SPEC_POST) const uint POST = 0;
layout(constant_id = MS_HC_MIX_SPEC_MIX) const uint MIX = 24;
layout(constant_id = MS_HC_MIX_SPEC_SG_MIN) const uint SG_MIN = 4;
layout(local_size_x_id = MS_HC_MIX_SPEC_WG) in;

layout(push_constant) uniform Push { ms_hc_mix_push p; };

layout(set = 0, binding = MS_HC_MIX_BIND_FN, std430) readonly buffer Fbuf { float fn[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_Y, std430) readonly buffer Ybuf { float ys[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_RES, std430) readonly buffer Rbuf { float res[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_POST, std430) readonly buffer Pbuf { float posts[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_COMB, std430) readonly buffer Cbuf { float combs[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_H, std430) buffer Hbuf { float hs[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_PART, std430) writeonly buffer Obuf { float part[]; };
layout(set = 0, binding = MS_HC_MIX_BIND_FLAGS, std430) buffer Fl { uint flags[]; };

const uint NSG_MAX = (WG + SG_MIN - 1u) / SG_MIN;
shared float red[NSG_MAX * (MIX + 1u)];

void main() {
    const uint wgid = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    if (wgid >= p.n * p.n_slices) return; // whole workgroup
    const uint t = wgid / p.n_slices, g = wgid - t * p.n_slices;
    const uint tid = gl_LocalInvocationID.x, k_all = p.hc * p.dim, k = g * WG + tid;
    const bool live = k < k_all;
    float v = 0.0;
    if (live) {
        if (POST != 0u) {
            const uint s = k / p.dim, i = k - s * p.dim;
            float acc = posts[t * p.hc + s] * ys[t * p.dim + i];
            for (uint j = 0u; j < p.hc; j++)
                acc = fma(combs[(t * p.hc + j) * p.hc + s], res[t * k_all + j * p.dim + i], acc);
            hs[t * k_all + k] = acc;
            v = acc;
            if (p.watch != 0u && (isnan(acc) || isinf(acc))) atomicMin(flags[t], p.watch - 1u);
        } else {
            v = hs[t * k_all + k];
        }
    }
    const uint nsg = gl_NumSubgroups, sg = gl_SubgroupID;
    [[unroll]] for (uint r = 0u; r < MIX; r++) {
        const float s = subgroupAdd(live ? fn[r * k_all + k] * v : 0.0);
        if (subgroupElect()) red[sg * (MIX + 1u) + r] = s;
    }
    const float ss = subgroupAdd(v * v);
    if (subgroupElect()) red[sg * (MIX + 1u) + MIX] = ss;
    barrier();
    if (tid <= MIX) {
        float tot = 0.0;
        for (uint q = 0u; q < nsg; q++) tot += red[q * (MIX + 1u) + tid];
        part[wgid * (MIX + 1u) + tid] = tot;
    }
}
