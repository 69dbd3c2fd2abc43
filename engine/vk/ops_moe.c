/* engine/vk/ops_moe.c — the expert FFN over a pool of expert records (shaders/moe.h): the record
 * layout, packing an expert into it (host side), and the recorders of moe_up_<enc> (gate/up GEMVs +
 * SwiGLU) and moe_down_<enc> (down GEMVs summed over the active experts).
 *
 * Uses only the public Vulkan-core API of engine/vk/vk.h and engine/vk/ops_internal.h. Recorders
 * validate every size against the bound ranges and return -MS_E_INVALID_ARG (with a logged reason)
 * rather than record an out-of-bounds dispatch.
 */
#include "engine/vk/vk.h"
#include "engine/vk/ops_internal.h"

#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "shaders/moe.h"

#define VENDOR_NVIDIA 0x10DEu
#define U32_MAX_BYTES 0xFFFFFFFFull /* the shader indexes pool bytes with 32-bit integers */

static bool moe_enc(ms_wenc enc) { return enc == MS_WENC_FP4 || enc == MS_WENC_FP8; }
static uint32_t k_multiple(ms_wenc enc) { return enc == MS_WENC_FP4 ? 32 : 16; } /* one 16-byte chunk */
static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }
static uint64_t align_part(uint64_t v) { return (v + MS_MOE_PART_ALIGN - 1) / MS_MOE_PART_ALIGN * MS_MOE_PART_ALIGN; }

/* ---------------------------------------------------------------- record layout */

