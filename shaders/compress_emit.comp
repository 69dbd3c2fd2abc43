// shaders/compress_emit.comp — the compressor's emission: RMSNorm, RoPE, optional Hadamard and the
// stored-value rounding of each block compress_pool.comp pooled in this call, one workgroup per
// block (layout and maths: shaders/compress.h; CPU reference ms_ref_compress,
// engine/ref/compress.c). The rounding and the rotation are shaders/fq.glsl, shared with fq.comp.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "compress.h"

layout(constant_id = MS_COMPRESS_SPEC_WG) const uint WG = 64; // a power of two
layout(constant_id = MS_COMPRESS_SPEC_QUANT) const uint QUANT = 0;
layout(constant_id = MS_COMPRESS_SPEC_HADAMARD) const uint HADAMARD = 0;
layout(constant_id = MS_COMPRESS_SPEC_D) const uint D = 512; // d
layout(local_size_x_id = MS_COMPRESS_SPEC_WG) in;

layout(push_constant) uniform Push { ms_compress_emit_push p; };

layout(set = 0, binding = MS_COMPRESS_EMIT_BIND_ROWS, std430) restrict buffer Rbuf { float rows[]; };
layout(set = 0, binding = MS_COMPRESS_EMIT_BIND_NORM, std430) readonly buffer Nbuf { uint nw[]; };
layout(set = 0, binding = MS_COMPRESS_EMIT_BIND_CS, std430) readonly buffer Cbuf { vec2 cs[]; };
layout(set = 0, binding = MS_COMPRESS_EMIT_BIND_POS, std430) readonly buffer Qbuf { uint pos[]; };

shared float hv[D];
shared float red[WG];
#define FQ_HV hv
#include "fq.glsl"

void main() {
    const uint k = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    const uint pos0 = pos[0], r = p.ratio;
    const uint t = k * r + (r - 1u - pos0 % r); // the token completing this group's block
    if (t >= p.n || k >= p.n_rows || pos0 / r >= p.n_rows - k) return; // whole workgroup
    const uint j = pos0 / r + k; // < n_rows (the test above cannot overflow)
    const uint tid = gl_LocalInvocationID.x, d = D, base = j * d;

    // RMSNorm: a tree over the invocations' partial sums (no assumption on the subgroup size)
    float ss = 0.0;
    for (uint i = tid; i < d; i += WG) {
        const float v = rows[base + i];
        hv[i] = v;
        ss = fma(v, v, ss);
    }
    red[tid] = ss;
    barrier();
    for (uint s = WG / 2u; s > 0u; s /= 2u) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    const float inv = 1.0 / sqrt(red[0] / float(d) + p.eps); // one reciprocal, then x * inv * w
    for (uint i = tid; i < d; i += WG) {
        const uint wb = nw[i / 2u];
        hv[i] = hv[i] * inv * uintBitsToFloat((i % 2u == 0u ? wb << 16 : wb & 0xFFFF0000u));
    }
    barrier();

    // RoPE of the last rope_dim dims (adjacent pairs), by the table row of token t
    const uint half_dim = p.rope_dim / 2u, off = d - p.rope_dim;
    for (uint i = tid; i < half_dim; i += WG) {
        const vec2 c = cs[t * half_dim + i];
        const uint q = off + 2u * i;
        const float a = hv[q], b = hv[q + 1u];
        hv[q] = fma(a, c.x, -b * c.y);
        hv[q + 1u] = fma(a, c.y, b * c.x);
    }
    barrier();

    if (HADAMARD != 0u) fq_hadamard(d, tid, WG);
    if (QUANT != 0u) {
        const uint block = fq_block(QUANT), len = QUANT == 1u ? off : d;
        for (uint b0 = tid * block; b0 < len; b0 += WG * block) {
            float amax = fq_floor_amax(QUANT);
            for (uint i = b0; i < b0 + block; i++) {
                const float a = abs(hv[i]);
                if (a > amax) amax = a; // a NaN is skipped, as in the reference
            }
            const float s = fq_pow2_scale(amax, fq_inv_max(QUANT));
            for (uint i = b0; i < b0 + block; i++) hv[i] = fq_round(QUANT, hv[i] / s) * s;
        }
        barrier();
    }
    for (uint i = tid; i < d; i += WG) rows[base + i] = hv[i];
}
