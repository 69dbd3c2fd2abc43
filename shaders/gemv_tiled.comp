// shaders/gemv_tiled.comp — y[c][r] = W[r, :] . x[c][:], the same operation and the same exact
// decoding as shaders/gemv.comp (variants gemv_tiled_<enc>; CPU references ms_ref_gemv_<enc>,
// engine/ref/gemv.c). Layout and constants: shaders/gemv.h.
//
// Shape of the work: every subgroup of the workgroup owns ROWS rows (spec ROWS is rows per
// subgroup here) and walks whole rows: lane l takes the row's 16-byte chunks l, l + SG, ...
// (coalesced uvec4 loads), UNROLL chunks per row per K-tile. The activations of one K-tile
// (SG * UNROLL chunks, all NCOLS columns) are staged once per workgroup in shared memory, so x
// leaves L2 once per ROWS * (WG / SG) rows instead of once per few rows (gemv.comp), which is what
// bound n > 1 and FP4. The tile is stored [column][vec4 q of a chunk][chunk] with one vec4 of
// padding per (column, q) row: lanes read consecutive vec4s (no bank conflicts) and the staging
// stores of consecutive invocations land in different banks.
// Each subgroup sums its own rows (subgroupAdd), so there is no cross-subgroup reduction. The
// shader assumes gl_SubgroupSize == SG (the host pins it with a required subgroup size where the
// device can vary it) and full subgroups (WG is a multiple of SG).
//
// Decoding and scales are those of gemv.comp (see its header): e4m3 / e2m1 codes shifted into f16
// patterns, block scales applied to the F32 partial sum of a chunk, 2^8 / 2^14 once per output.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "gemv.h"

#define ENC_F32 0
#define ENC_BF16 1
#define ENC_FP8 2
#define ENC_FP4 3
#ifndef ENC
#error "ENC must be defined (0 f32, 1 bf16, 2 fp8, 3 fp4)"
#endif

#if ENC == ENC_F32
#define ELEMS 4u
#elif ENC == ENC_BF16
#define ELEMS 8u
#elif ENC == ENC_FP8
#define ELEMS 16u
#define POST 256.0
#else
#define ELEMS 32u
#define POST 16384.0
#endif
#define V (ELEMS / 4u) // vec4s of x per 16-byte weight chunk

layout(constant_id = MS_GEMV_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_GEMV_SPEC_ROWS) const uint ROWS = 1; // rows per subgroup
layout(constant_id = MS_GEMV_SPEC_UNROLL) const uint UNROLL = 1;
layout(constant_id = MS_GEMV_SPEC_NCOLS) const uint NCOLS = 1;
layout(constant_id = MS_GEMV_SPEC_SG_MIN) const uint SG = 32; // the exact subgroup size here
layout(constant_id = MS_GEMV_SPEC_X_VEC4) const uint X_VEC4 = 0;
layout(local_size_x_id = MS_GEMV_SPEC_WG) in;

layout(push_constant) uniform Push { ms_gemv_push p; };

layout(set = 0, binding = MS_GEMV_BIND_W, std430) readonly restrict buffer Wbuf { uvec4 wq[]; };
#if ENC == ENC_FP8 || ENC == ENC_FP4
layout(set = 0, binding = MS_GEMV_BIND_S, std430) readonly restrict buffer Sbuf { uint sw[]; };
#endif
layout(set = 0, binding = MS_GEMV_BIND_X, std430) readonly buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_GEMV_BIND_X, std430) readonly buffer X4buf { vec4 x4[]; };
layout(set = 0, binding = MS_GEMV_BIND_Y, std430) writeonly buffer Ybuf { float ys[]; };

const uint NACC = ROWS * NCOLS;
const uint KT = SG * UNROLL; // chunks per row per K-tile
const uint XS = KT + 1u;     // padded stride of one (column, q) row of the tile, in vec4s
const uint TILE_V4 = NCOLS * V * KT;
shared vec4 xt[NCOLS * V * XS];

float acc[NACC];
uint rowbase[ROWS];
uint nch;
#if ENC == ENC_FP8
uint srow;
#endif

vec4 load_x(uint c, uint e) { // e: element index, a multiple of 4
    const uint i = c * p.x_stride + e;
    if (X_VEC4 != 0u) return x4[i >> 2];
    return vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
}

vec4 tx(uint c, uint q, uint j) { return xt[(c * V + q) * XS + j]; }

