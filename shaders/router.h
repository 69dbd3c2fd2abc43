/* shaders/router.h — layout of shaders/router.comp (variant router; CPU reference ms_ref_router,
 * engine/ref/router.c): the MoE router of V4_SPEC §3.10 after the gate GEMV, in one dispatch.
 *
 * One workgroup per token t:
 *   s[e] = sqrt(softplus(logits[t][e]))                      (e < E)
 *   hash (tid2eid bound, HASH = 1): idx[k] = tid2eid[tokens[t]][k]
 *   else idx = the K best of s[e] + bias[e], best first (equal: lower e first, NaN last)
 *   w[k] = s[idx[k]] / sum_k s[idx[k]] (when NORM) * scale
 * Outputs idx [n][K] (U32) and w [n][K] (F32). Token ids come from a buffer (replay).
 *
 * Specialization constants: 0 WG, 1 HASH (0/1), 2 NORM (0/1).
 */
#ifndef MS_SHADERS_ROUTER_H
#define MS_SHADERS_ROUTER_H

#include "layout.h"

#define MS_ROUTER_MAX_K 64
/* Experts per layer the shader takes (keys in shared memory). V4 has 384 / 256; lavapipe gave
 * wrong picks from about 2000 experts up (not understood yet: docs/testing.md), so the bound stays
 * where every size was checked. */
#define MS_ROUTER_MAX_E 1024

#define MS_ROUTER_BIND_LOGITS 0 /* F32 [n][E] gate outputs */
#define MS_ROUTER_BIND_BIAS 1   /* F32 [E] (score routing; bound but unused with HASH) */
#define MS_ROUTER_BIND_TOK 2    /* U32 [n] token ids (hash routing; bound but unused otherwise) */
#define MS_ROUTER_BIND_T2E 3    /* I32 [vocab][K] (hash routing) */
#define MS_ROUTER_BIND_IDX 4    /* U32 [n][K] */
#define MS_ROUTER_BIND_W 5      /* F32 [n][K] */

#define MS_ROUTER_SPEC_WG 0
#define MS_ROUTER_SPEC_HASH 1
#define MS_ROUTER_SPEC_NORM 2
#define MS_ROUTER_N_SPEC 3

MS_STRUCT_BEGIN(ms_router_push)
    MS_U32 n;
    MS_U32 n_experts;
    MS_U32 k;
    MS_U32 vocab;
    MS_F32 scale; /* routed_scaling_factor */
    MS_U32 groups_x;
MS_STRUCT_END(ms_router_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_router_push) == 24, "ms_router_push must match its GLSL std430 layout");
#endif

#endif
