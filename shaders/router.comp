// shaders/router.comp — the MoE router after the gate GEMV: sqrt-softplus scores, hash or
// bias-corrected top-K selection, renormalised and scaled weights (layout: shaders/router.h; CPU
// reference ms_ref_router, engine/ref/router.c). One workgroup per token.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "router.h"

layout(constant_id = MS_ROUTER_SPEC_WG) const uint WG = 256;
layout(constant_id = MS_ROUTER_SPEC_HASH) const uint HASH = 0;
layout(constant_id = MS_ROUTER_SPEC_NORM) const uint NORM = 1;
layout(local_size_x_id = MS_ROUTER_SPEC_WG) in;

layout(push_constant) uniform Push { ms_router_push p; };

layout(set = 0, binding = MS_ROUTER_BIND_LOGITS, std430) readonly buffer Lbuf { float logits[]; };
layout(set = 0, binding = MS_ROUTER_BIND_BIAS, std430) readonly buffer Bbuf { float bias[]; };
layout(set = 0, binding = MS_ROUTER_BIND_TOK, std430) readonly buffer Tbuf { uint toks[]; };
layout(set = 0, binding = MS_ROUTER_BIND_T2E, std430) readonly buffer Hbuf { int t2e[]; };
layout(set = 0, binding = MS_ROUTER_BIND_IDX, std430) writeonly buffer Ibuf { uint idx_out[]; };
layout(set = 0, binding = MS_ROUTER_BIND_W, std430) writeonly buffer Wbuf { float w_out[]; };

shared uint picked[MS_ROUTER_MAX_K];
shared uint keys[MS_ROUTER_MAX_E]; /* last: the small arrays above stay at low offsets */

// log(1 + x) for x >= 0 without the cancellation of log(1 + x) near 0
float log1p_(float x) {
    const float u = 1.0 + x;
    return u == 1.0 ? x : log(u) * (x / (u - 1.0));
}

float score(float l) { // sqrt(softplus(l)), as the reference's two branches
    const float sp = l > 0.0 ? l + log1p_(exp(-l)) : log1p_(exp(l));
    return sqrt(sp);
}

// A uint whose order is the float order (NaN lowest, -0 = +0); every number maps to >= 1.
uint order_key(float v) {
    if (isnan(v)) return 0u;
    const uint u = floatBitsToUint(v == 0.0 ? 0.0 : v);
    const uint k = (u & 0x80000000u) != 0u ? ~u : u | 0x80000000u;
    return max(k, 1u);
}

void main() {
    const uint t = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    if (t >= p.n) return; // whole workgroup
    const uint tid = gl_LocalInvocationID.x, E = p.n_experts, K = p.k;
    const uint lb = t * E;

    if (HASH != 0u) {
        for (uint j = tid; j < K; j += WG) picked[j] = uint(t2e[min(toks[t], p.vocab - 1u) * K + j]);
    } else {
        // selection by rank: every expert's key once in shared memory, then each expert counts
        // the experts that beat it (a higher key, or an equal key and a lower id); rank < K is
        // a pick, in order. O(E^2 / WG) per invocation with no rounds and no atomics: 576
        // comparisons per invocation for V4-Pro's 384 experts.
        for (uint e = tid; e < E; e += WG) keys[e] = order_key(score(logits[lb + e]) + bias[e]);
        barrier();
        for (uint e = tid; e < E; e += WG) {
            const uint ke = keys[e];
            uint rank = 0u;
            for (uint f = 0u; f < E; f++)
                rank += (keys[f] > ke || (keys[f] == ke && f < e)) ? 1u : 0u;
            if (rank < K) picked[rank] = e;
        }
    }
    barrier();
    // the weights: each pick's invocation sums the K unbiased scores itself, in pick order (the
    // same sum for every pick; K <= 64, so K^2 score evaluations cost less than a barrier)
    for (uint j = tid; j < K; j += WG) {
        float sum = 0.0;
        for (uint q = 0u; q < K; q++) sum += score(logits[lb + min(picked[q], E - 1u)]);
        const float s = score(logits[lb + min(picked[j], E - 1u)]);
        idx_out[t * K + j] = picked[j];
        w_out[t * K + j] = (NORM != 0u ? s / sum : s) * p.scale;
    }
}
