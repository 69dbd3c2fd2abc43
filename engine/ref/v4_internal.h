/* engine/ref/v4_internal.h — internals of the DeepSeek-V4 CPU reference forward pass.
 *
 * Shared by engine/ref/v4_*.c and tests/test_v4_ref.c only. The model borrows every tensor's
 * bytes from the caller's ms_ref_tensor_fn (the checkpoint mapping must outlive the model); it
 * owns only small decoded tables (RoPE frequencies, the hash-routing table narrowed to int32,
 * the per-expert weight views). A session owns its KV state and its scratch buffers.
 * Borrowed tensors may start at any byte offset: their fields are `const void *`, read only
 * through ms_ref_ld_f32 / ms_ref_ld_bf16 (ref.h); buffers the reference owns stay typed.
 *
 * Numerics (V4_SPEC §3.0, §3.8): weights are decoded exactly (ms_ref_weight_at), dot products
 * accumulate in double, activations and residual streams are F32, small per-token maths (norms,
 * softmaxes, Sinkhorn, RoPE angles) run in double. The only roundings on purpose are the two the
 * official model stores: the KV latent's non-RoPE dims as e4m3 with a power-of-two scale per 64
 * values, and the indexer's queries and keys as FP4 (e2m1) per 32 values after a Hadamard rotation.
 */
#ifndef MS_ENGINE_REF_V4_INTERNAL_H
#define MS_ENGINE_REF_V4_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model/config.h"
#include "engine/ref/ref.h"

#define MS_V4_MAX_ROPE_DIM 512    /* rope_dim bound for the per-layer frequency tables */
#define MS_V4_MAX_HADAMARD 4096   /* largest index_head_dim the Hadamard helper accepts */
#define MS_V4_MAX_HC 16           /* hc_mult bound (4 in the real models) */
#define MS_V4_SUB_BATCH 16        /* tokens per internal step; results do not depend on it */

/* One gated-pooling compressor (V4_SPEC §3.4): d = 512-wide for attention, index_head_dim inside
 * the indexer. coff = 2 when ratio == 4 (overlapping blocks), else 1. */
typedef struct v4_compressor {
    uint32_t ratio;
    uint32_t coff;
    uint32_t d;
    ms_weight_view wkv;      /* BF16 [coff*d][dim] */
    ms_weight_view wgate;    /* BF16 [coff*d][dim] */
    const void *ape;         /* F32 [ratio][coff*d] */
    const void *norm;        /* BF16 [d] */
} v4_compressor;

typedef struct v4_layer {
    uint32_t ratio;              /* 0 (window only), 4 (CSA, indexer) or 128 (HCA); any r > 0 works */
    const double *rope_freq;     /* [rope_dim/2] model-owned: base table or YaRN table */
    /* mHC (V4_SPEC §3.2), mix = (2 + hc) * hc */
    const void *hc_attn_fn;      /* F32 [mix][hc*dim] */
    const void *hc_attn_base;    /* F32 [mix] */
    const void *hc_attn_scale;   /* F32 [3] */
    const void *hc_ffn_fn;       /* F32 [mix][hc*dim] */
    const void *hc_ffn_base;     /* F32 [mix] */
    const void *hc_ffn_scale;    /* F32 [3] */
    const void *attn_norm;       /* BF16 [dim] */
    const void *ffn_norm;        /* BF16 [dim] */
    /* attention (V4_SPEC §3.3) */
    ms_weight_view wq_a;         /* FP8 [q_lora][dim] */
    const void *q_norm;          /* BF16 [q_lora] */
    ms_weight_view wq_b;         /* FP8 [n_heads*head_dim][q_lora] */
    ms_weight_view wkv;          /* FP8 [head_dim][dim] */
    const void *kv_norm;         /* BF16 [head_dim] */
    ms_weight_view wo_a;         /* FP8 [o_groups*o_lora][n_heads*head_dim/o_groups] */
    ms_weight_view wo_b;         /* FP8 [dim][o_groups*o_lora] */
    const void *attn_sink;       /* F32 [n_heads] */
    v4_compressor cmp;           /* ratio != 0 */
    /* lightning indexer (ratio 4, V4_SPEC §3.5) */
    ms_weight_view idx_wq_b;     /* FP8 [index_n_heads*index_head_dim][q_lora] */
    ms_weight_view idx_wproj;    /* BF16 [index_n_heads][dim] */
    v4_compressor idx_cmp;
    /* MoE (V4_SPEC §3.10) */
    ms_weight_view gate;         /* BF16 [n_experts][dim] */
    const void *gate_bias;       /* F32 [n_experts]; NULL on hash layers */
    const int32_t *tid2eid;      /* [vocab][n_active] model-owned; NULL on score-routed layers */
    ms_weight_view sh_w1, sh_w3; /* FP8 [moe_inter][dim] */
    ms_weight_view sh_w2;        /* FP8 [dim][moe_inter] */
    const ms_weight_view *ex;    /* [n_experts][3] = w1, w3, w2; FP4 (or FP8) views */
} v4_layer;

