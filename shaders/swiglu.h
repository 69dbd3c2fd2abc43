/* shaders/swiglu.h — layout of shaders/swiglu.comp (variant swiglu; CPU reference ms_ref_swiglu,
 * engine/ref/swiglu.c): the expert activation of V4_SPEC §3.10, in place on the gate rows.
 *
 * One invocation per element (t, i) of n rows of width `inter` (rows at `stride`):
 *   g = gate[t][i], u = up[t][i]; with limit > 0: u = clamp(u, -limit, limit), g = min(g, limit)
 *   gate[t][i] = silu(g) * u * w[t]           (silu(g) = g / (1 + exp(-g)); w: routing weight)
 */
#ifndef MS_SHADERS_SWIGLU_H
#define MS_SHADERS_SWIGLU_H

#include "layout.h"

#define MS_SWIGLU_BIND_GATE 0 /* F32 [n][stride], overwritten */
#define MS_SWIGLU_BIND_UP 1   /* F32 [n][stride] */
#define MS_SWIGLU_BIND_W 2    /* F32 [n] routing weights */

#define MS_SWIGLU_SPEC_WG 0
#define MS_SWIGLU_N_SPEC 1

MS_STRUCT_BEGIN(ms_swiglu_push)
    MS_U32 n;
    MS_U32 inter;
    MS_U32 stride;
    MS_U32 groups_x;
    MS_F32 limit; /* 0: no clamp */
MS_STRUCT_END(ms_swiglu_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_swiglu_push) == 20, "ms_swiglu_push must match its GLSL std430 layout");
#endif

#endif
