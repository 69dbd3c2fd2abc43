// shaders/gemv.comp — y[c][r] = W[r, :] . x[c][:] with W in its checkpoint encoding, decoded here.
// Variants (shaders/variants.txt): ENC=0 gemv_f32, 1 gemv_bf16, 2 gemv_fp8, 3 gemv_fp4; the CPU
// references are ms_ref_gemv_<enc> (engine/ref/gemv.c). Layout and constants: shaders/gemv.h.
//
// Shape of the work: a workgroup owns ROWS rows; its invocations walk the row's 16-byte chunks,
// consecutive invocations on consecutive chunks (coalesced uvec4 loads), UNROLL chunks per row
// loaded before any is used. One x chunk is loaded per column and reused for all ROWS rows, which
// keeps L1 traffic for x below the weight traffic (FP4 reads 128 bytes of x per 16 bytes of W).
// Sums: per-invocation F32, then subgroupAdd, then shared memory across subgroups.
//
// Decoding: shaders/wdecode.glsl (exact, shared by every weight-reading shader).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "gemv.h"
#define MS_SCALE_BINDING MS_GEMV_BIND_S
#include "wdecode.glsl"


layout(constant_id = MS_GEMV_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_GEMV_SPEC_ROWS) const uint ROWS = 1;
layout(constant_id = MS_GEMV_SPEC_UNROLL) const uint UNROLL = 1;
layout(constant_id = MS_GEMV_SPEC_NCOLS) const uint NCOLS = 1;
layout(constant_id = MS_GEMV_SPEC_SG_MIN) const uint SG_MIN = 4;
layout(constant_id = MS_GEMV_SPEC_X_VEC4) const uint X_VEC4 = 0;
layout(local_size_x_id = MS_GEMV_SPEC_WG) in;

layout(push_constant) uniform Push { ms_gemv_push p; };

layout(set = 0, binding = MS_GEMV_BIND_W, std430) readonly restrict buffer Wbuf { uvec4 wq[]; };
// Two views of x: vec4 loads when the host says strides and offset allow them, else scalars.
layout(set = 0, binding = MS_GEMV_BIND_X, std430) readonly buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_GEMV_BIND_X, std430) readonly buffer X4buf { vec4 x4[]; };
layout(set = 0, binding = MS_GEMV_BIND_Y, std430) writeonly buffer Ybuf { float ys[]; };

const uint NACC = ROWS * NCOLS;
const uint NSG_MAX = (WG + SG_MIN - 1u) / SG_MIN;
shared float red[NSG_MAX * NACC];

uint g_xoff; // grouped GEMV: where this workgroup's group of rows reads x (all its rows share one)

vec4 load_x(uint c, uint e) { // e: element index, a multiple of 4
    const uint i = c * p.x_stride + g_xoff + e;
    if (X_VEC4 != 0u) return x4[i >> 2];
    return vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
}


