/* shaders/hc.h — layouts of the manifold-constrained hyper-connection shaders (V4_SPEC §3.2),
 * shared by engine/vk/ops.c and shaders/hc_pre.comp / hc_post.comp. CPU references: ms_ref_hc_pre
 * (variant hc_pre, block and head modes) and ms_ref_hc_post (variant hc_post), engine/ref/hc.c.
 *
 * hc_pre, one workgroup per token t (2-D grid linearised as id.y * groups_x + id.x), after the
 * mixing GEMV mixraw[t] = fn @ h[t] (gemv_f32):
 *   rs = 1 / sqrt(mean(h[t]^2) + rms_eps);  mix = mixraw[t] * rs
 *   block mode: pre[j] = sigmoid(mix[j] s0 + b[j]) + hc_eps; post[j] = 2 sigmoid(mix[hc+j] s1 +
 *     b[hc+j]); comb = Sinkhorn(softmax rows of mix[2hc..] s2 + b[2hc..], + hc_eps)
 *   head mode:  pre[j] = sigmoid(mix[j] s0 + b[j]) + hc_eps (no post, no comb)
 *   x[t][i] = sum_c pre[c] h[t][c][i]
 *   with norm: then x[t] = RMSNorm(x[t]) * w (eps rms_eps; as ms_ref_rmsnorm), the sub-layer's
 *   attn_norm / ffn_norm fused in (one dispatch and one barrier fewer per sub-layer)
 * hc_post, one invocation per (t, k, i):
 *   h[t][k][i] = post[t][k] y[t][i] + sum_j comb[t][j][k] res[t][j][i]
 *
 * hc_embed, one invocation per (t, c, i): h[t][c][i] = embed[tokens[t]][i] (BF16 -> F32, every
 *   stream the same; a token id >= vocab writes NaN, which the host never lets happen).
 *
 * Specialization constants (hc_pre): 0 WG (>= hc*hc), 1 HEAD (0 block, 1 head), 2 SG_MIN.
 * hc_post, hc_embed: 0 WG.
 */
#ifndef MS_SHADERS_HC_H
#define MS_SHADERS_HC_H

#include "layout.h"

#define MS_HC_MAX 16 /* hc_mult bound (4 in the real models) */

#define MS_HC_PRE_BIND_MIX 0   /* F32 [n][mix_n] raw mixes (fn @ h) */
#define MS_HC_PRE_BIND_H 1     /* F32 [n][hc][dim] residual streams */
#define MS_HC_PRE_BIND_SCALE 2 /* F32 [3] (block) or [1] (head) */
#define MS_HC_PRE_BIND_BASE 3  /* F32 [mix_n] */
#define MS_HC_PRE_BIND_X 4     /* F32 [n][dim] */
#define MS_HC_PRE_BIND_POST 5  /* F32 [n][hc] (block mode; bound but unused in head mode) */
#define MS_HC_PRE_BIND_COMB 6  /* F32 [n][hc][hc] comb[j][k]: j source stream, k destination */
#define MS_HC_PRE_BIND_NORM 7  /* BF16 [dim] RMSNorm weight applied to x (push norm != 0), else unused */

#define MS_HC_PRE_SPEC_WG 0
#define MS_HC_PRE_SPEC_HEAD 1
#define MS_HC_PRE_SPEC_SG_MIN 2
#define MS_HC_PRE_N_SPEC 3

MS_STRUCT_BEGIN(ms_hc_pre_push)
    MS_U32 dim;
    MS_U32 hc;
    MS_U32 n;              /* tokens */
    MS_U32 sinkhorn_iters; /* >= 1 */
    MS_F32 hc_eps;
    MS_F32 rms_eps;
    MS_U32 norm;           /* 1: RMSNorm x with the BF16 weight at MS_HC_PRE_BIND_NORM */
    MS_U32 n_parts;        /* 0: MIX holds mixraw [n][mix_n]; else hc_mix partials [n][n_parts][mix_n+1] */
MS_STRUCT_END(ms_hc_pre_push)

