/* engine/model/config.c — DeepSeek-V4 config.json and the tensor list it implies (config.h).
 *
 * Parsing never stops at the first problem: every missing, ill-typed or inconsistent field becomes
 * one line of the error text, so a user fixing a hand-edited config sees everything at once.
 * Relations between fields are checked only when the fields involved were read and are non-zero,
 * so one missing field gives one line, not a cascade.
 *
 * The expected tensor shapes are formulas over the config (V4_SPEC §2.2); test_config checks that
 * they reproduce the Pro and Flash tables.
 */
#include "engine/model/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/file.h"
#include "common/json.h"
#include "common/log.h"
#include "common/status.h"

#define MAX_CONFIG_BYTES ((size_t)16 << 20)
#define ARCH_NAME "DeepseekV4ForCausalLM"
#define MODEL_TYPE "deepseek_v4"
#define MAX_MTP_LAYERS 4u
#define FP8_BLOCK 128u
#define FP4_BLOCK 32u

/* Upper bounds for config values. Each is far above the real models' value (V4_SPEC §1.1, named
 * in the message) and low enough that loops and buffers sized by it stay sane: a hostile or
 * mistyped config is refused here instead of hanging the tensor check or allocating gigabytes. */
#define MAX_VOCAB (1u << 20)          /* 129280: embed and head rows */
#define MAX_DIM 65536u                /* 7168 */
#define MAX_HEADS 1024u               /* 128 attention heads, 64 indexer heads, 16 groups */
#define MAX_HEAD_DIM 4096u            /* 512 */
#define MAX_ROPE_DIM 512u             /* 64; the reference's frequency tables hold 512 */
#define MAX_RANK 65536u               /* q/o LoRA ranks 1536/1024, expert width 3072 */
#define MAX_WINDOW (1u << 20)         /* 128; sessions size their ring by their own token limit */
#define MAX_INDEX_HEAD_DIM 4096u      /* 128; the Hadamard rotation's limit */
#define MAX_INDEX_TOPK (1u << 20)     /* 1024 */
#define MAX_EXPERTS 4096u             /* 384: the tensor check visits 3 matrices per expert */
#define MAX_ACTIVE 64u                /* 6 */
#define MAX_HC 16u                    /* 4 */
#define MAX_SINKHORN 1000u            /* 20: iterations run per token per layer */
#define MAX_POSITIONS (1ull << 32)    /* 1048576 */
#define MAX_THETA 1e12                /* 10000 / 160000; must exceed 1 (log(theta) divides) */
#define MAX_SCALING 1000.0            /* 2.5 */
#define MAX_SWIGLU_LIMIT 1e6          /* 10 */
#define MAX_EPS 1.0                   /* 1e-6: an epsilon near 1 is already no epsilon */
#define MAX_YARN_FACTOR 1e6           /* 16 */
#define MAX_YARN_BETA 1e6             /* 32 and 1 */

/* ------------------------------------------------------------------------------------------ */
/* problem list: lines joined by '\n', truncated with a count when err is full                  */

typedef struct plist {
    char *buf;
    size_t cap, len;
    uint32_t n, dropped;
} plist;

#define PLIST_TAIL 40u /* room kept for "\n... and N more problems" */

static void plist_init(plist *pl, char *buf, size_t cap) {
    pl->buf = buf;
    pl->cap = cap;
    pl->len = 0;
    pl->n = pl->dropped = 0;
    if (buf && cap) buf[0] = '\0';
}

