/* tools/diff.c — `moestream diff`: the CPU reference and the Vulkan forward pass side by side.
 * Both backends run the same tokens one at a time with taps (engine.h, ms_session_set_tap); each
 * position's reference values are held until the Vulkan step has tapped the same stages, and
 * only per-stage summaries stay (tools/diff_cmp.h). Prints per layer and stage the max-abs, RMS
 * and relative RMS difference, selections and routes as agree/differ with the margin of the
 * reference's scores, the logits' max |d log-prob| and top-1 agreement, and a verdict naming the
 * first bad stage in forward order: the first bad stage names the bad kernel. docs/diff.md.
 *
 * Exit: 0 the backends agree, 3 they differ (the verdict names the stage), 1 failure (the model
 * cannot be loaded, a backend failed or broke the tap contract), 2 bad usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/status.h"
#include "engine/engine.h"
#include "tools/cli.h"
#include "tools/diff_cmp.h"
#include "tools/env.h"

int ms_cmd_diff(int argc, char **argv);

#define DEFAULT_THRESHOLD 1e-3 /* relative RMS: F32 rounding order gives ~1e-6 (docs/diff.md) */

static void usage(FILE *f) {
    fprintf(f,
            "usage: moestream diff -m MODEL_DIR (--tokens ID,ID,... | --tokens-file FILE)\n"
            "                      [--threshold X] [--no-fake-quant] [--json]\n"
            "\n"
            "Runs the CPU reference and the Vulkan forward pass on the same tokens, one at a\n"
            "time, and compares every stage of every layer (docs/diff.md): max-abs, RMS and\n"
            "relative RMS difference; the indexer's selections and the experts' routes as\n"
            "agree/differ, with the reference's score margin of a disagreement; the final\n"
            "logits' max |d log-prob| and top-1 agreement; and a verdict naming the first bad\n"
            "stage in forward order.\n"
            "\n"
            "  -m, --model DIR     checkpoint directory (config.json + safetensors)\n"
            "  --tokens LIST       token ids separated by commas (spaces around them are fine)\n"
            "  --tokens-file FILE  the same list read from a file (commas, spaces or newlines)\n"
            "  --threshold X       relative RMS above which a stage is bad (default 1e-3)\n"
            "  --no-fake-quant     skip the two official fake-quant steps on both backends (e4m3\n"
            "                      KV latent, FP4 indexer q/k): compares the continuous path\n"
            "  --json              one JSON object instead of the table\n"
            "\n"
            "The Vulkan device is the best one, or MOESTREAM_DEVICE (e.g. lavapipe).\n"
            "Exit status: 0 the backends agree; 3 they differ (the verdict names the stage);\n"
            "1 the model cannot be loaded or a backend failed; 2 bad usage.\n");
}

static int bad_usage(const char *fmt, const char *arg) { return ms_cli_bad_usage("diff", usage, fmt, arg); }

/* One stage of the reference at the current position. */
typedef struct slot {
    void *data;
    uint64_t count, cap; /* values (4 bytes each) */
    bool present;
} slot;

typedef struct diff_ctx {
    ms_diff *d;
    uint32_t n_layers, n_experts, pos;
    slot *ref;          /* [n_layers + 1][MS_DIFF_N_STAGES] */
    bool *got_seen;     /* [n_layers + 1][MS_DIFF_N_STAGES] the tested side tapped it at pos */
    int last_key;       /* the last (layer, stage) tapped at pos on the side now running */
    uint32_t *got_route; /* [n_experts] the tested side's route of the current layer, in its order */
    uint64_t got_route_n;
    uint32_t *ids[2];   /* [n_experts] sorting scratch */
    float *w[2];
    int err;            /* a broken tap contract or no memory: the message in msg */
    char msg[256];
} diff_ctx;

