/* tests/ops_families.c — the op families test_ops runs after its built-in table (one line each). */
#include "tests/ops_util.h"

const ops_family *const ops_families[] = {
    &ops_fam_compress,
    &ops_fam_indexer,
    &ops_fam_attention,
    &ops_fam_kv_store,
    &ops_fam_moe,
    &ops_fam_hc_mix,
    &ops_fam_gemm,
    &ops_fam_moe_grouped,
    &ops_fam_gemv_grouped,
    NULL,
};
