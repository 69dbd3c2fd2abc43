/* engine/vk/cmd.c — command contexts: record once, submit many times.
 *
 * A context owns a command pool with one primary command buffer (recorded without
 * ONE_TIME_SUBMIT so it can be replayed), a timestamp query pool, and, when push descriptors are
 * off, a chain of descriptor pools that grows on demand and is reset by begin. Descriptor sets
 * are written at record time, so a replayed buffer binds the same ranges every time; per-token
 * values belong in device buffers, not in re-recorded descriptors.
 *
 * Completion: every submit signals the next value of the ms_vk's timeline semaphore, and the
 * context remembers its value; without timeline semaphores each context has a fence. A context
 * is never submitted again (nor reset) while pending: submit/begin wait for the previous run.
 */
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/vk/vk_internal.h"

#define MS_VK_DPOOL_SETS0 64u /* sets in the first descriptor pool; each next one doubles */

int ms_vk_cmd_create_internal(ms_vk *vk, uint32_t max_timestamps, bool internal, ms_vk_cmd **out) {
    if (!out) return -MS_E_INVALID_ARG;
    *out = NULL;
    if (!vk) return -MS_E_INVALID_ARG;
    MS_VK_ALIVE(vk);
    if (max_timestamps && (!vk->caps.timestamp_valid_bits || vk->caps.timestamp_period_ns <= 0)) {
        MS_LOGE("ms_vk_cmd_create: timestamps requested but the compute queue of %s has none",
                vk->caps.device_name);
        return -MS_E_UNSUPPORTED;
    }
    ms_vk_cmd *c = ms_calloc(1, sizeof *c);
    if (!c) return -MS_E_NOMEM;
    c->vk = vk;
    c->internal = internal;
    c->max_timestamps = max_timestamps;
    if (!internal) vk->n_cmds_live++;

    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = vk->queue_family,
    };
    int rc = MS_VK_CALL(vk, vkCreateCommandPool(vk->dev, &pci, NULL, &c->pool));
    if (!rc) {
        VkCommandBufferAllocateInfo ai = {
            .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
            .commandPool = c->pool,
            .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
            .commandBufferCount = 1,
        };
        rc = MS_VK_CALL(vk, vkAllocateCommandBuffers(vk->dev, &ai, &c->cb));
    }
    if (!rc && !vk->timeline) {
        VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        rc = MS_VK_CALL(vk, vkCreateFence(vk->dev, &fci, NULL, &c->fence));
    }
    if (!rc && max_timestamps) {
        VkQueryPoolCreateInfo qci = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = max_timestamps,
        };
        rc = MS_VK_CALL(vk, vkCreateQueryPool(vk->dev, &qci, NULL, &c->queries));
    }
    if (rc) {
        ms_vk_cmd_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int ms_vk_cmd_create(ms_vk *vk, uint32_t max_timestamps, ms_vk_cmd **out) {
    return ms_vk_cmd_create_internal(vk, max_timestamps, false, out);
}

ms_vk *ms_vk_cmd_vk(const ms_vk_cmd *c) { return c->vk; }

void ms_vk_cmd_free(ms_vk_cmd *c) {
    if (!c) return;
    ms_vk *vk = c->vk;
    if (c->pending && !vk->dead) (void)ms_vk_cmd_wait(c, UINT64_MAX);
    for (uint32_t i = 0; i < c->n_dpools; i++) vkDestroyDescriptorPool(vk->dev, c->dpools[i], NULL);
    ms_free(c->dpools);
    if (c->queries) vkDestroyQueryPool(vk->dev, c->queries, NULL);
    if (c->fence) vkDestroyFence(vk->dev, c->fence, NULL);
    if (c->cb) vkFreeCommandBuffers(vk->dev, c->pool, 1, &c->cb);
    if (c->pool) vkDestroyCommandPool(vk->dev, c->pool, NULL);
    if (!c->internal) vk->n_cmds_live--;
    ms_free(c);
}

/* ---------------------------------------------------------------- recording */

static int not_recording(ms_vk_cmd *c, const char *what) {
    MS_LOGE("%s: the command context is not recording (call ms_vk_cmd_begin)", what);
    if (!c->err) c->err = -MS_E_INVALID_ARG;
    return -MS_E_INVALID_ARG;
}

int ms_vk_cmd_begin(ms_vk_cmd *c) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = c->vk;
    MS_VK_ALIVE(vk);
    if (c->pending) {
        int rc = ms_vk_cmd_wait(c, UINT64_MAX);
        if (rc) return rc;
    }
    for (uint32_t i = 0; i < c->n_dpools && i <= c->dpool_cur; i++)
        MS_VK_CHECK(vk, vkResetDescriptorPool(vk->dev, c->dpools[i], 0));
    c->dpool_cur = 0;
    c->dpool_used = 0;
    c->recording = c->recorded = false;
    c->err = 0;
    c->n_timestamps = 0;
    c->n_dispatches = c->n_barriers = c->n_transfers = 0;
    c->since_barrier = false;
    MS_VK_CHECK(vk, vkResetCommandBuffer(c->cb, 0));
    /* no ONE_TIME_SUBMIT: the buffer is replayed; no SIMULTANEOUS_USE: never pending twice */
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    MS_VK_CHECK(vk, vkBeginCommandBuffer(c->cb, &bi));
    if (c->queries) vkCmdResetQueryPool(c->cb, c->queries, 0, c->max_timestamps);
    c->recording = true;
    return 0;
}

