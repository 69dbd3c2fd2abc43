/* engine/model/config: the real Pro and Flash config.json (V4_SPEC §1.1) parse to the documented
 * values; the expected tensor list reproduces V4_SPEC §2.2 shapes and the real checkpoints' tensor
 * counts and byte totals (§1.5); other architectures and inconsistent configs are rejected with
 * every problem listed; ms_v4_check_tensors passes on a tiny synthetic checkpoint and reports a
 * removed tensor, a changed dtype and a changed shape all at once. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/model/config.h"
#include "engine/model/v4_synth.h"
#include "storage/safetensors.h"

#include "tests/check.h"


/* V4_SPEC §1.1, written out as the HF config.json files are. */
static const char k_pro[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV4ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"compress_ratios\": [128, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, "
    "4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, "
    "4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, "
    "4, 0],\n"
    "  \"compress_rope_theta\": 160000,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"expert_dtype\": \"fp4\",\n"
    "  \"hc_eps\": 1e-06,\n"
    "  \"hc_mult\": 4,\n"
    "  \"hc_sinkhorn_iters\": 20,\n"
    "  \"head_dim\": 512,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 7168,\n"
    "  \"index_head_dim\": 128,\n"
    "  \"index_n_heads\": 64,\n"
    "  \"index_topk\": 1024,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"max_position_embeddings\": 1048576,\n"
    "  \"model_type\": \"deepseek_v4\",\n"
    "  \"moe_intermediate_size\": 3072,\n"
    "  \"n_routed_experts\": 384,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 128,\n"
    "  \"num_experts_per_tok\": 6,\n"
    "  \"num_hash_layers\": 3,\n"
    "  \"num_hidden_layers\": 61,\n"
    "  \"num_key_value_heads\": 1,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"o_groups\": 16,\n"
    "  \"o_lora_rank\": 1024,\n"
    "  \"q_lora_rank\": 1536,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
    "\"quant_method\": \"fp8\", \"scale_fmt\": \"ue8m0\", \"weight_block_size\": [128, 128]},\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 16, "
    "\"original_max_position_embeddings\": 65536, \"type\": \"yarn\"},\n"
    "  \"rope_theta\": 10000,\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"scoring_func\": \"sqrtsoftplus\",\n"
    "  \"sliding_window\": 128,\n"
    "  \"swiglu_limit\": 10.0,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.57.1\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 129280\n"
    "}\n";

static const char k_flash[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV4ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"compress_ratios\": [0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, "
    "4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, "
    "128, 4, 0],\n"
    "  \"compress_rope_theta\": 160000,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"expert_dtype\": \"fp4\",\n"
    "  \"hc_eps\": 1e-06,\n"
    "  \"hc_mult\": 4,\n"
    "  \"hc_sinkhorn_iters\": 20,\n"
    "  \"head_dim\": 512,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"index_head_dim\": 128,\n"
    "  \"index_n_heads\": 64,\n"
    "  \"index_topk\": 512,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"max_position_embeddings\": 1048576,\n"
    "  \"model_type\": \"deepseek_v4\",\n"
    "  \"moe_intermediate_size\": 2048,\n"
    "  \"n_routed_experts\": 256,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 64,\n"
    "  \"num_experts_per_tok\": 6,\n"
    "  \"num_hash_layers\": 3,\n"
    "  \"num_hidden_layers\": 43,\n"
    "  \"num_key_value_heads\": 1,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"o_groups\": 8,\n"
    "  \"o_lora_rank\": 1024,\n"
    "  \"q_lora_rank\": 1024,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
    "\"quant_method\": \"fp8\", \"scale_fmt\": \"ue8m0\", \"weight_block_size\": [128, 128]},\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 16, "
    "\"original_max_position_embeddings\": 65536, \"type\": \"yarn\"},\n"
    "  \"rope_theta\": 10000,\n"
    "  \"routed_scaling_factor\": 1.5,\n"
    "  \"scoring_func\": \"sqrtsoftplus\",\n"
    "  \"sliding_window\": 128,\n"
    "  \"swiglu_limit\": 10.0,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.57.1\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 129280\n"
    "}\n";

/* A tiny model with every layer kind: ratios 0, 4, 128, 4 and an MTP block; one hash layer. */
static const char k_tiny[] =
    "{\"architectures\": [\"DeepseekV4ForCausalLM\"], \"model_type\": \"deepseek_v4\",\n"
    " \"vocab_size\": 64, \"hidden_size\": 64, \"num_hidden_layers\": 4,\n"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 1, \"head_dim\": 72,\n"
    " \"qk_rope_head_dim\": 8, \"q_lora_rank\": 32, \"o_lora_rank\": 16, \"o_groups\": 2,\n"
    " \"sliding_window\": 8, \"compress_ratios\": [0, 4, 128, 4, 0],\n"
    " \"compress_rope_theta\": 160000, \"rope_theta\": 10000, \"rope_scaling\": null,\n"
    " \"max_position_embeddings\": 4096, \"index_n_heads\": 2, \"index_head_dim\": 32,\n"
    " \"index_topk\": 4, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2,\n"
    " \"n_shared_experts\": 1, \"moe_intermediate_size\": 32, \"num_hash_layers\": 1,\n"
    " \"scoring_func\": \"sqrtsoftplus\", \"topk_method\": \"noaux_tc\",\n"
    " \"norm_topk_prob\": true,\n"
    " \"routed_scaling_factor\": 1.5, \"swiglu_limit\": 10.0, \"hidden_act\": \"silu\",\n"
    " \"hc_mult\": 2, \"hc_sinkhorn_iters\": 20, \"hc_eps\": 1e-06, \"rms_norm_eps\": 1e-06,\n"
    " \"num_nextn_predict_layers\": 1, \"bos_token_id\": 0, \"eos_token_id\": 1}\n";

static char g_dir[256];

/* Copy of src with the first occurrence of from replaced by to (ms_free it). */
static char *replaced(const char *src, const char *from, const char *to) {
    const char *at = strstr(src, from);
    CHECK(at != NULL, "template lacks '%s'", from);
    if (!at) return ms_strdup(src);
    size_t n = strlen(src) - strlen(from) + strlen(to);
    char *o = ms_malloc(n + 1);
    size_t pre = (size_t)(at - src);
    memcpy(o, src, pre);
    strcpy(o + pre, to);
    strcat(o, at + strlen(from));
    return o;
}

static int count_lines(const char *s) {
    if (!*s) return 0;
    int n = 1;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int parse(const char *json, ms_v4_config *c, char *err, size_t err_len) {
    return ms_v4_config_parse(json, strlen(json), c, err, err_len);
}

static void expect_spec(const ms_v4_config *c, const char *name, ms_st_dtype dt, uint32_t nd,
                        uint64_t d0, uint64_t d1) {
    ms_v4_tensor_spec s;
    int rc = ms_v4_expected_tensor(c, name, &s);
    CHECK(rc == 0, "%s: not expected", name);
    if (rc) return;
    CHECK(s.dtype == dt, "%s: dtype %s, table says %s", name, ms_st_dtype_name(s.dtype),
          ms_st_dtype_name(dt));
    CHECK(s.n_dims == nd && s.shape[0] == d0 && (nd < 2 || s.shape[1] == d1),
          "%s: shape [%llu, %llu] (%u dims), table says [%llu, %llu]", name,
          (unsigned long long)s.shape[0], (unsigned long long)s.shape[1], s.n_dims,
          (unsigned long long)d0, (unsigned long long)d1);
}

static void expect_absent(const ms_v4_config *c, const char *name) {
    ms_v4_tensor_spec s;
    CHECK(ms_v4_expected_tensor(c, name, &s) == -MS_E_NOT_FOUND, "%s should not be expected", name);
}

typedef struct totals {
    uint64_t n, bytes;
} totals;

static int sum_fn(const ms_v4_tensor_spec *t, void *user) {
    totals *s = user;
    uint64_t e = t->shape[0] * (t->n_dims > 1 ? t->shape[1] : 1);
    s->n++;
    s->bytes += e * ms_st_dtype_size(t->dtype);
    return 0;
}

/* The table's annotations: every tensor has a role, linears their logical shape, per-block tensors
 * their layer, routed experts their index; the stored shape follows from role, part and [m][k]. */
typedef struct role_stats {
    const ms_v4_config *c;
    uint64_t per_role[MS_V4_ROLE_COUNT];
    uint32_t bad;
} role_stats;

static int role_fn(const ms_v4_tensor_spec *t, void *user) {
    role_stats *r = user;
    const ms_v4_config *c = r->c;
    bool ok = (unsigned)t->role < MS_V4_ROLE_COUNT;
    if (ok) r->per_role[t->role]++;
    bool global = t->role <= MS_V4_ROLE_HC_HEAD_SCALE;
    bool expert = t->role == MS_V4_ROLE_EX_W1 || t->role == MS_V4_ROLE_EX_W3 ||
                  t->role == MS_V4_ROLE_EX_W2;
    ok = ok && (global ? t->layer == MS_V4_NO_INDEX
                       : t->layer < c->n_layers + c->n_mtp_layers);
    ok = ok && (expert ? t->expert < c->n_routed_experts : t->expert == MS_V4_NO_INDEX);
    if (t->part == MS_V4_PART_WEIGHT && t->dtype == MS_ST_I8)
        ok = ok && t->shape[0] == t->m && t->shape[1] * 2 == t->k;
    else if (t->part == MS_V4_PART_WEIGHT)
        ok = ok && t->dtype == MS_ST_F8_E4M3 && t->shape[0] == t->m && t->shape[1] == t->k;
    else if (t->part == MS_V4_PART_SCALE)
        ok = ok && t->dtype == MS_ST_F8_E8M0 && t->m && t->k;
    else if (t->m) /* an unquantised linear */
        ok = ok && t->n_dims == 2 && t->shape[0] == t->m && t->shape[1] == t->k;
    if (!ok && r->bad++ < 5)
        printf("FAIL: %s: role %s part %d layer %u expert %u m %llu k %llu\n", t->name,
               ms_v4_role_name(t->role), (int)t->part, t->layer, t->expert,
               (unsigned long long)t->m, (unsigned long long)t->k);
    return 0;
}

static void test_roles(const ms_v4_config *c, const char *which) {
    role_stats r = {.c = c};
    CHECK(ms_v4_for_each_tensor(c, true, role_fn, &r) == 0, "enumerate");
    CHECK(r.bad == 0, "%s: %u tensors with inconsistent annotations", which, r.bad);
    uint64_t E = c->n_routed_experts, L = c->n_layers + c->n_mtp_layers;
    CHECK(r.per_role[MS_V4_ROLE_EX_W2] == 2 * E * L, "%s: %llu EX_W2 tensors, expected %llu",
          which, (unsigned long long)r.per_role[MS_V4_ROLE_EX_W2], (unsigned long long)(2 * E * L));
    CHECK(r.per_role[MS_V4_ROLE_WQ_A] == 2 * L && r.per_role[MS_V4_ROLE_EMBED] == 1 &&
              r.per_role[MS_V4_ROLE_MTP_E_PROJ] == 2 * c->n_mtp_layers &&
              r.per_role[MS_V4_ROLE_GATE_TID2EID] == c->n_hash_layers,
          "%s: role counts", which);
    CHECK(strcmp(ms_v4_role_name(MS_V4_ROLE_IDX_CMP_APE), "IDX_CMP_APE") == 0, "role names");
}

/* The presets equal the published files, and writing a config reads back to the same struct. */
static void test_presets(void) {
    const char *names[2] = {"pro", "flash"};
    const char *texts[2] = {k_pro, k_flash};
    char err[2048];
    for (int i = 0; i < 2; i++) {
        ms_v4_config a, b, r;
        CHECK(ms_v4_config_preset(names[i], &a) == 0, "preset %s", names[i]);
        CHECK(parse(texts[i], &b, err, sizeof err) == 0, "parse %s: %s", names[i], err);
        CHECK(memcmp(&a, &b, sizeof a) == 0, "preset %s differs from its config.json", names[i]);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        CHECK(f && ms_v4_config_write_json(&a, f) == 0, "write %s", names[i]);
        if (f) fclose(f);
        int rc = ms_v4_config_parse(buf, len, &r, err, sizeof err);
        CHECK(rc == 0 && memcmp(&a, &r, sizeof a) == 0, "%s round trip: %s", names[i], err);
        free(buf);
    }
    ms_v4_config c;
    CHECK(ms_v4_config_preset("nano", &c) == -MS_E_NOT_FOUND, "unknown preset");
}

/* ms_v4_synth_fill: pieces give the same bytes as a whole fill; codes are finite; routing rows
 * hold distinct experts. */
typedef struct synth_ctx {
    const ms_v4_config *c;
    uint32_t checked, bad;
} synth_ctx;

static int synth_fn(const ms_v4_tensor_spec *t, void *user) {
    synth_ctx *x = user;
    uint64_t n = ms_v4_spec_bytes(t);
    if (n > (1u << 20) || (x->checked > 40 && t->role != MS_V4_ROLE_GATE_TID2EID)) return 0;
    uint8_t *whole = ms_malloc(n ? n : 1), *parts = ms_malloc(n ? n : 1);
    ms_v4_synth_fill(x->c, t, 9, 0, n, whole);
    uint64_t unit = ms_st_dtype_size(t->dtype);
    if (t->role == MS_V4_ROLE_GATE_TID2EID) unit *= t->shape[1];
    for (uint64_t off = 0, step = unit; off < n; off += step, step = step * 3 % (7 * unit) + unit) {
        uint64_t k = n - off < step ? n - off : step;
        ms_v4_synth_fill(x->c, t, 9, off, k, parts + off);
    }
    bool ok = memcmp(whole, parts, n) == 0;
    if (t->dtype == MS_ST_F8_E4M3)
        for (uint64_t i = 0; i < n; i++) ok = ok && (whole[i] & 0x7F) != 0x7F;
    if (t->part == MS_V4_PART_SCALE)
        for (uint64_t i = 0; i < n; i++) ok = ok && whole[i] > 90 && whole[i] < 130;
    if (t->role == MS_V4_ROLE_GATE_TID2EID)
        for (uint64_t r = 0; r < t->shape[0]; r++)
            for (uint64_t a = 0; a < t->shape[1]; a++) {
                int64_t ea, eb;
                memcpy(&ea, whole + 8 * (r * t->shape[1] + a), 8);
                ok = ok && ea >= 0 && ea < (int64_t)x->c->n_routed_experts;
                for (uint64_t b = 0; b < a; b++) {
                    memcpy(&eb, whole + 8 * (r * t->shape[1] + b), 8);
                    ok = ok && ea != eb;
                }
            }
    if (!ok && x->bad++ < 5) printf("FAIL: synth %s\n", t->name);
    x->checked++;
    ms_free(whole);
    ms_free(parts);
    return 0;
}

static void test_synth(void) {
    ms_v4_config c;
    char err[1024];
    CHECK(parse(k_tiny, &c, err, sizeof err) == 0, "tiny: %s", err);
    synth_ctx x = {.c = &c};
    ms_v4_for_each_tensor(&c, true, synth_fn, &x);
    CHECK(x.bad == 0 && x.checked > 40, "synth fill: %u of %u tensors bad", x.bad, x.checked);
}

static void test_pro(void) {
    ms_v4_config c;
    char err[2048];
    int rc = parse(k_pro, &c, err, sizeof err);
    CHECK(rc == 0, "Pro config: %s", err);
    CHECK(c.vocab_size == 129280 && c.dim == 7168 && c.n_layers == 61 && c.n_heads == 128 &&
              c.n_kv_heads == 1 && c.head_dim == 512 && c.rope_dim == 64,
          "Pro dims");
    CHECK(c.q_lora_rank == 1536 && c.o_lora_rank == 1024 && c.o_groups == 16 && c.window == 128,
          "Pro attention");
    CHECK(c.n_compress_ratios == 62 && c.compress_ratios[0] == 128 && c.compress_ratios[1] == 128 &&
              c.compress_ratios[2] == 4 && c.compress_ratios[59] == 128 &&
              c.compress_ratios[60] == 4 && c.compress_ratios[61] == 0,
          "Pro compress_ratios");
    CHECK(ms_v4_layer_ratio(&c, 61) == 0 && ms_v4_layer_ratio(&c, 1000) == 0, "Pro MTP ratio");
    CHECK(c.rope_theta == 10000 && c.compress_rope_theta == 160000 && c.yarn &&
              c.yarn_factor == 16 && c.yarn_original_max_pos == 65536 && c.yarn_beta_fast == 32 &&
              c.yarn_beta_slow == 1 && c.max_position_embeddings == 1048576,
          "Pro rope");
    CHECK(c.index_n_heads == 64 && c.index_head_dim == 128 && c.index_topk == 1024, "Pro indexer");
    CHECK(c.n_routed_experts == 384 && c.n_active_experts == 6 && c.n_shared_experts == 1 &&
              c.moe_inter_dim == 3072 && c.n_hash_layers == 3 && c.norm_topk_prob &&
              c.routed_scaling_factor == 2.5 && c.swiglu_limit == 10.0,
          "Pro MoE");
    CHECK(c.hc_mult == 4 && c.hc_sinkhorn_iters == 20 && c.hc_eps == 1e-6 && c.rms_norm_eps == 1e-6,
          "Pro mHC");
    CHECK(c.n_mtp_layers == 1 && c.expert_fp4 && c.bos_id == 0 && c.eos_id == 1, "Pro misc");

    /* V4_SPEC §2.2, Pro column */
    expect_spec(&c, "embed.weight", MS_ST_BF16, 2, 129280, 7168);
    expect_spec(&c, "head.weight", MS_ST_BF16, 2, 129280, 7168);
    expect_spec(&c, "norm.weight", MS_ST_BF16, 1, 7168, 0);
    expect_spec(&c, "hc_head_fn", MS_ST_F32, 2, 4, 28672);
    expect_spec(&c, "hc_head_base", MS_ST_F32, 1, 4, 0);
    expect_spec(&c, "hc_head_scale", MS_ST_F32, 1, 1, 0);
    expect_spec(&c, "layers.5.hc_attn_fn", MS_ST_F32, 2, 24, 28672);
    expect_spec(&c, "layers.5.hc_ffn_base", MS_ST_F32, 1, 24, 0);
    expect_spec(&c, "layers.5.hc_attn_scale", MS_ST_F32, 1, 3, 0);
    expect_spec(&c, "layers.7.attn.wq_a.weight", MS_ST_F8_E4M3, 2, 1536, 7168);
    expect_spec(&c, "layers.7.attn.wq_a.scale", MS_ST_F8_E8M0, 2, 12, 56);
    expect_spec(&c, "layers.7.attn.q_norm.weight", MS_ST_BF16, 1, 1536, 0);
    expect_spec(&c, "layers.7.attn.wq_b.weight", MS_ST_F8_E4M3, 2, 65536, 1536);
    expect_spec(&c, "layers.7.attn.wq_b.scale", MS_ST_F8_E8M0, 2, 512, 12);
    expect_spec(&c, "layers.7.attn.wkv.weight", MS_ST_F8_E4M3, 2, 512, 7168);
    expect_spec(&c, "layers.7.attn.wkv.scale", MS_ST_F8_E8M0, 2, 4, 56);
    expect_spec(&c, "layers.7.attn.kv_norm.weight", MS_ST_BF16, 1, 512, 0);
    expect_spec(&c, "layers.7.attn.wo_a.weight", MS_ST_F8_E4M3, 2, 16384, 4096);
    expect_spec(&c, "layers.7.attn.wo_a.scale", MS_ST_F8_E8M0, 2, 128, 32);
    expect_spec(&c, "layers.7.attn.wo_b.weight", MS_ST_F8_E4M3, 2, 7168, 16384);
    expect_spec(&c, "layers.7.attn.wo_b.scale", MS_ST_F8_E8M0, 2, 56, 128);
    expect_spec(&c, "layers.7.attn.attn_sink", MS_ST_F32, 1, 128, 0);
    expect_spec(&c, "layers.7.ffn.gate.weight", MS_ST_BF16, 2, 384, 7168);
    expect_spec(&c, "layers.7.ffn.gate.bias", MS_ST_F32, 1, 384, 0);
    expect_spec(&c, "layers.2.ffn.gate.tid2eid", MS_ST_I64, 2, 129280, 6);
    expect_absent(&c, "layers.2.ffn.gate.bias");
    expect_absent(&c, "layers.3.ffn.gate.tid2eid");
    expect_spec(&c, "layers.7.ffn.shared_experts.w1.weight", MS_ST_F8_E4M3, 2, 3072, 7168);
    expect_spec(&c, "layers.7.ffn.shared_experts.w3.scale", MS_ST_F8_E8M0, 2, 24, 56);
    expect_spec(&c, "layers.7.ffn.shared_experts.w2.weight", MS_ST_F8_E4M3, 2, 7168, 3072);
    expect_spec(&c, "layers.7.ffn.shared_experts.w2.scale", MS_ST_F8_E8M0, 2, 56, 24);
    expect_spec(&c, "layers.60.ffn.experts.383.w1.weight", MS_ST_I8, 2, 3072, 3584);
    expect_spec(&c, "layers.60.ffn.experts.383.w3.scale", MS_ST_F8_E8M0, 2, 3072, 224);
    expect_spec(&c, "layers.0.ffn.experts.0.w2.weight", MS_ST_I8, 2, 7168, 1536);
    expect_spec(&c, "layers.0.ffn.experts.0.w2.scale", MS_ST_F8_E8M0, 2, 7168, 96);
    expect_absent(&c, "layers.0.ffn.experts.384.w1.weight");
    /* ratio 128 (layers 0, 1, odd) and ratio 4 (even from 2) */
    expect_spec(&c, "layers.0.attn.compressor.wkv.weight", MS_ST_BF16, 2, 512, 7168);
    expect_spec(&c, "layers.0.attn.compressor.wgate.weight", MS_ST_BF16, 2, 512, 7168);
    expect_spec(&c, "layers.0.attn.compressor.ape", MS_ST_F32, 2, 128, 512);
    expect_spec(&c, "layers.0.attn.compressor.norm.weight", MS_ST_BF16, 1, 512, 0);
    expect_absent(&c, "layers.0.attn.indexer.wq_b.weight");
    expect_spec(&c, "layers.2.attn.compressor.wkv.weight", MS_ST_BF16, 2, 1024, 7168);
    expect_spec(&c, "layers.2.attn.compressor.ape", MS_ST_F32, 2, 4, 1024);
    expect_spec(&c, "layers.2.attn.indexer.wq_b.weight", MS_ST_F8_E4M3, 2, 8192, 1536);
    expect_spec(&c, "layers.2.attn.indexer.wq_b.scale", MS_ST_F8_E8M0, 2, 64, 12);
    expect_spec(&c, "layers.2.attn.indexer.weights_proj.weight", MS_ST_BF16, 2, 64, 7168);
    expect_spec(&c, "layers.2.attn.indexer.compressor.wkv.weight", MS_ST_BF16, 2, 256, 7168);
    expect_spec(&c, "layers.2.attn.indexer.compressor.wgate.weight", MS_ST_BF16, 2, 256, 7168);
    expect_spec(&c, "layers.2.attn.indexer.compressor.ape", MS_ST_F32, 2, 4, 256);
    expect_spec(&c, "layers.2.attn.indexer.compressor.norm.weight", MS_ST_BF16, 1, 128, 0);
    expect_absent(&c, "layers.3.attn.indexer.wq_b.weight");
    /* MTP block */
    expect_spec(&c, "mtp.0.e_proj.weight", MS_ST_F8_E4M3, 2, 7168, 7168);
    expect_spec(&c, "mtp.0.h_proj.scale", MS_ST_F8_E8M0, 2, 56, 56);
    expect_spec(&c, "mtp.0.enorm.weight", MS_ST_BF16, 1, 7168, 0);
    expect_spec(&c, "mtp.0.hc_head_fn", MS_ST_F32, 2, 4, 28672);
    expect_spec(&c, "mtp.0.ffn.gate.bias", MS_ST_F32, 1, 384, 0);
    expect_spec(&c, "mtp.0.attn.wq_b.weight", MS_ST_F8_E4M3, 2, 65536, 1536);
    expect_absent(&c, "mtp.0.attn.compressor.wkv.weight");
    expect_absent(&c, "mtp.0.ffn.gate.tid2eid");
    expect_absent(&c, "layers.61.attn_norm.weight");

    test_roles(&c, "Pro");

    /* V4_SPEC §1.5: 145,116 tensors, 864.70 GB */
    totals t = {0, 0};
    CHECK(ms_v4_for_each_tensor(&c, true, sum_fn, &t) == 0, "enumerate");
    CHECK(t.n == 145116, "Pro tensor count %llu, checkpoint has 145116", (unsigned long long)t.n);
    CHECK((t.bytes + 5000000) / 10000000 == 86470, "Pro bytes %llu, checkpoint 864.70 GB",
          (unsigned long long)t.bytes);
}

static void test_flash(void) {
    ms_v4_config c;
    char err[2048];
    int rc = parse(k_flash, &c, err, sizeof err);
    CHECK(rc == 0, "Flash config: %s", err);
    CHECK(c.dim == 4096 && c.n_layers == 43 && c.n_heads == 64 && c.q_lora_rank == 1024 &&
              c.o_groups == 8 && c.index_topk == 512 && c.n_routed_experts == 256 &&
              c.moe_inter_dim == 2048 && c.routed_scaling_factor == 1.5,
          "Flash values");
    static const uint32_t head[4] = {0, 0, 4, 128};
    CHECK(c.n_compress_ratios == 44 && memcmp(c.compress_ratios, head, sizeof head) == 0 &&
              c.compress_ratios[41] == 128 && c.compress_ratios[42] == 4 &&
              c.compress_ratios[43] == 0,
          "Flash compress_ratios [0,0,4,128,...,4,0]");
    for (uint32_t l = 2; l < 43; l++)
        CHECK(c.compress_ratios[l] == (l % 2 ? 128u : 4u), "Flash ratio of layer %u", l);

    expect_spec(&c, "embed.weight", MS_ST_BF16, 2, 129280, 4096);
    expect_spec(&c, "hc_head_fn", MS_ST_F32, 2, 4, 16384);
    expect_spec(&c, "layers.9.hc_ffn_fn", MS_ST_F32, 2, 24, 16384);
    expect_spec(&c, "layers.9.attn.wq_a.weight", MS_ST_F8_E4M3, 2, 1024, 4096);
    expect_spec(&c, "layers.9.attn.wq_a.scale", MS_ST_F8_E8M0, 2, 8, 32);
    expect_spec(&c, "layers.9.attn.wq_b.weight", MS_ST_F8_E4M3, 2, 32768, 1024);
    expect_spec(&c, "layers.9.attn.wq_b.scale", MS_ST_F8_E8M0, 2, 256, 8);
    expect_spec(&c, "layers.9.attn.wkv.scale", MS_ST_F8_E8M0, 2, 4, 32);
    expect_spec(&c, "layers.9.attn.wo_a.weight", MS_ST_F8_E4M3, 2, 8192, 4096);
    expect_spec(&c, "layers.9.attn.wo_a.scale", MS_ST_F8_E8M0, 2, 64, 32);
    expect_spec(&c, "layers.9.attn.wo_b.weight", MS_ST_F8_E4M3, 2, 4096, 8192);
    expect_spec(&c, "layers.9.attn.wo_b.scale", MS_ST_F8_E8M0, 2, 32, 64);
    expect_spec(&c, "layers.9.attn.attn_sink", MS_ST_F32, 1, 64, 0);
    expect_spec(&c, "layers.9.ffn.gate.weight", MS_ST_BF16, 2, 256, 4096);
    expect_spec(&c, "layers.9.ffn.shared_experts.w1.scale", MS_ST_F8_E8M0, 2, 16, 32);
    expect_spec(&c, "layers.9.ffn.shared_experts.w2.scale", MS_ST_F8_E8M0, 2, 32, 16);
    expect_spec(&c, "layers.9.ffn.experts.255.w1.weight", MS_ST_I8, 2, 2048, 2048);
    expect_spec(&c, "layers.9.ffn.experts.255.w1.scale", MS_ST_F8_E8M0, 2, 2048, 128);
    expect_spec(&c, "layers.9.ffn.experts.17.w2.weight", MS_ST_I8, 2, 4096, 1024);
    expect_spec(&c, "layers.9.ffn.experts.17.w2.scale", MS_ST_F8_E8M0, 2, 4096, 64);
    expect_absent(&c, "layers.9.ffn.experts.256.w2.weight");
    /* ratio 0 layers 0, 1: no compressor; ratio 4 even; ratio 128 odd */
    expect_absent(&c, "layers.0.attn.compressor.wkv.weight");
    expect_absent(&c, "layers.1.attn.indexer.wq_b.weight");
    expect_spec(&c, "layers.2.attn.compressor.wkv.weight", MS_ST_BF16, 2, 1024, 4096);
    expect_spec(&c, "layers.2.attn.compressor.ape", MS_ST_F32, 2, 4, 1024);
    expect_spec(&c, "layers.3.attn.compressor.wkv.weight", MS_ST_BF16, 2, 512, 4096);
    expect_spec(&c, "layers.3.attn.compressor.ape", MS_ST_F32, 2, 128, 512);
    expect_spec(&c, "layers.42.attn.indexer.wq_b.weight", MS_ST_F8_E4M3, 2, 8192, 1024);
    expect_spec(&c, "layers.42.attn.indexer.wq_b.scale", MS_ST_F8_E8M0, 2, 64, 8);
    expect_spec(&c, "layers.42.attn.indexer.weights_proj.weight", MS_ST_BF16, 2, 64, 4096);
    expect_spec(&c, "layers.42.attn.indexer.compressor.wkv.weight", MS_ST_BF16, 2, 256, 4096);
    expect_absent(&c, "layers.41.attn.indexer.wq_b.weight");
    /* hash routing only on layers < 3 */
    for (int l = 0; l < 6; l++) {
        char tid[64], bias[64];
        snprintf(tid, sizeof tid, "layers.%d.ffn.gate.tid2eid", l);
        snprintf(bias, sizeof bias, "layers.%d.ffn.gate.bias", l);
        if (l < 3) {
            expect_spec(&c, tid, MS_ST_I64, 2, 129280, 6);
            expect_absent(&c, bias);
        } else {
            expect_spec(&c, bias, MS_ST_F32, 1, 256, 0);
            expect_absent(&c, tid);
        }
    }
    /* V4_SPEC §1.5: 69,187 tensors, 159.61 GB */
    totals t = {0, 0};
    ms_v4_for_each_tensor(&c, true, sum_fn, &t);
    CHECK(t.n == 69187, "Flash tensor count %llu, checkpoint has 69187", (unsigned long long)t.n);
    CHECK((t.bytes + 5000000) / 10000000 == 15961, "Flash bytes %llu, checkpoint 159.61 GB",
          (unsigned long long)t.bytes);

    /* expert_dtype absent => fp4; "fp8" => block-128 FP8 experts */
    char *j = replaced(k_flash, "  \"expert_dtype\": \"fp4\",\n", "");
    CHECK(parse(j, &c, err, sizeof err) == 0 && c.expert_fp4, "absent expert_dtype: %s", err);
    ms_free(j);
    j = replaced(k_flash, "\"expert_dtype\": \"fp4\"", "\"expert_dtype\": \"fp8\"");
    CHECK(parse(j, &c, err, sizeof err) == 0 && !c.expert_fp4, "fp8 experts: %s", err);
    expect_spec(&c, "layers.9.ffn.experts.0.w1.weight", MS_ST_F8_E4M3, 2, 2048, 4096);
    expect_spec(&c, "layers.9.ffn.experts.0.w1.scale", MS_ST_F8_E8M0, 2, 16, 32);
    expect_spec(&c, "layers.9.ffn.experts.0.w2.weight", MS_ST_F8_E4M3, 2, 4096, 2048);
    ms_free(j);
    /* no rope_scaling => no YaRN; "rope_type" spelling accepted */
    j = replaced(k_flash, "\"type\": \"yarn\"", "\"rope_type\": \"yarn\"");
    CHECK(parse(j, &c, err, sizeof err) == 0 && c.yarn, "rope_type spelling: %s", err);
    ms_free(j);
}

static void test_rejections(void) {
    ms_v4_config c;
    char err[2048];
    /* other architectures */
    char *j = replaced(k_flash, "[\"DeepseekV4ForCausalLM\"]", "[\"DeepseekV3ForCausalLM\"]");
    char *j2 = replaced(j, "\"deepseek_v4\"", "\"deepseek_v3\"");
    int rc = parse(j2, &c, err, sizeof err);
    CHECK(rc == -MS_E_UNSUPPORTED && strstr(err, "DeepseekV3ForCausalLM") &&
              strstr(err, "deepseek_v3") && strstr(err, "DeepseekV4ForCausalLM"),
          "V3 rejected: %d %s", rc, err);
    ms_free(j);
    ms_free(j2);
    rc = parse("{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\"}", &c, err,
               sizeof err);
    CHECK(rc == -MS_E_UNSUPPORTED && strstr(err, "LlamaForCausalLM") && strstr(err, "llama"),
          "Llama rejected: %s", err);
    rc = parse("{\"model_type\": \"deepseek_v4\"}", &c, err, sizeof err);
    CHECK(rc == -MS_E_UNSUPPORTED && strstr(err, "architectures [absent]"), "no architectures: %s",
          err);
    j = replaced(k_flash, "\"deepseek_v4\"", "\"deepseek_v3\"");
    CHECK(parse(j, &c, err, sizeof err) == -MS_E_UNSUPPORTED, "model_type mismatch: %s", err);
    ms_free(j);
    rc = parse("[1]", &c, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "array"), "array config: %s", err);
    rc = parse("{\"a\": }", &c, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "line 1, col 7"), "bad JSON: %s", err);

    /* three injected problems -> three lines */
    j = replaced(k_flash, "\"num_key_value_heads\": 1", "\"num_key_value_heads\": 2");
    j2 = replaced(j, "\"o_groups\": 8", "\"o_groups\": 7");
    char *j3 = replaced(j2, "\"scoring_func\": \"sqrtsoftplus\"", "\"scoring_func\": \"softmax\"");
    rc = parse(j3, &c, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && count_lines(err) == 3, "3 problems -> %d lines:\n%s",
          count_lines(err), err);
    CHECK(strstr(err, "num_key_value_heads = 2") && strstr(err, "o_groups = 7") &&
              strstr(err, "\"softmax\""),
          "problem texts:\n%s", err);
    ms_free(j);
    ms_free(j2);
    ms_free(j3);

    /* one problem each: missing field, bad ratio, too few ratios, rope dims, hash layers, ... */
    struct {
        const char *from, *to, *expect;
    } one[] = {
        {"  \"hidden_size\": 4096,\n", "", "'hidden_size': missing"},
        {"4, 128, 4, 0]", "4, 128, 5, 0]", "'compress_ratios'[42]: 5, must be"},
        {"[0, 0, 4, 128, 4, 128,", "[0, 4, 128,", "fewer than num_hidden_layers"},
        {"\"qk_rope_head_dim\": 64", "\"qk_rope_head_dim\": 63", "must be even"},
        {"\"head_dim\": 512", "\"head_dim\": 64", "head_dim = 64 must be greater"},
        {"\"num_hash_layers\": 3", "\"num_hash_layers\": 44", "num_hash_layers = 44"},
        {"\"n_routed_experts\": 256", "\"n_routed_experts\": 4", "exceeds n_routed_experts"},
        {"\"hc_mult\": 4", "\"hc_mult\": 0", "'hc_mult': 0 is outside 1..16"},
        {"\"num_hidden_layers\": 43", "\"num_hidden_layers\": 200", "'num_hidden_layers': 200 is outside 1..128"},
        {"\"weight_block_size\": [128, 128]", "\"weight_block_size\": [64, 64]", "[128, 128]"},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "'hidden_act'"},
        {"\"topk_method\": \"noaux_tc\"", "\"topk_method\": \"greedy\"", "'topk_method'"},
        {"\"hidden_size\": 4096", "\"hidden_size\": \"4096\"", "expected integer, found string"},
        {"\"hidden_size\": 4096", "\"hidden_size\": 4096.0", "expected integer, found number"},
        {"\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 0", "'rms_norm_eps': 0 is outside (0, 1]"},
        {"\"expert_dtype\": \"fp4\"", "\"expert_dtype\": \"int4\"", "'expert_dtype'"},
        {"\"type\": \"yarn\"", "\"type\": \"linear\"", "'rope_scaling.type': \"linear\" is not supported"},
        {"\"factor\": 16, ", "", "rope_scaling.'factor': missing"},
        {"\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", "tie_word_embeddings"},
        {"\"eos_token_id\": 1", "\"eos_token_id\": 200000", "outside the vocabulary"},
        {"\"moe_intermediate_size\": 2048", "\"moe_intermediate_size\": 2000", "multiple of 32"},
        {"\"index_head_dim\": 128", "\"index_head_dim\": 0", "index_head_dim must be > 0"},
        /* hostile-input run: values that passed validation and then hung, allocated gigabytes,
         * divided by log(1) or produced NaN logits */
        {"\"n_routed_experts\": 256", "\"n_routed_experts\": 4294967295", "outside 1..4096"},
        {"\"n_routed_experts\": 256", "\"n_routed_experts\": 16777216", "outside 1..4096"},
        {"\"hc_sinkhorn_iters\": 20", "\"hc_sinkhorn_iters\": 4000000000", "outside 1..1000"},
        {"\"sliding_window\": 128", "\"sliding_window\": 4194304", "outside 1..1048576"},
        {"\"index_topk\": 512", "\"index_topk\": 4000000000", "'index_topk'"},
        {"\"vocab_size\": 129280", "\"vocab_size\": 4000000000", "'vocab_size'"},
        {"\"compress_rope_theta\": 160000", "\"compress_rope_theta\": 1.0", "outside (1,"},
        {"\"beta_fast\": 32", "\"beta_fast\": 0", "'rope_scaling.beta_fast': 0 is outside"},
        {"\"beta_slow\": 1", "\"beta_slow\": -1", "'rope_scaling.beta_slow': -1 is outside"},
        {"\"hc_eps\": 1e-06", "\"hc_eps\": 1e308", "'hc_eps': 1e+308 is outside"},
        {"\"routed_scaling_factor\": 1.5", "\"routed_scaling_factor\": 1e308", "'routed_scaling_factor'"},
        {"\"n_shared_experts\": 1", "\"n_shared_experts\": 0", "'n_shared_experts': 0 is outside 1..1"},
        {", \"type\": \"yarn\"", "", "has no 'type'"},
        {"4, 128, 4, 0]", "4, 128, \"4\", 0]", "'compress_ratios'[42]: \"4\" (a string)"},
        {"4, 128, 4, 0]", "4, 128, 4294967296, 0]", "'compress_ratios'[42]: 4294967296, must"},
        {"4, 128, 4, 0]", "4, 128, 2.5, 0]", "'compress_ratios'[42]: 2.5, must"},
        {"\"index_head_dim\": 128", "\"index_head_dim\": 96", "power of two"},
        {"\"head_dim\": 512", "\"head_dim\": 500", "multiple of 64"},
        /* found by fuzz_config: 0 K/V heads used to pass */
        {"\"num_key_value_heads\": 1", "\"num_key_value_heads\": 0", "num_key_value_heads = 0"},
    };
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        j = replaced(k_flash, one[i].from, one[i].to);
        rc = parse(j, &c, err, sizeof err);
        CHECK(rc == -MS_E_FORMAT && count_lines(err) == 1 && strstr(err, one[i].expect),
              "case %zu (%s): rc %d, %d lines:\n%s", i, one[i].expect, rc, count_lines(err), err);
        ms_free(j);
    }

    /* index_head_dim == qk_rope_head_dim: the whole indexer head is rotary (transformers accepts
     * it); smaller is refused */
    j = replaced(k_flash, "\"index_head_dim\": 128", "\"index_head_dim\": 64");
    rc = parse(j, &c, err, sizeof err);
    CHECK(rc == 0 && c.index_head_dim == 64, "index_head_dim == rope dim: %s", err);
    ms_free(j);
    j = replaced(k_flash, "\"index_head_dim\": 128", "\"index_head_dim\": 32");
    rc = parse(j, &c, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "must be at least qk_rope_head_dim"), "32 < 64: %s", err);
    ms_free(j);

    /* a long list is truncated with a count, never overflowing err */
    char small[120];
    j = replaced(k_flash, "4, 128, 4, 128, 4, 128, 4, 0]", "5, 5, 5, 5, 5, 5, 5, 0]");
    rc = parse(j, &c, small, sizeof small);
    CHECK(rc == -MS_E_FORMAT && strstr(small, "more problem") && strlen(small) < sizeof small,
          "truncated list: %s", small);
    ms_free(j);
}

