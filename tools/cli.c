/* tools/cli.c — shared argument helpers (cli.h). */
#include "tools/cli.h"
#include "engine/engine.h"
#include "tools/env.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/file.h"
#include "common/json.h"

int ms_cli_bad_usage(const char *cmd, void (*usage)(FILE *), const char *fmt, const char *arg) {
    fprintf(stderr, "moestream %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n");
    usage(stderr);
    return 2;
}

bool ms_cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool ms_cli_parse_u32(const char *s, uint32_t *out) {
    uint64_t v;
    if (!ms_cli_parse_u64(s, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

/* Quotes the neighbourhood of s[at, at + len) for a message: "...,12,>>abc<<,13,...". */
static void quote_window(const char *s, size_t at, size_t len, char *out, size_t out_len) {
    size_t n = strlen(s), lo = at > 24 ? at - 24 : 0, hi = at + len + 24 < n ? at + len + 24 : n;
    if (len > 40) len = 40; /* a huge bad item is cut too */
    char raw[160];
    snprintf(raw, sizeof raw, "%s%.*s>>%.*s<<%.*s%s", lo ? "..." : "", (int)(at - lo),
                     s + lo, (int)len, s + at, (int)(hi > at + len ? hi - at - len : 0),
                     s + at + len, hi < n ? "..." : "");
    ms_json_escape(raw, strlen(raw), out, out_len);
}

static bool is_sep_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Token ids separated by commas and/or white space ("0,42,7", "0, 42, 7", one per line); an
 * empty item between commas, a leading or trailing comma, or anything but a decimal id below
 * 2^32 is an error whose message (into msg) names the item and quotes a window around it. what:
 * "--tokens" or the file name. Returns false on error; *out is ms_malloc'd. */
static bool parse_tokens(const char *s, const char *what, uint32_t **out, uint32_t *n_out,
                         char *msg, size_t msg_len) {
    uint32_t cap = 0, n = 0;
    for (const char *p = s; *p;) { /* upper bound on the item count */
        while (*p && (is_sep_space(*p) || *p == ',')) p++;
        if (*p) cap++;
        while (*p && !is_sep_space(*p) && *p != ',') p++;
        if (cap > MS_CLI_MAX_TOKENS) {
            snprintf(msg, msg_len, "%s: more than %u token ids", what, MS_CLI_MAX_TOKENS);
            return false;
        }
    }
    if (cap == 0) {
        snprintf(msg, msg_len, "%s: no token ids (expected e.g. 0,42,7)", what);
        return false;
    }
    uint32_t *tok = ms_malloc((size_t)cap * sizeof *tok);
    if (!tok) {
        snprintf(msg, msg_len, "%s: out of memory", what);
        return false;
    }
    const char *p = s;
    for (;;) {
        while (is_sep_space(*p)) p++;
        if (!*p) break;
        const char *item = p;
        while (*p && !is_sep_space(*p) && *p != ',') p++;
        size_t len = (size_t)(p - item);
        char win[200];
        if (len == 0) { /* a comma where an id should be */
            quote_window(s, (size_t)(item - s), 1, win, sizeof win);
            snprintf(msg, msg_len, "%s: empty item before position %u: %s", what, n, win);
            ms_free(tok);
            return false;
        }
        char buf[24];
        uint32_t v = 0;
        bool ok = len < sizeof buf;
        if (ok) {
            memcpy(buf, item, len);
            buf[len] = '\0';
            ok = ms_cli_parse_u32(buf, &v);
        }
        if (!ok) {
            quote_window(s, (size_t)(item - s), len, win, sizeof win);
            snprintf(msg, msg_len, "%s: item %u is not a token id (a decimal number below 2^32): %s",
                     what, n, win);
            ms_free(tok);
            return false;
        }
        tok[n++] = v;
        while (is_sep_space(*p)) p++;
        if (*p == ',') {
            p++;
            while (is_sep_space(*p)) p++;
            if (*p == ',' || !*p) {
                quote_window(s, (size_t)(p - s) - (*p ? 0 : 1), 1, win, sizeof win);
                snprintf(msg, msg_len, "%s: %s after position %u: %s", what,
                         *p ? "empty item" : "trailing comma", n - 1, win);
                ms_free(tok);
                return false;
            }
        }
    }
    if (n == 0) {
        snprintf(msg, msg_len, "%s: no token ids (expected e.g. 0,42,7)", what);
        ms_free(tok);
        return false;
    }
    *out = tok;
    *n_out = n;
    return true;
}

int ms_cli_load_tokens(const char *list, const char *file, uint32_t **out, uint32_t *n, char *msg,
                       size_t msg_len) {
    if (!file) return parse_tokens(list, "--tokens", out, n, msg, msg_len) ? 0 : -1;
    char *text = NULL;
    size_t len = 0;
    char why[400];
    /* 16 bytes per id is room for ten digits and any separator */
    if (ms_file_read_all(file, "token list", (size_t)MS_CLI_MAX_TOKENS * 16, &text, &len, why, sizeof why) != 0) {
        snprintf(msg, msg_len, "--tokens-file: %s", why);
        return -1;
    }
    bool ok = strlen(text) == len && parse_tokens(text, file, out, n, msg, msg_len);
    if (strlen(text) != len) snprintf(msg, msg_len, "%s: contains a NUL byte", file);
    ms_free(text);
    return ok ? 0 : -1;
}

int ms_cli_model_arg(const char *cmd, void (*usage)(FILE *), int argc, char **argv, int *i,
                     ms_cli_model_args *m, struct ms_engine_opts *eo) {
    const char *a = argv[*i];
    const char **dst = NULL, *need = NULL;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) dst = &m->dir, need = "%s needs a directory";
    else if (!strcmp(a, "--tokens")) dst = &m->tokens, need = "%s needs a list of token ids";
    else if (!strcmp(a, "--tokens-file")) dst = &m->tokens_file, need = "%s needs a file name";
    else if (!strcmp(a, "--no-fake-quant")) {
        eo->no_fq_kv = eo->no_fq_index = true;
        return 1;
    } else
        return 0;
    if (++*i >= argc) return ms_cli_bad_usage(cmd, usage, need, a);
    *dst = argv[*i];
    return 1;
}

int ms_cli_model_input(const char *cmd, void (*usage)(FILE *), const ms_cli_model_args *m,
                       struct ms_engine_opts *eo, uint32_t **out, uint32_t *n) {
    if (!m->dir) return ms_cli_bad_usage(cmd, usage, "%s", "-m MODEL_DIR is required");
    if (!m->tokens && !m->tokens_file)
        return ms_cli_bad_usage(cmd, usage, "%s", "--tokens or --tokens-file is required");
    if (m->tokens && m->tokens_file)
        return ms_cli_bad_usage(cmd, usage, "%s", "give --tokens or --tokens-file, not both");
    char msg[512];
    if (ms_env_vk_opts(&eo->vk, msg, sizeof msg) != 0 ||
        ms_cli_load_tokens(m->tokens, m->tokens_file, out, n, msg, sizeof msg) != 0) {
        fprintf(stderr, "moestream %s: %s\n", cmd, msg);
        return 2;
    }
    return 0;
}
