/* shaders/moe_grouped.h — layout of the grouped expert FFN for prefill (variants moe_group,
 * moe_up_grouped_<enc>, moe_down_grouped_<enc> for enc fp4 and fp8, moe_sum; recorder
 * ms_vk_rec_moe_grouped, engine/vk/ops_moe_grouped.c). The pool, the records and the slot table are
 * those of shaders/moe.h; the result is ms_ref_moe_up followed by ms_ref_moe_down
 * (engine/ref/moe.c), with the (t, a) sum in F32 instead of double.
 *
 * moe.comp runs one workgroup set per (token, active expert) pair, so every pair re-reads its
 * expert's rows: n * k record reads per layer. Here the pairs are first grouped by expert and each
 * expert's rows are decoded once per tile of up to TOK of its pairs, so a prefill chunk reads each
 * used record about once. Four dispatches, a barrier between each:
 *
 * moe_group (one workgroup; CPU twin ms_ref_moe_group): a pair p = t * k + a is valid when
 *   e = idx[p] < n_experts and slots[e] < n_records (the rule of moe.comp). offsets[e] = the number
 *   of valid pairs of experts < e (offsets[n_experts] = all valid pairs), list[offsets[e] ..
 *   offsets[e+1]) = the valid pairs of expert e in ascending p, pos[p] = p's index in list or
 *   MS_MOE_NO_SLOT for an invalid pair, experts[0] = the number of experts with pairs and
 *   experts[1 + j] the j-th of them in ascending id. Deterministic: the counts use shared-memory
 *   atomics (a sum does not depend on their order), each pair's place is its expert's start plus
 *   the number of earlier pairs of that expert, found in chunks of WG pairs (earlier chunks: a
 *   running cursor per expert; the own chunk: a walk over its earlier pairs). n_experts <=
 *   MS_MOE_GROUP_MAX_EXPERTS (a cursor per expert in shared memory).
 * moe_up_grouped (MOE_DOWN = 0): the work items are (j, b) for the j-th expert with pairs e and row
 *   block b, rows [b * RB, (b+1) * RB) of w1 and w3, RB = ROWS * (WG / SG); item i = j * blocks + b.
 *   A fixed grid (chosen at record time) walks items i = workgroup, + grid size, ... below
 *   experts[0] * blocks, so one command buffer serves any routing and no workgroup is spent on an
 *   expert without pairs. For each tile of TOK of e's pairs (in list order), x of those tokens is
 *   staged per K-tile in shared memory and each weight chunk, decoded once, is applied to every pair
 *   of the tile: act[p][i] = silu(g) * u * rw[p] with g = w1_e x[t], u = w3_e x[t], clamped as in
 *   moe.comp. Rows of invalid pairs are not written.
 * moe_down_grouped (MOE_DOWN = 1): the same items over rows of w2: out[p][r] = (w2_e act[p])[r] for
 *   e's pairs. Rows of invalid pairs are not written.
 * moe_sum: y[t][r] = base[t][r] + out[t*k+a][r] for a = 0..k-1 in order, pairs with
 *   pos[p] == MS_MOE_NO_SLOT skipped; y may alias base (one invocation reads, then writes, each
 *   element).
 *
 * Scratch (ms_vk_moe_grouped_scratch_layout): act F32 [n][k][inter], out F32 [n][k][dim], offsets
 * U32 [n_experts+1], experts U32 [n_experts+1], list U32 [n*k], pos U32 [n*k], each part at a
 * multiple of 256 bytes.
 *
 * Specialization constants of moe_up/down_grouped (constant_id, all uint):
 *   0 MS_MOE_G_SPEC_WG      invocations per workgroup, a multiple of SG
 *   1 MS_MOE_G_SPEC_ROWS    rows per subgroup: a power of two <= 64 (an FP8 subgroup's rows share
 *                           one 128-row scale block)
 *   2 MS_MOE_G_SPEC_UNROLL  16-byte chunks per row per lane per K-tile
 *   3 MS_MOE_G_SPEC_SG      the exact subgroup size (the host pins it where the device varies it)
 *   4 MS_MOE_G_SPEC_X_VEC4  1: the input range is 16-byte aligned, load it as vec4
 *   5 MS_MOE_G_SPEC_TOK     pairs per tile (registers: 2 * ROWS * TOK sums and as many partials)
 * moe_group and moe_sum: constant 0 is the workgroup size.
 */
