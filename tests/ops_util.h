/* tests/ops_util.h — what test_ops and its op families (tests/ops_*.c) share: the seeded random
 * source, random weights, the NaN-aware NMSE comparison, guarded output buffers, and the family
 * registry.
 *
 * An op family is a case table with a runner of its own, in a file of its own (tests/ops_<op>.c),
 * registered by one line in tests/ops_families.c; test_ops runs its built-in table, then every
 * family's cases, each reproducible alone from the seed (-s) and selectable by op name (-o).
 */
#ifndef MS_TESTS_OPS_UTIL_H
#define MS_TESTS_OPS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model/weights.h"
#include "engine/vk/vk.h"

#define GUARD_WORD 0x5eedf00du

/* splitmix64 over g_rng; test_ops seeds g_rng before each case. */
extern uint64_t g_rng;
uint64_t rng_next(void);
float rng_uniform(void); /* uniform in [-1, 1) */
void fill_bytes(uint8_t *p, size_t n);
uint16_t f32_to_bf16(float f); /* round to nearest even; finite inputs */

/* Random weights in an encoding (ms_malloc'd; scales within a few binades of 1, no NaN codes). */
int make_weight(ms_wenc enc, uint32_t m, uint32_t k, void **data, uint8_t **scale);

typedef struct cmp_result {
    double nmse;
    uint64_t n_nonfinite_mismatch;
    uint64_t first_bad;
    uint64_t n_nan, n_inf;
} cmp_result;

/* Compares n_cols columns of m values at stride `stride`: NaN must meet NaN, Inf the same Inf. */
void compare(const float *gpu, const float *ref, uint32_t m, uint32_t n_cols, uint32_t stride,
             cmp_result *r);

/* nrec random experts in L's encoding packed one record at a time into pool[nrec *
 * L->record_bytes]; nan_w: NaN in record 0's w1 (FP4: a 0xFF scale byte, 32 weights of row 3) or w3
 * (FP8: an e4m3 NaN code in row 2) and in record 1's (record 0's when there is one) w2 row 5 / 7. */
int make_expert_pool(const ms_vk_expert_layout *L, uint32_t nrec, bool nan_w, uint8_t *pool);

/* A GPU output buffer with guard words before and after the bound range. Everything not written
 * by the op (guards, stride padding) must still hold GUARD_WORD afterwards. */
typedef struct guarded {
    ms_vk_buf buf;
    uint64_t guard_bytes, bytes;
} guarded;

int guarded_alloc(ms_vk *vk, uint64_t bytes, guarded *g);
ms_vk_range guarded_range(const guarded *g);
/* Reads the output back into out[bytes/4]; *n_damaged = damaged guard words. */
int guarded_read(ms_vk *vk, const guarded *g, float *out, uint64_t *n_damaged);
/* A new device buffer holding src[bytes]. */
int upload_new(ms_vk *vk, const void *src, uint64_t bytes, ms_vk_buf *out);

/* One op family: n_cases cases, each described in one line (--list) and run alone. */
typedef struct ops_family {
    const char *op; /* the name -o selects */
    uint32_t n_cases;
    void (*describe)(uint32_t i, char *buf, size_t len);
    /* 0 pass, 1 fail; prints one line per case (only failures when !verbose) and, on failure,
     * "repeat with: test_ops -o OP -s SEED" */
    int (*run)(ms_vk *vk, ms_vk_cmd *cmd, uint32_t i, uint64_t seed, int verbose);
} ops_family;

/* tests/ops_families.c: every registered family, NULL-terminated. */
extern const ops_family *const ops_families[];

extern const ops_family ops_fam_compress;
extern const ops_family ops_fam_indexer;
extern const ops_family ops_fam_attention;
extern const ops_family ops_fam_kv_store;
extern const ops_family ops_fam_moe;
extern const ops_family ops_fam_hc_mix;
extern const ops_family ops_fam_gemv_grouped;
extern const ops_family ops_fam_gemm;
/* tests/ops_gemm.c: the GEMM tune candidates (each run by the gemm family, swept by --perf). */
extern const ms_vk_gemm_tune ops_gemm_tunes[];
extern const uint32_t ops_gemm_n_tunes;
/* test_ops --exhaustive: families may run more variants per case (tests/ops_util.c, default 0). */
extern int ops_exhaustive;
extern const ops_family ops_fam_moe_grouped;

#endif
