/* engine/vk/ops_common.c — helpers every op recorder uses (engine/vk/ops_internal.h). */
#include "engine/vk/ops_internal.h"

#include "common/log.h"
#include "common/status.h"

int ms_vk_op_grid_2d(const ms_vk_caps *caps, uint64_t groups, uint32_t *gx, uint32_t *gy) {
    uint64_t x = groups < caps->max_workgroup_count[0] ? groups : caps->max_workgroup_count[0];
    if (x == 0) x = 1;
    uint64_t y = (groups + x - 1) / x;
    if (y > caps->max_workgroup_count[1]) return -MS_E_UNSUPPORTED;
    *gx = (uint32_t)x;
    *gy = (uint32_t)y;
    return 0;
}

bool ms_vk_op_range_ok(ms_vk_range r, uint64_t need) { return r.buffer && r.size >= need; }

uint32_t ms_vk_op_wg(const ms_vk_caps *caps) {
    uint32_t wg = caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 64 : 256;
    return wg > caps->max_workgroup_invocations ? caps->max_workgroup_invocations : wg;
}

int ms_vk_op_dispatch(ms_vk_cmd *c, const char *variant, const uint32_t *spec, uint32_t n_spec,
                      const ms_vk_range *b, uint32_t n_b, void *push, size_t push_size,
                      uint32_t *groups_x, uint64_t n_groups) {
    ms_vk *vk = ms_vk_cmd_vk(c);
    uint32_t gx, gy;
    if (ms_vk_op_grid_2d(ms_vk_get_caps(vk), n_groups, &gx, &gy) != 0) {
        MS_LOGE("%s: %llu workgroups exceed the device grid", variant, (unsigned long long)n_groups);
        return -MS_E_UNSUPPORTED;
    }
    if (groups_x) *groups_x = gx;
    ms_vk_pipeline *pipe;
    int rc = ms_vk_pipeline_get(vk, variant, spec, n_spec, 0, &pipe);
    return rc ? rc : ms_vk_cmd_dispatch(c, pipe, b, n_b, push, push_size, gx, gy, 1);
}

bool ms_vk_op_overlap(ms_vk_range a, ms_vk_range b) {
    return a.buffer == b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

int ms_vk_op_weight_part(const char *op, const ms_vk_weight *w, uint32_t i, ms_vk_range *data, ms_vk_range *scale) {
    const uint32_t row0 = w->part[i].row0, rows = w->part[i].rows;
    const uint64_t db = ms_wenc_data_bytes(w->enc, rows, w->k);
    if (rows < 1 || (uint64_t)row0 + rows > w->m || (i + 1 < w->n_parts && row0 % 128) || w->part[i].data.size < db) {
        MS_LOGE("%s: %s [%u x %u]: part %u (rows %u+%u) is inconsistent", op, ms_wenc_name(w->enc), w->m, w->k, i,
                row0, rows);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t sb = (ms_wenc_scale_rows_bytes(w->enc, row0, rows, w->k) + 3) / 4 * 4;
    *data = ms_vk_buf_range(&w->part[i].data, 0, db);
    *scale = sb ? ms_vk_buf_range(&w->part[i].scale, 0, sb) : *data;
    return 0;
}
