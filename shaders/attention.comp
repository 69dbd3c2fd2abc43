// shaders/attention.comp — sparse attention with a per-head sink over the window ring and the
// compressed rows, one workgroup per (query, head group, split of the entry list). Layout, maths,
// NaN rules: shaders/attention.h; CPU reference ms_ref_attention (engine/ref/attention.c).
//
// Shared memory holds one tile of ET rows (all heads of the group read it: each row leaves L2
// once per workgroup), a QC-wide chunk of the group's queries, the score partials and the tile's
// probabilities. Rows are padded by one vec4 so that the score pass's lanes, which read the same
// column of different rows, hit different banks. Every loop is bounded by push or spec constants;
// nothing depends on the subgroup size.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

#include "attention.h"

layout(constant_id = MS_ATTN_SPEC_WG) const uint WG = 256;
layout(constant_id = MS_ATTN_SPEC_HT) const uint HT = 16;
layout(constant_id = MS_ATTN_SPEC_ET) const uint ET = 8; // defaults fit 32 KiB of shared memory (validated per module)
layout(constant_id = MS_ATTN_SPEC_D) const uint D = 512;
layout(constant_id = MS_ATTN_SPEC_QC) const uint QC = 128;
layout(constant_id = MS_ATTN_SPEC_KS) const uint KS = 4;
layout(constant_id = MS_ATTN_SPEC_HS) const uint HS = 2;
layout(constant_id = MS_ATTN_SPEC_CPT) const uint CPT = 1;
layout(constant_id = MS_ATTN_SPEC_HPT) const uint HPT = 8;
layout(constant_id = MS_ATTN_SPEC_SPLIT) const uint SPLIT = 0;
layout(local_size_x_id = MS_ATTN_SPEC_WG) in;

layout(push_constant) uniform Push { ms_attention_push p; };

layout(set = 0, binding = MS_ATTN_BIND_Q, std430) readonly restrict buffer Qbuf { vec4 q4[]; };
layout(set = 0, binding = MS_ATTN_BIND_RING, std430) readonly restrict buffer Rbuf { vec4 ring4[]; };
layout(set = 0, binding = MS_ATTN_BIND_ROWS, std430) readonly restrict buffer Cbuf { vec4 rows4[]; };
layout(set = 0, binding = MS_ATTN_BIND_SEL, std430) readonly restrict buffer Sbuf { uint sel[]; };
layout(set = 0, binding = MS_ATTN_BIND_SINK, std430) readonly restrict buffer Kbuf { float sinks[]; };
layout(set = 0, binding = MS_ATTN_BIND_POS, std430) readonly restrict buffer Pbuf { uint pos[]; };
layout(set = 0, binding = MS_ATTN_BIND_OUT, std430) writeonly restrict buffer Obuf { vec4 o4[]; };

const uint NC = D / 4u;         // vec4s per row
const uint RSV = NC + 1u;       // padded row stride of the tile, vec4s
const uint QCV = QC / 4u;       // vec4s per q chunk
const uint QSV = QCV + 1u;      // padded q-chunk row stride
const uint DKV = QCV / KS;      // vec4s of a chunk per score split
const uint HTP = HT / 2u, ETP = ET / 2u, PAIRS = HTP * ETP;
const uint HT4 = (HT + 3u) / 4u; // vec4s per entry of the probability tile
const uint TPS = WG / HS;       // invocations per head slice in the value pass
const uint NACC = CPT * HPT;

shared vec4 rt[ET * RSV];     // the tile's rows
shared vec4 qt[HT * QSV];     // the q chunk, pre-scaled
shared float part[KS * HT * ET];
shared float sc[HT * ET];     // scores [head][entry]
shared vec4 pt[ET * HT4];     // probabilities [entry][head]
shared float mb[2u * HT];     // running max per head, double-buffered per tile
shared float lfin[HT];
shared uint nanf[HT];
shared uint vmask[ET];

float hsum(vec4 v) { return (v.x + v.y) + (v.z + v.w); }

