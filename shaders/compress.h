/* shaders/compress.h — layout of shaders/compress_pool.comp and shaders/compress_emit.comp
 * (variants compress_pool, compress_emit; CPU reference ms_ref_compress, engine/ref/compress.c):
 * the gated-pooling compressor of V4_SPEC §3.4 for n consecutive tokens at positions
 * p = pos0 + t, pos0 = pos[0] read on the device. ms_vk_rec_compress records both, with a barrier
 * between (nine buffers do not fit one pipeline's MS_VK_MAX_BINDINGS = 8, and the split lets the
 * emission run one workgroup per block).
 *
 * compress_pool: one invocation per channel ch < d, looping over the tokens in order. It owns state
 * columns ch and, with coff 2, d + ch: every access below stays in them, so no invocation waits on
 * another. With w = coff*d and ps = p % ratio:
 *   kv[(coff-1)*ratio + ps][col] = a[t][col], score[..][col] = g[t][col] + ape[ps][col]
 *   if ps == ratio-1 (p completes block j = p/ratio):
 *     if j < n_rows: rows[j][ch] = sum_s e_s kv[s][c_s] / sum_s e_s, e_s = exp(score[s][c_s] - max),
 *       over the slots s < coff*ratio, c_s = ch for s < ratio else (coff-1)*d + ch; a slot scoring
 *       -inf is skipped (empty, whatever its kv holds)
 *     with coff 2: slots ratio..2*ratio-1 copied to 0..ratio-1 (block j is block j+1's previous)
 * compress_emit: the k-th workgroup finishes block j = pos0/ratio + k, completed by token
 * t = k*ratio + ratio-1 - pos0%ratio (nothing when t >= n or j >= n_rows), in shared memory:
 *   v = rows[j] * (1 / sqrt(mean(rows[j]^2) + eps)) * norm         (BF16 weight, the reference order)
 *   v[d-rope_dim + 2i], v[.. + 1] rotated by cs[t][i] = (cos, sin)   (adjacent pairs, as rope.comp)
 *   HADAMARD: v = H_d v / sqrt(d)                                    (shaders/fq.glsl)
 *   QUANT 1: e4m3 on v[0, d-rope_dim) in blocks of 64; 2: e2m1 on v[0, d) in blocks of 32 (fq.glsl)
 *   rows[j] = v
 * Positions are exact (pos0 + t may pass 2^32: the slot and block indices never wrap; a block
 * index past 2^32 - 1 counts as past n_rows).
 *
 * Specialization constants: pool 0 WG; emit 0 WG (a power of two), 1 QUANT, 2 HADAMARD, 3 D (= d:
 * sizes the shared row, 4 * (d + WG) bytes).
 */
#ifndef MS_SHADERS_COMPRESS_H
#define MS_SHADERS_COMPRESS_H

#include "layout.h"

#define MS_COMPRESS_MAX_D 4096 /* d bound (the Hadamard's); the emission holds a row in shared memory */

#define MS_COMPRESS_POOL_BIND_A 0     /* F32 [n][in_stride] wkv projections */
#define MS_COMPRESS_POOL_BIND_G 1     /* F32 [n][in_stride] wgate projections */
#define MS_COMPRESS_POOL_BIND_APE 2   /* F32 [ratio][coff*d] */
#define MS_COMPRESS_POOL_BIND_POS 3   /* U32 [1] pos0 */
#define MS_COMPRESS_POOL_BIND_KV 4    /* F32 [coff*ratio][coff*d] state */
#define MS_COMPRESS_POOL_BIND_SCORE 5 /* F32 [coff*ratio][coff*d] state, -inf = empty */
#define MS_COMPRESS_POOL_BIND_ROWS 6  /* F32 [n_rows][d] pooled rows (before the emission) */
#define MS_COMPRESS_POOL_N_BIND 7

#define MS_COMPRESS_EMIT_BIND_ROWS 0 /* F32 [n_rows][d], finished in place */
#define MS_COMPRESS_EMIT_BIND_NORM 1 /* BF16 [d], read as U32 pairs (d even) */
#define MS_COMPRESS_EMIT_BIND_CS 2   /* F32 [n][rope_dim/2][2] */
#define MS_COMPRESS_EMIT_BIND_POS 3  /* U32 [1] pos0 */
#define MS_COMPRESS_EMIT_N_BIND 4

#define MS_COMPRESS_SPEC_WG 0
#define MS_COMPRESS_POOL_N_SPEC 1
#define MS_COMPRESS_SPEC_QUANT 1
#define MS_COMPRESS_SPEC_HADAMARD 2
#define MS_COMPRESS_SPEC_D 3 /* the shared row's length: d */
#define MS_COMPRESS_EMIT_N_SPEC 4

MS_STRUCT_BEGIN(ms_compress_pool_push)
    MS_U32 n;         /* tokens */
    MS_U32 in_stride; /* elements between tokens of a and g */
    MS_U32 ratio;
    MS_U32 coff;      /* 1, or 2: overlapping blocks */
    MS_U32 d;
    MS_U32 n_rows;
    MS_U32 groups_x;
MS_STRUCT_END(ms_compress_pool_push)

MS_STRUCT_BEGIN(ms_compress_emit_push)
    MS_U32 n;
    MS_U32 ratio;
    MS_U32 rope_dim; /* even, <= d (d: the spec constant D) */
    MS_U32 n_rows;
    MS_U32 groups_x;
    MS_F32 eps;
MS_STRUCT_END(ms_compress_emit_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_compress_pool_push) == 28, "ms_compress_pool_push must match its GLSL std430 layout");
_Static_assert(sizeof(ms_compress_emit_push) == 24, "ms_compress_emit_push must match its GLSL std430 layout");
#endif

#endif
