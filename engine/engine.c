/* engine/engine.c — opening a model, sessions, token history and truncation, top-K (engine.h).
 * Backend-neutral: the backends (engine/backend_*.c) bind weights and run forward passes. */
#include "engine/engine.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/file.h"
#include "common/status.h"
#include "engine/engine_internal.h"
#include "engine/vk/vk.h" /* the device probe for backend auto */

const char *ms_backend_name(ms_backend b) {
    switch (b) {
    case MS_BACKEND_AUTO: return "auto";
    case MS_BACKEND_CPU: return "cpu";
    case MS_BACKEND_VULKAN: return "vulkan";
    }
    return "?";
}

int ms_backend_from_name(const char *name, ms_backend *out) {
    static const ms_backend all[] = {MS_BACKEND_AUTO, MS_BACKEND_CPU, MS_BACKEND_VULKAN};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ms_backend_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    return -MS_E_NOT_FOUND;
}

ms_engine_opts ms_engine_opts_default(void) {
    ms_engine_opts o = {.backend = MS_BACKEND_AUTO, .vk = ms_vk_opts_default()};
    return o;
}

/* AUTO: Vulkan when the device rule (ms_vk_choose_device) picks a GPU, else the CPU reference
 * (a CPU Vulkan implementation such as lavapipe runs the same model, slower than the reference's
 * own loops; ask for it with backend vulkan). */
static const ms_backend_ops *pick_backend(const ms_engine_opts *o) {
    if (o->backend == MS_BACKEND_CPU) return &ms_backend_cpu_ops;
    if (o->backend == MS_BACKEND_VULKAN) return &ms_backend_vk_ops;
    ms_vk_caps *caps = NULL;
    uint32_t n = 0;
    char err[256];
    const ms_backend_ops *ops = &ms_backend_cpu_ops;
    if (ms_vk_enumerate(&caps, &n, err, sizeof err) == 0) {
        int i = ms_vk_choose_device(caps, n, o->vk.device_index);
        if (i >= 0 && caps[i].type != VK_PHYSICAL_DEVICE_TYPE_CPU) ops = &ms_backend_vk_ops;
    }
    ms_free(caps);
    return ops;
}

int ms_engine_open(const char *path, const ms_engine_opts *opts, ms_engine **out, char *err,
                   size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!path || !out) return ms_errf(err, err_len, -MS_E_INVALID_ARG, "invalid argument");
    *out = NULL;
    ms_engine_opts o = opts ? *opts : ms_engine_opts_default();
    const ms_backend_ops *ops = pick_backend(&o);
    int rc;
    struct stat sb;
    char sp[200];
    if (stat(path, &sb) != 0) {
        rc = -errno;
        return ms_errf(err, err_len, rc, "model directory '%s': %s",
                       ms_file_short_path(path, sp, sizeof sp), ms_strerror(rc));
    }
    if (!S_ISDIR(sb.st_mode))
        return ms_errf(err, err_len, -MS_E_FORMAT, "model directory '%s' is %s, not a directory",
                       ms_file_short_path(path, sp, sizeof sp), ms_file_kind(sb.st_mode));
    ms_engine *e = ms_calloc(1, sizeof *e);
    if (!e) return ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
    e->opts = o;
    e->ops = ops;
    if ((rc = ms_v4_config_load(path, &e->cfg, err, err_len)) != 0) goto fail;
    if ((rc = ms_st_open(path, &e->st, err, err_len)) != 0) goto fail;
    if ((rc = ms_v4_check_tensors(&e->cfg, e->st, err, err_len)) != 0) {
        /* keep the problem list, say what it is */
        char head[] = "checkpoint does not match config.json:\n";
        size_t hl = strlen(head), el = strlen(err);
        if (err_len > hl + 1) {
            if (el + hl + 1 > err_len) el = err_len - hl - 1;
            memmove(err + hl, err, el + 1);
            err[hl + el] = '\0';
            memcpy(err, head, hl);
        }
        goto fail;
    }
    if ((rc = ops->model_open(e, err, err_len)) != 0) {
        if (err && err_len && !err[0]) snprintf(err, err_len, "%s", ms_strerror(rc));
        goto fail;
    }
    *out = e;
    return 0;
fail:
    ms_st_close(e->st);
    ms_free(e);
    return rc;
}

void ms_engine_close(ms_engine *e) {
    if (!e) return;
    if (e->backend) e->ops->model_close(e);
    ms_st_close(e->st);
    ms_free(e);
}

const ms_v4_config *ms_engine_config(const ms_engine *e) { return &e->cfg; }

