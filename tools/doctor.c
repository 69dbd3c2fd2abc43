/* tools/doctor.c — `moestream doctor`: what this machine offers moestream, and what to fix.
 *
 * Probes every Vulkan device (ms_vk_enumerate), io_uring, O_DIRECT on the store directory, RAM and
 * CPUs; prints the facts (or one JSON object with --json) and a verdict, one line per item, each
 * non-ok line saying what to do. Exit: 0 when the Vulkan device moestream would use is usable
 * (warnings and failures of other items included), 1 when none is, 2 on bad usage.
 *
 * The device shown as chosen is the one ms_vk_open would use: both call ms_vk_choose_device.
 */
#include "engine/vk/vk.h"
#include "storage/store.h"

#include "common/alloc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/status.h"
#include "tools/env.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MS_VERSION
#define MS_VERSION "unknown"
#endif

#define GIB (1024ull * 1024ull * 1024ull)
#define RAM_MIN_BYTES (16ull * GIB)     /* the smallest RAM the project targets */
#define VRAM_MIN_BYTES (8ull * GIB)     /* the smallest discrete GPU the project targets */
#define MEMLOCK_OK_BYTES (4ull * GIB)   /* enough for a useful registered pinned arena */
#define DISK_WARN_BYTES (200ull * GIB)  /* below this even V4-Flash's store does not fit */
#define MAX_VERDICTS 24

int ms_cmd_doctor(int argc, char **argv);

typedef enum level { LV_OK = 0, LV_WARN = 1, LV_FAIL = 2 } level;

static const char *level_name(level l) {
    return l == LV_OK ? "ok" : l == LV_WARN ? "warn" : "FAIL";
}

typedef struct verdict {
    level lv;
    const char *item;
    char text[720];
} verdict;

typedef struct doctor {
    /* Vulkan */
    int vk_rc;
    char vk_err[512];
    ms_vk_caps *devs; /* [n_devs], ms_free */
    uint32_t n_devs;
    int chosen;                /* index into devs, -1 if none */
    const char *env_device;    /* MOESTREAM_DEVICE, NULL if unset */
    /* storage */
    int uring_rc;
    ms_io_uring_caps uring;
    const char *dir_arg;
    char dir[PATH_MAX];        /* absolute when realpath works */
    int direct_rc;
    ms_io_direct_caps direct;
    int mem_rc;
    ms_sys_mem_info mem;

    verdict v[MAX_VERDICTS];
    int n_v;
    int exit_code;
} doctor;

/* ---------------------------------------------------------------- formatting helpers */

static const char *fmt_bytes(uint64_t b, char *buf, size_t n) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (b < 1024) {
        snprintf(buf, n, "%llu B", (unsigned long long)b);
        return buf;
    }
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 6) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, n, "%.1f %s", v, units[u]);
    return buf;
}

static const char *yesno(bool b) { return b ? "yes" : "no"; }

static void fmt_api(uint32_t v, char *buf, size_t n) {
    snprintf(buf, n, "%u.%u.%u", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
             VK_API_VERSION_PATCH(v));
}

/* Driver versions are vendor-encoded; NVIDIA packs 10.8.8.6 bits. */
static void fmt_driver_version(uint32_t vendor, uint32_t v, char *buf, size_t n) {
    if (vendor == 0x10DE)
        snprintf(buf, n, "%u.%u.%u", v >> 22, (v >> 14) & 0xFFu, (v >> 6) & 0xFFu);
    else
        fmt_api(v, buf, n);
}

static void fmt_mem_flags(VkMemoryPropertyFlags f, char *buf, size_t n) {
    static const struct {
        VkMemoryPropertyFlags bit;
        const char *name;
    } names[] = {
        {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, "DEVICE_LOCAL"},
        {VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, "HOST_VISIBLE"},
        {VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, "HOST_COHERENT"},
        {VK_MEMORY_PROPERTY_HOST_CACHED_BIT, "HOST_CACHED"},
        {VK_MEMORY_PROPERTY_LAZILY_ALLOCATED_BIT, "LAZILY_ALLOCATED"},
        {VK_MEMORY_PROPERTY_PROTECTED_BIT, "PROTECTED"},
        {VK_MEMORY_PROPERTY_DEVICE_COHERENT_BIT_AMD, "DEVICE_COHERENT_AMD"},
        {VK_MEMORY_PROPERTY_DEVICE_UNCACHED_BIT_AMD, "DEVICE_UNCACHED_AMD"},
        {VK_MEMORY_PROPERTY_RDMA_CAPABLE_BIT_NV, "RDMA_CAPABLE_NV"},
    };
    size_t len = 0;
    buf[0] = 0;
    VkMemoryPropertyFlags rest = f;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(f & names[i].bit)) continue;
        rest &= ~names[i].bit;
        int w = snprintf(buf + len, n - len, "%s%s", len ? "|" : "", names[i].name);
        if (w < 0 || (size_t)w >= n - len) return;
        len += (size_t)w;
    }
    if (rest) snprintf(buf + len, n - len, "%s0x%x", len ? "|" : "", (unsigned)rest);
    else if (!len) snprintf(buf, n, "(none)");
}

