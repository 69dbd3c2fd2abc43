/* engine/ref/ref.h — the CPU reference: scalar, readable C that is the executable spec.
 *
 * Every Vulkan shader shaders/<x>.comp has a reference ms_ref_<x> here with the same semantics; the
 * op tests compare the two. No SIMD, no fast-math. Functions never allocate and never fail on
 * valid shapes; callers own every buffer. Thread-safe (no global state).
 *
 * Weight encodings: engine/model/weights.h (the checkpoint's own, V4_SPEC §2.1).
 * Activations are F32, stored column after column: x [n][x_stride], y [n][y_stride].
 */
#ifndef MS_ENGINE_REF_H
#define MS_ENGINE_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/model/weights.h" /* ms_wenc, ms_weight_view */

/* Exact scalar decoders. e4m3: 0x7F/0xFF are NaN; e8m0: 0xFF is NaN; fp4 takes a nibble 0..15. */
float ms_ref_bf16_to_f32(uint16_t v);
float ms_ref_e4m3_to_f32(uint8_t v);
float ms_ref_e8m0_to_f32(uint8_t v);
float ms_ref_fp4_to_f32(uint8_t nibble);

/* Element i of F32 / BF16 checkpoint data: the only way the reference reads those bytes. Tensors
 * are used in place in the mapped file and may start at any byte offset, so indexing a
 * `const float *` there is a misaligned load: undefined behaviour (UBSan reports it;
 * strict-alignment CPUs fault). A fixed-size memcpy compiles to one plain load on x86-64 and
 * AArch64. Fields that point into the checkpoint are `const void *`, so a direct index does not
 * compile. */
static inline float ms_ref_ld_f32(const void *p, size_t i) {
    float v;
    memcpy(&v, (const unsigned char *)p + i * sizeof v, sizeof v);
    return v;
}
/* BF16 element i, decoded (exactly) to F32. */
static inline float ms_ref_ld_bf16(const void *p, size_t i) {
    uint16_t v;
    memcpy(&v, (const unsigned char *)p + i * sizeof v, sizeof v);
    return ms_ref_bf16_to_f32(v);
}

/* Decoded weight element W[row, col] for any encoding. */
float ms_ref_weight_at(const ms_weight_view *w, uint32_t row, uint32_t col);

/* y[c][r] = sum_i W[r, i] * x[c][i] for c < n, r < w->m. Accumulates in double, stores float.
 * x: [n][x_stride] (x_stride >= k); y: [n][y_stride] (y_stride >= m). One function per encoding
 * (names match the shaders gemv_<enc>.comp); ms_ref_gemv dispatches on w->enc. */
void ms_ref_gemv_f32(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n);
void ms_ref_gemv_bf16(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                      uint32_t y_stride, uint32_t n);
void ms_ref_gemv_fp8(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n);
void ms_ref_gemv_fp4(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                     uint32_t y_stride, uint32_t n);
void ms_ref_gemv(const ms_weight_view *w, const float *x, uint32_t x_stride, float *y,
                 uint32_t y_stride, uint32_t n);

/* RMSNorm with weight: y[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * w[i].
 * x, y: [n_rows][dim] (may alias); w: [dim] in w_enc (MS_WENC_F32 or MS_WENC_BF16). */
void ms_ref_rmsnorm(const float *x, const void *w, ms_wenc w_enc, float *y, uint32_t dim,
                    uint32_t n_rows, float eps);

/* mHC pre after the mixing GEMV (shaders/hc.h), for n tokens: mixraw [n][mix_n] = fn @ h
 * (mix_n = (2+hc)*hc, or hc when head), h [n][hc][dim], scale F32 [3] ([1] head) and base F32
 * [mix_n] as stored in the checkpoint (any alignment). The mixes are scaled by
 * 1/sqrt(mean(h^2) + rms_eps) and split into pre, post [n][hc] and the Sinkhorn-normalised
 * comb [n][hc][hc] (head: sigmoid pre only; post and comb untouched, may be NULL); x [n][dim] =
 * sum_c pre[c] h[c]. */
