/* shaders/moe.h — layout of shaders/moe.comp (variants moe_up_<enc>, moe_down_<enc> for enc fp4 and
 * fp8; CPU references ms_ref_moe_up / ms_ref_moe_down, engine/ref/moe.c): the expert FFN of
 * V4_SPEC §3.10 over a pool of expert records addressed through a slot table.
 *
 * The pool: one buffer of fixed-size expert records. Record j starts at byte j * record_bytes and
 * holds, each part at a 256-byte-aligned offset inside the record (ms_vk_expert_layout_make, the
 * format the store adopts):
 *   w1 data  [inter][dim]   in the checkpoint encoding (engine/model/weights.h)
 *   w1 scale (FP4 [inter][dim/32], FP8 [ceil(inter/128)][ceil(dim/128)] e8m0)
 *   w3 data, w3 scale       the same shapes as w1
 *   w2 data  [dim][inter], w2 scale (FP4 [dim][inter/32], FP8 [ceil(dim/128)][ceil(inter/128)])
 * in this order, zero padding between parts and up to record_bytes (a multiple of 256).
 * Expert e of a token is record slots[e]; an id e >= n_experts, or a slot >= n_records (the
 * engine's 0xFFFFFFFF: not resident) reads nothing from the pool: the expert contributes 0 (up
 * writes zero act rows, down skips it). The slot table is a buffer, so a cache may move experts
 * between records without re-recording the command buffer.
 *
 * Up (MOE_DOWN = 0), for token t < n and active slot a < k, e = idx[t][a]:
 *   g = w1_e x[t], u = w3_e x[t] (F32 sums); limit > 0: u = clamp(u, -limit, limit), g = min(g, limit)
 *   act[t][a][i] = silu(g_i) * u_i * rw[t][a]            (NaN in g or u stays NaN)
 * One workgroup owns ROWS * (WG / SG) consecutive rows i of one (t, a) pair; each subgroup owns ROWS
 * rows and walks the w1 and w3 rows together, x[t] staged in shared memory per K-tile.
 * Down (MOE_DOWN = 1):
 *   y[t][r] = base[t][r] + sum over a = 0..k-1, in that order, of (w2_e act[t][a])[r]
 * One workgroup owns ROWS * (WG / SG) rows r of one token and loops over a inside the workgroup, so
 * the sum has one fixed order (no atomics: the result is deterministic). y may alias base (each
 * element is read, then written, by the same invocation).
 *
 * Specialization constants (constant_id, all uint):
 *   0 MS_MOE_SPEC_WG      invocations per workgroup, a multiple of SG
 *   1 MS_MOE_SPEC_ROWS    rows per subgroup: a power of two <= 64 (so that an FP8 subgroup's rows
 *                         share one 128-row scale block)
 *   2 MS_MOE_SPEC_UNROLL  16-byte chunks per row per lane per K-tile
 *   3 MS_MOE_SPEC_SG      the exact subgroup size (the host pins it where the device may vary it)
 *   4 MS_MOE_SPEC_X_VEC4  1: the input range is 16-byte aligned, load it as vec4
 */
#ifndef MS_SHADERS_MOE_H
#define MS_SHADERS_MOE_H

#include "layout.h"

#define MS_MOE_BIND_POOL 0  /* the expert records, read as uvec4 (data) and uint (scales) */
#define MS_MOE_BIND_SLOTS 1 /* U32 [n_experts]: expert id -> record */
#define MS_MOE_BIND_IDX 2   /* U32 [n][k] expert ids */
#define MS_MOE_BIND_IN 3    /* up: x F32 [n][dim]; down: act F32 [n][k][inter] */
#define MS_MOE_BIND_AUX 4   /* up: rw F32 [n][k]; down: base F32 [n][dim] */
#define MS_MOE_BIND_OUT 5   /* up: act F32 [n][k][inter]; down: y F32 [n][dim] (may be base) */
#define MS_MOE_N_BIND 6

#define MS_MOE_SPEC_WG 0
#define MS_MOE_SPEC_ROWS 1
#define MS_MOE_SPEC_UNROLL 2
#define MS_MOE_SPEC_SG 3
#define MS_MOE_SPEC_X_VEC4 4
#define MS_MOE_N_SPEC 5

#define MS_MOE_PART_ALIGN 256u     /* record parts and records: multiples of this many bytes */
#define MS_MOE_NO_SLOT 0xFFFFFFFFu /* slot table: the expert is not resident */

MS_STRUCT_BEGIN(ms_moe_push)
    MS_U32 n;         /* tokens */
    MS_U32 k;         /* active experts per token */
    MS_U32 dim;       /* model width: w1/w3 columns, w2 rows */
    MS_U32 inter;     /* expert width: w1/w3 rows, w2 columns */
    MS_U32 n_experts; /* entries of the slot table */
    MS_U32 n_records; /* whole records in the bound pool range */
    MS_U32 blocks;    /* workgroups per (t, a) pair (up) or per token (down) */
    MS_U32 rec16;     /* record_bytes / 16 */
    MS_U32 w1_data16; /* part offsets in the record: data in 16-byte units, scales in bytes */
    MS_U32 w1_scale;
    MS_U32 w3_data16;
    MS_U32 w3_scale;
    MS_U32 w2_data16;
    MS_U32 w2_scale;
    MS_F32 limit;     /* up: the SwiGLU clamp, 0 = none */
MS_STRUCT_END(ms_moe_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_moe_push) == 60, "ms_moe_push must match its GLSL std430 layout");
#endif

#endif
