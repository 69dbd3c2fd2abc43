/* The DeepSeek-V4 CPU reference forward pass (engine/ref/v4_*.c) on tiny models built in memory
 * in the checkpoint's real encodings (FP8 e4m3 + 128x128 e8m0 scales, FP4 experts + 1x32 scales,
 * BF16 norms/gate/compressor/head, F32 mHC/ape/sink, I64 tid2eid), served through the
 * ms_ref_tensor_fn callback.
 *
 * Asserts: prefill in one call, in chunks of 3, 4, 5, 16, 128 and token by token (chunk 1) give
 * bit-identical logits at every position (across ratio-4 and ratio-128 block boundaries and past the
 * window); logits are finite; the last layer is live; both stored-value fake quantisations change the
 * output; the quantisation helpers match hand-worked values; YaRN low/high (also for degenerate
 * configs); Sinkhorn; reset; bad checkpoints give clear errors. Seeded: the seed is printed with any
 * failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "engine/model/config.h"
#include "engine/ref/ref.h"
#include "engine/model/v4_synth.h"
#include "engine/ref/v4_internal.h"
#include "storage/safetensors.h"

#include "tests/check.h"

static uint64_t g_seed = 0x5eed0004u;


static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- deterministic randomness ---- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53 * 2.0 - 1.0; }

/* ---- an in-memory tensor store ---- */

typedef struct tstore {
    ms_st_tensor t[4096];
    char names[4096][128];
    uint32_t n;
} tstore;

static void *add_tensor(tstore *s, const char *name, ms_st_dtype dt, uint64_t d0, uint64_t d1) {
    static const uint32_t size[MS_ST_DTYPE_COUNT] = {
        [MS_ST_BF16] = 2, [MS_ST_F32] = 4, [MS_ST_F8_E4M3] = 1, [MS_ST_F8_E8M0] = 1,
        [MS_ST_I8] = 1,   [MS_ST_I64] = 8};
    if (s->n >= 4096) abort();
    ms_st_tensor *t = &s->t[s->n];
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    memset(t, 0, sizeof *t);
    t->name = s->names[s->n];
    t->dtype = dt;
    t->n_dims = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->n_elems = d0 * (d1 ? d1 : 1);
    t->n_bytes = t->n_elems * size[dt];
    t->data = calloc(t->n_bytes, 1);
    s->n++;
    return (void *)t->data;
}

