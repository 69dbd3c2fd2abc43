// shaders/moe.comp — the expert FFN over a pool of expert records: gate/up + SwiGLU (MOE_DOWN = 0,
// variants moe_up_<enc>) and down + the sum over the active experts (MOE_DOWN = 1, moe_down_<enc>).
// Layout, maths and constants: shaders/moe.h; CPU references ms_ref_moe_up / ms_ref_moe_down
// (engine/ref/moe.c).
//
// Shape of the work, as in shaders/gemv_tiled.comp: every subgroup owns ROWS output rows and walks
// whole weight rows, lane l taking the row's 16-byte chunks l, l + SG, ... (coalesced uvec4 loads),
// UNROLL chunks per row per K-tile; the input vector's K-tile is staged once per workgroup in shared
// memory ([vec4 q of a chunk][chunk], one vec4 of padding per q row). Up walks the w1 and w3 rows of
// its ROWS rows together (2 * ROWS rows in flight). Each subgroup sums its own rows (subgroupAdd),
// so there is no cross-subgroup reduction; down adds the k experts' sums in the order of a.
// Assumes gl_SubgroupSize == SG and full subgroups (WG a multiple of SG).
//
// Out-of-range ids and slots: idx[pair] >= n_experts or slots[e] >= n_records read nothing from
// the pool. Both tests depend only on the workgroup's (t, a), so the early return (up) and the
// skip (down) are workgroup-uniform and every barrier is still met by all invocations.
//
// Decoding: shaders/wdecode.glsl, the same chunk order and roundings as gemv_tiled.comp.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require

#include "moe.h"
#define MS_SCALE_BINDING MS_MOE_BIND_POOL
#include "wdecode.glsl"

#if ENC != ENC_FP8 && ENC != ENC_FP4
#error "moe.comp: ENC must be 2 (fp8) or 3 (fp4)"
#endif
#ifndef MOE_DOWN
#error "moe.comp: MOE_DOWN must be defined (0 gate/up + SwiGLU, 1 down + sum)"
#endif

layout(constant_id = MS_MOE_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_MOE_SPEC_ROWS) const uint ROWS = 1; // rows per subgroup
layout(constant_id = MS_MOE_SPEC_UNROLL) const uint UNROLL = 1;
layout(constant_id = MS_MOE_SPEC_SG) const uint SG = 32; // the exact subgroup size
layout(constant_id = MS_MOE_SPEC_X_VEC4) const uint X_VEC4 = 0;
layout(local_size_x_id = MS_MOE_SPEC_WG) in;

layout(push_constant) uniform Push { ms_moe_push p; };

// The pool: data as uvec4 here, scales as uint (sw[], declared by wdecode.glsl) on the same binding.
layout(set = 0, binding = MS_MOE_BIND_POOL, std430) readonly restrict buffer Wbuf { uvec4 wq[]; };
layout(set = 0, binding = MS_MOE_BIND_SLOTS, std430) readonly restrict buffer Slots { uint slots[]; };
layout(set = 0, binding = MS_MOE_BIND_IDX, std430) readonly restrict buffer Idx { uint idx[]; };
// The input vectors (x [n][dim] or act [n][k][inter]): vec4 loads when the host says the range
// allows them, else scalars.
layout(set = 0, binding = MS_MOE_BIND_IN, std430) readonly buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_MOE_BIND_IN, std430) readonly buffer X4buf { vec4 x4[]; };
#if MOE_DOWN == 0
layout(set = 0, binding = MS_MOE_BIND_AUX, std430) readonly restrict buffer Rw { float rw[]; };
layout(set = 0, binding = MS_MOE_BIND_OUT, std430) writeonly restrict buffer Act { float acts[]; };
#else
// base and y may be one range: no restrict.
layout(set = 0, binding = MS_MOE_BIND_AUX, std430) readonly buffer Base { float base[]; };
layout(set = 0, binding = MS_MOE_BIND_OUT, std430) writeonly buffer Ybuf { float ys[]; };
#endif

const uint NM = MOE_DOWN != 0 ? 1u : 2u; // weight matrices per output row: w2, or w1 and w3
const uint NACC = NM * ROWS;             // accumulator i = matrix * ROWS + row
const uint RB = ROWS * (WG / SG);        // rows per workgroup
const uint KT = SG * UNROLL;             // chunks per row per K-tile
const uint XS = KT + 1u;                 // padded stride of one q row of the tile, in vec4s
const uint TILE_V4 = V * KT;
shared vec4 xt[V * XS];

float acc[NACC];
uint wbase[NACC]; // uvec4 index of each accumulator's weight row in the pool
#if ENC == ENC_FP8
uint srow[NM];    // scale byte index of the subgroup's 128-row scale block row, per matrix
#else
uint sbase[NACC]; // scale byte index of each row's first scale
#endif
uint nch;         // 16-byte chunks per weight row
uint in_off;      // float index of the input vector

vec4 load_in(uint e) { // e: element index of the input vector, a multiple of 4
    const uint i = in_off + e;
    if (X_VEC4 != 0u) return x4[i >> 2];
    return vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
}

vec4 tx(uint q, uint j) { return xt[q * XS + j]; }

// Points the accumulators at rows [rowg, rowg + ROWS) of one record's matrices (m = matrix index
// 0..NM-1, with data offset d16 and scale offset s in the record). Rows past m_rows are clamped to
// the last row: their loads stay in bounds and their sums are never stored.
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

