/* shaders/attention.h — layout of shaders/attention.comp, attention_reduce.comp and kv_store.comp
 * (variants attention, attention_reduce, kv_store; CPU references ms_ref_attention and
 * ms_ref_kv_store, engine/ref/attention.c): the sparse attention with a per-head sink of
 * V4_SPEC §3.3 and the write of the KV latent into its window ring.
 *
 * Query t sits at position p = pos[0] + t (pos read on the device, so a recording replays for
 * every token). Its entries, in visiting order: the window x = p+1-n_win .. p, n_win =
 * min(p+1, window), at ring row x % ring_len; then nb = min((p+1)/ratio, n_rows) compressed
 * blocks (ratio 0: none): ratio 4 the first min(topk, nb) slots of sel[t] (the list is ascending,
 * so they hold every index < nb; a slot >= nb, 0xFFFFFFFF included, is an empty entry: weight 0,
 * never read), other ratios rows 0..nb-1. All heads read the same
 * rows (MQA: the 512-wide latent is K and V).
 *
 * attention.comp — one workgroup per (query t, group of HT heads, split s of the entry list);
 * split s takes entries [s*c, (s+1)*c) with c = ceil(L / n_split) rounded up to ET (L = the
 * query's n_win + compressed slots, known only on the device). Per tile of ET entries:
 *   rows -> shared (zero rows for empty entries)
 *   scores z[i][e] = (q_i * scale) . row_e: thread micro-tiles of 2 heads x 2 entries over a
 *       KS-th of each QC-wide chunk of head_dim (q staged per chunk; QC == D: staged once),
 *       the KS partial sums added in shared memory
 *   online softmax per head: m' = max(m, z over the tile's entries), p = exp(z - m'),
 *       l = l * exp(m - m') + sum p, acc = acc * exp(m - m') + sum_e p_e row_e
 * with m starting at the sink (max(m, sink) as the reference: no overflow when the sink
 * dominates). Accumulation is F32 throughout. n_split 1 (spec SPLIT 0) writes
 * o = acc / (l + exp(sink - m)); else (SPLIT 1) the record (acc, m, l) per (t, s, head) goes to
 * scratch and attention_reduce.comp merges the splits and adds the sink.
 * NaN: a NaN score (a NaN in q_h or in a visible row), or a NaN sink, makes every output of that
 * head NaN, as the reference's NaN denominator does (tested explicitly: max/min may drop NaN).
 * Infinities follow the same formulas but are not matched case by case.
 * Positions must fit in U32 (p < 2^32; V4 contexts reach 2^20): beyond, they wrap, and every
 * index stays in bounds (ring rows are taken % ring_len, blocks are < min(nb, n_rows)).
 */
#ifndef MS_SHADERS_ATTENTION_H
#define MS_SHADERS_ATTENTION_H

#include "layout.h"

/* attention.comp */
#define MS_ATTN_BIND_Q 0    /* F32 [n][n_heads][head_dim] (vec4) */
#define MS_ATTN_BIND_RING 1 /* F32 [ring_len][head_dim] (vec4) */
#define MS_ATTN_BIND_ROWS 2 /* F32 [n_rows][head_dim] (vec4); not read with ratio 0 */
#define MS_ATTN_BIND_SEL 3  /* U32 [n][topk]; read with ratio 4 only */
#define MS_ATTN_BIND_SINK 4 /* F32 [n_heads] */
#define MS_ATTN_BIND_POS 5  /* U32 [1]: pos0 */
#define MS_ATTN_BIND_OUT 6  /* SPLIT 0: o F32 [n][n_heads][head_dim]; SPLIT 1: scratch records */
#define MS_ATTN_N_BIND 7

