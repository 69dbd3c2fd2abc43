/* tools/diff_cmp.h — the comparison behind `moestream diff` (tools/diff.c): per-stage summaries
 * of a reference backend's and a tested backend's tapped values (engine.h, ms_session_set_tap),
 * position by position, and the verdict that names the first bad stage in forward order.
 *
 * Only summaries are kept (sums, maxima, the first and the closest disagreement), never the
 * tensors: the caller hands both sides of one stage at one position and may reuse the buffers.
 * Owns: ms_diff_create allocates, ms_diff_free frees. Threads: one thread per ms_diff.
 */
#ifndef MS_TOOLS_DIFF_CMP_H
#define MS_TOOLS_DIFF_CMP_H

#include <stdbool.h>
#include <stdint.h>

/* The stages of one layer in forward order (engine.h), then the head's logits (layer n_layers). */
enum {
    MS_DIFF_ATTN_X, MS_DIFF_ATTN_Q, MS_DIFF_ATTN_KV, MS_DIFF_CMP_ROWS, MS_DIFF_IDX_SCORE, MS_DIFF_IDX_SEL,
    MS_DIFF_ATTN_O, MS_DIFF_ATTN_Y, MS_DIFF_ATTN_H, MS_DIFF_FFN_X, MS_DIFF_FFN_SCORE, MS_DIFF_FFN_ROUTE,
    MS_DIFF_FFN_WEIGHTS, MS_DIFF_FFN_Y, MS_DIFF_FFN_H, MS_DIFF_HEAD_LOGITS, MS_DIFF_N_STAGES
};
extern const char *const ms_diff_stage_names[MS_DIFF_N_STAGES];
/* The index of a stage name, or -1. */
int ms_diff_stage_index(const char *name);
/* U32 stages (selections compared as sets), and the F32 stage holding their scores (or -1). */
bool ms_diff_stage_is_selection(int stage);
int ms_diff_stage_scores(int stage);

/* One selection disagreement at one position: a pick only the reference made (a, the weakest
 * such by the reference's score) and one only the tested side made (b, the strongest such), with
 * the reference's scores of both; margin = score_a - score_b (>= 0 when the reference's scores
 * rank consistently: a small margin is a near-tie). have_scores: the reference tapped scores. */
typedef struct ms_diff_pick {
    uint32_t pos, a, b;
    bool have_scores;
    double score_a, score_b, margin;
} ms_diff_pick;

typedef struct ms_diff_stage {
    uint32_t n_pos;          /* positions where both sides had the stage */
    uint32_t n_missing;      /* positions where one side lacked it or the counts differ */
    uint64_t n_values;       /* values compared */
    uint64_t n_nonfinite;    /* values where a side is NaN/Inf and the two are not the same */
    double max_abs;          /* max |tested - reference| over finite pairs */
    uint32_t max_abs_pos;
    double sum_d2, sum_r2;   /* sums of (tested - reference)^2 and reference^2 */
    uint32_t n_pos_bad;      /* positions over the threshold (F32) or disagreeing (selection) */
    uint32_t first_bad_pos;  /* valid when n_pos_bad */
    ms_diff_pick first_pick; /* selection: the first disagreement */
    ms_diff_pick worst_pick; /* selection: the disagreement with the largest margin */
} ms_diff_stage;

typedef struct ms_diff {
    uint32_t n_layers, max_pos;
    double threshold;        /* relative RMS above which an F32 stage is bad */
    ms_diff_stage *st;       /* [n_layers + 1][MS_DIFF_N_STAGES]; row n_layers: the head */
    /* the final logits */
    uint32_t n_logit_pos, top1_agree;
    double max_dlogp;        /* max |log-softmax difference| over positions and vocabulary */
    uint32_t max_dlogp_pos;
    double *pos_dlogp;       /* [max_pos] per position */
    uint32_t *pos_top1;      /* [max_pos][2] the reference's and the tested side's best id */
} ms_diff;

/* Returns NULL when out of memory. */
ms_diff *ms_diff_create(uint32_t n_layers, uint32_t max_pos, double threshold);
void ms_diff_free(ms_diff *d); /* NULL ok */

/* Adds one stage at one position (layer <= n_layers; pos < max_pos). ref, got: the two sides'
 * values (F32 or, for selections, U32), n_ref and n_got of them; either may be absent (NULL:
 * counted as missing). ref_scores[n_scores]: the reference's scores of the stage
 * (ms_diff_stage_scores) at this position for the margin of a disagreement, or NULL. Selections
 * are compared as sets (ffn.route is in rank order: its weights belong with ms_diff_sort_pairs). */
void ms_diff_add(ms_diff *d, uint32_t pos, uint32_t layer, int stage, const void *ref, uint64_t n_ref,
                 const void *got, uint64_t n_got, const float *ref_scores, uint64_t n_scores);
/* Sorts ids[n] ascending and w[n] with them (w may be NULL): the route and its weights by id. */
void ms_diff_sort_pairs(uint32_t *ids, float *w, uint32_t n);
/* The final logits at one position: log-softmax of each (double), max |difference|, top-1. */
void ms_diff_add_logits(ms_diff *d, uint32_t pos, const float *ref, const float *got, uint32_t vocab);

/* Relative RMS of a stage: sqrt(sum_d2 / sum_r2); 0 when both are 0, +inf when only sum_r2 is. */
double ms_diff_rel_rms(const ms_diff_stage *s);
/* A stage is bad: missing somewhere, non-finite disagreements, a selection that differs at some
 * position, or (F32) a relative RMS above the threshold. */
bool ms_diff_stage_bad(const ms_diff *d, int stage, const ms_diff_stage *s);
/* The first bad stage in forward order (layer 0's stages, layer 1's, ..., the head): true and
 * *layer, *stage; false when every stage is good. */
bool ms_diff_verdict(const ms_diff *d, uint32_t *layer, int *stage);

#endif
