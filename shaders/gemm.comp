// shaders/gemm.comp — y[t][r] = W[r, :] . x[t][:] for many tokens (prefill): a shared-memory tiled
// GEMM over checkpoint-encoded weights (variants gemm_<enc>; CPU reference ms_ref_gemv_<enc>,
// engine/ref/gemv.c, the same operation as the GEMV kernels). Layout and constants: shaders/gemm.h.
//
// Shape of the work: a workgroup owns BM rows x BN tokens. Per K-tile of BK elements it decodes its
// BM x BK weight tile once into shared memory as exact F32 weights (wdecode.glsl's *_scaled
// decoders: the block scale is folded into each weight, which is what the reference's decoded
// weight is) and stages the BN x BK activation tile; both are stored k-major ([k][row], [k][token])
// so that the inner loop reads them as vec4s. Each invocation accumulates a TM x TN register tile
// in F32 (fma), over the k steps of its K slice: with KS > 1 slices, slice s takes steps
// [s * BK / KS, (s + 1) * BK / KS) of every tile and the slices' sums are added in slice order at
// the end through shared memory (more invocations per output where m x n alone is too few to fill
// a GPU). The global loads of tile t + 1 are issued before tile t is computed, into registers, and
// decoded only when they are stored, so their latency hides behind the FMAs.
//
// Invocations of one slice form blocks of GM x GN (32 where the tile allows): GM consecutive row
// groups x GN token groups, so that the vec4 reads of a 32-wide subgroup touch GM + GN distinct
// vec4s (broadcasts) and stay within one shared-memory wavefront each. An invocation's rows are the
// TM / 4 row quads q * (BM / TM) + tm (not TM consecutive rows), so that those reads are contiguous.
//
// Partial tiles: rows >= m and tokens >= n load zeros and are not stored; chunks past k and x past k
// load zeros. The loads are the only place that checks bounds; the inner loop runs full tiles.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

#include "gemm.h"
#define MS_SCALE_BINDING MS_GEMM_BIND_S
#include "wdecode.glsl"

// Defaults: a small tile that fits every device (module creation validates the defaults).
layout(constant_id = MS_GEMM_SPEC_WG) const uint WG = 64;
layout(constant_id = MS_GEMM_SPEC_BM) const uint BM = 32;
layout(constant_id = MS_GEMM_SPEC_BN) const uint BN = 32;
layout(constant_id = MS_GEMM_SPEC_BK) const uint BK = 32;
layout(constant_id = MS_GEMM_SPEC_TM) const uint TM = 4;
layout(constant_id = MS_GEMM_SPEC_TN) const uint TN = 4;
layout(constant_id = MS_GEMM_SPEC_X_VEC4) const uint X_VEC4 = 0;
layout(constant_id = MS_GEMM_SPEC_KU) const uint KU0 = 32;
layout(local_size_x_id = MS_GEMM_SPEC_WG) in;

layout(push_constant) uniform Push { ms_gemm_push p; };

layout(set = 0, binding = MS_GEMM_BIND_W, std430) readonly restrict buffer Wbuf { uvec4 wq[]; };
layout(set = 0, binding = MS_GEMM_BIND_X, std430) readonly buffer Xbuf { float xs[]; };
layout(set = 0, binding = MS_GEMM_BIND_X, std430) readonly buffer X4buf { vec4 x4[]; };
layout(set = 0, binding = MS_GEMM_BIND_Y, std430) writeonly buffer Ybuf { float ys[]; };

const uint NTM = BM / TM;        // invocations along rows (per slice)
const uint NTN = BN / TN;        // along tokens
const uint P = NTM * NTN;        // invocations per K slice
const uint KS = WG / P;          // K slices
const uint BKS = BK / KS;        // k steps of a slice per tile
const uint KU = KU0 < BKS ? KU0 : BKS; // k steps unrolled
const uint QM = TM / 4u;         // row quads per invocation
const uint QN = TN / 4u;         // token quads
const uint NACC = TM * TN;
const uint GM = NTM < 8u ? NTM : 8u;
const uint GN = NTN < 32u / GM ? NTN : 32u / GM;
const uint BM4 = BM / 4u, BN4 = BN / 4u;
const uint CPR = BK / ELEMS;     // weight chunks per row per tile
const uint NWC = BM * CPR;       // weight chunks per tile
const uint WJ = (NWC + WG - 1u) / WG;
const uint NXV = BN * BK / 4u;   // x vec4s per tile
const uint XJ = (NXV + WG - 1u) / WG;
const uint WS4 = BK * BM4;       // vec4s of the weight tile; the x tile follows it
const uint TILE4 = BK * (BM4 + BN4);
const uint PART4 = BM * BN / 4u; // vec4s of one slice's partial sums
const uint SH4 = KS > 1u && PART4 > TILE4 ? PART4 : TILE4;
shared vec4 sh[SH4];