#if ENC == ENC_FP8 || ENC == ENC_FP4
uint scale_byte(uint i) { return (sw[i >> 2] >> ((i & 3u) << 3)) & 0xFFu; }

// e8m0 -> 2^(e-127); 0xFF is NaN as in ms_ref_e8m0_to_f32. e = 0 is the F32 subnormal 2^-127.
float e8m0(uint e) {
    if (e == 255u) return uintBitsToFloat(0x7FC00000u);
    return e == 0u ? uintBitsToFloat(0x00400000u) : uintBitsToFloat(e << 23);
}
#endif

// One K-tile starting at chunk t0. FULL: every chunk of the tile exists (no clamps, no skips).
void tile(const uint t0, const bool FULL) {
    const uint lane = gl_SubgroupInvocationID;
    // Weight (and scale) loads first, so that they are in flight while x is staged.
    uvec4 wv[UNROLL * ROWS];
#if ENC == ENC_FP8
    uint sv[UNROLL];
#elif ENC == ENC_FP4
    uint sv[UNROLL * ROWS];
#endif
    [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
        const uint ch = FULL ? t0 + lane + u * SG : min(t0 + lane + u * SG, nch - 1u);
        [[unroll]] for (uint r = 0u; r < ROWS; r++) wv[u * ROWS + r] = wq[rowbase[r] + ch];
#if ENC == ENC_FP8
        sv[u] = scale_byte(srow + (ch >> 3));
#elif ENC == ENC_FP4
        [[unroll]] for (uint r = 0u; r < ROWS; r++) sv[u * ROWS + r] = scale_byte(rowbase[r] + ch);
#endif
    }

    barrier(); // every subgroup is done reading the previous tile
    for (uint i = gl_LocalInvocationID.x; i < TILE_V4; i += WG) {
        const uint c = i / (KT * V);
        const uint g = i - c * (KT * V);
        const uint j = g / V;
        const uint q = g - j * V;
        vec4 v = vec4(0.0);
        if (FULL || t0 + j < nch) v = load_x(c, (t0 + j) * ELEMS + q * 4u);
        xt[(c * V + q) * XS + j] = v;
    }
    barrier();

    [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
        const uint j = lane + u * SG;
        if (!FULL && t0 + j >= nch) break;
#if ENC == ENC_F32
        [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
            const vec4 xa = tx(c, 0u, j);
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                const uvec4 w = wv[u * ROWS + r];
                float a = acc[r * NCOLS + c];
                a = fma(uintBitsToFloat(w.x), xa.x, a);
                a = fma(uintBitsToFloat(w.y), xa.y, a);
                a = fma(uintBitsToFloat(w.z), xa.z, a);
                a = fma(uintBitsToFloat(w.w), xa.w, a);
                acc[r * NCOLS + c] = a;
            }
        }
#elif ENC == ENC_BF16
        [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
            const vec4 xa = tx(c, 0u, j);
            const vec4 xb = tx(c, 1u, j);
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                const uvec4 w = wv[u * ROWS + r];
                float a = acc[r * NCOLS + c];
                a = fma(uintBitsToFloat(w.x << 16), xa.x, a);
                a = fma(uintBitsToFloat(w.x & 0xFFFF0000u), xa.y, a);
                a = fma(uintBitsToFloat(w.y << 16), xa.z, a);
                a = fma(uintBitsToFloat(w.y & 0xFFFF0000u), xa.w, a);
                a = fma(uintBitsToFloat(w.z << 16), xb.x, a);
                a = fma(uintBitsToFloat(w.z & 0xFFFF0000u), xb.y, a);
                a = fma(uintBitsToFloat(w.w << 16), xb.z, a);
                a = fma(uintBitsToFloat(w.w & 0xFFFF0000u), xb.w, a);
                acc[r * NCOLS + c] = a;
            }
        }