void ms_ref_hc_pre(const float *mixraw, const float *h, const void *scale, const void *base,
                   uint32_t dim, uint32_t hc, uint32_t n, uint32_t sinkhorn_iters, double hc_eps,
                   double rms_eps, bool head, float *x, float *post, float *comb);
/* cos and sin of pos * freq[i] for i < rope_dim/2, computed in double, stored as F32 pairs
 * cs[rope_dim/2][2]: the table shaders/rope.comp rotates with. */
void ms_ref_rope_table(const double *freq, uint32_t rope_dim, uint64_t pos, float *cs);
/* In place on x: for token t < n and head h < n_heads, the head at t*token_stride + h*head_stride;
 * with rms, v *= 1/sqrt(mean over head_dim of v^2 + eps) first; then pairs (v[off+2i],
 * v[off+2i+1]) rotate by cs[t][i] (conjugate when inverse). cs: [n][rope_dim/2][2]. */
void ms_ref_rope(float *x, uint32_t n, uint32_t n_heads, uint32_t head_dim, uint32_t head_stride,
                 uint32_t token_stride, uint32_t off, uint32_t rope_dim, const float *cs,
                 bool rms, float eps, bool inverse);

/* The official stored-value rounding, per row of x [n_rows][row_stride] on elements [0, len): an
 * optional Hadamard rotation (len a power of two <= 4096), then none, e4m3 in blocks of 64 (the KV
 * latent) or e2m1 in blocks of 32 (the indexer's q/k), each block scaled by a power of two. */
typedef enum ms_ref_fq_kind { MS_REF_FQ_NONE = 0, MS_REF_FQ_E4M3 = 1, MS_REF_FQ_E2M1 = 2 } ms_ref_fq_kind;
void ms_ref_fq(float *x, uint32_t n_rows, uint32_t row_stride, uint32_t len, ms_ref_fq_kind quant,
               bool hadamard);

/* The MoE router after the gate GEMV, for n tokens: s[e] = sqrt(softplus(logits[t][e])) (as F32);
 * with tid2eid [vocab][k] the picks are tid2eid[tokens[t]] (hash routing), else the k best of
 * s[e] + bias[e] (bias F32 [E] checkpoint bytes, NULL for 0), best first, equal values by the lower id, NaN
 * last; w[k] = s[idx] / sum s[idx] (norm) * scale. idx [n][k], w [n][k]. */
void ms_ref_router(const float *logits, const void *bias, const int32_t *tid2eid,
                   const uint32_t *tokens, uint32_t n, uint32_t n_experts, uint32_t k, bool norm,
                   double scale, uint32_t *idx, float *w);
/* What ms_ref_router ranks, for one token: score[e] = s[e] + bias[e] of logits[n_experts] (bias
 * NULL for 0), rounded to F32 (a diagnosis read-out: the taps' ffn.score). */
void ms_ref_router_scores(const float *logits, const void *bias, uint32_t n_experts, float *score);

/* Clamped SwiGLU with the routing weight, in place: for n rows of width inter (at stride),
 * with limit > 0 u = clamp(u, -limit, limit) and g = min(g, limit); gate = silu(g) * u * w[t]. */
void ms_ref_swiglu(float *gate, const float *up, const float *w, uint32_t n, uint32_t inter,
                   uint32_t stride, double limit);

/* Embedding into the streams: h[t][c][i] = embed[tokens[t]][i] for every stream c. embed: BF16
 * [vocab][dim] checkpoint bytes; tokens[n] < vocab (NaN rows otherwise, as the shader). */
void ms_ref_hc_embed(const void *embed, uint32_t vocab, const uint32_t *tokens, uint32_t dim,
                     uint32_t hc, uint32_t n, float *h);
/* mHC post: h[t][k][i] = post[t][k] y[t][i] + sum_j comb[t][j][k] res[t][j][i].
 * y [n][dim], res [n][hc][dim], post [n][hc], comb [n][hc][hc]; h [n][hc][dim] (not res). */
void ms_ref_hc_post(const float *y, const float *res, const float *post, const float *comb,
                    uint32_t dim, uint32_t hc, uint32_t n, float *h);

