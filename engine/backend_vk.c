/* engine/backend_vk.c — the Vulkan forward pass behind engine.h (V4_SPEC §3).
 *
 * Weights: the CPU reference's binder (ms_ref_model_create) checks every tensor against the V4
 * tensor table and hands back borrowed views; this backend uploads each view once into
 * device-local memory (every weight resident; streaming is the cache's job later). Routed experts
 * go into one pool buffer per layer as fixed-size records (ms_vk_expert_layout) addressed through
 * a slot table (expert id -> record), the shared expert into a one-record pool of its own.
 *
 * Sessions own their whole KV state in device memory: per layer the window ring (ring_len =
 * min(window + MS_VK_PREFILL - 1, max_tokens) rows, so a batch's own rows never overwrite rows its
 * earlier queries see), the compressor states and emitted rows, the indexer keys. A forward call
 * runs batches of MS_VK_PREFILL tokens (dense projections through the GEMM kernels) while that
 * many remain, then batches of up to MS_VK_BATCH (GEMV kernels); each batch size has one command
 * buffer, recorded the first time and replayed after: everything that changes per batch
 * (position, token ids, RoPE tables) sits in a small step buffer that the recording copies from
 * host memory first. A prefill batch rounds its sums in another order than the GEMV batches, so
 * on this backend different splits of a sequence agree within F32 rounding, not bit for bit.
 *
 * Numerics: F32 everywhere with F32 accumulation (the reference accumulates in double); the
 * same two fake-quant steps (e4m3 KV latent, FP4 indexer q/k), each off with its no_fq_* option.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/engine_internal.h"
#include "engine/ref/ref.h"
#include "engine/ref/v4_internal.h" /* the bound views of the reference's model */
#include "engine/vk/vk.h"

#define MS_VK_BATCH 8u    /* tokens per GEMV-path recording: the GEMV kernels take 1..8 columns */
#define MS_VK_PREFILL 64u /* tokens per GEMM-path (prefill) recording */
#define MAX_RATIOS 4u  /* distinct compression ratios with a RoPE table of their own */

typedef struct vk_cmp {
    ms_vk_weight wkv, wgate;
    ms_vk_buf ape, norm;
    uint32_t ratio, coff, d;
} vk_cmp;

typedef struct vk_layer {
    uint32_t ratio;
    uint32_t cs_ratio_slot; /* which per-ratio RoPE table (ratio != 0) */
    ms_vk_weight hc_attn_fn, hc_ffn_fn;
    ms_vk_buf hc_attn_base, hc_attn_scale, hc_ffn_base, hc_ffn_scale, attn_norm, ffn_norm;
    ms_vk_weight wq_a, wq_b, wkv, wo_b;
    ms_vk_weight wo_a;      /* the whole [o_groups * o_lora_rank][n_heads * head_dim / o_groups] */
    bool wo_a_grouped;      /* one block-diagonal GEMV for all groups (a group is whole 128-row blocks) */
    ms_vk_buf q_norm, kv_norm, sink;
    vk_cmp cmp, idx_cmp;
    ms_vk_weight idx_wq_b, idx_wproj;
    ms_vk_weight gate;
    ms_vk_buf gate_bias, tid2eid; /* bias on score-routed layers, tid2eid on hash layers */
    ms_vk_expert_layout ex_layout, sh_layout;
    ms_vk_buf pool, slots, sh_pool;
} vk_layer;

typedef struct vk_model {
    ms_vk *vk;
    ms_ref_model *ref; /* borrowed views into the checkpoint, used while uploading */
    vk_layer *layers;
    ms_vk_buf embed, norm, hc_head_base, hc_head_scale;
    ms_vk_weight hc_head_fn, head;
    ms_vk_buf sh_slots, zero_idx, ones; /* the shared expert's slot table [1], idx [B] 0, rw [B] 1 */
    uint32_t ratios[MAX_RATIOS], n_ratios;
    bool fq_kv, fq_idx; /* the two fake-quant steps */
    float idx_w_scale;
} vk_model;

/* Device buffers of one session. */
typedef struct vk_layer_state {
    ms_vk_buf ring, cmp_kv, cmp_score, cmp_rows, idx_kv, idx_score, idx_rows;
    uint32_t cmp_n_rows, idx_n_rows;
} vk_layer_state;

typedef struct vk_step_layout {
    uint64_t pos, tokens, cs_base, cs_cmp, cs_ratio[MAX_RATIOS], bytes;
} vk_step_layout;

/* Op classes of the profiled recording (ms_session_set_profiling), in forward-pass order. */
enum { P_EMBED, P_HC_PRE, P_ATTN_PROJ, P_ATTN_PREP, P_INDEXER, P_ATTENTION, P_OPROJ, P_GATE,
       P_ROUTER, P_EXPERTS_UP, P_EXPERTS_DOWN, P_HEAD, P_N };
static const char *const prof_names[P_N] = {
    "embed", "hc_post+hc_pre", "attn_projections", "attn_norm_rope_compress", "indexer", "attention", "o_proj",
    "gate+shared_up", "router+shared_down", "experts_up", "experts_down", "head"};

typedef struct vk_session {
    vk_model *M;
    uint32_t ring_len;
    vk_layer_state *ls;
    vk_step_layout sl;
    ms_vk_buf step_host, step;    /* STAGING (written per batch) and its device copy */
    uint32_t n_slices;            /* hc_mix partials per token */
    ms_vk_buf part;               /* [B][n_slices][mix_n + 1] */
    ms_vk_buf moe_scratch;        /* the grouped expert FFN's (prefill batches) */
    /* non-finite watch: per token the first sub-layer (2 * layer + 1 for the MoE one) whose
     * output streams held a NaN or an infinity (hc_mix sets it), read back after each batch */
    ms_vk_buf nf_flags, nf_host;
    bool nf_seen;
    uint32_t nf_pos, nf_layer;
    const char *nf_stage;
    ms_vk_buf h[2], x, y, ysh, zeros, post, comb, qr, q, kv, o, u, u_full, ca, cg, ia, ig, qi,
        wi, idx_scratch, sel, att_scratch, glog, route, rw, act, sh_act, hfin, logits, logits_host;
    ms_vk_cmd *cmd[MS_VK_BATCH + 2]; /* per batch size 1..8, [MS_VK_BATCH + 1] the prefill one */
    bool recorded[MS_VK_BATCH + 2];
    /* counts of the one-token recording: the layers together, and everything */
    uint32_t layer_dispatches, layer_barriers, total_dispatches;
    /* profiling: a one-token recording with a timestamp after each op class (mark) */
    bool profiling, rec_prof, prof_recorded;
    bool select_all; /* max_tokens / 4 <= index_topk: the indexer would always select every block */
    ms_vk_cmd *cmd_prof;
    uint32_t n_marks, max_marks;
    uint8_t *mark_cls;     /* [max_marks] the class each timestamp ends (0xff: the start) */
    uint32_t *mark_disp;   /* [max_marks] dispatches recorded before it */
    double *mark_ns;       /* [max_marks] */
    double prof_ns[P_N];
    uint32_t prof_disp[P_N], prof_steps;
    /* taps (ms_session_set_tap): a one-token recording that copies each stage's range into
     * tap_host after the stage (tap), then the values go to the tap in forward order */
    bool rec_tap, tap_recorded;
    ms_vk_cmd *cmd_tap;
    ms_vk_buf tap_host; /* READBACK: every stage of every layer at tap_off */
    uint64_t *tap_off;  /* [n_layers][T_N] byte offset of a stage in tap_host; UINT64_MAX: none */
    float *tap_tmp;     /* [n_experts] the router's ranking scores (ffn.score) */
} vk_session;

/* The stages a tap sees (engine.h), in forward order. */
enum { T_ATTN_X, T_ATTN_Q, T_ATTN_KV, T_CMP_ROWS, T_IDX_SCORE, T_IDX_SEL, T_ATTN_O, T_ATTN_Y, T_ATTN_H,
       T_FFN_X, T_FFN_SCORE, T_FFN_ROUTE, T_FFN_WEIGHTS, T_FFN_Y, T_FFN_H, T_N };
static int tap(vk_session *S, ms_vk_cmd *cmd, uint32_t li, int stage, const ms_vk_buf *src);
static int tap_attention(vk_session *S, ms_vk_cmd *cmd, uint32_t li);
static int tap_moe(vk_session *S, ms_vk_cmd *cmd, uint32_t li);
static int tap_deliver(ms_session *s, uint32_t pos);
static int vk_set_tap(ms_session *s, ms_tap_fn fn, void *ctx);

/* ------------------------------------------------------------------ helpers */

static ms_vk_range whole(const ms_vk_buf *b) { return ms_vk_buf_range(b, 0, b->size); }

static int buf_new(ms_vk *vk, ms_vk_mem kind, uint64_t bytes, ms_vk_buf *out) {
    return ms_vk_buf_alloc(vk, kind, bytes ? bytes : 16, out);
}

static int buf_up(ms_vk *vk, const void *src, uint64_t bytes, ms_vk_buf *out) {
    int rc = buf_new(vk, MS_VK_MEM_DEVICE, bytes, out);
    return rc ? rc : ms_vk_upload(vk, out, 0, src, bytes);
}

