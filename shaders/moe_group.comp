// shaders/moe_group.comp — the (token, active expert) pairs grouped by expert: offsets, experts,
// list and pos of shaders/moe_grouped.h, computed by one workgroup. CPU twin: ms_ref_moe_group
// (engine/ref/moe.c), bit for bit.
//
// One workgroup, because the work is small (n * k ids, n_experts cursors) and a single group needs
// no cross-workgroup synchronisation: count (shared atomics), an exclusive scan of the counts (and
// of the experts with pairs, which lists those), then the pairs in chunks of WG in order of p. A
// pair's place is its expert's cursor (the start plus the pairs of that expert in earlier chunks)
// plus the number of earlier pairs of the same expert in its own chunk, so the list is fixed
// whatever order the atomics run in. After each chunk every valid pair adds 1 to its cursor
// (atomics again: only the sum matters).
#version 450
#extension GL_GOOGLE_include_directive : require

#include "moe_grouped.h"

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push { ms_moe_grouped_push p; };

layout(set = 0, binding = MS_MOE_GROUP_BIND_IDX, std430) readonly restrict buffer Idx { uint idx[]; };
layout(set = 0, binding = MS_MOE_GROUP_BIND_SLOTS, std430) readonly restrict buffer Slots { uint slots[]; };
layout(set = 0, binding = MS_MOE_GROUP_BIND_OFFSETS, std430) writeonly restrict buffer Offs { uint offsets[]; };
layout(set = 0, binding = MS_MOE_GROUP_BIND_EXPERTS, std430) writeonly restrict buffer Used { uint experts[]; };
layout(set = 0, binding = MS_MOE_GROUP_BIND_LIST, std430) writeonly restrict buffer List { uint list[]; };
layout(set = 0, binding = MS_MOE_GROUP_BIND_POS, std430) writeonly restrict buffer Pos { uint pos[]; };

shared uint cur[MS_MOE_GROUP_MAX_EXPERTS]; // counts, then each expert's next place in list
shared uvec2 part[WG];                     // the scan's per-invocation sums: pairs, experts with pairs
shared uint ids[WG];                       // the chunk's experts (MS_MOE_NO_SLOT: invalid)

// Pair q's expert, or MS_MOE_NO_SLOT when the id or its slot is out of range.
uint expert_of(uint q) {
    const uint e = idx[q];
    if (e >= p.n_experts) return MS_MOE_NO_SLOT;
    return slots[e] < p.n_records ? e : MS_MOE_NO_SLOT;
}

void main() {
    const uint l = gl_LocalInvocationID.x;
    const uint E = p.n_experts, np = p.n * p.k;

    for (uint e = l; e < E; e += WG) cur[e] = 0u;
    barrier();
    for (uint q = l; q < np; q += WG) {
        const uint e = expert_of(q);
        if (e != MS_MOE_NO_SLOT) atomicAdd(cur[e], 1u);
    }
    barrier();

    // Exclusive scans of the pair counts and of the experts with pairs: invocation l owns experts
    // [e0, e1), a Hillis-Steele scan of the owners' sums.
    const uint per = (E + WG - 1u) / WG;
    const uint e0 = min(l * per, E), e1 = min(e0 + per, E);
    uvec2 s = uvec2(0u);
    for (uint e = e0; e < e1; e++) s += uvec2(cur[e], cur[e] != 0u ? 1u : 0u);
    part[l] = s;
    barrier();
    for (uint d = 1u; d < WG; d <<= 1) {
        const uvec2 v = l >= d ? part[l - d] : uvec2(0u);
        barrier();
        part[l] += v;
        barrier();
    }
    uvec2 run = part[l] - s;
    for (uint e = e0; e < e1; e++) {
        const uint c = cur[e];
        cur[e] = run.x;
        offsets[e] = run.x;
        if (c != 0u) experts[1u + run.y] = e;
        run += uvec2(c, c != 0u ? 1u : 0u);
    }
    if (l == WG - 1u) {
        offsets[E] = part[WG - 1u].x;
        experts[0] = part[WG - 1u].y;
    }

    for (uint c0 = 0u; c0 < np; c0 += WG) {
        const uint q = c0 + l;
        const uint e = q < np ? expert_of(q) : MS_MOE_NO_SLOT;
        ids[l] = e;
        barrier(); // the chunk's ids, the previous chunk's cursor updates (and the scan's) visible
        if (e != MS_MOE_NO_SLOT) {
            uint r = 0u;
            for (uint j = 0u; j < l; j++) r += ids[j] == e ? 1u : 0u;
            const uint at = cur[e] + r;
            list[at] = q;
            pos[q] = at;
        } else if (q < np) {
            pos[q] = MS_MOE_NO_SLOT;
        }
        barrier(); // every read of ids and cur done
        if (e != MS_MOE_NO_SLOT) atomicAdd(cur[e], 1u);
    }
}