float acc[NACC];
uvec4 wreg[WJ];
#if ENC == ENC_FP8 || ENC == ENC_FP4
uint sreg[WJ];
#endif
vec4 xreg[XJ];
uint nch, row0, tok0;
#if ENC == ENC_FP8
uint ncol128;
#endif

vec4 load_x(uint tok, uint e) { // e: element index, a multiple of 4
    const uint i = tok * p.x_stride + e;
    if (X_VEC4 != 0u) return x4[i >> 2];
    return vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
}

// Global loads of K-tile kt into registers (zeros outside the matrix).
void load_tile(uint kt) {
    const uint tid = gl_LocalInvocationID.x;
    [[unroll]] for (uint j = 0u; j < WJ; j++) {
        const uint i = tid + j * WG;
        const uint r = i % BM, kc = i / BM; // consecutive invocations: consecutive rows
        const uint row = row0 + r, ch = kt * CPR + kc;
        uvec4 v = uvec4(0u);
#if ENC == ENC_FP8 || ENC == ENC_FP4
        uint s = 127u; // scale 1 for the zero chunks outside the matrix
#endif
        if ((NWC % WG == 0u || i < NWC) && row < p.m && ch < nch) {
            v = wq[row * nch + ch];
#if ENC == ENC_FP8
            s = scale_byte((row >> 7) * ncol128 + (ch >> 3));
#elif ENC == ENC_FP4
            s = scale_byte(row * nch + ch);
#endif
        }
        wreg[j] = v;
#if ENC == ENC_FP8 || ENC == ENC_FP4
        sreg[j] = s;
#endif
    }
    [[unroll]] for (uint j = 0u; j < XJ; j++) {
        const uint i = tid + j * WG;
        const uint t = i % BN, kq = i / BN; // consecutive invocations: consecutive tokens
        const uint tok = tok0 + t, e = kt * BK + kq * 4u;
        vec4 v = vec4(0.0);
        if ((NXV % WG == 0u || i < NXV) && tok < p.n && e < p.k) v = load_x(tok, e);
        xreg[j] = v;
    }
}

void put_w(uint kk, uint r, float v) { sh[kk * BM4 + (r >> 2)][r & 3u] = v; }

// Decode the registers of load_tile into the shared tile: weights [BK][BM], x [BK][BN].
void store_tile() {
    const uint tid = gl_LocalInvocationID.x;
    [[unroll]] for (uint j = 0u; j < WJ; j++) {
        const uint i = tid + j * WG;
        if (NWC % WG != 0u && i >= NWC) continue;
        const uint r = i % BM, kk = (i / BM) * ELEMS;
        const uvec4 w = wreg[j];
#if ENC == ENC_F32
        const vec4 d = uintBitsToFloat(w);
        [[unroll]] for (uint e = 0u; e < 4u; e++) put_w(kk + e, r, d[e]);
#elif ENC == ENC_BF16
        const vec4 a = dec_bf16(w.x, w.y), b = dec_bf16(w.z, w.w);
        [[unroll]] for (uint e = 0u; e < 4u; e++) {
            put_w(kk + e, r, a[e]);
            put_w(kk + 4u + e, r, b[e]);
        }
#elif ENC == ENC_FP8
        const float f = e8m0(sreg[j]);
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            const vec4 d = dec_fp8_scaled(w[q], f);
            [[unroll]] for (uint e = 0u; e < 4u; e++) put_w(kk + 4u * q + e, r, d[e]);
        }
#else // ENC_FP4
        const float f = e8m0(sreg[j]);
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            vec4 lo, hi;
            dec_fp4_scaled(w[q], f, lo, hi);
            [[unroll]] for (uint e = 0u; e < 4u; e++) {
                put_w(kk + 8u * q + e, r, lo[e]);
                put_w(kk + 8u * q + 4u + e, r, hi[e]);
            }
        }