static int w_up(ms_vk *vk, const ms_weight_view *v, ms_vk_weight *out) {
    return ms_vk_weight_upload(vk, v, 0, out);
}

static ms_weight_view f32_view(const void *data, uint32_t m, uint32_t k) {
    ms_weight_view v = {MS_WENC_F32, m, k, data, NULL};
    return v;
}

/* ------------------------------------------------------------------ model */

static int up_cmp(ms_vk *vk, const v4_compressor *c, vk_cmp *out) {
    out->ratio = c->ratio;
    out->coff = c->coff;
    out->d = c->d;
    int rc = w_up(vk, &c->wkv, &out->wkv);
    if (!rc) rc = w_up(vk, &c->wgate, &out->wgate);
    if (!rc) rc = buf_up(vk, c->ape, (uint64_t)c->ratio * c->coff * c->d * 4, &out->ape);
    if (!rc) rc = buf_up(vk, c->norm, (uint64_t)c->d * 2, &out->norm);
    return rc;
}

static void free_cmp(ms_vk *vk, vk_cmp *c) {
    ms_vk_weight_free(vk, &c->wkv);
    ms_vk_weight_free(vk, &c->wgate);
    ms_vk_buf_free(vk, &c->ape);
    ms_vk_buf_free(vk, &c->norm);
}

/* The routed experts of layer li into one pool of records, identity slot table. */
static int up_experts(vk_model *M, uint32_t li, char *err, size_t err_len) {
    const ms_v4_config *c = &M->ref->cfg;
    const v4_layer *RL = &M->ref->layers[li];
    vk_layer *L = &M->layers[li];
    const ms_vk_caps *caps = ms_vk_get_caps(M->vk);
    uint32_t E = c->n_routed_experts;
    int rc = ms_vk_expert_layout_make(RL->ex[0].enc, c->dim, c->moe_inter_dim, &L->ex_layout);
    if (rc)
        return ms_errf(err, err_len, rc, "layer %u: routed experts in %s [%u x %u] are not supported "
                       "by the Vulkan expert kernels", li, ms_wenc_name(RL->ex[0].enc),
                       c->moe_inter_dim, c->dim);
    uint64_t rb = L->ex_layout.record_bytes, total = rb * E;
    if (total > caps->max_storage_buffer_range)
        return ms_errf(err, err_len, -MS_E_UNSUPPORTED,
                       "layer %u: its %u experts take %.2f GiB, more than this device binds at once "
                       "(%.2f GiB); use fewer experts or the CPU backend (expert streaming, which "
                       "splits the pool, comes later)",
                       li, E, (double)total / (1 << 30),
                       (double)caps->max_storage_buffer_range / (1 << 30));
    uint8_t *rec = ms_malloc(rb);
    uint32_t *slot = ms_malloc((size_t)E * 4);
    rc = rec && slot ? buf_new(M->vk, MS_VK_MEM_DEVICE, total, &L->pool) : -MS_E_NOMEM;
    for (uint32_t e = 0; !rc && e < E; e++) {
        const ms_weight_view *w = RL->ex + (size_t)e * 3;
        rc = ms_vk_expert_pack(&L->ex_layout, &w[0], &w[1], &w[2], rec);
        if (!rc) rc = ms_vk_upload(M->vk, &L->pool, (uint64_t)e * rb, rec, rb);
        slot[e] = e;
    }
    if (!rc) rc = buf_up(M->vk, slot, (uint64_t)E * 4, &L->slots);
    /* the shared expert: a one-record pool of its own (FP8) */
    uint32_t si = c->moe_inter_dim * c->n_shared_experts;
    if (!rc) rc = ms_vk_expert_layout_make(RL->sh_w1.enc, c->dim, si, &L->sh_layout);
    uint8_t *srec = !rc ? ms_malloc(L->sh_layout.record_bytes) : NULL;
    if (!rc && !srec) rc = -MS_E_NOMEM;
    if (!rc) rc = ms_vk_expert_pack(&L->sh_layout, &RL->sh_w1, &RL->sh_w3, &RL->sh_w2, srec);
    if (!rc) rc = buf_up(M->vk, srec, L->sh_layout.record_bytes, &L->sh_pool);
    ms_free(srec);
    ms_free(rec);
    ms_free(slot);
    if (rc && err && err_len && !err[0])
        snprintf(err, err_len, "layer %u: uploading the experts: %s", li, ms_strerror(rc));
    return rc;
}

static int up_layer(vk_model *M, uint32_t li, char *err, size_t err_len) {
    const ms_v4_config *c = &M->ref->cfg;
    const v4_layer *RL = &M->ref->layers[li];
    vk_layer *L = &M->layers[li];
    ms_vk *vk = M->vk;
    uint32_t hc = c->hc_mult, mix = (2 + hc) * hc, dim = c->dim;
    L->ratio = RL->ratio;
    for (uint32_t i = 0; i < M->n_ratios; i++)
        if (M->ratios[i] == L->ratio) L->cs_ratio_slot = i;
    ms_weight_view v = f32_view(RL->hc_attn_fn, mix, hc * dim);
    int rc = w_up(vk, &v, &L->hc_attn_fn);
    v = f32_view(RL->hc_ffn_fn, mix, hc * dim);
    if (!rc) rc = w_up(vk, &v, &L->hc_ffn_fn);
    if (!rc) rc = buf_up(vk, RL->hc_attn_base, (uint64_t)mix * 4, &L->hc_attn_base);
    if (!rc) rc = buf_up(vk, RL->hc_attn_scale, 12, &L->hc_attn_scale);
    if (!rc) rc = buf_up(vk, RL->hc_ffn_base, (uint64_t)mix * 4, &L->hc_ffn_base);
    if (!rc) rc = buf_up(vk, RL->hc_ffn_scale, 12, &L->hc_ffn_scale);
    if (!rc) rc = buf_up(vk, RL->attn_norm, (uint64_t)dim * 2, &L->attn_norm);
    if (!rc) rc = buf_up(vk, RL->ffn_norm, (uint64_t)dim * 2, &L->ffn_norm);
    if (!rc) rc = w_up(vk, &RL->wq_a, &L->wq_a);
    if (!rc) rc = buf_up(vk, RL->q_norm, (uint64_t)c->q_lora_rank * 2, &L->q_norm);
    if (!rc) rc = w_up(vk, &RL->wq_b, &L->wq_b);
    if (!rc) rc = w_up(vk, &RL->wkv, &L->wkv);
    if (!rc) rc = buf_up(vk, RL->kv_norm, (uint64_t)c->head_dim * 2, &L->kv_norm);
    if (!rc) rc = w_up(vk, &RL->wo_b, &L->wo_b);
    if (!rc) rc = buf_up(vk, RL->attn_sink, (uint64_t)c->n_heads * 4, &L->sink);
    L->wo_a_grouped = c->o_lora_rank % 128 == 0;
    if (!rc) rc = w_up(vk, &RL->wo_a, &L->wo_a);
    if (!rc && L->ratio) rc = up_cmp(vk, &RL->cmp, &L->cmp);
    if (!rc && L->ratio == 4) {
        rc = w_up(vk, &RL->idx_wq_b, &L->idx_wq_b);
        if (!rc) rc = w_up(vk, &RL->idx_wproj, &L->idx_wproj);
        if (!rc) rc = up_cmp(vk, &RL->idx_cmp, &L->idx_cmp);
    }
    if (!rc) rc = w_up(vk, &RL->gate, &L->gate);
    if (!rc && RL->tid2eid)
        rc = buf_up(vk, RL->tid2eid, (uint64_t)c->vocab_size * c->n_active_experts * 4, &L->tid2eid);
    else if (!rc)
        rc = buf_up(vk, RL->gate_bias, (uint64_t)c->n_routed_experts * 4, &L->gate_bias);
    if (rc) {
        if (err && err_len && !err[0])
            snprintf(err, err_len, "layer %u: uploading the weights: %s", li, ms_strerror(rc));
        return rc;
    }
    return up_experts(M, li, err, err_len);
}

static void free_layer(ms_vk *vk, vk_layer *L) {
    ms_vk_weight_free(vk, &L->hc_attn_fn);
    ms_vk_weight_free(vk, &L->hc_ffn_fn);
    ms_vk_buf *bufs[] = {&L->hc_attn_base, &L->hc_attn_scale, &L->hc_ffn_base, &L->hc_ffn_scale,
                         &L->attn_norm, &L->ffn_norm, &L->q_norm, &L->kv_norm, &L->sink,
                         &L->gate_bias, &L->tid2eid, &L->pool, &L->slots, &L->sh_pool};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ms_vk_buf_free(vk, bufs[i]);
    ms_vk_weight *ws[] = {&L->wq_a, &L->wq_b, &L->wkv, &L->wo_b, &L->wo_a, &L->idx_wq_b, &L->idx_wproj, &L->gate};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) ms_vk_weight_free(vk, ws[i]);
    ms_vk_weight_free(vk, &L->wo_a);
    free_cmp(vk, &L->cmp);
    free_cmp(vk, &L->idx_cmp);
}