#if defined(__GNUC__)
static void prob(plist *pl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#endif
static void prob(plist *pl, const char *fmt, ...) {
    pl->n++;
    if (!pl->buf || pl->dropped) { /* full: count only (formatting millions of lines costs) */
        pl->dropped++;
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t ll = strlen(line), sep = pl->len ? 1 : 0;
    if (pl->len + sep + ll + 1 + PLIST_TAIL > pl->cap) {
        pl->dropped++;
        return;
    }
    if (sep) pl->buf[pl->len++] = '\n';
    memcpy(pl->buf + pl->len, line, ll + 1);
    pl->len += ll;
}

static void plist_finish(plist *pl) {
    if (!pl->dropped || !pl->buf || pl->cap == 0) return;
    snprintf(pl->buf + pl->len, pl->cap - pl->len, "%s... and %u more problem%s",
             pl->len ? "\n" : "", pl->dropped, pl->dropped == 1 ? "" : "s");
}

/* ------------------------------------------------------------------------------------------ */
/* field readers                                                                                */

typedef struct reader {
    const ms_json *root;
    plist *pl;
    const char *prefix; /* prepended to key names in messages ("rope_scaling."), or NULL */
    const char *bad[64]; /* keys already reported (relations involving them are skipped) */
    uint32_t n_bad;
} reader;

static void mark_bad(reader *r, const char *key) {
    if (r->n_bad < sizeof r->bad / sizeof r->bad[0]) r->bad[r->n_bad++] = key;
}

static bool was_bad(const reader *r, const char *key) {
    for (uint32_t i = 0; i < r->n_bad; i++)
        if (strcmp(r->bad[i], key) == 0) return true;
    return false;
}

static bool req_u32(reader *r, const char *key, uint32_t *out) {
    char msg[200];
    int rc = ms_json_get_u32(r->root, key, out, msg, sizeof msg);
    if (rc) prob(r->pl, "%s%s", r->prefix ? r->prefix : "", msg);
    return rc == 0;
}

/* A count in [lo, hi]: hi is far above what a real model needs (V4_SPEC §1.1 gives the real value,
 * named in real), so a hostile or mistyped config cannot make a later loop or allocation huge. */
static bool req_u32_in(reader *r, const char *key, uint32_t *out, uint32_t lo, uint32_t hi,
                       const char *real) {
    if (!req_u32(r, key, out)) return false;
    if (*out < lo || *out > hi) {
        prob(r->pl, "'%s%s': %u is outside %u..%u (DeepSeek-V4 uses %s)",
             r->prefix ? r->prefix : "", key, *out, lo, hi, real);
        *out = 0; /* relations between fields skip zeros: one line, not a cascade */
        mark_bad(r, key);
        return false;
    }
    return true;
}

static bool opt_u32(reader *r, const char *key, uint32_t *out, uint32_t dflt) {
    if (!ms_json_get(r->root, key)) {
        *out = dflt;
        return true;
    }
    return req_u32(r, key, out);
}

static bool req_f64(reader *r, const char *key, double *out) {
    char msg[200];
    int rc = ms_json_get_f64(r->root, key, out, msg, sizeof msg);
    if (rc) prob(r->pl, "%s%s", r->prefix ? r->prefix : "", msg);
    return rc == 0;
}

/* A real number in (lo, hi] (lo_open) or [lo, hi]; bounds as for req_u32_in. */
static void req_f64_in(reader *r, const char *key, double *out, double lo, bool lo_open, double hi,
                       const char *real) {
    if (!req_f64(r, key, out)) return;
    if ((lo_open ? !(*out > lo) : !(*out >= lo)) || !(*out <= hi))
        prob(r->pl, "'%s%s': %g is outside %s%g, %g] (DeepSeek-V4 uses %s)",
             r->prefix ? r->prefix : "", key, *out, lo_open ? "(" : "[", lo, hi, real);
}

static bool req_bool(reader *r, const char *key, bool *out) {
    char msg[200];
    int rc = ms_json_get_bool(r->root, key, out, msg, sizeof msg);
    if (rc) prob(r->pl, "%s", msg);
    return rc == 0;
}

/* A string field that must have one value (absent is a problem too). */
static void req_str_is(reader *r, const char *key, const char *want) {
    char msg[200];
    const char *s;
    int rc = ms_json_get_str(r->root, key, &s, msg, sizeof msg);
    if (rc) {
        prob(r->pl, "%s", msg);
        return;
    }
    if (strcmp(s, want) != 0) {
        char v[80];
        ms_json_escape(s, strlen(s), v, sizeof v);
        prob(r->pl, "'%s': \"%s\" is not supported (expected \"%s\")", key, v, want);
    }
}

/* ------------------------------------------------------------------------------------------ */

static int arch_check(const ms_json *root, char *err, size_t err_len) {
    const ms_json *arch = ms_json_get(root, "architectures");
    const ms_json *mt = ms_json_get(root, "model_type");
    bool arch_ok = false;
    char found[160] = "";
    size_t fl = 0;
    for (uint32_t i = 0; i < ms_json_len(arch) && ms_json_type_of(arch) == MS_JSON_ARRAY; i++) {
        size_t sl;
        const char *s = ms_json_str(ms_json_at(arch, i), &sl);
        if (s && sl == strlen(ARCH_NAME) && strcmp(s, ARCH_NAME) == 0) arch_ok = true;
        char e[64];
        ms_json_escape(s ? s : "?", s ? sl : 1, e, sizeof e);
        if (fl + strlen(e) + 4 < sizeof found)
            fl += (size_t)snprintf(found + fl, sizeof found - fl, "%s\"%s\"", i ? ", " : "", e);
    }
    size_t ml;
    const char *m = ms_json_str(mt, &ml);
    bool mt_ok = m && strcmp(m, MODEL_TYPE) == 0 && ml == strlen(MODEL_TYPE);
    if (arch_ok && mt_ok) return 0;
    char mts[64];
    if (m) ms_json_escape(m, ml, mts, sizeof mts);
    else snprintf(mts, sizeof mts, "(%s)", ms_json_kind(mt));
    if (err && err_len)
        snprintf(err, err_len,
                 "not a DeepSeek-V4 config: architectures [%s], model_type \"%s\" "
                 "(expected [\"%s\"] and \"%s\")",
                 ms_json_type_of(arch) == MS_JSON_ARRAY ? found : ms_json_kind(arch), mts,
                 ARCH_NAME, MODEL_TYPE);
    return -MS_E_UNSUPPORTED;
}

static void read_rope_scaling(reader *r, ms_v4_config *c) {
    const ms_json *rs = ms_json_get(r->root, "rope_scaling");
    if (!rs || ms_json_type_of(rs) == MS_JSON_NULL) return; /* no YaRN */
    if (ms_json_type_of(rs) != MS_JSON_OBJECT) {
        prob(r->pl, "'rope_scaling': expected object, found %s", ms_json_kind(rs));
        return;
    }
    const ms_json *ty = ms_json_get(rs, "type");
    if (!ty) ty = ms_json_get(rs, "rope_type");
    size_t tl;
    const char *t = ms_json_str(ty, &tl);
    if (!ty) {
        prob(r->pl, "'rope_scaling': has no 'type' (or 'rope_type'); expected \"yarn\", or "
                    "rope_scaling null for no scaling");
        return;
    }
    if (!t || tl != 4 || strcmp(t, "yarn") != 0) {
        char e[64];
        if (t) ms_json_escape(t, tl, e, sizeof e);
        else snprintf(e, sizeof e, "(%s)", ms_json_kind(ty));
        prob(r->pl, "'rope_scaling.type': \"%s\" is not supported (expected \"yarn\")", e);
        return;
    }
    c->yarn = true;
    reader sub = {.root = rs, .pl = r->pl, .prefix = "rope_scaling."};
    req_f64_in(&sub, "factor", &c->yarn_factor, 0, true, MAX_YARN_FACTOR, "16");
    req_u32_in(&sub, "original_max_position_embeddings", &c->yarn_original_max_pos, 1, UINT32_MAX,
               "65536");
    /* beta 0 or below puts log(0) or log(negative) into the correction range */
    req_f64_in(&sub, "beta_fast", &c->yarn_beta_fast, 0, true, MAX_YARN_BETA, "32");
    req_f64_in(&sub, "beta_slow", &c->yarn_beta_slow, 0, true, MAX_YARN_BETA, "1");
}

/* A JSON value for a message: 4294967296, 2.5, "4" (a string), true, null, an array... */
static void describe_value(const ms_json *v, char *out, size_t len) {
    size_t sl;
    const char *s;
    switch (ms_json_type_of(v)) {
    case MS_JSON_NUMBER:
        if (ms_json_is_int(v)) snprintf(out, len, "%lld", (long long)ms_json_int(v));
        else snprintf(out, len, "%.17g", ms_json_num(v));
        return;
    case MS_JSON_STRING: {
        char e[48];
        s = ms_json_str(v, &sl);
        ms_json_escape(s, sl, e, sizeof e);
        snprintf(out, len, "\"%s\" (a string)", e);
        return;
    }
    case MS_JSON_BOOL: snprintf(out, len, "%s", ms_json_bool(v) ? "true" : "false"); return;
    case MS_JSON_NULL: snprintf(out, len, "null"); return;
    case MS_JSON_ARRAY: snprintf(out, len, "an array"); return;
    case MS_JSON_OBJECT: snprintf(out, len, "an object"); return;
    }
    snprintf(out, len, "%s", ms_json_kind(v));
}

static void read_compress_ratios(reader *r, ms_v4_config *c) {
    const ms_json *a = ms_json_get(r->root, "compress_ratios");
    if (!a) {
        prob(r->pl, "'compress_ratios': missing");
        return;
    }
    if (ms_json_type_of(a) != MS_JSON_ARRAY) {
        prob(r->pl, "'compress_ratios': expected array, found %s", ms_json_kind(a));
        return;
    }
    uint32_t n = ms_json_len(a), cap = MS_V4_MAX_LAYERS + MAX_MTP_LAYERS;
    if (n > cap) {
        prob(r->pl, "'compress_ratios': %u entries, at most %u supported", n, cap);
        n = cap;
    }
    uint32_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        const ms_json *v = ms_json_at(a, i);
        int64_t x = ms_json_int(v);
        if (!ms_json_is_int(v) || (x != 0 && x != 4 && x != 128)) {
            if (bad++ < 4) {
                char what[96];
                describe_value(v, what, sizeof what);
                prob(r->pl, "'compress_ratios'[%u]: %s, must be 0, 4 or 128", i, what);
            }
            continue;
        }
        c->compress_ratios[i] = (uint32_t)x;
    }
    if (bad > 4) prob(r->pl, "'compress_ratios': %u more invalid entries", bad - 4);
    c->n_compress_ratios = n;
    /* num_hidden_layers is read before this (0 if it was bad) */
    if (c->n_layers && n < c->n_layers)
        prob(r->pl, "'compress_ratios': %u entries, fewer than num_hidden_layers = %u (one per "
                    "layer, then one per MTP layer)", n, c->n_layers);
}

static void read_quant(reader *r) {
    const ms_json *q = ms_json_get(r->root, "quantization_config");
    if (!q || ms_json_type_of(q) == MS_JSON_NULL) return;
    if (ms_json_type_of(q) != MS_JSON_OBJECT) {
        prob(r->pl, "'quantization_config': expected object, found %s", ms_json_kind(q));
        return;
    }
    const ms_json *m = ms_json_get(q, "quant_method");
    const char *ms = ms_json_str(m, NULL);
    if (m && (!ms || strcmp(ms, "fp8") != 0))
        prob(r->pl, "'quantization_config.quant_method': must be \"fp8\"");
    const ms_json *b = ms_json_get(q, "weight_block_size");
    if (!b) return;
    if (ms_json_type_of(b) != MS_JSON_ARRAY || ms_json_len(b) != 2 ||
        ms_json_int(ms_json_at(b, 0)) != FP8_BLOCK || ms_json_int(ms_json_at(b, 1)) != FP8_BLOCK)
        prob(r->pl, "'quantization_config.weight_block_size': must be [128, 128]");
}

static bool has_ratio(const ms_v4_config *c, uint32_t ratio) {
    for (uint32_t i = 0; i < c->n_compress_ratios; i++)
        if (c->compress_ratios[i] == ratio) return true;
    return false;
}

static void validate(const ms_v4_config *c, const reader *r) {
    plist *pl = r->pl;
    if (c->rope_dim % 2)
        prob(pl, "qk_rope_head_dim = %u, must be even (RoPE rotates pairs)", c->rope_dim);
    if (c->head_dim && c->rope_dim && c->head_dim <= c->rope_dim)
        prob(pl, "head_dim = %u must be greater than qk_rope_head_dim = %u", c->head_dim,
             c->rope_dim);
    if (c->n_heads && c->o_groups && c->n_heads % c->o_groups)
        prob(pl, "num_attention_heads = %u is not a multiple of o_groups = %u", c->n_heads,
             c->o_groups);
    if (c->n_mtp_layers > MAX_MTP_LAYERS)
        prob(pl, "num_nextn_predict_layers = %u, at most %u supported", c->n_mtp_layers,
             MAX_MTP_LAYERS);
    if (c->n_layers && c->n_compress_ratios >= c->n_layers &&
        c->n_compress_ratios != c->n_layers + c->n_mtp_layers)
        MS_LOGW("config: compress_ratios has %u entries, expected %u (num_hidden_layers + "
                "num_nextn_predict_layers); MTP layers without an entry use ratio 0",
                c->n_compress_ratios, c->n_layers + c->n_mtp_layers);
    if (c->head_dim > c->rope_dim && c->rope_dim % 2 == 0 && c->rope_dim &&
        (c->head_dim - c->rope_dim) % 64)
        prob(pl, "head_dim - qk_rope_head_dim = %u, must be a multiple of 64 (the KV latent is "
                 "stored in e4m3 blocks of 64)", c->head_dim - c->rope_dim);
    if (c->n_routed_experts && c->n_active_experts > c->n_routed_experts)
        prob(pl, "num_experts_per_tok = %u exceeds n_routed_experts = %u", c->n_active_experts,
             c->n_routed_experts);
    if (c->n_layers && c->n_hash_layers > c->n_layers)
        prob(pl, "num_hash_layers = %u exceeds num_hidden_layers = %u", c->n_hash_layers,
             c->n_layers);
    if (c->expert_fp4) {
        if (c->dim % FP4_BLOCK)
            prob(pl, "hidden_size = %u is not a multiple of %u (FP4 expert scale blocks)", c->dim,
                 FP4_BLOCK);
        if (c->moe_inter_dim % FP4_BLOCK)
            prob(pl, "moe_intermediate_size = %u is not a multiple of %u (FP4 expert scale blocks)",
                 c->moe_inter_dim, FP4_BLOCK);
    }
    if (has_ratio(c, 4)) {
        if (c->index_n_heads == 0 && !was_bad(r, "index_n_heads"))
            prob(pl, "index_n_heads must be > 0 (ratio-4 layers exist)");
        if (c->index_topk == 0 && !was_bad(r, "index_topk"))
            prob(pl, "index_topk must be > 0 (ratio-4 layers exist)");
        if (was_bad(r, "index_head_dim")) {
            /* reported */
        } else if (c->index_head_dim == 0)
            prob(pl, "index_head_dim must be > 0 (ratio-4 layers exist)");
        else if (c->index_head_dim < FP4_BLOCK || (c->index_head_dim & (c->index_head_dim - 1)))
            prob(pl, "index_head_dim = %u, must be a power of two >= 32 (Hadamard rotation, FP4 "
                     "blocks of 32)", c->index_head_dim);
        else if (c->rope_dim && c->index_head_dim < c->rope_dim) /* equal: all of it rotary */
            prob(pl, "index_head_dim = %u must be at least qk_rope_head_dim = %u",
                 c->index_head_dim, c->rope_dim);
    }
    if (c->vocab_size && c->bos_id >= c->vocab_size)
        prob(pl, "bos_token_id = %u is outside the vocabulary (%u)", c->bos_id, c->vocab_size);
    if (c->vocab_size && c->eos_id >= c->vocab_size)
        prob(pl, "eos_token_id = %u is outside the vocabulary (%u)", c->eos_id, c->vocab_size);
}

int ms_v4_config_parse(const char *json, size_t len, ms_v4_config *cfg, char *err,
                       size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!cfg || (!json && len)) {
        if (err && err_len) snprintf(err, err_len, "invalid argument");
        return -MS_E_INVALID_ARG;
    }
    memset(cfg, 0, sizeof *cfg);
    ms_json_doc *doc = NULL;
    ms_json_error je;
    int rc = ms_json_parse(json, len, NULL, &doc, &je);
    if (rc) {
        if (err && err_len) snprintf(err, err_len, "config.json: %s", je.msg);
        return rc;
    }
    const ms_json *root = ms_json_root(doc);
    if (ms_json_type_of(root) != MS_JSON_OBJECT) {
        if (err && err_len)
            snprintf(err, err_len, "config.json is a JSON %s, expected an object",
                     ms_json_kind(root));
        ms_json_free(doc);
        return -MS_E_FORMAT;
    }
    rc = arch_check(root, err, err_len);
    if (rc) {
        ms_json_free(doc);
        return rc;
    }

    plist pl;
    plist_init(&pl, err, err_len);
    reader r = {.root = root, .pl = &pl};
    ms_v4_config *c = cfg;
    req_u32_in(&r, "vocab_size", &c->vocab_size, 1, MAX_VOCAB, "129280");
    req_u32_in(&r, "hidden_size", &c->dim, 1, MAX_DIM, "7168 and 4096");
    req_u32_in(&r, "num_hidden_layers", &c->n_layers, 1, MS_V4_MAX_LAYERS, "61 and 43");
    req_u32_in(&r, "num_attention_heads", &c->n_heads, 1, MAX_HEADS, "128 and 64");
    if (req_u32(&r, "num_key_value_heads", &c->n_kv_heads) && c->n_kv_heads != 1)
        prob(&pl, "num_key_value_heads = %u, must be 1 (one shared K/V latent)", c->n_kv_heads);
    req_u32_in(&r, "head_dim", &c->head_dim, 1, MAX_HEAD_DIM, "512");
    req_u32_in(&r, "qk_rope_head_dim", &c->rope_dim, 1, MAX_ROPE_DIM, "64");
    req_u32_in(&r, "q_lora_rank", &c->q_lora_rank, 1, MAX_RANK, "1536 and 1024");
    req_u32_in(&r, "o_lora_rank", &c->o_lora_rank, 1, MAX_RANK, "1024");
    req_u32_in(&r, "o_groups", &c->o_groups, 1, MAX_HEADS, "16 and 8");
    req_u32_in(&r, "sliding_window", &c->window, 1, MAX_WINDOW, "128");
    read_compress_ratios(&r, c);
    req_f64_in(&r, "rope_theta", &c->rope_theta, 1, true, MAX_THETA, "10000");
    req_f64_in(&r, "compress_rope_theta", &c->compress_rope_theta, 1, true, MAX_THETA, "160000");
    read_rope_scaling(&r, c);
    {
        int64_t mp;
        char msg[200];
        if (ms_json_get_i64(root, "max_position_embeddings", &mp, msg, sizeof msg))
            prob(&pl, "%s", msg);
        else if (mp <= 0 || mp > (int64_t)MAX_POSITIONS)
            prob(&pl, "'max_position_embeddings': %lld is outside 1..%llu (DeepSeek-V4 uses 1048576)",
                 (long long)mp, (unsigned long long)MAX_POSITIONS);
        else
            c->max_position_embeddings = (uint64_t)mp;
    }
    req_u32_in(&r, "index_n_heads", &c->index_n_heads, 0, MAX_HEADS, "64");
    req_u32_in(&r, "index_head_dim", &c->index_head_dim, 0, MAX_INDEX_HEAD_DIM, "128");
    req_u32_in(&r, "index_topk", &c->index_topk, 0, MAX_INDEX_TOPK, "1024 and 512");
    req_u32_in(&r, "n_routed_experts", &c->n_routed_experts, 1, MAX_EXPERTS, "384 and 256");
    req_u32_in(&r, "num_experts_per_tok", &c->n_active_experts, 1, MAX_ACTIVE, "6");
    req_u32_in(&r, "n_shared_experts", &c->n_shared_experts, 1, 1, "1; the forward pass runs exactly one");
    req_u32_in(&r, "moe_intermediate_size", &c->moe_inter_dim, 1, MAX_RANK, "3072 and 2048");
    req_u32_in(&r, "num_hash_layers", &c->n_hash_layers, 0, MS_V4_MAX_LAYERS, "3");
    req_str_is(&r, "scoring_func", "sqrtsoftplus");
    req_str_is(&r, "topk_method", "noaux_tc");
    req_str_is(&r, "hidden_act", "silu");
    req_bool(&r, "norm_topk_prob", &c->norm_topk_prob);
    req_f64_in(&r, "routed_scaling_factor", &c->routed_scaling_factor, 0, true, MAX_SCALING, "2.5 and 1.5");
    if (ms_json_get(root, "swiglu_limit") && ms_json_type_of(ms_json_get(root, "swiglu_limit")) !=
                                                 MS_JSON_NULL) {
        req_f64_in(&r, "swiglu_limit", &c->swiglu_limit, 0, false, MAX_SWIGLU_LIMIT,
                   "10; 0 = no clamp");
    }
    req_u32_in(&r, "hc_mult", &c->hc_mult, 1, MAX_HC, "4");
    req_u32_in(&r, "hc_sinkhorn_iters", &c->hc_sinkhorn_iters, 1, MAX_SINKHORN, "20");
    req_f64_in(&r, "hc_eps", &c->hc_eps, 0, true, MAX_EPS, "1e-06");
    req_f64_in(&r, "rms_norm_eps", &c->rms_norm_eps, 0, true, MAX_EPS, "1e-06");
    opt_u32(&r, "num_nextn_predict_layers", &c->n_mtp_layers, 0);
    {
        const ms_json *ed = ms_json_get(root, "expert_dtype");
        c->expert_fp4 = true; /* absent in early downloads: those are FP4 (V4_SPEC §0) */
        if (ed) {
            const char *s = ms_json_str(ed, NULL);
            if (s && strcmp(s, "fp4") == 0) c->expert_fp4 = true;
            else if (s && strcmp(s, "fp8") == 0) c->expert_fp4 = false;
            else prob(&pl, "'expert_dtype': must be \"fp4\" or \"fp8\"");
        }
    }
    read_quant(&r);
    req_u32(&r, "bos_token_id", &c->bos_id);
    req_u32(&r, "eos_token_id", &c->eos_id);
    {
        bool b;
        if (ms_json_get(root, "tie_word_embeddings") &&
            req_bool(&r, "tie_word_embeddings", &b) && b)
            prob(&pl, "'tie_word_embeddings': true is not supported (V4 has separate embed/head)");
        if (ms_json_get(root, "attention_bias") && req_bool(&r, "attention_bias", &b) && b)
            prob(&pl, "'attention_bias': true is not supported");
    }
    validate(c, &r);
    plist_finish(&pl);
    ms_json_free(doc);
    return pl.n ? -MS_E_FORMAT : 0;
}

