// shaders/hc_pre.comp — mHC pre after the mixing GEMV: RMS-scaled mixes, sigmoid pre/post weights,
// the Sinkhorn-normalised combination matrix, and the reduced sub-layer input (layout and maths:
// shaders/hc.h; CPU reference ms_ref_hc_pre, engine/ref/hc.c). One workgroup per token.
// The hc x hc matrix is small (16 entries in V4): invocation j*hc + k owns entry (j, k); row and
// column sums go through shared memory, two barriers per Sinkhorn half-step, all in F32 where the
// reference uses double (the error stays near F32 rounding: docs/testing.md).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_shader_16bit_storage : require

#include "hc.h"

layout(constant_id = MS_HC_PRE_SPEC_WG) const uint WG = 256;
layout(constant_id = MS_HC_PRE_SPEC_HEAD) const uint HEAD = 0;
layout(constant_id = MS_HC_PRE_SPEC_SG_MIN) const uint SG_MIN = 4;
layout(local_size_x_id = MS_HC_PRE_SPEC_WG) in;

layout(push_constant) uniform Push { ms_hc_pre_push p; };

layout(set = 0, binding = MS_HC_PRE_BIND_MIX, std430) readonly buffer Mbuf { float mixraw[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_H, std430) readonly buffer Hbuf { float hs[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_SCALE, std430) readonly buffer Sbuf { float scale[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_BASE, std430) readonly buffer Bbuf { float base[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_X, std430) buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_POST, std430) writeonly buffer Pbuf { float posts[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_COMB, std430) writeonly buffer Cbuf { float combs[]; };
layout(set = 0, binding = MS_HC_PRE_BIND_NORM, std430) readonly buffer Nbuf { uint16_t nw[]; };

const uint NSG_MAX = (WG + SG_MIN - 1u) / SG_MIN;
shared float red[NSG_MAX];
shared float pre_s[MS_HC_MAX];
shared float c_s[MS_HC_MAX * MS_HC_MAX];
shared float sum_s[MS_HC_MAX];
shared float mx_s[MS_HC_MAX];
shared float mix_s[(2 + MS_HC_MAX) * MS_HC_MAX + 1]; // the mixes, then the sum of squares of h

float sigmoid(float v) { return 1.0 / (1.0 + exp(-v)); }

void main() {
    const uint t = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (t >= p.n) return; // whole workgroup
    const uint tid = gl_LocalInvocationID.x, hc = p.hc, k_all = hc * p.dim;
    const uint hb = t * k_all;
    const uint mix_n = HEAD != 0u ? hc : (2u + hc) * hc;

    float tot = 0.0;
    if (p.n_parts == 0u) {
        float ss = 0.0;
        for (uint i = tid; i < k_all; i += WG) ss = fma(hs[hb + i], hs[hb + i], ss);
        ss = subgroupAdd(ss);
        if (subgroupElect()) red[gl_SubgroupID] = ss;
        for (uint i = tid; i < mix_n; i += WG) mix_s[i] = mixraw[t * mix_n + i];
        barrier();
        for (uint g = 0u; g < gl_NumSubgroups; g++) tot += red[g];
    } else {
        // hc_mix partials: subgroup q sums value q (and q + #subgroups, ...) over the slices
        const uint stride = mix_n + 1u, pb = t * p.n_parts * stride;
        for (uint r = gl_SubgroupID; r < stride; r += gl_NumSubgroups) {
            float s = 0.0;
            for (uint g = gl_SubgroupInvocationID; g < p.n_parts; g += gl_SubgroupSize)
                s += mixraw[pb + g * stride + r];
            s = subgroupAdd(s);
            if (subgroupElect()) mix_s[r] = s;
        }
        barrier();
        tot = mix_s[mix_n];
    }
    const float rs = 1.0 / sqrt(tot / float(k_all) + p.rms_eps);

    if (tid < hc) {
        const float m = mix_s[tid] * rs;
        pre_s[tid] = sigmoid(m * scale[0] + base[tid]) + p.hc_eps;
        if (HEAD == 0u) {
            const float mp = mix_s[hc + tid] * rs;
            posts[t * hc + tid] = 2.0 * sigmoid(mp * scale[1] + base[hc + tid]);
        }
    }
    if (HEAD == 0u && gl_SubgroupSize >= hc * hc) {
        // The same Sinkhorn inside subgroup 0 through shuffles, no workgroup barriers (the
        // barrier path below costs ~6 per iteration, 120 per call in V4): lane j*hc+k owns entry
        // (j, k); every sum runs over q in the same order as there, so the results are the same.
        if (gl_SubgroupID == 0u) {
            const uint l = gl_SubgroupInvocationID;
            const bool own = l < hc * hc;
            const uint j = own ? l / hc : 0u, k = own ? l - j * hc : 0u;
            float v = own ? mix_s[2u * hc + l] * rs * scale[2] + base[2u * hc + l] : 0.0;
            float mx = subgroupShuffle(v, j * hc);
            for (uint q = 1u; q < hc; q++) mx = max(mx, subgroupShuffle(v, j * hc + q));
            const float e = exp(v - mx);
            float s = 0.0;
            for (uint q = 0u; q < hc; q++) s += subgroupShuffle(e, j * hc + q);
            v = e / s + p.hc_eps;
            for (uint it = 0u; it < p.sinkhorn_iters; it++) {
                if (it > 0u) {
                    s = 0.0;
                    for (uint q = 0u; q < hc; q++) s += subgroupShuffle(v, j * hc + q);
                    v = v / (s + p.hc_eps);
                }
                s = 0.0;
                for (uint q = 0u; q < hc; q++) s += subgroupShuffle(v, q * hc + k);
                v = v / (s + p.hc_eps);
            }
            if (own) combs[t * hc * hc + l] = v;
        }
    } else if (HEAD == 0u) {
        const bool own = tid < hc * hc;
        const uint j = own ? tid / hc : 0u, k = own ? tid - j * hc : 0u;
        float v = 0.0;
        if (own) v = mix_s[2u * hc + tid] * rs * scale[2] + base[2u * hc + tid];
        // row softmax (+eps): row max and sum by the row's first invocation
        if (own) c_s[tid] = v;
        barrier();
        if (own && k == 0u) {
            float mx = c_s[j * hc];
            for (uint q = 1u; q < hc; q++) mx = max(mx, c_s[j * hc + q]);
            float s = 0.0;
            for (uint q = 0u; q < hc; q++) s += exp(c_s[j * hc + q] - mx);
            mx_s[j] = mx;
            sum_s[j] = s;
        }
        barrier();
        if (own) v = exp(v - mx_s[j]) / sum_s[j] + p.hc_eps;
        barrier();
        // column normalisation first, then (iters - 1) rounds of row, then column
        for (uint it = 0u; it < p.sinkhorn_iters; it++) {
            if (it > 0u) {
                if (own) c_s[tid] = v;
                barrier();
                if (own && k == 0u) {
                    float s = 0.0;
                    for (uint q = 0u; q < hc; q++) s += c_s[j * hc + q];
                    sum_s[j] = s;
                }
                barrier();
                if (own) v = v / (sum_s[j] + p.hc_eps);
                barrier();
            }
            if (own) c_s[tid] = v;
            barrier();
            if (own && j == 0u) {
                float s = 0.0;
                for (uint q = 0u; q < hc; q++) s += c_s[q * hc + k];
                sum_s[k] = s;
            }
            barrier();
            if (own) v = v / (sum_s[k] + p.hc_eps);
            barrier();
        }
        if (own) combs[t * hc * hc + tid] = v;
    }
    barrier();

    float xss = 0.0;
    for (uint i = tid; i < p.dim; i += WG) {
        float acc = 0.0;
        for (uint c = 0u; c < hc; c++) acc = fma(pre_s[c], hs[hb + c * p.dim + i], acc);
        xs[t * p.dim + i] = acc;
        xss = fma(acc, acc, xss);
    }
    if (p.norm == 0u) return;
    // RMSNorm of x as shaders/rmsnorm.comp: each invocation rescales the elements it wrote.
    xss = subgroupAdd(xss);
    barrier(); // every read of red[] above is done
    if (subgroupElect()) red[gl_SubgroupID] = xss;
    barrier();
    float xtot = 0.0;
    for (uint g = 0u; g < gl_NumSubgroups; g++) xtot += red[g];
    const float inv = 1.0 / sqrt(xtot / float(p.dim) + p.rms_eps);
    for (uint i = tid; i < p.dim; i += WG)
        xs[t * p.dim + i] = xs[t * p.dim + i] * inv * uintBitsToFloat(uint(nw[i]) << 16);
}
