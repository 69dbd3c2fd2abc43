/* test_diff — `moestream diff`'s pieces: the comparison and verdict (tools/diff_cmp.c) on
 * synthetic stage data, where the first bad stage is known; and the taps (engine.h,
 * ms_session_set_tap) on both backends over a fixture: every stage of every layer in forward
 * order with the documented counts, the same logits with and without a tap, feed refusals and an
 * untapped truncate replay. argv[1]: tests/fixtures/v4/flash_like. Exit 77 only when everything
 * else passed and no Vulkan device could run the Vulkan half. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/engine.h"
#include "tests/check.h"
#include "tools/diff_cmp.h"
#include "tools/env.h"

#define N_TOK 48u /* > 4 * (index_topk 8 + 1): the indexer chooses; 48 / 4 > 8: no select-all */

/* ------------------------------------------------------------------ comparison */

#define NL 3u
#define NP 4u
#define DIM 16u

/* Both sides of every F32 stage of every layer at every position, identical except where
 * noise[layer][stage] scales a relative perturbation of the tested side. */
static void feed_all(ms_diff *d, const double noise[NL + 1][MS_DIFF_N_STAGES]) {
    float ref[DIM], got[DIM];
    for (uint32_t p = 0; p < NP; p++)
        for (uint32_t l = 0; l <= NL; l++)
            for (int k = 0; k < MS_DIFF_N_STAGES; k++) {
                if ((l == NL) != (k == MS_DIFF_HEAD_LOGITS) || ms_diff_stage_is_selection(k)) continue;
                for (uint32_t i = 0; i < DIM; i++) {
                    ref[i] = (float)sin(1.0 + i + 7.0 * p + 13.0 * l + 31.0 * k);
                    got[i] = (float)(ref[i] * (1.0 + noise[l][k] * ((i % 2) ? 1 : -1)));
                }
                ms_diff_add(d, p, l, k, ref, DIM, got, DIM, NULL, 0);
            }
}