static void test_load(void) {
    char p[1024], err[1024];
    ms_v4_config c;
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL, "create %s", p);
    if (!f) return;
    fputs(k_flash, f);
    fclose(f);
    CHECK(ms_v4_config_load(g_dir, &c, err, sizeof err) == 0 && c.dim == 4096, "load dir: %s", err);
    CHECK(ms_v4_config_load(p, &c, err, sizeof err) == 0 && c.n_layers == 43, "load file: %s", err);
    snprintf(p, sizeof p, "%s/nothing", g_dir);
    int rc = ms_v4_config_load(p, &c, err, sizeof err);
    CHECK(rc == -ENOENT && strstr(err, "nothing"), "load missing: %d %s", rc, err);

    /* hostile-input run: a FIFO as config.json hung in open(2) forever; now refused at once */
    char fd_dir[512];
    snprintf(fd_dir, sizeof fd_dir, "%s/fifo_model", g_dir);
    CHECK(mkdir(fd_dir, 0700) == 0, "mkdir %s", fd_dir);
    snprintf(p, sizeof p, "%s/config.json", fd_dir);
    CHECK(mkfifo(p, 0600) == 0, "mkfifo %s: %s", p, strerror(errno));
    rc = ms_v4_config_load(fd_dir, &c, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "config.json") && strstr(err, "is a FIFO"),
          "FIFO config: %d %s", rc, err);
    unlink(p);
    /* a directory named config.json */
    CHECK(mkdir(p, 0700) == 0, "mkdir %s", p);
    rc = ms_v4_config_load(fd_dir, &c, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "is a directory"), "directory config: %d %s", rc, err);
    rmdir(p);
    rmdir(fd_dir);
    /* too large: the message gives both sizes, not "not a regular file" */
    snprintf(p, sizeof p, "%s/big.json", g_dir);
    f = fopen(p, "w");
    CHECK(f && ftruncate(fileno(f), 17 << 20) == 0, "make big file");
    if (f) fclose(f);
    rc = ms_v4_config_load(p, &c, err, sizeof err);
    CHECK(rc == -MS_E_RANGE && strstr(err, "17.0 MiB") && strstr(err, "16.0 MiB"),
          "big config: %d %s", rc, err);
    unlink(p);
    /* a ~4 KB path is not silently truncated: the error is about that path */
    char longp[5000];
    size_t lp = (size_t)snprintf(longp, sizeof longp, "%s/", g_dir);
    while (lp + 2 < sizeof longp - 16) longp[lp++] = 'a';
    longp[lp] = '\0';
    rc = ms_v4_config_load(longp, &c, err, sizeof err);
    CHECK(rc == -ENAMETOOLONG, "4 KB path: %d %s", rc, err);
}

