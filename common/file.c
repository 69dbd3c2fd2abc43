/* common/file.c — non-blocking, type-checked opening and whole-file reads (see file.h). */
#include "common/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/status.h"

const char *ms_file_kind(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "an unknown kind of file";
}

const char *ms_file_short_path(const char *path, char *buf, size_t len) {
    size_t n = strlen(path);
    if (n <= 160) snprintf(buf, len, "%s", path);
    else snprintf(buf, len, "%.60s...%s", path, path + n - 90);
    return buf;
}

const char *ms_file_size_str(uint64_t bytes, char *buf, size_t len) {
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%llu bytes", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, u++;
    snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

int ms_file_open_regular(const char *path, const char *what, int *fd, uint64_t *size, char *err,
                         size_t err_len) {
    if (!what) what = "file";
    *fd = -1;
    char spb[200];
    const char *sp = ms_file_short_path(path, spb, sizeof spb);
    /* O_NONBLOCK: open(2) of a FIFO without a writer returns at once instead of waiting forever;
     * on regular files the flag has no effect, and it is cleared below anyway. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) {
        int rc = -errno;
        return ms_errf(err, err_len, rc, "%s: cannot open %s: %s", sp, what, ms_strerror(rc));
    }
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int rc = -errno;
        close(f);
        return ms_errf(err, err_len, rc, "%s: cannot stat %s: %s", sp, what, ms_strerror(rc));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: is %s, not a regular file (expected a %s)",
                    sp, ms_file_kind(sb.st_mode), what);
    }
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int rc = -errno;
        close(f);
        return ms_errf(err, err_len, rc, "%s: fcntl: %s", sp, ms_strerror(rc));
    }
    *fd = f;
    *size = (uint64_t)sb.st_size;
    return 0;
}

int ms_file_read_all(const char *path, const char *what, size_t max, char **out, size_t *len,
                     char *err, size_t err_len) {
    *out = NULL;
    *len = 0;
    if (!what) what = "file";
    char spb[200];
    const char *sp = ms_file_short_path(path, spb, sizeof spb);
    int fd;
    uint64_t size;
    int rc = ms_file_open_regular(path, what, &fd, &size, err, err_len);
    if (rc) return rc;
    if (size > max) {
        char a[32], b[32];
        close(fd);
        return ms_errf(err, err_len, -MS_E_RANGE, "%s: is %s, more than the %s a %s may have", sp,
                    ms_file_size_str(size, a, sizeof a), ms_file_size_str(max, b, sizeof b), what);
    }
    size_t n = (size_t)size, got = 0;
    char *buf = ms_malloc(n + 1);
    if (!buf) {
        close(fd);
        return ms_errf(err, err_len, -MS_E_NOMEM, "%s: out of memory reading %s", sp, what);
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -MS_E_IO;
            close(fd);
            ms_free(buf);
            return ms_errf(err, err_len, rc, "%s: reading %s failed: %s", sp, what,
                        r < 0 ? ms_strerror(rc) : "the file shrank while being read");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}
