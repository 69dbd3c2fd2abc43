/* tools/logits.c — `moestream logits`: run the CPU reference forward pass (engine/ref) on a token
 * list and print one JSON object with the top log-probabilities and a hash of the raw logits per
 * position. The stable hook for correctness checks; the format is documented in docs/logits.md.
 *
 * Exit: 0 ok, 1 failure (missing model, bad checkpoint, out of memory), 2 bad usage (flags, token
 * list, token id >= vocab).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/status.h"
#include "engine/engine.h"
#include "tools/cli.h"
#include "tools/env.h"

int ms_cmd_logits(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: moestream logits -m MODEL_DIR (--tokens ID,ID,... | --tokens-file FILE)\n"
            "                        [--top K] [--all-positions] [--chunk N] [--backend B]\n"
            "                        [--no-fake-quant]\n"
            "\n"
            "Runs the forward pass (Vulkan on a GPU, else the CPU reference: --backend) and prints\n"
            "one JSON object:\n"
            "  {\"model\", \"n_tokens\", \"positions\": [{\"pos\", \"token\", \"top\": [{\"id\", "
            "\"logprob\"}],\n"
            "   \"logits_xxh64\"}]}  (docs/logits.md)\n"
            "\n"
            "  -m, --model DIR     checkpoint directory (config.json + safetensors)\n"
            "  --tokens LIST       token ids separated by commas (spaces around them are fine)\n"
            "  --tokens-file FILE  the same list read from a file (commas, spaces or newlines);\n"
            "                      for prompts longer than the command line allows\n"
            "  --top K             top entries per position (default 5; at most the vocabulary)\n"
            "  --all-positions     every position, not only the last\n"
            "  --chunk N           prefill N tokens per call (default: all in one call)\n"
            "  --backend B         auto (default: vulkan when a GPU is present, else cpu),\n"
            "                      cpu (the reference, exact and slow) or vulkan (any Vulkan\n"
            "                      device, also a CPU one such as lavapipe; MOESTREAM_DEVICE)\n"
            "  --no-fake-quant     skip the two official fake-quant steps (e4m3 KV latent, FP4\n"
            "                      indexer q/k): for diagnosis only, the output is then NOT the\n"
            "                      model's\n"
            "\n"
            "Exit status: 0 ok; 1 the model cannot be loaded or produced NaN/Inf (the position\n"
            "and layer are named), or stdout could not be written; 2 bad usage.\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    return ms_cli_bad_usage("logits", usage, fmt, arg);
}


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

/* One position's JSON object: top-K log-probabilities (log-softmax in double). */
static void write_position(ms_json_writer *w, uint32_t pos, uint32_t token, const float *logits,
                           uint32_t vocab, uint32_t top, uint32_t *idx, uint8_t *bytes) {
    double mx = -INFINITY, sum = 0;
    for (uint32_t v = 0; v < vocab; v++) mx = fmax(mx, logits[v]);
    for (uint32_t v = 0; v < vocab; v++) sum += exp((double)logits[v] - mx);
    double lse = mx + log(sum);
    uint32_t k = top < vocab ? top : vocab;
    ms_logits_top_k(logits, vocab, k, idx);
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)logits_hash(logits, vocab, bytes));
    ms_json_write_begin(w, NULL, '{');
    ms_json_write_u64(w, "pos", pos);
    ms_json_write_u64(w, "token", token);
    ms_json_write_begin(w, "top", '[');
    for (uint32_t i = 0; i < k; i++) {
        ms_json_write_begin(w, NULL, '{');
        ms_json_write_u64(w, "id", idx[i]);
        ms_json_write_f64(w, "logprob", (double)logits[idx[i]] - lse, 9);
        ms_json_write_end(w, '}');
    }
    ms_json_write_end(w, ']');
    ms_json_write_str(w, "logits_xxh64", hash);
    ms_json_write_end(w, '}');
}

/* The first position whose logits hold a NaN or an infinity, or n if none. */
static uint32_t first_nonfinite(const float *logits, uint32_t n, uint32_t vocab, uint32_t *id) {
    for (uint32_t p = 0; p < n; p++)
        for (uint32_t v = 0; v < vocab; v++)
            if (!isfinite(logits[(size_t)p * vocab + v])) {
                *id = v;
                return p;
            }
    return n;
}