int ms_v4_config_load(const char *path, ms_v4_config *cfg, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!path || !cfg) {
        if (err && err_len) snprintf(err, err_len, "invalid argument");
        return -MS_E_INVALID_ARG;
    }
    struct stat sb;
    char *file = NULL;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + sizeof "/config.json";
        file = ms_malloc(n);
        if (file) snprintf(file, n, "%s/config.json", path);
    } else {
        file = ms_strdup(path);
    }
    if (!file) return -MS_E_NOMEM;
    char *buf = NULL;
    size_t n = 0;
    int rc = ms_file_read_all(file, "config file", MAX_CONFIG_BYTES, &buf, &n, err, err_len);
    ms_free(file);
    if (rc) return rc;
    rc = ms_v4_config_parse(buf, n, cfg, err, err_len);
    ms_free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* presets and writing                                                                          */

int ms_v4_config_preset(const char *name, ms_v4_config *cfg) {
    bool pro = name && strcmp(name, "pro") == 0;
    if (!pro && !(name && strcmp(name, "flash") == 0)) return -MS_E_NOT_FOUND;
    ms_v4_config *c = cfg;
    memset(c, 0, sizeof *c);
    c->vocab_size = 129280;
    c->dim = pro ? 7168 : 4096;
    c->n_layers = pro ? 61 : 43;
    c->n_heads = pro ? 128 : 64;
    c->n_kv_heads = 1;
    c->head_dim = 512;
    c->rope_dim = 64;
    c->q_lora_rank = pro ? 1536 : 1024;
    c->o_lora_rank = 1024;
    c->o_groups = pro ? 16 : 8;
    c->window = 128;
    /* Pro: 128, 128, then 4/128 alternating; Flash: 0, 0, then 4/128; the MTP entry is 0 */
    c->n_compress_ratios = c->n_layers + 1;
    for (uint32_t i = 0; i < c->n_layers; i++)
        c->compress_ratios[i] = i < 2 ? (pro ? 128 : 0) : (i % 2 ? 128 : 4);
    c->compress_ratios[c->n_layers] = 0;
    c->rope_theta = 10000;
    c->compress_rope_theta = 160000;
    c->yarn = true;
    c->yarn_factor = 16;
    c->yarn_original_max_pos = 65536;
    c->yarn_beta_fast = 32;
    c->yarn_beta_slow = 1;
    c->max_position_embeddings = 1048576;
    c->index_n_heads = 64;
    c->index_head_dim = 128;
    c->index_topk = pro ? 1024 : 512;
    c->n_routed_experts = pro ? 384 : 256;
    c->n_active_experts = 6;
    c->n_shared_experts = 1;
    c->moe_inter_dim = pro ? 3072 : 2048;
    c->n_hash_layers = 3;
    c->norm_topk_prob = true;
    c->routed_scaling_factor = pro ? 2.5 : 1.5;
    c->swiglu_limit = 10.0;
    c->hc_mult = 4;
    c->hc_sinkhorn_iters = 20;
    c->hc_eps = 1e-6;
    c->rms_norm_eps = 1e-6;
    c->n_mtp_layers = 1;
    c->expert_fp4 = true;
    c->bos_id = 0;
    c->eos_id = 1;
    return 0;
}