void main() {
    const uint wgid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint row0 = wgid * ROWS;
    if (row0 >= p.m) return; // whole workgroup: the 2-D grid may overshoot
    g_xoff = p.group_rows != 0u ? (p.y_row0 + row0) / p.group_rows * p.group_x : 0u;
    const uint tid = gl_LocalInvocationID.x;
    const uint nch = p.k / ELEMS; // 16-byte chunks per row (shape rules make this exact)

    // Rows past the end are clamped to the last row: their loads stay in bounds and their sums are
    // never stored.
    uint rowbase[ROWS];
    [[unroll]] for (uint r = 0u; r < ROWS; r++) rowbase[r] = min(row0 + r, p.m - 1u) * nch;
#if ENC == ENC_FP8
    // All ROWS rows lie in one 128-row scale block (ROWS divides 128, row0 a multiple of ROWS).
    const uint srow = (row0 >> 7) * ((p.k + 127u) >> 7);
#endif

    float acc[NACC];
    [[unroll]] for (uint i = 0u; i < NACC; i++) acc[i] = 0.0;

    for (uint base = tid; base < nch; base += WG * UNROLL) {
        // Issue every load of this step first (chunk index clamped, the tail is skipped below).
        uvec4 wv[UNROLL * ROWS];
#if ENC == ENC_FP8
        uint sv[UNROLL];
#elif ENC == ENC_FP4
        uint sv[UNROLL * ROWS];
#endif
        [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
            const uint ch = min(base + u * WG, nch - 1u);
            [[unroll]] for (uint r = 0u; r < ROWS; r++) wv[u * ROWS + r] = wq[rowbase[r] + ch];
#if ENC == ENC_FP8
            sv[u] = scale_byte(srow + (ch >> 3));
#elif ENC == ENC_FP4
            [[unroll]] for (uint r = 0u; r < ROWS; r++) sv[u * ROWS + r] = scale_byte(rowbase[r] + ch);
#endif
        }

        [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
            const uint ch = base + u * WG;
            if (ch >= nch) break;
#if ENC == ENC_F32
            [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
                const vec4 xa = load_x(c, ch * 4u);
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    const uvec4 w = wv[u * ROWS + r];
                    acc[r * NCOLS + c] = fma4(uintBitsToFloat(w), xa, acc[r * NCOLS + c]);
                }
            }
#elif ENC == ENC_BF16
            [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
                const vec4 xa = load_x(c, ch * 8u);
                const vec4 xb = load_x(c, ch * 8u + 4u);
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    const uvec4 w = wv[u * ROWS + r];
                    const float a = fma4(dec_bf16(w.x, w.y), xa, acc[r * NCOLS + c]);
                    acc[r * NCOLS + c] = fma4(dec_bf16(w.z, w.w), xb, a);
                }
            }
#elif ENC == ENC_FP8
            float part[NACC];
            [[unroll]] for (uint i = 0u; i < NACC; i++) part[i] = 0.0;
            [[unroll]] for (uint q = 0u; q < 4u; q++) {
                vec4 d[ROWS]; // word q of each row: elements 4q..4q+3 (value * 2^-8)
                [[unroll]] for (uint r = 0u; r < ROWS; r++) d[r] = dec_fp8(wv[u * ROWS + r][q]);
                [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
                    const vec4 xa = load_x(c, ch * 16u + q * 4u);
                    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                        part[r * NCOLS + c] = fma4(d[r], xa, part[r * NCOLS + c]);
                    }
                }
            }
            const float f = e8m0(sv[u]);
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                const float fr = fp8_has_nan(wv[u * ROWS + r]) ? MS_NAN : f;
                [[unroll]] for (uint c = 0u; c < NCOLS; c++)
                    acc[r * NCOLS + c] = fma(part[r * NCOLS + c], fr, acc[r * NCOLS + c]);
            }
#else // ENC_FP4
            float part[NACC];
            [[unroll]] for (uint i = 0u; i < NACC; i++) part[i] = 0.0;
            [[unroll]] for (uint q = 0u; q < 4u; q++) {
                vec4 lo[ROWS], hi[ROWS]; // word q of each row: elements 8q..8q+7 (value * 2^-14)
                [[unroll]] for (uint r = 0u; r < ROWS; r++) dec_fp4(wv[u * ROWS + r][q], lo[r], hi[r]);
                [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
                    const vec4 xa = load_x(c, ch * 32u + q * 8u);
                    const vec4 xb = load_x(c, ch * 32u + q * 8u + 4u);
                    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                        part[r * NCOLS + c] = fma4(hi[r], xb, fma4(lo[r], xa, part[r * NCOLS + c]));
                    }
                }
            }
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                const float fr = e8m0(sv[u * ROWS + r]);
                [[unroll]] for (uint c = 0u; c < NCOLS; c++)
                    acc[r * NCOLS + c] = fma(part[r * NCOLS + c], fr, acc[r * NCOLS + c]);
            }
#endif
        }
    }

    // Reduce: subgroup sums, one slot per subgroup in shared memory, then ROWS*NCOLS invocations
    // add the subgroup slots and store.
    [[unroll]] for (uint i = 0u; i < NACC; i++) {
        const float v = subgroupAdd(acc[i]);
        if (subgroupElect()) red[i * NSG_MAX + gl_SubgroupID] = v;
    }
    barrier();
    for (uint i = tid; i < NACC; i += WG) {
        const uint r = i / NCOLS;
        const uint c = i - r * NCOLS;
        if (row0 + r >= p.m) continue;
        float s = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++) s += red[i * NSG_MAX + g];
#ifdef POST
        s *= POST;
#endif
        ys[c * p.y_stride + p.y_row0 + row0 + r] = s;
    }
}