static ms_st_tensor *find_tensor(tstore *s, const char *name) {
    for (uint32_t i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

static const ms_st_tensor *get_fn(void *ctx, const char *name) { return find_tensor(ctx, name); }

static void store_free(tstore *s) {
    for (uint32_t i = 0; i < s->n; i++) free((void *)s->t[i].data);
    s->n = 0;
}

/* A tiny config in valid formats: dim 128, 2 heads x 128 (RoPE 64), q_lora 64, 2 groups,
 * indexer 2 heads x 128 (top-3), 4 experts (width 64) top-2, vocab 128. */
static ms_v4_config tiny_cfg(const uint32_t *ratios, uint32_t n_layers, uint32_t window,
                             uint32_t o_lora, uint32_t n_hash) {
    ms_v4_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 128;
    c.dim = 128;
    c.n_layers = n_layers;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 128;
    c.rope_dim = 64;
    c.q_lora_rank = 64;
    c.o_lora_rank = o_lora;
    c.o_groups = 2;
    c.window = window;
    c.n_compress_ratios = n_layers + 1;
    for (uint32_t i = 0; i < n_layers; i++) c.compress_ratios[i] = ratios[i];
    c.rope_theta = 10000;
    c.compress_rope_theta = 160000;
    c.yarn = true;
    c.yarn_factor = 16;
    c.yarn_original_max_pos = 65536;
    c.yarn_beta_fast = 32;
    c.yarn_beta_slow = 1;
    c.max_position_embeddings = 1048576;
    c.index_n_heads = 2;
    c.index_head_dim = 128;
    c.index_topk = 3;
    c.n_routed_experts = 4;
    c.n_active_experts = 2;
    c.n_shared_experts = 1;
    c.moe_inter_dim = 64;
    c.n_hash_layers = n_hash;
    c.norm_topk_prob = true;
    c.routed_scaling_factor = 1.5;
    c.swiglu_limit = 10.0;
    c.hc_mult = 4;
    c.hc_sinkhorn_iters = 20;
    c.hc_eps = 1e-6;
    c.rms_norm_eps = 1e-6;
    c.n_mtp_layers = 1;
    c.expert_fp4 = true;
    c.eos_id = 1;
    return c;
}

/* Every tensor of the V4 table (engine/model/config.h), filled by the synthetic generator
 * (engine/model/v4_synth.h): the builder writes no tensor name or shape of its own. */
typedef struct build_ctx {
    tstore *s;
    const ms_v4_config *c;
    uint64_t seed;
} build_ctx;

static int build_fn(const ms_v4_tensor_spec *t, void *user) {
    build_ctx *b = user;
    void *d = add_tensor(b->s, t->name, t->dtype, t->shape[0], t->n_dims > 1 ? t->shape[1] : 0);
    ms_v4_synth_fill(b->c, t, b->seed, 0, ms_v4_spec_bytes(t), d);
    return 0;
}

static void build_model(tstore *s, const ms_v4_config *c, uint64_t seed) {
    build_ctx b = {s, c, seed};
    ms_v4_for_each_tensor(c, false, build_fn, &b);
}

/* ---- helpers on whole runs ---- */

/* logits [n][vocab] of tokens[n] fed in calls of `chunk` tokens (0 = one call). */
static int run(const ms_ref_model *m, const ms_v4_config *c, const uint32_t *tokens, uint32_t n,
               uint32_t chunk, float *logits) {
    ms_ref_session *s;
    int rc = ms_ref_session_create(m, n, &s);
    if (rc) return rc;
    if (!chunk) chunk = n;
    for (uint32_t t0 = 0; t0 < n && !rc; t0 += chunk) {
        uint32_t k = n - t0 < chunk ? n - t0 : chunk;
        rc = ms_ref_session_forward(s, tokens + t0, k, logits + (size_t)t0 * c->vocab_size);
    }
    if (!rc && ms_ref_session_pos(s) != n) rc = -MS_E_INTERNAL;
    ms_ref_session_free(s);
    return rc;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
    }
    return d;
}

static void make_tokens(uint32_t *tokens, uint32_t n, uint32_t vocab, uint64_t seed) {
    uint64_t r = seed;
    for (uint32_t i = 0; i < n; i++) tokens[i] = (uint32_t)(rng_next(&r) % vocab);
}

/* Hardening: the window ring is sized by the session, not by sliding_window. A window of 2^20 (the
 * config bound) on a 5-token session holds 5 rows, and gives the logits a window of 8 gives (both
 * see every position). It once allocated and zeroed window x head_dim floats per layer. */
static void test_window_sizing(void) {
    uint32_t ratios[2] = {0, 4};
    tstore st;
    memset(&st, 0, sizeof st);
    ms_v4_config small = tiny_cfg(ratios, 2, 8, 128, 1), huge = small;
    huge.window = 1u << 20;
    build_model(&st, &small, g_seed ^ 0x77);
    ms_ref_model *ms = NULL, *mh = NULL;
    char err[256];
    CHECK(ms_ref_model_create(&small, get_fn, &st, &ms, err, sizeof err) == 0, "small: %s", err);
    CHECK(ms_ref_model_create(&huge, get_fn, &st, &mh, err, sizeof err) == 0, "huge: %s", err);
    if (ms && mh) {
        uint32_t tok[5];
        make_tokens(tok, 5, small.vocab_size, g_seed + 5);
        size_t nl = 5 * (size_t)small.vocab_size;
        float *a = malloc(nl * 4), *b = malloc(nl * 4);
        ms_ref_session *s = NULL;
        CHECK(ms_ref_session_create(mh, 5, &s) == 0 && s->ring_len == 5,
              "window 2^20, 5 tokens: ring of %u rows", s ? s->ring_len : 0);
        ms_ref_session_free(s);
        CHECK(run(ms, &small, tok, 5, 2, a) == 0 && run(mh, &huge, tok, 5, 2, b) == 0, "runs");
        CHECK(memcmp(a, b, nl * 4) == 0, "window 8 and 2^20 differ on 5 tokens");
        free(a);
        free(b);
    }
    ms_ref_model_free(ms);
    ms_ref_model_free(mh);
    store_free(&st);
}

/* Full prompt vs every chunking: bit-identical at every position. */
static void test_chunking(const char *label, const uint32_t *ratios, uint32_t n_layers,
                          uint32_t window, uint32_t o_lora, uint32_t n_hash, uint32_t n_tokens,
                          const uint32_t *chunks, uint32_t n_chunks, ms_ref_model **keep,
                          tstore *store, ms_v4_config *cfg_out) {
    ms_v4_config c = tiny_cfg(ratios, n_layers, window, o_lora, n_hash);
    build_model(store, &c, g_seed ^ (uint64_t)n_layers * 7919 ^ window);
    ms_ref_model *m = NULL;
    char err[256];
    int rc = ms_ref_model_create(&c, get_fn, store, &m, err, sizeof err);
    CHECK(rc == 0, "%s: model_create: %s", label, err);
    if (rc) return;
    uint32_t *tok = malloc(n_tokens * sizeof *tok);
    size_t nl = (size_t)n_tokens * c.vocab_size;
    float *full = malloc(nl * sizeof(float)), *other = malloc(nl * sizeof(float));
    make_tokens(tok, n_tokens, c.vocab_size, g_seed + n_tokens);

    double t0 = now_s();
    CHECK(run(m, &c, tok, n_tokens, 0, full) == 0, "%s: full run", label);
    double dt = now_s() - t0;
    printf("%s: %u layers, ratios", label, n_layers);
    for (uint32_t i = 0; i < n_layers; i++) printf(" %u", ratios[i]);
    printf(", window %u, %u tokens: full prefill %.2f s (%.1f tokens/s)\n", window, n_tokens, dt,
           n_tokens / dt);
    size_t n_bad = 0;
    for (size_t i = 0; i < nl; i++) n_bad += !isfinite(full[i]);
    CHECK(n_bad == 0, "%s: %zu non-finite logits", label, n_bad);
    double spread = 0;
    for (uint32_t v = 0; v < c.vocab_size; v++) spread = fmax(spread, fabs(full[nl - c.vocab_size + v]));
    CHECK(spread > 1e-3 && spread < 1e4, "%s: last logits max |v| = %g (dead or exploding)", label, spread);

    for (uint32_t ci = 0; ci < n_chunks; ci++) {
        t0 = now_s();
        CHECK(run(m, &c, tok, n_tokens, chunks[ci], other) == 0, "%s: chunk %u run", label, chunks[ci]);
        double d = max_abs_diff(full, other, nl);
        bool same = memcmp(full, other, nl * sizeof(float)) == 0;
        printf("  chunk %3u: max |delta| vs full = %g, bit-identical %s (%.2f s)\n", chunks[ci], d,
               same ? "yes" : "NO", now_s() - t0);
        CHECK(same, "%s: chunk %u differs from the full prefill (max |delta| %g)", label, chunks[ci], d);
    }
    free(tok);
    free(full);
    free(other);
    if (keep) {
        *keep = m;
        *cfg_out = c;
    } else {
        ms_ref_model_free(m);
    }
}

/* ---- quantisation helpers against hand-worked values ---- */

static void test_quant_helpers(void) {
    struct {
        float in, want;
    } e4m3[] = {
        {1.0625f, 1.0f},      /* tie between 1.0 (even) and 1.125 */
        {1.1875f, 1.25f},     /* tie between 1.125 and 1.25 (even) */
        {1.07f, 1.125f},      {0.3f, 0.3125f},     {240.0f, 240.0f},
        {400.0f, 384.0f},     /* tie between 384 (even) and 416 */
        {440.0f, 448.0f},     {500.0f, 448.0f},     {-1000.0f, -448.0f}, {464.0f, 448.0f},
        {0x1p-10f, 0.0f},     /* subnormal tie 0 / 2^-9 -> 0 */
        {3 * 0x1p-10f, 0x1p-8f}, /* subnormal tie 2^-9 / 2^-8 -> 2^-8 */
        {0x1p-9f, 0x1p-9f},   {-0.0f, -0.0f},
    };
    for (size_t i = 0; i < sizeof e4m3 / sizeof e4m3[0]; i++)
        CHECK(ms_ref_v4_round_e4m3(e4m3[i].in) == e4m3[i].want, "e4m3(%g) = %g, want %g", e4m3[i].in,
              ms_ref_v4_round_e4m3(e4m3[i].in), e4m3[i].want);
    /* Every finite code is a fixed point; the midpoint of two neighbours goes to the even code. */
    for (int code = 0; code < 0x7E; code++) {
        float a = ms_ref_e4m3_to_f32((uint8_t)code), b = ms_ref_e4m3_to_f32((uint8_t)(code + 1));
        CHECK(ms_ref_v4_round_e4m3(a) == a, "e4m3 code 0x%02x not a fixed point", code);
        float mid = (a + b) / 2, want = (code & 1) ? b : a;
        CHECK(ms_ref_v4_round_e4m3(mid) == want, "e4m3 midpoint of 0x%02x/0x%02x -> %g, want %g",
              code, code + 1, ms_ref_v4_round_e4m3(mid), want);
    }
    struct {
        float in, want;
    } e2m1[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f}, {2.5f, 2.0f},
                {3.5f, 4.0f},  {5.0f, 4.0f},  {5.5f, 6.0f},  {7.0f, 6.0f},  {-2.5f, -2.0f},
                {0.3f, 0.5f},  {0.2f, 0.0f},  {-9.0f, -6.0f}, {1.5f, 1.5f}};
    for (size_t i = 0; i < sizeof e2m1 / sizeof e2m1[0]; i++)
        CHECK(ms_ref_v4_round_e2m1(e2m1[i].in) == e2m1[i].want, "e2m1(%g) = %g, want %g", e2m1[i].in,
              ms_ref_v4_round_e2m1(e2m1[i].in), e2m1[i].want);
    for (int nib = 0; nib < 16; nib++)
        CHECK(ms_ref_v4_round_e2m1(ms_ref_fp4_to_f32((uint8_t)nib)) == ms_ref_fp4_to_f32((uint8_t)nib),
              "e2m1 code %d not a fixed point", nib);

    /* Power-of-two scales: 2^ceil(log2(amax / max)). */
    CHECK(ms_ref_v4_pow2_scale(448.0f, 1.0f / 448.0f) == 1.0f, "scale(448) = %g", ms_ref_v4_pow2_scale(448.0f, 1.0f / 448.0f));
    CHECK(ms_ref_v4_pow2_scale(449.0f, 1.0f / 448.0f) == 2.0f, "scale(449)");
    CHECK(ms_ref_v4_pow2_scale(100.0f, 1.0f / 448.0f) == 0.25f, "scale(100)");
    CHECK(ms_ref_v4_pow2_scale(1.0f, 1.0f / 448.0f) == 0x1p-8f, "scale(1)");
    CHECK(ms_ref_v4_pow2_scale(1e-4f, 1.0f / 448.0f) == 0x1p-22f, "scale(1e-4 floor)");
    CHECK(ms_ref_v4_pow2_scale(6.0f, 1.0f / 6.0f) == 1.0f, "fp4 scale(6) = %g", ms_ref_v4_pow2_scale(6.0f, 1.0f / 6.0f));
    CHECK(ms_ref_v4_pow2_scale(6.5f, 1.0f / 6.0f) == 2.0f, "fp4 scale(6.5)");
    CHECK(ms_ref_v4_pow2_scale(3.0f, 1.0f / 6.0f) == 0.5f, "fp4 scale(3)");

    /* One FP8 block of 64: amax 100 -> s = 1/4; 100/s = 400 -> 384 (tie to even) -> 96;
     * 1.0625/s = 4.25 -> 4 (tie) -> 1.0; an all-zero block stays zero. */
    float x[128] = {0};
    x[0] = 100.0f;
    x[1] = 1.0625f;
    x[2] = -0.001f; /* /s = -0.004 -> subnormal e4m3 (step 2^-9) -0.00390625 -> *s */
    ms_ref_v4_fake_quant_fp8(x, 128, 64);
    CHECK(x[0] == 96.0f && x[1] == 1.0f && x[2] == -0.0009765625f && x[64] == 0.0f,
          "fp8 block: %g %g %g %g", x[0], x[1], x[2], x[64]);
    /* One FP4 block of 32: amax 6.5 -> s = 2; 3.25 -> 3 -> 6; 0.65 -> 0.5 -> 1; -0.35 -> -0.5 -> -1. */
    float y[32] = {6.5f, 1.3f, -0.7f};
    ms_ref_v4_fake_quant_fp4(y, 32, 32);
    CHECK(y[0] == 6.0f && y[1] == 1.0f && y[2] == -1.0f && y[3] == 0.0f, "fp4 block: %g %g %g %g",
          y[0], y[1], y[2], y[3]);

    /* Hadamard: orthonormal and an involution (H H = I); H e0 = 1/sqrt(n); H e1 alternates. */
    double worst = 0;
    for (uint32_t i = 0; i < 128; i++) {
        float v[128] = {0};
        v[i] = 1.0f;
        ms_ref_v4_hadamard(v, 128);
        if (i == 0)
            for (int j = 0; j < 128; j++)
                CHECK(fabsf(v[j] - 0.08838834764f) < 1e-7f, "H e0[%d] = %g", j, v[j]);
        if (i == 1)
            for (int j = 0; j < 128; j++)
                CHECK(fabsf(v[j] - ((j & 1) ? -0.08838834764f : 0.08838834764f)) < 1e-7f, "H e1[%d]", j);
        ms_ref_v4_hadamard(v, 128);
        for (uint32_t j = 0; j < 128; j++) worst = fmax(worst, fabs(v[j] - (i == j ? 1.0 : 0.0)));
    }
    printf("quant helpers: Hadamard max |H H - I| = %g\n", worst);
    CHECK(worst < 1e-6, "H H != I: %g", worst);
}