int ms_v4_config_write_json(const ms_v4_config *c, FILE *f) {
    fprintf(f, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n", ARCH_NAME,
            MODEL_TYPE);
    fprintf(f, "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n");
    fprintf(f, "  \"bos_token_id\": %u,\n  \"eos_token_id\": %u,\n", c->bos_id, c->eos_id);
    fprintf(f, "  \"compress_ratios\": [");
    for (uint32_t i = 0; i < c->n_compress_ratios; i++)
        fprintf(f, "%s%u", i ? ", " : "", c->compress_ratios[i]);
    fprintf(f, "],\n");
    fprintf(f, "  \"compress_rope_theta\": %.17g,\n  \"rope_theta\": %.17g,\n",
            c->compress_rope_theta, c->rope_theta);
    if (c->yarn)
        fprintf(f,
                "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": %.17g, "
                "\"original_max_position_embeddings\": %u, \"beta_fast\": %.17g, "
                "\"beta_slow\": %.17g},\n",
                c->yarn_factor, c->yarn_original_max_pos, c->yarn_beta_fast, c->yarn_beta_slow);
    else
        fprintf(f, "  \"rope_scaling\": null,\n");
    fprintf(f, "  \"expert_dtype\": \"%s\",\n", c->expert_fp4 ? "fp4" : "fp8");
    fprintf(f, "  \"hc_eps\": %.17g,\n  \"hc_mult\": %u,\n  \"hc_sinkhorn_iters\": %u,\n",
            c->hc_eps, c->hc_mult, c->hc_sinkhorn_iters);
    fprintf(f, "  \"head_dim\": %u,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %u,\n",
            c->head_dim, c->dim);
    fprintf(f, "  \"index_head_dim\": %u,\n  \"index_n_heads\": %u,\n  \"index_topk\": %u,\n",
            c->index_head_dim, c->index_n_heads, c->index_topk);
    fprintf(f, "  \"initializer_range\": 0.02,\n  \"max_position_embeddings\": %llu,\n",
            (unsigned long long)c->max_position_embeddings);
    fprintf(f, "  \"moe_intermediate_size\": %u,\n  \"n_routed_experts\": %u,\n",
            c->moe_inter_dim, c->n_routed_experts);
    fprintf(f, "  \"n_shared_experts\": %u,\n  \"norm_topk_prob\": %s,\n", c->n_shared_experts,
            c->norm_topk_prob ? "true" : "false");
    fprintf(f, "  \"num_attention_heads\": %u,\n  \"num_experts_per_tok\": %u,\n", c->n_heads,
            c->n_active_experts);
    fprintf(f, "  \"num_hash_layers\": %u,\n  \"num_hidden_layers\": %u,\n", c->n_hash_layers,
            c->n_layers);
    fprintf(f, "  \"num_key_value_heads\": %u,\n  \"num_nextn_predict_layers\": %u,\n",
            c->n_kv_heads, c->n_mtp_layers);
    fprintf(f, "  \"o_groups\": %u,\n  \"o_lora_rank\": %u,\n  \"q_lora_rank\": %u,\n",
            c->o_groups, c->o_lora_rank, c->q_lora_rank);
    fprintf(f, "  \"qk_rope_head_dim\": %u,\n", c->rope_dim);
    fprintf(f, "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": "
               "\"e4m3\", \"quant_method\": \"fp8\", \"scale_fmt\": \"ue8m0\", "
               "\"weight_block_size\": [128, 128]},\n");
    fprintf(f, "  \"rms_norm_eps\": %.17g,\n  \"routed_scaling_factor\": %.17g,\n",
            c->rms_norm_eps, c->routed_scaling_factor);
    fprintf(f, "  \"scoring_func\": \"sqrtsoftplus\",\n  \"sliding_window\": %u,\n", c->window);
    fprintf(f, "  \"swiglu_limit\": %.17g,\n  \"tie_word_embeddings\": false,\n",
            c->swiglu_limit);
    fprintf(f, "  \"topk_method\": \"noaux_tc\",\n  \"torch_dtype\": \"bfloat16\",\n");
    fprintf(f, "  \"use_cache\": true,\n  \"vocab_size\": %u\n}\n", c->vocab_size);
    return ferror(f) ? -MS_E_IO : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* expected tensors (V4_SPEC §2.2)                                                              */

uint32_t ms_v4_layer_ratio(const ms_v4_config *cfg, uint32_t layer) {
    return layer < cfg->n_compress_ratios ? cfg->compress_ratios[layer] : 0;
}

const char *ms_v4_role_name(ms_v4_role role) {
    static const char *const names[] = {
#define MS_X_ROLE(n) #n,
        MS_V4_ROLE_LIST(MS_X_ROLE)
#undef MS_X_ROLE
    };
    return (unsigned)role < MS_V4_ROLE_COUNT ? names[role] : "?";
}

typedef struct gen {
    const ms_v4_config *c;
    ms_v4_tensor_fn fn;
    void *user;
    const char *prefix;
    uint32_t layer, expert; /* of the tensors emitted now */
    int stop;
} gen;

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* One tensor: n_dims 1 ([d0]) or 2 ([d0, d1]); m, k the logical shape of a linear (else 0). */
static void emit_full(gen *g, const char *suffix, ms_v4_role role, ms_v4_part part,
                      ms_st_dtype dt, uint32_t n_dims, uint64_t d0, uint64_t d1, uint64_t m,
                      uint64_t k) {
    if (g->stop) return;
    ms_v4_tensor_spec t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s%s", g->prefix, suffix);
    t.dtype = dt;
    t.n_dims = n_dims;
    t.shape[0] = d0;
    t.shape[1] = n_dims > 1 ? d1 : 0;
    t.role = role;
    t.part = part;
    t.layer = g->layer;
    t.expert = g->expert;
    t.m = m;
    t.k = k;
    g->stop = g->fn(&t, g->user);
}

/* A vector [n] or a table [d0, d1] that is not a linear. */
static void emit(gen *g, const char *suffix, ms_v4_role role, ms_st_dtype dt, uint32_t n_dims,
                 uint64_t d0, uint64_t d1) {
    emit_full(g, suffix, role, MS_V4_PART_WHOLE, dt, n_dims, d0, d1, 0, 0);
}

/* An unquantised linear [out, in] (BF16 or F32). */
static void emit_dense(gen *g, const char *suffix, ms_v4_role role, ms_st_dtype dt, uint64_t out,
                       uint64_t in) {
    emit_full(g, suffix, role, MS_V4_PART_WHOLE, dt, 2, out, in, out, in);
}

/* An FP8 block-128 linear: weight e4m3 [out, in], scale e8m0 [ceil(out/128), ceil(in/128)]. */
static void emit_fp8(gen *g, const char *base, ms_v4_role role, uint64_t out, uint64_t in) {
    char n[80];
    snprintf(n, sizeof n, "%s.weight", base);
    emit_full(g, n, role, MS_V4_PART_WEIGHT, MS_ST_F8_E4M3, 2, out, in, out, in);
    snprintf(n, sizeof n, "%s.scale", base);
    emit_full(g, n, role, MS_V4_PART_SCALE, MS_ST_F8_E8M0, 2, ceil_div(out, FP8_BLOCK),
              ceil_div(in, FP8_BLOCK), out, in);
}

/* A routed expert linear: FP4 packed two per byte along the input dim, one e8m0 per 32 inputs;
 * or FP8 block-128 when expert_dtype is fp8. */
static void emit_expert(gen *g, const char *base, ms_v4_role role, uint64_t out, uint64_t in) {
    if (!g->c->expert_fp4) {
        emit_fp8(g, base, role, out, in);
        return;
    }
    char n[80];
    snprintf(n, sizeof n, "%s.weight", base);
    emit_full(g, n, role, MS_V4_PART_WEIGHT, MS_ST_I8, 2, out, in / 2, out, in);
    snprintf(n, sizeof n, "%s.scale", base);
    emit_full(g, n, role, MS_V4_PART_SCALE, MS_ST_F8_E8M0, 2, out, in / FP4_BLOCK, out, in);
}

static void emit_hc_head(gen *g, bool mtp) {
    const ms_v4_config *c = g->c;
    emit_dense(g, "hc_head_fn", mtp ? MS_V4_ROLE_MTP_HC_HEAD_FN : MS_V4_ROLE_HC_HEAD_FN,
               MS_ST_F32, c->hc_mult, (uint64_t)c->hc_mult * c->dim);
    emit(g, "hc_head_base", mtp ? MS_V4_ROLE_MTP_HC_HEAD_BASE : MS_V4_ROLE_HC_HEAD_BASE,
         MS_ST_F32, 1, c->hc_mult, 0);
    emit(g, "hc_head_scale", mtp ? MS_V4_ROLE_MTP_HC_HEAD_SCALE : MS_V4_ROLE_HC_HEAD_SCALE,
         MS_ST_F32, 1, 1, 0);
}

/* Compressor of width d (512 attention, index_head_dim inside the indexer) at ratio r; idx: the
 * indexer's compressor (roles IDX_CMP_*), else the attention's (CMP_*). */
static void emit_compressor(gen *g, const char *base, bool idx, uint32_t ratio, uint64_t d) {
    const ms_v4_config *c = g->c;
    uint64_t coff = ratio == 4 ? 2 : 1; /* ratio 4 overlaps two blocks: double width */
    char n[96];
    snprintf(n, sizeof n, "%s.wkv.weight", base);
    emit_dense(g, n, idx ? MS_V4_ROLE_IDX_CMP_WKV : MS_V4_ROLE_CMP_WKV, MS_ST_BF16, coff * d,
               c->dim);
    snprintf(n, sizeof n, "%s.wgate.weight", base);
    emit_dense(g, n, idx ? MS_V4_ROLE_IDX_CMP_WGATE : MS_V4_ROLE_CMP_WGATE, MS_ST_BF16, coff * d,
               c->dim);
    snprintf(n, sizeof n, "%s.ape", base);
    emit(g, n, idx ? MS_V4_ROLE_IDX_CMP_APE : MS_V4_ROLE_CMP_APE, MS_ST_F32, 2, ratio, coff * d);
    snprintf(n, sizeof n, "%s.norm.weight", base);
    emit(g, n, idx ? MS_V4_ROLE_IDX_CMP_NORM : MS_V4_ROLE_CMP_NORM, MS_ST_BF16, 1, d, 0);
}

/* One transformer block; layer >= n_layers is an MTP block. */
static void emit_block(gen *g, uint32_t layer) {
    const ms_v4_config *c = g->c;
    uint64_t dim = c->dim, hc = c->hc_mult, mix = (2 + hc) * hc;
    uint64_t q_out = (uint64_t)c->n_heads * c->head_dim;
    uint64_t og = c->o_groups ? c->o_groups : 1;
    uint32_t ratio = ms_v4_layer_ratio(c, layer);
    g->layer = layer;

    emit(g, "attn_norm.weight", MS_V4_ROLE_ATTN_NORM, MS_ST_BF16, 1, dim, 0);
    emit(g, "ffn_norm.weight", MS_V4_ROLE_FFN_NORM, MS_ST_BF16, 1, dim, 0);
    emit_dense(g, "hc_attn_fn", MS_V4_ROLE_HC_ATTN_FN, MS_ST_F32, mix, hc * dim);
    emit_dense(g, "hc_ffn_fn", MS_V4_ROLE_HC_FFN_FN, MS_ST_F32, mix, hc * dim);
    emit(g, "hc_attn_base", MS_V4_ROLE_HC_ATTN_BASE, MS_ST_F32, 1, mix, 0);
    emit(g, "hc_ffn_base", MS_V4_ROLE_HC_FFN_BASE, MS_ST_F32, 1, mix, 0);
    emit(g, "hc_attn_scale", MS_V4_ROLE_HC_ATTN_SCALE, MS_ST_F32, 1, 3, 0); /* pre, post, comb */
    emit(g, "hc_ffn_scale", MS_V4_ROLE_HC_FFN_SCALE, MS_ST_F32, 1, 3, 0);

    emit_fp8(g, "attn.wq_a", MS_V4_ROLE_WQ_A, c->q_lora_rank, dim);
    emit(g, "attn.q_norm.weight", MS_V4_ROLE_Q_NORM, MS_ST_BF16, 1, c->q_lora_rank, 0);
    emit_fp8(g, "attn.wq_b", MS_V4_ROLE_WQ_B, q_out, c->q_lora_rank);
    emit_fp8(g, "attn.wkv", MS_V4_ROLE_WKV, c->head_dim, dim); /* one latent, K and V */
    emit(g, "attn.kv_norm.weight", MS_V4_ROLE_KV_NORM, MS_ST_BF16, 1, c->head_dim, 0);
    emit_fp8(g, "attn.wo_a", MS_V4_ROLE_WO_A, og * c->o_lora_rank, q_out / og);
    emit_fp8(g, "attn.wo_b", MS_V4_ROLE_WO_B, dim, og * c->o_lora_rank);
    emit(g, "attn.attn_sink", MS_V4_ROLE_ATTN_SINK, MS_ST_F32, 1, c->n_heads, 0);
    if (ratio) emit_compressor(g, "attn.compressor", false, ratio, c->head_dim);
    if (ratio == 4) {
        emit_fp8(g, "attn.indexer.wq_b", MS_V4_ROLE_IDX_WQ_B,
                 (uint64_t)c->index_n_heads * c->index_head_dim, c->q_lora_rank);
        emit_dense(g, "attn.indexer.weights_proj.weight", MS_V4_ROLE_IDX_WPROJ, MS_ST_BF16,
                   c->index_n_heads, dim);
        emit_compressor(g, "attn.indexer.compressor", true, ratio, c->index_head_dim);
    }

    emit_dense(g, "ffn.gate.weight", MS_V4_ROLE_GATE, MS_ST_BF16, c->n_routed_experts, dim);
    if (layer < c->n_hash_layers) /* hash-routed: token id -> expert ids */
        emit(g, "ffn.gate.tid2eid", MS_V4_ROLE_GATE_TID2EID, MS_ST_I64, 2, c->vocab_size,
             c->n_active_experts);
    else
        emit(g, "ffn.gate.bias", MS_V4_ROLE_GATE_BIAS, MS_ST_F32, 1, c->n_routed_experts, 0);
    if (c->n_shared_experts) {
        uint64_t si = (uint64_t)c->moe_inter_dim * c->n_shared_experts;
        emit_fp8(g, "ffn.shared_experts.w1", MS_V4_ROLE_SH_W1, si, dim);
        emit_fp8(g, "ffn.shared_experts.w3", MS_V4_ROLE_SH_W3, si, dim);
        emit_fp8(g, "ffn.shared_experts.w2", MS_V4_ROLE_SH_W2, dim, si);
    }
    for (uint32_t e = 0; e < c->n_routed_experts && !g->stop; e++) {
        char b[64];
        g->expert = e;
        snprintf(b, sizeof b, "ffn.experts.%u.w1", e);
        emit_expert(g, b, MS_V4_ROLE_EX_W1, c->moe_inter_dim, dim);
        snprintf(b, sizeof b, "ffn.experts.%u.w3", e);
        emit_expert(g, b, MS_V4_ROLE_EX_W3, c->moe_inter_dim, dim);
        snprintf(b, sizeof b, "ffn.experts.%u.w2", e);
        emit_expert(g, b, MS_V4_ROLE_EX_W2, dim, c->moe_inter_dim);
    }
    g->expert = MS_V4_NO_INDEX;
}

int ms_v4_for_each_tensor(const ms_v4_config *cfg, bool with_mtp, ms_v4_tensor_fn fn, void *user) {
    if (!cfg || !fn) return -MS_E_INVALID_ARG;
    gen g = {cfg, fn, user, "", MS_V4_NO_INDEX, MS_V4_NO_INDEX, 0};
    emit(&g, "embed.weight", MS_V4_ROLE_EMBED, MS_ST_BF16, 2, cfg->vocab_size, cfg->dim);
    emit_dense(&g, "head.weight", MS_V4_ROLE_HEAD, MS_ST_BF16, cfg->vocab_size, cfg->dim);
    emit(&g, "norm.weight", MS_V4_ROLE_NORM, MS_ST_BF16, 1, cfg->dim, 0);
    emit_hc_head(&g, false);
    char prefix[32];
    for (uint32_t l = 0; l < cfg->n_layers && !g.stop; l++) {
        snprintf(prefix, sizeof prefix, "layers.%u.", l);
        g.prefix = prefix;
        emit_block(&g, l);
    }
    for (uint32_t i = 0; with_mtp && i < cfg->n_mtp_layers && !g.stop; i++) {
        snprintf(prefix, sizeof prefix, "mtp.%u.", i);
        g.prefix = prefix;
        emit_block(&g, cfg->n_layers + i);
        emit_fp8(&g, "e_proj", MS_V4_ROLE_MTP_E_PROJ, cfg->dim, cfg->dim);
        emit_fp8(&g, "h_proj", MS_V4_ROLE_MTP_H_PROJ, cfg->dim, cfg->dim);
        emit(&g, "enorm.weight", MS_V4_ROLE_MTP_ENORM, MS_ST_BF16, 1, cfg->dim, 0);
        emit(&g, "hnorm.weight", MS_V4_ROLE_MTP_HNORM, MS_ST_BF16, 1, cfg->dim, 0);
        emit(&g, "norm.weight", MS_V4_ROLE_MTP_NORM, MS_ST_BF16, 1, cfg->dim, 0);
        emit_hc_head(&g, true);
    }
    return g.stop;
}

typedef struct find_ctx {
    const char *name;
    ms_v4_tensor_spec *out;
} find_ctx;

static int find_fn(const ms_v4_tensor_spec *t, void *user) {
    find_ctx *f = user;
    if (strcmp(t->name, f->name) != 0) return 0;
    *f->out = *t;
    return 1;
}

int ms_v4_expected_tensor(const ms_v4_config *cfg, const char *name, ms_v4_tensor_spec *out) {
    if (!cfg || !name || !out) return -MS_E_INVALID_ARG;
    find_ctx f = {name, out};
    return ms_v4_for_each_tensor(cfg, true, find_fn, &f) == 1 ? 0 : -MS_E_NOT_FOUND;
}

/* ------------------------------------------------------------------------------------------ */
/* checkpoint check                                                                             */

typedef struct check_ctx {
    const ms_st *st;
    uint8_t *seen; /* [ms_st_count] */
    plist *pl;
} check_ctx;

static void fmt_shape(char *o, size_t n, uint32_t nd, const uint64_t *s) {
    size_t k = (size_t)snprintf(o, n, "[");
    for (uint32_t i = 0; i < nd && k < n; i++)
        k += (size_t)snprintf(o + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)s[i]);
    if (k < n) snprintf(o + k, n - k, "]");
}

