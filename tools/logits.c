/* tools/logits.c — `moestream logits`: run the CPU reference forward pass (engine/ref) on a token
 * list and print one JSON object with the top log-probabilities and a hash of the raw logits per
 * position. The stable hook for correctness checks; the format is documented in docs/logits.md.
 *
 * Exit: 0 ok, 1 failure (missing model, bad checkpoint, out of memory), 2 bad usage (flags, token
 * list, token id >= vocab).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "common/alloc.h"
#include "common/status.h"
#include "engine/model/config.h"
#include "engine/ref/ref.h"
#include "storage/safetensors.h"

int ms_cmd_logits(int argc, char **argv);

#define MAX_TOKENS (1u << 20)

static void usage(FILE *f) {
    fprintf(f,
            "usage: moestream logits -m MODEL_DIR --tokens ID,ID,... [--top K] [--all-positions]\n"
            "                        [--chunk N]\n"
            "\n"
            "Runs the CPU reference forward pass (slow, exact) and prints one JSON object:\n"
            "  {\"model\", \"n_tokens\", \"positions\": [{\"pos\", \"token\", \"top\": [{\"id\", "
            "\"logprob\"}],\n"
            "   \"logits_xxh64\"}]}  (docs/logits.md)\n"
            "\n"
            "  -m, --model DIR     checkpoint directory (config.json + safetensors)\n"
            "  --tokens LIST       comma-separated token ids\n"
            "  --top K             top entries per position (default 5)\n"
            "  --all-positions     every position, not only the last\n"
            "  --chunk N           prefill N tokens per call (default: all in one call)\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "moestream logits: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n");
    usage(stderr);
    return 2;
}

/* Parses a decimal uint32 (the whole string); returns false on anything else. */
static bool parse_u32(const char *s, uint32_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

/* "0,42,7" -> tokens (ms_malloc'd) and count; false on an empty list or a bad entry. */
static bool parse_tokens(const char *s, uint32_t **out, uint32_t *n_out) {
    uint32_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    if (cap > MAX_TOKENS) return false;
    uint32_t *tok = ms_malloc(cap * sizeof *tok);
    char *copy = ms_strdup(s);
    if (!tok || !copy) {
        ms_free(tok);
        ms_free(copy);
        return false;
    }
    uint32_t n = 0;
    bool ok = true;
    char *save = NULL;
    for (char *p = copy;; p = NULL) {
        char *item = strtok_r(p, ",", &save);
        if (!item) break;
        while (*item == ' ') item++;
        if (!parse_u32(item, &tok[n++])) ok = false;
    }
    /* "1,,2" or a trailing comma leaves fewer items than commas + 1 */
    if (n != cap || n == 0) ok = false;
    ms_free(copy);
    if (!ok) {
        ms_free(tok);
        return false;
    }
    *out = tok;
    *n_out = n;
    return true;
}

static void print_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static const ms_st_tensor *st_get(void *ctx, const char *name) { return ms_st_find(ctx, name); }

/* XXH64 (seed 0) of logits[vocab] as little-endian F32 bytes, whatever the host order. */
static uint64_t logits_hash(const float *logits, uint32_t vocab, uint8_t *bytes) {
    for (uint32_t i = 0; i < vocab; i++) {
        uint32_t b;
        memcpy(&b, &logits[i], 4);
        bytes[4 * i + 0] = (uint8_t)b;
        bytes[4 * i + 1] = (uint8_t)(b >> 8);
        bytes[4 * i + 2] = (uint8_t)(b >> 16);
        bytes[4 * i + 3] = (uint8_t)(b >> 24);
    }
    return (uint64_t)XXH64(bytes, (size_t)vocab * 4, 0);
}

/* One position's JSON object: top-K log-probabilities (log-softmax in double; ties by lower id). */
static void print_position(uint32_t pos, uint32_t token, const float *logits, uint32_t vocab,
                           uint32_t top, uint32_t *idx, uint8_t *bytes) {
    double mx = -INFINITY, sum = 0;
    for (uint32_t v = 0; v < vocab; v++) mx = fmax(mx, logits[v]);
    for (uint32_t v = 0; v < vocab; v++) sum += exp((double)logits[v] - mx);
    double lse = mx + log(sum);
    uint32_t k = top < vocab ? top : vocab;
    for (uint32_t i = 0; i < k; i++) { /* partial selection: k is small */
        uint32_t best = UINT32_MAX;
        for (uint32_t v = 0; v < vocab; v++) {
            bool taken = false;
            for (uint32_t j = 0; j < i && !taken; j++) taken = idx[j] == v;
            if (!taken && (best == UINT32_MAX || logits[v] > logits[best])) best = v;
        }
        idx[i] = best;
    }
    printf("{\"pos\": %u, \"token\": %u, \"top\": [", pos, token);
    for (uint32_t i = 0; i < k; i++)
        printf("%s{\"id\": %u, \"logprob\": %.9g}", i ? ", " : "", idx[i],
               (double)logits[idx[i]] - lse);
    printf("], \"logits_xxh64\": \"%016llx\"}", (unsigned long long)logits_hash(logits, vocab, bytes));
}

int ms_cmd_logits(int argc, char **argv) {
    const char *dir = NULL, *tok_arg = NULL;
    uint32_t top = 5, chunk = 0;
    bool all = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) return bad_usage("%s needs a directory", a);
            dir = argv[i];
        } else if (!strcmp(a, "--tokens")) {
            if (++i >= argc) return bad_usage("%s needs a list of token ids", a);
            tok_arg = argv[i];
        } else if (!strcmp(a, "--top")) {
            if (++i >= argc || !parse_u32(argv[i], &top) || top == 0)
                return bad_usage("--top needs a positive integer, got '%s'", i < argc ? argv[i] : "");
        } else if (!strcmp(a, "--chunk")) {
            if (++i >= argc || !parse_u32(argv[i], &chunk) || chunk == 0)
                return bad_usage("--chunk needs a positive integer, got '%s'", i < argc ? argv[i] : "");
        } else if (!strcmp(a, "--all-positions")) {
            all = true;
        } else {
            return bad_usage("unknown option '%s'", a);
        }
    }
    if (!dir) return bad_usage("%s", "-m MODEL_DIR is required");
    if (!tok_arg) return bad_usage("%s", "--tokens is required");
    uint32_t *tokens = NULL, n = 0;
    if (!parse_tokens(tok_arg, &tokens, &n))
        return bad_usage("--tokens: '%s' is not a comma-separated list of token ids", tok_arg);

    int status = 1, rc;
    char err[2048];
    ms_st *st = NULL;
    ms_ref_model *model = NULL;
    ms_ref_session *sess = NULL;
    float *logits = NULL;
    uint32_t *idx = NULL;
    uint8_t *bytes = NULL;
    ms_v4_config cfg;
    struct stat sb;

    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "moestream logits: model directory '%s' %s\n", dir,
                stat(dir, &sb) != 0 ? "does not exist" : "is not a directory");
        goto out;
    }
    if ((rc = ms_v4_config_load(dir, &cfg, err, sizeof err)) != 0) {
        fprintf(stderr, "moestream logits: %s\n", err);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] >= cfg.vocab_size) {
            fprintf(stderr, "moestream logits: token id %u (position %u) is not below vocab_size %u\n",
                    tokens[i], i, cfg.vocab_size);
            status = 2;
            goto out;
        }
    if ((rc = ms_st_open(dir, &st, err, sizeof err)) != 0) {
        fprintf(stderr, "moestream logits: %s\n", err);
        goto out;
    }
    if ((rc = ms_v4_check_tensors(&cfg, st, err, sizeof err)) != 0) {
        fprintf(stderr, "moestream logits: checkpoint does not match config.json:\n%s\n", err);
        goto out;
    }
    if ((rc = ms_ref_model_create(&cfg, st_get, st, &model, err, sizeof err)) != 0) {
        fprintf(stderr, "moestream logits: %s\n", err[0] ? err : ms_strerror(rc));
        goto out;
    }
    if ((rc = ms_ref_session_create(model, n, &sess)) != 0) {
        fprintf(stderr, "moestream logits: session: %s\n", ms_strerror(rc));
        goto out;
    }
    logits = ms_malloc((size_t)n * cfg.vocab_size * sizeof(float));
    idx = ms_malloc((size_t)(top < cfg.vocab_size ? top : cfg.vocab_size) * sizeof *idx);
    bytes = ms_malloc((size_t)cfg.vocab_size * 4);
    if (!logits || !idx || !bytes) {
        fprintf(stderr, "moestream logits: %s\n", ms_strerror(-MS_E_NOMEM));
        goto out;
    }
    if (!chunk) chunk = n;
    for (uint32_t t0 = 0; t0 < n; t0 += chunk) {
        uint32_t k = n - t0 < chunk ? n - t0 : chunk;
        if ((rc = ms_ref_session_forward(sess, tokens + t0, k, logits + (size_t)t0 * cfg.vocab_size))) {
            fprintf(stderr, "moestream logits: forward at position %u: %s\n", t0, ms_strerror(rc));
            goto out;
        }
    }

    printf("{\"model\": ");
    print_json_string(dir);
    printf(", \"n_tokens\": %u, \"positions\": [", n);
    for (uint32_t p = all ? 0 : n - 1; p < n; p++) {
        if (p != (all ? 0 : n - 1)) printf(", ");
        print_position(p, tokens[p], logits + (size_t)p * cfg.vocab_size, cfg.vocab_size, top, idx, bytes);
    }
    printf("]}\n");
    status = fflush(stdout) == 0 ? 0 : 1;
out:
    ms_free(bytes);
    ms_free(idx);
    ms_free(logits);
    ms_ref_session_free(sess);
    ms_ref_model_free(model);
    ms_st_close(st);
    ms_free(tokens);
    return status;
}