#endif
    }
    [[unroll]] for (uint j = 0u; j < XJ; j++) {
        const uint i = tid + j * WG;
        if (NXV % WG != 0u && i >= NXV) continue;
        const uint t = i % BN, kk = (i / BN) * 4u;
        const vec4 v = xreg[j];
        [[unroll]] for (uint e = 0u; e < 4u; e++) sh[WS4 + (kk + e) * BN4 + (t >> 2)][t & 3u] = v[e];
    }
}

void main() {
    const uint wgid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint ntb = (p.n + BN - 1u) / BN;
    if (wgid >= ntb * ((p.m + BM - 1u) / BM)) return; // whole workgroup: the 2-D grid may overshoot
    row0 = (wgid / ntb) * BM;
    tok0 = (wgid % ntb) * BN;
    nch = p.k / ELEMS; // 16-byte chunks per row (shape rules make this exact)
#if ENC == ENC_FP8
    ncol128 = (p.k + 127u) >> 7;
#endif

    const uint tid = gl_LocalInvocationID.x;
    const uint ks = tid / P, pp = tid % P;
    const uint gm = pp % GM, gq = pp / GM;
    const uint gn = gq % GN, gb = gq / GN;
    const uint tm = (gb % (NTM / GM)) * GM + gm; // row quad index (first of QM, stride NTM)
    const uint tn = (gb / (NTM / GM)) * GN + gn; // token quad index (first of QN, stride NTN)

    [[unroll]] for (uint i = 0u; i < NACC; i++) acc[i] = 0.0;

    const uint ntiles = (p.k + BK - 1u) / BK;
    load_tile(0u);
    for (uint kt = 0u; kt < ntiles; kt++) {
        barrier(); // everyone is done reading the previous tile
        store_tile();
        barrier();
        if (kt + 1u < ntiles) load_tile(kt + 1u);
        const uint k0 = ks * BKS;
        [[dont_unroll]] for (uint k1 = 0u; k1 < BKS; k1 += KU) [[unroll]] for (uint k2 = 0u; k2 < KU; k2++) {
            const uint kk = k1 + k2;
            vec4 a[QM], b[QN];
            [[unroll]] for (uint q = 0u; q < QM; q++) a[q] = sh[(k0 + kk) * BM4 + q * NTM + tm];
            [[unroll]] for (uint q = 0u; q < QN; q++) b[q] = sh[WS4 + (k0 + kk) * BN4 + q * NTN + tn];
            [[unroll]] for (uint q = 0u; q < QM; q++)
                [[unroll]] for (uint i = 0u; i < 4u; i++)
                    [[unroll]] for (uint h = 0u; h < QN; h++)
                        [[unroll]] for (uint j = 0u; j < 4u; j++) {
                            const uint o = (q * 4u + i) * TN + h * 4u + j;
                            acc[o] = fma(a[q][i], b[h][j], acc[o]);
                        }
        }
    }

    // K slices: slice 0 adds slices 1, 2, ... in order, as many per round as shared memory holds.
    if (KS > 1u) {
        const uint R = SH4 / PART4;
        for (uint base = 1u; base < KS; base += R) {
            barrier();
            if (ks >= base && ks < base + R) {
                const uint s = ks - base;
                [[unroll]] for (uint e = 0u; e < NACC / 4u; e++)
                    sh[s * PART4 + e * P + pp] = vec4(acc[4u * e], acc[4u * e + 1u], acc[4u * e + 2u], acc[4u * e + 3u]);
            }
            barrier();
            if (ks == 0u) {
                for (uint s = 0u; s < R && base + s < KS; s++) {
                    [[unroll]] for (uint e = 0u; e < NACC / 4u; e++) {
                        const vec4 v = sh[s * PART4 + e * P + pp];
                        [[unroll]] for (uint c = 0u; c < 4u; c++) acc[4u * e + c] += v[c];
                    }
                }
            }
        }
        if (ks != 0u) return;
    }

    [[unroll]] for (uint q = 0u; q < QM; q++)
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            const uint row = row0 + 4u * (q * NTM + tm) + i;
            if (row >= p.m) continue;
            [[unroll]] for (uint h = 0u; h < QN; h++)
                [[unroll]] for (uint j = 0u; j < 4u; j++) {
                    const uint tok = tok0 + 4u * (h * NTN + tn) + j;
                    if (tok < p.n) ys[tok * p.y_stride + p.y_row0 + row] = acc[(q * 4u + i) * TN + h * 4u + j];
                }
        }
}
