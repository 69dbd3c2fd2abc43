/* common/fault.c — registry of input-file mappings and the SIGBUS handler (see fault.h). */
#include "common/fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/status.h"

typedef struct fault_map {
    _Atomic(uintptr_t) base; /* 0 = free slot; published last */
    size_t len;
    const char *path;
    int fd;
    uint64_t size;
} fault_map;

static fault_map g_maps[MS_FAULT_MAX_MAPS];
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

int ms_fault_register(const void *addr, size_t len, const char *path, int fd, uint64_t size) {
    if (!addr || !len) return 0;
    int rc = -MS_E_RANGE;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < MS_FAULT_MAX_MAPS; i++) {
        fault_map *m = &g_maps[i];
        if (atomic_load_explicit(&m->base, memory_order_relaxed)) continue;
        m->len = len;
        m->path = path;
        m->fd = fd;
        m->size = size;
        atomic_store_explicit(&m->base, (uintptr_t)addr, memory_order_release);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void ms_fault_unregister(const void *addr) {
    if (!addr) return;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < MS_FAULT_MAX_MAPS; i++)
        if (atomic_load_explicit(&g_maps[i].base, memory_order_relaxed) == (uintptr_t)addr) {
            atomic_store_explicit(&g_maps[i].base, 0, memory_order_release);
            break;
        }
    pthread_mutex_unlock(&g_mu);
}

/* ---- the handler: write(2), fstat(2) and _exit(2) only ---- */

static void put(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void put_u64(uint64_t v) {
    char b[24];
    size_t i = sizeof b - 1;
    b[i] = '\0';
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i);
    put(b + i);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    int saved = errno;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (size_t i = 0; i < MS_FAULT_MAX_MAPS; i++) {
        fault_map *m = &g_maps[i];
        uintptr_t b = atomic_load_explicit(&m->base, memory_order_acquire);
        if (!b || a < b || a - b >= m->len) continue;
        struct stat sb;
        bool have_size = fstat(m->fd, &sb) == 0;
        put("moestream: ");
        put(m->path);
        put(" changed while in use: ");
        if (have_size) {
            put("it is now ");
            put_u64((uint64_t)sb.st_size);
            put(" bytes, it was ");
        } else {
            put("it was ");
        }
        put_u64(m->size);
        put(" when opened, and the data at offset ");
        put_u64((uint64_t)(a - b));
        put(" is gone (truncated or rewritten by another program?). Restore the file (copy or "
            "download it again) and run again; do not modify model files while moestream uses "
            "them.\n");
        _exit(1);
    }
    /* not ours: the default action, as if no handler were installed */
    errno = saved;
    signal(sig, SIG_DFL);
    raise(sig);
}

int ms_fault_install_sigbus(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, NULL) == 0 ? 0 : -errno;
}
