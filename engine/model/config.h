/* engine/model/config.h — DeepSeek-V4 configuration (HF config.json, V4_SPEC §1.1) and the
 * expected tensor list it implies (V4_SPEC §2.2).
 *
 * Plain data; ms_v4_config_load fills a caller-owned struct; nothing it allocates outlives the
 * call.
 * Thread-safe (no global state).
 */
#ifndef MS_ENGINE_MODEL_CONFIG_H
#define MS_ENGINE_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "storage/safetensors.h"

#define MS_V4_MAX_LAYERS 128

typedef struct ms_v4_config {
    uint32_t vocab_size;
    uint32_t dim;                /* hidden_size */
    uint32_t n_layers;           /* num_hidden_layers (main stack) */
    uint32_t n_heads;            /* num_attention_heads */
    uint32_t n_kv_heads;         /* num_key_value_heads: must be 1 */
    uint32_t head_dim;           /* 512 in the real models */
    uint32_t rope_dim;           /* qk_rope_head_dim: the LAST rope_dim dims of each head */
    uint32_t q_lora_rank;
    uint32_t o_lora_rank;
    uint32_t o_groups;
    uint32_t window;             /* sliding_window */
    uint32_t n_compress_ratios;  /* entries in compress_ratios (n_layers + MTP layers) */
    uint32_t compress_ratios[MS_V4_MAX_LAYERS + 4]; /* 0, 4 or 128 */
    double rope_theta;           /* ratio-0 layers */
    double compress_rope_theta;  /* compressing layers */
    bool yarn;                   /* rope_scaling.type == "yarn" */
    double yarn_factor;
    uint32_t yarn_original_max_pos;
    double yarn_beta_fast, yarn_beta_slow;
    uint64_t max_position_embeddings;
    uint32_t index_n_heads, index_head_dim, index_topk;
    uint32_t n_routed_experts;
    uint32_t n_active_experts;   /* num_experts_per_tok */
    uint32_t n_shared_experts;
    uint32_t moe_inter_dim;      /* moe_intermediate_size */
    uint32_t n_hash_layers;      /* num_hash_layers */
    bool norm_topk_prob;
    double routed_scaling_factor;
    double swiglu_limit;         /* 0 = no clamp */
    uint32_t hc_mult;
    uint32_t hc_sinkhorn_iters;
    double hc_eps;
    double rms_norm_eps;
    uint32_t n_mtp_layers;       /* num_nextn_predict_layers */
    bool expert_fp4;             /* expert_dtype "fp4" (also when absent) vs "fp8" */
    uint32_t bos_id, eos_id;
} ms_v4_config;

/* Parse config.json (path to the file or to the model directory). Rejects other architectures and
 * inconsistent values; err lists every problem found, one per line. Returns 0, -MS_E_UNSUPPORTED
 * (not a DeepSeek-V4 config: architectures/model_type named in err), -MS_E_FORMAT (bad JSON,
 * missing/ill-typed/inconsistent fields), or -errno/-MS_E_* for reading the file. */
int ms_v4_config_load(const char *path, ms_v4_config *cfg, char *err, size_t err_len);
int ms_v4_config_parse(const char *json, size_t len, ms_v4_config *cfg, char *err, size_t err_len);

/* The published configurations (V4_SPEC §1.1): name "pro" or "flash"; 0 or -MS_E_NOT_FOUND. */
int ms_v4_config_preset(const char *name, ms_v4_config *cfg);

/* Writes cfg as a Hugging Face config.json that ms_v4_config_parse reads back to the same struct
 * (every field it reads, plus the informational ones transformers expects). Returns 0 or -MS_E_IO
 * (check the FILE for the reason). */
int ms_v4_config_write_json(const ms_v4_config *cfg, FILE *f);

/* Check that every tensor the config implies exists with the expected dtype and shape (main stack;
 * mtp.* tensors are checked when present). Reports ALL problems at once in err (one per line,
 * truncated with a count if long). Returns 0 or -MS_E_FORMAT. */
int ms_v4_check_tensors(const ms_v4_config *cfg, const ms_st *st, char *err, size_t err_len);

/* Compression ratio of a layer: layer < n_layers is the main stack, n_layers + i is mtp.i (0 when
 * compress_ratios has no entry for it). */
uint32_t ms_v4_layer_ratio(const ms_v4_config *cfg, uint32_t layer);