/* The (layer, stage) key of a tap, checked: a known stage, the current position, forward order. */
static int tap_key(diff_ctx *x, const char *side, uint32_t pos, uint32_t layer, const char *stage,
                   ms_tap_kind kind) {
    if (x->err) return -1;
    int k = ms_diff_stage_index(stage);
    bool head = k == MS_DIFF_HEAD_LOGITS;
    const char *why = NULL;
    if (k < 0) why = "an unknown stage";
    else if (pos != x->pos) why = "a wrong position";
    else if (head != (layer == x->n_layers) || layer > x->n_layers) why = "a wrong layer";
    else if ((kind == MS_TAP_U32) != ms_diff_stage_is_selection(k)) why = "a wrong value type";
    int key = k < 0 ? 0 : (int)(layer * MS_DIFF_N_STAGES) + k;
    if (!why && key <= x->last_key) why = "a stage out of forward order";
    if (why) {
        snprintf(x->msg, sizeof x->msg, "the %s backend tapped %s: '%.40s' of layer %u at position %u",
                 side, why, stage, layer, pos);
        x->err = -MS_E_INVALID_ARG;
        return -1;
    }
    x->last_key = key;
    return key;
}

static void ref_tap(void *ctx, uint32_t pos, uint32_t layer, const char *stage, ms_tap_kind kind,
                    const void *data, uint64_t count) {
    diff_ctx *x = ctx;
    int key = tap_key(x, "cpu", pos, layer, stage, kind);
    if (key < 0) return;
    slot *s = &x->ref[key];
    if (count > s->cap || !s->data) { /* never NULL: NULL is "missing" to ms_diff_add */
        void *p = ms_realloc(s->data, (count ? count : 1) * 4);
        if (!p) {
            x->err = -MS_E_NOMEM;
            snprintf(x->msg, sizeof x->msg, "out of memory holding %s", stage);
            return;
        }
        s->data = p;
        s->cap = count ? count : 1;
    }
    if (count) memcpy(s->data, data, count * 4);
    s->count = count;
    s->present = true;
}

static void got_tap(void *ctx, uint32_t pos, uint32_t layer, const char *stage, ms_tap_kind kind,
                    const void *data, uint64_t count) {
    diff_ctx *x = ctx;
    int key = tap_key(x, "vulkan", pos, layer, stage, kind);
    if (key < 0) return;
    int k = key % MS_DIFF_N_STAGES;
    const slot *r = &x->ref[key];
    x->got_seen[key] = true;
    if (k == MS_DIFF_FFN_ROUTE) { /* kept for the weights, which follow in the same order */
        if (count > x->n_experts) {
            snprintf(x->msg, sizeof x->msg, "the vulkan backend tapped %llu experts in layer %u's route",
                     (unsigned long long)count, layer);
            x->err = -MS_E_INVALID_ARG;
            return;
        }
        x->got_route_n = count;
        if (count) memcpy(x->got_route, data, count * 4);
    }
    if (!r->present) {
        ms_diff_add(x->d, pos, layer, k, NULL, 0, data, count, NULL, 0);
        return;
    }
    if (k == MS_DIFF_FFN_WEIGHTS) { /* each side's weights by expert id */
        const slot *rr = &x->ref[key - 1];
        uint64_t n = count;
        if (n != r->count || n != rr->count || n != x->got_route_n) {
            ms_diff_add(x->d, pos, layer, k, r->data, r->count, data, count, NULL, 0);
            return;
        }
        memcpy(x->ids[0], rr->data, n * 4);
        memcpy(x->w[0], r->data, n * 4);
        memcpy(x->ids[1], x->got_route, n * 4);
        memcpy(x->w[1], data, n * 4);
        ms_diff_sort_pairs(x->ids[0], x->w[0], (uint32_t)n);
        ms_diff_sort_pairs(x->ids[1], x->w[1], (uint32_t)n);
        ms_diff_add(x->d, pos, layer, k, x->w[0], n, x->w[1], n, NULL, 0);
        return;
    }
    const float *sc = NULL;
    uint64_t n_sc = 0;
    int ks = ms_diff_stage_scores(k);
    if (ks >= 0 && x->ref[key - k + ks].present) {
        sc = x->ref[key - k + ks].data;
        n_sc = x->ref[key - k + ks].count;
    }
    ms_diff_add(x->d, pos, layer, k, r->data, r->count, data, count, sc, n_sc);
}