static void vk_model_close(ms_engine *e) {
    vk_model *M = e->backend;
    if (!M) return;
    if (M->layers)
        for (uint32_t li = 0; li < M->ref->cfg.n_layers; li++) free_layer(M->vk, &M->layers[li]);
    ms_free(M->layers);
    ms_vk_buf *bufs[] = {&M->embed, &M->norm, &M->hc_head_base, &M->hc_head_scale, &M->sh_slots,
                         &M->zero_idx, &M->ones};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ms_vk_buf_free(M->vk, bufs[i]);
    ms_vk_weight_free(M->vk, &M->hc_head_fn);
    ms_vk_weight_free(M->vk, &M->head);
    ms_ref_model_free(M->ref);
    ms_vk_close(M->vk);
    ms_free(M);
    e->backend = NULL;
}

static const ms_st_tensor *st_get(void *ctx, const char *name) { return ms_st_find(ctx, name); }

static int vk_model_open(ms_engine *e, char *err, size_t err_len) {
    vk_model *M = ms_calloc(1, sizeof *M);
    if (!M) return ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
    e->backend = M;
    ms_vk_opts vo = e->opts.vk;
    int rc = ms_vk_open(&M->vk, &vo);
    if (rc) {
        ms_free(M);
        e->backend = NULL;
        if (vo.device_index >= 0)
            return ms_errf(err, err_len, rc == -MS_E_NO_DEVICE ? -MS_E_UNSUPPORTED : rc,
                           "Vulkan device %d cannot be opened (%s); `moestream doctor` lists the "
                           "devices, or use the CPU reference (--backend cpu)",
                           (int)vo.device_index, ms_strerror(rc));
        return ms_errf(err, err_len, rc == -MS_E_NO_DEVICE ? -MS_E_UNSUPPORTED : rc,
                       "no usable Vulkan device (%s); use the CPU reference (--backend cpu)",
                       ms_strerror(rc));
    }
    if ((rc = ms_ref_model_create(&e->cfg, st_get, e->st, &M->ref, err, err_len)) != 0) goto fail;
    const ms_v4_config *c = &M->ref->cfg;
    M->fq_kv = !e->opts.no_fq_kv;
    M->fq_idx = !e->opts.no_fq_index;
    M->idx_w_scale = (float)(1.0 / sqrt((double)c->index_head_dim) / sqrt((double)c->index_n_heads));
    for (uint32_t li = 0; li < c->n_layers; li++) {
        uint32_t r = c->compress_ratios[li], i = 0;
        if (!r) continue;
        while (i < M->n_ratios && M->ratios[i] != r) i++;
        if (i == M->n_ratios) {
            if (M->n_ratios == MAX_RATIOS) {
                rc = ms_errf(err, err_len, -MS_E_UNSUPPORTED,
                             "compress_ratios has more than %u distinct values", MAX_RATIOS);
                goto fail;
            }
            M->ratios[M->n_ratios++] = r;
        }
    }
    M->layers = ms_calloc(c->n_layers, sizeof *M->layers);
    if (!M->layers) {
        rc = ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
        goto fail;
    }
    uint32_t hc = c->hc_mult;
    ms_weight_view v = f32_view(M->ref->hc_head_fn, hc, hc * c->dim);
    rc = buf_up(M->vk, M->ref->embed, (uint64_t)c->vocab_size * c->dim * 2, &M->embed);
    if (!rc) rc = buf_up(M->vk, M->ref->norm, (uint64_t)c->dim * 2, &M->norm);
    if (!rc) rc = buf_up(M->vk, M->ref->hc_head_base, (uint64_t)hc * 4, &M->hc_head_base);
    if (!rc) rc = buf_up(M->vk, M->ref->hc_head_scale, 4, &M->hc_head_scale);
    if (!rc) rc = w_up(M->vk, &v, &M->hc_head_fn);
    if (!rc) rc = w_up(M->vk, &M->ref->head, &M->head);
    uint32_t zeros[MS_VK_PREFILL] = {0};
    float ones[MS_VK_PREFILL];
    for (uint32_t i = 0; i < MS_VK_PREFILL; i++) ones[i] = 1.0f;
    if (!rc) rc = buf_up(M->vk, zeros, 4, &M->sh_slots);
    if (!rc) rc = buf_up(M->vk, zeros, sizeof zeros, &M->zero_idx);
    if (!rc) rc = buf_up(M->vk, ones, sizeof ones, &M->ones);
    if (rc) {
        if (err && err_len && !err[0]) snprintf(err, err_len, "uploading the weights: %s", ms_strerror(rc));
        goto fail;
    }
    for (uint32_t li = 0; li < c->n_layers; li++)
        if ((rc = up_layer(M, li, err, err_len)) != 0) goto fail;
    return 0;
fail:
    vk_model_close(e);
    return rc;
}

/* ------------------------------------------------------------------ sessions */

static void vk_session_free(ms_session *s) {
    vk_session *S = s->backend;
    if (!S) return;
    ms_vk *vk = S->M->vk;
    for (uint32_t i = 0; i <= MS_VK_BATCH + 1; i++) ms_vk_cmd_free(S->cmd[i]);
    ms_vk_cmd_free(S->cmd_prof);
    ms_vk_cmd_free(S->cmd_tap);
    ms_vk_buf_free(vk, &S->tap_host);
    ms_free(S->tap_off);
    ms_free(S->tap_tmp);
    ms_free(S->mark_cls);
    ms_free(S->mark_disp);
    ms_free(S->mark_ns);
    const ms_v4_config *c = &S->M->ref->cfg;
    if (S->ls)
        for (uint32_t li = 0; li < c->n_layers; li++) {
            vk_layer_state *st = &S->ls[li];
            ms_vk_buf *b[] = {&st->ring, &st->cmp_kv, &st->cmp_score, &st->cmp_rows, &st->idx_kv,
                              &st->idx_score, &st->idx_rows};
            for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) ms_vk_buf_free(vk, b[i]);
        }
    ms_free(S->ls);
    ms_vk_buf *b[] = {&S->step_host, &S->step, &S->h[0], &S->h[1], &S->x, &S->y, &S->ysh, &S->zeros,
                      &S->part, &S->moe_scratch, &S->nf_flags, &S->nf_host, &S->post, &S->comb, &S->qr, &S->q, &S->kv, &S->o, &S->u, &S->u_full,
                      &S->ca, &S->cg, &S->ia, &S->ig, &S->qi, &S->wi, &S->idx_scratch, &S->sel,
                      &S->att_scratch, &S->glog, &S->route, &S->rw, &S->act, &S->sh_act, &S->hfin,
                      &S->logits, &S->logits_host};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) ms_vk_buf_free(vk, b[i]);
    ms_free(S);
    s->backend = NULL;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Fills every compressor score with -inf (empty slots) and the rest of the state with zeros. */
static int state_reset(vk_session *S) {
    const ms_v4_config *c = &S->M->ref->cfg;
    ms_vk_cmd *cmd = S->cmd[0];
    int rc = ms_vk_cmd_begin(cmd);
    for (uint32_t li = 0; !rc && li < c->n_layers; li++) {
        vk_layer_state *st = &S->ls[li];
        ms_vk_cmd_fill(cmd, whole(&st->ring), 0);
        if (S->M->layers[li].ratio) {
            ms_vk_cmd_fill(cmd, whole(&st->cmp_kv), 0);
            ms_vk_cmd_fill(cmd, whole(&st->cmp_score), 0xff800000u); /* -inf */
            ms_vk_cmd_fill(cmd, whole(&st->cmp_rows), 0);
        }
        if (S->M->layers[li].ratio == 4) {
            ms_vk_cmd_fill(cmd, whole(&st->idx_kv), 0);
            ms_vk_cmd_fill(cmd, whole(&st->idx_score), 0xff800000u);
            ms_vk_cmd_fill(cmd, whole(&st->idx_rows), 0);
        }
    }
    if (!rc) rc = ms_vk_cmd_end(cmd);
    return rc ? rc : ms_vk_cmd_run(cmd);
}