static uint32_t dpool_sets(uint32_t i) { return MS_VK_DPOOL_SETS0 << (i < 12 ? i : 12); }

static int dset_alloc(ms_vk_cmd *c, VkDescriptorSetLayout dsl, VkDescriptorSet *out) {
    ms_vk *vk = c->vk;
    if (c->dpool_cur < c->n_dpools && c->dpool_used == dpool_sets(c->dpool_cur)) {
        c->dpool_cur++;
        c->dpool_used = 0;
    }
    if (c->dpool_cur == c->n_dpools) {
        VkDescriptorPool *np = ms_realloc(c->dpools, (c->n_dpools + 1) * sizeof *np);
        if (!np) return -MS_E_NOMEM;
        c->dpools = np;
        uint32_t sets = dpool_sets(c->n_dpools);
        VkDescriptorPoolSize size = {
            .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = sets * MS_VK_MAX_BINDINGS,
        };
        VkDescriptorPoolCreateInfo ci = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
            .maxSets = sets,
            .poolSizeCount = 1,
            .pPoolSizes = &size,
        };
        MS_VK_CHECK(vk, vkCreateDescriptorPool(vk->dev, &ci, NULL, &c->dpools[c->n_dpools]));
        c->n_dpools++;
    }
    VkDescriptorSetAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = c->dpools[c->dpool_cur],
        .descriptorSetCount = 1,
        .pSetLayouts = &dsl,
    };
    MS_VK_CHECK(vk, vkAllocateDescriptorSets(vk->dev, &ai, out));
    c->dpool_used++;
    return 0;
}

int ms_vk_cmd_dispatch(ms_vk_cmd *c, ms_vk_pipeline *p, const ms_vk_range *bindings,
                       uint32_t n_bindings, const void *push, uint32_t push_size, uint32_t gx,
                       uint32_t gy, uint32_t gz) {
    if (!c || !p) return -MS_E_INVALID_ARG;
    ms_vk *vk = c->vk;
    const ms_vk_caps *caps = &vk->caps;
    MS_VK_ALIVE(vk);
    if (!c->recording) return not_recording(c, "ms_vk_cmd_dispatch");
    if (n_bindings != p->n_bindings || (n_bindings && !bindings)) {
        MS_LOGE("ms_vk_cmd_dispatch(%s): %u bindings given, the pipeline has %u", p->variant,
                n_bindings, p->n_bindings);
        return -MS_E_INVALID_ARG;
    }
    if (push_size != p->push_size || (push_size && !push)) {
        MS_LOGE("ms_vk_cmd_dispatch(%s): %u push-constant bytes given, the pipeline takes %u",
                p->variant, push_size, p->push_size);
        return -MS_E_INVALID_ARG;
    }
    if (gx > caps->max_workgroup_count[0] || gy > caps->max_workgroup_count[1] ||
        gz > caps->max_workgroup_count[2]) {
        MS_LOGE("ms_vk_cmd_dispatch(%s): %u x %u x %u workgroups exceeds the device limit "
                "%u x %u x %u",
                p->variant, gx, gy, gz, caps->max_workgroup_count[0],
                caps->max_workgroup_count[1], caps->max_workgroup_count[2]);
        return -MS_E_RANGE;
    }
    VkDescriptorBufferInfo info[MS_VK_MAX_BINDINGS];
    VkWriteDescriptorSet wr[MS_VK_MAX_BINDINGS];
    for (uint32_t i = 0; i < n_bindings; i++) {
        const ms_vk_range *b = &bindings[i];
        if (!b->buffer || b->size == 0 || b->size > caps->max_storage_buffer_range ||
            b->offset % caps->min_storage_offset_align) {
            MS_LOGE("ms_vk_cmd_dispatch(%s): binding %u (offset %llu, size %llu) is empty, "
                    "misaligned (need %llu) or larger than maxStorageBufferRange (%llu)",
                    p->variant, i, (unsigned long long)b->offset, (unsigned long long)b->size,
                    (unsigned long long)caps->min_storage_offset_align,
                    (unsigned long long)caps->max_storage_buffer_range);
            return -MS_E_INVALID_ARG;
        }
        info[i] = (VkDescriptorBufferInfo){b->buffer, b->offset, b->size};
        wr[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &info[i],
        };
    }
    if (n_bindings) {
        if (vk->use_push_descriptor) {
            vk->cmd_push_descriptor(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0,
                                    n_bindings, wr);
        } else {
            VkDescriptorSet set;
            int rc = dset_alloc(c, p->dsl, &set);
            if (rc) return rc;
            for (uint32_t i = 0; i < n_bindings; i++) wr[i].dstSet = set;
            vkUpdateDescriptorSets(vk->dev, n_bindings, wr, 0, NULL);
            vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set,
                                    0, NULL);
        }
    }
    vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    if (push_size)
        vkCmdPushConstants(c->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
    if (gx && gy && gz) {
        vkCmdDispatch(c->cb, gx, gy, gz);
        c->n_dispatches++;
        c->since_barrier = true;
    }
    return 0;
}