ms_backend ms_engine_backend(const ms_engine *e) { return e->ops->kind; }

int ms_session_create(ms_engine *e, uint32_t max_tokens, ms_session **out) {
    if (!e || !out || max_tokens == 0) return -MS_E_INVALID_ARG;
    *out = NULL;
    ms_session *s = ms_calloc(1, sizeof *s);
    if (!s) return -MS_E_NOMEM;
    s->e = e;
    s->max_tokens = max_tokens;
    size_t vocab = e->cfg.vocab_size;
    s->tokens = ms_malloc((size_t)max_tokens * sizeof *s->tokens);
    s->last = ms_malloc(vocab * sizeof(float));
    s->scratch = ms_malloc(MS_ENGINE_CHUNK * vocab * sizeof(float));
    int rc = s->tokens && s->last && s->scratch ? e->ops->session_create(s) : -MS_E_NOMEM;
    if (rc) {
        ms_free(s->tokens);
        ms_free(s->last);
        ms_free(s->scratch);
        ms_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void ms_session_free(ms_session *s) {
    if (!s) return;
    if (s->backend) s->e->ops->session_free(s);
    ms_free(s->tokens);
    ms_free(s->last);
    ms_free(s->scratch);
    ms_free(s);
}

uint32_t ms_session_pos(const ms_session *s) { return s->pos; }

uint32_t ms_session_max_tokens(const ms_session *s) { return s->max_tokens; }

/* Feeds tokens without the caller wanting every row: chunks into scratch, last row kept. */
static int feed_chunks(ms_session *s, const uint32_t *tokens, uint32_t n) {
    size_t vocab = s->e->cfg.vocab_size;
    if (s->e->ops->forward_last) {
        int rc = s->e->ops->forward_last(s, tokens, n, s->last);
        if (rc) return rc;
        memcpy(s->tokens + s->pos, tokens, n * sizeof *tokens);
        s->pos += n;
        return 0;
    }
    for (uint32_t t0 = 0; t0 < n; t0 += MS_ENGINE_CHUNK) {
        uint32_t k = n - t0 < MS_ENGINE_CHUNK ? n - t0 : MS_ENGINE_CHUNK;
        int rc = s->e->ops->forward(s, tokens + t0, k, s->scratch);
        if (rc) return rc;
        memcpy(s->tokens + s->pos, tokens + t0, k * sizeof *tokens);
        s->pos += k;
        memcpy(s->last, s->scratch + (k - 1) * vocab, vocab * sizeof(float));
    }
    return 0;
}

int ms_session_feed(ms_session *s, const uint32_t *tokens, uint32_t n, float *logits) {
    if (!s || !tokens || n == 0) return -MS_E_INVALID_ARG;
    if (s->tap && n > 1) return -MS_E_INVALID_ARG; /* engine.h: a tapped session takes one token a call */
    const ms_v4_config *c = &s->e->cfg;
    if ((uint64_t)s->pos + n > s->max_tokens) return -MS_E_RANGE;
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] >= c->vocab_size) return -MS_E_INVALID_ARG;
    if (!logits) return feed_chunks(s, tokens, n);
    int rc = s->e->ops->forward(s, tokens, n, logits);
    if (rc) return rc;
    memcpy(s->tokens + s->pos, tokens, n * sizeof *tokens);
    s->pos += n;
    memcpy(s->last, logits + (size_t)(n - 1) * c->vocab_size, c->vocab_size * sizeof(float));
    return 0;
}

int ms_session_logits(const ms_session *s, float *out) {
    if (!s || !out) return -MS_E_INVALID_ARG;
    if (s->pos == 0) return -MS_E_RANGE;
    memcpy(out, s->last, s->e->cfg.vocab_size * sizeof(float));
    return 0;
}

/* v ranks above w: the higher logit, equal logits by the lower id; NaN ranks below everything. */
static bool ranks_above(const float *l, uint32_t v, uint32_t w) {
    if (isnan(l[w])) return !isnan(l[v]) || v < w;
    if (isnan(l[v])) return false;
    return l[v] > l[w] || (l[v] == l[w] && v < w);
}