static int check_fn(const ms_v4_tensor_spec *t, void *user) {
    check_ctx *x = user;
    uint32_t idx;
    char es[64], fs[160];
    fmt_shape(es, sizeof es, t->n_dims, t->shape);
    if (ms_st_find_index(x->st, t->name, &idx) != 0) {
        prob(x->pl, "%s: missing (expected %s %s)", t->name, ms_st_dtype_name(t->dtype), es);
        return 0;
    }
    x->seen[idx] = 1;
    const ms_st_tensor *f = ms_st_at(x->st, idx);
    bool shape_ok = f->n_dims == t->n_dims;
    for (uint32_t i = 0; shape_ok && i < t->n_dims; i++) shape_ok = f->shape[i] == t->shape[i];
    bool dtype_ok = f->dtype == t->dtype;
    fmt_shape(fs, sizeof fs, f->n_dims, f->shape);
    if (!dtype_ok && !shape_ok)
        prob(x->pl, "%s: dtype %s, expected %s; shape %s, expected %s", t->name,
             ms_st_dtype_name(f->dtype), ms_st_dtype_name(t->dtype), fs, es);
    else if (!dtype_ok)
        prob(x->pl, "%s: dtype %s, expected %s", t->name, ms_st_dtype_name(f->dtype),
             ms_st_dtype_name(t->dtype));
    else if (!shape_ok)
        prob(x->pl, "%s: shape %s, expected %s", t->name, fs, es);
    return 0;
}

