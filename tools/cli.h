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

#endif
