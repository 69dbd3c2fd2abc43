/* test_golden — a backend (engine.h: the CPU reference or Vulkan) against golden logits from an
 * independent implementation: Hugging Face transformers' DeepseekV4ForCausalLM in float64 with the
 * two official fake-quant steps hooked in (tools/fixtures/gen_v4_fixtures.py; each fixture's README
 * says how it was made). Every fixture directory under argv[1] holds an official-format checkpoint
 * (config.json, sharded safetensors) and golden.json with, per token sequence, the full log-softmax
 * rows ([n][vocab] float32 in a side file) and top-1/top-2 margins, plus a greedy continuation.
 *
 * Asserts per fixture and backend:
 *  - loading: config parses, every expected tensor is present with the right dtype and shape;
 *  - max |Δ logprob| over every position and vocabulary entry below TOL_LOGPROB;
 *  - the top-1 token equal at every position whose golden margin exceeds TOL_TOP1_MARGIN;
 *  - prefill in chunks (and token by token) against one full pass: bit-identical on the CPU
 *    reference; on Vulkan within TOL_SPLIT (batches of one, eight and 64 tokens run through
 *    different GEMV kernels, so F32 sums round differently);
 *  - the greedy continuation identical, token by token;
 *  - the tests see both official fake-quant steps: with either one switched off, the first
 *    sequence misses the tolerance (so a runtime that skips one cannot pass);
 *  - Vulkan only: with both fake-quant steps off (the continuous path), Vulkan against the CPU
 *    reference within TOL_LOGPROB at every position of every sequence.
 * usage: test_golden FIXTURES_DIR [--backend cpu|vulkan] [FIXTURE_NAME]
 * Exit: 0 pass, 1 fail, 2 bad usage, 77 (vulkan) no Vulkan device.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/status.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "engine/vk/vk.h" /* the device probe: SKIP without one */
#include "tools/env.h"

#include "tests/check.h"

/* Observed (CPU reference in F32 with double dot products vs transformers in float64, which keeps
 * RMSNorm, RoPE, mHC mixing and indexer scores in float32): max |Δ logprob| 1.7e-5 (flash_like)
 * and 2.9e-5 (pro_like) over all positions and the whole vocabulary. The margin (3.5x) covers F32
 * summation order on other compilers; a missed fake-quant step moves logprobs by 1.9 or more on
 * these fixtures (printed by the ablation below; transformers' own ablation in golden.json agrees). */
#define TOL_LOGPROB 1e-4
/* Top-1 must agree wherever the golden top-1/top-2 gap exceeds the logprob tolerance twice over. */
#define TOL_TOP1_MARGIN (2 * TOL_LOGPROB)
/* Vulkan with the fake-quant steps on: F32 accumulation (the reference sums in double) can move a
 * value across an e4m3 or e2m1 rounding boundary, and one flipped code moves log-probs far more
 * than an ulp. Observed: flash_like 1.1e-5 (no flip); pro_like 'short' 6.5e-3 at position 6, the
 * same token by token, while the continuous path (both steps off) agrees with the CPU reference
 * to 5e-6 there, so the difference comes from a quantisation step, not from the continuous
 * maths. With prefill batches of 64 through the GEMM kernels (another summation order again):
 * pro_like 'long' 1.77e-2 at position 101 on lavapipe, while its continuous path stays at 7.5e-6.
 * Top-1 and the greedy continuation stay exact requirements; the continuous path is held to
 * TOL_LOGPROB below. */
#define TOL_LOGPROB_VK_FQ 5e-2
/* Vulkan, one prompt fed in different splits: F32 rounding of different kernels only (a batch of
 * one token, of eight and of 64 take different GEMV / GEMM kernels), plus the same flips as above. */
#define TOL_SPLIT TOL_LOGPROB_VK_FQ

static ms_backend g_backend = MS_BACKEND_CPU;

/* An engine on fixture dir with the given fake-quant steps switched off; NULL (with a FAIL) if it
 * cannot be opened. */
