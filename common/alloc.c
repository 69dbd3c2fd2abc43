#include "common/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"

static _Atomic uint64_t g_n_total;
static _Atomic uint64_t g_n_live;
static _Atomic uint64_t g_bytes_live;

#ifdef MS_DEBUG
/* Debug layout: [hdr (32 B: size, magic)] [user bytes] [8-byte canary]. */
#define MS_HDR_MAGIC 0x6d73616c6c6f6321ull
#define MS_HDR_FREED 0x6d73667265656421ull
#define MS_CANARY 0xa5c3e1f00f1e3c5aull
typedef struct hdr {
    uint64_t size;
    uint64_t magic;
    uint64_t pad[2];
} hdr;

static void *dbg_wrap(void *raw, size_t n) {
    if (!raw) return NULL;
    hdr *h = raw;
    h->size = n;
    h->magic = MS_HDR_MAGIC;
    uint64_t c = MS_CANARY;
    memcpy((char *)(h + 1) + n, &c, sizeof c);
    atomic_fetch_add(&g_bytes_live, n);
    return h + 1;
}

static hdr *dbg_check(void *p) {
    hdr *h = (hdr *)p - 1;
    if (h->magic == MS_HDR_FREED) ms_assert_fail("double free", __FILE__, __LINE__);
    if (h->magic != MS_HDR_MAGIC) ms_assert_fail("free of a pointer not from ms_malloc", __FILE__, __LINE__);
    uint64_t c;
    memcpy(&c, (char *)p + h->size, sizeof c);
    if (c != MS_CANARY) ms_assert_fail("heap overrun past the end of a block", __FILE__, __LINE__);
    return h;
}
#endif

void *ms_malloc(size_t n) {
#ifdef MS_DEBUG
    if (n > SIZE_MAX - sizeof(hdr) - 8) return NULL;
    void *p = dbg_wrap(malloc(sizeof(hdr) + n + 8), n);
#else
    void *p = malloc(n ? n : 1);
#endif
    if (p) {
        atomic_fetch_add(&g_n_total, 1);
        atomic_fetch_add(&g_n_live, 1);
    }
    return p;
}

void *ms_calloc(size_t count, size_t n) {
    if (n && count > SIZE_MAX / n) return NULL;
    void *p = ms_malloc(count * n);
    if (p) memset(p, 0, count * n);
    return p;
}

void *ms_realloc(void *p, size_t n) {
    if (!p) return ms_malloc(n);
#ifdef MS_DEBUG
    hdr *h = dbg_check(p);
    void *q = ms_malloc(n);
    if (!q) return NULL;
    memcpy(q, p, h->size < n ? h->size : n);
    ms_free(p);
    return q;
#else
    void *q = realloc(p, n ? n : 1);
    if (q) atomic_fetch_add(&g_n_total, 1);
    return q;
#endif
}

void ms_free(void *p) {
    if (!p) return;
    atomic_fetch_sub(&g_n_live, 1);
#ifdef MS_DEBUG
    hdr *h = dbg_check(p);
    atomic_fetch_sub(&g_bytes_live, h->size);
    h->magic = MS_HDR_FREED;
    free(h);
#else
    free(p);
#endif
}

char *ms_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = ms_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void ms_alloc_get_stats(ms_alloc_stats *out) {
    out->n_allocs_total = atomic_load(&g_n_total);
    out->n_live = atomic_load(&g_n_live);
    out->bytes_live = atomic_load(&g_bytes_live);
}

void ms_alloc_guard_begin(ms_alloc_guard *g) { g->n_allocs_at_begin = atomic_load(&g_n_total); }

uint64_t ms_alloc_guard_end(const ms_alloc_guard *g) {
    return atomic_load(&g_n_total) - g->n_allocs_at_begin;
}
