#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *ms_strerror(int status) {
    int s = status < 0 ? -status : status;
    if (s == 0) return "success";
    switch (s) {
#define MS_X_CASE(name, value, msg)                                                                \
    case value: return msg;
        MS_STATUS_LIST(MS_X_CASE)
#undef MS_X_CASE
    default: break;
    }
    static _Thread_local char buf[128];
    /* strerror_r's GNU/XSI variants differ; strerror text copied once is fine for messages. */
    snprintf(buf, sizeof buf, "%s", strerror(s));
    return buf;
}

const char *ms_status_name(int status) {
    int s = status < 0 ? -status : status;
    switch (s) {
#define MS_X_NAME(name, value, msg)                                                                \
    case value: return "MS_E_" #name;
        MS_STATUS_LIST(MS_X_NAME)
#undef MS_X_NAME
    default: return NULL;
    }
}

int ms_errf(char *err, size_t err_len, int rc, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return rc;
}
