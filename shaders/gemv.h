/* shaders/gemv.h — layout shared by engine/vk/ops.c and shaders/gemv.comp (variants gemv_f32,
 * gemv_bf16, gemv_fp8, gemv_fp4; CPU references ms_ref_gemv_<enc>).
 *
 * One dispatch computes y[c][y_row0 + r] = W_part[r, :] . x[c][:] for r < m, c < n, where W_part
 * is one row part of a weight (ms_vk_weight): its rows are local (0..m-1) in the bound data and
 * scale buffers. Workgroups are laid out on a 2-D grid (x up to maxComputeWorkGroupCount[0]);
 * the shader linearises (id.y * groups_x + id.x) and handles rows [id * ROWS, id * ROWS + ROWS).
 *
 * Specialization constants (constant_id, all uint):
 *   0 MS_GEMV_SPEC_WG      invocations per workgroup (local_size_x)
 *   1 MS_GEMV_SPEC_ROWS    rows per workgroup; a power of two <= 64 so that the rows of one
 *                          workgroup share one 128-row FP8 scale block
 *   2 MS_GEMV_SPEC_UNROLL  16-byte chunks per row loaded before any is used
 *   3 MS_GEMV_SPEC_NCOLS   activation columns n (1..8)
 *   4 MS_GEMV_SPEC_SG_MIN  smallest subgroup size the pipeline may run with (sizes shared memory)
 *   5 MS_GEMV_SPEC_X_VEC4  1: x_stride % 4 == 0 and x is 16-byte aligned, load x as vec4
 *
 * The tiled variants (gemv_tiled_<enc>, shaders/gemv_tiled.comp) read the same constants with two
 * differences: ROWS is rows per *subgroup* (a workgroup has ROWS * WG / SG rows), and SG_MIN is the
 * exact subgroup size SG (WG a multiple of it; the host pins it where the device can vary it).
 */
#ifndef MS_SHADERS_GEMV_H
#define MS_SHADERS_GEMV_H

#include "layout.h"

#define MS_GEMV_BIND_W 0 /* weight data, this part: [m][row bytes] as uvec4 (rows 16-byte aligned) */
#define MS_GEMV_BIND_S 1 /* scales as uint words (FP8 [ceil(m/128)][ceil(k/128)], FP4 [m][k/32]
                            bytes); F32/BF16 bind any valid buffer here, it is never read */
#define MS_GEMV_BIND_X 2 /* activations F32 [n][x_stride] */
#define MS_GEMV_BIND_Y 3 /* outputs F32 [n][y_stride] */

#define MS_GEMV_SPEC_WG 0
#define MS_GEMV_SPEC_ROWS 1
#define MS_GEMV_SPEC_UNROLL 2
#define MS_GEMV_SPEC_NCOLS 3
#define MS_GEMV_SPEC_SG_MIN 4
#define MS_GEMV_SPEC_X_VEC4 5
#define MS_GEMV_N_SPEC 6

#define MS_GEMV_MAX_COLS 8

MS_STRUCT_BEGIN(ms_gemv_push)
    MS_U32 m;        /* rows of this part */
    MS_U32 k;        /* columns; multiple of the elements in 16 bytes (4/8/16/32 by encoding) */
    MS_U32 x_stride; /* floats between activation columns, >= k */
    MS_U32 y_stride; /* floats between output columns */
    MS_U32 y_row0;   /* output row of this part's row 0 */
    MS_U32 group_rows; /* 0, or grouped: output row r reads x at (r / group_rows) * group_x */
    MS_U32 group_x;
MS_STRUCT_END(ms_gemv_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_gemv_push) == 28, "ms_gemv_push must match its GLSL std430 layout");
#endif

#endif