/* ------------------------------------------------------------------ output */

static const char *layer_name(const ms_diff *d, uint32_t l, char *buf, size_t len) {
    if (l == d->n_layers) return "head";
    snprintf(buf, len, "%u", l);
    return buf;
}

static void print_pick(const char *what, const ms_diff_pick *p) {
    printf("%s at %u: reference-only %u, vulkan-only %u", what, p->pos, p->a, p->b);
    if (p->have_scores)
        printf(" (reference scores %.9g vs %.9g, margin %.3g = %.3g relative)", p->score_a, p->score_b,
               p->margin, p->margin / fmax(fabs(p->score_a), 1e-30));
}

static void print_text(const ms_diff *d, const char *dir, uint32_t n, const char *device, bool fq,
                       const uint32_t *tokens) {
    printf("moestream diff: %s, %u tokens one at a time; reference cpu vs vulkan (%s); fake-quant %s; "
           "threshold %.3g relative RMS\n\n",
           dir, n, device, fq ? "on" : "off", d->threshold);
    printf("%-5s %-15s %9s %12s %12s %12s %8s\n", "layer", "stage", "positions", "max_abs", "rms",
           "rel_rms", "bad_pos");
    char lb[16];
    for (uint32_t l = 0; l <= d->n_layers; l++)
        for (int k = 0; k < MS_DIFF_N_STAGES; k++) {
            const ms_diff_stage *s = &d->st[(size_t)l * MS_DIFF_N_STAGES + k];
            if (!s->n_pos && !s->n_missing) continue; /* a stage this layer does not have */
            printf("%-5s %-15s %9u", layer_name(d, l, lb, sizeof lb), ms_diff_stage_names[k], s->n_pos);
            if (ms_diff_stage_is_selection(k)) {
                if (!s->n_pos_bad) {
                    printf("  agree at %u/%u positions", s->n_pos, s->n_pos);
                } else {
                    printf("  DIFFER at %u/%u positions; ", s->n_pos_bad, s->n_pos + s->n_missing);
                    print_pick("first", &s->first_pick);
                    if (s->worst_pick.have_scores && s->n_pos_bad > 1)
                        printf("; largest margin %.3g at %u", s->worst_pick.margin, s->worst_pick.pos);
                }
            } else {
                double rms = s->n_values ? sqrt(s->sum_d2 / (double)s->n_values) : 0;
                printf(" %12.3e %12.3e %12.3e %8u", s->max_abs, rms, ms_diff_rel_rms(s), s->n_pos_bad);
                if (s->n_pos_bad) printf("  (first at %u)", s->first_bad_pos);
                if (s->n_nonfinite) printf("  %llu non-finite", (unsigned long long)s->n_nonfinite);
            }
            if (s->n_missing) printf("  missing or of another size at %u positions", s->n_missing);
            printf("%s\n", ms_diff_stage_bad(d, k, s) ? "  <- bad" : "");
        }
    printf("\nlogits: max |d log-prob| %.3e at position %u; top-1 agrees at %u/%u positions\n", d->max_dlogp,
           d->max_dlogp_pos, d->top1_agree, d->n_logit_pos);
    uint32_t shown = 0;
    for (uint32_t p = 0; p < d->n_logit_pos; p++) {
        if (d->pos_top1[2 * p] == d->pos_top1[2 * p + 1]) continue;
        if (shown++ == 16) {
            printf("  ...\n");
            break;
        }
        printf("  top-1 differs at position %u (token %u): reference %u, vulkan %u; max |d log-prob| %.3e\n", p,
               tokens[p], d->pos_top1[2 * p], d->pos_top1[2 * p + 1], d->pos_dlogp[p]);
    }
    uint32_t bl;
    int bk;
    if (!ms_diff_verdict(d, &bl, &bk)) {
        printf("verdict: ok: every stage within %.3g relative RMS, every selection and route agrees\n",
               d->threshold);
        return;
    }
    const ms_diff_stage *s = &d->st[(size_t)bl * MS_DIFF_N_STAGES + bk];
    printf("verdict: first bad stage: layer %s %s (", layer_name(d, bl, lb, sizeof lb), ms_diff_stage_names[bk]);
    if (s->n_missing)
        printf("missing or of another size at %u positions", s->n_missing);
    else if (s->n_nonfinite)
        printf("%llu non-finite values", (unsigned long long)s->n_nonfinite);
    else if (ms_diff_stage_is_selection(bk))
        printf("differs at %u positions, the first at %u", s->n_pos_bad, s->first_bad_pos);
    else
        printf("relative RMS %.3e > %.3g; first over at position %u", ms_diff_rel_rms(s), d->threshold,
               s->first_bad_pos);
    printf(")\n");
}

