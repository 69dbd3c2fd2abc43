/* engine/vk/ops_attention.c — recorders of the sparse attention with a per-head sink and of the
 * KV ring store (shaders/attention.h; CPU references ms_ref_attention, ms_ref_kv_store).
 *
 * The attention's shape of work is planned here from the device limits: heads per workgroup (HT),
 * entries per tile (ET) and the q chunk (QC) so that the shared tile fits maxComputeSharedMemory,
 * and the number of splits of each query's entry list so that one decoded token still fills a
 * large GPU. The plan depends only on the sizes and the device, never on positions (those are on
 * the device), so ms_vk_attention_scratch_bytes can size the scratch ahead of recording. */
#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "engine/vk/ops_internal.h"
#include "shaders/attention.h"

/* Splits: enough workgroups for a decode step to cover a large GPU (132 SMs on an H200, several
 * workgroups each), but at least MIN_SPLIT_TILES tiles per split so the split records and their
 * reduce stay small next to the work (not yet measured on a GPU: tools/bench/attention.c is the
 * sweep to run). CPU devices run workgroups as loops: no splits. */
#define TARGET_GROUPS 512u
#define MIN_SPLIT_TILES 2u
#define DEFAULT_HT 16u

typedef struct attn_plan {
    uint32_t wg, ht, et, qc, ks, hs, cpt, hpt, n_groups, n_split;
} attn_plan;

static uint32_t ceil_div(uint64_t a, uint64_t b) { return (uint32_t)((a + b - 1) / b); }

static uint64_t shared_bytes(uint32_t d, uint32_t ht, uint32_t et, uint32_t qc, uint32_t ks) {
    uint64_t v4 = (uint64_t)et * (d / 4 + 1) + (uint64_t)ht * (qc / 4 + 1) + (uint64_t)et * ((ht + 3) / 4);
    uint64_t f = (uint64_t)ks * ht * et + (uint64_t)ht * et + 4ull * ht + et;
    return 16 * v4 + 4 * f;
}

/* The plan for these sizes (0) or -MS_E_UNSUPPORTED with a logged reason. */
static int plan_attention(const ms_vk_caps *caps, uint32_t n, uint32_t n_heads, uint32_t head_dim,
                          uint32_t window, uint32_t ratio, uint32_t topk, uint32_t n_rows,
                          const ms_vk_attention_tune *tune, attn_plan *pl) {
    static const ms_vk_attention_tune none = {0};
    if (!tune) tune = &none;
    memset(pl, 0, sizeof *pl);
    const uint32_t wg = ms_vk_op_wg(caps), nc = head_dim / 4;
    pl->wg = wg;
    if (nc >= wg && nc % wg == 0) {
        pl->hs = 1;
        pl->cpt = nc / wg;
    } else if (nc < wg && wg % nc == 0) {
        pl->hs = wg / nc;
        pl->cpt = 1;
    } else {
        MS_LOGE("rec_attention: head_dim %u: head_dim/4 must divide or be a multiple of the workgroup (%u)",
                head_dim, wg);
        return -MS_E_UNSUPPORTED;
    }
    /* HT: a power of two (so that the score pass's micro-tiles divide the workgroup), at least 2
     * and the value pass's head slices, and no more than the heads need. */
    uint32_t ht = tune->heads_per_wg ? tune->heads_per_wg : DEFAULT_HT;
    if (!tune->heads_per_wg && ht > n_heads) ht = n_heads;
    uint32_t p2 = pl->hs > 2 ? pl->hs : 2;
    while (p2 < ht) p2 *= 2;
    ht = p2;
    pl->ht = ht;
    pl->hpt = ht / pl->hs;
    if (pl->cpt * pl->hpt > 64) {
        MS_LOGE("rec_attention: %u heads x head_dim %u per workgroup of %u: too many accumulators", ht,
                head_dim, wg);
        return -MS_E_UNSUPPORTED;
    }
    /* ET, then QC: the largest tile, then the largest q chunk, that fit the shared memory. */
    static const uint32_t ets[] = {16, 8, 4, 2};
    for (uint32_t a = 0; a < 4 && !pl->et; a++) {
        const uint32_t et = ets[a];
        if (tune->entries_per_tile && et != tune->entries_per_tile) continue;
        const uint32_t pairs = ht / 2 * (et / 2);
        if (pairs > wg || wg % pairs) continue;
        const uint32_t ks = wg / pairs;
        for (uint32_t qc = head_dim; qc >= 4; qc /= 2) {
            if (tune->q_chunk && qc != tune->q_chunk) continue;
            if (qc % 4 || head_dim % qc || (qc / 4) % ks) continue;
            if (shared_bytes(head_dim, ht, et, qc, ks) > caps->max_shared_memory) continue;
            pl->et = et;
            pl->qc = qc;
            pl->ks = ks;
            break;
        }
    }
    if (!pl->et) {
        MS_LOGE("rec_attention: no tile of %u heads x head_dim %u fits %u B of shared memory with a "
                "workgroup of %u", ht, head_dim, caps->max_shared_memory, wg);
        return -MS_E_UNSUPPORTED;
    }
    pl->n_groups = ceil_div(n_heads, ht);
    /* Splits from the longest list a query can have; the shader divides the actual one. */
    const uint64_t lmax = (uint64_t)window + (ratio == 4 ? topk : ratio ? n_rows : 0);
    uint32_t ns = tune->n_split;
    if (!ns) {
        ns = 1;
        if (caps->type != VK_PHYSICAL_DEVICE_TYPE_CPU) {
            const uint64_t by_gpu = ceil_div(TARGET_GROUPS, (uint64_t)n * pl->n_groups);
            const uint64_t by_len = lmax / ((uint64_t)pl->et * MIN_SPLIT_TILES);
            ns = (uint32_t)(by_gpu < by_len ? by_gpu : by_len);
            if (ns < 1) ns = 1;
        }
    }
    pl->n_split = ns;
    return 0;
}

