/* DeepSeek-V4 reference: binding the checkpoint's tensors (with dtype and shape checks, V4_SPEC
 * §2.2) and the MoE feed-forward (§3.10). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/ref/v4_internal.h"
#include "storage/safetensors.h"

/* ---- binding ---- */

typedef struct binder {
    ms_ref_tensor_fn get;
    void *ctx;
    char *err;
    size_t err_len;
    int rc; /* first failure; later binds are skipped */
} binder;

static void fail(binder *b, int rc, const char *fmt, ...) MS_PRINTF(3, 4);

static void fail(binder *b, int rc, const char *fmt, ...) {
    if (b->rc) return;
    b->rc = rc;
    if (b->err && b->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->err_len, fmt, ap);
        va_end(ap);
    }
}

/* Local copies of the dtype facts so the reference does not depend on the reader's tables. */
static const char *dtype_name(ms_st_dtype dt) {
    switch (dt) {
    case MS_ST_BF16: return "BF16";
    case MS_ST_F16: return "F16";
    case MS_ST_F32: return "F32";
    case MS_ST_F64: return "F64";
    case MS_ST_F8_E4M3: return "F8_E4M3";
    case MS_ST_F8_E8M0: return "F8_E8M0";
    case MS_ST_I8: return "I8";
    case MS_ST_U8: return "U8";
    case MS_ST_I32: return "I32";
    case MS_ST_I64: return "I64";
    case MS_ST_BOOL: return "BOOL";
    case MS_ST_DTYPE_COUNT: break;
    }
    return "?";
}

static uint64_t dtype_size(ms_st_dtype dt) {
    switch (dt) {
    case MS_ST_F64:
    case MS_ST_I64: return 8;
    case MS_ST_F32:
    case MS_ST_I32: return 4;
    case MS_ST_BF16:
    case MS_ST_F16: return 2;
    case MS_ST_F8_E4M3:
    case MS_ST_F8_E8M0:
    case MS_ST_I8:
    case MS_ST_U8:
    case MS_ST_BOOL: return 1;
    case MS_ST_DTYPE_COUNT: break;
    }
    return 0;
}

