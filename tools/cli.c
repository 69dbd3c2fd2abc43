/* tools/cli.c — shared argument helpers (cli.h). */
#include "tools/cli.h"

#include <errno.h>
#include <stdlib.h>

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
