/* engine/vk/ops_indexer.c — the lightning indexer's block selection (V4_SPEC §3.5): scores, then a
 * radix select in five stages (shaders/indexer.h has the algorithm and the scratch layout). */
#include "engine/vk/ops_internal.h"
#include "engine/vk/vk.h"

#include "common/log.h"
#include "common/status.h"
#include "shaders/indexer.h"

/* Scratch words: scores [n][n_keys], histograms [n][5120], chunk counts [n][n_chunks][2], state
 * [n][8] (shaders/indexer.h). */
static uint64_t scratch_words(uint32_t n, uint32_t n_keys, uint64_t *hist_off, uint64_t *cnt_off,
                              uint64_t *st_off) {
    uint64_t n_chunks = ((uint64_t)n_keys + MS_INDEXER_CHUNK - 1) / MS_INDEXER_CHUNK;
    uint64_t h = (uint64_t)n * n_keys, c = h + (uint64_t)n * MS_INDEXER_HIST_WORDS;
    uint64_t s = c + (uint64_t)n * n_chunks * 2;
    if (hist_off) *hist_off = h;
    if (cnt_off) *cnt_off = c;
    if (st_off) *st_off = s;
    return s + (uint64_t)n * MS_INDEXER_STATE_WORDS;
}

uint64_t ms_vk_indexer_scratch_bytes(uint32_t n, uint32_t n_keys, uint32_t topk) {
    (void)topk; /* the selection's state does not grow with k */
    return 4 * scratch_words(n, n_keys, NULL, NULL, NULL);
}

static ms_vk_range head(ms_vk_range r, uint64_t bytes) {
    r.size = bytes;
    return r;
}

int ms_vk_rec_indexer(ms_vk_cmd *c, ms_vk_range q, ms_vk_range w, ms_vk_range keys, ms_vk_range pos,
                      ms_vk_range scratch, ms_vk_range sel, uint32_t n, uint32_t n_heads,
                      uint32_t head_dim, uint32_t ratio, uint32_t topk, uint32_t n_keys, float w_scale) {
    if (!c) return -MS_E_INVALID_ARG;
    const ms_vk_caps *caps = ms_vk_get_caps(ms_vk_cmd_vk(c));
    uint64_t hist_off, cnt_off, st_off, words = scratch_words(n, n_keys, &hist_off, &cnt_off, &st_off);
    uint64_t q_bytes = 4ull * n * n_heads * head_dim, w_bytes = 4ull * n * n_heads;
    uint64_t k_bytes = 4ull * n_keys * head_dim, s_bytes = 4 * words, o_bytes = 4ull * n * topk;
    /* every index the shaders form stays below 2^32 (elements), and pos0 + t + 1 below 2^31 past
     * a multiple of ratio */
    if (!n || !n_heads || !head_dim || !ratio || !topk || !n_keys || (uint64_t)ratio + n >= (1ull << 31) ||
        q_bytes / 4 > 0xFFFFFFFFull || k_bytes / 4 > 0xFFFFFFFFull || words > 0xFFFFFFFFull ||
        o_bytes / 4 > 0xFFFFFFFFull || !ms_vk_op_range_ok(q, q_bytes) || !ms_vk_op_range_ok(w, w_bytes) ||
        !ms_vk_op_range_ok(keys, k_bytes) || !ms_vk_op_range_ok(pos, 4) ||
        !ms_vk_op_range_ok(scratch, s_bytes) || !ms_vk_op_range_ok(sel, o_bytes)) {
        MS_LOGE("rec_indexer: %u queries x %u heads x %u, %u keys, ratio %u, top %u: a size is zero or "
                "too large, or a range too small (scratch needs %llu bytes)",
                n, n_heads, head_dim, n_keys, ratio, topk, (unsigned long long)s_bytes);
        return -MS_E_INVALID_ARG;
    }
    uint64_t limit = caps->max_storage_buffer_range;
    if (q_bytes > limit || k_bytes > limit || s_bytes > limit || o_bytes > limit) {
        MS_LOGE("rec_indexer: a binding exceeds the device's %llu-byte limit (q %llu, keys %llu, "
                "scratch %llu = %u queries x %u keys; sel %llu): split the queries",
                (unsigned long long)limit, (unsigned long long)q_bytes, (unsigned long long)k_bytes,
                (unsigned long long)s_bytes, n, n_keys, (unsigned long long)o_bytes);
        return -MS_E_UNSUPPORTED;
    }
    ms_indexer_push pc = {.n = n, .n_heads = n_heads, .head_dim = head_dim, .ratio = ratio, .topk = topk,
                          .n_keys = n_keys, .hist_off = (uint32_t)hist_off, .cnt_off = (uint32_t)cnt_off,
                          .st_off = (uint32_t)st_off, .w_scale = w_scale};
    scratch = head(scratch, s_bytes);

    ms_vk_range b[5];
    b[MS_INDEXER_BIND_Q] = head(q, q_bytes);
    b[MS_INDEXER_BIND_W] = head(w, w_bytes);
    b[MS_INDEXER_BIND_KEYS] = head(keys, k_bytes);
    b[MS_INDEXER_BIND_POS] = head(pos, 4);
    b[MS_INDEXER_BIND_SCRATCH] = scratch;
    pc.n_groups_q = (n_keys + MS_INDEXER_TILE - 1) / MS_INDEXER_TILE;
    int rc = ms_vk_op_dispatch(c, "indexer_score", NULL, 0, b, 5, &pc, sizeof pc, &pc.groups_x,
                               (uint64_t)n * pc.n_groups_q);

    ms_vk_range bs[3];
    bs[MS_INDEXER_SEL_BIND_POS] = head(pos, 4);
    bs[MS_INDEXER_SEL_BIND_SCRATCH] = scratch;
    bs[MS_INDEXER_SEL_BIND_SEL] = head(sel, o_bytes);
    pc.n_groups_q = (n_keys + MS_INDEXER_CHUNK - 1) / MS_INDEXER_CHUNK;
    for (uint32_t stage = 0; stage < 5 && !rc; stage++) {
        ms_vk_cmd_barrier(c);
        uint32_t spec[MS_INDEXER_N_SPEC] = {stage};
        rc = ms_vk_op_dispatch(c, "indexer_select", spec, MS_INDEXER_N_SPEC, bs, 3, &pc, sizeof pc,
                               &pc.groups_x, (uint64_t)n * pc.n_groups_q);
    }
    return rc;
}