static void shape_str(char *buf, size_t len, uint32_t n_dims, const uint64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (uint32_t i = 0; i < n_dims && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* The tensor called name with dtype dt and shape [d0] (d1 == 0) or [d0, d1]; NULL on failure. */
static const ms_st_tensor *need(binder *b, const char *name, ms_st_dtype dt, uint64_t d0,
                                uint64_t d1) {
    if (b->rc) return NULL;
    const ms_st_tensor *t = b->get(b->ctx, name);
    if (!t) {
        fail(b, -MS_E_FORMAT, "tensor %s is missing", name);
        return NULL;
    }
    uint64_t want[2] = {d0, d1};
    uint32_t want_dims = d1 ? 2 : 1;
    if (t->dtype != dt) {
        fail(b, -MS_E_FORMAT, "tensor %s: dtype %s, expected %s", name, dtype_name(t->dtype),
             dtype_name(dt));
        return NULL;
    }
    bool ok = t->n_dims == want_dims && t->data != NULL;
    for (uint32_t i = 0; ok && i < want_dims; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[160], exp[64];
        shape_str(got, sizeof got, t->n_dims < MS_ST_MAX_DIMS ? t->n_dims : MS_ST_MAX_DIMS, t->shape);
        shape_str(exp, sizeof exp, want_dims, want);
        fail(b, -MS_E_FORMAT, "tensor %s: shape %s, expected %s%s", name, got, exp,
             t->data ? "" : " (no data)");
        return NULL;
    }
    if (t->n_bytes != d0 * (d1 ? d1 : 1) * dtype_size(dt)) {
        fail(b, -MS_E_FORMAT, "tensor %s: %llu data bytes, expected %llu", name,
             (unsigned long long)t->n_bytes, (unsigned long long)(d0 * (d1 ? d1 : 1) * dtype_size(dt)));
        return NULL;
    }
    return t;
}

static const void *need_data(binder *b, const char *name, ms_st_dtype dt, uint64_t d0, uint64_t d1) {
    const ms_st_tensor *t = need(b, name, dt, d0, d1);
    return t ? t->data : NULL;
}

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

static uint64_t cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* base.weight F8_E4M3 [m][k] + base.scale F8_E8M0 [ceil(m/128)][ceil(k/128)]. */
static void bind_fp8(binder *b, ms_weight_view *w, const char *base, uint32_t m, uint32_t k) {
    char n[256];
    memset(w, 0, sizeof *w);
    w->enc = MS_WENC_FP8;
    w->m = m;
    w->k = k;
    w->data = need_data(b, NAME(n, "%s.weight", base), MS_ST_F8_E4M3, m, k);
    w->scale = need_data(b, NAME(n, "%s.scale", base), MS_ST_F8_E8M0, cdiv(m, 128), cdiv(k, 128));
}

/* A routed expert matrix [m][k]: I8 = packed FP4 [m][k/2] + E8M0 [m][k/32], or FP8 as above. */
static void bind_expert(binder *b, ms_weight_view *w, const char *base, uint32_t m, uint32_t k) {
    char n[256];
    if (b->rc) return;
    const ms_st_tensor *t = b->get(b->ctx, NAME(n, "%s.weight", base));
    if (t && t->dtype == MS_ST_F8_E4M3) {
        bind_fp8(b, w, base, m, k);
        return;
    }
    if (k % 32) {
        fail(b, -MS_E_FORMAT, "tensor %s: FP4 needs an input width divisible by 32, got %u", n, k);
        return;
    }
    memset(w, 0, sizeof *w);
    w->enc = MS_WENC_FP4;
    w->m = m;
    w->k = k;
    w->data = need_data(b, n, MS_ST_I8, m, k / 2);
    w->scale = need_data(b, NAME(n, "%s.scale", base), MS_ST_F8_E8M0, m, k / 32);
}

static void bind_bf16(binder *b, ms_weight_view *w, const char *name, uint32_t m, uint32_t k) {
    memset(w, 0, sizeof *w);
    w->enc = MS_WENC_BF16;
    w->m = m;
    w->k = k;
    w->data = need_data(b, name, MS_ST_BF16, m, k);
}

static void bind_compressor(binder *b, v4_compressor *c, const char *base, uint32_t ratio,
                            uint32_t d, uint32_t dim) {
    char n[256];
    c->ratio = ratio;
    c->coff = ratio == 4 ? 2 : 1; /* overlapping blocks only for ratio 4 */
    c->d = d;
    bind_bf16(b, &c->wkv, NAME(n, "%s.wkv.weight", base), c->coff * d, dim);
    bind_bf16(b, &c->wgate, NAME(n, "%s.wgate.weight", base), c->coff * d, dim);
    c->ape = need_data(b, NAME(n, "%s.ape", base), MS_ST_F32, ratio, c->coff * d);
    c->norm = need_data(b, NAME(n, "%s.norm.weight", base), MS_ST_BF16, d, 0);
}

static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

/* Config facts the forward pass relies on; one message per problem found first. */
static int check_config(const ms_v4_config *c, char *err, size_t err_len) {
    const char *why = NULL;
    bool any4 = false;
    if (c->n_layers == 0 || c->n_layers > MS_V4_MAX_LAYERS) why = "num_hidden_layers out of range";
    else if (c->n_compress_ratios < c->n_layers) why = "compress_ratios has fewer entries than layers";
    else if (!c->vocab_size || !c->dim) why = "vocab_size and hidden_size must be > 0";
    else if (c->n_kv_heads != 1) why = "num_key_value_heads must be 1 (one shared KV latent)";
    else if (!c->n_heads || !c->o_groups || c->n_heads % c->o_groups) why = "num_attention_heads must be a multiple of o_groups";
    else if (!c->rope_dim || c->rope_dim % 2 || c->rope_dim > MS_V4_MAX_ROPE_DIM) why = "qk_rope_head_dim must be even and <= 512";
    else if (c->head_dim <= c->rope_dim || (c->head_dim - c->rope_dim) % 64) why = "head_dim - qk_rope_head_dim must be a positive multiple of 64 (FP8 KV blocks)";
    else if (!c->q_lora_rank || !c->o_lora_rank) why = "q_lora_rank and o_lora_rank must be > 0";
    else if (!c->window) why = "sliding_window must be > 0";
    else if (!c->hc_mult || c->hc_mult > MS_V4_MAX_HC) why = "hc_mult out of range (1..16)";
    else if (!c->n_routed_experts || !c->n_active_experts || c->n_active_experts > c->n_routed_experts) why = "num_experts_per_tok must be in 1..n_routed_experts";
    else if (c->n_shared_experts != 1) why = "n_shared_experts must be 1";
    else if (!c->moe_inter_dim) why = "moe_intermediate_size must be > 0";
    else if (c->n_hash_layers > c->n_layers) why = "num_hash_layers exceeds num_hidden_layers";
    if (!why)
        for (uint32_t i = 0; i < c->n_layers; i++) {
            if (c->compress_ratios[i] > 1024) why = "compress_ratios entry > 1024";
            if (c->compress_ratios[i] == 4) any4 = true;
        }
    if (!why && any4) {
        if (!is_pow2(c->index_head_dim) || c->index_head_dim < 32 ||
            c->index_head_dim > MS_V4_MAX_HADAMARD || c->index_head_dim < c->rope_dim)
            why = "index_head_dim must be a power of two in 32..4096 and >= qk_rope_head_dim";
        else if (!c->index_n_heads) why = "index_n_heads must be > 0";
    }
    if (why) {
        if (err && err_len) snprintf(err, err_len, "config: %s", why);
        return -MS_E_INVALID_ARG;
    }
    return 0;
}

static int bind_layer(binder *b, ms_ref_model *m, uint32_t li) {
    const ms_v4_config *c = &m->cfg;
    v4_layer *L = &m->layers[li];
    char n[256], p[64];
    uint32_t dim = c->dim, hc = c->hc_mult, mix = (2 + hc) * hc, E = c->n_routed_experts;
    snprintf(p, sizeof p, "layers.%u", li);
    L->ratio = c->compress_ratios[li];
    L->rope_freq = L->ratio ? m->freq_compress : m->freq_base;

    L->hc_attn_fn = need_data(b, NAME(n, "%s.hc_attn_fn", p), MS_ST_F32, mix, (uint64_t)hc * dim);
    L->hc_attn_base = need_data(b, NAME(n, "%s.hc_attn_base", p), MS_ST_F32, mix, 0);
    L->hc_attn_scale = need_data(b, NAME(n, "%s.hc_attn_scale", p), MS_ST_F32, 3, 0);
    L->hc_ffn_fn = need_data(b, NAME(n, "%s.hc_ffn_fn", p), MS_ST_F32, mix, (uint64_t)hc * dim);
    L->hc_ffn_base = need_data(b, NAME(n, "%s.hc_ffn_base", p), MS_ST_F32, mix, 0);
    L->hc_ffn_scale = need_data(b, NAME(n, "%s.hc_ffn_scale", p), MS_ST_F32, 3, 0);
    L->attn_norm = need_data(b, NAME(n, "%s.attn_norm.weight", p), MS_ST_BF16, dim, 0);
    L->ffn_norm = need_data(b, NAME(n, "%s.ffn_norm.weight", p), MS_ST_BF16, dim, 0);

    uint32_t qdim = c->n_heads * c->head_dim;
    bind_fp8(b, &L->wq_a, NAME(n, "%s.attn.wq_a", p), c->q_lora_rank, dim);
    L->q_norm = need_data(b, NAME(n, "%s.attn.q_norm.weight", p), MS_ST_BF16, c->q_lora_rank, 0);
    bind_fp8(b, &L->wq_b, NAME(n, "%s.attn.wq_b", p), qdim, c->q_lora_rank);
    bind_fp8(b, &L->wkv, NAME(n, "%s.attn.wkv", p), c->head_dim, dim);
    L->kv_norm = need_data(b, NAME(n, "%s.attn.kv_norm.weight", p), MS_ST_BF16, c->head_dim, 0);
    bind_fp8(b, &L->wo_a, NAME(n, "%s.attn.wo_a", p), c->o_groups * c->o_lora_rank, qdim / c->o_groups);
    bind_fp8(b, &L->wo_b, NAME(n, "%s.attn.wo_b", p), dim, c->o_groups * c->o_lora_rank);
    L->attn_sink = need_data(b, NAME(n, "%s.attn.attn_sink", p), MS_ST_F32, c->n_heads, 0);
    if (L->ratio)
        bind_compressor(b, &L->cmp, NAME(n, "%s.attn.compressor", p), L->ratio, c->head_dim, dim);
    if (L->ratio == 4) {
        bind_fp8(b, &L->idx_wq_b, NAME(n, "%s.attn.indexer.wq_b", p),
                 c->index_n_heads * c->index_head_dim, c->q_lora_rank);
        bind_bf16(b, &L->idx_wproj, NAME(n, "%s.attn.indexer.weights_proj.weight", p),
                  c->index_n_heads, dim);
        bind_compressor(b, &L->idx_cmp, NAME(n, "%s.attn.indexer.compressor", p), 4,
                        c->index_head_dim, dim);
    }

    bind_bf16(b, &L->gate, NAME(n, "%s.ffn.gate.weight", p), E, dim);
    if (li < c->n_hash_layers) {
        const uint8_t *t2e = need_data(b, NAME(n, "%s.ffn.gate.tid2eid", p), MS_ST_I64,
                                       c->vocab_size, c->n_active_experts);
        if (t2e) {
            /* Stored I64, used as int32 (V4_SPEC §6.2): narrow with a range check. */
            int32_t *dst = m->tid2eid + (size_t)li * c->vocab_size * c->n_active_experts;
            for (size_t i = 0; i < (size_t)c->vocab_size * c->n_active_experts; i++) {
                int64_t v;
                memcpy(&v, t2e + i * sizeof v, sizeof v); /* the mapping may be misaligned */
                if (v < 0 || v >= (int64_t)E) {
                    fail(b, -MS_E_FORMAT, "tensor %s: token %zu routes to expert %lld, not in 0..%u",
                         n, i / c->n_active_experts, (long long)v, E - 1);
                    break;
                }
                dst[i] = (int32_t)v;
            }
            L->tid2eid = dst;
        }
    } else {
        L->gate_bias = need_data(b, NAME(n, "%s.ffn.gate.bias", p), MS_ST_F32, E, 0);
    }
    bind_fp8(b, &L->sh_w1, NAME(n, "%s.ffn.shared_experts.w1", p), c->moe_inter_dim, dim);
    bind_fp8(b, &L->sh_w3, NAME(n, "%s.ffn.shared_experts.w3", p), c->moe_inter_dim, dim);
    bind_fp8(b, &L->sh_w2, NAME(n, "%s.ffn.shared_experts.w2", p), dim, c->moe_inter_dim);
    ms_weight_view *ex = m->experts + (size_t)li * E * 3;
    for (uint32_t e = 0; e < E && !b->rc; e++) {
        bind_expert(b, &ex[e * 3 + 0], NAME(n, "%s.ffn.experts.%u.w1", p, e), c->moe_inter_dim, dim);
        bind_expert(b, &ex[e * 3 + 1], NAME(n, "%s.ffn.experts.%u.w3", p, e), c->moe_inter_dim, dim);
        bind_expert(b, &ex[e * 3 + 2], NAME(n, "%s.ffn.experts.%u.w2", p, e), dim, c->moe_inter_dim);
    }
    L->ex = ex;
    return b->rc;
}

int ms_ref_model_create(const ms_v4_config *cfg, ms_ref_tensor_fn get, void *ctx,
                        ms_ref_model **out, char *err, size_t err_len) {
    *out = NULL;
    if (err && err_len) err[0] = 0;
    if (!cfg || !get) return -MS_E_INVALID_ARG;
    int rc = check_config(cfg, err, err_len);
    if (rc) return rc;

    ms_ref_model *m = ms_calloc(1, sizeof *m);
    if (!m) return -MS_E_NOMEM;
    m->cfg = *cfg;
    m->fq_kv_fp8 = m->fq_index_fp4 = true;
    const ms_v4_config *c = &m->cfg;
    m->layers = ms_calloc(c->n_layers, sizeof *m->layers);
    m->freq_base = ms_calloc(c->rope_dim / 2, sizeof(double));
    m->freq_compress = ms_calloc(c->rope_dim / 2, sizeof(double));
    m->experts = ms_calloc((size_t)c->n_layers * c->n_routed_experts * 3, sizeof(ms_weight_view));
    size_t n_t2e = (size_t)c->n_hash_layers * c->vocab_size * c->n_active_experts;
    m->tid2eid = n_t2e ? ms_malloc(n_t2e * sizeof(int32_t)) : NULL;
    if (!m->layers || !m->freq_base || !m->freq_compress || !m->experts || (n_t2e && !m->tid2eid)) {
        ms_ref_model_free(m);
        return -MS_E_NOMEM;
    }
    ms_ref_v4_rope_freqs(c, false, m->freq_base);
    ms_ref_v4_rope_freqs(c, true, m->freq_compress);

    binder b = {get, ctx, err, err_len, 0};
    uint32_t dim = c->dim, hc = c->hc_mult;
    m->embed = need_data(&b, "embed.weight", MS_ST_BF16, c->vocab_size, dim);
    bind_bf16(&b, &m->head, "head.weight", c->vocab_size, dim);
    m->norm = need_data(&b, "norm.weight", MS_ST_BF16, dim, 0);
    m->hc_head_fn = need_data(&b, "hc_head_fn", MS_ST_F32, hc, (uint64_t)hc * dim);
    m->hc_head_base = need_data(&b, "hc_head_base", MS_ST_F32, hc, 0);
    m->hc_head_scale = need_data(&b, "hc_head_scale", MS_ST_F32, 1, 0);
    for (uint32_t li = 0; li < c->n_layers && !b.rc; li++) bind_layer(&b, m, li);
    if (b.rc) {
        ms_ref_model_free(m);
        return b.rc;
    }
    *out = m;
    return 0;
}

void ms_ref_model_free(ms_ref_model *m) {
    if (!m) return;
    ms_free(m->layers);
    ms_free(m->freq_base);
    ms_free(m->freq_compress);
    ms_free(m->experts);
    ms_free(m->tid2eid);
    ms_free(m);
}

void ms_ref_v4_set_fake_quant(ms_ref_model *m, bool kv_fp8, bool index_fp4) {
    m->fq_kv_fp8 = kv_fp8;
    m->fq_index_fp4 = index_fp4;
}

/* ---- MoE (V4_SPEC §3.10) ---- */

/* One expert over cnt gathered tokens: sc->ex_x [cnt][dim], their routing weights sc->ex_w [cnt]
 * (applied before w2, the official order) and token slots sc->ex_t [cnt]; adds the outputs into
 * sc->moe_acc [n][dim]. w: w1, w3, w2. */
static void run_experts(const ms_v4_config *c, const ms_weight_view *w, v4_scratch *sc,
                        uint32_t cnt) {
    uint32_t dim = c->dim, I = c->moe_inter_dim;
    ms_ref_gemv(&w[0], sc->ex_x, dim, sc->ex_g, I, cnt);
    ms_ref_gemv(&w[1], sc->ex_x, dim, sc->ex_u, I, cnt);
    ms_ref_swiglu(sc->ex_g, sc->ex_u, sc->ex_w, cnt, I, I, c->swiglu_limit);
    ms_ref_gemv(&w[2], sc->ex_g, I, sc->ex_y, dim, cnt);
    for (uint32_t r = 0; r < cnt; r++) {
        double *acc = sc->moe_acc + (size_t)sc->ex_t[r] * dim;
        for (uint32_t i = 0; i < dim; i++) acc[i] += sc->ex_y[(size_t)r * dim + i];
    }
}

void ms_ref_v4_moe(ms_ref_session *s, uint32_t li, const float *x, const uint32_t *tokens,
                   uint32_t n, float *out) {
    const ms_ref_model *m = s->m;
    const ms_v4_config *c = &m->cfg;
    const v4_layer *L = &m->layers[li];
    v4_scratch *sc = &s->sc;
    uint32_t dim = c->dim, E = c->n_routed_experts, K = c->n_active_experts;

    /* gate scores -> routing (ms_ref_router, the twin of shaders/router.comp) */
    ms_ref_gemv(&L->gate, x, dim, sc->glog, E, n);
    ms_ref_router(sc->glog, L->gate_bias, L->tid2eid, tokens, n, E, K, c->norm_topk_prob,
                  c->routed_scaling_factor, sc->route, sc->rw);

    /* Routed experts, each over the tokens that chose it (up to B at a time); per token the
     * contributions add up in ascending expert order, independent of the other tokens. */
    memset(sc->moe_acc, 0, (size_t)n * dim * sizeof(double));
    for (uint32_t e = 0; e < E; e++) {
        uint32_t cnt = 0;
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t k = 0; k < K; k++) {
                if (sc->route[t * K + k] != e) continue;
                memcpy(sc->ex_x + (size_t)cnt * dim, x + (size_t)t * dim, dim * sizeof(float));
                sc->ex_t[cnt] = t;
                sc->ex_w[cnt] = sc->rw[t * K + k];
                if (++cnt == MS_V4_SUB_BATCH) {
                    run_experts(c, L->ex + (size_t)e * 3, sc, cnt);
                    cnt = 0;
                }
            }
        if (cnt) run_experts(c, L->ex + (size_t)e * 3, sc, cnt);
    }

    /* Shared expert: FP8, same clamp, weight 1. */
    for (uint32_t t = 0; t < n; t++) sc->ex_t[t] = t, sc->ex_w[t] = 1.0f;
    memcpy(sc->ex_x, x, (size_t)n * dim * sizeof(float));
    const ms_weight_view shared[3] = {L->sh_w1, L->sh_w3, L->sh_w2};
    run_experts(c, shared, sc, n);
    for (size_t i = 0; i < (size_t)n * dim; i++) out[i] = (float)sc->moe_acc[i];
}
