/* tools/env.h — the environment variables moestream honours, read in this one place by programs
 * (the CLI and the tests); the libraries take options and read no environment.
 *
 *   MOESTREAM_LOG=error|warn|info|debug|trace   log level (default info)
 *   MOESTREAM_DEVICE=N                          Vulkan device index (default: the best)
 *   MOESTREAM_VALIDATION=1                      Khronos validation layer on
 *   MOESTREAM_VALIDATION_REQUIRED=1             ...and fail when it is missing
 *   MOESTREAM_CACHE_DIR=DIR                     pipeline cache directory (default
 *                                               $XDG_CACHE_HOME/moestream, ~/.cache/moestream)
 *   MOESTREAM_NO_PIPELINE_CACHE=1               no pipeline cache on disk
 *   MOESTREAM_DISABLE_PUSH_DESCRIPTOR=1, MOESTREAM_DISABLE_TIMELINE_SEMAPHORE=1,
 *   MOESTREAM_DISABLE_TILED_GEMV=1              force the plain fallback of a fast path
 *   MOESTREAM_IO_PROBE_NO_TMPFILE=1, TMPDIR     I/O probes: mkstemp instead of O_TMPFILE; temp dir
 * A flag is on when set to anything but "" or "0". Not thread-safe (call at start-up).
 */
#ifndef MS_TOOLS_ENV_H
#define MS_TOOLS_ENV_H

#include <stddef.h>
#include <stdint.h>

#include "engine/vk/vk_opts.h"
#include "storage/store.h"

/* The text above, for --help. */
extern const char ms_env_help[];

/* MOESTREAM_LOG: sets the log level; an unknown value is reported on stderr (and ignored). */
void ms_env_log(void);

/* MOESTREAM_DEVICE: *index = -1 when unset; -MS_E_INVALID_ARG (err says why) when not an index.
 * *raw: the variable's text or NULL. */
int ms_env_device(int32_t *index, const char **raw, char *err, size_t err_len);

/* Every Vulkan variable above onto *o (start from ms_vk_opts_default()). o->cache_dir points into
 * a static buffer valid until the next call. Returns 0 or -MS_E_INVALID_ARG (bad
 * MOESTREAM_DEVICE; err says why). */
int ms_env_vk_opts(ms_vk_opts *o, char *err, size_t err_len);

/* MOESTREAM_IO_PROBE_NO_TMPFILE and TMPDIR. */
ms_io_probe_opts ms_env_io_probe_opts(void);

#endif
