/* storage/store.h — the storage subsystem: bytes on disk.
 *
 * For now this header holds only the probes that `moestream doctor` and the I/O engine's start-up
 * use to learn what this machine's kernel and filesystems allow. The expert store (writer and
 * reader), the io_uring I/O engine, the safetensors reader and the LZ4 codec come in later issues.
 *
 * Every probe fills a caller-owned struct (nothing to free), returns 0 or a negative status
 * (-errno for OS and liburing failures, -MS_E_* otherwise) and, on any failure, a message in the
 * struct that names the errno text and says what to do. Probes never abort and leave no file
 * behind on any path: temporary files are O_TMPFILE or unlinked right after creation, and the
 * io_uring probe reads from a memfd.
 * Threads: each probe may be called from any thread; they share no state.
 *
 * Options, not the environment: programs map MOESTREAM_IO_PROBE_NO_TMPFILE and TMPDIR onto
 * ms_io_probe_opts (tools/env.h).
 */
#ifndef MS_STORAGE_STORE_H
#define MS_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_IO_MSG_LEN 512
#define MS_IO_UNLIMITED UINT64_MAX /* an rlimit or cgroup limit that is not set */

/* Probe options; NULL or all-zero means defaults. */
typedef struct ms_io_probe_opts {
    bool no_tmpfile;     /* skip O_TMPFILE, use mkstemp + unlink (tests cover that path) */
    const char *tmp_dir; /* where the io_uring probe's test file goes when memfd_create fails;
                          * NULL: /tmp */
} ms_io_probe_opts;

/* ---------------------------------------------------------------- io_uring */

typedef struct ms_io_uring_caps {
    bool works;                /* io_uring_queue_init succeeded */
    int init_errno;            /* its errno when it failed, else 0 */
    int disabled_sysctl;       /* /proc/sys/kernel/io_uring_disabled (0, 1, 2), -1 if absent */
    char kernel_release[65];   /* uname -r */
    uint32_t features;         /* IORING_FEAT_* bits the kernel reported */
    char features_text[320];   /* the same bits by name, space-separated ("bit17" if unknown) */
    bool read_ok;              /* IORING_OP_READ of a few KiB returned the written bytes */
    bool reg_buffers;          /* io_uring_register_buffers of a 4 KiB-aligned buffer worked */
    int reg_buffers_errno;     /* its errno when it failed */
    bool read_fixed_ok;        /* IORING_OP_READ_FIXED into that buffer returned the right bytes */
    bool sqpoll;               /* io_uring_queue_init with IORING_SETUP_SQPOLL worked */
    int sqpoll_errno;          /* its errno when it failed */
    uint64_t memlock_cur;      /* RLIMIT_MEMLOCK soft limit in bytes, MS_IO_UNLIMITED if none */
    uint64_t memlock_max;      /* hard limit */
    bool cap_ipc_lock;         /* CAP_IPC_LOCK is effective: the memlock limit does not apply */
    char msg[MS_IO_MSG_LEN];   /* first failure and what to do; "" when everything worked */
} ms_io_uring_caps;

/* Probe io_uring: init, features, registered buffers, SQPOLL, RLIMIT_MEMLOCK and a verified read.
 * Returns 0 when a ring works and the read test returned the right bytes; -errno of the failing
 * step otherwise (msg says why). Registered buffers and SQPOLL failing are reported in the struct,
 * not as errors. */
int ms_io_probe_uring(const ms_io_probe_opts *opts, ms_io_uring_caps *out);

/* ---------------------------------------------------------------- O_DIRECT on a directory */

typedef struct ms_io_direct_caps {
    char fs_name[32];          /* "ext4", "xfs", "btrfs", "tmpfs", "overlayfs", ... or "0x...." */
    uint64_t fs_magic;         /* statfs f_type */
    bool fs_known;             /* statfs succeeded */
    uint64_t bytes_free;       /* available to unprivileged users (statvfs f_bavail * f_frsize) */
    uint64_t bytes_total;
    bool used_tmpfile;         /* the test file was O_TMPFILE (else mkstemp + unlink) */
    bool works;                /* O_DIRECT write + read back of 1 MiB returned the written bytes */
    uint32_t align_min;        /* smallest alignment (512, 4096) an O_DIRECT read took; 0 unknown */
    bool uring_tried;          /* an io_uring ring could be created for the read below */
    bool uring_read_ok;        /* io_uring O_DIRECT read of the 1 MiB returned the written bytes */
    int uring_errno;           /* why that read failed, else 0 */
    char msg[MS_IO_MSG_LEN];   /* first failure and what to do; "" when everything worked */
} ms_io_direct_caps;

/* In dir, create a temporary file, write and read back 1 MiB with O_DIRECT at 4 KiB alignment, find
 * the alignment O_DIRECT needs, name the filesystem and its free space, and read the file once more
 * through io_uring. Returns 0 when O_DIRECT works with verified bytes (an io_uring read failure is
 * reported in the struct only); -errno or -MS_E_IO (bytes differ) otherwise, msg naming dir. */
int ms_io_probe_direct(const char *dir, const ms_io_probe_opts *opts, ms_io_direct_caps *out);

/* ---------------------------------------------------------------- host memory and CPUs */

typedef struct ms_sys_mem_info {
    uint64_t mem_total;        /* bytes, /proc/meminfo MemTotal */
    uint64_t mem_available;    /* MemAvailable */
    uint64_t swap_total;       /* SwapTotal */
    uint64_t swap_free;        /* SwapFree */
    uint64_t hugepage_size;    /* Hugepagesize (0 if absent) */
    uint64_t cgroup_limit;     /* this process's cgroup memory limit, MS_IO_UNLIMITED if none */
    uint32_t n_cpus_online;    /* sysconf(_SC_NPROCESSORS_ONLN) */
    uint32_t n_cpus_usable;    /* CPUs in this thread's affinity mask */
} ms_sys_mem_info;

/* Returns 0, or -errno / -MS_E_FORMAT when /proc/meminfo cannot be read or lacks MemTotal. */
int ms_sys_probe_mem(ms_sys_mem_info *out);

#endif