static void memory_barrier(ms_vk_cmd *c, VkAccessFlags dst_access, VkPipelineStageFlags dst_stages) {
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = dst_access,
    };
    vkCmdPipelineBarrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         dst_stages, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* Device-side only: a barrier whose destination includes the HOST stage cost ~10 us per barrier
 * on an H200 (chain of 1000 tiny GEMVs: 11.2 us per dispatch with it, 0.4 without any barrier),
 * so host visibility is made once, at the end of every recording (ms_vk_cmd_end). */
void ms_vk_cmd_barrier(ms_vk_cmd *c) {
    if (!c->recording) {
        (void)not_recording(c, "ms_vk_cmd_barrier");
        return;
    }
    if (!c->since_barrier) return; /* nothing recorded since the last one: no new hazard */
    c->since_barrier = false;
    c->n_barriers++;
    memory_barrier(c,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT);
}

void ms_vk_cmd_copy(ms_vk_cmd *c, ms_vk_range src, ms_vk_range dst) {
    if (!c->recording) {
        (void)not_recording(c, "ms_vk_cmd_copy");
        return;
    }
    uint64_t n = src.size < dst.size ? src.size : dst.size;
    if (n == 0) return;
    if (!src.buffer || !dst.buffer ||
        (src.buffer == dst.buffer && src.offset < dst.offset + n && dst.offset < src.offset + n)) {
        MS_LOGE("ms_vk_cmd_copy: null buffer or overlapping ranges");
        if (!c->err) c->err = -MS_E_INVALID_ARG;
        return;
    }
    VkBufferCopy region = {src.offset, dst.offset, n};
    vkCmdCopyBuffer(c->cb, src.buffer, dst.buffer, 1, &region);
    c->n_transfers++;
    c->since_barrier = true;
}

void ms_vk_cmd_fill(ms_vk_cmd *c, ms_vk_range dst, uint32_t value) {
    if (!c->recording) {
        (void)not_recording(c, "ms_vk_cmd_fill");
        return;
    }
    if (dst.size == 0) return;
    if (!dst.buffer || dst.offset % 4 || dst.size % 4) {
        MS_LOGE("ms_vk_cmd_fill: offset %llu and size %llu must be multiples of 4",
                (unsigned long long)dst.offset, (unsigned long long)dst.size);
        if (!c->err) c->err = -MS_E_INVALID_ARG;
        return;
    }
    vkCmdFillBuffer(c->cb, dst.buffer, dst.offset, dst.size, value);
    c->n_transfers++;
    c->since_barrier = true;
}

int ms_vk_cmd_timestamp(ms_vk_cmd *c, uint32_t *index_out) {
    if (!c) return -MS_E_INVALID_ARG;
    MS_VK_ALIVE(c->vk);
    if (!c->recording) return not_recording(c, "ms_vk_cmd_timestamp");
    if (!c->queries) {
        MS_LOGE("ms_vk_cmd_timestamp: the context was created with max_timestamps 0");
        return -MS_E_UNSUPPORTED;
    }
    if (c->n_timestamps >= c->max_timestamps) {
        MS_LOGE("ms_vk_cmd_timestamp: all %u timestamps of this context are used",
                c->max_timestamps);
        return -MS_E_RANGE;
    }
    vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->queries, c->n_timestamps);
    if (index_out) *index_out = c->n_timestamps;
    c->n_timestamps++;
    return 0;
}

int ms_vk_cmd_end(ms_vk_cmd *c) {
    if (!c) return -MS_E_INVALID_ARG;
    MS_VK_ALIVE(c->vk);
    if (!c->recording) return not_recording(c, "ms_vk_cmd_end");
    c->recording = false;
    /* Everything the buffer wrote becomes visible to mapped reads after the host waits for it
     * (a wait on the semaphore alone does not make device writes host-visible). */
    memory_barrier(c, VK_ACCESS_HOST_READ_BIT, VK_PIPELINE_STAGE_HOST_BIT);
    MS_VK_CHECK(c->vk, vkEndCommandBuffer(c->cb));
    c->recorded = c->err == 0;
    return c->err;
}