struct ms_ref_model {
    ms_v4_config cfg;
    const void *embed;           /* BF16 [vocab][dim] */
    ms_weight_view head;         /* BF16 [vocab][dim] */
    const void *norm;            /* BF16 [dim] */
    const void *hc_head_fn;      /* F32 [hc][hc*dim] */
    const void *hc_head_base;    /* F32 [hc] */
    const void *hc_head_scale;   /* F32 [1] */
    v4_layer *layers;            /* [n_layers] */
    double *freq_base;           /* [rope_dim/2] rope_theta, no YaRN (ratio-0 layers) */
    double *freq_compress;       /* [rope_dim/2] compress_rope_theta (+ YaRN) */
    int32_t *tid2eid;            /* [n_hash_layers][vocab][n_active] */
    ms_weight_view *experts;     /* [n_layers][n_experts][3] */
    /* Test-only switches (ms_ref_v4_set_fake_quant): both true by default. */
    bool fq_kv_fp8;
    bool fq_index_fp4;
};

/* Per-layer state of one compressor: the pooling ring and the emitted rows. */
typedef struct v4_cmp_state {
    float *kv;        /* [coff*ratio][coff*d] token projections, FP32 */
    float *score;     /* [coff*ratio][coff*d] gate scores incl. ape; -inf = empty slot */
    float *rows;      /* [n_rows][d] emitted (normed, roped, fake-quantised) entries */
    uint32_t n_rows;  /* max_tokens / ratio */
} v4_cmp_state;

typedef struct v4_layer_state {
    float *ring;       /* [ring_len][head_dim] KV latent of the last `window` positions; slot
                        * p % window (ring_len = min(window, max_tokens): p < max_tokens) */
    v4_cmp_state cmp;  /* ratio != 0 */
    v4_cmp_state idx;  /* ratio 4: the indexer's keys (FP4-valued) */
} v4_layer_state;

/* Scratch for one sub-batch of up to MS_V4_SUB_BATCH tokens; all F32 unless noted. */
typedef struct v4_scratch {
    float *h;          /* [B][hc][dim] residual streams */
    float *res;        /* [B][hc][dim] copy of h before a sub-layer */
    float *x;          /* [B][dim] sub-layer input */
    float *y;          /* [B][dim] sub-layer output */
    float *post;       /* [B][hc] */
    float *comb;       /* [B][hc][hc] */
    float *mix;        /* [B][mix] */
    float *qr;         /* [B][q_lora] */
    float *q;          /* [B][n_heads*head_dim] */
    float *kv;         /* [B][head_dim] */
    float *o;          /* [B][n_heads*head_dim] */
    float *u;          /* [B][o_groups*o_lora] */
    float *u_full;     /* [B][o_groups*o_lora] fallback for unaligned wo_a groups */
    float *ca;         /* [B][2*head_dim] compressor wkv projections */
    float *cg;         /* [B][2*head_dim] compressor wgate projections */
    float *ia;         /* [B][2*index_head_dim] */
    float *ig;         /* [B][2*index_head_dim] */
    float *qi;         /* [B][index_n_heads*index_head_dim] */
    float *wi;         /* [B][index_n_heads] */
    float *crow;       /* [max(head_dim, index_head_dim)] one pooled row */
    uint32_t *isel_idx; /* [index_topk] the blocks one indexer query selects (ms_ref_indexer) */
    uint8_t *isel;     /* [max_tokens/4] selected flags */
    uint32_t *sel;     /* [index_topk] the selected blocks, ascending, 0xFFFFFFFF after them */
    float *glog;       /* [B][n_experts] gate scores */
    uint32_t *route;   /* [B][n_active] expert ids */
    float *rw;         /* [B][n_active] routing weights */
    float *ex_x;       /* [B][dim] tokens gathered for one expert */
    uint32_t *ex_t;    /* [B] their slots in the sub-batch */
    float *ex_w;       /* [B] their routing weights */
    float *ex_g;       /* [B][moe_inter] */
    float *ex_u;       /* [B][moe_inter] */
    float *ex_y;       /* [B][dim] */
    double *moe_acc;   /* [B][dim] */
    float *hfin;       /* [B][dim] after hc_head + norm */
} v4_scratch;

