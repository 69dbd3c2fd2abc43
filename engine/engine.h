/* engine/engine.h — the one interface above the engine: open a DeepSeek-V4 model, make sessions,
 * feed them tokens, read their logits. Everything above engine/ (the CLI, the server, benchmarks)
 * uses only this header; no backend header is included above engine/.
 *
 * Backends: the CPU reference (engine/ref, exact and slow: the spec) and Vulkan (engine/vk). Both
 * compute the same model; placement and budgets change speed, never a backend's output.
 * Models: a Hugging Face checkpoint directory (config.json + safetensors) today; the expert store
 * later, through the same call.
 *
 * Ownership: ms_engine_open returns an engine that owns the open files, the weights and the
 * backend; ms_engine_close frees it, after every session made from it is freed. A session owns its
 * KV state, its token history and its last logits.
 * Threads: an engine may serve sessions on several threads (ms_session_create is thread-safe); one
 * session is used by one thread at a time.
 * Errors: 0 or a negative status (-MS_E_*, -errno); calls that can fail for a user-visible reason
 * take an err buffer and fill it with what went wrong and what to do. A session call that fails
 * leaves the session as it was.
 */
#ifndef MS_ENGINE_ENGINE_H
#define MS_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model/config.h"
#include "engine/vk/vk_opts.h" /* plain data, no Vulkan types */

typedef enum ms_backend {
    MS_BACKEND_AUTO = 0, /* Vulkan where a usable device and the Vulkan forward pass exist, else CPU */
    MS_BACKEND_CPU,      /* the CPU reference */
    MS_BACKEND_VULKAN,
} ms_backend;

const char *ms_backend_name(ms_backend b); /* "auto", "cpu", "vulkan" */
/* "auto", "cpu", "vulkan" -> 0 and *out; else -MS_E_NOT_FOUND. */
int ms_backend_from_name(const char *name, ms_backend *out);

/* Options; start from ms_engine_opts_default() (all-zero would mean device 0). */
typedef struct ms_engine_opts {
    ms_backend backend;
    ms_vk_opts vk;         /* Vulkan: device index (-1 = the best), validation, pipeline cache,
                            * kill switches (tools/env.h maps the environment onto these) */
    /* diagnosis only: skip an official fake-quant step (the e4m3 KV latent; the FP4 indexer
     * q/k); the output is then not the model's. `moestream logits --no-fake-quant` sets both. */
    bool no_fq_kv, no_fq_index;
} ms_engine_opts;

ms_engine_opts ms_engine_opts_default(void);

typedef struct ms_engine ms_engine;
typedef struct ms_session ms_session;

/* Opens the model at path (a checkpoint directory): config.json validated, every tensor checked
 * against it (all problems listed in err), weights bound. Returns 0, -MS_E_UNSUPPORTED (the
 * backend asked for is not available here: err says why), -MS_E_FORMAT, -MS_E_NOMEM or -errno. */
int ms_engine_open(const char *path, const ms_engine_opts *opts, ms_engine **out, char *err,
                   size_t err_len);
void ms_engine_close(ms_engine *e); /* NULL ok */

const ms_v4_config *ms_engine_config(const ms_engine *e);
ms_backend ms_engine_backend(const ms_engine *e); /* the one in use (never AUTO) */

/* What runs the model, for reports and benchmarks. */
typedef struct ms_engine_info {
    ms_backend backend;
    char device[256];                /* "NVIDIA H200 (NVIDIA 570.124.06)", "CPU reference" */
    uint64_t weight_bytes;           /* checkpoint bytes the forward pass uses (resident) */
    uint64_t weight_bytes_per_token; /* read per decoded token (ms_v4_weight_bytes) */
    double mem_gbs;                  /* device memory bandwidth, GB/s read + written by a copy
                                      * (measured when asked; 0 = not measured / CPU) */
} ms_engine_info;

/* measure_bandwidth: time a device copy first (Vulkan; ~1 s, 2 GiB of device memory). */
int ms_engine_get_info(ms_engine *e, bool measure_bandwidth, ms_engine_info *out);

/* A session that can hold up to max_tokens positions. */
int ms_session_create(ms_engine *e, uint32_t max_tokens, ms_session **out);
void ms_session_free(ms_session *s); /* NULL ok */

/* Appends n tokens at the session's position (prefill when n > 1, decode when n == 1); any split
 * of a sequence into calls gives the same logits: bit for bit on the CPU reference, within F32
 * rounding on Vulkan (prefill batches run through GEMM kernels, decode through GEMV ones; with
 * the fake-quant steps on, a rounding difference can flip a stored code). logits: [n][vocab] for every position of the
 * call, or NULL; either way the last position's logits are kept (ms_session_logits). Returns 0,
 * -MS_E_INVALID_ARG (n == 0, a token id >= vocab_size), -MS_E_RANGE (the session would exceed
 * max_tokens). */
int ms_session_feed(ms_session *s, const uint32_t *tokens, uint32_t n, float *logits);

/* The logits [vocab] after the last token fed; -MS_E_RANGE when nothing was fed. */
int ms_session_logits(const ms_session *s, float *out);

/* The k best token ids after the last token fed, best first (equal logits: lower id first),
 * with their logits; k <= vocab_size. */
int ms_session_top_k(const ms_session *s, uint32_t k, uint32_t *ids, float *logits);