static int vk_session_create(ms_session *s) {
    vk_model *M = s->e->backend;
    const ms_v4_config *c = &M->ref->cfg;
    ms_vk *vk = M->vk;
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    vk_session *S = ms_calloc(1, sizeof *S);
    if (!S) return -MS_E_NOMEM;
    s->backend = S;
    S->M = M;
    const uint64_t B = MS_VK_PREFILL, hd = c->head_dim, dim = c->dim, hc = c->hc_mult;
    const uint64_t qdim = (uint64_t)c->n_heads * hd, mixn = (2 + hc) * hc;
    const uint64_t nI = c->index_n_heads, dI = c->index_head_dim, K = c->n_active_experts;
    uint64_t ring = (uint64_t)c->window + B - 1;
    S->ring_len = (uint32_t)(ring < s->max_tokens ? ring : s->max_tokens);
    S->ls = ms_calloc(c->n_layers, sizeof *S->ls);
    int rc = S->ls ? 0 : -MS_E_NOMEM;
    uint32_t max_idx_rows = 1;
    for (uint32_t li = 0; !rc && li < c->n_layers; li++) {
        vk_layer_state *st = &S->ls[li];
        const vk_layer *L = &M->layers[li];
        rc = buf_new(vk, MS_VK_MEM_DEVICE, (uint64_t)S->ring_len * hd * 4, &st->ring);
        if (!rc && L->ratio) {
            uint64_t w = (uint64_t)L->cmp.coff * hd, slots = (uint64_t)L->cmp.coff * L->ratio;
            st->cmp_n_rows = s->max_tokens / L->ratio;
            rc = buf_new(vk, MS_VK_MEM_DEVICE, slots * w * 4, &st->cmp_kv);
            if (!rc) rc = buf_new(vk, MS_VK_MEM_DEVICE, slots * w * 4, &st->cmp_score);
            if (!rc) rc = buf_new(vk, MS_VK_MEM_DEVICE, (uint64_t)(st->cmp_n_rows ? st->cmp_n_rows : 1) * hd * 4, &st->cmp_rows);
        }
        if (!rc && L->ratio == 4) {
            uint64_t w = 2 * dI, slots = 8;
            st->idx_n_rows = s->max_tokens / 4;
            if (st->idx_n_rows > max_idx_rows) max_idx_rows = st->idx_n_rows;
            rc = buf_new(vk, MS_VK_MEM_DEVICE, slots * w * 4, &st->idx_kv);
            if (!rc) rc = buf_new(vk, MS_VK_MEM_DEVICE, slots * w * 4, &st->idx_score);
            if (!rc) rc = buf_new(vk, MS_VK_MEM_DEVICE, (uint64_t)(st->idx_n_rows ? st->idx_n_rows : 1) * dI * 4, &st->idx_rows);
        }
    }
    /* the step buffer: position, token ids, RoPE tables (base and compress frequencies at p, and
     * compress frequencies at each ratio's block start p + 1 - r) */
    uint64_t a = caps->min_storage_offset_align > 16 ? caps->min_storage_offset_align : 16;
    uint64_t cs_bytes = B * c->rope_dim * 4, o = 0;
    vk_step_layout *sl = &S->sl;
    sl->pos = o, o = align_up(o + 16, a);
    sl->tokens = o, o = align_up(o + B * 4, a);
    sl->cs_base = o, o = align_up(o + cs_bytes, a);
    sl->cs_cmp = o, o = align_up(o + cs_bytes, a);
    for (uint32_t i = 0; i < M->n_ratios; i++) sl->cs_ratio[i] = o, o = align_up(o + cs_bytes, a);
    sl->bytes = o;
    if (!rc) rc = buf_new(vk, MS_VK_MEM_STAGING, sl->bytes, &S->step_host);
    if (!rc) rc = buf_new(vk, MS_VK_MEM_DEVICE, sl->bytes, &S->step);
    const uint64_t topk = c->index_topk ? c->index_topk : 1;
    /* the attention's split records: the most any layer needs at any batch size */
    uint64_t att_scratch = 16;
    for (uint32_t li = 0; li < c->n_layers; li++)
        for (uint32_t i = 1; i <= MS_VK_BATCH + 1; i++) {
            const uint32_t r = M->layers[li].ratio, b = i <= MS_VK_BATCH ? i : MS_VK_PREFILL;
            uint64_t need = ms_vk_attention_scratch_bytes(vk, b, c->n_heads, c->head_dim, c->window, r,
                                                          r == 4 ? c->index_topk : 0,
                                                          r ? S->ls[li].cmp_n_rows : 0, NULL);
            if (need > att_scratch) att_scratch = need;
        }
    const uint64_t si = (uint64_t)c->moe_inter_dim * c->n_shared_experts;
    S->n_slices = ms_vk_hc_mix_slices(vk, c->dim, c->hc_mult);
    uint64_t moe_scratch = ms_vk_moe_grouped_scratch_bytes(MS_VK_PREFILL, (uint32_t)K, c->n_routed_experts, c->dim,
                                                           c->moe_inter_dim);
    uint64_t sh_scratch = ms_vk_moe_grouped_scratch_bytes(MS_VK_PREFILL, 1, 1, c->dim, (uint32_t)si);
    if (sh_scratch > moe_scratch) moe_scratch = sh_scratch;
    struct {
        ms_vk_buf *b;
        uint64_t bytes;
    } bufs[] = {
        {&S->h[0], B * hc * dim * 4}, {&S->h[1], B * hc * dim * 4}, {&S->x, B * dim * 4},
        {&S->y, B * dim * 4}, {&S->ysh, B * dim * 4}, {&S->zeros, B * dim * 4},
        {&S->part, B * S->n_slices * (mixn + 1) * 4},
        {&S->moe_scratch, moe_scratch}, {&S->nf_flags, B * 4}, {&S->post, B * hc * 4}, {&S->comb, B * hc * hc * 4},
        {&S->qr, B * c->q_lora_rank * 4}, {&S->q, B * qdim * 4}, {&S->kv, B * hd * 4},
        {&S->o, B * qdim * 4}, {&S->u, B * c->o_groups * c->o_lora_rank * 4},
        {&S->u_full, B * c->o_groups * c->o_lora_rank * 4}, {&S->ca, B * 2 * hd * 4},
        {&S->cg, B * 2 * hd * 4}, {&S->ia, B * 2 * dI * 4}, {&S->ig, B * 2 * dI * 4},
        {&S->qi, B * nI * dI * 4}, {&S->wi, B * nI * 4},
        {&S->idx_scratch, ms_vk_indexer_scratch_bytes(MS_VK_PREFILL, max_idx_rows, (uint32_t)topk)},
        {&S->sel, B * topk * 4},
        {&S->att_scratch, att_scratch},
        {&S->glog, B * c->n_routed_experts * 4}, {&S->route, B * K * 4}, {&S->rw, B * K * 4},
        {&S->act, B * K * c->moe_inter_dim * 4}, {&S->sh_act, B * si * 4}, {&S->hfin, B * dim * 4},
        {&S->logits, B * c->vocab_size * 4},
    };
    for (size_t i = 0; !rc && i < sizeof bufs / sizeof bufs[0]; i++)
        rc = buf_new(vk, MS_VK_MEM_DEVICE, bufs[i].bytes, bufs[i].b);
    if (!rc) rc = buf_new(vk, MS_VK_MEM_READBACK, B * c->vocab_size * 4, &S->logits_host);
    if (!rc) rc = buf_new(vk, MS_VK_MEM_READBACK, B * 4, &S->nf_host);
    if (!rc) rc = ms_vk_cmd_create(vk, 0, &S->cmd[0]);
    if (!rc) {
        ms_vk_cmd_begin(S->cmd[0]);
        ms_vk_cmd_fill(S->cmd[0], whole(&S->zeros), 0);
        rc = ms_vk_cmd_end(S->cmd[0]);
        if (!rc) rc = ms_vk_cmd_run(S->cmd[0]);
    }
    /* A session that can never hold more compressed blocks than the indexer selects needs no
     * indexer: its selection is always every block, in order (the same list the indexer would
     * write), so sel holds 0, 1, ... for every token once and the indexer is not recorded. */
    S->select_all = c->index_topk && s->max_tokens / 4 <= c->index_topk;
    if (!rc && S->select_all) {
        uint32_t *all = ms_malloc((size_t)B * topk * 4);
        if (!all) rc = -MS_E_NOMEM;
        for (uint64_t i = 0; !rc && i < B * topk; i++) all[i] = (uint32_t)(i % topk);
        if (!rc) rc = ms_vk_upload(vk, &S->sel, 0, all, B * topk * 4);
        ms_free(all);
    }
    if (!rc) rc = state_reset(S);
    if (rc) vk_session_free(s);
    return rc;
}

static void vk_reset(ms_session *s) {
    vk_session *S = s->backend;
    S->nf_seen = false;
    int rc = state_reset(S);
    if (rc) MS_LOGE("vulkan: resetting a session's KV state failed: %s", ms_strerror(rc));
}

/* ------------------------------------------------------------------ recording */

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_) return rc_;                                                                       \
    } while (0)

static ms_vk_range at(const ms_vk_buf *b, uint64_t off) {
    return ms_vk_buf_range(b, off, b->size - off);
}

/* End of an op class in the profiled recording: a timestamp after all work so far. */
static int mark(vk_session *S, ms_vk_cmd *cmd, int cls) {
    if (!S->rec_prof) return 0;
    if (S->n_marks == S->max_marks) return -MS_E_RANGE;
    ms_vk_cmd_counts k;
    ms_vk_cmd_get_counts(cmd, &k);
    TRY(ms_vk_cmd_timestamp(cmd, NULL));
    S->mark_cls[S->n_marks] = (uint8_t)cls;
    S->mark_disp[S->n_marks] = k.dispatches;
    S->n_marks++;
    return 0;
}

/* y = W x for n tokens: the GEMV kernels up to MS_VK_BATCH tokens, the GEMM ones above. No
 * barrier: the caller puts one after each wave of independent work. */
static int mm(ms_vk_cmd *cmd, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride, ms_vk_range y,
              uint32_t y_stride, uint32_t n) {
    return n > MS_VK_BATCH ? ms_vk_rec_gemm(cmd, w, x, x_stride, y, y_stride, n, NULL)
                           : ms_vk_rec_gemv(cmd, w, x, x_stride, y, y_stride, n, NULL);
}

