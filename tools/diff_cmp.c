/* tools/diff_cmp.c — per-stage summaries and the verdict of `moestream diff` (diff_cmp.h). */
#include "tools/diff_cmp.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

const char *const ms_diff_stage_names[MS_DIFF_N_STAGES] = {
    "attn.x", "attn.q", "attn.kv", "attn.cmp_rows", "attn.idx_score", "attn.idx_sel", "attn.o", "attn.y",
    "attn.h", "ffn.x", "ffn.score", "ffn.route", "ffn.weights", "ffn.y", "ffn.h", "head.logits"};

int ms_diff_stage_index(const char *name) {
    for (int i = 0; name && i < MS_DIFF_N_STAGES; i++)
        if (!strcmp(name, ms_diff_stage_names[i])) return i;
    return -1;
}

bool ms_diff_stage_is_selection(int stage) { return stage == MS_DIFF_IDX_SEL || stage == MS_DIFF_FFN_ROUTE; }

int ms_diff_stage_scores(int stage) {
    return stage == MS_DIFF_IDX_SEL ? MS_DIFF_IDX_SCORE : stage == MS_DIFF_FFN_ROUTE ? MS_DIFF_FFN_SCORE : -1;
}

ms_diff *ms_diff_create(uint32_t n_layers, uint32_t max_pos, double threshold) {
    ms_diff *d = ms_calloc(1, sizeof *d);
    if (!d) return NULL;
    d->n_layers = n_layers;
    d->max_pos = max_pos;
    d->threshold = threshold;
    d->st = ms_calloc((size_t)(n_layers + 1) * MS_DIFF_N_STAGES, sizeof *d->st);
    d->pos_dlogp = ms_calloc(max_pos ? max_pos : 1, sizeof *d->pos_dlogp);
    d->pos_top1 = ms_calloc(max_pos ? 2 * (size_t)max_pos : 2, sizeof *d->pos_top1);
    if (!d->st || !d->pos_dlogp || !d->pos_top1) {
        ms_diff_free(d);
        return NULL;
    }
    return d;
}

void ms_diff_free(ms_diff *d) {
    if (!d) return;
    ms_free(d->st);
    ms_free(d->pos_dlogp);
    ms_free(d->pos_top1);
    ms_free(d);
}

static void mark_bad(ms_diff_stage *s, uint32_t pos) {
    if (!s->n_pos_bad++) s->first_bad_pos = pos;
}

static bool contains(const uint32_t *v, uint64_t n, uint32_t x) {
    for (uint64_t i = 0; i < n; i++)
        if (v[i] == x) return true;
    return false;
}

/* Selections as sets: equal when every pick of each side is a pick of the other (picks are
 * distinct on both backends, so equal counts and one inclusion would do; both ways is cheap). */
static void add_selection(ms_diff_stage *s, uint32_t pos, const uint32_t *ref, uint64_t n_ref,
                          const uint32_t *got, uint64_t n_got, const float *sc, uint64_t n_sc) {
    bool same = n_ref == n_got;
    for (uint64_t i = 0; same && i < n_ref; i++) same = contains(got, n_got, ref[i]);
    for (uint64_t i = 0; same && i < n_got; i++) same = contains(ref, n_ref, got[i]);
    s->n_values += n_ref;
    if (same) return;
    mark_bad(s, pos);
    /* the weakest pick only the reference made, the strongest only the tested side made */
    ms_diff_pick p = {.pos = pos, .a = UINT32_MAX, .b = UINT32_MAX, .have_scores = sc != NULL};
    double sa = INFINITY, sb = -INFINITY;
    for (uint64_t i = 0; i < n_ref; i++) {
        if (contains(got, n_got, ref[i])) continue;
        double v = sc && ref[i] < n_sc ? sc[ref[i]] : 0;
        if (p.a == UINT32_MAX || v < sa) p.a = ref[i], sa = v;
    }
    for (uint64_t i = 0; i < n_got; i++) {
        if (contains(ref, n_ref, got[i])) continue;
        double v = sc && got[i] < n_sc ? sc[got[i]] : 0;
        if (p.b == UINT32_MAX || v > sb) p.b = got[i], sb = v;
    }
    if (p.have_scores && p.a != UINT32_MAX && p.b != UINT32_MAX) {
        p.score_a = sa;
        p.score_b = sb;
        p.margin = sa - sb;
    } else {
        p.have_scores = false; /* a count difference: no pair to weigh */
    }
    if (s->n_pos_bad == 1) s->first_pick = p;
    if (s->n_pos_bad == 1 || (p.have_scores && (!s->worst_pick.have_scores || p.margin > s->worst_pick.margin)))
        s->worst_pick = p;
}