#elif ENC == ENC_FP8
        float part[NACC];
        [[unroll]] for (uint i = 0u; i < NACC; i++) part[i] = 0.0;
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            // Bytes 0 and 2 of a word, then bytes 1 and 3, as f16 pairs (value * 2^-8).
            vec2 da[ROWS], db[ROWS];
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                const uint w = wv[u * ROWS + r][q];
                da[r] = unpackHalf2x16(((w << 7) & 0x3F803F80u) | ((w << 8) & 0x80008000u));
                db[r] = unpackHalf2x16(((w >> 1) & 0x3F803F80u) | (w & 0x80008000u));
            }
            [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
                const vec4 xa = tx(c, q, j);
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    float a = part[r * NCOLS + c];
                    a = fma(da[r].x, xa.x, a);
                    a = fma(db[r].x, xa.y, a);
                    a = fma(da[r].y, xa.z, a);
                    a = fma(db[r].y, xa.w, a);
                    part[r * NCOLS + c] = a;
                }
            }
        }
        const float f = e8m0(sv[u]);
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            // A byte is 0x7F/0xFF iff its low 7 bits + 1 carries into bit 7 (no carry between bytes).
            const uvec4 t = (wv[u * ROWS + r] & 0x7F7F7F7Fu) + 0x01010101u;
            const bool nan_code = ((t.x | t.y | t.z | t.w) & 0x80808080u) != 0u;
            const float fr = nan_code ? uintBitsToFloat(0x7FC00000u) : f;
            [[unroll]] for (uint c = 0u; c < NCOLS; c++)
                acc[r * NCOLS + c] = fma(part[r * NCOLS + c], fr, acc[r * NCOLS + c]);
        }
#else // ENC_FP4
        float part[NACC];
        [[unroll]] for (uint i = 0u; i < NACC; i++) part[i] = 0.0;
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            // Word q holds elements 8q..8q+7, nibble i = element 8q+i. Pair j = nibbles j and j+4
            // as an f16 pair (value * 2^-14): magnitude bits to 9..11, sign bit to 15.
            vec2 d0[ROWS], d1[ROWS], d2[ROWS], d3[ROWS];
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                const uint w = wv[u * ROWS + r][q];
                d0[r] = unpackHalf2x16(((w << 9) & 0x0E000E00u) | ((w << 12) & 0x80008000u));
                d1[r] = unpackHalf2x16(((w << 5) & 0x0E000E00u) | ((w << 8) & 0x80008000u));
                d2[r] = unpackHalf2x16(((w << 1) & 0x0E000E00u) | ((w << 4) & 0x80008000u));
                d3[r] = unpackHalf2x16(((w >> 3) & 0x0E000E00u) | (w & 0x80008000u));
            }
            [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
                const vec4 xa = tx(c, 2u * q, j);
                const vec4 xb = tx(c, 2u * q + 1u, j);
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    float a = part[r * NCOLS + c];
                    a = fma(d0[r].x, xa.x, a);
                    a = fma(d1[r].x, xa.y, a);
                    a = fma(d2[r].x, xa.z, a);
                    a = fma(d3[r].x, xa.w, a);
                    a = fma(d0[r].y, xb.x, a);
                    a = fma(d1[r].y, xb.y, a);
                    a = fma(d2[r].y, xb.z, a);
                    a = fma(d3[r].y, xb.w, a);
                    part[r * NCOLS + c] = a;
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

void main() {
    const uint wgid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint row0 = wgid * (ROWS * (WG / SG));
    if (row0 >= p.m) return; // whole workgroup: the 2-D grid may overshoot
    const uint rowg = row0 + gl_SubgroupID * ROWS; // this subgroup's first row
    nch = p.k / ELEMS; // 16-byte chunks per row (shape rules make this exact)

    // Rows past the end are clamped to the last row: their loads stay in bounds and their sums are
    // never stored. Such subgroups still stage x and meet every barrier.
    [[unroll]] for (uint r = 0u; r < ROWS; r++) rowbase[r] = min(rowg + r, p.m - 1u) * nch;
#if ENC == ENC_FP8
    // A subgroup's ROWS rows lie in one 128-row scale block (ROWS divides 128, rowg a multiple of
    // ROWS).
    srow = (min(rowg, p.m - 1u) >> 7) * ((p.k + 127u) >> 7);
#endif
    [[unroll]] for (uint i = 0u; i < NACC; i++) acc[i] = 0.0;

    const uint nfull = nch / KT;
    for (uint t = 0u; t < nfull; t++) tile(t * KT, true);
    if (nfull * KT < nch) tile(nfull * KT, false);

    [[unroll]] for (uint i = 0u; i < NACC; i++) {
        const uint r = i / NCOLS;
        const uint c = i - r * NCOLS;
        float s = subgroupAdd(acc[i]);
#ifdef POST
        s *= POST;
#endif
        if (gl_SubgroupInvocationID == 0u && rowg + r < p.m) ys[c * p.y_stride + p.y_row0 + rowg + r] = s;
    }
}
