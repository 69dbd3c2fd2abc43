/* engine/vk/ops_internal.h — helpers shared by the op recorders (engine/vk/ops*.c).
 *
 * Not part of the public API; built on engine/vk/vk.h only. Each recorder validates its sizes
 * with ms_vk_op_range_ok and returns -MS_E_INVALID_ARG (with a logged reason) rather than record
 * an out-of-bounds dispatch.
 */
#ifndef MS_ENGINE_VK_OPS_INTERNAL_H
#define MS_ENGINE_VK_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/vk/vk.h"

/* A 2-D grid of `groups` workgroups within the device limits: *gx x *gy >= groups
 * (-MS_E_UNSUPPORTED when even the 2-D grid is too small). */
int ms_vk_op_grid_2d(const ms_vk_caps *caps, uint64_t groups, uint32_t *gx, uint32_t *gy);

/* r is bound and holds at least `need` bytes. */
bool ms_vk_op_range_ok(ms_vk_range r, uint64_t need);

/* The workgroup of the row and element ops: small on CPU devices, where a group is a loop. */
uint32_t ms_vk_op_wg(const ms_vk_caps *caps);

/* Whether two ranges share a byte (same buffer, intersecting spans). */
bool ms_vk_op_overlap(ms_vk_range a, ms_vk_range b);

/* The variant's pipeline and one dispatch of n_groups workgroups on a 2-D grid within the device
 * limits; the grid's width is stored at *groups_x (a field of push) first when given. */
int ms_vk_op_dispatch(ms_vk_cmd *c, const char *variant, const uint32_t *spec, uint32_t n_spec,
                      const ms_vk_range *b, uint32_t n_b, void *push, size_t push_size,
                      uint32_t *groups_x, uint64_t n_groups);

/* Part i of an uploaded weight as its two bindings: its rows' data and their scales (for F32 and
 * BF16, which have none and whose shaders never read the scale binding, the data range again so
 * the descriptor is valid), after checking the part against the weight (rows inside it, inner
 * boundaries on 128-row blocks, data large enough). -MS_E_INVALID_ARG, logged under op, when not. */
int ms_vk_op_weight_part(const char *op, const ms_vk_weight *w, uint32_t i, ms_vk_range *data, ms_vk_range *scale);

/* The expert layout is one ms_vk_expert_layout_make could have made and the MoE shaders can run
 * (engine/vk/ops_moe.c): shape rules, 256-byte-aligned parts inside the record. */
bool ms_vk_expert_layout_ok(const ms_vk_expert_layout *L);

#endif
