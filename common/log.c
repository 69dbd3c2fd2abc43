#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static ms_log_sink_fn g_sink;
static void *g_user;
static int g_level = MS_LOG_INFO;

static const char *const k_names[] = {"error", "warn", "info", "debug", "trace"};

const char *ms_log_level_name(ms_log_level level) {
    return (unsigned)level < 5 ? k_names[level] : "?";
}

int ms_log_level_from_name(const char *name, ms_log_level *out) {
    for (int i = 0; name && i < 5; i++)
        if (strcmp(name, k_names[i]) == 0) {
            *out = (ms_log_level)i;
            return 0;
        }
    return -1;
}

void ms_log_set_sink(ms_log_sink_fn fn, void *user) {
    pthread_mutex_lock(&g_mu);
    g_sink = fn;
    g_user = user;
    pthread_mutex_unlock(&g_mu);
}

void ms_log_set_level(ms_log_level level) {
    pthread_mutex_lock(&g_mu);
    g_level = (int)level;
    pthread_mutex_unlock(&g_mu);
}

ms_log_level ms_log_get_level(void) {
    pthread_mutex_lock(&g_mu);
    int l = g_level;
    pthread_mutex_unlock(&g_mu);
    return (ms_log_level)l;
}

void ms_logv(ms_log_level level, const char *fmt, va_list ap) {
    if ((int)level > (int)ms_log_get_level()) return;
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    pthread_mutex_lock(&g_mu);
    if (g_sink)
        g_sink(level, buf, g_user);
    else
        fprintf(stderr, "moestream: %s: %s\n", ms_log_level_name(level), buf);
    pthread_mutex_unlock(&g_mu);
}

void ms_log(ms_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ms_logv(level, fmt, ap);
    va_end(ap);
}
