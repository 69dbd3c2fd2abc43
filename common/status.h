/* common/status.h — project status codes.
 *
 * Functions return int: 0 on success, negative on failure. OS and liburing errors pass through as
 * -errno; project errors are -MS_E_* from the one X-macro list below, which also generates
 * ms_strerror(). Project codes start at 1000 so they never collide with errno values.
 * Thread-safe: ms_strerror returns static strings (or, for errno values, strerror text copied into
 * a thread-local buffer).
 */
#ifndef MS_COMMON_STATUS_H
#define MS_COMMON_STATUS_H

#include <stddef.h>

/* X(NAME, value, "message") */
#define MS_STATUS_LIST(X)                                                                          \
    X(INVALID_ARG, 1000, "invalid argument")                                                       \
    X(NOMEM, 1001, "out of host memory")                                                           \
    X(UNSUPPORTED, 1002, "unsupported by this device or build")                                    \
    X(NO_DEVICE, 1003, "no usable Vulkan device")                                                  \
    X(VULKAN, 1004, "Vulkan call failed")                                                          \
    X(DEVICE_LOST, 1005, "GPU device lost; the engine is dead")                                    \
    X(DEVICE_OOM, 1006, "out of GPU memory")                                                       \
    X(NOT_FOUND, 1007, "not found")                                                                \
    X(FORMAT, 1008, "malformed input")                                                             \
    X(RANGE, 1009, "value out of range")                                                           \
    X(IO, 1010, "I/O error")                                                                       \
    X(TIMEOUT, 1011, "timed out")                                                                  \
    X(VALIDATION, 1012, "Vulkan validation layer reported an error")                               \
    X(BUDGET, 1013, "memory budget exceeded")                                                      \
    X(INTERNAL, 1014, "internal error")

enum ms_status {
    MS_OK = 0,
#define MS_X_ENUM(name, value, msg) MS_E_##name = value,
    MS_STATUS_LIST(MS_X_ENUM)
#undef MS_X_ENUM
};

/* Text for a status: accepts 0, -MS_E_* and -errno (the sign is ignored). Never NULL. */
const char *ms_strerror(int status);

/* Writes the printf-style message into err[err_len] (when err is not NULL) and returns rc: the
 * one-line way loaders fail with a message, `return ms_errf(err, n, -MS_E_FORMAT, "...", ...)`. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int ms_errf(char *err, size_t err_len, int rc, const char *fmt, ...);

/* Name of a project status ("MS_E_VULKAN"), or NULL for errno values and 0. */
const char *ms_status_name(int status);

#endif