/* hc_mix (split-K mixing GEMV, the previous hc_post optionally fused): workgroup (g, t) for
 * g < n_slices = ceil(hc*dim / WG); with POST, h[t][k] = hc_post(y, res, post, comb) for its
 * elements k (written), else h is read; part[t][g][r] = sum over its elements of fn[r][k] h[t][k]
 * for r < mix_n, part[t][g][mix_n] = sum of h[t][k]^2. hc_pre with n_parts = n_slices then reads
 * part instead of mixraw (mix = the sum over g; the RMS scale from the summed squares). */
#define MS_HC_MIX_BIND_FN 0   /* F32 [mix_n][hc*dim] */
#define MS_HC_MIX_BIND_Y 1    /* F32 [n][dim] (POST) */
#define MS_HC_MIX_BIND_RES 2  /* F32 [n][hc][dim] streams before the sub-layer (POST; not h) */
#define MS_HC_MIX_BIND_POST 3 /* F32 [n][hc] (POST) */
#define MS_HC_MIX_BIND_COMB 4 /* F32 [n][hc][hc] (POST) */
#define MS_HC_MIX_BIND_H 5    /* F32 [n][hc][dim]: written with POST, else read */
#define MS_HC_MIX_BIND_PART 6 /* F32 [n][n_slices][mix_n + 1] */
#define MS_HC_MIX_BIND_FLAGS 7 /* U32 [n]: with POST and watch != 0, atomicMin(flags[t], watch - 1) when
                                * a new stream value of token t is NaN or infinite (else unused) */

#define MS_HC_MIX_SPEC_WG 0
#define MS_HC_MIX_SPEC_POST 1
#define MS_HC_MIX_SPEC_MIX 2
#define MS_HC_MIX_SPEC_SG_MIN 3
#define MS_HC_MIX_N_SPEC 4

MS_STRUCT_BEGIN(ms_hc_mix_push)
    MS_U32 dim;
    MS_U32 hc;
    MS_U32 n;
    MS_U32 n_slices;
    MS_U32 groups_x;
    MS_U32 watch;          /* 0 off, else 1 + the code recorded for a non-finite stream value */
MS_STRUCT_END(ms_hc_mix_push)

#define MS_HC_POST_BIND_Y 0    /* F32 [n][dim] sub-layer output */
#define MS_HC_POST_BIND_RES 1  /* F32 [n][hc][dim] streams before the sub-layer */
#define MS_HC_POST_BIND_POST 2 /* F32 [n][hc] */
#define MS_HC_POST_BIND_COMB 3 /* F32 [n][hc][hc] */
#define MS_HC_POST_BIND_H 4    /* F32 [n][hc][dim] out (must not alias res) */

#define MS_HC_POST_SPEC_WG 0
#define MS_HC_POST_N_SPEC 1

MS_STRUCT_BEGIN(ms_hc_post_push)
    MS_U32 dim;
    MS_U32 hc;
    MS_U32 n;
    MS_U32 groups_x; /* workgroups per grid row (the 2-D grid is linearised) */
MS_STRUCT_END(ms_hc_post_push)

#define MS_HC_EMBED_BIND_TOK 0   /* U32 [n] token ids */
#define MS_HC_EMBED_BIND_EMBED 1 /* BF16 [vocab][dim] */
#define MS_HC_EMBED_BIND_H 2     /* F32 [n][hc][dim] */

MS_STRUCT_BEGIN(ms_hc_embed_push)
    MS_U32 dim;
    MS_U32 hc;
    MS_U32 n;
    MS_U32 groups_x;
    MS_U32 vocab;
MS_STRUCT_END(ms_hc_embed_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_hc_embed_push) == 20, "ms_hc_embed_push must match its GLSL std430 layout");
_Static_assert(sizeof(ms_hc_pre_push) == 32, "ms_hc_pre_push must match its GLSL std430 layout");
_Static_assert(sizeof(ms_hc_mix_push) == 24, "ms_hc_mix_push must match its GLSL std430 layout");
_Static_assert(sizeof(ms_hc_post_push) == 16, "ms_hc_post_push must match its GLSL std430 layout");
#endif

#endif
