/* engine/backend_cpu.c — the CPU reference (engine/ref) behind engine.h. */
#include <stdio.h>

#include "common/status.h"
#include "engine/engine_internal.h"
#include "engine/ref/ref.h"
#include "engine/ref/v4_internal.h" /* ms_ref_v4_set_fake_quant */

static const ms_st_tensor *st_get(void *ctx, const char *name) { return ms_st_find(ctx, name); }

static int cpu_model_open(ms_engine *e, char *err, size_t err_len) {
    ms_ref_model *m = NULL;
    int rc = ms_ref_model_create(&e->cfg, st_get, e->st, &m, err, err_len);
    if (rc) return rc;
    ms_ref_v4_set_fake_quant(m, !e->opts.no_fq_kv, !e->opts.no_fq_index);
    e->backend = m;
    return 0;
}

static void cpu_model_close(ms_engine *e) { ms_ref_model_free(e->backend); }

static int cpu_session_create(ms_session *s) {
    ms_ref_session *rs = NULL;
    int rc = ms_ref_session_create(s->e->backend, s->max_tokens, &rs);
    if (rc) return rc;
    s->backend = rs;
    return 0;
}

static void cpu_session_free(ms_session *s) { ms_ref_session_free(s->backend); }

static int cpu_forward(ms_session *s, const uint32_t *tokens, uint32_t n, float *logits) {
    return ms_ref_session_forward(s->backend, tokens, n, logits);
}

static void cpu_reset(ms_session *s) { ms_ref_session_reset(s->backend); }

static int cpu_nonfinite(const ms_session *s, uint32_t *pos, uint32_t *layer, const char **stage) {
    ms_ref_nonfinite nf;
    int rc = ms_ref_session_nonfinite(s->backend, &nf);
    if (rc) return rc;
    *pos = nf.pos;
    *layer = nf.layer;
    *stage = nf.stage;
    return 0;
}

static int cpu_info(ms_engine *e, bool measure, ms_engine_info *out) {
    (void)e, (void)measure;
    snprintf(out->device, sizeof out->device, "CPU reference (one thread, double accumulation)");
    return 0;
}

static void cpu_stats(const ms_session *s, ms_session_stats *out) {
    out->kv_bytes = ms_ref_session_kv_bytes(s->backend);
}

/* The reference's tap to engine.h's: the session's fn and ctx (set after cpu_set_tap returns). */
static void cpu_tap(void *ctx, uint32_t pos, uint32_t layer, const char *stage, bool u32,
                    const void *data, uint64_t count) {
    ms_session *s = ctx;
    s->tap(s->tap_ctx, pos, layer, stage, u32 ? MS_TAP_U32 : MS_TAP_F32, data, count);
}

static int cpu_set_tap(ms_session *s, ms_tap_fn fn, void *ctx) {
    (void)ctx;
    ms_ref_session_set_tap(s->backend, fn ? cpu_tap : NULL, s);
    return 0;
}

const ms_backend_ops ms_backend_cpu_ops = {
    .kind = MS_BACKEND_CPU,
    .model_open = cpu_model_open,
    .model_close = cpu_model_close,
    .session_create = cpu_session_create,
    .session_free = cpu_session_free,
    .forward = cpu_forward,
    .reset = cpu_reset,
    .nonfinite = cpu_nonfinite,
    .info = cpu_info,
    .stats = cpu_stats,
    .set_tap = cpu_set_tap,
};
