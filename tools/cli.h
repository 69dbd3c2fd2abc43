/* tools/cli.h — what every subcommand's argument parsing shares. */
#ifndef MS_TOOLS_CLI_H
#define MS_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* "moestream CMD: " + the message (fmt with one %s), a blank line, the command's usage on
 * stderr; returns 2, the bad-usage exit status. */
int ms_cli_bad_usage(const char *cmd, void (*usage)(FILE *), const char *fmt, const char *arg);

/* The whole string as a decimal number (no sign, no spaces, no trailing text). */
bool ms_cli_parse_u64(const char *s, uint64_t *out);
bool ms_cli_parse_u32(const char *s, uint32_t *out);

#define MS_CLI_MAX_TOKENS (1u << 20) /* ids in one --tokens / --tokens-file list */

/* The token ids of --tokens LIST (file NULL) or of --tokens-file FILE: decimal ids separated by
 * commas and/or white space ("0,42,7", "0, 42, 7", one per line); an empty item, a leading or
 * trailing comma, anything but a decimal id below 2^32, a NUL byte or an unreadable file is an
 * error whose message (into msg, without the command's name) names the item and quotes a window
 * around it. Returns 0 and *out (ms_malloc'd, the caller frees) with *n >= 1, or -1. */
int ms_cli_load_tokens(const char *list, const char *file, uint32_t **out, uint32_t *n, char *msg,
                       size_t msg_len);

struct ms_engine_opts;
/* The options of a command that runs a model over a token list (logits, diff). */
typedef struct ms_cli_model_args {
    const char *dir, *tokens, *tokens_file;
} ms_cli_model_args;
/* argv[*i] as one of those options: -m/--model DIR, --tokens LIST, --tokens-file FILE,
 * --no-fake-quant (into *eo). 1: it was (*i now at its last word), 0: it is not, 2: it was
 * malformed (the bad-usage message is out, with the command's usage). */
int ms_cli_model_arg(const char *cmd, void (*usage)(FILE *), int argc, char **argv, int *i,
                     ms_cli_model_args *m, struct ms_engine_opts *eo);
/* After the options: -m and exactly one token source required (else bad usage, 2), the
 * environment's Vulkan options into eo (tools/env.h), then the tokens as ms_cli_load_tokens (an
 * error: "moestream CMD: message" on stderr and 2). 0 and *out, *n otherwise. */
int ms_cli_model_input(const char *cmd, void (*usage)(FILE *), const ms_cli_model_args *m,
                       struct ms_engine_opts *eo, uint32_t **out, uint32_t *n);

#endif