static void json_pick(ms_json_writer *w, const char *key, const ms_diff_pick *p) {
    ms_json_write_begin(w, key, '{');
    ms_json_write_u64(w, "pos", p->pos);
    ms_json_write_u64(w, "reference_only", p->a);
    ms_json_write_u64(w, "tested_only", p->b);
    if (p->have_scores) {
        ms_json_write_f64(w, "reference_score_a", p->score_a, 9);
        ms_json_write_f64(w, "reference_score_b", p->score_b, 9);
        ms_json_write_f64(w, "margin", p->margin, 6);
    }
    ms_json_write_end(w, '}');
}

static void print_json(const ms_diff *d, const char *dir, uint32_t n, const char *device, bool fq,
                       const uint32_t *tokens) {
    ms_json_writer w;
    ms_json_writer_init(&w, stdout, true);
    ms_json_write_begin(&w, NULL, '{');
    ms_json_write_str(&w, "model", dir);
    ms_json_write_u64(&w, "n_tokens", n);
    ms_json_write_str(&w, "reference", "cpu");
    ms_json_write_str(&w, "tested", "vulkan");
    ms_json_write_str(&w, "device", device);
    ms_json_write_bool(&w, "fake_quant", fq);
    ms_json_write_f64(&w, "threshold", d->threshold, 6);
    ms_json_write_begin(&w, "stages", '[');
    for (uint32_t l = 0; l <= d->n_layers; l++)
        for (int k = 0; k < MS_DIFF_N_STAGES; k++) {
            const ms_diff_stage *s = &d->st[(size_t)l * MS_DIFF_N_STAGES + k];
            if (!s->n_pos && !s->n_missing) continue;
            ms_json_write_begin(&w, NULL, '{');
            ms_json_write_u64(&w, "layer", l);
            ms_json_write_str(&w, "stage", ms_diff_stage_names[k]);
            ms_json_write_u64(&w, "positions", s->n_pos);
            ms_json_write_u64(&w, "missing", s->n_missing);
            if (ms_diff_stage_is_selection(k)) {
                ms_json_write_u64(&w, "differ_positions", s->n_pos_bad);
                if (s->n_pos_bad) {
                    json_pick(&w, "first", &s->first_pick);
                    json_pick(&w, "largest_margin", &s->worst_pick);
                }
            } else {
                ms_json_write_u64(&w, "values", s->n_values);
                ms_json_write_f64(&w, "max_abs", s->max_abs, 6);
                ms_json_write_u64(&w, "max_abs_pos", s->max_abs_pos);
                ms_json_write_f64(&w, "rms", s->n_values ? sqrt(s->sum_d2 / (double)s->n_values) : 0, 6);
                double rel = ms_diff_rel_rms(s);
                if (isfinite(rel))
                    ms_json_write_f64(&w, "rel_rms", rel, 6);
                else
                    ms_json_write_str(&w, "rel_rms", "inf"); /* a difference against all zeros */
                ms_json_write_u64(&w, "nonfinite", s->n_nonfinite);
                ms_json_write_u64(&w, "bad_positions", s->n_pos_bad);
                if (s->n_pos_bad) ms_json_write_u64(&w, "first_bad_pos", s->first_bad_pos);
            }
            ms_json_write_bool(&w, "bad", ms_diff_stage_bad(d, k, s));
            ms_json_write_end(&w, '}');
        }
    ms_json_write_end(&w, ']');
    ms_json_write_begin(&w, "logits", '{');
    ms_json_write_f64(&w, "max_dlogprob", d->max_dlogp, 6);
    ms_json_write_u64(&w, "max_dlogprob_pos", d->max_dlogp_pos);
    ms_json_write_u64(&w, "top1_agree", d->top1_agree);
    ms_json_write_begin(&w, "positions", '[');
    for (uint32_t p = 0; p < d->n_logit_pos; p++) {
        ms_json_write_begin(&w, NULL, '{');
        ms_json_write_u64(&w, "pos", p);
        ms_json_write_u64(&w, "token", tokens[p]);
        ms_json_write_f64(&w, "max_dlogprob", d->pos_dlogp[p], 6);
        ms_json_write_u64(&w, "top1_reference", d->pos_top1[2 * p]);
        ms_json_write_u64(&w, "top1_tested", d->pos_top1[2 * p + 1]);
        ms_json_write_end(&w, '}');
    }
    ms_json_write_end(&w, ']');
    ms_json_write_end(&w, '}');
    uint32_t bl;
    int bk;
    bool bad = ms_diff_verdict(d, &bl, &bk);
    ms_json_write_begin(&w, "verdict", '{');
    ms_json_write_bool(&w, "ok", !bad);
    if (bad) {
        const ms_diff_stage *s = &d->st[(size_t)bl * MS_DIFF_N_STAGES + bk];
        ms_json_write_u64(&w, "layer", bl);
        ms_json_write_str(&w, "stage", ms_diff_stage_names[bk]);
        ms_json_write_u64(&w, "first_bad_pos", s->first_bad_pos);
    }
    ms_json_write_end(&w, '}');
    ms_json_write_end(&w, '}');
    fputc('\n', stdout);
}

