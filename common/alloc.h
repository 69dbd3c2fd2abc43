/* common/alloc.h — project allocation wrappers and the allocation guard.
 *
 * All project code allocates host memory through ms_malloc/ms_calloc/ms_realloc/ms_free (strdup:
 * ms_strdup). The wrappers count live allocations and bytes with atomics (thread-safe, cheap).
 * In debug builds (MS_DEBUG) every block also carries a header and a trailing canary checked at
 * free, so overruns and double frees abort with a message.
 *
 * The guard proves a region allocates nothing: ms_alloc_guard_begin() snapshots the allocation
 * counter; ms_alloc_guard_end() returns how many allocations happened since (any thread). Decode
 * paths must return 0 after warm-up.
 */
#ifndef MS_COMMON_ALLOC_H
#define MS_COMMON_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *ms_malloc(size_t n);
void *ms_calloc(size_t count, size_t n);
void *ms_realloc(void *p, size_t n);
void ms_free(void *p);
char *ms_strdup(const char *s);

typedef struct ms_alloc_stats {
    uint64_t n_allocs_total; /* ms_malloc/calloc/realloc calls that returned memory */
    uint64_t n_live;         /* blocks not yet freed */
    uint64_t bytes_live;     /* debug builds only; 0 otherwise */
} ms_alloc_stats;

void ms_alloc_get_stats(ms_alloc_stats *out);

typedef struct ms_alloc_guard {
    uint64_t n_allocs_at_begin;
} ms_alloc_guard;

void ms_alloc_guard_begin(ms_alloc_guard *g);
uint64_t ms_alloc_guard_end(const ms_alloc_guard *g); /* allocations since begin */

#endif