/* ---- DeepSeek-V4 forward pass (engine/ref/v4_*.c; V4_SPEC §3) ----
 *
 * The whole model in scalar C: mHC residual streams, attention with the window ring, compressors
 * and the lightning indexer, MoE with hash and score routing, final head. MTP (mtp.*) is not run.
 * Weights are read in their stored encodings and decoded exactly; activations are F32 with double
 * accumulation; the only deliberate roundings are the ones the official model stores (the KV
 * latent's e4m3 fake-quant and the indexer's Hadamard + FP4 fake-quant, V4_SPEC §3.8).
 *
 * Ownership: the model borrows every tensor's data (the mapping behind `get` must outlive it) and
 * owns only small decoded tables. A session owns its KV state (window rings, compressed rows,
 * indexer keys, compressor states) and scratch; it reads the model, which must outlive it.
 * Threads: a model is read-only after creation and may serve sessions on several threads; one
 * session is used by one thread at a time.
 */
typedef struct ms_st_tensor ms_st_tensor;
typedef struct ms_v4_config ms_v4_config;

/* Returns the checkpoint tensor called name (e.g. "layers.3.attn.wq_a.weight"), NULL if absent. */
typedef const ms_st_tensor *(*ms_ref_tensor_fn)(void *ctx, const char *name);
typedef struct ms_ref_model ms_ref_model;

/* Binds every tensor the config implies and checks its dtype and shape (expert weights: I8 = FP4
 * with a [out][in/32] E8M0 scale, or F8_E4M3 with 128x128 scales). Returns 0, or -MS_E_FORMAT /
 * -MS_E_INVALID_ARG with err naming the tensor (or config field), expected vs found. */
int ms_ref_model_create(const ms_v4_config *cfg, ms_ref_tensor_fn get, void *ctx,
                        ms_ref_model **out, char *err, size_t err_len);
void ms_ref_model_free(ms_ref_model *m); /* NULL ok */

typedef struct ms_ref_session ms_ref_session;

/* max_tokens: the most positions the session will hold (bounds the compressed-row storage). */
int ms_ref_session_create(const ms_ref_model *m, uint32_t max_tokens, ms_ref_session **out);
void ms_ref_session_free(ms_ref_session *s); /* NULL ok */
void ms_ref_session_reset(ms_ref_session *s); /* back to position 0, state cleared */

/* Appends n tokens at the session's current position. logits: [n][vocab] F32, one row per token of
 * the call. Any split of a sequence into calls gives bit-identical logits. Returns 0,
 * -MS_E_INVALID_ARG (token id >= vocab, n == 0) or -MS_E_RANGE (pos + n > max_tokens); on error
 * the session is unchanged. */
int ms_ref_session_forward(ms_ref_session *s, const uint32_t *tokens, uint32_t n, float *logits);
uint32_t ms_ref_session_pos(const ms_ref_session *s);
/* Bytes of KV state the session holds: window rings, compressor states and rows, indexer keys. */
uint64_t ms_ref_session_kv_bytes(const ms_ref_session *s);

/* Non-finite diagnosis. The forward pass stays faithful: a NaN or infinity (a 0xFF scale byte, an
 * overflowing config value) propagates to the logits and forward still returns 0. The session
 * scans the residual streams after each sub-layer (attention's and the MoE's mHC post) and the
 * logits, and keeps the earliest position with a non-finite value, then the earliest stage at that
 * position: the causal forward pass makes that independent of how the tokens were split into
 * calls. */
/* Where the session first produced a non-finite value (NaN or ±Inf) since create/reset. */
typedef struct ms_ref_nonfinite {
    uint32_t pos;       /* token position */
    uint32_t layer;     /* layer index; == n_layers for the final head */
    const char *stage;  /* "attention", "moe" or "head" (static string) */
} ms_ref_nonfinite;
/* 0 and *out filled if any non-finite value was seen, else -MS_E_NOT_FOUND. */
int ms_ref_session_nonfinite(const ms_ref_session *s, ms_ref_nonfinite *out);

