/* engine/vk/ops_moe_grouped.c — the expert FFN grouped by expert, for prefill (shaders/moe_grouped.h):
 * the scratch layout and the recorder of moe_group, moe_up_grouped_<enc>, moe_down_grouped_<enc> and
 * moe_sum. The pool, records and slot table are those of engine/vk/ops_moe.c.
 *
 * Uses only the public Vulkan-core API of engine/vk/vk.h and engine/vk/ops_internal.h. The recorder
 * validates every size against the bound ranges and returns -MS_E_INVALID_ARG (with a logged reason)
 * rather than record an out-of-bounds dispatch.
 */
#include "engine/vk/vk.h"
#include "engine/vk/ops_internal.h"

#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "shaders/moe_grouped.h"

#define VENDOR_NVIDIA 0x10DEu
#define U32_MAX 0xFFFFFFFFull

static uint64_t align_part(uint64_t v) {
    return (v + MS_MOE_G_PART_ALIGN - 1) / MS_MOE_G_PART_ALIGN * MS_MOE_G_PART_ALIGN;
}
static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

/* ---------------------------------------------------------------- scratch */

void ms_vk_moe_grouped_scratch_layout(uint32_t n, uint32_t k, uint32_t n_experts, uint32_t dim, uint32_t inter,
                                      ms_vk_moe_grouped_scratch *out) {
    const uint64_t pairs = (uint64_t)n * k;
    uint64_t off = 0;
    out->act = off;
    off = align_part(off + 4 * pairs * inter);
    out->out = off;
    off = align_part(off + 4 * pairs * dim);
    out->offsets = off;
    off = align_part(off + 4 * ((uint64_t)n_experts + 1));
    out->experts = off;
    off = align_part(off + 4 * ((uint64_t)n_experts + 1));
    out->list = off;
    off = align_part(off + 4 * pairs);
    out->pos = off;
    off = align_part(off + 4 * pairs);
    out->bytes = off;
}

uint64_t ms_vk_moe_grouped_scratch_bytes(uint32_t n, uint32_t k, uint32_t n_experts, uint32_t dim, uint32_t inter) {
    ms_vk_moe_grouped_scratch s;
    ms_vk_moe_grouped_scratch_layout(n, k, n_experts, dim, inter, &s);
    return s.bytes;
}

/* ---------------------------------------------------------------- tuning */

typedef struct stage_tune {
    uint32_t wg, rows, unroll, sg, tok;
} stage_tune;

/* Shared memory of one up/down workgroup: the TOK staged K-tiles and the tile's pair table. */
static uint64_t stage_shm(ms_wenc enc, const stage_tune *t) {
    const uint64_t v4 = enc == MS_WENC_FP4 ? 8 : 4; /* vec4s of the input per 16-byte chunk */
    return (uint64_t)t->tok * v4 * (t->sg * t->unroll + 1) * 16 + 8ull * t->tok;
}

/* Per-device shapes. A work item of RB rows and TOK pairs reads RB weight rows from memory and TOK
 * input vectors from the cache (staged in shared memory) per K element, so RB and TOK both raise
 * the work per byte; TOK * NM * ROWS sums and as many partials stay in registers. lavapipe (2
 * cores, the V4-Flash n 32 case of tests/ops_moe_grouped.c, 10 experts, device time of the four
 * dispatches, two runs each, 8 pairs a tile unless said): rows 4 for up and down 1.7-1.9 s, 4 pairs
 * a tile 1.8-1.9 s, rows 2 4.4-6.1 s (half the rows per staged input tile), 1 row 6.4-9.3 s.
 * NVIDIA and others: not measured yet (8 warps; up 2 rows, w1 and w3: 4 weight rows x 8 pairs;
 * down 4 rows x 8 pairs). */
static void stage_tune_default(const ms_vk_caps *caps, bool down, stage_tune *t) {
    t->sg = caps->subgroup_size ? caps->subgroup_size : 1;
    t->unroll = 1;
    t->tok = 8;
    if (caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        t->wg = 64;
        t->rows = 4;
    } else if (caps->vendor_id == VENDOR_NVIDIA) {
        t->wg = 256;
        t->rows = down ? 4 : 2;
    } else {
        t->wg = 256;
        t->rows = 2;
    }
    if (t->wg < t->sg) t->wg = t->sg;
}