/* ---- synthetic checkpoint -------------------------------------------------------------- */

typedef struct mutation {
    const char *drop;          /* tensor left out */
    const char *retype;        /* tensor written with dtype... */
    ms_st_dtype retype_to;
    const char *reshape;       /* tensor written with shape[1] halved */
    const char *extra;         /* an additional unexpected tensor */
    bool no_mtp;               /* leave out every mtp.* tensor */
} mutation;

typedef struct writer {
    const mutation *m;
    char *hdr;
    size_t len, cap;
    uint64_t off;
    uint32_t n;
} writer;

static void hdr_add(writer *w, const char *name, ms_st_dtype dt, uint32_t nd, const uint64_t *s) {
    uint64_t ne = 1;
    for (uint32_t i = 0; i < nd; i++) ne *= s[i];
    uint64_t nb = ne * ms_st_dtype_size(dt);
    if (w->cap - w->len < 512) {
        w->cap = w->cap * 2 + 4096;
        w->hdr = ms_realloc(w->hdr, w->cap);
    }
    w->len += (size_t)snprintf(w->hdr + w->len, w->cap - w->len,
                               "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", w->n ? "," : "{", name,
                               ms_st_dtype_name(dt));
    for (uint32_t i = 0; i < nd; i++)
        w->len += (size_t)snprintf(w->hdr + w->len, w->cap - w->len, "%s%llu", i ? "," : "",
                                   (unsigned long long)s[i]);
    w->len += (size_t)snprintf(w->hdr + w->len, w->cap - w->len,
                               "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)w->off,
                               (unsigned long long)(w->off + nb));
    w->off += nb;
    w->n++;
}

