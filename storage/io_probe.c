/* storage/io_probe.c — what this kernel and filesystem allow: io_uring, O_DIRECT, memory, CPUs.
 *
 * Every probe is defensive: any step may fail in a container (seccomp), on an old kernel or on a
 * filesystem without O_DIRECT, and each failure becomes a message a user can act on. Waits on
 * rings are bounded (PROBE_TIMEOUT_S) so a wedged device cannot hang `moestream doctor`.
 */
#include "storage/store.h"

#include "common/log.h"
#include "common/status.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#define PROBE_TIMEOUT_S 5
#define URING_READ_BYTES (12u * 1024u)   /* "a few KiB", three pages */
#define DIRECT_BYTES (1u << 20)          /* 1 MiB written and read back with O_DIRECT */
#define DIRECT_CHUNKS 4                  /* the io_uring read is split into this many requests */
#define PAGE_ALIGN 4096u

/* ---------------------------------------------------------------- small helpers */

static void set_msg(char *msg, const char *fmt, ...) MS_PRINTF(2, 3);

static void set_msg(char *msg, const char *fmt, ...) {
    if (msg[0]) return; /* keep the first failure: later ones are usually its consequences */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, MS_IO_MSG_LEN, fmt, ap);
    va_end(ap);
}

/* Deterministic bytes that differ per 512-byte sector, so a block read from the wrong offset is
 * caught as well as a corrupted one. */
static void fill_pattern(uint8_t *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        p[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
}

static int read_small_file(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t r;
    do {
        r = read(fd, buf, n - 1);
    } while (r < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (r < 0) return -e;
    buf[r] = 0;
    return 0;
}

/* A temporary file in dir that no path names: O_TMPFILE where the filesystem supports it, else
 * mkstemp followed at once by unlink. Returns an fd or -errno. */
static int make_temp_file(const char *dir, const ms_io_probe_opts *o, bool *used_tmpfile) {
    *used_tmpfile = false;
    if (!o->no_tmpfile) {
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            *used_tmpfile = true;
            return fd;
        }
        /* ENOENT/ENOTDIR/EACCES/EROFS would fail mkstemp the same way; anything else (EISDIR or
         * EOPNOTSUPP from a kernel or filesystem without O_TMPFILE) falls through. */
        if (errno == ENOENT || errno == ENOTDIR || errno == EACCES || errno == EROFS ||
            errno == ENOSPC || errno == EDQUOT)
            return -errno;
    }
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/.moestream-probe-XXXXXX", dir);
    if (n < 0 || (size_t)n >= sizeof path) return -ENAMETOOLONG;
    int fd = mkstemp(path);
    if (fd < 0) return -errno;
    if (unlink(path) != 0) {
        int e = errno;
        close(fd);
        unlink(path); /* one more try; nothing else can be done */
        return -e;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

static int pwrite_full(int fd, const uint8_t *p, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, p + done, n - done, off + (off_t)done);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (w == 0) return -EIO;
        done += (size_t)w;
    }
    return 0;
}

static int pread_full(int fd, uint8_t *p, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, off + (off_t)done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -EIO; /* the file is shorter than what was written */
        done += (size_t)r;
    }
    return 0;
}

static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return n;
}

/* ---------------------------------------------------------------- io_uring reads */

/* Read n bytes at offset 0 of fd into buf through ring as n_chunks requests (READ, or READ_FIXED
 * from registered buffer 0 when fixed), re-queueing short reads. Returns 0 or -errno. */