/* YaRN range outside the usual case. Degenerate configs that pass config validation
 * (compress_rope_theta 1: log(base) = 0; beta_fast 0: log(inf); beta_slow -1: log of a negative)
 * give infinite or NaN correction dims: the range must still come out defined (a float-to-int
 * conversion of those is undefined behaviour, stopped by -fsanitize=float-cast-overflow) and the
 * frequencies finite. A finite range past the dims is kept as the official code keeps it:
 * compress_rope_theta 10 gives low 80 > high 63, and every frequency is interpolated. */
static void test_yarn_degenerate(void) {
    static const struct {
        double base, beta_fast, beta_slow;
    } bad[] = {{1.0, 0, -1}, {1.0, 32, 1}, {160000, 0, -1}, {160000, NAN, NAN}, {0.5, 1e308, -1e308},
               {160000, 1e-300, 1e300}};
    uint32_t ratios[1] = {4};
    ms_v4_config c = tiny_cfg(ratios, 1, 8, 128, 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int low = -7, high = -7;
        ms_ref_v4_yarn_range(64, bad[i].base, 65536, bad[i].beta_fast, bad[i].beta_slow, &low, &high);
        CHECK(low >= 0 && high <= 63, "YaRN(base %g, beta %g/%g): low/high = %d/%d", bad[i].base,
              bad[i].beta_fast, bad[i].beta_slow, low, high);
        c.compress_rope_theta = bad[i].base;
        c.yarn_beta_fast = bad[i].beta_fast;
        c.yarn_beta_slow = bad[i].beta_slow;
        double f[32];
        ms_ref_v4_rope_freqs(&c, true, f);
        bool finite = true;
        for (int j = 0; j < 32; j++) finite &= isfinite(f[j]) != 0;
        CHECK(finite, "YaRN(base %g, beta %g/%g): non-finite frequency", bad[i].base,
              bad[i].beta_fast, bad[i].beta_slow);
    }
    int low, high;
    ms_ref_v4_yarn_range(64, 10, 65536, 32, 1, &low, &high);
    CHECK(low == 80 && high == 63, "YaRN(base 10) low/high = %d/%d, want 80/63", low, high);
    c = tiny_cfg(ratios, 1, 8, 128, 0);
    c.compress_rope_theta = 10;
    double f[32];
    ms_ref_v4_rope_freqs(&c, true, f);
    for (int j = 0; j < 32; j++)
        CHECK(f[j] == pow(10, -(2.0 * j) / 64) / 16, "YaRN(base 10) f[%d] = %g not interpolated", j,
              f[j]);
}