static int gemv(ms_vk_cmd *cmd, const ms_vk_weight *w, const ms_vk_buf *x, uint32_t x_stride,
                const ms_vk_buf *y, uint32_t y_stride, uint32_t n) {
    return mm(cmd, w, whole(x), x_stride, whole(y), y_stride, n);
}

/* Attention sub-layer of layer li for n tokens: x (after attn_norm) -> y.
 * Recorded in waves of independent work with one barrier after each (a barrier costs ~3.6 us on
 * the H200, far more than a dispatch): every projection of x; the norms and the compressors'
 * pooling; wq_b, the indexer's queries, the latent's RoPE and the compressors' emission; the
 * queries' RoPE and the latent's rounding; the ring write and the indexer queries' rounding;
 * then the indexer, attention and the output projection, which depend on all of it. */
static int rec_attention(vk_session *S, ms_vk_cmd *cmd, uint32_t li, uint32_t n) {
    const vk_model *M = S->M;
    const ms_v4_config *c = &M->ref->cfg;
    const vk_layer *L = &M->layers[li];
    vk_layer_state *st = &S->ls[li];
    const vk_step_layout *sl = &S->sl;
    const uint32_t dim = c->dim, H = c->n_heads, hd = c->head_dim, rd = c->rope_dim, nope = hd - rd;
    const uint32_t ql = c->q_lora_rank, G = c->o_groups, ol = c->o_lora_rank, qdim = H * hd;
    const uint32_t nI = c->index_n_heads, dI = c->index_head_dim, r = L->ratio;
    const float eps = (float)c->rms_norm_eps;
    const uint64_t cs_bytes = (uint64_t)n * rd * 4;
    ms_vk_range cs = ms_vk_buf_range(&S->step, r ? sl->cs_cmp : sl->cs_base, cs_bytes);
    ms_vk_range csr = ms_vk_buf_range(&S->step, sl->cs_ratio[L->cs_ratio_slot], cs_bytes);
    ms_vk_range pos = ms_vk_buf_range(&S->step, sl->pos, 4);
    /* the indexer runs unless this session can never hold more blocks than it selects */
    const bool idx = r == 4 && !S->select_all;
    const uint32_t cw = r ? L->cmp.coff * hd : 0;
#define IDX_CMP(phase)                                                                                 \
    ms_vk_rec_compress_phase(cmd, whole(&S->ia), whole(&S->ig), 2 * dI, whole(&L->idx_cmp.ape),        \
                             whole(&L->idx_cmp.norm), csr, pos, whole(&st->idx_kv), whole(&st->idx_score), \
                             whole(&st->idx_rows), n, 4, 2, dI, rd, st->idx_n_rows, eps,               \
                             M->fq_idx ? 2 : 0, true, phase)
#define CMP(phase)                                                                                     \
    ms_vk_rec_compress_phase(cmd, whole(&S->ca), whole(&S->cg), cw, whole(&L->cmp.ape),                \
                             whole(&L->cmp.norm), csr, pos, whole(&st->cmp_kv), whole(&st->cmp_score),  \
                             whole(&st->cmp_rows), n, r, L->cmp.coff, hd, rd, st->cmp_n_rows, eps,     \
                             M->fq_kv ? 1 : 0, false, phase)

    /* 1: every projection of x */
    TRY(gemv(cmd, &L->wq_a, &S->x, dim, &S->qr, ql, n));
    TRY(gemv(cmd, &L->wkv, &S->x, dim, &S->kv, hd, n));
    if (idx) {
        TRY(gemv(cmd, &L->idx_wproj, &S->x, dim, &S->wi, nI, n));
        TRY(gemv(cmd, &L->idx_cmp.wkv, &S->x, dim, &S->ia, 2 * dI, n));
        TRY(gemv(cmd, &L->idx_cmp.wgate, &S->x, dim, &S->ig, 2 * dI, n));
    }
    if (r) {
        TRY(gemv(cmd, &L->cmp.wkv, &S->x, dim, &S->ca, cw, n));
        TRY(gemv(cmd, &L->cmp.wgate, &S->x, dim, &S->cg, cw, n));
    }
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, P_ATTN_PROJ));
    /* 2: q_norm, kv_norm + the latent's RoPE, the compressors' pooling */
    TRY(ms_vk_rec_rmsnorm(cmd, whole(&S->qr), whole(&L->q_norm), MS_WENC_BF16, whole(&S->qr), ql, n, eps));
    TRY(ms_vk_rec_rope_norm(cmd, whole(&S->kv), cs, whole(&L->kv_norm), n, 1, hd, hd, hd, nope, rd, true, eps,
                            false));
    if (idx) TRY(IDX_CMP(MS_VK_COMPRESS_POOL));
    if (r) TRY(CMP(MS_VK_COMPRESS_POOL));
    ms_vk_cmd_barrier(cmd);
    /* 3: wq_b, the indexer's queries, the latent's e4m3, the compressors' emission */
    TRY(gemv(cmd, &L->wq_b, &S->qr, ql, &S->q, qdim, n));
    if (idx) TRY(gemv(cmd, &L->idx_wq_b, &S->qr, ql, &S->qi, nI * dI, n));
    if (M->fq_kv) TRY(ms_vk_rec_fq(cmd, whole(&S->kv), n, hd, nope, 1, false));
    if (idx) TRY(IDX_CMP(MS_VK_COMPRESS_EMIT));
    if (r) TRY(CMP(MS_VK_COMPRESS_EMIT));
    ms_vk_cmd_barrier(cmd);
    /* 4: per-head RMS + RoPE of the queries, the indexer queries' RoPE, the latent into the ring */
    TRY(ms_vk_rec_rope(cmd, whole(&S->q), cs, n, H, hd, hd, qdim, nope, rd, true, eps, false));
    if (idx) TRY(ms_vk_rec_rope(cmd, whole(&S->qi), cs, n, nI, dI, dI, nI * dI, dI - rd, rd, false, eps, false));
    TRY(ms_vk_rec_kv_store(cmd, whole(&S->kv), whole(&st->ring), pos, n, hd, S->ring_len));
    ms_vk_cmd_barrier(cmd);
    /* 5: the indexer queries' Hadamard + FP4 */
    if (idx) {
        TRY(ms_vk_rec_fq(cmd, whole(&S->qi), n * nI, dI, dI, M->fq_idx ? 2 : 0, true));
        ms_vk_cmd_barrier(cmd);
    }
    TRY(mark(S, cmd, P_ATTN_PREP));
#undef IDX_CMP
#undef CMP
    if (idx) {
        TRY(ms_vk_rec_indexer(cmd, whole(&S->qi), whole(&S->wi), whole(&st->idx_rows), pos,
                              whole(&S->idx_scratch), whole(&S->sel), n, nI, dI, 4, c->index_topk,
                              st->idx_n_rows ? st->idx_n_rows : 1, M->idx_w_scale));
        ms_vk_cmd_barrier(cmd);
        TRY(mark(S, cmd, P_INDEXER));
    }

    /* sparse attention over window + compressed rows, then the inverse RoPE of the output */
    TRY(ms_vk_rec_attention(cmd, whole(&S->q), whole(&st->ring), r ? whole(&st->cmp_rows) : whole(&st->ring),
                            whole(&S->sel), whole(&L->sink), pos, whole(&S->o),
                            whole(&S->att_scratch), n, H, hd, c->window, S->ring_len, r,
                            r == 4 ? c->index_topk : 0, r ? st->cmp_n_rows : 0,
                            (float)(1.0 / sqrt((double)hd))));
    ms_vk_cmd_barrier(cmd);
    TRY(ms_vk_rec_rope(cmd, whole(&S->o), cs, n, H, hd, hd, qdim, nope, rd, false, eps, true));
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, P_ATTENTION));

    /* grouped output projection: group g's heads through its rows of wo_a, then wo_b; one
     * block-diagonal GEMV for all groups (in GEMV batches of up to MS_VK_BATCH tokens), or for
     * groups that are not whole 128-row blocks the whole matrix on each group's heads and a copy
     * of the group's rows */
    uint32_t gin = qdim / G;
    for (uint32_t t0 = 0, nb; L->wo_a_grouped && t0 < n; t0 += nb) {
        nb = n - t0 < MS_VK_BATCH ? n - t0 : MS_VK_BATCH;
        TRY(ms_vk_rec_gemv_grouped(cmd, &L->wo_a, at(&S->o, (uint64_t)t0 * qdim * 4), qdim, ol, gin,
                                   at(&S->u, (uint64_t)t0 * G * ol * 4), G * ol, nb, NULL));
    }
    for (uint32_t g = 0; !L->wo_a_grouped && g < G; g++) {
        TRY(mm(cmd, &L->wo_a, at(&S->o, (uint64_t)g * gin * 4), qdim, whole(&S->u_full), G * ol, n));
        ms_vk_cmd_barrier(cmd);
        for (uint32_t t = 0; t < n; t++) {
            uint64_t off = ((uint64_t)t * G * ol + (uint64_t)g * ol) * 4;
            ms_vk_cmd_copy(cmd, ms_vk_buf_range(&S->u_full, off, (uint64_t)ol * 4),
                           ms_vk_buf_range(&S->u, off, (uint64_t)ol * 4));
        }
        ms_vk_cmd_barrier(cmd);
    }
    ms_vk_cmd_barrier(cmd);
    TRY(gemv(cmd, &L->wo_b, &S->u, G * ol, &S->y, dim, n));
    ms_vk_cmd_barrier(cmd);
    return mark(S, cmd, P_OPROJ);
}

