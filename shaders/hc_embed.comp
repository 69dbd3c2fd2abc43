// shaders/hc_embed.comp — token embedding copied into every hyper-connection stream (V4_SPEC
// §3.1: no scaling, no gate). Layout: shaders/hc.h; CPU reference ms_ref_hc_embed (engine/ref/hc.c).
// Token ids come from a buffer so a recorded decode step can be replayed for every new token.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : require

#include "hc.h"

layout(constant_id = MS_HC_POST_SPEC_WG) const uint WG = 256;
layout(local_size_x_id = MS_HC_POST_SPEC_WG) in;

layout(push_constant) uniform Push { ms_hc_embed_push p; };

layout(set = 0, binding = MS_HC_EMBED_BIND_TOK, std430) readonly buffer Tbuf { uint toks[]; };
layout(set = 0, binding = MS_HC_EMBED_BIND_EMBED, std430) readonly buffer Ebuf { uint16_t emb[]; };
layout(set = 0, binding = MS_HC_EMBED_BIND_H, std430) writeonly buffer Hbuf { float hs[]; };

void main() {
    const uint gid = (gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x) * WG + gl_LocalInvocationID.x;
    const uint per_t = p.hc * p.dim;
    if (gid >= p.n * per_t) return;
    const uint t = gid / per_t, i = (gid - t * per_t) % p.dim;
    const uint tok = toks[t];
    hs[gid] = tok < p.vocab ? uintBitsToFloat(uint(emb[tok * p.dim + i]) << 16)
                            : uintBitsToFloat(0x7FC00000u);
}