static void test_yarn_sinkhorn(void) {
    int low, high;
    ms_ref_v4_yarn_range(64, 160000, 65536, 32, 1, &low, &high);
    CHECK(low == 15 && high == 25, "YaRN low/high = %d/%d, want 15/25", low, high);
    test_yarn_degenerate();
    uint32_t ratios[1] = {4};
    ms_v4_config c = tiny_cfg(ratios, 1, 8, 128, 0);
    double f_yarn[32], f_base[32];
    ms_ref_v4_rope_freqs(&c, true, f_yarn);
    ms_ref_v4_rope_freqs(&c, false, f_base);
    CHECK(f_yarn[0] == 1.0 && fabs(f_yarn[15] - pow(160000, -30.0 / 64)) < 1e-18 &&
              fabs(f_yarn[31] - pow(160000, -62.0 / 64) / 16) < 1e-18 &&
              fabs(f_base[31] - pow(10000, -62.0 / 64)) < 1e-18,
          "rope freqs: %g %g %g %g", f_yarn[0], f_yarn[15], f_yarn[31], f_base[31]);

    /* Sinkhorn: comb ends column-normalised and close to row-normalised. */
    uint64_t r = g_seed;
    float mix[24], scale[3] = {0.8f, 0.9f, 1.1f}, base[24], pre[4], post[4], comb[16];
    for (int i = 0; i < 24; i++) mix[i] = (float)(2 * rng_unif(&r)), base[i] = (float)rng_unif(&r);
    ms_ref_v4_hc_split(mix, scale, base, 4, 20, 1e-6, pre, post, comb);
    double wr = 0, wc = 0;
    for (int j = 0; j < 4; j++) {
        double rs = 0, cs = 0;
        for (int k = 0; k < 4; k++) rs += comb[j * 4 + k], cs += comb[k * 4 + j];
        wr = fmax(wr, fabs(rs - 1)), wc = fmax(wc, fabs(cs - 1));
        CHECK(pre[j] > 0 && pre[j] < 1.0001f && post[j] > 0 && post[j] < 2, "pre/post %g %g", pre[j], post[j]);
    }
    printf("sinkhorn: max |row sum - 1| = %g, max |col sum - 1| = %g\n", wr, wc);
    CHECK(wr < 1e-3 && wc < 1e-5, "Sinkhorn rows %g cols %g", wr, wc);
}