static ms_engine *open_engine(const char *dir, ms_backend backend, bool no_kv, bool no_index) {
    ms_engine_opts o = ms_engine_opts_default();
    char err[4096] = "";
    o.backend = backend;
    o.no_fq_kv = no_kv;
    o.no_fq_index = no_index;
    int rc = ms_env_vk_opts(&o.vk, err, sizeof err);
    static bool said;
    if (!rc && backend == MS_BACKEND_VULKAN && !said &&
        (o.vk.disable_push_descriptor || o.vk.disable_timeline_semaphore || o.vk.disable_tiled_gemv)) {
        printf("fallbacks forced:%s%s%s\n", o.vk.disable_push_descriptor ? " no push descriptors" : "",
               o.vk.disable_timeline_semaphore ? " no timeline semaphores" : "",
               o.vk.disable_tiled_gemv ? " no tiled GEMV" : "");
        said = true;
    }
    ms_engine *e = NULL;
    if (!rc) rc = ms_engine_open(dir, &o, &e, err, sizeof err);
    CHECK(rc == 0, "open %s (%s): %s", dir, ms_backend_name(backend), err);
    return rc ? NULL : e;
}

/* Feeds tokens[n] from the start of a fresh session in calls of `chunk` tokens, every row into
 * logits [n][vocab]. */
static int feed_all(ms_session *s, const uint32_t *tokens, uint32_t n, uint32_t chunk, float *logits,
                    uint32_t vocab) {
    ms_session_reset(s);
    int rc = 0;
    for (uint32_t p = 0; p < n && !rc; p += chunk) {
        uint32_t len = n - p < chunk ? n - p : chunk;
        rc = ms_session_feed(s, tokens + p, len, logits + (size_t)p * vocab);
    }
    return rc;
}

/* max over positions and ids of |log_softmax(a) - log_softmax(b)| */
static double max_dlogprob(const float *a, const float *b, uint32_t n, uint32_t vocab, double *la,
                           double *lb, uint32_t *worst);


static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? ms_malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        ms_free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

/* tokens of a JSON array of integers; returns the count or 0 on error. */
static uint32_t json_tokens(const ms_json *arr, uint32_t *out, uint32_t max) {
    uint32_t n = ms_json_len(arr);
    if (ms_json_type_of(arr) != MS_JSON_ARRAY || n > max) return 0;
    for (uint32_t i = 0; i < n; i++) {
        const ms_json *v = ms_json_at(arr, i);
        if (!ms_json_is_int(v) || ms_json_int(v) < 0) return 0;
        out[i] = (uint32_t)ms_json_int(v);
    }
    return n;
}

static void log_softmax(const float *logits, uint32_t vocab, double *out) {
    double m = -INFINITY, s = 0;
    for (uint32_t i = 0; i < vocab; i++) m = logits[i] > m ? logits[i] : m;
    for (uint32_t i = 0; i < vocab; i++) s += exp((double)logits[i] - m);
    double lse = m + log(s);
    for (uint32_t i = 0; i < vocab; i++) out[i] = (double)logits[i] - lse;
}

