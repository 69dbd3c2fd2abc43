/* shaders/gemm.h — layout shared by engine/vk/ops_gemm.c and shaders/gemm.comp (variants gemm_f32,
 * gemm_bf16, gemm_fp8, gemm_fp4; CPU references ms_ref_gemv_<enc>, engine/ref/gemv.c).
 *
 * One dispatch computes y[t][y_row0 + r] = W_part[r, :] . x[t][:] for r < m, t < n, where W_part is
 * one row part of a weight (ms_vk_weight), rows local (0..m-1) in the bound data and scale buffers.
 * A workgroup owns a tile of BM rows x BN tokens; workgroups are laid out on a 2-D grid and
 * linearised (id.y * groups_x + id.x), the token tile varying fastest, so that the workgroups that
 * share a weight tile run together and read it from DRAM once.
 *
 * Specialization constants (constant_id, all uint, powers of two):
 *   0 MS_GEMM_SPEC_WG      invocations per workgroup = (BM / TM) * (BN / TN) * KS, where KS (the
 *                          K slices that split each tile's k steps and are summed at the end) is
 *                          derived from it
 *   1 MS_GEMM_SPEC_BM      rows per workgroup tile
 *   2 MS_GEMM_SPEC_BN      tokens per workgroup tile
 *   3 MS_GEMM_SPEC_BK      k elements per tile (a multiple of the elements in 16 bytes and of KS)
 *   4 MS_GEMM_SPEC_TM      rows per invocation: 4 or 8
 *   5 MS_GEMM_SPEC_TN      tokens per invocation: 4 or 8
 *   6 MS_GEMM_SPEC_X_VEC4  1: x_stride % 4 == 0 and x is 16-byte aligned, load x as vec4
 *   7 MS_GEMM_SPEC_KU      k steps unrolled in the inner loop (capped at BK / KS; the loop over
 *                          groups of KU steps is not unrolled): ms_vk_gemm_tune.k_unroll
 * Shared memory: 4 * max(BK * (BM + BN), KS > 1 ? BM * BN : 0) bytes (MS_GEMM_SHARED_BYTES).
 */
#ifndef MS_SHADERS_GEMM_H
#define MS_SHADERS_GEMM_H

#include "layout.h"

#define MS_GEMM_BIND_W 0 /* weight data, this part: [m][row bytes] as uvec4 (rows 16-byte aligned) */
#define MS_GEMM_BIND_S 1 /* scales as uint words (FP8 [ceil(m/128)][ceil(k/128)], FP4 [m][k/32]
                            bytes); F32/BF16 bind any valid buffer here, it is never read */
#define MS_GEMM_BIND_X 2 /* activations F32 [n][x_stride] */
#define MS_GEMM_BIND_Y 3 /* outputs F32 [n][y_stride] */

#define MS_GEMM_SPEC_WG 0
#define MS_GEMM_SPEC_BM 1
#define MS_GEMM_SPEC_BN 2
#define MS_GEMM_SPEC_BK 3
#define MS_GEMM_SPEC_TM 4
#define MS_GEMM_SPEC_TN 5
#define MS_GEMM_SPEC_X_VEC4 6
#define MS_GEMM_SPEC_KU 7
#define MS_GEMM_N_SPEC 8

#define MS_GEMM_SHARED_BYTES(bm, bn, bk, ks)                                                          \
    (4u * ((ks) > 1u && (bm) * (bn) > (bk) * ((bm) + (bn)) ? (bm) * (bn) : (bk) * ((bm) + (bn))))

MS_STRUCT_BEGIN(ms_gemm_push)
    MS_U32 m;        /* rows of this part */
    MS_U32 k;        /* columns; multiple of the elements in 16 bytes (4/8/16/32 by encoding) */
    MS_U32 n;        /* tokens */
    MS_U32 x_stride; /* floats between tokens of x, >= k */
    MS_U32 y_stride; /* floats between tokens of y */
    MS_U32 y_row0;   /* output row of this part's row 0 */
MS_STRUCT_END(ms_gemm_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_gemm_push) == 24, "ms_gemm_push must match its GLSL std430 layout");
#endif

#endif