int ms_vk_expert_layout_make(ms_wenc enc, uint32_t dim, uint32_t inter, ms_vk_expert_layout *out) {
    if (!out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (!moe_enc(enc)) {
        MS_LOGE("expert layout: encoding %d: expert pools hold fp4 or fp8 weights", (int)enc);
        return -MS_E_UNSUPPORTED;
    }
    const uint32_t mul = k_multiple(enc);
    if (!dim || !inter || dim % mul || inter % mul) {
        MS_LOGE("expert layout: %s expert dim %u, inter %u: both must be positive multiples of %u (whole "
                "16-byte chunks%s per row)",
                ms_wenc_name(enc), dim, inter, mul, enc == MS_WENC_FP4 ? " and 32-element scale blocks" : "");
        return -MS_E_UNSUPPORTED;
    }
    uint64_t off = 0;
    out->w1_data = off;
    off = align_part(off + ms_wenc_data_bytes(enc, inter, dim));
    out->w1_scale = off;
    off = align_part(off + ms_wenc_scale_bytes(enc, inter, dim));
    out->w3_data = off;
    off = align_part(off + ms_wenc_data_bytes(enc, inter, dim));
    out->w3_scale = off;
    off = align_part(off + ms_wenc_scale_bytes(enc, inter, dim));
    out->w2_data = off;
    off = align_part(off + ms_wenc_data_bytes(enc, dim, inter));
    out->w2_scale = off;
    off = align_part(off + ms_wenc_scale_bytes(enc, dim, inter));
    if (off > U32_MAX_BYTES) {
        MS_LOGE("expert layout: %s expert dim %u, inter %u takes %llu bytes; records must stay under 4 GiB",
                ms_wenc_name(enc), dim, inter, (unsigned long long)off);
        memset(out, 0, sizeof *out);
        return -MS_E_UNSUPPORTED;
    }
    out->enc = enc;
    out->dim = dim;
    out->inter = inter;
    out->record_bytes = off;
    return 0;
}

/* The layout is one the shaders can run: shape rules, 256-byte parts inside the record. */
static bool layout_ok(const ms_vk_expert_layout *L) {
    if (!L || !moe_enc(L->enc) || !L->dim || !L->inter || L->dim % k_multiple(L->enc) ||
        L->inter % k_multiple(L->enc) || !L->record_bytes || L->record_bytes % MS_MOE_PART_ALIGN ||
        L->record_bytes > U32_MAX_BYTES)
        return false;
    const uint64_t off[6] = {L->w1_data, L->w1_scale, L->w3_data, L->w3_scale, L->w2_data, L->w2_scale};
    const uint64_t len[6] = {ms_wenc_data_bytes(L->enc, L->inter, L->dim), ms_wenc_scale_bytes(L->enc, L->inter, L->dim),
                             ms_wenc_data_bytes(L->enc, L->inter, L->dim), ms_wenc_scale_bytes(L->enc, L->inter, L->dim),
                             ms_wenc_data_bytes(L->enc, L->dim, L->inter), ms_wenc_scale_bytes(L->enc, L->dim, L->inter)};
    for (int i = 0; i < 6; i++)
        if (off[i] % MS_MOE_PART_ALIGN || off[i] > L->record_bytes || len[i] > L->record_bytes - off[i]) return false;
    return true;
}

static int pack_one(const ms_vk_expert_layout *L, const char *name, const ms_weight_view *w, uint32_t m,
                    uint32_t k, uint64_t data_off, uint64_t scale_off, uint8_t *rec) {
    if (!w || w->enc != L->enc || w->m != m || w->k != k || !w->data || !w->scale) {
        MS_LOGE("expert pack: %s must be a %s [%u x %u] view with data and scales (got %s%s [%u x %u]%s)", name,
                ms_wenc_name(L->enc), m, k, w ? "" : "none", w ? ms_wenc_name(w->enc) : "", w ? w->m : 0,
                w ? w->k : 0, w && (!w->data || !w->scale) ? ", missing an array" : "");
        return -MS_E_INVALID_ARG;
    }
    memcpy(rec + data_off, w->data, ms_wenc_data_bytes(L->enc, m, k));
    memcpy(rec + scale_off, w->scale, ms_wenc_scale_bytes(L->enc, m, k));
    return 0;
}

int ms_vk_expert_pack(const ms_vk_expert_layout *L, const ms_weight_view *w1, const ms_weight_view *w3,
                      const ms_weight_view *w2, void *rec) {
    if (!layout_ok(L) || !rec) {
        MS_LOGE("expert pack: %s", rec ? "the layout is not one ms_vk_expert_layout_make accepts" : "no record");
        return -MS_E_INVALID_ARG;
    }
    uint8_t *r = rec;
    memset(r, 0, L->record_bytes);
    int rc = pack_one(L, "w1", w1, L->inter, L->dim, L->w1_data, L->w1_scale, r);
    if (!rc) rc = pack_one(L, "w3", w3, L->inter, L->dim, L->w3_data, L->w3_scale, r);
    if (!rc) rc = pack_one(L, "w2", w2, L->dim, L->inter, L->w2_data, L->w2_scale, r);
    return rc;
}

/* ---------------------------------------------------------------- recorders */

typedef struct moe_tune {
    uint32_t wg, rows, unroll, sg; /* rows: per subgroup */
} moe_tune;

/* Per-device shapes. lavapipe: a workgroup is a loop on one thread; small groups (8 subgroups of 8)
 * spread across cores, as for gemv_tiled. NVIDIA (H200 sweep, V4-Flash n = 1, k = 6 from a 64-record
 * pool, medians of 7; each stage also pays ~5.2 us of barrier and launch, measured with every slot
 * missing): up 4 warps x 2 rows (w1 + w3: 4 rows in flight) 29-30 us, 1 row or unroll 2 within
 * noise, unroll 4 34-40 us (registers); down 2 rows a warp, 2 chunks a lane in flight 21.4-21.8 us,
 * 4 rows 28 us, 8 rows 33 us. Walking 2-3 experts at once in down (more loads in flight) did not
 * help (21-29 us) and was dropped. Down for decode with 8 warps a group instead of 4 (the same
 * rows a warp; test_ops --perf, docs/bench-ledger.md 2026-12-02): V4-Pro one at a time 49.1 ->
 * 44.1 us (48.9 -> 45.6 in another run), back to back +13%; V4-Flash 19.7 -> 20.1 us and 20.7 ->
 * 20.3 (noise), back to back +11% (FP4; the FP8 shared expert keeps 4, not measured); up with 8
 * warps: unchanged, so it keeps 4. */
static void moe_tune_default(const ms_vk_caps *caps, ms_wenc enc, bool down, uint32_t n, moe_tune *t) {
    t->sg = caps->subgroup_size ? caps->subgroup_size : 1;
    t->unroll = 1;
    if (caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        t->wg = 64;
        t->rows = 2;
    } else if (caps->vendor_id == VENDOR_NVIDIA) {
        t->wg = enc == MS_WENC_FP4 && down && n <= 4 ? 256 : 128; /* FP8 (shared expert): not measured */
        /* prefill down prefers 4 rows a warp, one chunk a lane (Flash n 16: 182 vs 218 us; n 128:
         * 1344 vs 1664 us; the n > 4 switch point itself is not measured) */
        t->rows = down && n > 4 ? 4 : 2;
        t->unroll = down && n <= 4 ? 2 : 1;
    } else {
        t->wg = 256;
        t->rows = 2;
    }
    if (t->wg < t->sg) t->wg = t->sg;
}

/* Checks shared by both stages; fills the push fields that describe the pool and the layout. */
static int moe_check_pool(const char *op, const ms_vk_caps *caps, const ms_vk_expert_layout *L, ms_vk_range pool,
                          ms_vk_range slots, uint32_t n_experts, ms_vk_range idx, uint32_t n, uint32_t k,
                          ms_moe_push *pc) {
    if (!layout_ok(L)) {
        MS_LOGE("%s: the expert layout is not one ms_vk_expert_layout_make accepts", op);
        return -MS_E_INVALID_ARG;
    }
    const char *en = ms_wenc_name(L->enc);
    if (!n || !k || !n_experts || !ms_vk_op_range_ok(slots, 4ull * n_experts) || !ms_vk_op_range_ok(idx, 4ull * n * k)) {
        MS_LOGE("%s: %s, %u tokens, top %u, %u experts: sizes must be >= 1, slots hold n_experts and idx n*k "
                "words (ranges %llu, %llu bytes)",
                op, en, n, k, n_experts, (unsigned long long)slots.size, (unsigned long long)idx.size);
        return -MS_E_INVALID_ARG;
    }
    if (!pool.buffer || pool.size < L->record_bytes || pool.offset % 16) {
        MS_LOGE("%s: %s pool range of %llu bytes at offset %llu: needs at least one %llu-byte record and a "
                "16-byte-aligned offset",
                op, en, (unsigned long long)pool.size, (unsigned long long)pool.offset,
                (unsigned long long)L->record_bytes);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t max_range = caps->max_storage_buffer_range < U32_MAX_BYTES ? caps->max_storage_buffer_range
                                                                             : U32_MAX_BYTES;
    if (pool.size > max_range) {
        MS_LOGE("%s: %s pool range of %llu bytes (%llu records of %llu) exceeds the %llu-byte binding limit "
                "(maxStorageBufferRange, at most 4 GiB): split the pool",
                op, en, (unsigned long long)pool.size, (unsigned long long)(pool.size / L->record_bytes),
                (unsigned long long)L->record_bytes, (unsigned long long)max_range);
        return -MS_E_INVALID_ARG;
    }
    pc->n = n;
    pc->k = k;
    pc->dim = L->dim;
    pc->inter = L->inter;
    pc->n_experts = n_experts;
    pc->n_records = (uint32_t)(pool.size / L->record_bytes);
    pc->rec16 = (uint32_t)(L->record_bytes / 16);
    pc->w1_data16 = (uint32_t)(L->w1_data / 16);
    pc->w1_scale = (uint32_t)L->w1_scale;
    pc->w3_data16 = (uint32_t)(L->w3_data / 16);
    pc->w3_scale = (uint32_t)L->w3_scale;
    pc->w2_data16 = (uint32_t)(L->w2_data / 16);
    pc->w2_scale = (uint32_t)L->w2_scale;
    return 0;
}

/* Pipeline (subgroup size pinned where the device varies it) and one dispatch over
 * pc->blocks * per workgroups. in_offset: the byte offset of the input range (vec4 loads). */
static int moe_dispatch(ms_vk_cmd *c, const char *op, ms_wenc enc, bool down, const ms_vk_range *b,
                        ms_moe_push *pc, uint32_t rows_total, uint64_t per, uint64_t in_offset,
                        const ms_vk_moe_tune *tune) {
    static const char *const k_variant[2][2] = {{"moe_up_fp8", "moe_up_fp4"}, {"moe_down_fp8", "moe_down_fp4"}};
    const char *variant = k_variant[down][enc == MS_WENC_FP4];
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    moe_tune t;
    moe_tune_default(caps, enc, down, pc->n, &t);
    if (tune && tune->wg_size) t.wg = tune->wg_size;
    if (tune && tune->rows_per_sg) t.rows = tune->rows_per_sg;
    if (tune && tune->unroll) t.unroll = tune->unroll;
    const uint32_t v4 = enc == MS_WENC_FP4 ? 8 : 4; /* vec4s of the input per 16-byte chunk */
    const uint64_t shm = (uint64_t)v4 * (t.sg * t.unroll + 1) * 16;
    if (!is_pow2(t.sg) || !is_pow2(t.wg) || t.wg % t.sg || t.wg > caps->max_workgroup_invocations ||
        !is_pow2(t.rows) || t.rows > 64 || t.unroll < 1 || t.unroll > 8 || shm > caps->max_shared_memory) {
        MS_LOGE("%s: no workgroup shape for this device (wg %u, subgroup %u, rows %u, unroll %u, %llu bytes "
                "of shared memory; the device allows %u invocations and %u bytes)",
                op, t.wg, t.sg, t.rows, t.unroll, (unsigned long long)shm, caps->max_workgroup_invocations,
                caps->max_shared_memory);
        return tune ? -MS_E_INVALID_ARG : -MS_E_UNSUPPORTED;
    }
    const uint32_t rb = t.rows * (t.wg / t.sg);
    pc->blocks = (rows_total + rb - 1) / rb;
    const uint64_t groups = per * pc->blocks;
    uint32_t gx, gy;
    if (groups > 0x7FFFFFFFull || ms_vk_op_grid_2d(caps, groups, &gx, &gy) != 0) {
        MS_LOGE("%s: %llu workgroups exceed the device grid", op, (unsigned long long)groups);
        return -MS_E_UNSUPPORTED;
    }
    uint32_t spec[MS_MOE_N_SPEC];
    spec[MS_MOE_SPEC_WG] = t.wg;
    spec[MS_MOE_SPEC_ROWS] = t.rows;
    spec[MS_MOE_SPEC_UNROLL] = t.unroll;
    spec[MS_MOE_SPEC_SG] = t.sg;
    spec[MS_MOE_SPEC_X_VEC4] = in_offset % 16 == 0;
    const uint32_t req_sg =
        caps->subgroup_size_control && caps->subgroup_size_min != caps->subgroup_size_max ? t.sg : 0;
    ms_vk_pipeline *pipe;
    int rc = ms_vk_pipeline_get(vk, variant, spec, MS_MOE_N_SPEC, req_sg, &pipe);
    if (rc) {
        MS_LOGE("%s: no pipeline %s (wg %u, rows %u, subgroup %u): %s", op, variant, t.wg, t.rows, t.sg,
                ms_strerror(rc));
        return rc;
    }
    return ms_vk_cmd_dispatch(c, pipe, b, MS_MOE_N_BIND, pc, sizeof *pc, gx, gy, 1);
}

int ms_vk_rec_moe_up(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                     uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x, ms_vk_range act,
                     uint32_t n, uint32_t k, float limit) {
    return ms_vk_rec_moe_up_tuned(c, L, pool, slots, n_experts, idx, rw, x, act, n, k, limit, NULL);
}

int ms_vk_rec_moe_up_tuned(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                           uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x,
                           ms_vk_range act, uint32_t n, uint32_t k, float limit, const ms_vk_moe_tune *tune) {
    if (!c) return -MS_E_INVALID_ARG;
    const ms_vk_caps *caps = ms_vk_get_caps(ms_vk_cmd_vk(c));
    ms_moe_push pc;
    memset(&pc, 0, sizeof pc);
    int rc = moe_check_pool("rec_moe_up", caps, L, pool, slots, n_experts, idx, n, k, &pc);
    if (rc) return rc;
    const uint64_t n_act = (uint64_t)n * k * L->inter;
    if (n_act > 0xFFFFFFFFull || (uint64_t)n * L->dim > 0xFFFFFFFFull || !(limit >= 0) ||
        !ms_vk_op_range_ok(rw, 4ull * n * k) || !ms_vk_op_range_ok(x, 4ull * n * L->dim) ||
        !ms_vk_op_range_ok(act, 4 * n_act) || ms_vk_op_overlap(act, x) || ms_vk_op_overlap(act, pool)) {
        MS_LOGE("rec_moe_up: %s dim %u, inter %u, %u tokens, top %u, limit %g: rw needs %llu, x %llu, act %llu "
                "bytes (ranges %llu, %llu, %llu; act overlapping no input), limit >= 0",
                ms_wenc_name(L->enc), L->dim, L->inter, n, k, (double)limit, 4ull * n * k, 4ull * n * L->dim,
                (unsigned long long)(4 * n_act), (unsigned long long)rw.size, (unsigned long long)x.size,
                (unsigned long long)act.size);
        return -MS_E_INVALID_ARG;
    }
    pc.limit = limit;
    ms_vk_range b[MS_MOE_N_BIND];
    b[MS_MOE_BIND_POOL] = pool;
    b[MS_MOE_BIND_SLOTS] = slots;
    b[MS_MOE_BIND_IDX] = idx;
    b[MS_MOE_BIND_IN] = x;
    b[MS_MOE_BIND_AUX] = rw;
    b[MS_MOE_BIND_OUT] = act;
    return moe_dispatch(c, "rec_moe_up", L->enc, false, b, &pc,
                        L->inter, (uint64_t)n * k, x.offset, tune);
}

int ms_vk_rec_moe_down(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                       uint32_t n_experts, ms_vk_range idx, ms_vk_range act, ms_vk_range base,
                       ms_vk_range y, uint32_t n, uint32_t k) {
    return ms_vk_rec_moe_down_tuned(c, L, pool, slots, n_experts, idx, act, base, y, n, k, NULL);
}

int ms_vk_rec_moe_down_tuned(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool,
                             ms_vk_range slots, uint32_t n_experts, ms_vk_range idx, ms_vk_range act,
                             ms_vk_range base, ms_vk_range y, uint32_t n, uint32_t k,
                             const ms_vk_moe_tune *tune) {
    if (!c) return -MS_E_INVALID_ARG;
    const ms_vk_caps *caps = ms_vk_get_caps(ms_vk_cmd_vk(c));
    ms_moe_push pc;
    memset(&pc, 0, sizeof pc);
    int rc = moe_check_pool("rec_moe_down", caps, L, pool, slots, n_experts, idx, n, k, &pc);
    if (rc) return rc;
    const uint64_t n_act = (uint64_t)n * k * L->inter, n_y = (uint64_t)n * L->dim;
    const bool same = base.buffer == y.buffer && base.offset == y.offset;
    if (n_act > 0xFFFFFFFFull || n_y > 0xFFFFFFFFull || !ms_vk_op_range_ok(act, 4 * n_act) ||
        !ms_vk_op_range_ok(base, 4 * n_y) || !ms_vk_op_range_ok(y, 4 * n_y) || (!same && ms_vk_op_overlap(base, y)) ||
        ms_vk_op_overlap(y, act) || ms_vk_op_overlap(y, pool)) {
        MS_LOGE("rec_moe_down: %s dim %u, inter %u, %u tokens, top %u: act needs %llu, base and y %llu bytes "
                "(ranges %llu, %llu, %llu); y must be base's range or apart from it, and overlap no input",
                ms_wenc_name(L->enc), L->dim, L->inter, n, k, (unsigned long long)(4 * n_act),
                (unsigned long long)(4 * n_y), (unsigned long long)act.size, (unsigned long long)base.size,
                (unsigned long long)y.size);
        return -MS_E_INVALID_ARG;
    }
    ms_vk_range b[MS_MOE_N_BIND];
    b[MS_MOE_BIND_POOL] = pool;
    b[MS_MOE_BIND_SLOTS] = slots;
    b[MS_MOE_BIND_IDX] = idx;
    b[MS_MOE_BIND_IN] = act;
    b[MS_MOE_BIND_AUX] = base;
    b[MS_MOE_BIND_OUT] = y;
    return moe_dispatch(c, "rec_moe_down", L->enc, true, b,
                        &pc, L->dim, n, act.offset, tune);
}

/* The layout rule above, for the grouped recorders (engine/vk/ops_moe_grouped.c). */
bool ms_vk_expert_layout_ok(const ms_vk_expert_layout *L) { return layout_ok(L); }