/* ------------------------------------------------------------------ main */

static int open_side(const char *dir, ms_engine_opts eo, ms_backend b, uint32_t n, ms_engine **e,
                     ms_session **s) {
    char err[4096];
    eo.backend = b;
    int rc = ms_engine_open(dir, &eo, e, err, sizeof err);
    if (rc) {
        fprintf(stderr, "moestream diff: %s backend: %s\n", ms_backend_name(b), err);
        return rc;
    }
    if ((rc = ms_session_create(*e, n, s)) != 0)
        fprintf(stderr, "moestream diff: %s session: %s\n", ms_backend_name(b), ms_strerror(rc));
    return rc;
}

int ms_cmd_diff(int argc, char **argv) {
    ms_cli_model_args ma = {0};
    bool json = false;
    double threshold = DEFAULT_THRESHOLD;
    ms_engine_opts eo = ms_engine_opts_default();
    for (int i = 1, r; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((r = ms_cli_model_arg("diff", usage, argc, argv, &i, &ma, &eo)) != 0) {
            if (r != 1) return r;
        } else if (!strcmp(a, "--threshold")) {
            char *end = NULL;
            if (++i < argc) threshold = strtod(argv[i], &end);
            if (i >= argc || !end || end == argv[i] || *end || !(threshold > 0) || !isfinite(threshold))
                return bad_usage("--threshold needs a positive number, got '%s'", i < argc ? argv[i] : "");
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else {
            return bad_usage("unknown option '%s'", a);
        }
    }
    uint32_t *tokens = NULL, n = 0;
    if (ms_cli_model_input("diff", usage, &ma, &eo, &tokens, &n) != 0) return 2;
    const char *dir = ma.dir;

    int status = 1, rc;
    ms_engine *ec = NULL, *ev = NULL;
    ms_session *sc = NULL, *sv = NULL;
    diff_ctx x = {0};
    float *lc = NULL, *lv = NULL;
    if (open_side(dir, eo, MS_BACKEND_CPU, n, &ec, &sc) || open_side(dir, eo, MS_BACKEND_VULKAN, n, &ev, &sv))
        goto out;
    const ms_v4_config cfg = *ms_engine_config(ec);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] >= cfg.vocab_size) {
            fprintf(stderr, "moestream diff: token id %u (position %u) is not below vocab_size %u\n", tokens[i], i,
                    cfg.vocab_size);
            status = 2;
            goto out;
        }
    ms_engine_info info;
    if ((rc = ms_engine_get_info(ev, false, &info)) != 0) {
        fprintf(stderr, "moestream diff: vulkan device: %s\n", ms_strerror(rc));
        goto out;
    }
    size_t n_slots = (size_t)(cfg.n_layers + 1) * MS_DIFF_N_STAGES, E = cfg.n_routed_experts;
    x.n_layers = cfg.n_layers;
    x.n_experts = cfg.n_routed_experts;
    x.d = ms_diff_create(cfg.n_layers, n, threshold);
    x.ref = ms_calloc(n_slots, sizeof *x.ref);
    x.got_seen = ms_calloc(n_slots, sizeof *x.got_seen);
    x.got_route = ms_malloc(E * 4);
    for (int i = 0; i < 2; i++) x.ids[i] = ms_malloc(E * 4), x.w[i] = ms_malloc(E * 4);
    lc = ms_malloc((size_t)cfg.vocab_size * 4);
    lv = ms_malloc((size_t)cfg.vocab_size * 4);
    if (!x.d || !x.ref || !x.got_seen || !x.got_route || !x.ids[0] || !x.ids[1] || !x.w[0] || !x.w[1] || !lc ||
        !lv) {
        fprintf(stderr, "moestream diff: %s\n", ms_strerror(-MS_E_NOMEM));
        goto out;
    }
    if ((rc = ms_session_set_tap(sc, ref_tap, &x)) != 0 || (rc = ms_session_set_tap(sv, got_tap, &x)) != 0) {
        fprintf(stderr, "moestream diff: taps: %s\n", ms_strerror(rc));
        goto out;
    }
    for (uint32_t p = 0; p < n; p++) {
        x.pos = p;
        x.last_key = -1;
        if ((rc = ms_session_feed(sc, tokens + p, 1, lc)) != 0) {
            fprintf(stderr, "moestream diff: cpu forward at position %u: %s\n", p, ms_strerror(rc));
            goto out;
        }
        x.last_key = -1;
        if (!x.err && (rc = ms_session_feed(sv, tokens + p, 1, lv)) != 0) {
            fprintf(stderr, "moestream diff: vulkan forward at position %u: %s\n", p, ms_strerror(rc));
            goto out;
        }
        if (x.err) {
            fprintf(stderr, "moestream diff: %s\n", x.msg);
            goto out;
        }
        for (size_t i = 0; i < n_slots; i++) { /* the reference's stages the tested side lacked */
            if (x.ref[i].present && !x.got_seen[i])
                ms_diff_add(x.d, p, (uint32_t)(i / MS_DIFF_N_STAGES), (int)(i % MS_DIFF_N_STAGES), x.ref[i].data,
                            x.ref[i].count, NULL, 0, NULL, 0);
            x.ref[i].present = x.got_seen[i] = false;
        }
        ms_diff_add_logits(x.d, p, lc, lv, cfg.vocab_size);
    }
    if (json)
        print_json(x.d, dir, n, info.device, !eo.no_fq_kv, tokens);
    else
        print_text(x.d, dir, n, info.device, !eo.no_fq_kv, tokens);
    uint32_t bl;
    int bk;
    status = ms_diff_verdict(x.d, &bl, &bk) ? 3 : 0; /* main flushes stdout and reports a write error */
out:
    ms_session_free(sv);
    ms_session_free(sc);
    ms_engine_close(ev);
    ms_engine_close(ec);
    if (x.ref)
        for (size_t i = 0; i < (size_t)(x.n_layers + 1) * MS_DIFF_N_STAGES; i++) ms_free(x.ref[i].data);
    ms_free(x.ref);
    ms_free(x.got_seen);
    ms_free(x.got_route);
    for (int i = 0; i < 2; i++) ms_free(x.ids[i]), ms_free(x.w[i]);
    ms_diff_free(x.d);
    ms_free(lc);
    ms_free(lv);
    ms_free(tokens);
    return status;
}