/* ---- the model is live; the fake quantisations matter; sessions behave ---- */

static void test_live(ms_ref_model *m, const ms_v4_config *c, tstore *store) {
    uint32_t n = 60, V = c->vocab_size;
    uint32_t *tok = malloc(n * sizeof *tok);
    float *base = malloc((size_t)n * V * sizeof(float)), *other = malloc((size_t)n * V * sizeof(float));
    make_tokens(tok, n, V, g_seed * 3);
    CHECK(run(m, c, tok, n, 0, base) == 0, "live: base run");

    /* One weight byte of the last layer's output projection. */
    char name[96];
    snprintf(name, sizeof name, "layers.%u.attn.wo_b.weight", c->n_layers - 1);
    ms_st_tensor *t = find_tensor(store, name);
    uint8_t *w = (uint8_t *)t->data, saved = w[5];
    w[5] ^= 0x08; /* flip one exponent bit: a different finite value */
    CHECK(run(m, c, tok, n, 0, other) == 0, "live: edited run");
    double d = max_abs_diff(base + (size_t)(n - 1) * V, other + (size_t)(n - 1) * V, V);
    printf("live: one weight of %s changes the last logits by max %g\n", name, d);
    CHECK(d > 0, "editing %s did not change the last logits", name);
    w[5] = saved;

    ms_ref_v4_set_fake_quant(m, false, true);
    CHECK(run(m, c, tok, n, 0, other) == 0, "live: no kv fq");
    d = max_abs_diff(base + (size_t)(n - 1) * V, other + (size_t)(n - 1) * V, V);
    printf("fake quant: KV e4m3 off changes the last logits by max %g\n", d);
    CHECK(d > 0, "KV fake-quant has no effect");
    ms_ref_v4_set_fake_quant(m, true, false);
    CHECK(run(m, c, tok, n, 0, other) == 0, "live: no index fq");
    d = max_abs_diff(base, other, (size_t)n * V);
    printf("fake quant: indexer FP4 off changes the logits by max %g (over all positions)\n", d);
    CHECK(d > 0, "indexer FP4 fake-quant has no effect");
    ms_ref_v4_set_fake_quant(m, true, true);

    /* Session rules: bounds, bad ids, reset. */
    ms_ref_session *s;
    CHECK(ms_ref_session_create(m, 10, &s) == 0, "session create");
    CHECK(ms_ref_session_forward(s, tok, 8, other) == 0, "forward 8");
    CHECK(ms_ref_session_forward(s, tok, 3, other) == -MS_E_RANGE, "past max_tokens not refused");
    uint32_t bad[2] = {1, V};
    CHECK(ms_ref_session_forward(s, bad, 2, other) == -MS_E_INVALID_ARG, "token >= vocab not refused");
    CHECK(ms_ref_session_pos(s) == 8, "pos after refused calls = %u", ms_ref_session_pos(s));
    ms_ref_session_reset(s);
    CHECK(ms_ref_session_pos(s) == 0, "reset pos");
    CHECK(ms_ref_session_forward(s, tok, 10, other) == 0, "forward after reset");
    CHECK(memcmp(other, base, (size_t)10 * V * sizeof(float)) == 0, "reset session differs from a fresh one");
    ms_ref_session_free(s);
    free(tok);
    free(base);
    free(other);
}

/* ---- non-finite diagnosis (ms_ref_session_nonfinite) ---- */

/* Sets bytes [byte, byte + len) (len <= 4) of a tensor to 0xFF: NaN in e8m0 and e4m3, and over
 * two bytes in bf16. saved: the old bytes, for unpoke. */
static void poke(tstore *store, const char *tensor, size_t byte, size_t len, uint8_t *saved) {
    uint8_t *w = (uint8_t *)find_tensor(store, tensor)->data;
    memcpy(saved, w + byte, len);
    memset(w + byte, 0xFF, len);
}

static void unpoke(tstore *store, const char *tensor, size_t byte, size_t len, const uint8_t *saved) {
    memcpy((uint8_t *)find_tensor(store, tensor)->data + byte, saved, len);
}

/* The first position whose logits row [vocab] has a non-finite value; n if none. */
static uint32_t first_bad_row(const float *logits, uint32_t n, uint32_t vocab) {
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t v = 0; v < vocab; v++)
            if (!isfinite(logits[(size_t)t * vocab + v])) return t;
    return n;
}

/* tok[n] in one call and in chunks of 1 and 5: forward succeeds, the report is (pos, layer, stage)
 * every time, the logits are non-finite from pos on and not before, and reset clears the report.
 * pos == n: a clean run, ms_ref_session_nonfinite must say -MS_E_NOT_FOUND. */
