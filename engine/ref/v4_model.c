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

/* The checkpoint tensor of spec t, checked against it (dtype, shape, byte count); NULL on
 * failure (the first failure is kept in b). */
static const ms_st_tensor *need(binder *b, const ms_v4_tensor_spec *t) {
    if (b->rc) return NULL;
    const ms_st_tensor *x = b->get(b->ctx, t->name);
    if (!x) {
        fail(b, -MS_E_FORMAT, "tensor %s is missing", t->name);
        return NULL;
    }
    if (x->dtype != t->dtype) {
        fail(b, -MS_E_FORMAT, "tensor %s: dtype %s, expected %s", t->name, dtype_name(x->dtype),
             dtype_name(t->dtype));
        return NULL;
    }
    bool ok = x->n_dims == t->n_dims && x->data != NULL;
    for (uint32_t i = 0; ok && i < t->n_dims; i++) ok = x->shape[i] == t->shape[i];
    if (!ok) {
        char got[160], exp[64];
        shape_str(got, sizeof got, x->n_dims < MS_ST_MAX_DIMS ? x->n_dims : MS_ST_MAX_DIMS, x->shape);
        shape_str(exp, sizeof exp, t->n_dims, t->shape);
        fail(b, -MS_E_FORMAT, "tensor %s: shape %s, expected %s%s", t->name, got, exp,
             x->data ? "" : " (no data)");
        return NULL;
    }
    uint64_t want = t->shape[0] * (t->n_dims > 1 ? t->shape[1] : 1) * dtype_size(t->dtype);
    if (x->n_bytes != want) {
        fail(b, -MS_E_FORMAT, "tensor %s: %llu data bytes, expected %llu", t->name,
             (unsigned long long)x->n_bytes, (unsigned long long)want);
        return NULL;
    }
    return x;
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

/* Where a tensor of the table goes in the model: a weight view (linears) or a data pointer. */
typedef struct bind_slot {
    ms_weight_view *view;
    const void **data;
} bind_slot;

static bind_slot slot_of(ms_ref_model *m, const ms_v4_tensor_spec *t) {
    bind_slot s = {NULL, NULL};
    const ms_v4_config *c = &m->cfg;
    v4_layer *L = t->layer < c->n_layers ? &m->layers[t->layer] : NULL;
    switch (t->role) {
    case MS_V4_ROLE_EMBED: s.data = &m->embed; break;
    case MS_V4_ROLE_HEAD: s.view = &m->head; break;
    case MS_V4_ROLE_NORM: s.data = &m->norm; break;
    case MS_V4_ROLE_HC_HEAD_FN: s.data = &m->hc_head_fn; break;
    case MS_V4_ROLE_HC_HEAD_BASE: s.data = &m->hc_head_base; break;
    case MS_V4_ROLE_HC_HEAD_SCALE: s.data = &m->hc_head_scale; break;
    case MS_V4_ROLE_ATTN_NORM: s.data = &L->attn_norm; break;
    case MS_V4_ROLE_FFN_NORM: s.data = &L->ffn_norm; break;
    case MS_V4_ROLE_HC_ATTN_FN: s.data = &L->hc_attn_fn; break;
    case MS_V4_ROLE_HC_FFN_FN: s.data = &L->hc_ffn_fn; break;
    case MS_V4_ROLE_HC_ATTN_BASE: s.data = &L->hc_attn_base; break;
    case MS_V4_ROLE_HC_FFN_BASE: s.data = &L->hc_ffn_base; break;
    case MS_V4_ROLE_HC_ATTN_SCALE: s.data = &L->hc_attn_scale; break;
    case MS_V4_ROLE_HC_FFN_SCALE: s.data = &L->hc_ffn_scale; break;
    case MS_V4_ROLE_WQ_A: s.view = &L->wq_a; break;
    case MS_V4_ROLE_Q_NORM: s.data = &L->q_norm; break;
    case MS_V4_ROLE_WQ_B: s.view = &L->wq_b; break;
    case MS_V4_ROLE_WKV: s.view = &L->wkv; break;
    case MS_V4_ROLE_KV_NORM: s.data = &L->kv_norm; break;
    case MS_V4_ROLE_WO_A: s.view = &L->wo_a; break;
    case MS_V4_ROLE_WO_B: s.view = &L->wo_b; break;
    case MS_V4_ROLE_ATTN_SINK: s.data = &L->attn_sink; break;
    case MS_V4_ROLE_CMP_WKV: s.view = &L->cmp.wkv; break;
    case MS_V4_ROLE_CMP_WGATE: s.view = &L->cmp.wgate; break;
    case MS_V4_ROLE_CMP_APE: s.data = &L->cmp.ape; break;
    case MS_V4_ROLE_CMP_NORM: s.data = &L->cmp.norm; break;
    case MS_V4_ROLE_IDX_WQ_B: s.view = &L->idx_wq_b; break;
    case MS_V4_ROLE_IDX_WPROJ: s.view = &L->idx_wproj; break;
    case MS_V4_ROLE_IDX_CMP_WKV: s.view = &L->idx_cmp.wkv; break;
    case MS_V4_ROLE_IDX_CMP_WGATE: s.view = &L->idx_cmp.wgate; break;
    case MS_V4_ROLE_IDX_CMP_APE: s.data = &L->idx_cmp.ape; break;
    case MS_V4_ROLE_IDX_CMP_NORM: s.data = &L->idx_cmp.norm; break;
    case MS_V4_ROLE_GATE: s.view = &L->gate; break;
    case MS_V4_ROLE_GATE_BIAS: s.data = &L->gate_bias; break;
    case MS_V4_ROLE_SH_W1: s.view = &L->sh_w1; break;
    case MS_V4_ROLE_SH_W3: s.view = &L->sh_w3; break;
    case MS_V4_ROLE_SH_W2: s.view = &L->sh_w2; break;
    case MS_V4_ROLE_EX_W1:
    case MS_V4_ROLE_EX_W3:
    case MS_V4_ROLE_EX_W2:
        s.view = &m->experts[((size_t)t->layer * c->n_routed_experts + t->expert) * 3 +
                             (t->role == MS_V4_ROLE_EX_W1 ? 0 : t->role == MS_V4_ROLE_EX_W3 ? 1 : 2)];
        break;
    case MS_V4_ROLE_GATE_TID2EID: /* narrowed into a model-owned table (bind_fn) */
    case MS_V4_ROLE_MTP_E_PROJ: /* MTP is not run */
    case MS_V4_ROLE_MTP_H_PROJ:
    case MS_V4_ROLE_MTP_ENORM:
    case MS_V4_ROLE_MTP_HNORM:
    case MS_V4_ROLE_MTP_NORM:
    case MS_V4_ROLE_MTP_HC_HEAD_FN:
    case MS_V4_ROLE_MTP_HC_HEAD_BASE:
    case MS_V4_ROLE_MTP_HC_HEAD_SCALE:
    case MS_V4_ROLE_COUNT: break;
    }
    return s;
}

typedef struct bind_ctx {
    binder *b;
    ms_ref_model *m;
} bind_ctx;

/* One tensor of the table (config.h), checked, into its slot. */
static int bind_fn(const ms_v4_tensor_spec *t, void *user) {
    bind_ctx *x = user;
    binder *b = x->b;
    ms_ref_model *m = x->m;
    const ms_v4_config *c = &m->cfg;
    const ms_st_tensor *st = need(b, t);
    if (!st) return b->rc;
    if (t->role == MS_V4_ROLE_GATE_TID2EID) {
        /* Stored I64, used as int32 (V4_SPEC §6.2): narrow with a range check. */
        size_t n = (size_t)c->vocab_size * c->n_active_experts;
        int32_t *dst = m->tid2eid + (size_t)t->layer * n;
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (const uint8_t *)st->data + 8 * i, sizeof v); /* any alignment */
            if (v < 0 || v >= (int64_t)c->n_routed_experts) {
                fail(b, -MS_E_FORMAT, "tensor %s: token %zu routes to expert %lld, not in 0..%u",
                     t->name, i / c->n_active_experts, (long long)v, c->n_routed_experts - 1);
                return b->rc;
            }
            dst[i] = (int32_t)v;
        }
        m->layers[t->layer].tid2eid = dst;
        return 0;
    }
    bind_slot s = slot_of(m, t);
    if (s.data) *s.data = st->data;
    if (s.view) {
        s.view->m = (uint32_t)t->m;
        s.view->k = (uint32_t)t->k;
        if (t->part == MS_V4_PART_SCALE) {
            s.view->scale = st->data;
        } else {
            s.view->data = st->data;
            s.view->enc = t->dtype == MS_ST_F8_E4M3 ? MS_WENC_FP8
                        : t->dtype == MS_ST_I8      ? MS_WENC_FP4
                        : t->dtype == MS_ST_BF16    ? MS_WENC_BF16
                                                    : MS_WENC_F32;
        }
    }
    return 0;
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

    /* per layer: its compression ratio and RoPE table; then every tensor the table lists */
    for (uint32_t li = 0; li < c->n_layers; li++) {
        v4_layer *L = &m->layers[li];
        L->ratio = c->compress_ratios[li];
        L->rope_freq = L->ratio ? m->freq_compress : m->freq_base;
        if (L->ratio) {
            L->cmp.ratio = L->ratio;
            L->cmp.coff = L->ratio == 4 ? 2 : 1; /* overlapping blocks only for ratio 4 */
            L->cmp.d = c->head_dim;
        }
        if (L->ratio == 4) {
            L->idx_cmp.ratio = 4;
            L->idx_cmp.coff = 2;
            L->idx_cmp.d = c->index_head_dim;
        }
        L->ex = m->experts + (size_t)li * c->n_routed_experts * 3;
    }
    binder b = {get, ctx, err, err_len, 0};
    bind_ctx bc = {&b, m};
    ms_v4_for_each_tensor(c, false, bind_fn, &bc);
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
    if (s->tap_on) {
        ms_ref_router_scores(sc->glog, L->gate_bias, E, s->tap_buf);
        v4_tap(s, s->pos, li, "ffn.score", false, s->tap_buf, E);
        v4_tap(s, s->pos, li, "ffn.route", true, sc->route, K);
        v4_tap(s, s->pos, li, "ffn.weights", false, sc->rw, K);
    }

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