static int writer_fn(const ms_v4_tensor_spec *t, void *user) {
    writer *w = user;
    const mutation *m = w->m;
    if (m->drop && strcmp(t->name, m->drop) == 0) return 0;
    if (m->no_mtp && strncmp(t->name, "mtp.", 4) == 0) return 0;
    ms_st_dtype dt = t->dtype;
    uint64_t s[2] = {t->shape[0], t->shape[1]};
    if (m->retype && strcmp(t->name, m->retype) == 0) dt = m->retype_to;
    if (m->reshape && strcmp(t->name, m->reshape) == 0) s[1] /= 2;
    hdr_add(w, t->name, dt, t->n_dims, s);
    return 0;
}

static int write_ckpt(const ms_v4_config *c, const mutation *m, const char *path) {
    writer w = {m, NULL, 0, 0, 0, 0};
    ms_v4_for_each_tensor(c, true, writer_fn, &w);
    if (m->extra) {
        uint64_t s[1] = {4};
        hdr_add(&w, m->extra, MS_ST_F32, 1, s);
    }
    w.hdr[w.len++] = '}';
    while (w.len % 8) w.hdr[w.len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        ms_free(w.hdr);
        return -1;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)w.len >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(w.hdr, 1, w.len, f);
    static const uint8_t zeros[4096];
    for (uint64_t left = w.off; left;) {
        size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
        fwrite(zeros, 1, k, f);
        left -= k;
    }
    int rc = fclose(f);
    ms_free(w.hdr);
    return rc;
}