struct ms_ref_session {
    const ms_ref_model *m;
    uint32_t max_tokens;
    uint32_t ring_len;        /* min(window, max_tokens): a session never holds more positions */
    uint32_t pos;             /* tokens appended so far */
    bool nf_seen;             /* a non-finite value was produced since create/reset */
    ms_ref_nonfinite nf;      /* where (ms_ref_session_nonfinite), valid when nf_seen */
    v4_layer_state *layers;   /* [n_layers] */
    v4_scratch sc;
    void **allocs;            /* every buffer above, for free */
    uint32_t n_allocs, cap_allocs;
    /* taps (ms_ref_session_set_tap): tap_on while a one-token step of a tapped session runs */
    ms_ref_tap_fn tap;
    void *tap_ctx;
    bool tap_on;
    float *tap_buf;           /* [max(n_experts, max_tokens/4 + 1)] scores read out for a tap */
};

/* One stage's values to the tap, in a one-token step of a tapped session (else nothing). */
static inline void v4_tap(const ms_ref_session *s, uint32_t pos, uint32_t layer, const char *stage,
                          bool u32, const void *data, uint64_t count) {
    if (s->tap_on) s->tap(s->tap_ctx, pos, layer, stage, u32, data, count);
}

/* ---- number formats and fake quantisation (v4_ops.c, V4_SPEC §3.8) ---- */

/* x clamped to ±448 and rounded to the nearest OCP e4m3fn value, ties to even. */
float ms_ref_v4_round_e4m3(float x);
/* x clamped to ±6 and rounded to the nearest e2m1 value, ties to even. */
float ms_ref_v4_round_e2m1(float x);
/* 2^ceil(log2(amax * inv_max)) with the product in F32, as the official kernels compute it from
 * the exponent bits (+1 when the mantissa is not zero). */
float ms_ref_v4_pow2_scale(float amax, float inv_max);
/* In-place fake quantisation of x[n] in blocks (n % block == 0): per block
 * amax = max(max|x|, floor), s = pow2_scale(amax, 1/max), x = round(x / s) * s.
 * fp8: e4m3, floor 1e-4, max 448; fp4: e2m1, floor 6*2^-126, max 6. */
void ms_ref_v4_fake_quant_fp8(float *x, uint32_t n, uint32_t block);
void ms_ref_v4_fake_quant_fp4(float *x, uint32_t n, uint32_t block);
/* Orthonormal Sylvester Walsh–Hadamard transform in place: x = H_n x / sqrt(n); n a power of two
 * <= MS_V4_MAX_HADAMARD. */
void ms_ref_v4_hadamard(float *x, uint32_t n);

/* ---- RoPE / YaRN (v4_ops.c, V4_SPEC §3.7) ---- */

/* YaRN correction range for rope_dim dims: low = max(floor(corr(beta_fast)), 0),
 * high = min(ceil(corr(beta_slow)), rope_dim-1), as the official code clamps them (low may exceed
 * high). Defined for any input: non-finite corrections are clamped before the int conversion. */
void ms_ref_v4_yarn_range(uint32_t rope_dim, double base, double orig_max_pos, double beta_fast,
                          double beta_slow, int *low, int *high);
/* freq[rope_dim/2]: the layer's inverse frequencies; compressing = ratio != 0 (base
 * compress_rope_theta, YaRN when cfg->yarn), else rope_theta without YaRN. */
void ms_ref_v4_rope_freqs(const ms_v4_config *cfg, bool compressing, double *freq);
/* Interleaved (adjacent-pair) rotation of x[rope_dim] by position pos; inverse = conjugate. */
void ms_ref_v4_rope(float *x, const double *freq, uint32_t rope_dim, uint64_t pos, bool inverse);

/* ---- mHC (v4_ops.c, V4_SPEC §3.2) ---- */

/* Splits mix[(2+hc)*hc] into pre[hc], post[hc] and the Sinkhorn-normalised comb[hc][hc]
 * (comb[j][k]: j = source stream, k = destination). scale: F32 [3], base: F32 [(2+hc)*hc], both
 * checkpoint bytes. */
void ms_ref_v4_hc_split(const float *mix, const void *scale, const void *base, uint32_t hc,
                        uint32_t sinkhorn_iters, double hc_eps, float *pre, float *post,
                        float *comb);

/* ---- layers (v4_attn.c, v4_model.c) ---- */

/* Attention of layer li for n consecutive tokens at positions pos0.. (state updated token by token).
 * x: [n][dim] attn_norm output; out: [n][dim]. */
void ms_ref_v4_attention(ms_ref_session *s, uint32_t li, const float *x, uint32_t pos0, uint32_t n,
                         float *out);
/* MoE of layer li. x: [n][dim] ffn_norm output; tokens: [n]; out: [n][dim]. */
void ms_ref_v4_moe(ms_ref_session *s, uint32_t li, const float *x, const uint32_t *tokens,
                   uint32_t n, float *out);

/* Test-only: turn the two stored-value fake-quant steps off (to show they matter). */
void ms_ref_v4_set_fake_quant(ms_ref_model *m, bool kv_fp8, bool index_fp4);

#endif