static const char *lim_text(uint64_t b, char *buf, size_t n) {
    char h[32];
    snprintf(buf, n, "%s (%llu)", fmt_bytes(b, h, sizeof h), (unsigned long long)b);
    return buf;
}

static void add(doctor *d, level lv, const char *item, const char *fmt, ...) MS_PRINTF(4, 5);

static void add(doctor *d, level lv, const char *item, const char *fmt, ...) {
    if (d->n_v >= MAX_VERDICTS) return;
    verdict *v = &d->v[d->n_v++];
    v->lv = lv;
    v->item = item;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->text, sizeof v->text, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- probing */

/* The device ms_vk_open would use (ms_vk_choose_device); a MOESTREAM_DEVICE that names an
 * unusable device is still returned so the verdict can say why. -1 when nothing qualifies. */
static int choose_device(doctor *d) {
    int32_t want;
    if (ms_env_device(&want, &d->env_device, NULL, 0) != 0) return -1;
    int pick = ms_vk_choose_device(d->devs, d->n_devs, want);
    if (pick == -MS_E_UNSUPPORTED) return want;
    return pick < 0 ? -1 : pick;
}

static void probe_all(doctor *d) {
    d->vk_rc = ms_vk_enumerate(&d->devs, &d->n_devs, d->vk_err, sizeof d->vk_err);
    if (d->vk_rc < 0) {
        d->devs = NULL;
        d->n_devs = 0;
        if (!d->vk_err[0]) snprintf(d->vk_err, sizeof d->vk_err, "%s", ms_strerror(d->vk_rc));
    }
    d->chosen = choose_device(d);

    ms_io_probe_opts io = ms_env_io_probe_opts();
    d->uring_rc = ms_io_probe_uring(&io, &d->uring);

    if (!realpath(d->dir_arg, d->dir)) snprintf(d->dir, sizeof d->dir, "%s", d->dir_arg);
    d->direct_rc = ms_io_probe_direct(d->dir, &io, &d->direct);

    d->mem_rc = ms_sys_probe_mem(&d->mem);
}

/* ---------------------------------------------------------------- verdict */

static const char *install_hint =
    "install your GPU's Vulkan driver (Debian: mesa-vulkan-drivers for AMD/Intel/CPU, "
    "nvidia-driver for NVIDIA) and libvulkan1";

static void judge_vulkan(doctor *d) {
    char b1[32], b2[32];
    if (d->vk_rc < 0) {
        add(d, LV_FAIL, "vulkan", "no Vulkan: %s: %s", d->vk_err, install_hint);
        return;
    }
    if (d->n_devs == 0) {
        add(d, LV_FAIL, "vulkan", "no Vulkan device: %s", install_hint);
        return;
    }
    if (d->env_device && d->chosen < 0) {
        add(d, LV_FAIL, "vulkan",
            "MOESTREAM_DEVICE=%s is not a device index (devices are 0..%u): unset it or pick one "
            "of the devices listed above",
            d->env_device, d->n_devs - 1);
        return;
    }
    if (d->chosen < 0) {
        char why[400] = "";
        size_t len = 0;
        for (uint32_t i = 0; i < d->n_devs && len < sizeof why; i++) {
            int w = snprintf(why + len, sizeof why - len, "%s#%u %s: %s", i ? "; " : "", i,
                             d->devs[i].device_name, d->devs[i].unusable_reason);
            if (w < 0) break;
            len += (size_t)w;
        }
        add(d, LV_FAIL, "vulkan",
            "no usable Vulkan device (%s): moestream needs Vulkan 1.2 with a compute queue and "
            "subgroup arithmetic; update the GPU driver (Debian: mesa-vulkan-drivers, "
            "nvidia-driver)",
            why);
        return;
    }
    const ms_vk_caps *c = &d->devs[d->chosen];
    if (!c->usable) {
        add(d, LV_FAIL, "vulkan",
            "MOESTREAM_DEVICE=%s selects %s, which is not usable (%s): unset it or pick a usable "
            "device",
            d->env_device, c->device_name, c->unusable_reason);
        return;
    }
    add(d, LV_OK, "vulkan", "device #%d %s (%s, %s) will be used%s", d->chosen, c->device_name,
        ms_vk_type_name(c->type), c->driver_name[0] ? c->driver_name : ms_vk_vendor_name(c->vendor_id),
        d->env_device ? " (MOESTREAM_DEVICE)" : "");

    if (c->type == VK_PHYSICAL_DEVICE_TYPE_CPU)
        add(d, LV_WARN, "device",
            "device is a CPU implementation (%s): fine for tests, far too slow for models; "
            "%s",
            c->device_name, install_hint);
    for (uint32_t i = 0; i < d->n_devs; i++) {
        const ms_vk_caps *o = &d->devs[i];
        if ((int)i == d->chosen || o->usable) continue;
        add(d, LV_WARN, "device",
            "#%u %s (%s) is not usable: %s: update its driver", i,
            o->device_name, ms_vk_type_name(o->type), o->unusable_reason);
    }

    if (c->type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU && c->device_local_bytes < VRAM_MIN_BYTES)
        add(d, LV_WARN, "vram",
            "%s of VRAM, under the 8 GiB the project targets: few experts stay resident, so "
            "decoding streams more from RAM and NVMe (slower)",
            fmt_bytes(c->device_local_bytes, b1, sizeof b1));
    else if (c->type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU)
        add(d, LV_OK, "vram", "%s device-local", fmt_bytes(c->device_local_bytes, b1, sizeof b1));
    else
        add(d, LV_OK, "vram", "%s device-local (shared with system RAM on a %s)",
            fmt_bytes(c->device_local_bytes, b1, sizeof b1), ms_vk_type_name(c->type));

    if (c->rebar)
        add(d, LV_OK, "rebar", "host-visible device-local memory (ReBAR or unified memory)");
    else
        add(d, LV_WARN, "rebar",
            "no ReBAR: uploads go through staging (fine; enabling Resizable BAR / Smart Access "
            "Memory in the firmware setup may help a little)");

    if (c->external_memory_host)
        add(d, LV_OK, "host-import", "VK_EXT_external_memory_host (alignment %s): the pinned "
                                     "arena is copied to the GPU directly",
            fmt_bytes(c->min_imported_host_align, b2, sizeof b2));
    else
        add(d, LV_WARN, "host-import",
            "no VK_EXT_external_memory_host: expert bytes take one extra copy through a staging "
            "buffer (slower uploads; a newer driver may add it)");
}

static void judge_uring(doctor *d) {
    const ms_io_uring_caps *u = &d->uring;
    char b1[32];
    if (!u->works || !u->read_ok) {
        add(d, LV_WARN, "io_uring", "io_uring unavailable: %s",
            u->msg[0] ? u->msg : ms_strerror(d->uring_rc));
    } else {
        add(d, LV_OK, "io_uring", "works (kernel %s), verified read", u->kernel_release);
        if (u->reg_buffers && u->read_fixed_ok)
            add(d, LV_OK, "reg-buffers", "registered buffers work");
        else if (u->reg_buffers)
            add(d, LV_WARN, "reg-buffers",
                "buffers register but a fixed read returned wrong bytes: moestream will not use "
                "registered buffers on this kernel (slightly slower)");
        else
            add(d, LV_WARN, "reg-buffers",
                "io_uring_register_buffers failed (%s): raise RLIMIT_MEMLOCK (ulimit -l); reads "
                "use unregistered buffers (slightly slower)",
                strerror(u->reg_buffers_errno));
        if (u->sqpoll)
            add(d, LV_OK, "sqpoll", "SQPOLL available");
        else
            add(d, LV_WARN, "sqpoll",
                "SQPOLL unavailable (%s): submissions use io_uring_enter (fine; SQPOLL needs Linux "
                ">= 5.11 or CAP_SYS_NICE)",
                strerror(u->sqpoll_errno));
    }
    if (u->memlock_cur == MS_IO_UNLIMITED)
        add(d, LV_OK, "memlock", "RLIMIT_MEMLOCK unlimited");
    else if (u->cap_ipc_lock)
        add(d, LV_OK, "memlock", "RLIMIT_MEMLOCK %s, but CAP_IPC_LOCK lifts the limit",
            fmt_bytes(u->memlock_cur, b1, sizeof b1));
    else if (u->memlock_cur >= MEMLOCK_OK_BYTES)
        add(d, LV_OK, "memlock", "RLIMIT_MEMLOCK %s", fmt_bytes(u->memlock_cur, b1, sizeof b1));
    else
        add(d, LV_WARN, "memlock",
            "RLIMIT_MEMLOCK %s: raise it (ulimit -l unlimited; 'memlock' in "
            "/etc/security/limits.conf; LimitMEMLOCK=infinity for systemd; docker --ulimit "
            "memlock=-1) for registered buffers and pinned RAM",
            fmt_bytes(u->memlock_cur, b1, sizeof b1));
}

static void judge_storage(doctor *d) {
    const ms_io_direct_caps *c = &d->direct;
    char b1[32];
    if (d->direct_rc < 0) {
        add(d, LV_FAIL, "o_direct", "%s", c->msg[0] ? c->msg : ms_strerror(d->direct_rc));
    } else {
        add(d, LV_OK, "o_direct", "O_DIRECT works in %s (%s, %u-byte alignment)", d->dir,
            c->fs_name, c->align_min);
        if (c->uring_tried && !c->uring_read_ok)
            add(d, LV_WARN, "o_direct", "%s", c->msg);
    }
    if (!c->fs_known) return;
    const char *fs = c->fs_name;
    if (!strcmp(fs, "tmpfs") || !strcmp(fs, "ramfs"))
        add(d, LV_WARN, "store-fs",
            "%s is on %s (RAM): the model store belongs on an ext4/xfs/btrfs NVMe filesystem",
            d->dir, fs);
    else if (!strcmp(fs, "overlayfs"))
        add(d, LV_WARN, "store-fs",
            "%s is on a container overlay: bind-mount a host NVMe directory and pass it with --dir",
            d->dir);
    else if (!strcmp(fs, "nfs") || !strcmp(fs, "cifs") || !strcmp(fs, "smb2") ||
             !strcmp(fs, "9p") || !strcmp(fs, "fuse") || !strcmp(fs, "ceph"))
        add(d, LV_WARN, "store-fs",
            "%s is on %s (network or user-space): streaming experts needs a local NVMe filesystem",
            d->dir, fs);
    if (c->bytes_free < DISK_WARN_BYTES)
        add(d, LV_WARN, "disk",
            "%s free in %s: a converted DeepSeek-V4 store needs roughly 160 GB (Flash) to 900 GB "
            "(Pro); choose a bigger drive with --dir",
            fmt_bytes(c->bytes_free, b1, sizeof b1), d->dir);
    else
        add(d, LV_OK, "disk", "%s free in %s", fmt_bytes(c->bytes_free, b1, sizeof b1), d->dir);
}

static void judge_mem(doctor *d) {
    const ms_sys_mem_info *m = &d->mem;
    char b1[32], b2[32];
    if (d->mem_rc < 0) {
        add(d, LV_WARN, "ram", "cannot read /proc/meminfo: %s: pass --ram budgets explicitly",
            ms_strerror(d->mem_rc));
        return;
    }
    if (m->mem_total < RAM_MIN_BYTES)
        add(d, LV_WARN, "ram",
            "RAM %s < 16 GiB: the pinned-RAM expert tier will be small, so more experts come "
            "from NVMe each token (slower); close other programs or add RAM",
            fmt_bytes(m->mem_total, b1, sizeof b1));
    else
        add(d, LV_OK, "ram", "%s total, %s available", fmt_bytes(m->mem_total, b1, sizeof b1),
            fmt_bytes(m->mem_available, b2, sizeof b2));
    if (m->cgroup_limit != MS_IO_UNLIMITED && m->cgroup_limit < m->mem_total)
        add(d, LV_WARN, "cgroup",
            "this container may use only %s of the %s RAM: budgets must fit the limit (raise it, "
            "e.g. docker --memory)",
            fmt_bytes(m->cgroup_limit, b1, sizeof b1), fmt_bytes(m->mem_total, b2, sizeof b2));
    if (m->n_cpus_usable < 4)
        add(d, LV_WARN, "cpus",
            "%u CPU%s usable: I/O, decompression and the host side of decoding share them "
            "(works, slower)",
            m->n_cpus_usable, m->n_cpus_usable == 1 ? "" : "s");
    else
        add(d, LV_OK, "cpus", "%u CPUs usable", m->n_cpus_usable);
}

static void judge(doctor *d) {
    judge_vulkan(d);
    judge_uring(d);
    judge_storage(d);
    judge_mem(d);
    d->exit_code = d->chosen >= 0 && d->devs[d->chosen].usable ? 0 : 1;
}

/* ---------------------------------------------------------------- text output */

#define ROW "    %-28s "

static void print_device(const doctor *d, uint32_t i) {
    const ms_vk_caps *c = &d->devs[i];
    char b1[48], b2[48], b3[48];
    printf("* device %u: %s%s\n", i, c->device_name, (int)i == d->chosen ? "   [chosen]" : "");
    printf(ROW "%s\n", "type", ms_vk_type_name(c->type));
    printf(ROW "%s (vendor 0x%04x, device 0x%04x)\n", "vendor", ms_vk_vendor_name(c->vendor_id),
           c->vendor_id, c->device_id);
    fmt_api(c->api_version, b1, sizeof b1);
    printf(ROW "%s\n", "API version", b1);
    fmt_driver_version(c->vendor_id, c->driver_version, b1, sizeof b1);
    printf(ROW "%s%s%s (version %s, driver id %u)\n", "driver", c->driver_name,
           c->driver_info[0] ? ": " : "", c->driver_info, b1, c->driver_id);
    if (c->usable)
        printf(ROW "yes\n", "usable");
    else
        printf(ROW "NO: %s\n", "usable", c->unusable_reason);
    printf(ROW "%u (min %u, max %u, size control %s)\n", "subgroup size", c->subgroup_size,
           c->subgroup_size_min, c->subgroup_size_max, yesno(c->subgroup_size_control));
    printf(ROW "%s\n", "subgroup arithmetic", yesno(c->subgroup_arithmetic));
    printf(ROW "8-bit %s, 16-bit %s\n", "storage", yesno(c->storage_8bit), yesno(c->storage_16bit));
    printf(ROW "fp16 %s, int8 %s, int64 %s\n", "arithmetic", yesno(c->float16_arith),
           yesno(c->int8_arith), yesno(c->int64_arith));
    printf(ROW "%s (4x8 accelerated: %s)\n", "integer dot product", yesno(c->int_dot_product),
           yesno(c->int_dot_4x8_accelerated));
    printf(ROW "%s\n", "cooperative matrix", yesno(c->cooperative_matrix));
    printf(ROW "%s\n", "push descriptors", yesno(c->push_descriptor));
    printf(ROW "%s\n", "timeline semaphores", yesno(c->timeline_semaphore));
    printf(ROW "%s\n", "maxStorageBufferRange",
           lim_text(c->max_storage_buffer_range, b1, sizeof b1));
    printf(ROW "%s\n", "maxMemoryAllocationSize",
           lim_text(c->max_memory_allocation_size, b1, sizeof b1));
    printf(ROW "%s\n", "maxBufferSize", lim_text(c->max_buffer_size, b1, sizeof b1));
    printf(ROW "%s\n", "shared memory", fmt_bytes(c->max_shared_memory, b1, sizeof b1));
    printf(ROW "%u invocations, groups %u x %u x %u\n", "workgroups", c->max_workgroup_invocations,
           c->max_workgroup_count[0], c->max_workgroup_count[1], c->max_workgroup_count[2]);
    printf(ROW "%u bytes\n", "push constants", c->max_push_constants);
    printf(ROW "%s\n", "minStorageBufferOffsetAlign",
           fmt_bytes(c->min_storage_offset_align, b1, sizeof b1));
    if (c->timestamp_valid_bits)
        printf(ROW "%.3g ns period, %u valid bits\n", "timestamps", c->timestamp_period_ns,
               c->timestamp_valid_bits);
    else
        printf(ROW "no\n", "timestamps");
    uint32_t nh = c->n_heaps < MS_VK_MAX_HEAPS ? c->n_heaps : MS_VK_MAX_HEAPS;
    for (uint32_t h = 0; h < nh; h++) {
        snprintf(b2, sizeof b2, "memory heap %u", h);
        printf(ROW "%s%s\n", b2, fmt_bytes(c->heaps[h].size, b1, sizeof b1),
               c->heaps[h].device_local ? " device-local" : "");
    }
    uint32_t nt = c->n_types < MS_VK_MAX_TYPES ? c->n_types : MS_VK_MAX_TYPES;
    for (uint32_t t = 0; t < nt; t++) {
        char flags[160];
        fmt_mem_flags(c->types[t].flags, flags, sizeof flags);
        snprintf(b2, sizeof b2, "memory type %u", t);
        printf(ROW "heap %u %s\n", b2, c->types[t].heap, flags);
    }
    printf(ROW "%s\n", "device-local total", fmt_bytes(c->device_local_bytes, b1, sizeof b1));
    printf(ROW "%s\n", "ReBAR", yesno(c->rebar));
    if (c->external_memory_host)
        printf(ROW "yes (alignment %s)\n", "VK_EXT_external_memory_host",
               fmt_bytes(c->min_imported_host_align, b3, sizeof b3));
    else
        printf(ROW "no\n", "VK_EXT_external_memory_host");
}

static void print_text(const doctor *d) {
    char b1[32], b2[32];
    printf("moestream %s doctor\n\n== Vulkan ==\n", MS_VERSION);
    if (d->vk_rc < 0)
        printf("    no Vulkan: %s\n", d->vk_err);
    else if (d->n_devs == 0)
        printf("    no Vulkan device found\n");
    for (uint32_t i = 0; i < d->n_devs; i++) print_device(d, i);

    const ms_io_uring_caps *u = &d->uring;
    printf("\n== io_uring ==\n");
    printf(ROW "%s\n", "kernel", u->kernel_release);
    if (u->works) {
        printf(ROW "yes\n", "io_uring_queue_init");
        printf(ROW "%s\n", "read test (IORING_OP_READ)",
               u->read_ok ? "ok, bytes verified" : "FAILED");
        printf(ROW "0x%x %s\n", "features", u->features, u->features_text);
        if (u->reg_buffers)
            printf(ROW "yes (fixed read %s)\n", "registered buffers",
                   u->read_fixed_ok ? "verified" : "FAILED");
        else
            printf(ROW "no: %s\n", "registered buffers", strerror(u->reg_buffers_errno));
        printf(ROW "%s%s%s\n", "SQPOLL", yesno(u->sqpoll), u->sqpoll ? "" : ": ",
               u->sqpoll ? "" : strerror(u->sqpoll_errno));
    } else {
        printf(ROW "no: %s\n", "io_uring_queue_init", strerror(u->init_errno));
    }
    if (u->disabled_sysctl >= 0)
        printf(ROW "%d\n", "kernel.io_uring_disabled", u->disabled_sysctl);
    if (u->memlock_cur == MS_IO_UNLIMITED)
        printf(ROW "unlimited", "RLIMIT_MEMLOCK");
    else
        printf(ROW "%s", "RLIMIT_MEMLOCK", fmt_bytes(u->memlock_cur, b1, sizeof b1));
    printf(" (hard %s)%s\n",
           u->memlock_max == MS_IO_UNLIMITED ? "unlimited"
                                             : fmt_bytes(u->memlock_max, b2, sizeof b2),
           u->cap_ipc_lock ? ", CAP_IPC_LOCK" : "");
    if (u->msg[0]) printf(ROW "%s\n", "problem", u->msg);

    const ms_io_direct_caps *c = &d->direct;
    printf("\n== O_DIRECT in %s ==\n", d->dir);
    if (c->fs_known) {
        printf(ROW "%s (magic 0x%llx)\n", "filesystem", c->fs_name,
               (unsigned long long)c->fs_magic);
        printf(ROW "%s of %s\n", "free space", fmt_bytes(c->bytes_free, b1, sizeof b1),
               fmt_bytes(c->bytes_total, b2, sizeof b2));
    }
    if (d->direct_rc == 0) {
        printf(ROW "ok, 1 MiB written and read back (%s)\n", "O_DIRECT",
               c->used_tmpfile ? "O_TMPFILE" : "mkstemp + unlink");
        if (c->align_min)
            printf(ROW "%u bytes\n", "alignment needed", c->align_min);
        else
            printf(ROW "unknown (neither 512 nor 4096 worked alone)\n", "alignment needed");
        printf(ROW "%s\n", "io_uring O_DIRECT read",
               c->uring_read_ok ? "ok, bytes verified"
               : c->uring_tried ? "FAILED"
                                : "not tried (no io_uring)");
    } else {
        printf(ROW "FAILED\n", "O_DIRECT");
    }
    if (c->msg[0]) printf(ROW "%s\n", "problem", c->msg);

    const ms_sys_mem_info *m = &d->mem;
    printf("\n== Memory and CPUs ==\n");
    if (d->mem_rc == 0) {
        printf(ROW "%s total, %s available\n", "RAM", fmt_bytes(m->mem_total, b1, sizeof b1),
               fmt_bytes(m->mem_available, b2, sizeof b2));
        printf(ROW "%s total, %s free\n", "swap", fmt_bytes(m->swap_total, b1, sizeof b1),
               fmt_bytes(m->swap_free, b2, sizeof b2));
        printf(ROW "%s\n", "huge page size",
               m->hugepage_size ? fmt_bytes(m->hugepage_size, b1, sizeof b1) : "none");
        printf(ROW "%s\n", "cgroup memory limit",
               m->cgroup_limit == MS_IO_UNLIMITED ? "none"
                                                  : fmt_bytes(m->cgroup_limit, b1, sizeof b1));
        printf(ROW "%u online, %u usable\n", "CPUs", m->n_cpus_online, m->n_cpus_usable);
    } else {
        printf("    cannot read /proc/meminfo: %s\n", ms_strerror(d->mem_rc));
    }

    printf("\n== Verdict ==\n");
    for (int i = 0; i < d->n_v; i++)
        printf("  %-4s  %-12s %s\n", level_name(d->v[i].lv), d->v[i].item, d->v[i].text);
    int n_fail = 0;
    for (int i = 0; i < d->n_v; i++) n_fail += d->v[i].lv == LV_FAIL;
    if (d->exit_code != 0)
        printf("\nmoestream cannot run here until the Vulkan FAIL line above is fixed.\n");
    else if (n_fail)
        printf("\nA usable Vulkan device exists; fix the FAIL line%s above before storing models "
               "there.\n",
               n_fail > 1 ? "s" : "");
    else
        printf("\nmoestream can run on this machine.\n");
}

/* ---------------------------------------------------------------- JSON output */

/* A limit that may be "unlimited": null then. */
static void j_limit(ms_json_writer *w, const char *key, uint64_t v) {
    if (v == MS_IO_UNLIMITED)
        ms_json_write_null(w, key);
    else
        ms_json_write_u64(w, key, v);
}

static void json_device(ms_json_writer *w, const ms_vk_caps *c, bool chosen) {
    char b[32];
    ms_json_write_begin(w, NULL, '{');
    ms_json_write_u64(w, "index", c->index);
    ms_json_write_bool(w, "chosen", chosen);
    ms_json_write_str(w, "name", c->device_name);
    ms_json_write_str(w, "type", ms_vk_type_name(c->type));
    ms_json_write_str(w, "vendor", ms_vk_vendor_name(c->vendor_id));
    ms_json_write_u64(w, "vendor_id", c->vendor_id);
    ms_json_write_u64(w, "device_id", c->device_id);
    fmt_api(c->api_version, b, sizeof b);
    ms_json_write_str(w, "api_version", b);
    ms_json_write_str(w, "driver_name", c->driver_name);
    ms_json_write_str(w, "driver_info", c->driver_info);
    fmt_driver_version(c->vendor_id, c->driver_version, b, sizeof b);
    ms_json_write_str(w, "driver_version", b);
    ms_json_write_u64(w, "driver_id", c->driver_id);
    ms_json_write_bool(w, "usable", c->usable);
    ms_json_write_str(w, "unusable_reason", c->usable ? "" : c->unusable_reason);
    ms_json_write_u64(w, "subgroup_size", c->subgroup_size);
    ms_json_write_u64(w, "subgroup_size_min", c->subgroup_size_min);
    ms_json_write_u64(w, "subgroup_size_max", c->subgroup_size_max);
    ms_json_write_bool(w, "subgroup_size_control", c->subgroup_size_control);
    ms_json_write_bool(w, "subgroup_arithmetic", c->subgroup_arithmetic);
    ms_json_write_bool(w, "storage_8bit", c->storage_8bit);
    ms_json_write_bool(w, "storage_16bit", c->storage_16bit);
    ms_json_write_bool(w, "float16_arith", c->float16_arith);
    ms_json_write_bool(w, "int8_arith", c->int8_arith);
    ms_json_write_bool(w, "int64_arith", c->int64_arith);
    ms_json_write_bool(w, "int_dot_product", c->int_dot_product);
    ms_json_write_bool(w, "int_dot_4x8_accelerated", c->int_dot_4x8_accelerated);
    ms_json_write_bool(w, "cooperative_matrix", c->cooperative_matrix);
    ms_json_write_bool(w, "push_descriptor", c->push_descriptor);
    ms_json_write_bool(w, "timeline_semaphore", c->timeline_semaphore);
    ms_json_write_bool(w, "external_memory_host", c->external_memory_host);
    ms_json_write_u64(w, "min_imported_host_align", c->min_imported_host_align);
    ms_json_write_u64(w, "max_storage_buffer_range", c->max_storage_buffer_range);
    ms_json_write_u64(w, "max_memory_allocation_size", c->max_memory_allocation_size);
    ms_json_write_u64(w, "max_buffer_size", c->max_buffer_size);
    ms_json_write_u64(w, "min_storage_offset_align", c->min_storage_offset_align);
    ms_json_write_u64(w, "max_shared_memory", c->max_shared_memory);
    ms_json_write_u64(w, "max_workgroup_invocations", c->max_workgroup_invocations);
    ms_json_write_begin(w, "max_workgroup_count", '[');
    for (int i = 0; i < 3; i++) ms_json_write_u64(w, NULL, c->max_workgroup_count[i]);
    ms_json_write_end(w, ']');
    ms_json_write_u64(w, "max_push_constants", c->max_push_constants);
    ms_json_write_f64(w, "timestamp_period_ns", (double)c->timestamp_period_ns, 9);
    ms_json_write_u64(w, "timestamp_valid_bits", c->timestamp_valid_bits);
    ms_json_write_begin(w, "heaps", '[');
    uint32_t nh = c->n_heaps < MS_VK_MAX_HEAPS ? c->n_heaps : MS_VK_MAX_HEAPS;
    for (uint32_t h = 0; h < nh; h++) {
        ms_json_write_begin(w, NULL, '{');
        ms_json_write_u64(w, "size", c->heaps[h].size);
        ms_json_write_bool(w, "device_local", c->heaps[h].device_local);
        ms_json_write_end(w, '}');
    }
    ms_json_write_end(w, ']');
    ms_json_write_begin(w, "types", '[');
    uint32_t nt = c->n_types < MS_VK_MAX_TYPES ? c->n_types : MS_VK_MAX_TYPES;
    for (uint32_t t = 0; t < nt; t++) {
        char flags[160];
        fmt_mem_flags(c->types[t].flags, flags, sizeof flags);
        ms_json_write_begin(w, NULL, '{');
        ms_json_write_u64(w, "heap", c->types[t].heap);
        ms_json_write_u64(w, "flags", c->types[t].flags);
        ms_json_write_str(w, "flags_text", flags);
        ms_json_write_end(w, '}');
    }
    ms_json_write_end(w, ']');
    ms_json_write_u64(w, "device_local_bytes", c->device_local_bytes);
    ms_json_write_bool(w, "rebar", c->rebar);
    ms_json_write_end(w, '}');
}

static void print_json(const doctor *d) {
    ms_json_writer w;
    ms_json_writer_init(&w, stdout, false);
    ms_json_write_begin(&w, NULL, '{');
    ms_json_write_str(&w, "version", MS_VERSION);

    ms_json_write_begin(&w, "vulkan", '{');
    ms_json_write_i64(&w, "status", d->vk_rc);
    ms_json_write_str(&w, "error", d->vk_rc < 0 ? d->vk_err : "");
    if (d->env_device) ms_json_write_str(&w, "moestream_device", d->env_device);
    else ms_json_write_null(&w, "moestream_device");
    if (d->chosen >= 0) ms_json_write_i64(&w, "chosen", d->chosen);
    else ms_json_write_null(&w, "chosen");
    ms_json_write_begin(&w, "devices", '[');
    for (uint32_t i = 0; i < d->n_devs; i++) json_device(&w, &d->devs[i], (int)i == d->chosen);
    ms_json_write_end(&w, ']');
    ms_json_write_end(&w, '}');

    const ms_io_uring_caps *u = &d->uring;
    ms_json_write_begin(&w, "io_uring", '{');
    ms_json_write_i64(&w, "status", d->uring_rc);
    ms_json_write_bool(&w, "works", u->works);
    ms_json_write_i64(&w, "init_errno", u->init_errno);
    ms_json_write_i64(&w, "io_uring_disabled_sysctl", u->disabled_sysctl);
    ms_json_write_str(&w, "kernel", u->kernel_release);
    ms_json_write_u64(&w, "features", u->features);
    ms_json_write_str(&w, "features_text", u->features_text);
    ms_json_write_bool(&w, "read_ok", u->read_ok);
    ms_json_write_bool(&w, "registered_buffers", u->reg_buffers);
    ms_json_write_i64(&w, "registered_buffers_errno", u->reg_buffers_errno);
    ms_json_write_bool(&w, "read_fixed_ok", u->read_fixed_ok);
    ms_json_write_bool(&w, "sqpoll", u->sqpoll);
    ms_json_write_i64(&w, "sqpoll_errno", u->sqpoll_errno);
    j_limit(&w, "memlock_cur", u->memlock_cur);
    j_limit(&w, "memlock_max", u->memlock_max);
    ms_json_write_bool(&w, "cap_ipc_lock", u->cap_ipc_lock);
    ms_json_write_str(&w, "message", u->msg);
    ms_json_write_end(&w, '}');

    const ms_io_direct_caps *c = &d->direct;
    ms_json_write_begin(&w, "o_direct", '{');
    ms_json_write_str(&w, "dir", d->dir);
    ms_json_write_i64(&w, "status", d->direct_rc);
    ms_json_write_bool(&w, "works", c->works);
    if (c->fs_known) {
        ms_json_write_str(&w, "filesystem", c->fs_name);
        ms_json_write_u64(&w, "fs_magic", c->fs_magic);
        ms_json_write_u64(&w, "bytes_free", c->bytes_free);
        ms_json_write_u64(&w, "bytes_total", c->bytes_total);
    } else {
        ms_json_write_null(&w, "filesystem");
        ms_json_write_null(&w, "fs_magic");
        ms_json_write_null(&w, "bytes_free");
        ms_json_write_null(&w, "bytes_total");
    }
    ms_json_write_bool(&w, "used_tmpfile", c->used_tmpfile);
    ms_json_write_u64(&w, "align_min", c->align_min);
    ms_json_write_bool(&w, "uring_tried", c->uring_tried);
    ms_json_write_bool(&w, "uring_read_ok", c->uring_read_ok);
    ms_json_write_i64(&w, "uring_errno", c->uring_errno);
    ms_json_write_str(&w, "message", c->msg);
    ms_json_write_end(&w, '}');

    const ms_sys_mem_info *m = &d->mem;
    ms_json_write_begin(&w, "memory", '{');
    ms_json_write_i64(&w, "status", d->mem_rc);
    ms_json_write_u64(&w, "mem_total", m->mem_total);
    ms_json_write_u64(&w, "mem_available", m->mem_available);
    ms_json_write_u64(&w, "swap_total", m->swap_total);
    ms_json_write_u64(&w, "swap_free", m->swap_free);
    ms_json_write_u64(&w, "hugepage_size", m->hugepage_size);
    j_limit(&w, "cgroup_limit", m->cgroup_limit);
    ms_json_write_u64(&w, "cpus_online", m->n_cpus_online);
    ms_json_write_u64(&w, "cpus_usable", m->n_cpus_usable);
    ms_json_write_end(&w, '}');

    ms_json_write_begin(&w, "verdict", '[');
    for (int i = 0; i < d->n_v; i++) {
        ms_json_write_begin(&w, NULL, '{');
        ms_json_write_str(&w, "item", d->v[i].item);
        ms_json_write_str(&w, "level", level_name(d->v[i].lv));
        ms_json_write_str(&w, "text", d->v[i].text);
        ms_json_write_end(&w, '}');
    }
    ms_json_write_end(&w, ']');
    ms_json_write_i64(&w, "exit_code", d->exit_code);
    ms_json_write_end(&w, '}');
    fputc('\n', stdout);
}

/* ---------------------------------------------------------------- command */

static void doctor_usage(FILE *f) {
    fprintf(f, "usage: moestream doctor [--dir PATH] [--json] [-h]\n"
               "\n"
               "Checks what this machine offers moestream and says what to fix.\n"
               "  --dir PATH  directory to test O_DIRECT and free space in: the one that will hold\n"
               "              the model store (default: the current directory)\n"
               "  --json      print the facts and the verdict as one JSON object\n"
               "  -h, --help  this help\n"
               "\n"
               "Exit status: 0 when a usable Vulkan device exists (even with warnings), 1 when\n"
               "none is usable, 2 on bad usage. MOESTREAM_DEVICE=N selects device N.\n");
}

int ms_cmd_doctor(int argc, char **argv) {
    doctor *d = ms_calloc(1, sizeof *d);
    if (!d) {
        fprintf(stderr, "moestream doctor: out of memory\n");
        return 1;
    }
    bool json = false;
    d->dir_arg = ".";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            doctor_usage(stdout);
            ms_free(d);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--dir")) {
            if (i + 1 >= argc || argv[i + 1][0] == '-') {
                /* "--dir --json" meant a missing path, not a directory named --json (that one
                 * can still be named: --dir=--json or --dir ./--json) */
                fprintf(stderr, "moestream doctor: --dir needs a path%s%s%s\n",
                        i + 1 < argc ? ", got the option '" : "", i + 1 < argc ? argv[i + 1] : "",
                        i + 1 < argc ? "' (write --dir=PATH or ./PATH for a path starting with -)"
                                     : "");
                doctor_usage(stderr);
                ms_free(d);
                return 2;
            }
            d->dir_arg = argv[++i];
        } else if (!strncmp(a, "--dir=", 6)) {
            d->dir_arg = a + 6;
        } else {
            fprintf(stderr, "moestream doctor: unknown %s '%s'\n",
                    a[0] == '-' ? "option" : "argument", a);
            doctor_usage(stderr);
            ms_free(d);
            return 2;
        }
    }
    if (!d->dir_arg[0]) {
        fprintf(stderr, "moestream doctor: --dir needs a path\n");
        ms_free(d);
        return 2;
    }

    probe_all(d);
    judge(d);
    if (json)
        print_json(d);
    else
        print_text(d);
    /* main flushes stdout and turns a write error into exit status 1 */

    int rc = d->exit_code;
    ms_free(d->devs);
    ms_free(d);
    return rc;
}
