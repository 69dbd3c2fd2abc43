/* common/file.h — the one way the project opens and reads input files.
 *
 * Opening never blocks: a FIFO, socket or device named where a file is expected would hang a plain
 * open(2) (a FIFO with no writer blocks forever), so files are opened with O_NONBLOCK, checked with
 * fstat, refused unless regular, and only then switched back to blocking reads. Every failure
 * fills a message that names the file and says what it is instead ("is a FIFO", "is a directory",
 * "is 200.0 MiB, more than the 16.0 MiB a config file may have").
 * Owns nothing beyond what it returns: the fd (caller closes) or the buffer (caller ms_free()s).
 * Thread-safe.
 */
#ifndef MS_COMMON_FILE_H
#define MS_COMMON_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* "a FIFO", "a socket", "a character device", "a block device", "a directory", "a symbolic
 * link", "a regular file" or "an unknown kind of file", for a st_mode. */
const char *ms_file_kind(mode_t mode);

/* Opens path read-only (O_CLOEXEC) without blocking and checks it is a regular file. Returns 0
 * with *fd (blocking again) and *size, -errno (open/fstat failed: err says so with the reason),
 * or -MS_E_FORMAT (not a regular file: err names what it is). what: a noun for messages, e.g.
 * "config file"; NULL for "file". */
int ms_file_open_regular(const char *path, const char *what, int *fd, uint64_t *size, char *err,
                         size_t err_len);

/* Reads a whole regular file of at most max bytes into a NUL-terminated ms_malloc'd buffer (the
 * terminator is not counted in *len). Errors as ms_file_open_regular, plus -MS_E_RANGE (larger
 * than max: err gives both sizes), -MS_E_NOMEM, -MS_E_IO / -errno (read failed or the file
 * shrank while being read). */
int ms_file_read_all(const char *path, const char *what, size_t max, char **out, size_t *len,
                     char *err, size_t err_len);

/* path for a message: as it is up to 160 bytes, else its first 60 and last 90 bytes around
 * "...". buf holds at least 160 bytes; returns buf. */
const char *ms_file_short_path(const char *path, char *buf, size_t len);

/* "12.0 MiB" style rendering of a byte count into buf; returns buf. */
const char *ms_file_size_str(uint64_t bytes, char *buf, size_t len);

#endif