/* MoE sub-layer of layer li for n tokens: x (after ffn_norm) -> y, in four waves: the gate GEMV
 * and the shared expert's gate/up; the router and the shared expert's down projection (into ysh);
 * the routed experts' gate/up; their down projections summed onto ysh. */
static int rec_moe(vk_session *S, ms_vk_cmd *cmd, uint32_t li, uint32_t n) {
    const vk_model *M = S->M;
    const ms_v4_config *c = &M->ref->cfg;
    const vk_layer *L = &M->layers[li];
    const uint32_t E = c->n_routed_experts, K = c->n_active_experts;
    const float limit = (float)c->swiglu_limit;
    ms_vk_range tokens = ms_vk_buf_range(&S->step, S->sl.tokens, (uint64_t)n * 4);
    bool hash = L->tid2eid.buffer != VK_NULL_HANDLE;
    if (n > MS_VK_BATCH) {
        /* prefill: the experts grouped by expert, so each expert's weights are read once per tile
         * of its tokens (the shared expert: all n tokens on one record) */
        TRY(gemv(cmd, &L->gate, &S->x, c->dim, &S->glog, E, n));
        ms_vk_cmd_barrier(cmd);
        TRY(ms_vk_rec_router(cmd, whole(&S->glog), hash ? tokens : whole(&L->gate_bias), tokens,
                             hash ? whole(&L->tid2eid) : tokens, whole(&S->route), whole(&S->rw), n, E, K,
                             c->vocab_size, hash, c->norm_topk_prob, (float)c->routed_scaling_factor));
        TRY(ms_vk_rec_moe_grouped(cmd, &L->sh_layout, whole(&L->sh_pool), whole(&M->sh_slots), 1,
                                  whole(&M->zero_idx), whole(&M->ones), whole(&S->x), whole(&S->zeros),
                                  whole(&S->ysh), whole(&S->moe_scratch), n, 1, limit));
        ms_vk_cmd_barrier(cmd);
        TRY(ms_vk_rec_moe_grouped(cmd, &L->ex_layout, whole(&L->pool), whole(&L->slots), E, whole(&S->route),
                                  whole(&S->rw), whole(&S->x), whole(&S->ysh), whole(&S->y),
                                  whole(&S->moe_scratch), n, K, limit));
        ms_vk_cmd_barrier(cmd);
        return 0;
    }
    TRY(gemv(cmd, &L->gate, &S->x, c->dim, &S->glog, E, n));
    TRY(ms_vk_rec_moe_up(cmd, &L->sh_layout, whole(&L->sh_pool), whole(&M->sh_slots), 1,
                         whole(&M->zero_idx), whole(&M->ones), whole(&S->x), whole(&S->sh_act), n, 1, limit));
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, P_GATE));
    TRY(ms_vk_rec_router(cmd, whole(&S->glog), hash ? tokens : whole(&L->gate_bias), tokens,
                         hash ? whole(&L->tid2eid) : tokens, whole(&S->route), whole(&S->rw), n, E, K,
                         c->vocab_size, hash, c->norm_topk_prob, (float)c->routed_scaling_factor));
    TRY(ms_vk_rec_moe_down(cmd, &L->sh_layout, whole(&L->sh_pool), whole(&M->sh_slots), 1,
                           whole(&M->zero_idx), whole(&S->sh_act), whole(&S->zeros), whole(&S->ysh), n, 1));
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, P_ROUTER));
    TRY(ms_vk_rec_moe_up(cmd, &L->ex_layout, whole(&L->pool), whole(&L->slots), E, whole(&S->route),
                         whole(&S->rw), whole(&S->x), whole(&S->act), n, K, limit));
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, P_EXPERTS_UP));
    TRY(ms_vk_rec_moe_down(cmd, &L->ex_layout, whole(&L->pool), whole(&L->slots), E, whole(&S->route),
                           whole(&S->act), whole(&S->ysh), whole(&S->y), n, K));
    ms_vk_cmd_barrier(cmd);
    return mark(S, cmd, P_EXPERTS_DOWN);
}

/* mHC between sub-layers: the previous sub-layer's hc_post (post: there was one) fused into this
 * one's split-K mixing GEMV (hc_mix: streams h[*cur] -> h[*cur ^ 1], *cur flips), then hc_pre with
 * the sub-layer's norm fused in: streams -> x, post, comb. Two dispatches, two barriers. */
static int rec_hc(vk_session *S, ms_vk_cmd *cmd, uint32_t *cur, bool post, uint32_t prev_code,
                  const ms_vk_weight *fn, const ms_vk_buf *scale, const ms_vk_buf *base, const ms_vk_buf *norm,
                  const ms_vk_buf *x, bool head, uint32_t n) {
    const ms_v4_config *c = &S->M->ref->cfg;
    const uint32_t hc = c->hc_mult, dim = c->dim;
    const ms_vk_buf *res = &S->h[*cur];
    if (post) {
        /* the previous sub-layer's streams (prev_code: 2 * layer, + 1 for the MoE) watched */
        *cur ^= 1;
        TRY(ms_vk_rec_hc_mix_watch(cmd, fn, whole(&S->y), whole(res), whole(&S->post), whole(&S->comb),
                                   whole(&S->h[*cur]), whole(&S->part), whole(&S->nf_flags), prev_code, dim, hc, n));
    } else {
        TRY(ms_vk_rec_hc_mix(cmd, fn, whole(&S->y), whole(res), whole(&S->post), whole(&S->comb),
                             whole(&S->h[*cur]), whole(&S->part), dim, hc, n, false));
    }
    ms_vk_cmd_barrier(cmd);
    TRY(ms_vk_rec_hc_pre_parts(cmd, whole(&S->part), S->n_slices, whole(&S->h[*cur]), whole(scale), whole(base),
                               whole(x), whole(&S->post), whole(&S->comb), whole(norm), dim, hc, n,
                               c->hc_sinkhorn_iters, (float)c->hc_eps, (float)c->rms_norm_eps, head));
    ms_vk_cmd_barrier(cmd);
    return mark(S, cmd, P_HC_PRE);
}

/* The whole forward pass of n <= MS_VK_PREFILL tokens whose step data is in S->step_host. */
static int record(vk_session *S, ms_vk_cmd *cmd, uint32_t n) {
    const vk_model *M = S->M;
    const ms_v4_config *c = &M->ref->cfg;
    uint32_t hc = c->hc_mult, dim = c->dim;
    TRY(ms_vk_cmd_begin(cmd));
    S->n_marks = 0;
    ms_vk_cmd_copy(cmd, whole(&S->step_host), whole(&S->step));
    ms_vk_cmd_fill(cmd, whole(&S->nf_flags), 0xFFFFFFFFu);
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, 0xff));
    TRY(ms_vk_rec_hc_embed(cmd, ms_vk_buf_range(&S->step, S->sl.tokens, (uint64_t)n * 4), whole(&M->embed),
                           whole(&S->h[0]), c->vocab_size, dim, hc, n));
    ms_vk_cmd_barrier(cmd);
    TRY(mark(S, cmd, P_EMBED));
    uint32_t cur = 0;
    ms_vk_cmd_counts k0, k1;
    ms_vk_cmd_get_counts(cmd, &k0);
    for (uint32_t li = 0; li < c->n_layers; li++) {
        const vk_layer *L = &M->layers[li];
        TRY(rec_hc(S, cmd, &cur, li > 0, li ? 2 * li - 1 : 0, &L->hc_attn_fn, &L->hc_attn_scale, &L->hc_attn_base, &L->attn_norm,
                   &S->x, false, n));
        if (li > 0) TRY(tap(S, cmd, li - 1, T_FFN_H, &S->h[cur])); /* the hc_post fused into hc_mix */
        TRY(tap(S, cmd, li, T_ATTN_X, &S->x));
        TRY(rec_attention(S, cmd, li, n));
        TRY(tap_attention(S, cmd, li));
        TRY(rec_hc(S, cmd, &cur, true, 2 * li, &L->hc_ffn_fn, &L->hc_ffn_scale, &L->hc_ffn_base, &L->ffn_norm, &S->x,
                   false, n));
        TRY(tap(S, cmd, li, T_ATTN_H, &S->h[cur]));
        TRY(tap(S, cmd, li, T_FFN_X, &S->x));
        TRY(rec_moe(S, cmd, li, n));
        TRY(tap_moe(S, cmd, li));
    }
    ms_vk_cmd_get_counts(cmd, &k1);
    if (n == 1) {
        S->layer_dispatches = k1.dispatches - k0.dispatches;
        S->layer_barriers = k1.barriers - k0.barriers;
    }
    /* the last hc_post, hc_head with the final norm, lm_head */
    TRY(rec_hc(S, cmd, &cur, true, 2 * c->n_layers - 1, &M->hc_head_fn, &M->hc_head_scale, &M->hc_head_base, &M->norm, &S->hfin,
               true, n));
    TRY(tap(S, cmd, c->n_layers - 1, T_FFN_H, &S->h[cur]));
    TRY(gemv(cmd, &M->head, &S->hfin, dim, &S->logits, c->vocab_size, n));
    ms_vk_cmd_barrier(cmd);
    ms_vk_cmd_copy(cmd, ms_vk_buf_range(&S->logits, 0, (uint64_t)n * c->vocab_size * 4),
                   whole(&S->logits_host));
    ms_vk_cmd_copy(cmd, whole(&S->nf_flags), whole(&S->nf_host));
    TRY(mark(S, cmd, P_HEAD));
    ms_vk_cmd_get_counts(cmd, &k1);
    if (n == 1) S->total_dispatches = k1.dispatches;
    return ms_vk_cmd_end(cmd);
}