static uint64_t scratch_need(const attn_plan *pl, uint32_t n, uint32_t n_heads, uint32_t head_dim) {
    if (pl->n_split <= 1) return 0;
    return 4ull * n * pl->n_split * n_heads * (head_dim + MS_ATTN_REC_PAD);
}

uint64_t ms_vk_attention_scratch_bytes(const ms_vk *vk, uint32_t n, uint32_t n_heads, uint32_t head_dim,
                                       uint32_t window, uint32_t ratio, uint32_t topk, uint32_t n_rows,
                                       const ms_vk_attention_tune *tune) {
    attn_plan pl;
    if (!vk || !n || !n_heads || !head_dim || head_dim % 4) return 0;
    if (plan_attention(ms_vk_get_caps(vk), n, n_heads, head_dim, window, ratio, topk, n_rows, tune, &pl))
        return 0;
    return scratch_need(&pl, n, n_heads, head_dim);
}

static bool aligned16(ms_vk_range r) { return r.offset % 16 == 0; }

int ms_vk_rec_attention_tuned(ms_vk_cmd *c, ms_vk_range q, ms_vk_range ring, ms_vk_range rows, ms_vk_range sel,
                              ms_vk_range sink, ms_vk_range pos, ms_vk_range o, ms_vk_range scratch,
                              uint32_t n, uint32_t n_heads, uint32_t head_dim, uint32_t window,
                              uint32_t ring_len, uint32_t ratio, uint32_t topk, uint32_t n_rows, float scale,
                              const ms_vk_attention_tune *tune) {
    if (!c) return -MS_E_INVALID_ARG;
    const ms_vk_caps *caps = ms_vk_get_caps(ms_vk_cmd_vk(c));
    const uint64_t qn = (uint64_t)n * n_heads * head_dim;
    if (!n || !n_heads || !head_dim || head_dim % 4 || !window || !ring_len || qn > 0xFFFFFFFFull ||
        (uint64_t)ring_len * head_dim > 0xFFFFFFFFull || (uint64_t)n_rows * head_dim > 0xFFFFFFFFull ||
        (uint64_t)n * topk > 0xFFFFFFFFull) {
        MS_LOGE("rec_attention: n %u, %u heads x %u, window %u, ring %u, %u rows, topk %u: need all >= 1 "
                "(rows, topk >= 0), head_dim a multiple of 4, 32-bit element indices",
                n, n_heads, head_dim, window, ring_len, n_rows, topk);
        return -MS_E_INVALID_ARG;
    }
    const bool use_rows = ratio != 0 && n_rows != 0, use_sel = ratio == 4 && topk != 0;
    if (!ms_vk_op_range_ok(q, 4 * qn) || !ms_vk_op_range_ok(o, 4 * qn) ||
        !ms_vk_op_range_ok(ring, 4ull * ring_len * head_dim) ||
        !ms_vk_op_range_ok(rows, use_rows ? 4ull * n_rows * head_dim : 0) ||
        !ms_vk_op_range_ok(sel, use_sel ? 4ull * n * topk : 0) || !ms_vk_op_range_ok(sink, 4ull * n_heads) ||
        !ms_vk_op_range_ok(pos, 4) || !aligned16(q) || !aligned16(o) || !aligned16(ring) || (use_rows && !aligned16(rows))) {
        MS_LOGE("rec_attention: n %u, %u heads x %u, ring %u, %u rows, topk %u: a range is unbound, too "
                "small, or (q, o, ring, rows) not 16-byte aligned", n, n_heads, head_dim, ring_len, n_rows, topk);
        return -MS_E_INVALID_ARG;
    }
    attn_plan pl;
    int rc = plan_attention(caps, n, n_heads, head_dim, window, ratio, topk, n_rows, tune, &pl);
    if (rc) return rc;
    const uint64_t need = scratch_need(&pl, n, n_heads, head_dim);
    if (need && (!ms_vk_op_range_ok(scratch, need) || !aligned16(scratch) || need / 4 > 0xFFFFFFFFull)) {
        MS_LOGE("rec_attention: %u splits need %llu B of 16-byte aligned scratch (%llu bound)", pl.n_split,
                (unsigned long long)need, (unsigned long long)scratch.size);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t split = pl.n_split > 1;
    const uint32_t spec[MS_ATTN_N_SPEC] = {pl.wg, pl.ht, pl.et, head_dim, pl.qc, pl.ks, pl.hs, pl.cpt, pl.hpt, split};
    ms_vk_range b[MS_ATTN_N_BIND];
    b[MS_ATTN_BIND_Q] = q;
    b[MS_ATTN_BIND_RING] = ring;
    b[MS_ATTN_BIND_ROWS] = use_rows ? rows : ring; /* never read: any bound range */
    b[MS_ATTN_BIND_SEL] = use_sel ? sel : pos;
    b[MS_ATTN_BIND_SINK] = sink;
    b[MS_ATTN_BIND_POS] = pos;
    b[MS_ATTN_BIND_OUT] = split ? scratch : o;
    ms_attention_push pc = {.n = n, .n_heads = n_heads, .window = window, .ring_len = ring_len, .ratio = ratio,
                            .topk = topk, .n_rows = n_rows, .n_split = pl.n_split, .n_groups = pl.n_groups,
                            .scale = scale};
    rc = ms_vk_op_dispatch(c, "attention", spec, MS_ATTN_N_SPEC, b, MS_ATTN_N_BIND, &pc, sizeof pc, &pc.groups_x,
                           (uint64_t)n * pl.n_groups * pl.n_split);
    if (rc || !split) return rc;

    ms_vk_cmd_barrier(c);
    const uint32_t wg = ms_vk_op_wg(caps), rspec[MS_ATTN_RED_N_SPEC] = {wg, head_dim};
    ms_vk_range rb[MS_ATTN_RED_N_BIND];
    rb[MS_ATTN_RED_BIND_SCRATCH] = scratch;
    rb[MS_ATTN_RED_BIND_SINK] = sink;
    rb[MS_ATTN_RED_BIND_O] = o;
    ms_attention_reduce_push rp = {.n = n, .n_heads = n_heads, .n_split = pl.n_split};
    return ms_vk_op_dispatch(c, "attention_reduce", rspec, MS_ATTN_RED_N_SPEC, rb, MS_ATTN_RED_N_BIND, &rp,
                             sizeof rp, &rp.groups_x, ceil_div(qn / 4, wg));
}

int ms_vk_rec_attention(ms_vk_cmd *c, ms_vk_range q, ms_vk_range ring, ms_vk_range rows, ms_vk_range sel,
                        ms_vk_range sink, ms_vk_range pos, ms_vk_range o, ms_vk_range scratch, uint32_t n,
                        uint32_t n_heads, uint32_t head_dim, uint32_t window, uint32_t ring_len, uint32_t ratio,
                        uint32_t topk, uint32_t n_rows, float scale) {
    return ms_vk_rec_attention_tuned(c, q, ring, rows, sel, sink, pos, o, scratch, n, n_heads, head_dim, window,
                                     ring_len, ratio, topk, n_rows, scale, NULL);
}

int ms_vk_rec_kv_store(ms_vk_cmd *c, ms_vk_range src, ms_vk_range ring, ms_vk_range pos, uint32_t n,
                       uint32_t head_dim, uint32_t ring_len) {
    if (!c) return -MS_E_INVALID_ARG;
    const ms_vk_caps *caps = ms_vk_get_caps(ms_vk_cmd_vk(c));
    const uint64_t ns = (uint64_t)n * head_dim, nr = (uint64_t)ring_len * head_dim;
    if (!n || !head_dim || !ring_len || n > ring_len || ns > 0xFFFFFFFFull || nr > 0xFFFFFFFFull ||
        !ms_vk_op_range_ok(src, 4 * ns) || !ms_vk_op_range_ok(ring, 4 * nr) || !ms_vk_op_range_ok(pos, 4)) {
        MS_LOGE("rec_kv_store: %u rows of %u into a ring of %u: need 1 <= n <= ring_len, 32-bit indices "
                "and ranges that hold them", n, head_dim, ring_len);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t wg = ms_vk_op_wg(caps), spec[MS_KVS_N_SPEC] = {wg};
    ms_vk_range b[MS_KVS_N_BIND];
    b[MS_KVS_BIND_SRC] = src;
    b[MS_KVS_BIND_RING] = ring;
    b[MS_KVS_BIND_POS] = pos;
    ms_kv_store_push pc = {.n = n, .head_dim = head_dim, .ring_len = ring_len};
    return ms_vk_op_dispatch(c, "kv_store", spec, MS_KVS_N_SPEC, b, MS_KVS_N_BIND, &pc, sizeof pc, &pc.groups_x,
                             ceil_div(ns, wg));
}