static int g_warns;
static char g_last_warn[256];
static void warn_sink(ms_log_level level, const char *msg, void *user) {
    (void)user;
    if (level == MS_LOG_WARN) {
        g_warns++;
        snprintf(g_last_warn, sizeof g_last_warn, "%s", msg);
    }
}

static int check_ckpt(const ms_v4_config *c, const mutation *m, char *err, size_t err_len) {
    char p[512];
    snprintf(p, sizeof p, "%s/tiny.safetensors", g_dir);
    CHECK(write_ckpt(c, m, p) == 0, "write %s", p);
    ms_st *st = NULL;
    int rc = ms_st_open(p, &st, err, err_len);
    CHECK(rc == 0, "open synthetic checkpoint: %s", err);
    if (rc) return rc;
    rc = ms_v4_check_tensors(c, st, err, err_len);
    ms_st_close(st);
    return rc;
}

static void test_check_tensors(void) {
    ms_v4_config c;
    char err[4096];
    int rc = parse(k_tiny, &c, err, sizeof err);
    CHECK(rc == 0, "tiny config: %s", err);
    if (rc) return;
    CHECK(!c.yarn, "rope_scaling null => no YaRN");

    mutation m0 = {0};
    rc = check_ckpt(&c, &m0, err, sizeof err);
    CHECK(rc == 0 && err[0] == '\0', "exact checkpoint: %d\n%s", rc, err);
    mutation m_nomtp = {.no_mtp = true};
    rc = check_ckpt(&c, &m_nomtp, err, sizeof err);
    CHECK(rc == 0, "checkpoint without MTP: %s", err);

    /* a partial MTP block: the whole block is expected once any mtp.* tensor exists */
    mutation m_mtp = {.drop = "mtp.0.e_proj.weight"};
    rc = check_ckpt(&c, &m_mtp, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && count_lines(err) == 1 &&
              strcmp(err, "mtp.0.e_proj.weight: missing (expected F8_E4M3 [64, 64])") == 0,
          "partial MTP:\n%s", err);

    /* one missing, one dtype, one shape: exactly three lines, all at once */
    mutation m3 = {.drop = "layers.2.attn.compressor.ape",
                   .retype = "layers.1.attn.attn_sink",
                   .retype_to = MS_ST_BF16,
                   .reshape = "layers.3.attn.indexer.wq_b.weight"};
    rc = check_ckpt(&c, &m3, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && count_lines(err) == 3, "three problems -> %d lines:\n%s",
          count_lines(err), err);
    CHECK(strstr(err, "layers.2.attn.compressor.ape: missing (expected F32 [128, 72])") != NULL,
          "missing line:\n%s", err);
    CHECK(strstr(err, "layers.1.attn.attn_sink: dtype BF16, expected F32") != NULL,
          "dtype line:\n%s", err);
    CHECK(strstr(err, "layers.3.attn.indexer.wq_b.weight: shape [64, 16], expected [64, 32]") !=
              NULL,
          "shape line:\n%s", err);

    /* an extra tensor is a warning, not an error */
    ms_log_set_sink(warn_sink, NULL);
    g_warns = 0;
    mutation m_extra = {.extra = "layers.0.something_new"};
    rc = check_ckpt(&c, &m_extra, err, sizeof err);
    ms_log_set_sink(NULL, NULL);
    CHECK(rc == 0 && g_warns == 1 && strstr(g_last_warn, "layers.0.something_new"),
          "extra tensor: rc %d, %d warnings, '%s'", rc, g_warns, g_last_warn);

    /* hostile-input run: a config with fewer layers than the checkpoint ran a truncated model;
     * tensors of layers the config does not know are an error, one line per such layer */
    {
        ms_v4_config c3 = c;
        c3.n_layers = 3;
        char p[512];
        snprintf(p, sizeof p, "%s/tiny.safetensors", g_dir);
        mutation m_none = {.no_mtp = true};
        CHECK(write_ckpt(&c, &m_none, p) == 0, "write %s", p);
        ms_st *st = NULL;
        rc = ms_st_open(p, &st, err, sizeof err);
        CHECK(rc == 0, "open: %s", err);
        if (st) {
            rc = ms_v4_check_tensors(&c3, st, err, sizeof err);
            CHECK(rc == -MS_E_FORMAT && count_lines(err) == 1 &&
                      strstr(err, "has layer 3, but config.json says num_hidden_layers = 3"),
                  "layers beyond the config:\n%s", err);
            /* 4096 experts per layer (the bound) against a 4-expert checkpoint: every missing
             * tensor counted, the text stops at the buffer (it used to format every line) */
            ms_v4_config cx = c;
            cx.n_routed_experts = 4096;
            char small[256];
            rc = ms_v4_check_tensors(&cx, st, small, sizeof small);
            CHECK(rc == -MS_E_FORMAT && strstr(small, "more problems") &&
                      strlen(small) < sizeof small,
                  "4096 experts: %s", small);
            ms_st_close(st);
        }
    }

    /* the expected list of the tiny model itself */
    expect_spec(&c, "layers.1.attn.compressor.wkv.weight", MS_ST_BF16, 2, 144, 64); /* 2*72 */
    expect_spec(&c, "layers.2.attn.compressor.wkv.weight", MS_ST_BF16, 2, 72, 64);  /* ratio 128 */
    expect_spec(&c, "layers.1.attn.indexer.compressor.ape", MS_ST_F32, 2, 4, 64);
    expect_spec(&c, "layers.1.attn.wo_a.weight", MS_ST_F8_E4M3, 2, 32, 144);
    expect_spec(&c, "layers.1.attn.wo_a.scale", MS_ST_F8_E8M0, 2, 1, 2);
    expect_spec(&c, "layers.0.ffn.gate.tid2eid", MS_ST_I64, 2, 64, 2);
    expect_spec(&c, "layers.1.ffn.gate.bias", MS_ST_F32, 1, 4, 0);
    expect_spec(&c, "layers.0.hc_attn_fn", MS_ST_F32, 2, 8, 128);
    expect_spec(&c, "layers.0.ffn.experts.3.w2.weight", MS_ST_I8, 2, 64, 16);
    expect_spec(&c, "layers.0.ffn.experts.3.w2.scale", MS_ST_F8_E8M0, 2, 64, 1);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/ms_cfg_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        printf("mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    ms_alloc_stats s0, s1;
    ms_alloc_get_stats(&s0);
    test_pro();
    test_flash();
    test_presets();
    test_synth();
    test_rejections();
    test_load();
    test_check_tensors();
    ms_alloc_get_stats(&s1);
    CHECK(s1.n_live == s0.n_live, "leaked %llu blocks",
          (unsigned long long)(s1.n_live - s0.n_live));
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tiny.safetensors", g_dir);
    unlink(p);
    rmdir(g_dir);
    if (g_fail) {
        printf("%d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_config: ok\n");
    return 0;
}
