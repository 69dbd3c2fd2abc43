// shaders/compress_pool.comp — the compressor's state update and per-channel softmax pooling
// (layout and maths: shaders/compress.h; CPU reference ms_ref_compress, engine/ref/compress.c).
// One invocation per channel walks the tokens in order; it alone touches its state columns, so the
// walk needs no barrier. compress_emit.comp finishes the pooled rows.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "compress.h"

layout(constant_id = MS_COMPRESS_SPEC_WG) const uint WG = 64;
layout(local_size_x_id = MS_COMPRESS_SPEC_WG) in;

layout(push_constant) uniform Push { ms_compress_pool_push p; };

layout(set = 0, binding = MS_COMPRESS_POOL_BIND_A, std430) readonly buffer Abuf { float as_[]; };
layout(set = 0, binding = MS_COMPRESS_POOL_BIND_G, std430) readonly buffer Gbuf { float gs[]; };
layout(set = 0, binding = MS_COMPRESS_POOL_BIND_APE, std430) readonly buffer Pbuf { float ape[]; };
layout(set = 0, binding = MS_COMPRESS_POOL_BIND_POS, std430) readonly buffer Qbuf { uint pos[]; };
layout(set = 0, binding = MS_COMPRESS_POOL_BIND_KV, std430) restrict buffer Kbuf { float kv[]; };
layout(set = 0, binding = MS_COMPRESS_POOL_BIND_SCORE, std430) restrict buffer Sbuf { float sc[]; };
layout(set = 0, binding = MS_COMPRESS_POOL_BIND_ROWS, std430) restrict writeonly buffer Rbuf { float rows[]; };

void main() {
    const uint ch = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    if (ch >= p.d) return;
    const uint r = p.ratio, d = p.d, coff = p.coff, w = coff * d, n_slots = coff * r;
    const uint cur = (coff - 1u) * r;   // first slot of the current block
    const uint hi = (coff - 1u) * d + ch; // the column slots >= r pool from
    const float neg_inf = uintBitsToFloat(0xFF800000u);
    const uint pos0 = pos[0];
    uint ps = pos0 % r, j = pos0 / r; // p % r and p / r, advanced with p
    for (uint t = 0u; t < p.n; t++) {
        const uint slot = (cur + ps) * w, ia = t * p.in_stride, ie = ps * w;
        for (uint c = 0u; c < coff; c++) {
            const uint col = c * d + ch;
            kv[slot + col] = as_[ia + col];
            sc[slot + col] = gs[ia + col] + ape[ie + col];
        }
        if (ps + 1u < r) {
            ps++;
            continue;
        }
        if (j < p.n_rows) {
            float mx = neg_inf;
            for (uint s = 0u; s < n_slots; s++) {
                const float v = sc[s * w + (s < r ? ch : hi)];
                if (v > mx) mx = v; // NaN never wins, as in the reference
            }
            float sum = 0.0, acc = 0.0;
            for (uint s = 0u; s < n_slots; s++) {
                const uint k = s * w + (s < r ? ch : hi);
                const float v = sc[k];
                if (v == neg_inf) continue; // empty: its kv may be anything, even NaN
                const float e = exp(v - mx);
                sum += e;
                acc = fma(e, kv[k], acc);
            }
            rows[j * d + ch] = acc / sum;
        }
        if (coff == 2u) // block j becomes the previous block of j + 1
            for (uint s = 0u; s < r; s++)
                for (uint c = 0u; c < 2u; c++) {
                    const uint col = c * d + ch;
                    kv[s * w + col] = kv[(s + r) * w + col];
                    sc[s * w + col] = sc[(s + r) * w + col];
                }
        ps = 0u;
        j = min(j, 0xFFFFFFFEu) + 1u; // saturates: a block index past 2^32 - 1 is past n_rows
    }
}