void stage_q(uint t, uint h0, uint c0v) {
    for (uint f = gl_LocalInvocationID.x; f < HT * QCV; f += WG) {
        const uint i = f / QCV, j = f - i * QCV, h = h0 + i;
        qt[i * QSV + j] = h < p.n_heads ? q4[(t * p.n_heads + h) * NC + c0v + j] * p.scale : vec4(0.0);
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint wid = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    const uint G = p.n_groups;
    if (wid >= p.n * G * p.n_split) return; // whole workgroups only: before any barrier
    const uint g = wid % G, s = (wid / G) % p.n_split, t = wid / (G * p.n_split);
    const uint h0 = g * HT;

    // The query's entry list (attention.h): n_win window rows, then the compressed slots.
    const uint P = pos[0] + t;
    const uint n_win = min(P, p.window - 1u) + 1u;
    const uint w0 = P - (n_win - 1u);
    uint nb = 0u;
    if (p.ratio != 0u) nb = min(P / p.ratio + (P % p.ratio == p.ratio - 1u ? 1u : 0u), p.n_rows);
    // ratio 4: the list is ascending, so every index < nb sits in its first min(topk, nb) slots
    const uint L = n_win + (p.ratio == 4u ? min(p.topk, nb) : nb);
    const uint per = ((L + p.n_split - 1u) / p.n_split + ET - 1u) / ET * ET;
    const uint k0 = min(s * per, L), k1 = min(k0 + per, L);

    float lsum = 0.0; // invocation i < HT: the running denominator of head i (without the sink)
    if (tid < HT) {
        const float sk = h0 + tid < p.n_heads ? sinks[h0 + tid] : 0.0;
        mb[tid] = isnan(sk) ? 0.0 : sk;
        nanf[tid] = isnan(sk) ? 1u : 0u;
    }
    if (QC == D) stage_q(t, h0, 0u);
    barrier();

    // Score pass: micro-tile heads (hp, hp + HTP) x entries (ep, ep + ETP), split ks of each chunk.
    const uint ep = tid % ETP, hp = (tid / ETP) % HTP, ks = tid / PAIRS;
    // Value pass: columns cl + j * TPS, heads hs * HPT ...
    const uint cl = tid % TPS, hs = tid / TPS;
    vec4 acc[NACC];
    [[unroll]] for (uint a = 0u; a < NACC; a++) acc[a] = vec4(0.0);

    uint cur = 0u;
    for (uint kt = k0; kt < k1; kt += ET) {
        for (uint f = tid; f < ET * NC; f += WG) {
            const uint e = f / NC, j = f - e * NC, k = kt + e;
            bool ok = k < k1;
            vec4 v = vec4(0.0);
            if (ok) {
                if (k < n_win) {
                    v = ring4[((w0 + k) % p.ring_len) * NC + j];
                } else {
                    uint jj = k - n_win;
                    if (p.ratio == 4u) {
                        jj = sel[t * p.topk + jj];
                        ok = jj < nb;
                    }
                    if (ok) v = rows4[jj * NC + j];
                }
            }
            rt[e * RSV + j] = v; // empty entries: zero rows (0 * garbage could be NaN)
            if (j == 0u) vmask[e] = ok ? 1u : 0u;
        }

        vec4 a00 = vec4(0.0), a01 = vec4(0.0), a10 = vec4(0.0), a11 = vec4(0.0);
        for (uint c0v = 0u; c0v < NC; c0v += QCV) {
            if (QC != D) {
                if (c0v != 0u) barrier(); // everyone is done with the previous chunk
                stage_q(t, h0, c0v);
            }
            barrier();
            const uint jq = ks * DKV, jr = c0v + jq;
            [[unroll]] for (uint j = 0u; j < DKV; j++) {
                const vec4 q0 = qt[hp * QSV + jq + j], q1 = qt[(hp + HTP) * QSV + jq + j];
                const vec4 r0 = rt[ep * RSV + jr + j], r1 = rt[(ep + ETP) * RSV + jr + j];
                a00 = fma(q0, r0, a00);
                a01 = fma(q0, r1, a01);
                a10 = fma(q1, r0, a10);
                a11 = fma(q1, r1, a11);
            }
        }
        part[(ks * HT + hp) * ET + ep] = hsum(a00);
        part[(ks * HT + hp) * ET + ep + ETP] = hsum(a01);
        part[(ks * HT + hp + HTP) * ET + ep] = hsum(a10);
        part[(ks * HT + hp + HTP) * ET + ep + ETP] = hsum(a11);
        barrier();

        for (uint f = tid; f < HT * ET; f += WG) {
            const uint i = f / ET, e = f - i * ET;
            float z = 0.0;
            [[unroll]] for (uint k = 0u; k < KS; k++) z += part[(k * HT + i) * ET + e];
            sc[f] = z;
        }
        barrier();

        // New running max per head over the tile's entries; probabilities against it.
        for (uint f = tid; f < HT * ET; f += WG) {
            const uint i = f / ET, e = f - i * ET;
            float mx = mb[cur * HT + i];
            bool bad = false;
            for (uint e2 = 0u; e2 < ET; e2++) {
                if (vmask[e2] == 0u) continue;
                const float z = sc[i * ET + e2];
                if (isnan(z)) bad = true;
                else mx = z > mx ? z : mx;
            }
            const float z = sc[f];
            pt[e * HT4 + i / 4u][i % 4u] = vmask[e] != 0u && !isnan(z) ? exp(z - mx) : 0.0;
            if (e == 0u) {
                mb[(cur ^ 1u) * HT + i] = mx;
                if (bad) nanf[i] = 1u;
            }
        }
        barrier();

        // Value pass: acc = acc * exp(m - m') + sum_e p_e row_e.
        float pv[HPT];
        [[unroll]] for (uint u = 0u; u < HPT; u++) {
            const uint i = hs * HPT + u;
            const float mo = mb[cur * HT + i], mn = mb[(cur ^ 1u) * HT + i];
            const float al = mo == mn ? 1.0 : exp(mo - mn); // also -inf == -inf (sink -inf, empty tile)
            [[unroll]] for (uint j = 0u; j < CPT; j++) acc[j * HPT + u] *= al;
        }
        for (uint e = 0u; e < ET; e++) {
            if (HPT % 4u == 0u) {
                [[unroll]] for (uint u = 0u; u < HPT; u += 4u) {
                    const vec4 pp = pt[e * HT4 + (hs * HPT + u) / 4u];
                    pv[u] = pp.x;
                    pv[u + 1u] = pp.y;
                    pv[u + 2u] = pp.z;
                    pv[u + 3u] = pp.w;
                }
            } else {
                [[unroll]] for (uint u = 0u; u < HPT; u++) {
                    const uint i = hs * HPT + u;
                    pv[u] = pt[e * HT4 + i / 4u][i % 4u];
                }
            }
            [[unroll]] for (uint j = 0u; j < CPT; j++) {
                const vec4 r = rt[e * RSV + cl + j * TPS];
                [[unroll]] for (uint u = 0u; u < HPT; u++) acc[j * HPT + u] = fma(vec4(pv[u]), r, acc[j * HPT + u]);
            }
        }
        if (tid < HT) {
            const float mo = mb[cur * HT + tid], mn = mb[(cur ^ 1u) * HT + tid];
            float ps = 0.0;
            for (uint e = 0u; e < ET; e++) ps += pt[e * HT4 + tid / 4u][tid % 4u];
            lsum = lsum * (mo == mn ? 1.0 : exp(mo - mn)) + ps;
        }
        cur ^= 1u;
        barrier(); // the next tile overwrites rt, pt, sc
    }

    const float qnan = uintBitsToFloat(0x7FC00000u);
    if (SPLIT == 0u) {
        if (tid < HT && h0 + tid < p.n_heads) lfin[tid] = lsum + exp(sinks[h0 + tid] - mb[cur * HT + tid]);
        barrier();
        [[unroll]] for (uint u = 0u; u < HPT; u++) {
            const uint i = hs * HPT + u, h = h0 + i;
            if (h >= p.n_heads) continue;
            const bool bad = nanf[i] != 0u;
            const float l = lfin[i];
            [[unroll]] for (uint j = 0u; j < CPT; j++)
                o4[(t * p.n_heads + h) * NC + cl + j * TPS] = bad ? vec4(qnan) : acc[j * HPT + u] / l;
        }
    } else {
        const uint rec0 = (t * p.n_split + s) * p.n_heads; // record index of head 0
        [[unroll]] for (uint u = 0u; u < HPT; u++) {
            const uint i = hs * HPT + u, h = h0 + i;
            if (h >= p.n_heads) continue;
            [[unroll]] for (uint j = 0u; j < CPT; j++) o4[(rec0 + h) * RSV + cl + j * TPS] = acc[j * HPT + u];
        }
        if (tid < HT && h0 + tid < p.n_heads)
            o4[(rec0 + h0 + tid) * RSV + NC] = vec4(mb[cur * HT + tid], nanf[tid] != 0u ? qnan : lsum, 0.0, 0.0);
    }
}