static void add_values(const ms_diff *d, ms_diff_stage *s, uint32_t pos, const float *ref, const float *got,
                       uint64_t n) {
    double d2 = 0, r2 = 0;
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        double r = ref[i], g = got[i];
        if (!isfinite(r) || !isfinite(g)) {
            uint32_t br, bg;
            memcpy(&br, &ref[i], 4);
            memcpy(&bg, &got[i], 4);
            bad += br != bg && !(isnan(r) && isnan(g));
            continue;
        }
        double e = g - r;
        d2 += e * e;
        r2 += r * r;
        if (fabs(e) > s->max_abs) s->max_abs = fabs(e), s->max_abs_pos = pos;
    }
    s->n_values += n;
    s->n_nonfinite += bad;
    s->sum_d2 += d2;
    s->sum_r2 += r2;
    if (bad || (d2 > 0 && (r2 == 0 || sqrt(d2 / r2) > d->threshold))) mark_bad(s, pos);
}

void ms_diff_add(ms_diff *d, uint32_t pos, uint32_t layer, int stage, const void *ref, uint64_t n_ref,
                 const void *got, uint64_t n_got, const float *ref_scores, uint64_t n_scores) {
    if (layer > d->n_layers || stage < 0 || stage >= MS_DIFF_N_STAGES) return;
    ms_diff_stage *s = &d->st[(size_t)layer * MS_DIFF_N_STAGES + stage];
    if (!ref || !got) {
        s->n_missing++;
        mark_bad(s, pos);
        return;
    }
    s->n_pos++;
    if (ms_diff_stage_is_selection(stage)) {
        add_selection(s, pos, ref, n_ref, got, n_got, ref_scores, n_scores);
        return;
    }
    if (n_ref != n_got) {
        s->n_missing++;
        mark_bad(s, pos);
    }
    add_values(d, s, pos, ref, got, n_ref < n_got ? n_ref : n_got);
}

void ms_diff_sort_pairs(uint32_t *ids, float *w, uint32_t n) {
    for (uint32_t i = 1; i < n; i++) /* k <= a few dozen: insertion sort */
        for (uint32_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
            if (w) {
                float f = w[j];
                w[j] = w[j - 1];
                w[j - 1] = f;
            }
        }
}

/* log-sum-exp of l[vocab] in double; NaN when any logit is NaN */
static double lse(const float *l, uint32_t vocab) {
    double mx = -INFINITY, sum = 0;
    for (uint32_t v = 0; v < vocab; v++) mx = fmax(mx, l[v]);
    for (uint32_t v = 0; v < vocab; v++) sum += exp((double)l[v] - mx);
    return mx + log(sum);
}

/* the best id: the highest logit, equal logits by the lower id, NaN last */
static uint32_t argmax(const float *l, uint32_t vocab) {
    uint32_t best = 0;
    for (uint32_t v = 1; v < vocab; v++)
        if (!isnan(l[v]) && (isnan(l[best]) || l[v] > l[best])) best = v;
    return best;
}

void ms_diff_add_logits(ms_diff *d, uint32_t pos, const float *ref, const float *got, uint32_t vocab) {
    if (pos >= d->max_pos) return;
    double lr = lse(ref, vocab), lg = lse(got, vocab), mx = 0;
    for (uint32_t v = 0; v < vocab; v++) {
        double e = fabs(((double)got[v] - lg) - ((double)ref[v] - lr));
        if (!(e <= mx)) mx = e; /* NaN wins */
    }
    uint32_t tr = argmax(ref, vocab), tg = argmax(got, vocab);
    d->pos_dlogp[pos] = mx;
    d->pos_top1[2 * pos] = tr;
    d->pos_top1[2 * pos + 1] = tg;
    d->n_logit_pos++;
    d->top1_agree += tr == tg;
    if (!(mx <= d->max_dlogp) || d->n_logit_pos == 1) d->max_dlogp = mx, d->max_dlogp_pos = pos;
}

double ms_diff_rel_rms(const ms_diff_stage *s) {
    if (s->sum_d2 == 0) return 0;
    return s->sum_r2 > 0 ? sqrt(s->sum_d2 / s->sum_r2) : INFINITY;
}

bool ms_diff_stage_bad(const ms_diff *d, int stage, const ms_diff_stage *s) {
    if (s->n_missing || s->n_nonfinite) return true;
    if (ms_diff_stage_is_selection(stage)) return s->n_pos_bad > 0;
    return ms_diff_rel_rms(s) > d->threshold;
}

bool ms_diff_verdict(const ms_diff *d, uint32_t *layer, int *stage) {
    for (uint32_t l = 0; l <= d->n_layers; l++)
        for (int k = 0; k < MS_DIFF_N_STAGES; k++)
            if (ms_diff_stage_bad(d, k, &d->st[(size_t)l * MS_DIFF_N_STAGES + k])) {
                *layer = l;
                *stage = k;
                return true;
            }
    return false;
}
