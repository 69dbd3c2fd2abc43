/* libFuzzer harness: any byte string as config.json (ms_v4_config_parse). An accepted config must
 * satisfy the invariants the loader promises; its expected-tensor list is then enumerated when it
 * is small enough to be quick. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"
#include "engine/model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_fn(const ms_v4_tensor_spec *t, void *user) {
    MS_ASSERT(t->name[0] != '\0' && t->n_dims >= 1 && t->n_dims <= 2);
    (*(uint64_t *)user)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ms_v4_config c;
    char err[1024];
    int rc = ms_v4_config_parse((const char *)data, size, &c, err, sizeof err);
    if (rc) {
        MS_ASSERT(err[0] != '\0' && strlen(err) < sizeof err);
        return 0;
    }
    MS_ASSERT(c.n_kv_heads == 1 && c.head_dim > c.rope_dim && c.rope_dim % 2 == 0);
    MS_ASSERT(c.n_layers <= MS_V4_MAX_LAYERS && c.n_compress_ratios >= c.n_layers);
    MS_ASSERT(c.n_heads % c.o_groups == 0 && c.n_active_experts <= c.n_routed_experts);
    MS_ASSERT(c.n_hash_layers <= c.n_layers && c.hc_mult >= 1);
    for (uint32_t i = 0; i < c.n_compress_ratios; i++)
        MS_ASSERT(c.compress_ratios[i] == 0 || c.compress_ratios[i] == 4 ||
                  c.compress_ratios[i] == 128);
    if ((uint64_t)c.n_routed_experts * (c.n_layers + c.n_mtp_layers) < 4096) {
        uint64_t n = 0;
        MS_ASSERT(ms_v4_for_each_tensor(&c, true, count_fn, &n) == 0 && n > 0);
    }
    return 0;
}
