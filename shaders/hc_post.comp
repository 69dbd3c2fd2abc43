// shaders/hc_post.comp — mHC post: h[t][k][i] = post[t][k] y[t][i] + sum_j comb[t][j][k] res[t][j][i]
// (layout: shaders/hc.h; CPU reference ms_ref_hc_post, engine/ref/hc.c). One invocation per
// output element; the sum runs over the source streams j in order, as the reference does.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "hc.h"

layout(constant_id = MS_HC_POST_SPEC_WG) const uint WG = 256;
layout(local_size_x_id = MS_HC_POST_SPEC_WG) in;

layout(push_constant) uniform Push { ms_hc_post_push p; };

layout(set = 0, binding = MS_HC_POST_BIND_Y, std430) readonly buffer Ybuf { float ys[]; };
layout(set = 0, binding = MS_HC_POST_BIND_RES, std430) readonly buffer Rbuf { float res[]; };
layout(set = 0, binding = MS_HC_POST_BIND_POST, std430) readonly buffer Pbuf { float posts[]; };
layout(set = 0, binding = MS_HC_POST_BIND_COMB, std430) readonly buffer Cbuf { float combs[]; };
layout(set = 0, binding = MS_HC_POST_BIND_H, std430) writeonly buffer Hbuf { float hs[]; };

void main() {
    const uint gid = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    const uint per_t = p.hc * p.dim;
    if (gid >= p.n * per_t) return;
    const uint t = gid / per_t, r = gid - t * per_t, k = r / p.dim, i = r - k * p.dim;
    float acc = posts[t * p.hc + k] * ys[t * p.dim + i];
    for (uint j = 0u; j < p.hc; j++)
        acc = fma(combs[(t * p.hc + j) * p.hc + k], res[t * per_t + j * p.dim + i], acc);
    hs[gid] = acc;
}