/* name = prefix + decimal index + "." ...: true and *index (saturated at UINT32_MAX). */
static bool block_index(const char *name, const char *prefix, uint32_t *index) {
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0) return false;
    const char *p = name + pl;
    if (*p < '0' || *p > '9') return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) v = v > UINT32_MAX ? v : v * 10 + (uint64_t)(*p - '0');
    if (*p != '.') return false;
    *index = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return true;
}

int ms_v4_check_tensors(const ms_v4_config *cfg, const ms_st *st, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!cfg || !st) return -MS_E_INVALID_ARG;
    uint32_t n = ms_st_count(st);
    bool any_mtp = false;
    for (uint32_t i = 0; i < n && !any_mtp; i++)
        any_mtp = strncmp(ms_st_at(st, i)->name, "mtp.", 4) == 0;
    check_ctx x = {st, ms_calloc(n ? n : 1, 1), NULL};
    if (!x.seen) return -MS_E_NOMEM;
    plist pl;
    plist_init(&pl, err, err_len);
    x.pl = &pl;
    ms_v4_for_each_tensor(cfg, any_mtp, check_fn, &x);
    uint32_t extra = 0;
    uint64_t beyond_layers[MS_V4_MAX_LAYERS / 64 + 1] = {0}; /* layers already reported */
    bool beyond_mtp[MAX_MTP_LAYERS + 1] = {false};
    for (uint32_t i = 0; i < n; i++) {
        if (x.seen[i]) continue;
        const char *name = ms_st_at(st, i)->name;
        uint32_t li;
        /* A block the config does not know about: the config and checkpoint disagree on the
         * depth (running would silently drop those layers). */
        if (block_index(name, "layers.", &li)) {
            if (li < cfg->n_layers) goto unexpected; /* an unknown tensor of a known layer */
            uint32_t bit = li < MS_V4_MAX_LAYERS ? li : MS_V4_MAX_LAYERS;
            if (!(beyond_layers[bit / 64] >> (bit % 64) & 1)) {
                beyond_layers[bit / 64] |= 1ull << (bit % 64);
                prob(&pl, "%s: the checkpoint has layer %u%s, but config.json says "
                          "num_hidden_layers = %u (config and checkpoint do not match)",
                     name, li, bit == MS_V4_MAX_LAYERS ? " (or beyond)" : "", cfg->n_layers);
            }
            continue;
        }
        if (block_index(name, "mtp.", &li)) {
            if (li < cfg->n_mtp_layers) goto unexpected;
            uint32_t bit = li < MAX_MTP_LAYERS ? li : MAX_MTP_LAYERS;
            if (!beyond_mtp[bit]) {
                beyond_mtp[bit] = true;
                prob(&pl, "%s: the checkpoint has MTP layer %u, but config.json says "
                          "num_nextn_predict_layers = %u (config and checkpoint do not match)",
                     name, li, cfg->n_mtp_layers);
            }
            continue;
        }
    unexpected:
        if (extra++ < 16) MS_LOGW("checkpoint: unexpected tensor '%s' (ignored)", name);
    }
    if (extra > 16) MS_LOGW("checkpoint: %u more unexpected tensors (ignored)", extra - 16);
    ms_free(x.seen);
    plist_finish(&pl);
    return pl.n ? -MS_E_FORMAT : 0;
}

typedef struct bytes_acc {
    const ms_v4_config *c;
    uint64_t total, per_token;
} bytes_acc;

static int add_bytes(const ms_v4_tensor_spec *t, void *user) {
    bytes_acc *a = user;
    uint64_t b = t->shape[0] * (t->n_dims > 1 ? t->shape[1] : 1) * ms_st_dtype_size(t->dtype);
    a->total += b;
    ms_v4_role r = t->role;
    if (r == MS_V4_ROLE_EX_W1 || r == MS_V4_ROLE_EX_W3 || r == MS_V4_ROLE_EX_W2)
        a->per_token += b * a->c->n_active_experts / a->c->n_routed_experts; /* k of E per layer */
    else if (r == MS_V4_ROLE_EMBED || r == MS_V4_ROLE_GATE_TID2EID)
        a->per_token += b / a->c->vocab_size; /* one row */
    else
        a->per_token += b;
    return 0;
}

void ms_v4_weight_bytes(const ms_v4_config *cfg, uint64_t *total, uint64_t *per_token) {
    bytes_acc a = {cfg, 0, 0};
    ms_v4_for_each_tensor(cfg, false, add_bytes, &a);
    if (total) *total = a.total;
    if (per_token) *per_token = a.per_token;
}