/* ---------------------------------------------------------------- recorder */

static ms_vk_range sub(ms_vk_range r, uint64_t off, uint64_t bytes) {
    ms_vk_range s = {r.buffer, r.offset + off, bytes};
    return s;
}

/* Workgroups of an up/down grid at most: enough to fill a device many times over; the items past
 * them are walked by the same workgroups (shaders/moe_grouped.h). lavapipe (2 cores, device time of
 * the V4-Flash / V4-Pro n 32 cases of tests/ops_moe_grouped.c, 10 of 256 / 8 of 384 experts used,
 * three runs each): 256 workgroups walking the items 1.8-1.9 s / 4.6-5.3 s, one workgroup per
 * (expert, block) exiting at once without pairs 2.8-3.6 s / 9.3-10.5 s. The GPU cap is not measured. */
static uint64_t grid_cap(const ms_vk_caps *caps) { return caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 256 : 8192; }

/* One up or down stage, resolved before anything is recorded (a refused shape records nothing). */
typedef struct stage {
    ms_vk_pipeline *pipe;
    uint32_t blocks, gx, gy;
} stage;

static int stage_prepare(ms_vk *vk, ms_wenc enc, bool down, uint32_t rows_total, uint64_t max_experts,
                         const ms_vk_moe_grouped_tune *tune, uint64_t in_offset, stage *st) {
    static const char *const k_variant[2][2] = {{"moe_up_grouped_fp8", "moe_up_grouped_fp4"},
                                                {"moe_down_grouped_fp8", "moe_down_grouped_fp4"}};
    const char *variant = k_variant[down][enc == MS_WENC_FP4];
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    stage_tune t;
    stage_tune_default(caps, down, &t);
    if (tune) {
        if (tune->wg) t.wg = tune->wg;
        if (!down && tune->rows_up) t.rows = tune->rows_up;
        if (down && tune->rows_down) t.rows = tune->rows_down;
        if (tune->unroll) t.unroll = tune->unroll;
        if (tune->tok) t.tok = tune->tok;
    }
    while (t.tok > 1 && stage_shm(enc, &t) > caps->max_shared_memory) t.tok /= 2;
    const uint64_t shm = stage_shm(enc, &t);
    if (!is_pow2(t.sg) || !is_pow2(t.wg) || t.wg % t.sg || t.wg > caps->max_workgroup_invocations ||
        !is_pow2(t.rows) || t.rows > 64 || t.unroll < 1 || t.unroll > 8 || t.tok < 1 || t.tok > 32 ||
        shm > caps->max_shared_memory) {
        MS_LOGE("rec_moe_grouped: %s: no workgroup shape for this device (wg %u, subgroup %u, rows %u, unroll %u, "
                "%u pairs a tile, %llu bytes of shared memory; the device allows %u invocations and %u bytes)",
                variant, t.wg, t.sg, t.rows, t.unroll, t.tok, (unsigned long long)shm,
                caps->max_workgroup_invocations, caps->max_shared_memory);
        return -MS_E_UNSUPPORTED;
    }
    const uint32_t rb = t.rows * (t.wg / t.sg);
    st->blocks = (rows_total + rb - 1) / rb;
    const uint64_t items = max_experts * st->blocks; /* at most this many (expert, block) items */
    const uint64_t groups = items < grid_cap(caps) ? items : grid_cap(caps);
    if (items > 0x7FFFFFFFull || ms_vk_op_grid_2d(caps, groups, &st->gx, &st->gy) != 0) {
        MS_LOGE("rec_moe_grouped: %s: %llu work items exceed 2^31 or %llu workgroups the device grid", variant,
                (unsigned long long)items, (unsigned long long)groups);
        return -MS_E_UNSUPPORTED;
    }
    uint32_t spec[MS_MOE_G_N_SPEC];
    spec[MS_MOE_G_SPEC_WG] = t.wg;
    spec[MS_MOE_G_SPEC_ROWS] = t.rows;
    spec[MS_MOE_G_SPEC_UNROLL] = t.unroll;
    spec[MS_MOE_G_SPEC_SG] = t.sg;
    spec[MS_MOE_G_SPEC_X_VEC4] = in_offset % 16 == 0;
    spec[MS_MOE_G_SPEC_TOK] = t.tok;
    const uint32_t req_sg =
        caps->subgroup_size_control && caps->subgroup_size_min != caps->subgroup_size_max ? t.sg : 0;
    int rc = ms_vk_pipeline_get(vk, variant, spec, MS_MOE_G_N_SPEC, req_sg, &st->pipe);
    if (rc)
        MS_LOGE("rec_moe_grouped: no pipeline %s (wg %u, rows %u, subgroup %u, %u pairs a tile): %s", variant, t.wg,
                t.rows, t.sg, t.tok, ms_strerror(rc));
    return rc;
}

