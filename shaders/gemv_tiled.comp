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
// Decoding: shaders/wdecode.glsl, as in gemv.comp.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "gemv.h"
#define MS_SCALE_BINDING MS_GEMV_BIND_S
#include "wdecode.glsl"


layout(constant_id = MS_GEMV_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_GEMV_SPEC_ROWS) const uint ROWS = 1; // rows per subgroup
layout(constant_id = MS_GEMV_SPEC_UNROLL) const uint UNROLL = 1;
layout(constant_id = MS_GEMV_SPEC_NCOLS) const uint NCOLS = 1;
layout(constant_id = MS_GEMV_SPEC_SG_MIN) const uint SG = 32; // the exact subgroup size here
layout(constant_id = MS_GEMV_SPEC_X_VEC4) const uint X_VEC4 = 0;
layout(local_size_x_id = MS_GEMV_SPEC_WG) in;

layout(push_constant) uniform Push { ms_gemv_push p; };

layout(set = 0, binding = MS_GEMV_BIND_W, std430) readonly restrict buffer Wbuf { uvec4 wq[]; };
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

uint g_xoff; // grouped GEMV: where this workgroup's group of rows reads x (all its rows share one)

vec4 load_x(uint c, uint e) { // e: element index, a multiple of 4
    const uint i = c * p.x_stride + g_xoff + e;
    if (X_VEC4 != 0u) return x4[i >> 2];
    return vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
}

vec4 tx(uint c, uint q, uint j) { return xt[(c * V + q) * XS + j]; }


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
                acc[r * NCOLS + c] = fma4(uintBitsToFloat(w), xa, acc[r * NCOLS + c]);
            }
        }
#elif ENC == ENC_BF16
        [[unroll]] for (uint c = 0u; c < NCOLS; c++) {
            const vec4 xa = tx(c, 0u, j);
            const vec4 xb = tx(c, 1u, j);
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
                const vec4 xa = tx(c, q, j);
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
                const vec4 xa = tx(c, 2u * q, j);
                const vec4 xb = tx(c, 2u * q + 1u, j);
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

void main() {
    const uint wgid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint row0 = wgid * (ROWS * (WG / SG));
    if (row0 >= p.m) return; // whole workgroup: the 2-D grid may overshoot
    g_xoff = p.group_rows != 0u ? (p.y_row0 + row0) / p.group_rows * p.group_x : 0u;
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