static void expect_nonfinite(const ms_ref_model *m, const ms_v4_config *c, const char *what,
                             const uint32_t *tok, uint32_t n, uint32_t pos, uint32_t layer,
                             const char *stage) {
    float *logits = malloc((size_t)n * c->vocab_size * sizeof(float));
    static const uint32_t chunks[] = {0, 1, 5};
    for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
        uint32_t chunk = chunks[ci] ? chunks[ci] : n;
        ms_ref_session *s;
        int rc = ms_ref_session_create(m, n, &s);
        CHECK(rc == 0, "%s: session create", what);
        if (rc) break;
        for (uint32_t t0 = 0; t0 < n && !rc; t0 += chunk) {
            uint32_t k = n - t0 < chunk ? n - t0 : chunk;
            rc = ms_ref_session_forward(s, tok + t0, k, logits + (size_t)t0 * c->vocab_size);
        }
        CHECK(rc == 0, "%s (chunk %u): forward must still succeed, rc %d", what, chunk, rc);
        ms_ref_nonfinite nf = {0, 0, "-"};
        rc = ms_ref_session_nonfinite(s, &nf);
        if (ci == 0 && rc)
            printf("nonfinite: %s: none\n", what);
        else if (ci == 0)
            printf("nonfinite: %s: first at position %u, layer %u, %s\n", what, nf.pos, nf.layer,
                   nf.stage);
        if (pos == n) {
            CHECK(rc == -MS_E_NOT_FOUND, "%s (chunk %u): rc %d, reported position %u layer %u %s",
                  what, chunk, rc, nf.pos, nf.layer, nf.stage);
        } else {
            CHECK(rc == 0 && nf.pos == pos && nf.layer == layer && !strcmp(nf.stage, stage),
                  "%s (chunk %u): rc %d, position %u layer %u %s; want %u %u %s", what, chunk, rc,
                  nf.pos, nf.layer, nf.stage, pos, layer, stage);
        }
        uint32_t bad = first_bad_row(logits, n, c->vocab_size);
        CHECK(bad == pos, "%s (chunk %u): logits first non-finite at position %u, want %u", what,
              chunk, bad, pos);
        ms_ref_session_reset(s);
        CHECK(ms_ref_session_nonfinite(s, &nf) == -MS_E_NOT_FOUND, "%s: reset kept the report", what);
        ms_ref_session_free(s);
    }
    free(logits);
}

/* Does token v route to expert e in hash layer li? */
static bool routes_to(tstore *store, const ms_v4_config *c, uint32_t li, uint32_t v, uint32_t e) {
    char name[64];
    snprintf(name, sizeof name, "layers.%u.ffn.gate.tid2eid", li);
    const int64_t *t2e = find_tensor(store, name)->data;
    for (uint32_t k = 0; k < c->n_active_experts; k++)
        if (t2e[(size_t)v * c->n_active_experts + k] == (int64_t)e) return true;
    return false;
}

