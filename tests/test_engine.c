/* test_engine — engine/engine.h on the CPU reference backend, over a golden fixture checkpoint:
 * feeding in any split (and with or without per-position logits) gives bit-identical logits;
 * top-K agrees with the logits; truncate and reset equal feeding the prefix afresh; bad input is
 * refused without changing the session. argv[1]: tests/fixtures/v4/flash_like. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/engine.h"
#include "tests/check.h"

#define N_TOK 41u

static uint32_t g_tokens[N_TOK];

static bool same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * 4) == 0; }

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("usage: test_engine FIXTURE_DIR\n");
        return 1;
    }
    char err[4096];
    ms_engine_opts o = ms_engine_opts_default();
    o.backend = MS_BACKEND_CPU;
    ms_engine *e = NULL;
    int rc = ms_engine_open(argv[1], &o, &e, err, sizeof err);
    CHECK(rc == 0, "open %s: %s", argv[1], err);
    if (rc) return 1;
    CHECK(ms_engine_backend(e) == MS_BACKEND_CPU, "backend");
    const ms_v4_config *c = ms_engine_config(e);
    uint32_t V = c->vocab_size;
    for (uint32_t i = 0; i < N_TOK; i++) g_tokens[i] = (i * 2654435761u + 17u) % V;

    float *all = ms_malloc((size_t)N_TOK * V * 4), *row = ms_malloc((size_t)V * 4);
    float *tmp = ms_malloc((size_t)N_TOK * V * 4);
    ms_session *s = NULL, *t = NULL;
    CHECK(ms_session_create(e, N_TOK, &s) == 0 && ms_session_create(e, N_TOK, &t) == 0, "create");
    CHECK(ms_session_logits(s, row) == -MS_E_RANGE, "logits before any token");

    /* reference: one call, every row */
    CHECK(ms_session_feed(s, g_tokens, N_TOK, all) == 0, "feed all");
    CHECK(ms_session_pos(s) == N_TOK, "pos %u", ms_session_pos(s));
    CHECK(ms_session_logits(s, row) == 0 && same(row, all + (size_t)(N_TOK - 1) * V, V),
          "last logits == last row");

    /* splits 1, 3, 7, 16, 17 without rows: the last logits are identical */
    const uint32_t splits[] = {1, 3, 7, 16, 17};
    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
        ms_session_reset(t);
        for (uint32_t p = 0; p < N_TOK; p += splits[k]) {
            uint32_t n = N_TOK - p < splits[k] ? N_TOK - p : splits[k];
            CHECK(ms_session_feed(t, g_tokens + p, n, NULL) == 0, "feed split %u at %u", splits[k], p);
            CHECK(ms_session_logits(t, row) == 0 && same(row, all + (size_t)(p + n - 1) * V, V),
                  "split %u: logits after position %u differ", splits[k], p + n - 1);
        }
    }

    /* top-K: the ranking of the logits, ties by lower id */
    uint32_t ids[8];
    float tl[8];
    CHECK(ms_session_top_k(s, 8, ids, tl) == 0, "top_k");
    const float *last = all + (size_t)(N_TOK - 1) * V;
    for (uint32_t i = 0; i < 8; i++) {
        CHECK(tl[i] == last[ids[i]], "top_k logit %u", i);
        uint32_t better = 0;
        for (uint32_t v = 0; v < V; v++)
            better += last[v] > last[ids[i]] || (last[v] == last[ids[i]] && v < ids[i]);
        CHECK(better == i, "top_k[%u] = %u has %u better ids", i, ids[i], better);
    }
    CHECK(ms_session_top_k(s, V + 1, ids, NULL) == -MS_E_INVALID_ARG, "k > vocab");

    /* truncate to 20, feed the rest: the same as the full run; truncate to 0 = reset */
    CHECK(ms_session_truncate(s, 20) == 0 && ms_session_pos(s) == 20, "truncate 20");
    CHECK(ms_session_logits(s, row) == 0 && same(row, all + 19 * (size_t)V, V),
          "after truncate: the logits of position 19");
    CHECK(ms_session_feed(s, g_tokens + 20, N_TOK - 20, tmp) == 0, "feed after truncate");
    CHECK(same(tmp, all + 20 * (size_t)V, (size_t)(N_TOK - 20) * V), "rows after truncate");
    CHECK(ms_session_truncate(s, N_TOK + 1) == -MS_E_INVALID_ARG, "truncate beyond pos");
    CHECK(ms_session_truncate(s, 0) == 0 && ms_session_pos(s) == 0, "truncate 0");

    /* refusals leave the session as it was */
    CHECK(ms_session_feed(s, g_tokens, 5, NULL) == 0, "feed 5");
    uint32_t bad = V;
    CHECK(ms_session_feed(s, &bad, 1, NULL) == -MS_E_INVALID_ARG && ms_session_pos(s) == 5,
          "token >= vocab");
    CHECK(ms_session_feed(s, g_tokens, N_TOK, NULL) == -MS_E_RANGE && ms_session_pos(s) == 5,
          "beyond max_tokens");
    CHECK(ms_session_feed(s, g_tokens, 0, NULL) == -MS_E_INVALID_ARG, "n = 0");
    CHECK(ms_session_logits(s, row) == 0 && same(row, all + 4 * (size_t)V, V), "still position 4");

    /* no fake quant: a different model output (the switch reaches the backend) */
    ms_engine_opts nf = o;
    nf.no_fq_kv = nf.no_fq_index = true;
    ms_engine *e2 = NULL;
    ms_session *s2 = NULL;
    CHECK(ms_engine_open(argv[1], &nf, &e2, err, sizeof err) == 0, "open no-fake-quant: %s", err);
    if (e2 && ms_session_create(e2, N_TOK, &s2) == 0) {
        CHECK(ms_session_feed(s2, g_tokens, N_TOK, NULL) == 0, "feed no-fake-quant");
        CHECK(ms_session_logits(s2, row) == 0 && !same(row, last, V),
              "--no-fake-quant changed nothing");
    }
    ms_session_free(s2);
    ms_engine_close(e2);

    /* open errors */
    ms_engine *bad_e = NULL;
    ms_engine_opts vk = ms_engine_opts_default();
    vk.backend = MS_BACKEND_VULKAN;
    vk.vk.device_index = 999; /* no such device: a clear error, nothing opened */
    rc = ms_engine_open(argv[1], &vk, &bad_e, err, sizeof err);
    CHECK(rc < 0 && !bad_e && strstr(err, "Vulkan device 999"), "vulkan: %d %s", rc, err);
    rc = ms_engine_open("/nonexistent/model", &o, &bad_e, err, sizeof err);
    CHECK(rc < 0 && !bad_e && strstr(err, "No such file"), "missing dir: %d %s", rc, err);
    ms_backend b;
    CHECK(ms_backend_from_name("cpu", &b) == 0 && b == MS_BACKEND_CPU &&
              ms_backend_from_name("gpu", &b) == -MS_E_NOT_FOUND,
          "backend names");

    ms_session_free(s);
    ms_session_free(t);
    ms_engine_close(e);
    ms_free(all);
    ms_free(row);
    ms_free(tmp);
    if (g_fail) {
        printf("%d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_engine: ok\n");
    return 0;
}