static void test_compare(void) {
    double noise[NL + 1][MS_DIFF_N_STAGES] = {{0}};
    noise[0][MS_DIFF_FFN_Y] = 1e-5;   /* within 1e-3 */
    noise[1][MS_DIFF_ATTN_O] = 1e-2;  /* the first bad stage */
    noise[2][MS_DIFF_FFN_H] = 1e-1;   /* bad too, but later */
    ms_diff *d = ms_diff_create(NL, NP, 1e-3);
    CHECK(d != NULL, "create");
    if (!d) return;
    feed_all(d, noise);
    uint32_t l = 99;
    int k = -1;
    CHECK(ms_diff_verdict(d, &l, &k) && l == 1 && k == MS_DIFF_ATTN_O, "verdict: layer %u stage %d", l, k);
    const ms_diff_stage *s = &d->st[1 * MS_DIFF_N_STAGES + MS_DIFF_ATTN_O];
    CHECK(fabs(ms_diff_rel_rms(s) - 1e-2) < 1e-4, "relative RMS %g", ms_diff_rel_rms(s));
    CHECK(s->n_pos == NP && s->n_pos_bad == NP && s->first_bad_pos == 0, "positions %u bad %u", s->n_pos,
          s->n_pos_bad);
    s = &d->st[0 * MS_DIFF_N_STAGES + MS_DIFF_FFN_Y];
    CHECK(!ms_diff_stage_bad(d, MS_DIFF_FFN_Y, s) && s->max_abs > 0, "1e-5 noise is not bad");
    CHECK(ms_diff_stage_bad(d, MS_DIFF_FFN_H, &d->st[2 * MS_DIFF_N_STAGES + MS_DIFF_FFN_H]), "layer 2 ffn.h bad");

    /* a route that differs at position 2 of layer 0 comes first; the margin is the reference's
     * score of its own pick minus that of the tested side's */
    float scores[8] = {0.5f, 0.9f, 0.7f, 0.69f, 0.1f, 0.2f, 0.3f, 0.4f};
    uint32_t rr[2] = {1, 2}, rg[2] = {3, 1};
    for (uint32_t p = 0; p < NP; p++)
        ms_diff_add(d, p, 0, MS_DIFF_FFN_ROUTE, rr, 2, p == 2 ? rg : rr, 2, scores, 8);
    CHECK(ms_diff_verdict(d, &l, &k) && l == 0 && k == MS_DIFF_FFN_ROUTE, "route verdict: %u %d", l, k);
    s = &d->st[MS_DIFF_FFN_ROUTE];
    CHECK(s->n_pos == NP && s->n_pos_bad == 1 && s->first_bad_pos == 2, "route bad at %u of %u", s->n_pos_bad,
          s->n_pos);
    const ms_diff_pick *pk = &s->first_pick;
    CHECK(pk->pos == 2 && pk->a == 2 && pk->b == 3 && pk->have_scores && fabs(pk->margin - 0.01) < 1e-6,
          "pick %u: %u vs %u margin %g", pk->pos, pk->a, pk->b, pk->margin);
    /* the same set in another order agrees */
    uint32_t rs[2] = {2, 1};
    ms_diff_add(d, 0, 1, MS_DIFF_FFN_ROUTE, rr, 2, rs, 2, NULL, 0);
    CHECK(!ms_diff_stage_bad(d, MS_DIFF_FFN_ROUTE, &d->st[MS_DIFF_N_STAGES + MS_DIFF_FFN_ROUTE]),
          "a route in another order is the same route");

    /* missing on one side, earlier still: layer 0 attn.x */
    float v[2] = {1, 2};
    ms_diff_add(d, 3, 0, MS_DIFF_ATTN_X, v, 2, NULL, 0, NULL, 0);
    CHECK(ms_diff_verdict(d, &l, &k) && l == 0 && k == MS_DIFF_ATTN_X, "missing verdict: %u %d", l, k);
    ms_diff_free(d);

    /* NaN: one side only is bad, the same NaN on both is not; a count difference is bad */
    d = ms_diff_create(1, 2, 1e-3);
    if (!d) return;
    float a[3] = {1, NAN, 3}, b[3] = {1, 2, 3}, c[3] = {1, NAN, 3};
    ms_diff_add(d, 0, 0, MS_DIFF_ATTN_Q, a, 3, c, 3, NULL, 0);
    CHECK(!ms_diff_stage_bad(d, MS_DIFF_ATTN_Q, &d->st[MS_DIFF_ATTN_Q]), "NaN on both sides");
    ms_diff_add(d, 0, 0, MS_DIFF_ATTN_KV, a, 3, b, 3, NULL, 0);
    CHECK(d->st[MS_DIFF_ATTN_KV].n_nonfinite == 1 && ms_diff_stage_bad(d, MS_DIFF_ATTN_KV, &d->st[MS_DIFF_ATTN_KV]),
          "NaN on one side");
    ms_diff_add(d, 0, 0, MS_DIFF_ATTN_O, b, 3, b, 2, NULL, 0);
    CHECK(ms_diff_stage_bad(d, MS_DIFF_ATTN_O, &d->st[MS_DIFF_ATTN_O]), "counts differ");
    float z[2] = {0, 0}, nz[2] = {0, 1e-20f};
    ms_diff_add(d, 0, 0, MS_DIFF_ATTN_Y, z, 2, nz, 2, NULL, 0);
    CHECK(isinf(ms_diff_rel_rms(&d->st[MS_DIFF_ATTN_Y])), "a difference against zeros");
    uint32_t s1[3] = {0, 4, 7}, s2[2] = {0, 4};
    ms_diff_add(d, 1, 0, MS_DIFF_IDX_SEL, s1, 3, s2, 2, NULL, 0);
    CHECK(d->st[MS_DIFF_IDX_SEL].n_pos_bad == 1 && !d->st[MS_DIFF_IDX_SEL].first_pick.have_scores,
          "a selection of another size");

    /* logits: a constant shift changes no log-probability; a swapped best id is a top-1 miss */
    float lr[4] = {1, 3, 2, 0}, lg[4] = {6, 8, 7, 5}, ls[4] = {1, 3, 3.5f, 0};
    ms_diff_add_logits(d, 0, lr, lg, 4);
    ms_diff_add_logits(d, 1, lr, ls, 4);
    CHECK(d->pos_dlogp[0] < 1e-6 && d->top1_agree == 1 && d->pos_top1[2] == 1 && d->pos_top1[3] == 2 &&
              d->max_dlogp_pos == 1 && d->max_dlogp > 0.5,
          "logits: %g agree %u", d->pos_dlogp[0], d->top1_agree);
    ms_diff_free(d);

    uint32_t ids[4] = {9, 2, 5, 1};
    float w[4] = {0.9f, 0.2f, 0.5f, 0.1f};
    ms_diff_sort_pairs(ids, w, 4);
    CHECK(ids[0] == 1 && ids[3] == 9 && w[0] == 0.1f && w[1] == 0.2f && w[3] == 0.9f, "sort pairs");
    CHECK(ms_diff_stage_index("attn.idx_sel") == MS_DIFF_IDX_SEL && ms_diff_stage_index("x") == -1, "names");
}

/* ------------------------------------------------------------------ taps */

typedef struct rec {
    const ms_v4_config *c;
    uint32_t pos, calls;
    int last;                                   /* the last key at pos */
    uint32_t n[8][MS_DIFF_N_STAGES];            /* calls per (layer, stage), layers < 8 */
    bool order_ok, count_ok, sel_ok;
    float *logits;                              /* [vocab] the last head.logits */
    uint32_t sel_all_from;                      /* idx_sel must be 0..k-1 (select-all sessions) */
} rec;