/* Taps (engine.h's ms_session_set_tap, the stages listed there): in a forward call of one token
 * the session calls fn with each stage's values where the forward pass has them, in forward
 * order; data (F32, or U32 when u32) is valid during the call only. Calls of n > 1 tokens do not
 * tap. Tapping reads the values and computes two things the forward pass does not need (the
 * indexer's block scores, the router's ranking scores) into buffers of its own: the outputs are
 * the same with and without a tap. fn NULL clears it. */
typedef void (*ms_ref_tap_fn)(void *ctx, uint32_t pos, uint32_t layer, const char *stage, bool u32,
                              const void *data, uint64_t count);
void ms_ref_session_set_tap(ms_ref_session *s, ms_ref_tap_fn fn, void *ctx);

/* The gated-pooling compressor (V4_SPEC §3.4), the reference of ms_vk_rec_compress: n
 * consecutive tokens at positions p = pos0 + t, in order. Token t writes state slot
 * (coff-1)*ratio + p%ratio (kv = a[t], score = g[t] + ape[p%ratio]); when p completes block
 * j = p/ratio and j < n_rows: per-channel softmax pooling over the coff*ratio slots (score -inf:
 * empty), RMSNorm with the BF16 norm, RoPE of the last rope_dim dims by cs[t] (cos/sin of position
 * p+1-ratio), optional Hadamard over all d, then quant 1 (e4m3 on [0, d-rope_dim), blocks of 64)
 * or 2 (e2m1 on [0, d), blocks of 32), stored in rows[j]; with coff 2 the block's slots then become
 * the previous block's (slots ratio.. copied to 0..). What v4_attn.c's cmp_push and its callers
 * compute, except that RoPE uses the F32 table (cmp_push: double angles; ~1 ulp on those dims).
 * a, g: F32 [n][in_stride] (coff*d used); ape: F32 [ratio][coff*d] and norm: BF16 [d] checkpoint
 * bytes; cs: [n][rope_dim/2][2] (rows of completing tokens read); kv, score: [coff*ratio][coff*d];
 * rows: [n_rows][d]. coff 1 or 2; quant 1 needs (d - rope_dim) % 64 == 0, quant 2 d % 32 == 0,
 * hadamard d a power of two <= 4096. */
void ms_ref_compress(const float *a, const float *g, uint32_t in_stride, const void *ape,
                     const void *norm, const float *cs, uint32_t pos0, float *kv, float *score,
                     float *rows, uint32_t n, uint32_t ratio, uint32_t coff, uint32_t d,
                     uint32_t rope_dim, uint32_t n_rows, float eps, uint32_t quant, bool hadamard);
/* Lightning-indexer selection (V4_SPEC §3.5), the reference of shaders/indexer_*.comp, for n
 * queries at positions pos0 + t: query t sees nb = min((pos0 + t + 1) / ratio, n_keys) blocks and
 * selects k = min(topk, nb) of them: all when k == nb, else the k best scores
 * score_j = sum_h max(q[t][h] . keys[j], 0) * w_h (double; w_h = w[t][h] * w_scale in F32;
 * a NaN dot product counts as 0, a NaN score ranks as -inf), equal scores by the lower index.
 * q: [n][n_heads][head_dim]; w: [n][n_heads]; keys: [n_keys][head_dim]; sel: [n][topk], the k
 * indices ascending, then UINT32_MAX. ratio >= 1. */
void ms_ref_indexer(const float *q, const float *w, const float *keys, uint32_t pos0, uint32_t *sel,
                    uint32_t n, uint32_t n_heads, uint32_t head_dim, uint32_t ratio, uint32_t topk,
                    uint32_t n_keys, float w_scale);
/* The score ms_ref_indexer ranks of each of the first nb keys for one query (q [n_heads][head_dim],
 * w [n_heads]), rounded to F32: a diagnosis read-out (the taps' attn.idx_score). */
void ms_ref_indexer_scores(const float *q, const float *w, const float *keys, uint32_t n_heads,
                           uint32_t head_dim, uint32_t nb, float w_scale, float *score);
