/* tools/env.c — the one place that reads the environment (see env.h). */
#include "tools/env.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/status.h"

const char ms_env_help[] =
    "environment:\n"
    "  MOESTREAM_LOG=error|warn|info|debug|trace  log level (default info)\n"
    "  MOESTREAM_DEVICE=N                Vulkan device index (default: the best device)\n"
    "  MOESTREAM_VALIDATION=1            Khronos validation layer on (_REQUIRED=1: must exist)\n"
    "  MOESTREAM_CACHE_DIR=DIR           pipeline cache (default $XDG_CACHE_HOME/moestream or\n"
    "                                    ~/.cache/moestream); MOESTREAM_NO_PIPELINE_CACHE=1: none\n"
    "  MOESTREAM_DISABLE_PUSH_DESCRIPTOR=1, MOESTREAM_DISABLE_TIMELINE_SEMAPHORE=1,\n"
    "  MOESTREAM_DISABLE_TILED_GEMV=1    force the plain fallback of a fast path\n";

static bool flag(const char *name) {
    const char *e = getenv(name);
    return e && e[0] && strcmp(e, "0") != 0;
}

void ms_env_log(void) {
    const char *e = getenv("MOESTREAM_LOG");
    ms_log_level lv;
    if (!e) return;
    if (ms_log_level_from_name(e, &lv) == 0)
        ms_log_set_level(lv);
    else
        fprintf(stderr,
                "moestream: warning: MOESTREAM_LOG='%.40s%s' is not one of error, warn, info, "
                "debug, trace; using info\n",
                e, strlen(e) > 40 ? "..." : "");
}

int ms_env_device(int32_t *index, const char **raw, char *err, size_t err_len) {
    const char *e = getenv("MOESTREAM_DEVICE");
    *index = -1;
    if (raw) *raw = e && e[0] ? e : NULL;
    if (!e || !e[0]) return 0;
    char *end;
    errno = 0;
    long v = strtol(e, &end, 10);
    if (errno || *end || e[0] == '-' || e[0] == '+' || v < 0 || v > INT32_MAX)
        return ms_errf(err, err_len, -MS_E_INVALID_ARG,
                       "MOESTREAM_DEVICE='%.40s': expected a device index (0, 1, ...)", e);
    *index = (int32_t)v;
    return 0;
}

int ms_env_vk_opts(ms_vk_opts *o, char *err, size_t err_len) {
    static char cache_dir[PATH_MAX];
    int rc = ms_env_device(&o->device_index, NULL, err, err_len);
    if (rc) return rc;
    o->validation = flag("MOESTREAM_VALIDATION");
    o->validation_required = flag("MOESTREAM_VALIDATION_REQUIRED");
    o->disable_push_descriptor = flag("MOESTREAM_DISABLE_PUSH_DESCRIPTOR");
    o->disable_timeline_semaphore = flag("MOESTREAM_DISABLE_TIMELINE_SEMAPHORE");
    o->disable_tiled_gemv = flag("MOESTREAM_DISABLE_TILED_GEMV");
    o->cache_dir = NULL;
    if (flag("MOESTREAM_NO_PIPELINE_CACHE")) return 0;
    const char *d = getenv("MOESTREAM_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME");
    const char *h = getenv("HOME");
    int n = -1;
    if (d && d[0]) n = snprintf(cache_dir, sizeof cache_dir, "%s", d);
    else if (x && x[0]) n = snprintf(cache_dir, sizeof cache_dir, "%s/moestream", x);
    else if (h && h[0]) n = snprintf(cache_dir, sizeof cache_dir, "%s/.cache/moestream", h);
    /* no usable directory (or a path too long): run without the on-disk cache */
    if (n > 0 && (size_t)n < sizeof cache_dir) o->cache_dir = cache_dir;
    return 0;
}

ms_io_probe_opts ms_env_io_probe_opts(void) {
    ms_io_probe_opts o = {.no_tmpfile = flag("MOESTREAM_IO_PROBE_NO_TMPFILE"),
                          .tmp_dir = getenv("TMPDIR")};
    return o;
}