static void on_tap(void *ctx, uint32_t pos, uint32_t layer, const char *stage, ms_tap_kind kind, const void *data,
                   uint64_t count) {
    rec *r = ctx;
    const ms_v4_config *c = r->c;
    int k = ms_diff_stage_index(stage);
    r->calls++;
    if (k < 0 || layer > c->n_layers || layer >= 8 || pos != r->pos) {
        r->order_ok = false;
        return;
    }
    int key = (int)layer * MS_DIFF_N_STAGES + k;
    if (key <= r->last || (kind == MS_TAP_U32) != ms_diff_stage_is_selection(k)) r->order_ok = false;
    r->last = key;
    r->n[layer][k]++;
    uint32_t ratio = layer < c->n_layers ? c->compress_ratios[layer] : 0, nb = ratio ? (pos + 1) / ratio : 0;
    uint64_t want = 0;
    switch (k) {
    case MS_DIFF_ATTN_X: case MS_DIFF_ATTN_Y: case MS_DIFF_FFN_X: case MS_DIFF_FFN_Y: want = c->dim; break;
    case MS_DIFF_ATTN_Q: case MS_DIFF_ATTN_O: want = (uint64_t)c->n_heads * c->head_dim; break;
    case MS_DIFF_ATTN_KV: want = c->head_dim; break;
    case MS_DIFF_CMP_ROWS: want = (uint64_t)nb * c->head_dim; break;
    case MS_DIFF_IDX_SCORE: want = nb; break;
    case MS_DIFF_IDX_SEL: want = nb < c->index_topk ? nb : c->index_topk; break;
    case MS_DIFF_ATTN_H: case MS_DIFF_FFN_H: want = (uint64_t)c->hc_mult * c->dim; break;
    case MS_DIFF_FFN_SCORE: want = c->n_routed_experts; break;
    case MS_DIFF_FFN_ROUTE: case MS_DIFF_FFN_WEIGHTS: want = c->n_active_experts; break;
    case MS_DIFF_HEAD_LOGITS: want = c->vocab_size; break;
    default: break;
    }
    if (count != want) r->count_ok = false;
    if (k == MS_DIFF_IDX_SEL) { /* ascending, below nb */
        const uint32_t *s = data;
        for (uint64_t i = 0; i < count; i++)
            if (s[i] >= nb || (i && s[i] <= s[i - 1]) || (r->sel_all_from && s[i] != i)) r->sel_ok = false;
    }
    if (k == MS_DIFF_FFN_ROUTE) {
        const uint32_t *s = data;
        for (uint64_t i = 0; i < count; i++)
            if (s[i] >= c->n_routed_experts) r->sel_ok = false;
    }
    if (k == MS_DIFF_HEAD_LOGITS) memcpy(r->logits, data, (size_t)c->vocab_size * 4);
}

/* The stages layer l must have tapped at every one of n positions (idx_score: where nb > topk). */
static void check_counts(const char *b, const rec *r, uint32_t n) {
    const ms_v4_config *c = r->c;
    for (uint32_t l = 0; l <= c->n_layers && l < 8; l++)
        for (int k = 0; k < MS_DIFF_N_STAGES; k++) {
            uint32_t ratio = l < c->n_layers ? c->compress_ratios[l] : 0, want = n;
            if ((l == c->n_layers) != (k == MS_DIFF_HEAD_LOGITS)) want = 0;
            if (k == MS_DIFF_CMP_ROWS && !ratio) want = 0;
            if (k == MS_DIFF_IDX_SEL && ratio != 4) want = 0;
            if (k == MS_DIFF_IDX_SCORE) {
                want = 0;
                for (uint32_t p = 0; ratio == 4 && p < n; p++) want += (p + 1) / 4 > c->index_topk;
            }
            CHECK(r->n[l][k] == want, "%s: layer %u %s tapped %u times, expected %u", b, l, ms_diff_stage_names[k],
                  r->n[l][k], want);
        }
}