static uint32_t argmax(const float *v, uint32_t n) {
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

#define MAX_SEQ 4096

static double max_dlogprob(const float *a, const float *b, uint32_t n, uint32_t vocab, double *la,
                           double *lb, uint32_t *worst) {
    double m = 0;
    for (uint32_t p = 0; p < n; p++) {
        log_softmax(a + (size_t)p * vocab, vocab, la);
        log_softmax(b + (size_t)p * vocab, vocab, lb);
        for (uint32_t v = 0; v < vocab; v++) {
            double d = fabs(la[v] - lb[v]);
            if (!(d <= m)) {
                m = d;
                if (worst) *worst = p;
            }
        }
    }
    return m;
}

/* One golden sequence: full pass vs golden rows, then chunked and token-by-token vs full. */
static double check_sequence(const char *dir, ms_session *s, uint32_t vocab, const ms_json *seq,
                             int ablation) {
    static uint32_t tokens[MAX_SEQ];
    const char *name = "?", *file = NULL;
    ms_json_get_str(seq, "name", &name, NULL, 0);
    ms_json_get_str(seq, "logprobs_file", &file, NULL, 0);
    uint32_t n = json_tokens(ms_json_get(seq, "tokens"), tokens, MAX_SEQ);
    const ms_json *margin = ms_json_get(seq, "margin");
    CHECK(n > 0 && file && ms_json_len(margin) == n, "sequence '%s': malformed golden entry", name);
    if (!(n > 0 && file && ms_json_len(margin) == n)) return NAN;

    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    size_t glen = 0;
    float *golden = (float *)read_file(path, &glen);
    CHECK(golden && glen == (size_t)n * vocab * 4, "%s: expected %u x %u float32", path, n, vocab);
    float *logits = ms_malloc((size_t)n * vocab * 4), *chunked = ms_malloc((size_t)n * vocab * 4);
    double *lp = ms_malloc((size_t)vocab * sizeof *lp);
    double max_d = NAN;
    if (!golden || glen != (size_t)n * vocab * 4 || !logits || !chunked || !lp) goto out;

    uint64_t t0 = ms_time_ns();
    int rc = feed_all(s, tokens, n, n, logits, vocab);
    double secs = ms_elapsed_ms(t0) * 1e-3;
    CHECK(rc == 0, "forward: %s", ms_strerror(rc));
    if (rc) goto out;

    max_d = 0;
    uint32_t worst_pos = 0, top1_checked = 0, top1_agree = 0;
    for (uint32_t p = 0; p < n; p++) {
        log_softmax(logits + (size_t)p * vocab, vocab, lp);
        const float *g = golden + (size_t)p * vocab;
        for (uint32_t v = 0; v < vocab; v++) {
            double d = fabs(lp[v] - g[v]);
            if (!(d <= max_d)) { /* also catches NaN */
                max_d = d;
                worst_pos = p;
            }
        }
        if (ms_json_num(ms_json_at(margin, p)) > TOL_TOP1_MARGIN) {
            top1_checked++;
            top1_agree += argmax(logits + (size_t)p * vocab, vocab) == argmax(g, vocab);
        }
    }
    if (ablation) goto out; /* the caller judges max_d */
    printf("  %-6s %4u tokens: max |dlogprob| %.2e (tol %.0e, worst at position %u), top-1 agrees at "
           "%u/%u positions with margin > %.0e; full pass %.2f s (%.0f tokens/s)\n",
           name, n, max_d, g_backend == MS_BACKEND_CPU ? TOL_LOGPROB : TOL_LOGPROB_VK_FQ, worst_pos, top1_agree, top1_checked, TOL_TOP1_MARGIN, secs,
           n / secs);
    double tol = g_backend == MS_BACKEND_CPU ? TOL_LOGPROB : TOL_LOGPROB_VK_FQ;
    CHECK(max_d <= tol, "sequence '%s': max |dlogprob| %.3e > %.0e", name, max_d, tol);
    CHECK(top1_agree == top1_checked, "sequence '%s': top-1 differs at %u positions", name,
          top1_checked - top1_agree);

    static const uint32_t chunks[] = {1, 37, 128};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        rc = feed_all(s, tokens, n, chunks[c], chunked, vocab);
        int same = rc == 0 && memcmp(chunked, logits, (size_t)n * vocab * 4) == 0;
        if (g_backend == MS_BACKEND_CPU) {
            printf("  %-6s prefill in chunks of %3u: %s\n", name, chunks[c],
                   same ? "bit-identical to the full pass" : "DIFFERS");
            CHECK(same, "sequence '%s': chunk %u differs from the full pass (rc %d)", name, chunks[c], rc);
        } else {
            double *lb = ms_malloc((size_t)vocab * sizeof *lb);
            double d = rc == 0 && lb ? max_dlogprob(chunked, logits, n, vocab, lp, lb, NULL) : NAN;
            ms_free(lb);
            printf("  %-6s prefill in chunks of %3u: %s, max |dlogprob| %.2e against the full pass (tol %.0e)\n",
                   name, chunks[c], same ? "bit-identical" : "not bit-identical", d, TOL_SPLIT);
            CHECK(d <= TOL_SPLIT, "sequence '%s': chunk %u: %.3e from the full pass (rc %d)", name,
                  chunks[c], d, rc);
        }
    }
out:
    ms_free(golden);
    ms_free(logits);
    ms_free(chunked);
    ms_free(lp);
    return max_d;
}

static void check_greedy(ms_session *s, uint32_t vocab, const ms_json *greedy) {
    uint32_t prompt[MAX_SEQ], want[256], got[256];
    uint32_t np = json_tokens(ms_json_get(greedy, "prompt"), prompt, MAX_SEQ);
    uint32_t nc = json_tokens(ms_json_get(greedy, "continuation"), want, 256);
    CHECK(np > 0 && nc > 0, "greedy: malformed golden entry");
    float *logits = ms_malloc((size_t)np * vocab * 4);
    if (!logits || !np || !nc) {
        ms_free(logits);
        return;
    }
    int rc = feed_all(s, prompt, np, np, logits, vocab);
    uint32_t next = argmax(logits + (size_t)(np - 1) * vocab, vocab);
    for (uint32_t i = 0; i < nc && !rc; i++) {
        got[i] = next;
        rc = ms_session_feed(s, &got[i], 1, logits);
        next = argmax(logits, vocab);
    }
    int same = rc == 0 && memcmp(got, want, nc * sizeof *got) == 0;
    printf("  greedy %u tokens after a %u-token prompt: %s\n", nc, np, same ? "identical" : "DIFFERS");
    CHECK(same, "greedy continuation differs (rc %d)", rc);
    ms_free(logits);
}

