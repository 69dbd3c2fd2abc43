// shaders/kv_store.comp — the KV latent of n tokens into the window ring at rows
// (pos[0] + t) % ring_len (layout: shaders/attention.h; CPU reference ms_ref_kv_store,
// engine/ref/attention.c). pos is read on the device: a recording replays for every token.
#version 450
#extension GL_GOOGLE_include_directive : require

#include "attention.h"

layout(constant_id = MS_KVS_SPEC_WG) const uint WG = 256;
layout(local_size_x_id = MS_KVS_SPEC_WG) in;

layout(push_constant) uniform Push { ms_kv_store_push p; };

layout(set = 0, binding = MS_KVS_BIND_SRC, std430) readonly restrict buffer Sbuf { float src[]; };
layout(set = 0, binding = MS_KVS_BIND_RING, std430) writeonly restrict buffer Rbuf { float ring[]; };
layout(set = 0, binding = MS_KVS_BIND_POS, std430) readonly restrict buffer Pbuf { uint pos[]; };

void main() {
    const uint gid = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    if (gid >= p.n * p.head_dim) return;
    const uint t = gid / p.head_dim, i = gid - t * p.head_dim;
    // (pos0 % ring_len + t) % ring_len: exact even where pos0 + t would wrap 32 bits
    const uint row = (pos[0] % p.ring_len + t) % p.ring_len;
    ring[row * p.head_dim + i] = src[gid];
}