static int uring_read(struct io_uring *ring, int fd, uint8_t *buf, size_t n, unsigned n_chunks,
                      bool fixed) {
    if (n_chunks == 0 || n_chunks > DIRECT_CHUNKS || n % n_chunks != 0) return -EINVAL;
    size_t chunk = n / n_chunks;
    size_t got[DIRECT_CHUNKS] = {0};
    unsigned pending = 0;
    for (unsigned i = 0; i < n_chunks; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe) return -EBUSY;
        if (fixed)
            io_uring_prep_read_fixed(sqe, fd, buf + i * chunk, (unsigned)chunk, i * chunk, 0);
        else
            io_uring_prep_read(sqe, fd, buf + i * chunk, (unsigned)chunk, i * chunk);
        io_uring_sqe_set_data64(sqe, i);
        pending++;
    }
    int rc = 0;
    int s = io_uring_submit(ring);
    if (s < 0) return s;
    while (pending > 0) {
        struct __kernel_timespec ts = {.tv_sec = PROBE_TIMEOUT_S, .tv_nsec = 0};
        struct io_uring_cqe *cqe = NULL;
        int w = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
        if (w < 0) {
            if (w == -EINTR) continue;
            /* Requests may still be in flight and point at buf; the caller tears the ring down
             * (io_uring_queue_exit cancels and waits) before freeing buf. */
            return w == -ETIME ? -ETIMEDOUT : w;
        }
        uint64_t i = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        pending--;
        if (i >= n_chunks) {
            rc = rc ? rc : -EIO;
            continue;
        }
        if (res < 0) {
            rc = rc ? rc : res;
            continue;
        }
        if (res == 0) {
            rc = rc ? rc : -EIO; /* end of file before the bytes that were written */
            continue;
        }
        got[i] += (size_t)res;
        if (got[i] < chunk && rc == 0) { /* short read: ask for the rest */
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            if (!sqe) {
                rc = -EBUSY;
                continue;
            }
            uint8_t *dst = buf + i * chunk + got[i];
            unsigned len = (unsigned)(chunk - got[i]);
            uint64_t off = i * chunk + got[i];
            if (fixed)
                io_uring_prep_read_fixed(sqe, fd, dst, len, off, 0);
            else
                io_uring_prep_read(sqe, fd, dst, len, off);
            io_uring_sqe_set_data64(sqe, i);
            pending++;
            s = io_uring_submit(ring);
            if (s < 0) return s;
        }
    }
    return rc;
}

/* ---------------------------------------------------------------- io_uring probe */

static const struct {
    uint32_t bit;
    const char *name;
} feat_names[] = {
    /* Values from the kernel's io_uring.h; the later ones are not in liburing 2.3's copy. */
    {1u << 0, "SINGLE_MMAP"},      {1u << 1, "NODROP"},         {1u << 2, "SUBMIT_STABLE"},
    {1u << 3, "RW_CUR_POS"},       {1u << 4, "CUR_PERSONALITY"}, {1u << 5, "FAST_POLL"},
    {1u << 6, "POLL_32BITS"},      {1u << 7, "SQPOLL_NONFIXED"}, {1u << 8, "EXT_ARG"},
    {1u << 9, "NATIVE_WORKERS"},   {1u << 10, "RSRC_TAGS"},      {1u << 11, "CQE_SKIP"},
    {1u << 12, "LINKED_FILE"},     {1u << 13, "REG_REG_RING"},   {1u << 14, "RECVSEND_BUNDLE"},
    {1u << 15, "MIN_TIMEOUT"},     {1u << 16, "RW_ATTR"},        {1u << 17, "NO_IOWAIT"},
};

