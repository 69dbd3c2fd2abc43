/* shaders/fq.h — layout of shaders/fq.comp (variant fq; CPU reference ms_ref_fq, engine/ref/fq.c):
 * the official model's stored-value rounding (V4_SPEC §3.8) on rows, in place.
 *
 * One workgroup per row r (row r starts at r * row_stride):
 *   HADAMARD: v[0..len) = H_len v / sqrt(len) (Sylvester order; len a power of two <= 4096)
 *   QUANT 1 (e4m3, the KV latent's first `len` dims): per block of 64, amax = max(max|v|, 1e-4),
 *     s = pow2_scale(amax / 448), v = round_e4m3(v / s) * s
 *   QUANT 2 (e2m1, the indexer's q/k): per block of 32, amax = max(max|v|, 6 * 2^-126),
 *     s = pow2_scale(amax / 6), v = round_e2m1(v / s) * s
 * pow2_scale(t) = 2^ceil(log2 t) from the F32 product; rounding is RNE on the format's grid with
 * clamping to +-max, exactly as ms_ref_v4_round_e4m3 / _e2m1 (the F32 arithmetic here is exact:
 * divisions by powers of two and rounding to a coarser grid). Elements >= len are untouched.
 *
 * Specialization constants: 0 WG, 1 QUANT (0 none, 1 e4m3, 2 e2m1), 2 HADAMARD (0/1).
 */
#ifndef MS_SHADERS_FQ_H
#define MS_SHADERS_FQ_H

#include "layout.h"

#define MS_FQ_MAX_HADAMARD 4096

#define MS_FQ_BIND_X 0 /* F32 rows, in place */

#define MS_FQ_SPEC_WG 0
#define MS_FQ_SPEC_QUANT 1
#define MS_FQ_SPEC_HADAMARD 2
#define MS_FQ_N_SPEC 3

MS_STRUCT_BEGIN(ms_fq_push)
    MS_U32 n_rows;
    MS_U32 row_stride; /* elements */
    MS_U32 len;        /* elements of a row rounded (a multiple of the block) */
    MS_U32 groups_x;
MS_STRUCT_END(ms_fq_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_fq_push) == 16, "ms_fq_push must match its GLSL std430 layout");
#endif

#endif