/* The step data of a batch: position, token ids and the RoPE tables. */
static void write_step(vk_session *S, const ms_ref_model *R, const uint32_t *tokens, uint32_t n, uint32_t pos0) {
    const ms_v4_config *c = &R->cfg;
    uint8_t *base = S->step_host.map;
    const vk_step_layout *sl = &S->sl;
    memcpy(base + sl->pos, &pos0, 4);
    memcpy(base + sl->tokens, tokens, (size_t)n * 4);
    size_t row = (size_t)c->rope_dim; /* floats per token: rope_dim/2 pairs of (cos, sin) */
    for (uint32_t t = 0; t < n; t++) {
        uint64_t p = (uint64_t)pos0 + t;
        ms_ref_rope_table(R->freq_base, c->rope_dim, p, (float *)(base + sl->cs_base) + t * row);
        ms_ref_rope_table(R->freq_compress, c->rope_dim, p, (float *)(base + sl->cs_cmp) + t * row);
        for (uint32_t i = 0; i < S->M->n_ratios; i++) {
            uint32_t r = S->M->ratios[i];
            uint64_t q = p + 1 >= r ? p + 1 - r : 0; /* used only where token t completes a block */
            ms_ref_rope_table(R->freq_compress, c->rope_dim, q, (float *)(base + sl->cs_ratio[i]) + t * row);
        }
    }
}

/* Adds the last profiled run's class times to the sums. */
static int prof_add(vk_session *S) {
    TRY(ms_vk_cmd_timestamps(S->cmd_prof, S->mark_ns, S->n_marks));
    uint32_t disp[P_N] = {0};
    for (uint32_t i = 1; i < S->n_marks; i++) {
        uint32_t k = S->mark_cls[i];
        S->prof_ns[k] += S->mark_ns[i] - S->mark_ns[i - 1];
        disp[k] += S->mark_disp[i] - S->mark_disp[i - 1];
    }
    memcpy(S->prof_disp, disp, sizeof disp);
    S->prof_steps++;
    return 0;
}

static int nf_check(vk_session *S, uint32_t pos0, uint32_t b);

/* logits: [n][vocab] every row, or (last_only) [vocab] the last one. */
static int forward_rows(ms_session *s, const uint32_t *tokens, uint32_t n, float *logits, bool last_only) {
    vk_session *S = s->backend;
    const ms_v4_config *c = &S->M->ref->cfg;
    ms_vk *vk = S->M->vk;
    uint32_t pos = s->pos;
    for (uint32_t t0 = 0, b; t0 < n; t0 += b) {
        b = n - t0 >= MS_VK_PREFILL ? MS_VK_PREFILL : n - t0 < MS_VK_BATCH ? n - t0 : MS_VK_BATCH;
        const uint32_t slot = b == MS_VK_PREFILL ? MS_VK_BATCH + 1 : b;
        bool prof = S->profiling && b == 1;
        bool tapping = s->tap && b == 1; /* the tap recording, not profiled */
        if (tapping) prof = false;
        ms_vk_cmd **cmd = prof ? &S->cmd_prof : &S->cmd[slot];
        bool *recorded = prof ? &S->prof_recorded : &S->recorded[slot];
        if (tapping) cmd = &S->cmd_tap, recorded = &S->tap_recorded;
        if (!*cmd) TRY(ms_vk_cmd_create(vk, prof ? S->max_marks : 0, cmd));
        if (!*recorded) {
            S->rec_prof = prof;
            S->rec_tap = tapping;
            int rc = record(S, *cmd, b);
            S->rec_prof = false;
            S->rec_tap = false;
            if (rc) {
                MS_LOGE("vulkan: recording the forward pass of %u token(s) failed: %s", b, ms_strerror(rc));
                return rc;
            }
            *recorded = true;
        }
        write_step(S, S->M->ref, tokens + t0, b, pos + t0);
        TRY(ms_vk_cmd_run(*cmd));
        if (prof) TRY(prof_add(S));
        TRY(ms_vk_buf_invalidate(vk, &S->logits_host));
        TRY(nf_check(S, pos + t0, b));
        if (!last_only)
            memcpy(logits + (size_t)t0 * c->vocab_size, S->logits_host.map, (size_t)b * c->vocab_size * 4);
        else if (t0 + b == n)
            memcpy(logits, (const float *)S->logits_host.map + (size_t)(b - 1) * c->vocab_size,
                   (size_t)c->vocab_size * 4);
        if (tapping) TRY(tap_deliver(s, pos + t0));
    }
    return 0;
}

static int vk_forward(ms_session *s, const uint32_t *tokens, uint32_t n, float *logits) {
    return forward_rows(s, tokens, n, logits, false);
}

static int vk_forward_last(ms_session *s, const uint32_t *tokens, uint32_t n, float *last) {
    return forward_rows(s, tokens, n, last, true);
}

static int vk_info(ms_engine *e, bool measure, ms_engine_info *out) {
    vk_model *M = e->backend;
    const ms_vk_caps *caps = ms_vk_get_caps(M->vk);
    snprintf(out->device, sizeof out->device, "%.120s (%.120s)", caps->device_name, caps->driver_name);
    if (!measure) return 0;
    uint64_t bytes = 1ull << 30;
    if (bytes > caps->max_storage_buffer_range) bytes = caps->max_storage_buffer_range & ~255ull;
    return ms_vk_measure_copy(M->vk, bytes, 7, &out->mem_gbs);
}

static void vk_stats(const ms_session *s, ms_session_stats *out) {
    const vk_session *S = s->backend;
    const ms_v4_config *c = &S->M->ref->cfg;
    for (uint32_t li = 0; li < c->n_layers; li++) {
        const vk_layer_state *st = &S->ls[li];
        out->kv_bytes += st->ring.size + st->cmp_kv.size + st->cmp_score.size + st->cmp_rows.size +
                         st->idx_kv.size + st->idx_score.size + st->idx_rows.size;
    }
    if (S->recorded[1]) {
        out->dispatches_per_layer = S->layer_dispatches / c->n_layers;
        out->barriers_per_layer = S->layer_barriers / c->n_layers;
        out->dispatches_total = S->total_dispatches;
    }
}

static int vk_set_profiling(ms_session *s, bool on) {
    vk_session *S = s->backend;
    const ms_vk_caps *caps = ms_vk_get_caps(S->M->vk);
    if (on && (!caps->timestamp_valid_bits || caps->timestamp_period_ns <= 0)) {
        MS_LOGE("vulkan: profiling needs timestamps, which the compute queue of %s does not have",
                caps->device_name);
        return -MS_E_UNSUPPORTED;
    }
    if (on && !S->mark_cls) {
        S->max_marks = 4 + S->M->ref->cfg.n_layers * 16;
        S->mark_cls = ms_malloc(S->max_marks);
        S->mark_disp = ms_malloc((size_t)S->max_marks * sizeof *S->mark_disp);
        S->mark_ns = ms_malloc((size_t)S->max_marks * sizeof *S->mark_ns);
        if (!S->mark_cls || !S->mark_disp || !S->mark_ns) return -MS_E_NOMEM;
    }
    S->profiling = on;
    if (on) {
        memset(S->prof_ns, 0, sizeof S->prof_ns);
        memset(S->prof_disp, 0, sizeof S->prof_disp);
        S->prof_steps = 0;
    }
    return 0;
}

static int vk_get_profile(const ms_session *s, ms_profile *out) {
    const vk_session *S = s->backend;
    out->steps = S->prof_steps;
    for (uint32_t k = 0; k < P_N; k++) {
        if (!S->prof_disp[k] && S->prof_ns[k] == 0) continue; /* a class this model lacks */
        out->cls[out->n_classes].name = prof_names[k];
        out->cls[out->n_classes].gpu_ns = S->prof_ns[k];
        out->cls[out->n_classes].dispatches = S->prof_disp[k];
        out->n_classes++;
    }
    return 0;
}

static int vk_nonfinite(const ms_session *s, uint32_t *pos, uint32_t *layer, const char **stage) {
    const vk_session *S = s->backend;
    if (!S->nf_seen) return -MS_E_NOT_FOUND;
    *pos = S->nf_pos;
    *layer = S->nf_layer;
    *stage = S->nf_stage;
    return 0;
}

/* After a batch of b tokens at pos0: the first token with a non-finite sub-layer output (the
 * earliest such sub-layer), else the first non-finite logit ("head"), as the CPU reference
 * records it; a record from an earlier position stays. */