/* The same ranking for any logits[vocab] (NaN ranks last): ids[k], best first; O(vocab log k). */
void ms_logits_top_k(const float *logits, uint32_t vocab, uint32_t k, uint32_t *ids);

/* What a session holds and how its decode step runs. */
typedef struct ms_session_stats {
    uint64_t kv_bytes;             /* KV state (window rings, compressor states and rows, indexer keys) */
    uint32_t dispatches_per_layer; /* Vulkan: in the recorded one-token step, the layers' average */
    uint32_t barriers_per_layer;   /* (0 until a one-token step was recorded, and on the CPU) */
    uint32_t dispatches_total;     /* the whole one-token step, embedding and head included */
} ms_session_stats;
void ms_session_get_stats(const ms_session *s, ms_session_stats *out);

/* GPU time per op class of one-token decode steps (Vulkan; the CPU backend: -MS_E_UNSUPPORTED).
 * While profiling is on, every one-token step runs a second recording of the forward pass with a
 * timestamp after each op class (the same work and the same output, a little slower: the
 * timestamps serialise what would overlap), and the times add up until profiling is switched on
 * again. Classes are named by the backend ("hc_pre", "attention", "experts_up", ...); a class's
 * time is that from the end of the work before it to the end of its own. */
#define MS_PROFILE_MAX_CLASSES 24
typedef struct ms_profile {
    uint32_t steps;     /* one-token steps profiled since profiling was switched on */
    uint32_t n_classes; /* in the order of the forward pass */
    struct {
        const char *name;
        double gpu_ns;       /* summed over the steps */
        uint32_t dispatches; /* per step */
    } cls[MS_PROFILE_MAX_CLASSES];
} ms_profile;
int ms_session_set_profiling(ms_session *s, bool on); /* on: clears the sums */
int ms_session_get_profile(const ms_session *s, ms_profile *out);

/* Taps: the intermediate values of one-token steps, for comparing backends (`moestream diff`).
 * While a tap is set the session calls it, from inside ms_session_feed and on the feeding
 * thread, once per stage of every layer and once for the head, in forward order; data is valid
 * only during the call. A tapped session is fed one token at a time: ms_session_feed with n > 1
 * returns -MS_E_INVALID_ARG (truncate's replay runs untapped). Both backends use the same stage
 * names with the same meaning (V4_SPEC §3; docs/diff.md), per layer in this order:
 *   attn.x         F32 [dim]      hc_pre output after attn_norm
 *   attn.q         F32 [n_heads*head_dim]  queries after the per-head RMS and RoPE
 *   attn.kv        F32 [head_dim] the latent after kv_norm, RoPE and the e4m3 rounding
 *   attn.cmp_rows  F32 [nb][head_dim]  ratio > 0: the compressed rows that exist at this
 *                                 position, nb = (pos + 1) / ratio (0 rows: count 0)
 *   attn.idx_score F32 [nb]       ratio 4, only where the indexer chooses (nb > index_topk): the
 *                                 indexer's score of every complete block
 *   attn.idx_sel   U32 [k]        ratio 4: the selected blocks, ascending, k = min(index_topk, nb)
 *   attn.o         F32 [n_heads*head_dim]  attention output after the inverse RoPE
 *   attn.y         F32 [dim]      after wo_b
 *   attn.h         F32 [hc*dim]   the streams after hc_post
 *   ffn.x          F32 [dim]      hc_pre output after ffn_norm
 *   ffn.score      F32 [n_experts] what the router ranks: sqrt(softplus(gate logit)) + bias
 *                                 (hash layers: no bias), from the backend's gate logits
 *   ffn.route      U32 [k]        the experts chosen, in the router's rank order
 *   ffn.weights    F32 [k]        their weights, in the same order
 *   ffn.y          F32 [dim]      the MoE output, shared expert included
 *   ffn.h          F32 [hc*dim]   the streams after hc_post
 * and after the layers head.logits F32 [vocab] with layer = n_layers. Taps cost time (Vulkan: a
 * separate recording that copies every stage to host memory, and the whole compressed-row
 * buffers of the session; a tapped step is not profiled); untapped steps run exactly as without. */
typedef enum ms_tap_kind { MS_TAP_F32 = 0, MS_TAP_U32 } ms_tap_kind;
typedef void (*ms_tap_fn)(void *ctx, uint32_t pos, uint32_t layer, const char *stage, ms_tap_kind kind,
                          const void *data, uint64_t count);
/* fn NULL clears the tap. Returns 0, -MS_E_NOMEM, -MS_E_UNSUPPORTED (a backend without taps). */
int ms_session_set_tap(ms_session *s, ms_tap_fn fn, void *ctx);

uint32_t ms_session_pos(const ms_session *s);
uint32_t ms_session_max_tokens(const ms_session *s);

/* Keeps the first n tokens (n <= pos) and drops the rest, as if only they had been fed; the last
 * logits become those after token n-1 (none when n == 0). */
int ms_session_truncate(ms_session *s, uint32_t n);
void ms_session_reset(ms_session *s); /* truncate to 0 */

/* Where the session first produced a NaN or infinity: 0 and the position, layer (n_layers = the
 * final head) and stage ("attention", "moe": the sub-layer's output streams; "head": the logits),
 * or -MS_E_NOT_FOUND when every value so far was finite. Both backends watch the streams after
 * every sub-layer (the CPU reference on the host, Vulkan in the kernel that reads them next). */
int ms_session_nonfinite(const ms_session *s, uint32_t *pos, uint32_t *layer, const char **stage);

#endif