static void name_features(uint32_t f, char *out, size_t n) {
    size_t len = 0;
    out[0] = 0;
    for (unsigned b = 0; b < 32; b++) {
        uint32_t bit = 1u << b;
        if (!(f & bit)) continue;
        const char *name = NULL;
        for (size_t i = 0; i < sizeof feat_names / sizeof feat_names[0]; i++)
            if (feat_names[i].bit == bit) name = feat_names[i].name;
        char tmp[16];
        if (!name) {
            snprintf(tmp, sizeof tmp, "bit%u", b);
            name = tmp;
        }
        int w = snprintf(out + len, n - len, "%s%s", len ? " " : "", name);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
}

/* CAP_IPC_LOCK (bit 14) in this process's effective capability set. */
static bool has_cap_ipc_lock(void) {
    char buf[4096];
    if (read_small_file("/proc/self/status", buf, sizeof buf) != 0) return false;
    const char *p = strstr(buf, "\nCapEff:");
    if (!p) return false;
    unsigned long long caps = strtoull(p + 8, NULL, 16);
    return (caps >> 14) & 1u;
}

static uint64_t rlim_bytes(rlim_t r) {
    return r == RLIM_INFINITY ? MS_IO_UNLIMITED : (uint64_t)r;
}

static void uring_init_msg(ms_io_uring_caps *c, int err) {
    const char *fb = "moestream falls back to pread threads (slower)";
    switch (err) {
    case ENOSYS:
        set_msg(c->msg,
                "io_uring_setup: %s: kernel %s has no io_uring (needs Linux >= 5.6): upgrade the "
                "kernel; %s",
                strerror(err), c->kernel_release, fb);
        break;
    case EPERM:
    case EACCES:
        if (c->disabled_sysctl == 2)
            set_msg(c->msg,
                    "io_uring_setup: %s: disabled by sysctl kernel.io_uring_disabled=2: run "
                    "'sysctl -w kernel.io_uring_disabled=0' as root; %s",
                    strerror(err), fb);
        else if (c->disabled_sysctl == 1)
            set_msg(c->msg,
                    "io_uring_setup: %s: kernel.io_uring_disabled=1 allows only the group in "
                    "kernel.io_uring_group: add this user to it or set the sysctl to 0; %s",
                    strerror(err), fb);
        else
            set_msg(c->msg,
                    "io_uring_setup: %s: probably blocked by a seccomp filter (Docker's and "
                    "Podman's default profiles block io_uring): run the container with a seccomp "
                    "profile that allows io_uring_setup/io_uring_enter/io_uring_register; %s",
                    strerror(err), fb);
        break;
    case ENOMEM:
        set_msg(c->msg,
                "io_uring_setup: %s: the ring could not be allocated (locked-memory limit or "
                "memory cgroup): raise RLIMIT_MEMLOCK (ulimit -l) or the container's memory; %s",
                strerror(err), fb);
        break;
    default:
        set_msg(c->msg, "io_uring_setup: %s (kernel %s); %s", strerror(err), c->kernel_release,
                fb);
        break;
    }
}

/* A file with known contents for the ring to read: a memfd (no path, nothing to clean up), else an
 * unnamed temporary file in $TMPDIR or /tmp. */
static int make_read_source(const uint8_t *data, size_t n, const ms_io_probe_opts *o, char *msg) {
    int fd = memfd_create("moestream-probe", MFD_CLOEXEC);
    if (fd < 0) {
        const char *dir = o->tmp_dir && o->tmp_dir[0] ? o->tmp_dir : "/tmp";
        bool tmpfile;
        fd = make_temp_file(dir, o, &tmpfile);
        if (fd < 0) {
            set_msg(msg, "cannot create a temporary file in %s for the io_uring read test: %s",
                    dir, strerror(-fd));
            return fd;
        }
    }
    int r = pwrite_full(fd, data, n, 0);
    if (r < 0) {
        set_msg(msg, "cannot write the io_uring test file: %s", strerror(-r));
        close(fd);
        return r;
    }
    return fd;
}

static void probe_reg_buffers(ms_io_uring_caps *c, struct io_uring *ring, int fd,
                              const uint8_t *expect) {
    void *buf = NULL;
    if (posix_memalign(&buf, PAGE_ALIGN, URING_READ_BYTES) != 0) {
        c->reg_buffers_errno = ENOMEM;
        return;
    }
    struct iovec iov = {.iov_base = buf, .iov_len = URING_READ_BYTES};
    int r = io_uring_register_buffers(ring, &iov, 1);
    if (r < 0) {
        c->reg_buffers_errno = -r;
        free(buf);
        return;
    }
    c->reg_buffers = true;
    memset(buf, 0, URING_READ_BYTES);
    r = uring_read(ring, fd, buf, URING_READ_BYTES, 1, true);
    c->read_fixed_ok = r == 0 && memcmp(buf, expect, URING_READ_BYTES) == 0;
    if (r == 0) io_uring_unregister_buffers(ring);
    /* On a failed or timed-out read the kernel may still own the buffer: leave it registered and
     * let the caller's io_uring_queue_exit drop it, and do not free it (a 12 KiB leak beats a
     * kernel write into freed memory). */
    if (r == 0) free(buf);
}

int ms_io_probe_uring(const ms_io_probe_opts *opts, ms_io_uring_caps *out) {
    static const ms_io_probe_opts k_defaults;
    const ms_io_probe_opts *o = opts ? opts : &k_defaults;
    if (!out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->disabled_sysctl = -1;

    struct utsname u;
    if (uname(&u) == 0) snprintf(out->kernel_release, sizeof out->kernel_release, "%s", u.release);
    char buf[64];
    if (read_small_file("/proc/sys/kernel/io_uring_disabled", buf, sizeof buf) == 0)
        out->disabled_sysctl = atoi(buf);
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        out->memlock_cur = rlim_bytes(rl.rlim_cur);
        out->memlock_max = rlim_bytes(rl.rlim_max);
    }
    out->cap_ipc_lock = has_cap_ipc_lock();

    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int r = io_uring_queue_init_params(8, &ring, &p);
    if (r < 0) {
        out->init_errno = -r;
        uring_init_msg(out, -r);
        return r;
    }
    out->works = true;
    out->features = p.features;
    name_features(p.features, out->features_text, sizeof out->features_text);

    uint8_t *expect = NULL, *got = NULL;
    int fd = -1;
    int rc = 0;
    if (posix_memalign((void **)&expect, PAGE_ALIGN, URING_READ_BYTES) != 0 ||
        posix_memalign((void **)&got, PAGE_ALIGN, URING_READ_BYTES) != 0) {
        rc = -ENOMEM;
        set_msg(out->msg, "out of memory for the io_uring read test");
        goto done;
    }
    fill_pattern(expect, URING_READ_BYTES, 7);
    memset(got, 0, URING_READ_BYTES);
    fd = make_read_source(expect, URING_READ_BYTES, o, out->msg);
    if (fd < 0) {
        rc = fd;
        goto done;
    }
    r = uring_read(&ring, fd, got, URING_READ_BYTES, 1, false);
    if (r < 0) {
        rc = r;
        set_msg(out->msg,
                "io_uring works but IORING_OP_READ failed: %s (kernel %s; needs Linux >= 5.6); "
                "moestream falls back to pread threads (slower)",
                strerror(-r), out->kernel_release);
        /* got may still be a read target: tear the ring down before freeing it. */
        io_uring_queue_exit(&ring);
        goto done_no_ring;
    }
    size_t d = first_diff(expect, got, URING_READ_BYTES);
    if (d != URING_READ_BYTES) {
        rc = -MS_E_IO;
        set_msg(out->msg, "io_uring read returned wrong data (first difference at byte %zu): "
                          "report this kernel (%s) as broken; moestream falls back to pread",
                d, out->kernel_release);
    } else {
        out->read_ok = true;
    }
    probe_reg_buffers(out, &ring, fd, expect);

done:
    io_uring_queue_exit(&ring);
done_no_ring:
    if (fd >= 0) close(fd);
    free(expect);
    free(got);

    /* SQPOLL on its own ring: unprivileged since Linux 5.11, CAP_SYS_NICE before. */
    if (out->works) {
        struct io_uring sq;
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_SQPOLL;
        p.sq_thread_idle = 10;
        r = io_uring_queue_init_params(4, &sq, &p);
        if (r == 0) {
            out->sqpoll = true;
            io_uring_queue_exit(&sq);
        } else {
            out->sqpoll_errno = -r;
        }
    }
    return rc;
}

/* ---------------------------------------------------------------- filesystems */

static const struct {
    uint64_t magic;
    const char *name;
} fs_names[] = {
    {EXT4_SUPER_MAGIC, "ext4"},           /* ext2/3/4 share the magic */
    {XFS_SUPER_MAGIC, "xfs"},
    {BTRFS_SUPER_MAGIC, "btrfs"},
    {TMPFS_MAGIC, "tmpfs"},
    {RAMFS_MAGIC, "ramfs"},
    {OVERLAYFS_SUPER_MAGIC, "overlayfs"},
    {0x2FC12FC1u, "zfs"},
    {NFS_SUPER_MAGIC, "nfs"},
    {F2FS_SUPER_MAGIC, "f2fs"},
    {0xCA451A4Eu, "bcachefs"},
    {FUSE_SUPER_MAGIC, "fuse"},
    {0x01021997u, "9p"},
    {SMB_SUPER_MAGIC, "smb"},
    {CIFS_SUPER_MAGIC, "cifs"},
    {SMB2_SUPER_MAGIC, "smb2"},
    {0x5346544Eu, "ntfs"},
    {EXFAT_SUPER_MAGIC, "exfat"},
    {MSDOS_SUPER_MAGIC, "vfat"},
    {CEPH_SUPER_MAGIC, "ceph"},
    {SQUASHFS_MAGIC, "squashfs"},
    {ECRYPTFS_SUPER_MAGIC, "ecryptfs"},
    {0x65735543u, "fuseblk"},
    {HUGETLBFS_MAGIC, "hugetlbfs"},
    {PROC_SUPER_MAGIC, "proc"},
    {SYSFS_MAGIC, "sysfs"},
    {0x6A656A63u, "fakeowner"}, /* Docker Desktop's bind-mount layer */
};

static void name_fs(uint64_t magic, char *out, size_t n) {
    for (size_t i = 0; i < sizeof fs_names / sizeof fs_names[0]; i++)
        if (fs_names[i].magic == magic) {
            snprintf(out, n, "%s", fs_names[i].name);
            return;
        }
    snprintf(out, n, "0x%llx", (unsigned long long)magic);
}

static const char *store_hint(const char *fs) {
    if (!strcmp(fs, "tmpfs") || !strcmp(fs, "ramfs"))
        return "a RAM filesystem; put the model store on an ext4/xfs/btrfs NVMe filesystem";
    if (!strcmp(fs, "overlayfs"))
        return "a container's overlay layer; bind-mount a host ext4/xfs/btrfs NVMe directory "
               "(docker -v) and pass it with --dir";
    if (!strcmp(fs, "nfs") || !strcmp(fs, "cifs") || !strcmp(fs, "smb2") || !strcmp(fs, "9p") ||
        !strcmp(fs, "fuse") || !strcmp(fs, "ceph"))
        return "a network or user-space filesystem; put the model store on a local ext4/xfs/btrfs "
               "NVMe filesystem";
    return "put the model store on an ext4/xfs/btrfs NVMe filesystem";
}

/* Smallest alignment (512, then 4096) at which an O_DIRECT read of one block at that offset into
 * memory aligned only to that value succeeds and returns the right bytes. */
static uint32_t find_direct_align(int fd, uint8_t *scratch, const uint8_t *expect) {
    static const uint32_t sizes[] = {512, 4096};
    for (size_t i = 0; i < 2; i++) {
        uint32_t a = sizes[i];
        /* scratch is 4 KiB aligned; +a makes the buffer aligned to a but (for 512) not to 4096 */
        uint8_t *dst = scratch + a;
        memset(dst, 0, a);
        ssize_t r;
        do {
            r = pread(fd, dst, a, (off_t)a);
        } while (r < 0 && errno == EINTR);
        if (r == (ssize_t)a && memcmp(dst, expect + a, a) == 0) return a;
    }
    return 0;
}

static void direct_uring_read(ms_io_direct_caps *c, int fd, uint8_t *buf, const uint8_t *expect) {
    struct io_uring ring;
    int r = io_uring_queue_init(2 * DIRECT_CHUNKS, &ring, 0);
    if (r < 0) {
        c->uring_errno = -r;
        return; /* the io_uring probe explains why */
    }
    c->uring_tried = true;
    memset(buf, 0, DIRECT_BYTES);
    r = uring_read(&ring, fd, buf, DIRECT_BYTES, DIRECT_CHUNKS, false);
    io_uring_queue_exit(&ring); /* before anyone looks at or frees buf */
    if (r < 0) {
        c->uring_errno = -r;
        set_msg(c->msg, "O_DIRECT works but an io_uring O_DIRECT read on %s failed: %s; "
                        "moestream falls back to pread threads (slower)",
                c->fs_name, strerror(-r));
        return;
    }
    size_t d = first_diff(expect, buf, DIRECT_BYTES);
    if (d != DIRECT_BYTES) {
        c->uring_errno = EIO;
        set_msg(c->msg, "io_uring O_DIRECT read on %s returned wrong data (first difference at "
                        "byte %zu): do not trust this filesystem/kernel for the store",
                c->fs_name, d);
        return;
    }
    c->uring_read_ok = true;
}

int ms_io_probe_direct(const char *dir, const ms_io_probe_opts *opts, ms_io_direct_caps *out) {
    static const ms_io_probe_opts k_defaults;
    const ms_io_probe_opts *o = opts ? opts : &k_defaults;
    if (!out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (!dir || !dir[0]) {
        set_msg(out->msg, "no directory given for the O_DIRECT test");
        return -MS_E_INVALID_ARG;
    }

    struct statfs sf;
    if (statfs(dir, &sf) != 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            set_msg(out->msg, "%s: %s: pass --dir an existing directory on the drive that will "
                              "hold the model store",
                    dir, strerror(e));
        else
            set_msg(out->msg, "%s: statfs: %s", dir, strerror(e));
        return -e;
    }
    out->fs_known = true;
    out->fs_magic = (uint64_t)sf.f_type;
    name_fs(out->fs_magic, out->fs_name, sizeof out->fs_name);
    struct statvfs sv;
    if (statvfs(dir, &sv) == 0) {
        out->bytes_free = (uint64_t)sv.f_bavail * sv.f_frsize;
        out->bytes_total = (uint64_t)sv.f_blocks * sv.f_frsize;
    }

    int fd = make_temp_file(dir, o, &out->used_tmpfile);
    if (fd < 0) {
        const char *what = fd == -ENOTDIR ? "pass --dir a directory"
                           : fd == -EACCES || fd == -EROFS || fd == -EPERM
                               ? "pass --dir a directory you can write to"
                           : fd == -ENOSPC || fd == -EDQUOT ? "free some space"
                                                            : "check the directory";
        set_msg(out->msg, "%s: cannot create a temporary file: %s: %s", dir, strerror(-fd), what);
        return fd;
    }

    uint8_t *expect = NULL, *buf = NULL;
    int rc = 0;
    if (posix_memalign((void **)&expect, PAGE_ALIGN, DIRECT_BYTES) != 0 ||
        posix_memalign((void **)&buf, PAGE_ALIGN, DIRECT_BYTES) != 0) {
        set_msg(out->msg, "out of memory for the O_DIRECT test");
        rc = -ENOMEM;
        goto done;
    }
    fill_pattern(expect, DIRECT_BYTES, 11);

    /* Setting O_DIRECT with fcntl runs the same filesystem check as open(O_DIRECT), and keeps
     * "cannot create a file here" apart from "this filesystem has no O_DIRECT". */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) {
        rc = -errno;
        if (rc == -EINVAL)
            set_msg(out->msg, "%s: O_DIRECT is not supported on %s (%s): %s", dir, out->fs_name,
                    strerror(-rc), store_hint(out->fs_name));
        else
            set_msg(out->msg, "%s: cannot enable O_DIRECT on %s: %s", dir, out->fs_name,
                    strerror(-rc));
        goto done;
    }

    rc = pwrite_full(fd, expect, DIRECT_BYTES, 0);
    if (rc < 0) {
        if (rc == -ENOSPC || rc == -EDQUOT)
            set_msg(out->msg, "%s: O_DIRECT write of 1 MiB: %s: free some space on this %s "
                              "filesystem",
                    dir, strerror(-rc), out->fs_name);
        else
            set_msg(out->msg, "%s: O_DIRECT write of 1 MiB at 4 KiB alignment failed on %s: %s: %s",
                    dir, out->fs_name, strerror(-rc), store_hint(out->fs_name));
        goto done;
    }
    memset(buf, 0, DIRECT_BYTES);
    rc = pread_full(fd, buf, DIRECT_BYTES, 0);
    if (rc < 0) {
        set_msg(out->msg, "%s: O_DIRECT read of 1 MiB at 4 KiB alignment failed on %s: %s: %s",
                dir, out->fs_name, strerror(-rc), store_hint(out->fs_name));
        goto done;
    }
    size_t d = first_diff(expect, buf, DIRECT_BYTES);
    if (d != DIRECT_BYTES) {
        rc = -MS_E_IO;
        set_msg(out->msg, "%s: O_DIRECT read returned different bytes than were written (first "
                          "difference at byte %zu) on %s: do not put the model store here",
                dir, d, out->fs_name);
        goto done;
    }
    out->works = true;
    out->align_min = find_direct_align(fd, buf, expect);
    direct_uring_read(out, fd, buf, expect);

done:
    close(fd); /* the file has no name: closing it is the clean-up */
    free(expect);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- memory and CPUs */

/* "Key:   123 kB" → bytes; false when the key is absent. */
static bool meminfo_get(const char *text, const char *key, uint64_t *out) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            char *end;
            unsigned long long v = strtoull(p + kl + 1, &end, 10);
            while (*end == ' ') end++;
            *out = (uint64_t)v * (strncmp(end, "kB", 2) == 0 ? 1024u : 1u);
            return true;
        }
    }
    return false;
}

