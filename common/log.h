/* common/log.h — leveled logging with a settable sink.
 *
 * Default sink writes "moestream: <level>: <message>\n" to stderr. The level threshold starts at
 * MS_LOG_INFO; programs set it (tools/ reads MOESTREAM_LOG; this library reads no environment). ms_log_set_sink/ms_log_set_level are meant to be called at start-up (tests use
 * the sink to fail on validation messages); ms_log itself may be called from any thread (the sink
 * is called under a mutex, one message at a time).
 */
#ifndef MS_COMMON_LOG_H
#define MS_COMMON_LOG_H

#include <stdarg.h>

typedef enum ms_log_level {
    MS_LOG_ERROR = 0,
    MS_LOG_WARN = 1,
    MS_LOG_INFO = 2,
    MS_LOG_DEBUG = 3,
    MS_LOG_TRACE = 4,
} ms_log_level;

typedef void (*ms_log_sink_fn)(ms_log_level level, const char *msg, void *user);

void ms_log_set_sink(ms_log_sink_fn fn, void *user); /* fn NULL restores the stderr sink */
void ms_log_set_level(ms_log_level level);
ms_log_level ms_log_get_level(void);
const char *ms_log_level_name(ms_log_level level);
/* "error", "warn", "info", "debug" or "trace" -> 0 and *out; anything else -> -1. */
int ms_log_level_from_name(const char *name, ms_log_level *out);

#if defined(__GNUC__)
#define MS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MS_PRINTF(a, b)
#endif

void ms_log(ms_log_level level, const char *fmt, ...) MS_PRINTF(2, 3);
void ms_logv(ms_log_level level, const char *fmt, va_list ap);

#define MS_LOGE(...) ms_log(MS_LOG_ERROR, __VA_ARGS__)
#define MS_LOGW(...) ms_log(MS_LOG_WARN, __VA_ARGS__)
#define MS_LOGI(...) ms_log(MS_LOG_INFO, __VA_ARGS__)
#define MS_LOGD(...) ms_log(MS_LOG_DEBUG, __VA_ARGS__)

#endif
