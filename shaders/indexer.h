/* shaders/indexer.h — layout of shaders/indexer_score.comp and shaders/indexer_select.comp
 * (variants indexer_score, indexer_select; CPU reference ms_ref_indexer, engine/ref/indexer.c): the
 * lightning indexer's block selection of V4_SPEC §3.5 for n queries at positions pos0 + t.
 *
 * Query t sees nb = min((pos0 + t + 1) / ratio, n_keys) blocks (pos0 = pos[0], read on the device)
 * and selects k = min(topk, nb): all of them when k == nb, else the k best of
 *   score_j = sum_h max(q[t][h] . keys[j], 0) * (w[t][h] * w_scale)        (F32; NaN dot -> 0)
 * under the order "higher score first, equal scores by the lower index", a NaN score ranking as
 * -inf. sel[t] = the k indices ascending, then 0xFFFFFFFF up to topk.
 *
 * Six dispatches, a barrier between each (ms_vk_rec_indexer):
 *   score    one workgroup per (query, tile of 64 keys): the [64 keys x head_dim] x [head_dim x
 *            64 heads] product through shared memory, ReLU, weighted sum over heads -> scores;
 *            tile 0 also zeroes the query's histograms.
 *   select   STAGE 0..4, one workgroup per (query, chunk of MS_INDEXER_CHUNK keys): a radix select
 *            on an order-preserving uint of the score (NaN -> the key of -inf, -0 -> +0):
 *     0, 1, 2  histograms of key bits [31:21], [20:10] (among keys whose bits [31:21] are the
 *              selected bin) and [9:0] (among keys with the selected bits [31:10]); each chunk
 *              counts in shared memory and adds its non-zero bins to the global histogram. The
 *              selected bin of a histogram is the one holding the krem-th highest key, where krem
 *              is what the earlier digits left to select; every workgroup of the next stage
 *              derives it from the histogram, chunk 0 also stores it (the state words).
 *     3        the threshold T (the k-th highest key) and m = the ties at T to take; each chunk
 *              counts its keys > T and == T.
 *     4        each chunk writes its keys > T and its share of the m lowest-index ties at T, in
 *              index order, at the offset the counts of the chunks before it give: the output is
 *              ascending without a sort, and the same on every run. Queries with k == nb write
 *              0..nb-1 here and skip every other stage.
 *
 * Scratch (U32 words; ms_vk_indexer_scratch_bytes): scores F32 [n][n_keys] at 0, then the
 * histograms [n][2048 + 2048 + 1024] at hist_off, the chunk counts [n][n_chunks][2] (> T, == T)
 * at cnt_off, and the state [n][8] at st_off (bin0, krem1, bits[31:10], krem2, T, m).
 */
#ifndef MS_SHADERS_INDEXER_H
#define MS_SHADERS_INDEXER_H

#include "layout.h"

#define MS_INDEXER_WG 256        /* invocations of every workgroup (score: 16 x 16) */
#define MS_INDEXER_TILE 64       /* keys per score workgroup (and heads per pass over q) */
#define MS_INDEXER_TILE_D 16     /* head_dim elements staged per step */
#define MS_INDEXER_PER 16        /* keys per invocation of a select workgroup */
#define MS_INDEXER_CHUNK (MS_INDEXER_WG * MS_INDEXER_PER)
#define MS_INDEXER_HIST_WORDS 5120u /* per query: 2048 + 2048 + 1024 bins */
#define MS_INDEXER_STATE_WORDS 8u

#define MS_INDEXER_BIND_Q 0       /* score: F32 [n][n_heads][head_dim] */
#define MS_INDEXER_BIND_W 1       /* score: F32 [n][n_heads] */
#define MS_INDEXER_BIND_KEYS 2    /* score: F32 [n_keys][head_dim] */
#define MS_INDEXER_BIND_POS 3     /* score: U32 [1] pos0 */
#define MS_INDEXER_BIND_SCRATCH 4 /* score: U32 scratch (layout above) */

#define MS_INDEXER_SEL_BIND_POS 0     /* select: U32 [1] pos0 */
#define MS_INDEXER_SEL_BIND_SCRATCH 1 /* select: U32 scratch */
#define MS_INDEXER_SEL_BIND_SEL 2     /* select: U32 [n][topk] */

#define MS_INDEXER_SPEC_STAGE 0 /* select: 0..4 */
#define MS_INDEXER_N_SPEC 1

MS_STRUCT_BEGIN(ms_indexer_push)
    MS_U32 n;
    MS_U32 n_heads;
    MS_U32 head_dim;
    MS_U32 ratio;
    MS_U32 topk;
    MS_U32 n_keys;
    MS_U32 n_groups_q; /* workgroups per query: score tiles, or select chunks */
    MS_U32 groups_x;
    MS_U32 hist_off;   /* scratch words */
    MS_U32 cnt_off;
    MS_U32 st_off;
    MS_F32 w_scale;
MS_STRUCT_END(ms_indexer_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_indexer_push) == 48, "ms_indexer_push must match its GLSL std430 layout");
#endif

#endif