int ms_cmd_logits(int argc, char **argv) {
    ms_cli_model_args ma = {0};
    uint32_t top = 5, chunk = 0;
    bool all = false;
    ms_engine_opts eo = ms_engine_opts_default();
    for (int i = 1, r; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((r = ms_cli_model_arg("logits", usage, argc, argv, &i, &ma, &eo)) != 0) {
            if (r != 1) return r;
        } else if (!strcmp(a, "--top")) {
            if (++i >= argc || !ms_cli_parse_u32(argv[i], &top) || top == 0)
                return bad_usage("--top needs a positive integer, got '%s'", i < argc ? argv[i] : "");
        } else if (!strcmp(a, "--chunk")) {
            if (++i >= argc || !ms_cli_parse_u32(argv[i], &chunk) || chunk == 0)
                return bad_usage("--chunk needs a positive integer, got '%s'", i < argc ? argv[i] : "");
        } else if (!strcmp(a, "--all-positions")) {
            all = true;
        } else if (!strcmp(a, "--backend")) {
            if (++i >= argc || ms_backend_from_name(argv[i], &eo.backend) != 0)
                return bad_usage("--backend takes auto, cpu or vulkan, got '%s'",
                                 i < argc ? argv[i] : "");
        } else {
            return bad_usage("unknown option '%s'", a);
        }
    }
    uint32_t *tokens = NULL, n = 0;
    if (ms_cli_model_input("logits", usage, &ma, &eo, &tokens, &n) != 0) return 2;
    const char *dir = ma.dir;

    int status = 1, rc;
    char err[4096];
    ms_engine *eng = NULL;
    ms_session *sess = NULL;
    float *logits = NULL;
    uint32_t *idx = NULL;
    uint8_t *bytes = NULL;

    if ((rc = ms_engine_open(dir, &eo, &eng, err, sizeof err)) != 0) {
        fprintf(stderr, "moestream logits: %s\n", err);
        goto out;
    }
    const ms_v4_config cfg = *ms_engine_config(eng);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] >= cfg.vocab_size) {
            fprintf(stderr, "moestream logits: token id %u (position %u) is not below vocab_size %u\n",
                    tokens[i], i, cfg.vocab_size);
            status = 2;
            goto out;
        }
    if ((rc = ms_session_create(eng, n, &sess)) != 0) {
        fprintf(stderr, "moestream logits: session: %s\n", ms_strerror(rc));
        goto out;
    }
    if (top > cfg.vocab_size) top = cfg.vocab_size; /* every id, ranked */
    logits = ms_malloc((size_t)n * cfg.vocab_size * sizeof(float));
    idx = ms_malloc((size_t)top * sizeof *idx);
    bytes = ms_malloc((size_t)cfg.vocab_size * 4);
    if (!logits || !idx || !bytes) {
        fprintf(stderr, "moestream logits: %s\n", ms_strerror(-MS_E_NOMEM));
        goto out;
    }
    if (!chunk) chunk = n;
    for (uint32_t t0 = 0; t0 < n; t0 += chunk) {
        uint32_t k = n - t0 < chunk ? n - t0 : chunk;
        if ((rc = ms_session_feed(sess, tokens + t0, k, logits + (size_t)t0 * cfg.vocab_size))) {
            fprintf(stderr, "moestream logits: forward at position %u: %s\n", t0, ms_strerror(rc));
            goto out;
        }
    }
    /* NaN or Inf is not a result: say where it appeared instead of printing it */
    uint32_t bad_id = 0, bad_pos = first_nonfinite(logits, n, cfg.vocab_size, &bad_id);
    if (bad_pos < n) {
        uint32_t npos, layer;
        const char *stage;
        char where[160] = "";
        if (ms_session_nonfinite(sess, &npos, &layer, &stage) == 0) {
            if (layer < cfg.n_layers)
                snprintf(where, sizeof where, "; the first NaN/Inf appeared at position %u in layer %u (%s)",
                         npos, layer, stage);
            else
                snprintf(where, sizeof where, "; the first NaN/Inf appeared at position %u in the final %s",
                         npos, stage);
        }
        fprintf(stderr,
                "moestream logits: the model produced a non-finite logit (%g for token id %u) at "
                "position %u%s%s; the checkpoint's weights or config.json are broken\n",
                (double)logits[(size_t)bad_pos * cfg.vocab_size + bad_id], bad_id, bad_pos,
                n > 1 ? " (the first such position)" : "", where);
        goto out;
    }

    ms_json_writer w;
    ms_json_writer_init(&w, stdout, true);
    ms_json_write_begin(&w, NULL, '{');
    ms_json_write_str(&w, "model", dir);
    ms_json_write_u64(&w, "n_tokens", n);
    ms_json_write_begin(&w, "positions", '[');
    for (uint32_t p = all ? 0 : n - 1; p < n; p++)
        write_position(&w, p, tokens[p], logits + (size_t)p * cfg.vocab_size, cfg.vocab_size, top,
                       idx, bytes);
    ms_json_write_end(&w, ']');
    ms_json_write_end(&w, '}');
    fputc('\n', stdout);
    status = 0; /* main flushes stdout and reports a write error */
out:
    ms_free(bytes);
    ms_free(idx);
    ms_free(logits);
    ms_session_free(sess);
    ms_engine_close(eng);
    ms_free(tokens);
    return status;
}
