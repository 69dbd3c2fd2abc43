/* shaders/rope.h — layout of shaders/rope.comp (variant rope; CPU reference ms_ref_rope,
 * engine/ref/rope.c): interleaved (adjacent-pair) rotary embedding of part of every head, with an
 * optional unweighted per-head RMS normalisation first (the query path, V4_SPEC §3.3, §3.7).
 *
 * One workgroup per (token t, head h), linearised as id.y * groups_x + id.x = t * n_heads + h:
 *   v = x[t][h][0 .. head_dim)             (head h starts at t*token_stride + h*head_stride)
 *   RMS: v *= 1 / sqrt(mean(v^2) + eps)     (over head_dim, before the rotation)
 *   for i < rope_dim/2, (a, b) = v[off + 2i], v[off + 2i + 1], (c, s) = cs[t][i]:
 *     v[off + 2i] = a c - b s,  v[off + 2i + 1] = a s + b c     (INVERSE: s -> -s)
 * cs [n][rope_dim/2][2] holds cos and sin of pos_t * freq_i, computed on the host in double
 * (ms_ref_rope_table): F32 angles would be wrong by ~0.06 rad at position 10^6. In place.
 *
 * Specialization constants: 0 WG, 1 RMS (0/1), 2 INVERSE (0/1), 3 SG_MIN.
 */
#ifndef MS_SHADERS_ROPE_H
#define MS_SHADERS_ROPE_H

#include "layout.h"

#define MS_ROPE_BIND_X 0  /* F32, rows as above, rotated in place */
#define MS_ROPE_BIND_CS 1 /* F32 [n][rope_dim/2][2] */
#define MS_ROPE_BIND_W 2  /* BF16 [head_dim]: with RMS == 2 the RMS is an RMSNorm with this weight
                           * (x * inv * w, as ms_ref_rmsnorm: the KV latent's kv_norm fused in) */

#define MS_ROPE_SPEC_WG 0
#define MS_ROPE_SPEC_RMS 1
#define MS_ROPE_SPEC_INVERSE 2
#define MS_ROPE_SPEC_SG_MIN 3
#define MS_ROPE_N_SPEC 4

MS_STRUCT_BEGIN(ms_rope_push)
    MS_U32 n;            /* tokens */
    MS_U32 n_heads;
    MS_U32 head_dim;     /* elements the RMS runs over */
    MS_U32 head_stride;  /* elements between heads of a token */
    MS_U32 token_stride; /* elements between tokens */
    MS_U32 off;          /* first rotated element within a head */
    MS_U32 rope_dim;     /* rotated elements (even) */
    MS_U32 groups_x;
    MS_F32 eps;
MS_STRUCT_END(ms_rope_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_rope_push) == 36, "ms_rope_push must match its GLSL std430 layout");
#endif

#endif