/* Vulkan only: both fake-quant steps off on both backends; every sequence within TOL_LOGPROB. */
static void check_continuous(const char *dir, uint32_t vocab, const ms_json *seqs) {
    ms_engine *cpu = open_engine(dir, MS_BACKEND_CPU, true, true);
    ms_engine *gpu = open_engine(dir, MS_BACKEND_VULKAN, true, true);
    ms_session *sc = NULL, *sg = NULL;
    if (cpu) CHECK(ms_session_create(cpu, MAX_SEQ, &sc) == 0, "session");
    if (gpu) CHECK(ms_session_create(gpu, MAX_SEQ, &sg) == 0, "session");
    static uint32_t tokens[MAX_SEQ];
    for (uint32_t i = 0; sc && sg && i < ms_json_len(seqs); i++) {
        const ms_json *seq = ms_json_at(seqs, i);
        const char *name = "?";
        ms_json_get_str(seq, "name", &name, NULL, 0);
        uint32_t n = json_tokens(ms_json_get(seq, "tokens"), tokens, MAX_SEQ);
        float *a = ms_malloc((size_t)n * vocab * 4), *b = ms_malloc((size_t)n * vocab * 4);
        double *la = ms_malloc((size_t)vocab * sizeof *la), *lb = ms_malloc((size_t)vocab * sizeof *lb);
        int rc = n && a && b && la && lb ? 0 : -MS_E_NOMEM;
        if (!rc) rc = feed_all(sc, tokens, n, n, a, vocab);
        if (!rc) rc = feed_all(sg, tokens, n, n, b, vocab);
        uint32_t worst = 0;
        double d = rc ? NAN : max_dlogprob(b, a, n, vocab, la, lb, &worst);
        printf("  %-6s without fake-quant, vulkan against cpu: max |dlogprob| %.2e at position %u "
               "(tol %.0e)\n", name, d, worst, TOL_LOGPROB);
        CHECK(d <= TOL_LOGPROB, "sequence '%s': continuous path %.3e from the CPU reference (rc %d)",
              name, d, rc);
        ms_free(a);
        ms_free(b);
        ms_free(la);
        ms_free(lb);
    }
    ms_session_free(sc);
    ms_session_free(sg);
    ms_engine_close(cpu);
    ms_engine_close(gpu);
}

/* A session too short to ever hold more compressed blocks than the indexer selects (max_tokens
 * <= 4 * index_topk) may skip the indexer (the Vulkan backend does: its selection is then every
 * block); its logits must equal those of a long session bit for bit. */
static void check_short_session(ms_engine *e, ms_session *s_long, const ms_json *seq) {
    static uint32_t tokens[MAX_SEQ];
    const ms_v4_config *c = ms_engine_config(e);
    uint32_t n = json_tokens(ms_json_get(seq, "tokens"), tokens, MAX_SEQ), cap = 4 * c->index_topk;
    if (n > cap) n = cap;
    ms_session *s = NULL;
    float *a = ms_malloc((size_t)n * c->vocab_size * 4), *b = ms_malloc((size_t)n * c->vocab_size * 4);
    int rc = a && b && n ? ms_session_create(e, n, &s) : -MS_E_NOMEM;
    ms_session_reset(s_long);
    if (!rc) rc = ms_session_feed(s, tokens, n, a);
    if (!rc) rc = ms_session_feed(s_long, tokens, n, b);
    CHECK(rc == 0, "short session of %u tokens: %s", n, ms_strerror(rc));
    if (!rc) {
        bool same = memcmp(a, b, (size_t)n * c->vocab_size * 4) == 0;
        printf("  session of %u tokens (<= 4 x index_topk) vs one of %u: %s\n", n, MAX_SEQ,
               same ? "identical logits" : "DIFFERENT logits");
        CHECK(same, "a session of %u tokens differs from a long one", n);
    }
    ms_session_reset(s_long);
    ms_session_free(s);
    ms_free(a);
    ms_free(b);
}

