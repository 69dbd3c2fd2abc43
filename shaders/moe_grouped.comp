// shaders/moe_grouped.comp — the expert FFN grouped by expert: gate/up + SwiGLU (MOE_DOWN = 0,
// variants moe_up_grouped_<enc>) and down (MOE_DOWN = 1, moe_down_grouped_<enc>) for the pairs
// moe_group listed. Layout and maths: shaders/moe_grouped.h; CPU references ms_ref_moe_up /
// ms_ref_moe_down (engine/ref/moe.c).
//
// One work item (an expert with pairs and a block of RB rows; a workgroup walks the items of a
// fixed grid): the rows of the expert's matrices (ROWS per subgroup, lane l taking each row's
// 16-byte chunks l, l + SG, ... as in shaders/moe.comp), applied to TOK of the expert's pairs at a
// time. Per K-tile the TOK input vectors are staged in shared memory ([pair][vec4 q of a chunk]
// [chunk], one vec4 of padding per q row), then every lane decodes each of its weight chunks once
// and multiplies it with all TOK vectors, so a record is read once per tile of pairs instead of
// once per pair. Each subgroup sums its own rows (subgroupAdd), one fixed order per output:
// deterministic. Assumes gl_SubgroupSize == SG and full subgroups.
//
// Everything that decides control flow (the items, the expert's pair count, the tile's pair count,
// the K-tiles) depends only on the workgroup, so every barrier is met by all invocations.
//
// Decoding: shaders/wdecode.glsl, the same chunk order and roundings as moe.comp.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "moe_grouped.h"
#define MS_SCALE_BINDING MS_MOE_G_BIND_POOL
#include "wdecode.glsl"

#if ENC != ENC_FP8 && ENC != ENC_FP4
#error "moe_grouped.comp: ENC must be 2 (fp8) or 3 (fp4)"
#endif
#ifndef MOE_DOWN
#error "moe_grouped.comp: MOE_DOWN must be defined (0 gate/up + SwiGLU, 1 down)"
#endif

layout(constant_id = MS_MOE_G_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_MOE_G_SPEC_ROWS) const uint ROWS = 1; // rows per subgroup
layout(constant_id = MS_MOE_G_SPEC_UNROLL) const uint UNROLL = 1;
layout(constant_id = MS_MOE_G_SPEC_SG) const uint SG = 32; // the exact subgroup size
layout(constant_id = MS_MOE_G_SPEC_X_VEC4) const uint X_VEC4 = 0;
layout(constant_id = MS_MOE_G_SPEC_TOK) const uint TOK = 4; // pairs per tile (default: fits 32 KiB)
layout(local_size_x_id = MS_MOE_G_SPEC_WG) in;

layout(push_constant) uniform Push { ms_moe_grouped_push p; };

// The pool: data as uvec4 here, scales as uint (sw[], declared by wdecode.glsl) on the same binding.
layout(set = 0, binding = MS_MOE_G_BIND_POOL, std430) readonly restrict buffer Wbuf { uvec4 wq[]; };
layout(set = 0, binding = MS_MOE_G_BIND_SLOTS, std430) readonly restrict buffer Slots { uint slots[]; };
layout(set = 0, binding = MS_MOE_G_BIND_OFFSETS, std430) readonly restrict buffer Offs { uint offsets[]; };
layout(set = 0, binding = MS_MOE_G_BIND_EXPERTS, std430) readonly restrict buffer Used { uint experts[]; };
layout(set = 0, binding = MS_MOE_G_BIND_LIST, std430) readonly restrict buffer List { uint list[]; };
// The input vectors (x [n][dim] or act [n][k][inter]): vec4 loads when the host says the range
// allows them, else scalars.
layout(set = 0, binding = MS_MOE_G_BIND_IN, std430) readonly buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_MOE_G_BIND_IN, std430) readonly buffer X4buf { vec4 x4[]; };
layout(set = 0, binding = MS_MOE_G_BIND_OUT, std430) writeonly restrict buffer Obuf { float outs[]; };
#if MOE_DOWN == 0
layout(set = 0, binding = MS_MOE_G_BIND_RW, std430) readonly restrict buffer Rw { float rw[]; };
#endif

const uint NM = MOE_DOWN != 0 ? 1u : 2u; // weight matrices per output row: w2, or w1 and w3
const uint NACC = NM * ROWS;             // weight row i = matrix * ROWS + row
const uint RB = ROWS * (WG / SG);        // rows per workgroup
const uint KT = SG * UNROLL;             // chunks per row per K-tile
const uint XS = KT + 1u;                 // padded stride of one q row of the tile, in vec4s
const uint TILE_V4 = V * KT;             // vec4s of one pair's K-tile
shared vec4 xt[TOK * V * XS];
shared uint tile_pair[TOK]; // the tile's pair ids
shared uint tile_in[TOK];   // float index of each pair's input vector