static int stage_dispatch(ms_vk_cmd *c, const stage *st, bool down, const ms_vk_range *b, ms_moe_grouped_push *pc) {
    pc->blocks = st->blocks;
    pc->groups_x = st->gx;
    return ms_vk_cmd_dispatch(c, st->pipe, b, down ? MS_MOE_G_N_BIND_DOWN : MS_MOE_G_N_BIND_UP, pc, sizeof *pc,
                              st->gx, st->gy, 1);
}

int ms_vk_rec_moe_grouped_tuned(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                                uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x,
                                ms_vk_range base, ms_vk_range y, ms_vk_range scratch, uint32_t n, uint32_t k,
                                float limit, const ms_vk_moe_grouped_tune *tune) {
    if (!c) return -MS_E_INVALID_ARG;
    const ms_vk_caps *caps = ms_vk_get_caps(ms_vk_cmd_vk(c));
    if (!ms_vk_expert_layout_ok(L)) {
        MS_LOGE("rec_moe_grouped: the expert layout is not one ms_vk_expert_layout_make accepts");
        return -MS_E_INVALID_ARG;
    }
    const char *en = ms_wenc_name(L->enc);
    const uint32_t dim = L->dim, inter = L->inter;
    const uint64_t pairs = (uint64_t)n * k, n_act = pairs * inter, n_out = pairs * dim, n_y = (uint64_t)n * dim;
    if (!n || !k || !n_experts || n_act > U32_MAX || n_out > U32_MAX || !(limit >= 0)) {
        MS_LOGE("rec_moe_grouped: %s dim %u, inter %u, %u tokens, top %u, %u experts, limit %g: sizes must be >= 1, "
                "n*k*dim and n*k*inter below 2^32, limit >= 0",
                en, dim, inter, n, k, n_experts, (double)limit);
        return -MS_E_INVALID_ARG;
    }
    if (n_experts > MS_MOE_GROUP_MAX_EXPERTS) {
        MS_LOGE("rec_moe_grouped: %u experts: the grouping holds at most %u", n_experts, MS_MOE_GROUP_MAX_EXPERTS);
        return -MS_E_UNSUPPORTED;
    }
    ms_vk_moe_grouped_scratch S;
    ms_vk_moe_grouped_scratch_layout(n, k, n_experts, dim, inter, &S);
    if (!ms_vk_op_range_ok(slots, 4ull * n_experts) || !ms_vk_op_range_ok(idx, 4 * pairs) ||
        !ms_vk_op_range_ok(rw, 4 * pairs) || !ms_vk_op_range_ok(x, 4 * n_y) || !ms_vk_op_range_ok(base, 4 * n_y) ||
        !ms_vk_op_range_ok(y, 4 * n_y) || !ms_vk_op_range_ok(scratch, S.bytes)) {
        MS_LOGE("rec_moe_grouped: %s dim %u, inter %u, %u tokens, top %u, %u experts: slots need %llu, idx and rw "
                "%llu, x, base and y %llu, scratch %llu bytes (ranges %llu, %llu, %llu, %llu, %llu, %llu, %llu)",
                en, dim, inter, n, k, n_experts, 4ull * n_experts, (unsigned long long)(4 * pairs),
                (unsigned long long)(4 * n_y), (unsigned long long)S.bytes, (unsigned long long)slots.size,
                (unsigned long long)idx.size, (unsigned long long)rw.size, (unsigned long long)x.size,
                (unsigned long long)base.size, (unsigned long long)y.size, (unsigned long long)scratch.size);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t max_range = caps->max_storage_buffer_range < U32_MAX ? caps->max_storage_buffer_range : U32_MAX;
    if (!pool.buffer || pool.size < L->record_bytes || pool.offset % 16 || pool.size > max_range) {
        MS_LOGE("rec_moe_grouped: %s pool range of %llu bytes at offset %llu: needs at least one %llu-byte record, "
                "a 16-byte-aligned offset and at most %llu bytes (maxStorageBufferRange, at most 4 GiB): split "
                "the pool",
                en, (unsigned long long)pool.size, (unsigned long long)pool.offset,
                (unsigned long long)L->record_bytes, (unsigned long long)max_range);
        return -MS_E_INVALID_ARG;
    }
    /* overlaps are judged on the bytes the dispatches bind */
    const uint64_t align = caps->min_storage_offset_align ? caps->min_storage_offset_align : 1;
    const ms_vk_range scr = sub(scratch, 0, S.bytes), slots_r = sub(slots, 0, 4ull * n_experts);
    const ms_vk_range idx_r = sub(idx, 0, 4 * pairs), rw_r = sub(rw, 0, 4 * pairs), x_r = sub(x, 0, 4 * n_y);
    const ms_vk_range base_r = sub(base, 0, 4 * n_y), y_r = sub(y, 0, 4 * n_y);
    const bool same = base.buffer == y.buffer && base.offset == y.offset;
    const ms_vk_range in[6] = {pool, slots_r, idx_r, rw_r, x_r, base_r};
    bool clash = scratch.offset % align || (!same && ms_vk_op_overlap(base_r, y_r)) || ms_vk_op_overlap(scr, y_r);
    for (int i = 0; i < 6; i++) clash |= ms_vk_op_overlap(scr, in[i]) || (i < 5 && ms_vk_op_overlap(y_r, in[i]));
    if (clash) {
        MS_LOGE("rec_moe_grouped: scratch must start at a multiple of %llu bytes (offset %llu) and overlap no other "
                "range; y must be base's range or apart from it, and overlap no other input",
                (unsigned long long)align, (unsigned long long)scratch.offset);
        return -MS_E_INVALID_ARG;
    }
    if (4 * n_act > caps->max_storage_buffer_range || 4 * n_out > caps->max_storage_buffer_range ||
        4 * n_y > caps->max_storage_buffer_range) {
        MS_LOGE("rec_moe_grouped: %u tokens x top %u: act (%llu bytes), out (%llu) or x / y (%llu) exceed the "
                "device's %llu-byte binding limit: split the tokens",
                n, k, (unsigned long long)(4 * n_act), (unsigned long long)(4 * n_out),
                (unsigned long long)(4 * n_y), (unsigned long long)caps->max_storage_buffer_range);
        return -MS_E_UNSUPPORTED;
    }

    ms_moe_grouped_push pc;
    memset(&pc, 0, sizeof pc);
    pc.n = n;
    pc.k = k;
    pc.dim = dim;
    pc.inter = inter;
    pc.n_experts = n_experts;
    pc.n_records = (uint32_t)(pool.size / L->record_bytes);
    pc.rec16 = (uint32_t)(L->record_bytes / 16);
    pc.w1_data16 = (uint32_t)(L->w1_data / 16);
    pc.w1_scale = (uint32_t)L->w1_scale;
    pc.w3_data16 = (uint32_t)(L->w3_data / 16);
    pc.w3_scale = (uint32_t)L->w3_scale;
    pc.w2_data16 = (uint32_t)(L->w2_data / 16);
    pc.w2_scale = (uint32_t)L->w2_scale;
    pc.limit = limit;

    const ms_vk_range act = sub(scratch, S.act, 4 * n_act), out = sub(scratch, S.out, 4 * n_out);
    const ms_vk_range offsets = sub(scratch, S.offsets, 4ull * (n_experts + 1));
    const ms_vk_range experts = sub(scratch, S.experts, 4ull * (n_experts + 1));
    const ms_vk_range list = sub(scratch, S.list, 4 * pairs), pos = sub(scratch, S.pos, 4 * pairs);

    /* every pipeline first: a refusal records nothing */
    ms_vk *vk = ms_vk_cmd_vk(c);
    const uint64_t max_experts = n_experts < pairs ? n_experts : pairs; /* experts that can have pairs */
    stage up, down;
    int rc = stage_prepare(vk, L->enc, false, inter, max_experts, tune, x.offset, &up);
    if (!rc) rc = stage_prepare(vk, L->enc, true, dim, max_experts, tune, act.offset, &down);
    uint32_t wg = ms_vk_op_wg(caps);
    ms_vk_pipeline *pg = NULL, *ps = NULL;
    if (!rc) rc = ms_vk_pipeline_get(vk, "moe_group", &wg, 1, 0, &pg);
    if (!rc) rc = ms_vk_pipeline_get(vk, "moe_sum", &wg, 1, 0, &ps);
    uint32_t sx, sy;
    if (!rc && ms_vk_op_grid_2d(caps, (n_y + wg - 1) / wg, &sx, &sy) != 0) {
        MS_LOGE("rec_moe_grouped: moe_sum: %llu elements exceed the device grid", (unsigned long long)n_y);
        rc = -MS_E_UNSUPPORTED;
    }
    if (rc) return rc;

    /* group */
    ms_vk_range bg[MS_MOE_GROUP_N_BIND];
    bg[MS_MOE_GROUP_BIND_IDX] = idx_r;
    bg[MS_MOE_GROUP_BIND_SLOTS] = slots_r;
    bg[MS_MOE_GROUP_BIND_OFFSETS] = offsets;
    bg[MS_MOE_GROUP_BIND_EXPERTS] = experts;
    bg[MS_MOE_GROUP_BIND_LIST] = list;
    bg[MS_MOE_GROUP_BIND_POS] = pos;
    rc = ms_vk_cmd_dispatch(c, pg, bg, MS_MOE_GROUP_N_BIND, &pc, sizeof pc, 1, 1, 1);
    if (rc) return rc;
    ms_vk_cmd_barrier(c);

    /* up */
    ms_vk_range bu[MS_MOE_G_N_BIND_UP];
    bu[MS_MOE_G_BIND_POOL] = pool;
    bu[MS_MOE_G_BIND_SLOTS] = slots_r;
    bu[MS_MOE_G_BIND_OFFSETS] = offsets;
    bu[MS_MOE_G_BIND_EXPERTS] = experts;
    bu[MS_MOE_G_BIND_LIST] = list;
    bu[MS_MOE_G_BIND_IN] = x_r;
    bu[MS_MOE_G_BIND_OUT] = act;
    bu[MS_MOE_G_BIND_RW] = rw_r;
    rc = stage_dispatch(c, &up, false, bu, &pc);
    if (rc) return rc;
    ms_vk_cmd_barrier(c);

    /* down */
    ms_vk_range bd[MS_MOE_G_N_BIND_DOWN];
    bd[MS_MOE_G_BIND_POOL] = pool;
    bd[MS_MOE_G_BIND_SLOTS] = slots_r;
    bd[MS_MOE_G_BIND_OFFSETS] = offsets;
    bd[MS_MOE_G_BIND_EXPERTS] = experts;
    bd[MS_MOE_G_BIND_LIST] = list;
    bd[MS_MOE_G_BIND_IN] = act;
    bd[MS_MOE_G_BIND_OUT] = out;
    rc = stage_dispatch(c, &down, true, bd, &pc);
    if (rc) return rc;
    ms_vk_cmd_barrier(c);

    /* sum */
    ms_vk_range bs[MS_MOE_SUM_N_BIND];
    bs[MS_MOE_SUM_BIND_POS] = pos;
    bs[MS_MOE_SUM_BIND_OUT] = out;
    bs[MS_MOE_SUM_BIND_BASE] = base_r;
    bs[MS_MOE_SUM_BIND_Y] = y_r;
    pc.groups_x = sx;
    return ms_vk_cmd_dispatch(c, ps, bs, MS_MOE_SUM_N_BIND, &pc, sizeof pc, sx, sy, 1);
}

int ms_vk_rec_moe_grouped(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                          uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x, ms_vk_range base,
                          ms_vk_range y, ms_vk_range scratch, uint32_t n, uint32_t k, float limit) {
    return ms_vk_rec_moe_grouped_tuned(c, L, pool, slots, n_experts, idx, rw, x, base, y, scratch, n, k, limit,
                                       NULL);
}