static void check_fixture(const char *root, const char *name) {
    char dir[768], path[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    printf("fixture %s (%s)\n", name, ms_backend_name(g_backend));
    ms_engine *e = open_engine(dir, g_backend, false, false);
    ms_session *s = NULL;
    ms_json_doc *doc = NULL;
    char *json = NULL;
    int rc = e ? ms_session_create(e, MAX_SEQ, &s) : -MS_E_INVALID_ARG;
    CHECK(rc == 0, "session: %s", ms_strerror(rc));
    uint32_t vocab = e ? ms_engine_config(e)->vocab_size : 0;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/golden.json", dir);
    if (!rc) json = read_file(path, &len);
    ms_json_error jerr;
    if (!rc) rc = json ? ms_json_parse(json, len, NULL, &doc, &jerr) : -MS_E_IO;
    CHECK(rc == 0, "%s: %s", path, json ? jerr.msg : "cannot read");
    if (!rc) {
        const ms_json *top = ms_json_root(doc), *seqs = ms_json_get(top, "sequences");
        CHECK(ms_json_len(seqs) > 0, "%s: no sequences", path);
        for (uint32_t i = 0; i < ms_json_len(seqs); i++)
            check_sequence(dir, s, vocab, ms_json_at(seqs, i), 0);
        check_greedy(s, vocab, ms_json_get(top, "greedy"));
        uint32_t longest = 0;
        for (uint32_t i = 1; i < ms_json_len(seqs); i++)
            if (ms_json_len(ms_json_get(ms_json_at(seqs, i), "tokens")) >
                ms_json_len(ms_json_get(ms_json_at(seqs, longest), "tokens")))
                longest = i;
        check_short_session(e, s, ms_json_at(seqs, longest));
        for (int off = 0; off < 2; off++) {
            ms_engine *ea = open_engine(dir, g_backend, off == 0, off != 0);
            ms_session *sa = NULL;
            if (ea && ms_session_create(ea, MAX_SEQ, &sa) == 0) {
                double d = check_sequence(dir, sa, vocab, ms_json_at(seqs, 0), 1);
                printf("  without the %s fake-quant: max |dlogprob| %.2e (must exceed %.0e)\n",
                       off == 0 ? "KV e4m3" : "indexer FP4", d, TOL_LOGPROB);
                CHECK(d > (g_backend == MS_BACKEND_CPU ? TOL_LOGPROB : TOL_LOGPROB_VK_FQ),
                      "switching off a fake-quant step went unnoticed");
            }
            ms_session_free(sa);
            ms_engine_close(ea);
        }
        if (g_backend == MS_BACKEND_VULKAN) check_continuous(dir, vocab, seqs);
    }
    ms_json_free(doc);
    ms_free(json);
    ms_session_free(s);
    ms_engine_close(e);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc &&
            ms_backend_from_name(argv[i + 1], &g_backend) == 0 && g_backend != MS_BACKEND_AUTO)
            i++;
        else if (argv[i][0] != '-' && !only)
            only = argv[i];
        else
            argc = 0; /* bad usage */
    }
    if (argc < 2) {
        fprintf(stderr, "usage: test_golden FIXTURES_DIR [--backend cpu|vulkan] [FIXTURE_NAME]\n");
        return 2;
    }
    if (g_backend == MS_BACKEND_VULKAN) {
        ms_vk_caps *caps = NULL;
        uint32_t n = 0;
        char err[256];
        int rc = ms_vk_enumerate(&caps, &n, err, sizeof err);
        ms_free(caps);
        if (rc || n == 0) {
            printf("SKIP: no Vulkan device (%s)\n", rc ? err : "none found");
            return 77;
        }
    }
    int n_fixtures = 0;
    if (only) {
        check_fixture(argv[1], only);
        n_fixtures = 1;
    } else {
        DIR *d = opendir(argv[1]);
        if (!d) {
            printf("FAIL: cannot open fixture directory %s\n", argv[1]);
            return 1;
        }
        char *names[64];
        struct dirent *e;
        while ((e = readdir(d)) && n_fixtures < 64) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s/golden.json", argv[1], e->d_name);
            FILE *f = e->d_name[0] != '.' ? fopen(p, "rb") : NULL;
            if (f) {
                fclose(f);
                names[n_fixtures++] = ms_strdup(e->d_name);
            }
        }
        closedir(d);
        qsort(names, (size_t)n_fixtures, sizeof *names, cmp_str);
        for (int i = 0; i < n_fixtures; i++) {
            check_fixture(argv[1], names[i]);
            ms_free(names[i]);
        }
    }
    if (n_fixtures == 0) {
        printf("FAIL: no fixture (directory with golden.json) under %s\n", argv[1]);
        g_fail++;
    }
    printf("%s: %d fixture(s), %d failure(s)\n", g_fail ? "FAIL" : "PASS", n_fixtures, g_fail);
    return g_fail ? 1 : 0;
}