float acc[NACC * TOK]; // acc[i * TOK + j]: weight row i . input j
uint wbase[NACC];      // uvec4 index of each weight row in the pool
#if ENC == ENC_FP8
uint srow[NM];         // scale byte index of the subgroup's 128-row scale block row, per matrix
#else
uint sbase[NACC];      // scale byte index of each row's first scale
#endif
uint nch;              // 16-byte chunks per weight row

vec4 load_in(uint i) { // i: float index, a multiple of 4
    if (X_VEC4 != 0u) return x4[i >> 2];
    return vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
}

vec4 tx(uint j, uint q, uint c) { return xt[(j * V + q) * XS + c]; }

// Points the weight rows at rows [rowg, rowg + ROWS) of one record's matrix m (data offset d16,
// scale offset s in the record). Rows past m_rows are clamped to the last row: their loads stay in
// bounds and their sums are never stored.
void bind_rows(uint m, uint rec16, uint d16, uint s, uint rowg, uint m_rows, uint k_cols) {
    const uint recb = rec16 * 16u; // < the pool range (the host checks it fits 32 bits)
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        const uint row = min(rowg + r, m_rows - 1u);
        wbase[m * ROWS + r] = rec16 + d16 + row * nch;
#if ENC == ENC_FP4
        sbase[m * ROWS + r] = recb + s + row * nch; // [rows][k/32]: one scale byte per chunk
#endif
    }
#if ENC == ENC_FP8
    // ROWS divides 128 and rowg is a multiple of ROWS: the subgroup's rows share a scale row.
    srow[m] = recb + s + (min(rowg, m_rows - 1u) >> 7) * ((k_cols + 127u) >> 7);
#endif
}

// One K-tile starting at chunk t0 for the tile's nt pairs. FULL: every chunk of the tile exists.
void tile(const uint t0, const uint nt, const bool FULL) {
    const uint lane = gl_SubgroupInvocationID;
    // Weight (and scale) loads first, so that they are in flight while the inputs are staged.
    uvec4 wv[UNROLL * NACC];
#if ENC == ENC_FP8
    uint sv[UNROLL * NM];
#else
    uint sv[UNROLL * NACC];
#endif
    [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
        const uint ch = FULL ? t0 + lane + u * SG : min(t0 + lane + u * SG, nch - 1u);
        [[unroll]] for (uint i = 0u; i < NACC; i++) wv[u * NACC + i] = wq[wbase[i] + ch];
#if ENC == ENC_FP8
        [[unroll]] for (uint m = 0u; m < NM; m++) sv[u * NM + m] = scale_byte(srow[m] + (ch >> 3));
#else
        [[unroll]] for (uint i = 0u; i < NACC; i++) sv[u * NACC + i] = scale_byte(sbase[i] + ch);
#endif
    }

    barrier(); // every subgroup is done reading the previous K-tile
    for (uint i = gl_LocalInvocationID.x; i < nt * TILE_V4; i += WG) {
        const uint j = i / TILE_V4;
        const uint rem = i - j * TILE_V4;
        const uint c = rem / V;
        const uint q = rem - c * V;
        vec4 v = vec4(0.0);
        if (FULL || t0 + c < nch) v = load_in(tile_in[j] + (t0 + c) * ELEMS + q * 4u);
        xt[(j * V + q) * XS + c] = v;
    }
    barrier();

    [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
        const uint c = lane + u * SG;
        if (!FULL && t0 + c >= nch) break;
        float part[NACC * TOK];
        [[unroll]] for (uint i = 0u; i < NACC * TOK; i++) part[i] = 0.0;
#if ENC == ENC_FP8
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            vec4 w[NACC]; // word q of each row: elements 4q..4q+3 (value * 2^-8)
            [[unroll]] for (uint i = 0u; i < NACC; i++) w[i] = dec_fp8(wv[u * NACC + i][q]);
            [[unroll]] for (uint j = 0u; j < TOK; j++) {
                if (j >= nt) break;
                const vec4 xa = tx(j, q, c);
                [[unroll]] for (uint i = 0u; i < NACC; i++) part[i * TOK + j] = fma4(w[i], xa, part[i * TOK + j]);
            }
        }
        [[unroll]] for (uint i = 0u; i < NACC; i++) {
            const float f = e8m0(sv[u * NM + i / ROWS]);
            const float fr = fp8_has_nan(wv[u * NACC + i]) ? MS_NAN : f;
            [[unroll]] for (uint j = 0u; j < TOK; j++) acc[i * TOK + j] = fma(part[i * TOK + j], fr, acc[i * TOK + j]);
        }
#else
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            vec4 lo[NACC], hi[NACC]; // word q of each row: elements 8q..8q+7 (value * 2^-14)
            [[unroll]] for (uint i = 0u; i < NACC; i++) dec_fp4(wv[u * NACC + i][q], lo[i], hi[i]);
            [[unroll]] for (uint j = 0u; j < TOK; j++) {
                if (j >= nt) break;
                const vec4 xa = tx(j, 2u * q, c);
                const vec4 xb = tx(j, 2u * q + 1u, c);
                [[unroll]] for (uint i = 0u; i < NACC; i++)
                    part[i * TOK + j] = fma4(hi[i], xb, fma4(lo[i], xa, part[i * TOK + j]));
            }
        }
        [[unroll]] for (uint i = 0u; i < NACC; i++) {
            const float f = e8m0(sv[u * NACC + i]);
            [[unroll]] for (uint j = 0u; j < TOK; j++) acc[i * TOK + j] = fma(part[i * TOK + j], f, acc[i * TOK + j]);
        }