static void test_nonfinite(const ms_ref_model *m, const ms_v4_config *c, tstore *store) {
    uint32_t tok[14], n = 14;
    uint8_t saved[4], saved0[4];
    make_tokens(tok, n, c->vocab_size, g_seed * 5);
    expect_nonfinite(m, c, "clean model", tok, n, n, 0, NULL);

    /* Layers 0 and 1 route by token id. A prompt where expert 1 of layer 1 is first used at
     * position 4 and expert 2 of layer 0 first at position 10, both with a NaN w1 scale: in one
     * call layer 0 runs first and turns position 10 non-finite before layer 1 reaches position 4,
     * yet the report is position 4 (layer 1, moe), as in a token-by-token run. */
    CHECK(c->n_hash_layers > 1, "nonfinite test wants layers 0 and 1 hash-routed");
    uint32_t clean = c->vocab_size, first1 = c->vocab_size, first0 = c->vocab_size;
    for (uint32_t v = 0; v < c->vocab_size; v++) {
        bool l0 = routes_to(store, c, 0, v, 2), l1 = routes_to(store, c, 1, v, 1);
        if (!l0 && !l1 && clean == c->vocab_size) clean = v;
        if (!l0 && l1 && first1 == c->vocab_size) first1 = v;
        if (l0 && first0 == c->vocab_size) first0 = v;
    }
    CHECK(clean < c->vocab_size && first1 < c->vocab_size && first0 < c->vocab_size,
          "no tokens for the routed-expert prompt");
    if (clean < c->vocab_size && first1 < c->vocab_size && first0 < c->vocab_size) {
        uint32_t crafted[14];
        for (uint32_t t = 0; t < n; t++) crafted[t] = t == 4 ? first1 : t == 10 ? first0 : clean;
        poke(store, "layers.1.ffn.experts.1.w1.scale", 0, 1, saved);
        expect_nonfinite(m, c, "layer 1 expert 1 w1 scale 0xFF", crafted, n, 4, 1, "moe");
        poke(store, "layers.0.ffn.experts.2.w1.scale", 0, 1, saved0);
        expect_nonfinite(m, c, "and layer 0 expert 2 w1 scale 0xFF", crafted, n, 4, 1, "moe");
        unpoke(store, "layers.1.ffn.experts.1.w1.scale", 0, 1, saved);
        expect_nonfinite(m, c, "layer 0 expert 2 w1 scale 0xFF", crafted, n, 10, 0, "moe");
        unpoke(store, "layers.0.ffn.experts.2.w1.scale", 0, 1, saved0);
    }

    /* The shared expert serves every token; an attention weight (e4m3 NaN) of layer 2; one head
     * weight (bf16 NaN) in row 7: all at position 0. */
    const struct {
        const char *tensor;
        size_t byte, len;
        uint32_t layer;
        const char *stage;
    } cases[] = {{"layers.1.ffn.shared_experts.w2.scale", 0, 1, 1, "moe"},
                 {"layers.2.attn.wo_b.weight", 3, 1, 2, "attention"},
                 {"head.weight", 2 * (7 * (size_t)c->dim + 3), 2, c->n_layers, "head"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        poke(store, cases[i].tensor, cases[i].byte, cases[i].len, saved);
        expect_nonfinite(m, c, cases[i].tensor, tok, n, 0, cases[i].layer, cases[i].stage);
        unpoke(store, cases[i].tensor, cases[i].byte, cases[i].len, saved);
    }
}

/* ---- bad checkpoints ---- */

static void expect_load_error(const ms_v4_config *c, tstore *store, const char *what, const char *needle) {
    ms_ref_model *m = NULL;
    char err[256] = "";
    int rc = ms_ref_model_create(c, get_fn, store, &m, err, sizeof err);
    CHECK(rc < 0 && m == NULL, "%s: rc %d", what, rc);
    CHECK(strstr(err, needle) != NULL, "%s: error '%s' does not mention '%s'", what, err, needle);
    printf("load error (%s): %s\n", what, err);
    ms_ref_model_free(m);
}

static void test_load_errors(void) {
    uint32_t ratios[3] = {0, 4, 128};
    ms_v4_config c = tiny_cfg(ratios, 3, 8, 128, 1);
    static tstore store;
    build_model(&store, &c, g_seed);
    ms_ref_model *m = NULL;
    char err[256];
    CHECK(ms_ref_model_create(&c, get_fn, &store, &m, err, sizeof err) == 0, "baseline: %s", err);
    ms_ref_model_free(m);

    ms_st_tensor *t = find_tensor(&store, "layers.1.attn.indexer.compressor.ape");
    char saved = ((char *)t->name)[0];
    ((char *)t->name)[0] = 'X';
    expect_load_error(&c, &store, "missing", "layers.1.attn.indexer.compressor.ape");
    ((char *)t->name)[0] = saved;

    t = find_tensor(&store, "layers.2.attn.wkv.scale");
    t->dtype = MS_ST_F32;
    expect_load_error(&c, &store, "dtype", "layers.2.attn.wkv.scale");
    t->dtype = MS_ST_F8_E8M0;

    t = find_tensor(&store, "layers.0.ffn.experts.3.w2.weight");
    t->shape[1]++;
    expect_load_error(&c, &store, "shape", "layers.0.ffn.experts.3.w2.weight");
    t->shape[1]--;

    t = find_tensor(&store, "layers.0.ffn.gate.tid2eid");
    int64_t *ids = (int64_t *)t->data, keep = ids[77];
    ids[77] = 4;
    expect_load_error(&c, &store, "tid2eid range", "tid2eid");
    ids[77] = keep;

    ms_v4_config bad = c;
    bad.n_kv_heads = 2;
    expect_load_error(&bad, &store, "config", "num_key_value_heads");
    store_free(&store);
}

/* ---- optional: write the flash-like model as a real checkpoint directory ----
 * `test_v4_ref --write-checkpoint DIR` writes DIR/config.json, DIR/model.safetensors, the prompt
 * (DIR/tokens.txt) and its last-position logits (DIR/last_logits.f32, F32 LE) so the CLI
 * (`moestream logits`) can be checked end to end against this in-memory run. */

static const char *st_dtype_str(ms_st_dtype dt) {
    switch (dt) {
    case MS_ST_BF16: return "BF16";
    case MS_ST_F32: return "F32";
    case MS_ST_F8_E4M3: return "F8_E4M3";
    case MS_ST_F8_E8M0: return "F8_E8M0";
    case MS_ST_I8: return "I8";
    case MS_ST_I64: return "I64";
    case MS_ST_F16: case MS_ST_F64: case MS_ST_U8: case MS_ST_I32: case MS_ST_BOOL:
    case MS_ST_DTYPE_COUNT: break;
    }
    return "?";
}

static int write_checkpoint(const char *dir, const tstore *s, const ms_v4_config *c,
                            const uint32_t *tok, uint32_t n, const float *last) {
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t cap = 1 << 20, len = 0;
    char *hdr = malloc(cap);
    uint64_t off = 0;
    len += (size_t)snprintf(hdr + len, cap - len, "{");
    for (uint32_t i = 0; i < s->n; i++) {
        const ms_st_tensor *t = &s->t[i];
        len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu",
                                i ? "," : "", t->name, st_dtype_str(t->dtype), (unsigned long long)t->shape[0]);
        if (t->n_dims == 2) len += (size_t)snprintf(hdr + len, cap - len, ",%llu", (unsigned long long)t->shape[1]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)off, (unsigned long long)(off + t->n_bytes));
        off += t->n_bytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    uint64_t hl = len;
    uint8_t hlb[8];
    for (int i = 0; i < 8; i++) hlb[i] = (uint8_t)(hl >> (8 * i));
    fwrite(hlb, 1, 8, f);
    fwrite(hdr, 1, len, f);
    for (uint32_t i = 0; i < s->n; i++) fwrite(s->t[i].data, 1, s->t[i].n_bytes, f);
    free(hdr);
    if (fclose(f)) return -1;

    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"architectures\": [\"DeepseekV4ForCausalLM\"], \"model_type\": \"deepseek_v4\",\n"
               " \"vocab_size\": %u, \"hidden_size\": %u, \"num_hidden_layers\": %u,\n"
               " \"num_attention_heads\": %u, \"num_key_value_heads\": 1, \"head_dim\": %u,\n"
               " \"qk_rope_head_dim\": %u, \"q_lora_rank\": %u, \"o_lora_rank\": %u, \"o_groups\": %u,\n"
               " \"sliding_window\": %u, \"compress_ratios\": [",
            c->vocab_size, c->dim, c->n_layers, c->n_heads, c->head_dim, c->rope_dim, c->q_lora_rank,
            c->o_lora_rank, c->o_groups, c->window);
    for (uint32_t i = 0; i < c->n_layers; i++) fprintf(f, "%u, ", c->compress_ratios[i]);
    fprintf(f, "0],\n \"compress_rope_theta\": %g, \"rope_theta\": %g,\n"
               " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": %g, \"original_max_position_embeddings\": %u,"
               " \"beta_fast\": %g, \"beta_slow\": %g},\n"
               " \"max_position_embeddings\": 1048576, \"index_n_heads\": %u, \"index_head_dim\": %u,"
               " \"index_topk\": %u,\n \"n_routed_experts\": %u, \"num_experts_per_tok\": %u,"
               " \"n_shared_experts\": 1, \"moe_intermediate_size\": %u, \"num_hash_layers\": %u,\n"
               " \"scoring_func\": \"sqrtsoftplus\", \"topk_method\": \"noaux_tc\", \"norm_topk_prob\": true,"
               " \"routed_scaling_factor\": %g, \"swiglu_limit\": %g, \"hidden_act\": \"silu\",\n"
               " \"hc_mult\": %u, \"hc_sinkhorn_iters\": %u, \"hc_eps\": 1e-06, \"rms_norm_eps\": 1e-06,"
               " \"num_nextn_predict_layers\": 1, \"expert_dtype\": \"fp4\",\n"
               " \"tie_word_embeddings\": false, \"bos_token_id\": 0, \"eos_token_id\": 1,"
               " \"attention_bias\": false, \"torch_dtype\": \"bfloat16\"}\n",
            c->compress_rope_theta, c->rope_theta, c->yarn_factor, c->yarn_original_max_pos,
            c->yarn_beta_fast, c->yarn_beta_slow, c->index_n_heads, c->index_head_dim, c->index_topk,
            c->n_routed_experts, c->n_active_experts, c->moe_inter_dim, c->n_hash_layers,
            c->routed_scaling_factor, c->swiglu_limit, c->hc_mult, c->hc_sinkhorn_iters);
    if (fclose(f)) return -1;

    snprintf(path, sizeof path, "%s/tokens.txt", dir);
    f = fopen(path, "w");
    if (!f) return -1;
    for (uint32_t i = 0; i < n; i++) fprintf(f, "%s%u", i ? "," : "", tok[i]);
    fprintf(f, "\n");
    if (fclose(f)) return -1;
    snprintf(path, sizeof path, "%s/last_logits.f32", dir);
    f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(last, sizeof(float), c->vocab_size, f);
    return fclose(f) ? -1 : 0;
}