/* Sparse attention with a per-head sink (V4_SPEC §3.3, §3.6), the reference of
 * shaders/attention.comp, for n queries at positions p = pos0 + t. q, o: [n][n_heads][head_dim];
 * ring: [ring_len][head_dim], position x at row x % ring_len; query p sees the window
 * x in [max(0, p+1-window), p] (oldest first), then, with ratio != 0 and nb = min((p+1)/ratio,
 * n_rows) complete blocks, the rows [n_rows][head_dim]: for ratio 4 those listed in sel [n][topk]
 * in list order (0xFFFFFFFF and indices >= nb skipped), else 0..nb-1. sink: F32 [n_heads]
 * checkpoint bytes. Per head: z_e = (q . row_e) * scale; o = sum_e exp(z_e - m) row_e /
 * (exp(sink - m) + sum_e exp(z_e - m)), m = max(sink, z_e); double throughout, the two-pass
 * order the forward pass uses (a NaN score makes its head NaN). scale is a double so that the
 * forward pass's 1/sqrt(head_dim) passes unrounded (the shader takes it as F32). */
void ms_ref_attention(const float *q, const float *ring, const float *rows, const uint32_t *sel,
                      const void *sink, uint32_t pos0, float *o, uint32_t n, uint32_t n_heads,
                      uint32_t head_dim, uint32_t window, uint32_t ring_len, uint32_t ratio,
                      uint32_t topk, uint32_t n_rows, double scale);
/* KV ring write (shaders/kv_store.comp): row t of src [n][head_dim] to ring row
 * (pos0 + t) % ring_len of ring [ring_len][head_dim]. */
void ms_ref_kv_store(const float *src, float *ring, uint32_t pos0, uint32_t n, uint32_t head_dim,
                     uint32_t ring_len);
/* ---- The expert FFN over a pool of expert records (engine/ref/moe.c; shaders/moe.h) ----
 *
 * The references of moe_up_<enc> / moe_down_<enc>: a record is one expert's w1, w3 [inter][dim]
 * and w2 [dim][inter] in its checkpoint encoding (FP4 or FP8), each part at a byte offset in the
 * record; record j starts at byte j * record_bytes of the pool. Expert e of a token is record
 * slots[e]; an id e >= n_experts or a slot >= pool_bytes / record_bytes (0xFFFFFFFF: not resident)
 * reads nothing and contributes 0. Each GEMV row is computed as ms_ref_gemv computes it (every
 * weight decoded exactly, a double sum in order of the column, rounded to F32), bit for bit. */

/* One record's layout: the fields of ms_vk_expert_layout (engine/vk/vk.h), which makes it. */
typedef struct ms_ref_expert_layout {
    ms_wenc enc; /* MS_WENC_FP4 or MS_WENC_FP8 */
    uint32_t dim, inter;
    uint64_t w1_data, w1_scale, w3_data, w3_scale, w2_data, w2_scale; /* byte offsets in the record */
    uint64_t record_bytes;
} ms_ref_expert_layout;

/* Gate/up + SwiGLU, for t < n and a < k (pair t*k + a): g = w1 x[t], u = w3 x[t] (F32 as
 * ms_ref_gemv), act[t][a] = ms_ref_swiglu of g, u with weight rw[t][a] and limit (0: no clamp); a
 * zero row for an expert out of range. x [n][dim], rw [n][k], idx [n][k], act [n][k][inter]. */
void ms_ref_moe_up(const ms_ref_expert_layout *L, const void *pool, size_t pool_bytes,
                   const uint32_t *slots, uint32_t n_experts, const uint32_t *idx, const float *rw,
                   const float *x, float *act, uint32_t n, uint32_t k, double limit);
/* Down and sum: y[t] = base[t] + sum over a = 0..k-1 in that order of w2_{idx[t][a]} act[t][a]
 * (each product F32 as ms_ref_gemv; the sum in double from base, rounded once). act [n][k][inter],
 * base and y [n][dim] (y may be base). */
void ms_ref_moe_down(const ms_ref_expert_layout *L, const void *pool, size_t pool_bytes,
                     const uint32_t *slots, uint32_t n_experts, const uint32_t *idx,
                     const float *act, const float *base, float *y, uint32_t n, uint32_t k);

#endif