#endif
    }
}

// All pairs of expert e (record rec) against rows [row0, row0 + RB) of its matrices.
void run_item(uint e, uint rec, uint row0) {
    const uint lane = gl_SubgroupInvocationID;
    const uint rowg = row0 + gl_SubgroupID * ROWS;
    const uint first = offsets[e], cnt = offsets[e + 1u] - first;
#if MOE_DOWN == 0
    const uint m_rows = p.inter, k_cols = p.dim;
    nch = p.dim / ELEMS;
    bind_rows(0u, rec * p.rec16, p.w1_data16, p.w1_scale, rowg, m_rows, k_cols);
    bind_rows(1u, rec * p.rec16, p.w3_data16, p.w3_scale, rowg, m_rows, k_cols);
#else
    const uint m_rows = p.dim, k_cols = p.inter;
    nch = p.inter / ELEMS;
    bind_rows(0u, rec * p.rec16, p.w2_data16, p.w2_scale, rowg, m_rows, k_cols);
#endif
    const uint nfull = nch / KT;

    for (uint p0 = 0u; p0 < cnt; p0 += TOK) {
        const uint nt = min(TOK, cnt - p0);
        barrier(); // the previous tile's (or item's) readers of tile_pair / tile_in are done
        if (gl_LocalInvocationID.x < nt) {
            const uint pr = list[first + p0 + gl_LocalInvocationID.x];
            tile_pair[gl_LocalInvocationID.x] = pr;
#if MOE_DOWN == 0
            tile_in[gl_LocalInvocationID.x] = (pr / p.k) * p.dim;
#else
            tile_in[gl_LocalInvocationID.x] = pr * p.inter;
#endif
        }
        // tile() stages after a barrier, which also publishes tile_pair / tile_in
        [[unroll]] for (uint i = 0u; i < NACC * TOK; i++) acc[i] = 0.0;
        for (uint t = 0u; t < nfull; t++) tile(t * KT, nt, true);
        if (nfull * KT < nch) tile(nfull * KT, nt, false);

        [[unroll]] for (uint j = 0u; j < TOK; j++) {
            if (j >= nt) break;
            const uint pr = tile_pair[j];
#if MOE_DOWN == 0
            const float w = rw[pr];
#endif
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
#if MOE_DOWN == 0
                const float g0 = subgroupAdd(acc[r * TOK + j]) * POST;
                const float u0 = subgroupAdd(acc[(ROWS + r) * TOK + j]) * POST;
                float g = g0, u = u0;
                if (p.limit > 0.0) {
                    u = clamp(u, -p.limit, p.limit);
                    g = min(g, p.limit);
                }
                // clamp and min may turn a NaN into the bound (NVIDIA does); the reference keeps it NaN
                const float a = isnan(g0) || isnan(u0) ? g0 + u0 : g / (1.0 + exp(-g)) * u * w;
                if (lane == 0u && rowg + r < m_rows) outs[pr * p.inter + rowg + r] = a;
#else
                const float y = subgroupAdd(acc[r * TOK + j]) * POST;
                if (lane == 0u && rowg + r < m_rows) outs[pr * p.dim + rowg + r] = y;
#endif
            }
        }
    }
}

void main() {
    const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    const uint n_items = experts[0] * p.blocks; // < 2^32: the host bounds min(n_experts, n*k) * blocks
    for (uint it = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; it < n_items; it += groups) {
        const uint j = it / p.blocks;
        const uint e = experts[1u + j];
        const uint rec = slots[e];
        // moe_group lists only resident experts; kept so that no read can leave the pool
        if (e >= p.n_experts || rec >= p.n_records) continue;
        run_item(e, rec, (it - j * p.blocks) * RB);
    }
}
