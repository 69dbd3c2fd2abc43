/* shaders/rmsnorm.h — layout shared by engine/vk/ops.c and shaders/rmsnorm.comp (variant rmsnorm;
 * CPU reference ms_ref_rmsnorm).
 *
 * One workgroup per row (2-D grid, linearised as id.y * groups_x + id.x):
 *   y[r][i] = x[r][i] * (1 / sqrt(mean_i(x[r][i]^2) + eps)) * w[i]   (the reference order)
 * x and y may be the same memory: every element is read and then written by one invocation.
 *
 * Specialization constants (constant_id, uint):
 *   0 MS_RMSNORM_SPEC_WG      invocations per workgroup
 *   1 MS_RMSNORM_SPEC_W_BF16  0: w is F32, 1: w is BF16
 *   2 MS_RMSNORM_SPEC_SG_MIN  smallest subgroup size the pipeline may run with
 */
#ifndef MS_SHADERS_RMSNORM_H
#define MS_SHADERS_RMSNORM_H

#include "layout.h"

#define MS_RMSNORM_BIND_X 0 /* F32 [n_rows][dim] */
#define MS_RMSNORM_BIND_W 1 /* [dim] F32 or BF16 */
#define MS_RMSNORM_BIND_Y 2 /* F32 [n_rows][dim] */

#define MS_RMSNORM_SPEC_WG 0
#define MS_RMSNORM_SPEC_W_BF16 1
#define MS_RMSNORM_SPEC_SG_MIN 2
#define MS_RMSNORM_N_SPEC 3

MS_STRUCT_BEGIN(ms_rmsnorm_push)
    MS_U32 dim;    /* elements per row */
    MS_U32 n_rows; /* rows */
    MS_F32 eps;
MS_STRUCT_END(ms_rmsnorm_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_rmsnorm_push) == 12, "ms_rmsnorm_push must match its GLSL std430 layout");
#endif

#endif