/* What a tensor is, whatever its name: the binders of both backends, the test builders, the
 * synthetic-checkpoint generator and (later) the converter switch on this, so the V4 tensor list is
 * written once (ms_v4_for_each_tensor). Linears (part = weight data or block scales) carry their
 * logical [m][k]; "CMP" is the attention compressor, "IDX_CMP" the indexer's; "MTP_*" exist only in
 * MTP blocks. */
#define MS_V4_ROLE_LIST(X)                                                                         \
    X(EMBED) X(HEAD) X(NORM) X(HC_HEAD_FN) X(HC_HEAD_BASE) X(HC_HEAD_SCALE)                        \
    X(ATTN_NORM) X(FFN_NORM) X(HC_ATTN_FN) X(HC_FFN_FN) X(HC_ATTN_BASE) X(HC_FFN_BASE)              \
    X(HC_ATTN_SCALE) X(HC_FFN_SCALE)                                                               \
    X(WQ_A) X(Q_NORM) X(WQ_B) X(WKV) X(KV_NORM) X(WO_A) X(WO_B) X(ATTN_SINK)                       \
    X(CMP_WKV) X(CMP_WGATE) X(CMP_APE) X(CMP_NORM)                                                 \
    X(IDX_WQ_B) X(IDX_WPROJ) X(IDX_CMP_WKV) X(IDX_CMP_WGATE) X(IDX_CMP_APE) X(IDX_CMP_NORM)        \
    X(GATE) X(GATE_TID2EID) X(GATE_BIAS) X(SH_W1) X(SH_W3) X(SH_W2) X(EX_W1) X(EX_W3) X(EX_W2)    \
    X(MTP_E_PROJ) X(MTP_H_PROJ) X(MTP_ENORM) X(MTP_HNORM) X(MTP_NORM) X(MTP_HC_HEAD_FN)            \
    X(MTP_HC_HEAD_BASE) X(MTP_HC_HEAD_SCALE)

typedef enum ms_v4_role {
#define MS_X_ROLE(n) MS_V4_ROLE_##n,
    MS_V4_ROLE_LIST(MS_X_ROLE)
#undef MS_X_ROLE
    MS_V4_ROLE_COUNT
} ms_v4_role;

const char *ms_v4_role_name(ms_v4_role role); /* "WQ_A", ... */

typedef enum ms_v4_part {
    MS_V4_PART_WHOLE = 0, /* a vector, table or unquantised matrix */
    MS_V4_PART_WEIGHT,    /* the codes of a quantised linear (FP8 e4m3 or packed FP4) */
    MS_V4_PART_SCALE,     /* its e8m0 block scales */
} ms_v4_part;

#define MS_V4_NO_INDEX UINT32_MAX

/* One tensor the config implies (V4_SPEC §2.2); shapes are [rows(out), cols(in)] or [n] as stored
 * (packed FP4 has k/2 columns). */
typedef struct ms_v4_tensor_spec {
    char name[96];
    ms_st_dtype dtype;
    uint32_t n_dims;
    uint64_t shape[2];
    ms_v4_role role;
    ms_v4_part part;
    uint32_t layer;  /* block index (n_layers + i for mtp.i); MS_V4_NO_INDEX for globals */
    uint32_t expert; /* routed expert index; MS_V4_NO_INDEX otherwise */
    uint64_t m, k;   /* a linear's logical shape (outputs, inputs); 0 for non-linears */
} ms_v4_tensor_spec;

/* Calls fn for every expected tensor: globals, layers.0.. in order, then (with_mtp) mtp.0...
 * Stops at the first nonzero return of fn and returns it; 0 when all were visited. */
typedef int (*ms_v4_tensor_fn)(const ms_v4_tensor_spec *t, void *user);
int ms_v4_for_each_tensor(const ms_v4_config *cfg, bool with_mtp, ms_v4_tensor_fn fn, void *user);

/* The expected spec of one named tensor (mtp.* included): 0 or -MS_E_NOT_FOUND. Linear in the
 * tensor count; meant for tests and tools, not hot paths. */
int ms_v4_expected_tensor(const ms_v4_config *cfg, const char *name, ms_v4_tensor_spec *out);

/* Checkpoint bytes of the tensors the forward pass uses (MTP blocks excluded): *total, and
 * *per_token, what one decoded token reads on average: everything, except one row of the
 * embedding and of tid2eid, and of the routed experts n_active / n_routed of each layer's. */
void ms_v4_weight_bytes(const ms_v4_config *cfg, uint64_t *total, uint64_t *per_token);

#endif