static bool test_taps(const char *dir, ms_backend b) {
    const char *bn = ms_backend_name(b);
    char err[4096];
    ms_engine_opts o = ms_engine_opts_default();
    o.backend = b;
    if (ms_env_vk_opts(&o.vk, err, sizeof err) != 0) {
        CHECK(false, "environment: %s", err);
        return true;
    }
    ms_engine *e = NULL;
    int rc = ms_engine_open(dir, &o, &e, err, sizeof err);
    if (rc == -MS_E_UNSUPPORTED && b == MS_BACKEND_VULKAN) {
        printf("test_diff: no Vulkan device (%s): the Vulkan taps are not tested\n", err);
        return false;
    }
    CHECK(rc == 0, "%s: open %s: %s", bn, dir, err);
    if (rc) return true;
    const ms_v4_config *c = ms_engine_config(e);
    uint32_t V = c->vocab_size, tok[N_TOK];
    for (uint32_t i = 0; i < N_TOK; i++) tok[i] = (i * 2654435761u + 17u) % V;
    rec *r = ms_calloc(1, sizeof *r);
    float *plain = ms_malloc((size_t)N_TOK * V * 4), *row = ms_malloc((size_t)V * 4);
    ms_session *s = NULL, *t = NULL;
    CHECK(r && plain && row && ms_session_create(e, N_TOK, &s) == 0 && ms_session_create(e, N_TOK, &t) == 0,
          "%s: sessions", bn);
    if (!r || !plain || !row || !s || !t) goto out;
    r->c = c;
    r->logits = ms_malloc((size_t)V * 4);
    r->order_ok = r->count_ok = r->sel_ok = true;
    for (uint32_t p = 0; p < N_TOK; p++)
        CHECK(ms_session_feed(s, tok + p, 1, plain + (size_t)p * V) == 0, "%s: untapped feed %u", bn, p);
    CHECK(ms_session_set_tap(t, on_tap, r) == 0, "%s: set_tap", bn);
    bool same = true;
    for (uint32_t p = 0; p < N_TOK; p++) {
        r->pos = p;
        r->last = -1;
        CHECK(ms_session_feed(t, tok + p, 1, row) == 0, "%s: tapped feed %u", bn, p);
        same &= memcmp(row, plain + (size_t)p * V, (size_t)V * 4) == 0;
        same &= memcmp(r->logits, row, (size_t)V * 4) == 0; /* head.logits = the logits */
    }
    CHECK(same, "%s: tapped logits (or head.logits) differ from untapped ones", bn);
    CHECK(r->order_ok, "%s: a tap out of forward order, at a wrong position or of a wrong type", bn);
    CHECK(r->count_ok, "%s: a tap with a count other than documented", bn);
    CHECK(r->sel_ok, "%s: a selection not ascending / out of range, or a route id out of range", bn);
    check_counts(bn, r, N_TOK);

    /* refusals and the untapped replay of truncate; NULL clears */
    uint32_t calls = r->calls;
    CHECK(ms_session_truncate(t, 10) == 0 && r->calls == calls, "%s: truncate's replay tapped", bn);
    CHECK(ms_session_feed(t, tok + 10, 2, NULL) == -MS_E_INVALID_ARG && ms_session_pos(t) == 10,
          "%s: a tapped session took 2 tokens", bn);
    r->pos = 10;
    r->last = -1;
    CHECK(ms_session_feed(t, tok + 10, 1, NULL) == 0 && r->calls > calls, "%s: the tap ended with truncate", bn);
    /* the same on an untapped session (Vulkan's replay runs batches: not the one-token rows) */
    CHECK(ms_session_truncate(s, 10) == 0 && ms_session_feed(s, tok + 10, 1, plain) == 0 &&
              ms_session_logits(t, row) == 0 && !memcmp(row, plain, (size_t)V * 4),
          "%s: logits after truncate and a tapped step", bn);
    CHECK(ms_session_set_tap(t, NULL, NULL) == 0, "%s: clear", bn);
    calls = r->calls;
    CHECK(ms_session_feed(t, tok + 11, 2, NULL) == 0 && r->calls == calls, "%s: a cleared tap was called", bn);

    /* a session too short for the indexer to choose (Vulkan: the static all-blocks list) */
    ms_session *u = NULL;
    memset(r->n, 0, sizeof r->n);
    r->sel_all_from = 1;
    if (ms_session_create(e, 4 * c->index_topk, &u) == 0 && ms_session_set_tap(u, on_tap, r) == 0) {
        for (uint32_t p = 0; p < 4 * c->index_topk; p++) {
            r->pos = p;
            r->last = -1;
            CHECK(ms_session_feed(u, tok + p, 1, NULL) == 0, "%s: short session feed %u", bn, p);
        }
        CHECK(r->sel_ok && r->count_ok && r->order_ok, "%s: short session: selection 0..k-1", bn);
        check_counts(bn, r, 4 * c->index_topk);
    } else {
        CHECK(false, "%s: short session", bn);
    }
    ms_session_free(u);
out:
    ms_session_free(s);
    ms_session_free(t);
    if (r) ms_free(r->logits);
    ms_free(r);
    ms_free(plain);
    ms_free(row);
    ms_engine_close(e);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("usage: test_diff FIXTURE_DIR\n");
        return 1;
    }
    test_compare();
    test_taps(argv[1], MS_BACKEND_CPU);
    bool vk = test_taps(argv[1], MS_BACKEND_VULKAN);
    if (g_fail) {
        printf("%d failure(s)\n", g_fail);
        return 1;
    }
    if (!vk) return 77;
    printf("test_diff: ok\n");
    return 0;
}
