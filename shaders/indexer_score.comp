// shaders/indexer_score.comp — the lightning indexer's block scores (layout and the whole
// algorithm: shaders/indexer.h; CPU reference ms_ref_indexer, engine/ref/indexer.c).
// One workgroup per (query t, tile of 64 keys): score[t][j] = sum_h relu(q[t][h] . key[j]) * w_h.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "indexer.h"

layout(local_size_x = MS_INDEXER_WG) in;

layout(push_constant) uniform Push { ms_indexer_push p; };

layout(set = 0, binding = MS_INDEXER_BIND_Q, std430) readonly restrict buffer Qbuf { float qs_g[]; };
layout(set = 0, binding = MS_INDEXER_BIND_W, std430) readonly restrict buffer Wbuf { float ws_g[]; };
layout(set = 0, binding = MS_INDEXER_BIND_KEYS, std430) readonly restrict buffer Kbuf { float keys[]; };
layout(set = 0, binding = MS_INDEXER_BIND_POS, std430) readonly restrict buffer Pbuf { uint pos[]; };
layout(set = 0, binding = MS_INDEXER_BIND_SCRATCH, std430) restrict buffer Sbuf { uint scr[]; };

#include "indexer.glsl"

#define T MS_INDEXER_TILE
#define TD MS_INDEXER_TILE_D
#define PITCH (TD + 1) // odd row pitch: the 16 key rows a subgroup reads sit in 16 banks

shared float kt[T * PITCH]; // [64 keys][16 dims] of the current step
shared float qt[T * PITCH]; // [64 heads][16 dims]
shared float red[16 * T];   // [16 head groups][64 keys] partial sums

void main() {
    const uint g = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    const uint tile = g % p.n_groups_q, t = g / p.n_groups_q;
    if (t >= p.n) return; // whole workgroup, as every return before a barrier below
    const uint nb = visible_blocks(t), j0 = tile * T, tid = gl_LocalInvocationID.x;
    if (min(p.topk, nb) == nb) return; // every block selected: no scores needed
    if (tile == 0u) // this query's histograms start at zero (indexer_select STAGE 0 adds to them)
        for (uint i = tid; i < MS_INDEXER_HIST_WORDS; i += MS_INDEXER_WG)
            scr[p.hist_off + t * MS_INDEXER_HIST_WORDS + i] = 0u;
    if (j0 >= nb) return;

    // invocation (kx, hy) accumulates keys kx + 16a and heads hy + 16b (a, b < 4)
    const uint kx = tid & 15u, hy = tid >> 4, nh = p.n_heads, hd = p.head_dim;
    const uint qbase = t * nh * hd;
    float part[4] = float[4](0.0, 0.0, 0.0, 0.0);
    for (uint h0 = 0u; h0 < nh; h0 += T) {
        float acc[4][4];
        for (uint a = 0u; a < 4u; a++)
            for (uint b = 0u; b < 4u; b++) acc[a][b] = 0.0;
        for (uint d0 = 0u; d0 < hd; d0 += TD) {
            barrier(); // the previous step's reads are done
            for (uint e = tid; e < T * TD; e += MS_INDEXER_WG) {
                const uint row = e / TD, col = e % TD, d = d0 + col;
                float kv = 0.0, qv = 0.0; // padding: zeros on both sides add exact zeros
                if (j0 + row < nb && d < hd) kv = keys[(j0 + row) * hd + d];
                if (h0 + row < nh && d < hd) qv = qs_g[qbase + (h0 + row) * hd + d];
                kt[row * PITCH + col] = kv;
                qt[row * PITCH + col] = qv;
            }
            barrier();
            for (uint dd = 0u; dd < TD; dd++) {
                float kv[4], qv[4];
                for (uint a = 0u; a < 4u; a++) kv[a] = kt[(kx + 16u * a) * PITCH + dd];
                for (uint b = 0u; b < 4u; b++) qv[b] = qt[(hy + 16u * b) * PITCH + dd];
                for (uint a = 0u; a < 4u; a++)
                    for (uint b = 0u; b < 4u; b++) acc[a][b] += kv[a] * qv[b];
            }
        }
        for (uint b = 0u; b < 4u; b++) {
            const uint h = h0 + hy + 16u * b;
            if (h >= nh) continue;
            const float wh = ws_g[t * nh + h] * p.w_scale;
            for (uint a = 0u; a < 4u; a++) {
                const float x = acc[a][b];
                // the reference's ReLU is (x > 0 ? x : 0): a NaN dot product gives 0, kept
                // explicit because a compiler may turn the select into a NaN-propagating max
                const float r = isnan(x) || !(x > 0.0) ? 0.0 : x;
                part[a] += r * wh;
            }
        }
    }
    for (uint a = 0u; a < 4u; a++) red[hy * T + kx + 16u * a] = part[a];
    barrier();
    if (tid < T && j0 + tid < nb) {
        float s = 0.0;
        for (uint y = 0u; y < 16u; y++) s += red[y * T + tid];
        scr[t * p.n_keys + j0 + tid] = floatBitsToUint(s);
    }
}