// One K-tile starting at chunk t0. FULL: every chunk of the tile exists (no clamps, no skips).
void tile(const uint t0, const bool FULL) {
    const uint lane = gl_SubgroupInvocationID;
    // Weight (and scale) loads first, so that they are in flight while the input is staged.
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

    barrier(); // every subgroup is done reading the previous tile
    for (uint i = gl_LocalInvocationID.x; i < TILE_V4; i += WG) {
        const uint j = i / V;
        const uint q = i - j * V;
        vec4 v = vec4(0.0);
        if (FULL || t0 + j < nch) v = load_in((t0 + j) * ELEMS + q * 4u);
        xt[q * XS + j] = v;
    }
    barrier();

    [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
        const uint j = lane + u * SG;
        if (!FULL && t0 + j >= nch) break;
        float part[NACC];
        [[unroll]] for (uint i = 0u; i < NACC; i++) part[i] = 0.0;
#if ENC == ENC_FP8
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            const vec4 xa = tx(q, j); // word q: elements 4q..4q+3 (value * 2^-8)
            [[unroll]] for (uint i = 0u; i < NACC; i++)
                part[i] = fma4(dec_fp8(wv[u * NACC + i][q]), xa, part[i]);
        }
        [[unroll]] for (uint i = 0u; i < NACC; i++) {
            const float f = e8m0(sv[u * NM + i / ROWS]);
            const float fr = fp8_has_nan(wv[u * NACC + i]) ? MS_NAN : f;
            acc[i] = fma(part[i], fr, acc[i]);
        }
#else
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            const vec4 xa = tx(2u * q, j); // word q: elements 8q..8q+7 (value * 2^-14)
            const vec4 xb = tx(2u * q + 1u, j);
            [[unroll]] for (uint i = 0u; i < NACC; i++) {
                vec4 lo, hi;
                dec_fp4(wv[u * NACC + i][q], lo, hi);
                part[i] = fma4(hi, xb, fma4(lo, xa, part[i]));
            }
        }
        [[unroll]] for (uint i = 0u; i < NACC; i++) acc[i] = fma(part[i], e8m0(sv[u * NACC + i]), acc[i]);
#endif
    }
}

// acc = the rows' dot products with the input vector at in_off (k_cols long).
void dot_rows(uint k_cols) {
    [[unroll]] for (uint i = 0u; i < NACC; i++) acc[i] = 0.0;
    const uint nfull = nch / KT;
    for (uint t = 0u; t < nfull; t++) tile(t * KT, true);
    if (nfull * KT < nch) tile(nfull * KT, false);
}

// The expert's record, or MS_MOE_NO_SLOT when the id or its slot is out of range (read nothing).
uint record_of(uint e) {
    uint slot = MS_MOE_NO_SLOT;
    if (e < p.n_experts) slot = slots[e];
    return slot < p.n_records ? slot : MS_MOE_NO_SLOT;
}

void main() {
    const uint wgid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint lane = gl_SubgroupInvocationID;
#if MOE_DOWN == 0
    const uint pair = wgid / p.blocks; // t * k + a
    if (pair >= p.n * p.k) return;     // whole workgroup: the 2-D grid may overshoot
    const uint row0 = (wgid - pair * p.blocks) * RB;
    const uint rowg = row0 + gl_SubgroupID * ROWS;
    const uint rec = record_of(idx[pair]);
    if (rec == MS_MOE_NO_SLOT) { // contributes 0
        for (uint i = gl_LocalInvocationID.x; i < RB; i += WG)
            if (row0 + i < p.inter) acts[pair * p.inter + row0 + i] = 0.0;
        return;
    }
    nch = p.dim / ELEMS;
    const uint rec16 = rec * p.rec16;
    bind_rows(0u, rec16, p.w1_data16, p.w1_scale, rowg, p.inter, p.dim);
    bind_rows(1u, rec16, p.w3_data16, p.w3_scale, rowg, p.inter, p.dim);
    in_off = (pair / p.k) * p.dim;
    dot_rows(p.dim);

    const float w = rw[pair];
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        const float g0 = subgroupAdd(acc[r]) * POST;
        const float u0 = subgroupAdd(acc[ROWS + r]) * POST;
        float g = g0, u = u0;
        if (p.limit > 0.0) {
            u = clamp(u, -p.limit, p.limit);
            g = min(g, p.limit);
        }
        // clamp and min may turn a NaN into the bound (NVIDIA does); the reference keeps it NaN
        const float a = isnan(g0) || isnan(u0) ? g0 + u0 : g / (1.0 + exp(-g)) * u * w;
        if (lane == 0u && rowg + r < p.inter) acts[pair * p.inter + rowg + r] = a;
    }
#else
    const uint t = wgid / p.blocks;
    if (t >= p.n) return; // whole workgroup: the 2-D grid may overshoot
    const uint rowg = (wgid - t * p.blocks) * RB + gl_SubgroupID * ROWS;
    nch = p.inter / ELEMS;
    float tot[ROWS];
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        tot[r] = 0.0;
        if (rowg + r < p.dim) tot[r] = base[t * p.dim + rowg + r];
    }
    for (uint a = 0u; a < p.k; a++) {
        const uint rec = record_of(idx[t * p.k + a]);
        if (rec == MS_MOE_NO_SLOT) continue; // contributes 0
        bind_rows(0u, rec * p.rec16, p.w2_data16, p.w2_scale, rowg, p.dim, p.inter);
        in_off = (t * p.k + a) * p.inter;
        dot_rows(p.inter);
        [[unroll]] for (uint r = 0u; r < ROWS; r++) tot[r] += subgroupAdd(acc[r]) * POST;
    }
    [[unroll]] for (uint r = 0u; r < ROWS; r++)
        if (lane == 0u && rowg + r < p.dim) ys[t * p.dim + rowg + r] = tot[r];
#endif
}