static int write_mode(const char *dir) {
    static tstore store;
    uint32_t flash[4] = {0, 4, 128, 4}, n = 132;
    ms_v4_config c = tiny_cfg(flash, 4, 8, 128, 2);
    build_model(&store, &c, g_seed);
    ms_ref_model *m = NULL;
    char err[256];
    if (ms_ref_model_create(&c, get_fn, &store, &m, err, sizeof err)) {
        printf("model_create: %s\n", err);
        return 1;
    }
    uint32_t tok[132];
    float *logits = malloc((size_t)n * c.vocab_size * sizeof(float));
    make_tokens(tok, n, c.vocab_size, g_seed + n);
    int rc = run(m, &c, tok, n, 0, logits);
    if (!rc) rc = write_checkpoint(dir, &store, &c, tok, n, logits + (size_t)(n - 1) * c.vocab_size);
    printf("%s %s\n", rc ? "failed to write" : "wrote", dir);
    free(logits);
    ms_ref_model_free(m);
    store_free(&store);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--write-checkpoint")) return write_mode(argv[2]);
    if (argc > 1) g_seed = strtoull(argv[1], NULL, 0);
    double t0 = now_s();
    test_quant_helpers();
    test_yarn_sinkhorn();
    test_load_errors();
    test_window_sizing();

    static tstore s_flash, s_pro, s_win;
    /* Flash-like: pure-window layer first, then CSA/HCA; two hash layers; window 8; 132 tokens
     * cross 33 ratio-4 blocks (index_topk 3) and one ratio-128 block. Chunk 1 = decode. */
    static const uint32_t chunks_f[] = {1, 3, 4, 5, 128};
    uint32_t flash[4] = {0, 4, 128, 4};
    ms_ref_model *mf = NULL;
    ms_v4_config cf;
    test_chunking("flash-like", flash, 4, 8, 128, 2, 132, chunks_f, 5, &mf, &s_flash, &cf);
    if (mf) test_live(mf, &cf, &s_flash);
    if (mf) test_nonfinite(mf, &cf, &s_flash);
    ms_ref_model_free(mf);
    store_free(&s_flash);

    /* Pro-like: HCA first; o_lora 64 (wo_a groups share a scale block); one hash layer. */
    static const uint32_t chunks_p[] = {1, 5, 16};
    uint32_t pro[3] = {128, 4, 128};
    test_chunking("pro-like", pro, 3, 8, 64, 1, 132, chunks_p, 3, NULL, &s_pro, NULL);
    store_free(&s_pro);

    /* The real window (128) on a prompt longer than it. */
    static const uint32_t chunks_w[] = {1, 128};
    uint32_t win[2] = {4, 128};
    test_chunking("window-128", win, 2, 128, 128, 1, 132, chunks_w, 2, NULL, &s_win, NULL);
    store_free(&s_win);

    printf("test_v4_ref: %s in %.1f s (seed 0x%llx)\n", g_fail ? "FAILED" : "passed", now_s() - t0,
           (unsigned long long)g_seed);
    return g_fail ? 1 : 0;
}