/* ---------------------------------------------------------------- execution */

int ms_vk_cmd_submit(ms_vk_cmd *c) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = c->vk;
    MS_VK_ALIVE(vk);
    if (!c->recorded) {
        MS_LOGE("ms_vk_cmd_submit: nothing recorded (or the recording failed)");
        return -MS_E_INVALID_ARG;
    }
    if (c->pending) {
        int rc = ms_vk_cmd_wait(c, UINT64_MAX);
        if (rc) return rc;
    }
    uint64_t value = vk->timeline_value + 1;
    VkTimelineSemaphoreSubmitInfo tsi = {
        .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
        .signalSemaphoreValueCount = 1,
        .pSignalSemaphoreValues = &value,
    };
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &c->cb,
    };
    if (vk->timeline) {
        si.pNext = &tsi;
        si.signalSemaphoreCount = 1;
        si.pSignalSemaphores = &vk->timeline;
    } else {
        MS_VK_CHECK(vk, vkResetFences(vk->dev, 1, &c->fence));
    }
    MS_VK_CHECK(vk, vkQueueSubmit(vk->queue, 1, &si, vk->timeline ? VK_NULL_HANDLE : c->fence));
    if (vk->timeline) {
        vk->timeline_value = value;
        c->last_value = value;
    }
    c->pending = true;
    c->ran = false;
    c->n_timestamps_done = c->n_timestamps;
    return 0;
}

int ms_vk_cmd_wait(ms_vk_cmd *c, uint64_t timeout_ns) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = c->vk;
    MS_VK_ALIVE(vk);
    if (!c->pending) return 0;
    VkResult r;
    if (vk->timeline) {
        VkSemaphoreWaitInfo wi = {
            .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
            .semaphoreCount = 1,
            .pSemaphores = &vk->timeline,
            .pValues = &c->last_value,
        };
        r = vkWaitSemaphores(vk->dev, &wi, timeout_ns);
    } else {
        r = vkWaitForFences(vk->dev, 1, &c->fence, VK_TRUE, timeout_ns);
    }
    if (r == VK_TIMEOUT) return -MS_E_TIMEOUT;
    int rc = MS_VK_RESULT(vk, r, vk->timeline ? "vkWaitSemaphores" : "vkWaitForFences");
    if (rc) return rc;
    c->pending = false;
    c->ran = true;
    return 0;
}

int ms_vk_cmd_run(ms_vk_cmd *c) {
    int rc = ms_vk_cmd_submit(c);
    return rc ? rc : ms_vk_cmd_wait(c, UINT64_MAX);
}

int ms_vk_cmd_timestamps(ms_vk_cmd *c, double *ns, uint32_t n) {
    if (!c || (n && !ns)) return -MS_E_INVALID_ARG;
    ms_vk *vk = c->vk;
    MS_VK_ALIVE(vk);
    if (!c->queries) {
        MS_LOGE("ms_vk_cmd_timestamps: the context was created with max_timestamps 0");
        return -MS_E_UNSUPPORTED;
    }
    if (c->pending || !c->ran) {
        MS_LOGE("ms_vk_cmd_timestamps: no completed run (wait for the submit first)");
        return -MS_E_INVALID_ARG;
    }
    if (n > c->n_timestamps_done) {
        MS_LOGE("ms_vk_cmd_timestamps: %u requested, the last run wrote %u", n,
                c->n_timestamps_done);
        return -MS_E_RANGE;
    }
    if (n == 0) return 0;
    const uint32_t bits = vk->caps.timestamp_valid_bits;
    const uint64_t mask = bits >= 64 ? UINT64_MAX : (1ull << bits) - 1;
    const double period = vk->caps.timestamp_period_ns;
    uint64_t raw[64], t0 = 0;
    for (uint32_t i = 0; i < n; i += 64) {
        uint32_t k = n - i < 64 ? n - i : 64;
        MS_VK_CHECK(vk, vkGetQueryPoolResults(vk->dev, c->queries, i, k, sizeof raw, raw,
                                              sizeof raw[0],
                                              VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
        if (i == 0) t0 = raw[0];
        for (uint32_t j = 0; j < k; j++) ns[i + j] = (double)((raw[j] - t0) & mask) * period;
    }
    return 0;
}

void ms_vk_cmd_get_counts(const ms_vk_cmd *c, ms_vk_cmd_counts *out) {
    out->dispatches = c->n_dispatches;
    out->barriers = c->n_barriers;
    out->transfers = c->n_transfers;
}