/* memory.max of this process's cgroup (v2), else the v1 memory controller's limit. */
static uint64_t cgroup_mem_limit(void) {
    char cg[1024], path[1400], val[64];
    if (read_small_file("/proc/self/cgroup", cg, sizeof cg) == 0) {
        char *p = strstr(cg, "0::");
        if (p == cg || (p && p[-1] == '\n')) {
            p += 3;
            char *nl = strchr(p, '\n');
            if (nl) *nl = 0;
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", strcmp(p, "/") ? p : "");
            if (read_small_file(path, val, sizeof val) != 0 &&
                read_small_file("/sys/fs/cgroup/memory.max", val, sizeof val) != 0)
                val[0] = 0;
            if (val[0] >= '0' && val[0] <= '9') return strtoull(val, NULL, 10);
            if (!strncmp(val, "max", 3)) return MS_IO_UNLIMITED;
        }
    }
    if (read_small_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", val, sizeof val) == 0) {
        uint64_t v = strtoull(val, NULL, 10);
        if (v > 0 && v < (1ull << 60)) return v; /* v1 reports "unlimited" as a huge number */
    }
    return MS_IO_UNLIMITED;
}

int ms_sys_probe_mem(ms_sys_mem_info *out) {
    if (!out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    char text[8192];
    int r = read_small_file("/proc/meminfo", text, sizeof text);
    if (r < 0) return r;
    if (!meminfo_get(text, "MemTotal", &out->mem_total) || out->mem_total == 0)
        return -MS_E_FORMAT;
    if (!meminfo_get(text, "MemAvailable", &out->mem_available)) /* kernels before 3.14 */
        meminfo_get(text, "MemFree", &out->mem_available);
    if (out->mem_available > out->mem_total) out->mem_available = out->mem_total;
    meminfo_get(text, "SwapTotal", &out->swap_total);
    meminfo_get(text, "SwapFree", &out->swap_free);
    meminfo_get(text, "Hugepagesize", &out->hugepage_size);
    out->cgroup_limit = cgroup_mem_limit();

    long n = sysconf(_SC_NPROCESSORS_ONLN);
    out->n_cpus_online = n > 0 ? (uint32_t)n : 1;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        out->n_cpus_usable = (uint32_t)CPU_COUNT(&set);
    else
        out->n_cpus_usable = out->n_cpus_online;
    return 0;
}