static void sift_down(const float *l, uint32_t *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t worst = i, a = 2 * i + 1, b = a + 1;
        if (a < n && ranks_above(l, h[worst], h[a])) worst = a;
        if (b < n && ranks_above(l, h[worst], h[b])) worst = b;
        if (worst == i) return;
        uint32_t t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

void ms_logits_top_k(const float *l, uint32_t vocab, uint32_t k, uint32_t *ids) {
    /* a heap of the k best so far, the weakest at the root */
    for (uint32_t v = 0; v < k; v++) ids[v] = v;
    for (uint32_t i = k / 2; i-- > 0;) sift_down(l, ids, k, i);
    for (uint32_t v = k; v < vocab; v++)
        if (ranks_above(l, v, ids[0])) {
            ids[0] = v;
            sift_down(l, ids, k, 0);
        }
    for (uint32_t n = k; n > 1; n--) { /* heap sort: the weakest to the end */
        uint32_t t = ids[0];
        ids[0] = ids[n - 1];
        ids[n - 1] = t;
        sift_down(l, ids, n - 1, 0);
    }
}

int ms_session_top_k(const ms_session *s, uint32_t k, uint32_t *ids, float *logits) {
    if (!s || !ids || k == 0 || k > s->e->cfg.vocab_size) return -MS_E_INVALID_ARG;
    if (s->pos == 0) return -MS_E_RANGE;
    ms_logits_top_k(s->last, s->e->cfg.vocab_size, k, ids);
    if (logits)
        for (uint32_t i = 0; i < k; i++) logits[i] = s->last[ids[i]];
    return 0;
}

void ms_session_reset(ms_session *s) {
    if (!s) return;
    s->e->ops->reset(s);
    s->pos = 0;
}

int ms_session_truncate(ms_session *s, uint32_t n) {
    if (!s || n > s->pos) return -MS_E_INVALID_ARG;
    if (n == s->pos) return 0;
    /* The KV state (window ring, compressor pools, indexer keys) cannot be rolled back in place:
     * replay the kept prefix. Chunking does not change results (bit for bit on the CPU reference,
     * within F32 rounding on Vulkan: ms_session_feed), so this equals having fed only the prefix.
     * A backend with cheap rollback can do better later. */
    uint32_t keep = n;
    s->e->ops->reset(s);
    s->pos = 0;
    if (keep == 0) return 0;
    uint32_t *prefix = ms_malloc((size_t)keep * sizeof *prefix);
    if (!prefix) return -MS_E_NOMEM;
    memcpy(prefix, s->tokens, (size_t)keep * sizeof *prefix);
    /* the replay is not a step of the caller's: untapped (stopping a tap cannot fail) */
    ms_tap_fn tap = s->tap;
    void *tap_ctx = s->tap_ctx;
    if (tap) {
        s->e->ops->set_tap(s, NULL, NULL);
        s->tap = NULL;
    }
    int rc = feed_chunks(s, prefix, keep);
    if (tap) {
        int rt = s->e->ops->set_tap(s, tap, tap_ctx);
        if (!rt) s->tap = tap, s->tap_ctx = tap_ctx;
        if (!rc) rc = rt;
    }
    ms_free(prefix);
    return rc;
}

int ms_session_nonfinite(const ms_session *s, uint32_t *pos, uint32_t *layer, const char **stage) {
    if (!s || !pos || !layer || !stage) return -MS_E_INVALID_ARG;
    return s->e->ops->nonfinite(s, pos, layer, stage);
}

int ms_engine_get_info(ms_engine *e, bool measure_bandwidth, ms_engine_info *out) {
    if (!e || !out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->backend = e->ops->kind;
    ms_v4_weight_bytes(&e->cfg, &out->weight_bytes, &out->weight_bytes_per_token);
    return e->ops->info(e, measure_bandwidth, out);
}

int ms_session_set_profiling(ms_session *s, bool on) {
    if (!s) return -MS_E_INVALID_ARG;
    return s->e->ops->set_profiling ? s->e->ops->set_profiling(s, on) : -MS_E_UNSUPPORTED;
}

int ms_session_get_profile(const ms_session *s, ms_profile *out) {
    if (!s || !out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    return s->e->ops->get_profile ? s->e->ops->get_profile(s, out) : -MS_E_UNSUPPORTED;
}

int ms_session_set_tap(ms_session *s, ms_tap_fn fn, void *ctx) {
    if (!s) return -MS_E_INVALID_ARG;
    if (!s->e->ops->set_tap) return -MS_E_UNSUPPORTED;
    int rc = s->e->ops->set_tap(s, fn, ctx);
    if (rc) return rc;
    s->tap = fn;
    s->tap_ctx = fn ? ctx : NULL;
    return 0;
}

void ms_session_get_stats(const ms_session *s, ms_session_stats *out) {
    memset(out, 0, sizeof *out);
    if (s) s->e->ops->stats(s, out);
}