static int nf_check(vk_session *S, uint32_t pos0, uint32_t b) {
    if (S->nf_seen) return 0;
    const ms_v4_config *c = &S->M->ref->cfg;
    TRY(ms_vk_buf_invalidate(S->M->vk, &S->nf_host));
    const uint32_t *fl = S->nf_host.map;
    const float *lg = S->logits_host.map;
    for (uint32_t t = 0; t < b && !S->nf_seen; t++) {
        if (fl[t] != 0xFFFFFFFFu) {
            S->nf_seen = true;
            S->nf_pos = pos0 + t, S->nf_layer = fl[t] / 2, S->nf_stage = fl[t] % 2 ? "moe" : "attention";
            break;
        }
        for (uint32_t v = 0; v < c->vocab_size; v++)
            if (!isfinite(lg[(size_t)t * c->vocab_size + v])) {
                S->nf_seen = true;
                S->nf_pos = pos0 + t, S->nf_layer = c->n_layers, S->nf_stage = "head";
                break;
            }
    }
    return 0;
}

const ms_backend_ops ms_backend_vk_ops = {
    .kind = MS_BACKEND_VULKAN,
    .model_open = vk_model_open,
    .model_close = vk_model_close,
    .session_create = vk_session_create,
    .session_free = vk_session_free,
    .forward = vk_forward,
    .forward_last = vk_forward_last,
    .reset = vk_reset,
    .nonfinite = vk_nonfinite,
    .info = vk_info,
    .stats = vk_stats,
    .set_profiling = vk_set_profiling,
    .get_profile = vk_get_profile,
    .set_tap = vk_set_tap,
};

/* ------------------------------------------------------------------ taps */

static const char *const tap_names[T_N] = {
    "attn.x", "attn.q", "attn.kv", "attn.cmp_rows", "attn.idx_score", "attn.idx_sel", "attn.o", "attn.y",
    "attn.h", "ffn.x", "ffn.score", "ffn.route", "ffn.weights", "ffn.y", "ffn.h"};

/* The bytes a one-token step's stage copies into tap_host (0: the layer has no such stage). The
 * compressed rows are the whole row buffer (the recording is replayed at every position; the
 * host reads the rows that exist), the indexer's scores the session's key count. */
static uint64_t tap_bytes(const vk_session *S, uint32_t li, int stage) {
    const ms_v4_config *c = &S->M->ref->cfg;
    const uint32_t r = S->M->layers[li].ratio;
    const uint64_t qdim = (uint64_t)c->n_heads * c->head_dim, hcd = (uint64_t)c->hc_mult * c->dim;
    switch (stage) {
    case T_ATTN_X: case T_ATTN_Y: case T_FFN_X: case T_FFN_Y: return (uint64_t)c->dim * 4;
    case T_ATTN_Q: case T_ATTN_O: return qdim * 4;
    case T_ATTN_KV: return (uint64_t)c->head_dim * 4;
    case T_CMP_ROWS: return r ? S->ls[li].cmp_rows.size : 0;
    case T_IDX_SCORE: return r == 4 && !S->select_all ? (uint64_t)S->ls[li].idx_n_rows * 4 : 0;
    case T_IDX_SEL: return r == 4 ? (uint64_t)c->index_topk * 4 : 0;
    case T_ATTN_H: case T_FFN_H: return hcd * 4;
    case T_FFN_SCORE: return (uint64_t)c->n_routed_experts * 4;
    case T_FFN_ROUTE: case T_FFN_WEIGHTS: return (uint64_t)c->n_active_experts * 4;
    default: return 0;
    }
}

/* In the tap recording: the start of src (this stage's bytes) into its place in tap_host. The
 * stage's work ended with a barrier; the barrier after the next wave orders the copy before any
 * later write of src. */
static int tap(vk_session *S, ms_vk_cmd *cmd, uint32_t li, int stage, const ms_vk_buf *src) {
    if (!S->rec_tap) return 0;
    uint64_t off = S->tap_off[(size_t)li * T_N + stage], bytes = tap_bytes(S, li, stage);
    if (off == UINT64_MAX || !bytes) return 0;
    ms_vk_cmd_copy(cmd, ms_vk_buf_range(src, 0, bytes), ms_vk_buf_range(&S->tap_host, off, bytes));
    return 0;
}

/* After rec_attention: its stages' buffers hold the layer's values until the next layer's. */
static int tap_attention(vk_session *S, ms_vk_cmd *cmd, uint32_t li) {
    if (!S->rec_tap) return 0;
    TRY(tap(S, cmd, li, T_ATTN_Q, &S->q));
    TRY(tap(S, cmd, li, T_ATTN_KV, &S->kv));
    TRY(tap(S, cmd, li, T_CMP_ROWS, &S->ls[li].cmp_rows));
    TRY(tap(S, cmd, li, T_IDX_SCORE, &S->idx_scratch)); /* the scores come first (vk.h) */
    TRY(tap(S, cmd, li, T_IDX_SEL, &S->sel));
    TRY(tap(S, cmd, li, T_ATTN_O, &S->o));
    return tap(S, cmd, li, T_ATTN_Y, &S->y);
}

static int tap_moe(vk_session *S, ms_vk_cmd *cmd, uint32_t li) {
    if (!S->rec_tap) return 0;
    TRY(tap(S, cmd, li, T_FFN_SCORE, &S->glog)); /* the gate logits; scores made on the host */
    TRY(tap(S, cmd, li, T_FFN_ROUTE, &S->route));
    TRY(tap(S, cmd, li, T_FFN_WEIGHTS, &S->rw));
    return tap(S, cmd, li, T_FFN_Y, &S->y);
}

/* After a tapped step at position pos: every stage to the tap, in the common meaning. */
static int tap_deliver(ms_session *s, uint32_t pos) {
    vk_session *S = s->backend;
    const vk_model *M = S->M;
    const ms_v4_config *c = &M->ref->cfg;
    TRY(ms_vk_buf_invalidate(M->vk, &S->tap_host));
    const uint8_t *base = S->tap_host.map;
    for (uint32_t li = 0; li < c->n_layers; li++) {
        const uint32_t r = M->layers[li].ratio;
        const vk_layer_state *st = &S->ls[li];
        for (int k = 0; k < T_N; k++) {
            uint64_t off = S->tap_off[(size_t)li * T_N + k];
            if (off == UINT64_MAX) continue;
            const void *data = base + off;
            uint64_t count = tap_bytes(S, li, k) / 4;
            ms_tap_kind kind = MS_TAP_F32;
            uint32_t nb = r ? (pos + 1) / r : 0; /* complete blocks at pos */
            if (r && nb > st->cmp_n_rows) nb = st->cmp_n_rows;
            uint32_t nb4 = r == 4 && nb > st->idx_n_rows ? st->idx_n_rows : nb;
            switch (k) {
            case T_CMP_ROWS: count = (uint64_t)nb * c->head_dim; break;
            case T_IDX_SCORE:
                if (nb4 <= c->index_topk) continue; /* no choice: the indexer scores nothing */
                count = nb4;
                break;
            case T_IDX_SEL: /* ascending, padded (or the static all-blocks list): the first k */
                count = nb4 < c->index_topk ? nb4 : c->index_topk;
                kind = MS_TAP_U32;
                break;
            case T_FFN_SCORE:
                ms_ref_router_scores(data, M->ref->layers[li].gate_bias, c->n_routed_experts, S->tap_tmp);
                data = S->tap_tmp;
                break;
            case T_FFN_ROUTE: kind = MS_TAP_U32; break;
            default: break;
            }
            s->tap(s->tap_ctx, pos, li, tap_names[k], kind, data, count);
        }
    }
    s->tap(s->tap_ctx, pos, c->n_layers, "head.logits", MS_TAP_F32, S->logits_host.map, c->vocab_size);
    return 0;
}

/* The first tap allocates the copies' places; clearing keeps them for the next. */
static int vk_set_tap(ms_session *s, ms_tap_fn fn, void *ctx) {
    (void)ctx;
    vk_session *S = s->backend;
    const ms_v4_config *c = &S->M->ref->cfg;
    if (!fn || S->tap_off) return 0;
    S->tap_off = ms_malloc((size_t)c->n_layers * T_N * sizeof *S->tap_off);
    S->tap_tmp = ms_malloc((size_t)c->n_routed_experts * sizeof *S->tap_tmp);
    if (!S->tap_off || !S->tap_tmp) {
        ms_free(S->tap_off);
        ms_free(S->tap_tmp);
        S->tap_off = NULL;
        S->tap_tmp = NULL;
        return -MS_E_NOMEM;
    }
    uint64_t o = 0;
    for (uint32_t li = 0; li < c->n_layers; li++)
        for (int k = 0; k < T_N; k++) {
            uint64_t b = tap_bytes(S, li, k);
            S->tap_off[(size_t)li * T_N + k] = b ? o : UINT64_MAX;
            o = align_up(o + b, 16);
        }
    int rc = buf_new(S->M->vk, MS_VK_MEM_READBACK, o, &S->tap_host);
    if (rc) {
        ms_free(S->tap_off);
        ms_free(S->tap_tmp);
        S->tap_off = NULL;
        S->tap_tmp = NULL;
    }
    return rc;
}