#define MS_ATTN_SPEC_WG 0    /* invocations */
#define MS_ATTN_SPEC_HT 1    /* heads per workgroup (even, a multiple of HS) */
#define MS_ATTN_SPEC_ET 2    /* entries per tile (even) */
#define MS_ATTN_SPEC_D 3     /* head_dim (a multiple of 4) */
#define MS_ATTN_SPEC_QC 4    /* q chunk staged at a time (divides D; QC/4 a multiple of KS) */
#define MS_ATTN_SPEC_KS 5    /* head_dim splits of the score pass: WG = KS * (HT/2) * (ET/2) */
#define MS_ATTN_SPEC_HS 6    /* head slices of the value pass: WG = HS * (D/4) / CPT */
#define MS_ATTN_SPEC_CPT 7   /* vec4 columns per invocation in the value pass */
#define MS_ATTN_SPEC_HPT 8   /* heads per invocation in the value pass: HT / HS */
#define MS_ATTN_SPEC_SPLIT 9 /* 0: write o; 1: write split records */
#define MS_ATTN_N_SPEC 10

MS_STRUCT_BEGIN(ms_attention_push)
    MS_U32 n;        /* queries */
    MS_U32 n_heads;
    MS_U32 window;   /* >= 1 */
    MS_U32 ring_len; /* >= 1 */
    MS_U32 ratio;    /* 0: window only; 4: sel lists; else all complete blocks */
    MS_U32 topk;     /* sel slots per query (ratio 4) */
    MS_U32 n_rows;   /* compressed rows stored */
    MS_U32 n_split;  /* workgroups per (query, head group) along the entry list */
    MS_U32 n_groups; /* head groups: ceil(n_heads / HT) */
    MS_U32 groups_x;
    MS_F32 scale;    /* applied to q: z = (q * scale) . row */
MS_STRUCT_END(ms_attention_push)

/* A split record, per (t, s, head), (head_dim + 4) floats: acc [head_dim], then m, l, 0, 0
 * (l NaN: the head saw a NaN). Scratch: F32 [n][n_split][n_heads][head_dim + 4]. */
#define MS_ATTN_REC_PAD 4

/* attention_reduce.comp — one invocation per (t, head, vec4 of head_dim):
 * M = max_s m_s; o = sum_s acc_s exp(m_s - M) / (exp(sink - M) + sum_s l_s exp(m_s - M)). */
#define MS_ATTN_RED_BIND_SCRATCH 0 /* F32 records as above (vec4) */
#define MS_ATTN_RED_BIND_SINK 1    /* F32 [n_heads] */
#define MS_ATTN_RED_BIND_O 2       /* F32 [n][n_heads][head_dim] (vec4) */
#define MS_ATTN_RED_N_BIND 3

#define MS_ATTN_RED_SPEC_WG 0
#define MS_ATTN_RED_SPEC_D 1
#define MS_ATTN_RED_N_SPEC 2

MS_STRUCT_BEGIN(ms_attention_reduce_push)
    MS_U32 n;
    MS_U32 n_heads;
    MS_U32 n_split;
    MS_U32 groups_x;
MS_STRUCT_END(ms_attention_reduce_push)

/* kv_store.comp — one invocation per element (t, i): ring[(pos[0] + t) % ring_len][i] = src[t][i]. */
#define MS_KVS_BIND_SRC 0  /* F32 [n][head_dim] */
#define MS_KVS_BIND_RING 1 /* F32 [ring_len][head_dim] */
#define MS_KVS_BIND_POS 2  /* U32 [1]: pos0 */
#define MS_KVS_N_BIND 3

#define MS_KVS_SPEC_WG 0
#define MS_KVS_N_SPEC 1

MS_STRUCT_BEGIN(ms_kv_store_push)
    MS_U32 n;
    MS_U32 head_dim;
    MS_U32 ring_len;
    MS_U32 groups_x;
MS_STRUCT_END(ms_kv_store_push)

#ifndef MS_GLSL
_Static_assert(sizeof(ms_attention_push) == 44, "ms_attention_push must match its GLSL std430 layout");
_Static_assert(sizeof(ms_attention_reduce_push) == 16, "ms_attention_reduce_push must match its GLSL std430 layout");
_Static_assert(sizeof(ms_kv_store_push) == 16, "ms_kv_store_push must match its GLSL std430 layout");
#endif

#endif