#ifndef MS_SHADERS_MOE_GROUPED_H
#define MS_SHADERS_MOE_GROUPED_H

#include "layout.h"
#include "moe.h" /* MS_MOE_NO_SLOT */

/* moe_group */
#define MS_MOE_GROUP_BIND_IDX 0     /* U32 [n][k] expert ids */
#define MS_MOE_GROUP_BIND_SLOTS 1   /* U32 [n_experts]: expert id -> record */
#define MS_MOE_GROUP_BIND_OFFSETS 2 /* U32 [n_experts+1] */
#define MS_MOE_GROUP_BIND_EXPERTS 3 /* U32 [n_experts+1]: the count, then the experts with pairs */
#define MS_MOE_GROUP_BIND_LIST 4    /* U32 [n*k]: valid pairs by expert (entries past the last unused) */
#define MS_MOE_GROUP_BIND_POS 5     /* U32 [n*k]: index in list, or MS_MOE_NO_SLOT */
#define MS_MOE_GROUP_N_BIND 6

/* moe_up_grouped_<enc> (8 bindings), moe_down_grouped_<enc> (7) */
#define MS_MOE_G_BIND_POOL 0    /* the expert records, read as uvec4 (data) and uint (scales) */
#define MS_MOE_G_BIND_SLOTS 1   /* U32 [n_experts] */
#define MS_MOE_G_BIND_OFFSETS 2 /* U32 [n_experts+1] from moe_group */
#define MS_MOE_G_BIND_EXPERTS 3 /* U32 [n_experts+1] from moe_group */
#define MS_MOE_G_BIND_LIST 4    /* U32 [n*k] from moe_group */
#define MS_MOE_G_BIND_IN 5      /* up: x F32 [n][dim]; down: act F32 [n][k][inter] */
#define MS_MOE_G_BIND_OUT 6     /* up: act F32 [n][k][inter]; down: out F32 [n][k][dim] */
#define MS_MOE_G_BIND_RW 7      /* up only: rw F32 [n][k] */
#define MS_MOE_G_N_BIND_UP 8
#define MS_MOE_G_N_BIND_DOWN 7

/* moe_sum */
#define MS_MOE_SUM_BIND_POS 0  /* U32 [n*k] from moe_group */
#define MS_MOE_SUM_BIND_OUT 1  /* F32 [n][k][dim] */
#define MS_MOE_SUM_BIND_BASE 2 /* F32 [n][dim] */
#define MS_MOE_SUM_BIND_Y 3    /* F32 [n][dim] (may be base) */
#define MS_MOE_SUM_N_BIND 4

#define MS_MOE_G_SPEC_WG 0
#define MS_MOE_G_SPEC_ROWS 1
#define MS_MOE_G_SPEC_UNROLL 2
#define MS_MOE_G_SPEC_SG 3
#define MS_MOE_G_SPEC_X_VEC4 4
#define MS_MOE_G_SPEC_TOK 5
#define MS_MOE_G_N_SPEC 6

#define MS_MOE_GROUP_MAX_EXPERTS 2048u /* moe_group's cursors: 8 KiB of shared memory */
#define MS_MOE_G_PART_ALIGN 256u       /* scratch parts start at multiples of this many bytes */

MS_STRUCT_BEGIN(ms_moe_grouped_push)
    MS_U32 n;         /* tokens */
    MS_U32 k;         /* active experts per token */
    MS_U32 dim;       /* model width: w1/w3 columns, w2 rows */
    MS_U32 inter;     /* expert width: w1/w3 rows, w2 columns */
    MS_U32 n_experts; /* entries of the slot table */
    MS_U32 n_records; /* whole records in the bound pool range */
    MS_U32 blocks;    /* up/down: row blocks per expert */
    MS_U32 groups_x;  /* the grid's width (up/down walk items by the grid's size, gx * gy) */
    MS_U32 rec16;     /* record_bytes / 16 */
    MS_U32 w1_data16; /* part offsets in the record: data in 16-byte units, scales in bytes */
    MS_U32 w1_scale;
    MS_U32 w3_data16;
    MS_U32 w3_scale;
    MS_U32 w2_data16;
    MS_U32 w2_scale;
    MS_F32 limit;     /* up: the SwiGLU clamp, 0 = none */
MS_STRUCT_END(ms_moe_grouped_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_moe_grouped_push) == 64, "ms_moe_grouped_push must match its GLSL std430 layout");
#endif

#endif
