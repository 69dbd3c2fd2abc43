/* engine/vk/memory.c — device memory: blocks sub-allocated by a free list, staged copies.
 *
 * Per kind there is one list of blocks (in vk->blocks, tagged by kind). A block is one
 * VkDeviceMemory with one VkBuffer over all of it, so a sub-allocation is (buffer, offset) and
 * binding it needs no extra Vulkan object. Requests larger than the regular block size get a
 * dedicated block of their own size, freed as soon as its one allocation is. At most one empty
 * regular block per kind is kept, so alloc/free cycles (staging chunks) do not hit the driver.
 */
#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/vk/vk_internal.h"

#define MS_VK_BLOCK_BYTES (256ull << 20)
#define MS_VK_STAGE_CHUNK (64ull << 20) /* staged upload/download granularity */

static const char *const k_kind_names[3] = {"DEVICE", "STAGING", "READBACK"};

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void ms_vk_mem_init(ms_vk *vk) {
    const ms_vk_caps *c = &vk->caps;
    uint64_t align = c->min_storage_offset_align > 256 ? c->min_storage_offset_align : 256;
    uint64_t bs = MS_VK_BLOCK_BYTES;
    if (c->max_memory_allocation_size && c->max_memory_allocation_size < bs)
        bs = c->max_memory_allocation_size;
    if (c->max_buffer_size && c->max_buffer_size < bs) bs = c->max_buffer_size;
    vk->align = align;
    vk->block_size = bs / align * align;
}

/* ---------------------------------------------------------------- memory types */

/* Higher is better; < 0 unusable. "Preferred" types score >= 100; lower scores are fallbacks. */
static int type_score(uint32_t kind, VkMemoryPropertyFlags f) {
    const VkMemoryPropertyFlags never = VK_MEMORY_PROPERTY_PROTECTED_BIT |
                                        VK_MEMORY_PROPERTY_LAZILY_ALLOCATED_BIT |
                                        VK_MEMORY_PROPERTY_DEVICE_COHERENT_BIT_AMD |
                                        VK_MEMORY_PROPERTY_DEVICE_UNCACHED_BIT_AMD;
    bool dl = f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    bool hv = f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    bool hc = f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    bool cached = f & VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    if (f & never) return -1;
    switch (kind) {
    case MS_VK_MEM_DEVICE:
        /* host-visible VRAM (ReBAR) only when it is all there is: keep the BAR for staging */
        return dl ? 100 + (hv ? 0 : 10) : 10;
    case MS_VK_MEM_STAGING:
        if (!hv) return -1;
        /* write-combined system memory is the fast path for host writes + GPU reads */
        return (hc ? 100 : 10) + (cached ? 0 : 4) + (dl ? 0 : 2);
    case MS_VK_MEM_READBACK:
        if (!hv) return -1;
        return (cached ? 100 : 10) + (hc ? 4 : 0) + (dl ? 0 : 2);
    default: return -1;
    }
}

/* Candidate types for memoryTypeBits, best first; returns the count. */
static uint32_t type_candidates(const ms_vk *vk, uint32_t kind, uint32_t bits,
                                uint32_t out[MS_VK_MAX_TYPES]) {
    int score[MS_VK_MAX_TYPES];
    uint32_t n = 0;
    for (uint32_t t = 0; t < vk->caps.n_types; t++) {
        if (!(bits & (1u << t))) continue;
        int s = type_score(kind, vk->caps.types[t].flags);
        if (s < 0) continue;
        uint32_t j = n++;
        while (j > 0 && score[j - 1] < s) { /* insertion sort, stable for equal scores */
            score[j] = score[j - 1];
            out[j] = out[j - 1];
            j--;
        }
        score[j] = s;
        out[j] = t;
    }
    if (n && type_score(kind, vk->caps.types[out[0]].flags) < 100)
        MS_LOGD("vulkan memory: no preferred memory type for %s buffers; falling back to type %u "
                "(flags 0x%x)",
                k_kind_names[kind], out[0], (unsigned)vk->caps.types[out[0]].flags);
    return n;
}

/* ---------------------------------------------------------------- blocks */

static void block_destroy(ms_vk *vk, uint32_t slot) {
    ms_vk_block *b = vk->blocks[slot];
    if (!b) return;
    if (b->map) vkUnmapMemory(vk->dev, b->memory);
    if (b->buffer) vkDestroyBuffer(vk->dev, b->buffer, NULL);
    if (b->memory) vkFreeMemory(vk->dev, b->memory, NULL);
    ms_free(b->free);
    ms_free(b);
    vk->blocks[slot] = NULL;
}

static int slot_get(ms_vk *vk, uint32_t *slot) {
    for (uint32_t i = 0; i < vk->n_blocks; i++)
        if (!vk->blocks[i]) {
            *slot = i;
            return 0;
        }
    uint32_t n = vk->n_blocks ? vk->n_blocks * 2 : 16;
    ms_vk_block **nb = ms_realloc(vk->blocks, n * sizeof *nb);
    if (!nb) return -MS_E_NOMEM;
    for (uint32_t i = vk->n_blocks; i < n; i++) nb[i] = NULL;
    *slot = vk->n_blocks;
    vk->blocks = nb;
    vk->n_blocks = n;
    return 0;
}

static int block_create(ms_vk *vk, uint32_t kind, uint64_t size, bool dedicated, uint32_t *out) {
    uint32_t slot;
    int rc = slot_get(vk, &slot);
    if (rc) return rc;
    ms_vk_block *b = ms_calloc(1, sizeof *b);
    if (!b) return -MS_E_NOMEM;
    vk->blocks[slot] = b;
    b->size = size;
    b->kind = kind;
    b->dedicated = dedicated;
    b->free = ms_malloc(4 * sizeof *b->free);
    if (!b->free) {
        block_destroy(vk, slot);
        return -MS_E_NOMEM;
    }
    b->cap_free = 4;
    b->n_free = 1;
    b->free[0] = (ms_vk_span){0, size};

    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    rc = MS_VK_CALL(vk, vkCreateBuffer(vk->dev, &bci, NULL, &b->buffer));
    if (rc) {
        block_destroy(vk, slot);
        return rc;
    }
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vk->dev, b->buffer, &req);
    uint32_t cand[MS_VK_MAX_TYPES];
    uint32_t n_cand = type_candidates(vk, kind, req.memoryTypeBits, cand);
    VkResult r = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    for (uint32_t i = 0; i < n_cand; i++) {
        VkMemoryAllocateInfo ai = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
            .allocationSize = req.size,
            .memoryTypeIndex = cand[i],
        };
        r = vkAllocateMemory(vk->dev, &ai, NULL, &b->memory);
        if (r == VK_SUCCESS) {
            b->mem_type = cand[i];
            break;
        }
        b->memory = VK_NULL_HANDLE;
        if (r != VK_ERROR_OUT_OF_DEVICE_MEMORY && r != VK_ERROR_OUT_OF_HOST_MEMORY) break;
        MS_LOGD("vulkan memory: %s block of %llu bytes did not fit memory type %u (%s)",
                k_kind_names[kind], (unsigned long long)req.size, cand[i], ms_vk_result_name(r));
    }
    if (!b->memory) {
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY || !n_cand) {
            MS_LOGE("out of GPU memory: could not allocate a %s block of %llu bytes (%.1f MiB)%s",
                    k_kind_names[kind], (unsigned long long)req.size,
                    (double)req.size / (1 << 20), n_cand ? "" : ": no suitable memory type");
            rc = -MS_E_DEVICE_OOM;
        } else {
            rc = MS_VK_RESULT(vk, r, "vkAllocateMemory");
        }
        block_destroy(vk, slot);
        return rc;
    }
    b->coherent = vk->caps.types[b->mem_type].flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    rc = MS_VK_CALL(vk, vkBindBufferMemory(vk->dev, b->buffer, b->memory, 0));
    if (!rc && kind != MS_VK_MEM_DEVICE) {
        void *p = NULL;
        rc = MS_VK_CALL(vk, vkMapMemory(vk->dev, b->memory, 0, VK_WHOLE_SIZE, 0, &p));
        b->map = p;
    }
    if (rc) {
        block_destroy(vk, slot);
        return rc;
    }
    *out = slot;
    return 0;
}

/* First fit; returns false when no span is large enough. */
static bool block_take(ms_vk_block *b, uint64_t size, uint64_t *offset) {
    for (uint32_t i = 0; i < b->n_free; i++) {
        ms_vk_span *s = &b->free[i];
        if (s->size < size) continue;
        *offset = s->offset;
        s->offset += size;
        s->size -= size;
        if (s->size == 0) {
            memmove(s, s + 1, (b->n_free - i - 1) * sizeof *s);
            b->n_free--;
        }
        b->used += size;
        return true;
    }
    return false;
}

/* Returns a span to the free list, merging with its neighbours. */
static int block_give(ms_vk_block *b, uint64_t offset, uint64_t size) {
    uint32_t i = 0;
    while (i < b->n_free && b->free[i].offset < offset) i++;
    /* double free or a foreign range: a programmer bug */
    MS_ASSERT(i == 0 || b->free[i - 1].offset + b->free[i - 1].size <= offset);
    MS_ASSERT(i == b->n_free || offset + size <= b->free[i].offset);
    bool merge_prev = i > 0 && b->free[i - 1].offset + b->free[i - 1].size == offset;
    bool merge_next = i < b->n_free && offset + size == b->free[i].offset;
    b->used -= size;
    if (merge_prev && merge_next) {
        b->free[i - 1].size += size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *b->free);
        b->n_free--;
    } else if (merge_prev) {
        b->free[i - 1].size += size;
    } else if (merge_next) {
        b->free[i].offset = offset;
        b->free[i].size += size;
    } else {
        if (b->n_free == b->cap_free) {
            ms_vk_span *nf = ms_realloc(b->free, 2 * b->cap_free * sizeof *nf);
            if (!nf) return -MS_E_NOMEM;
            b->free = nf;
            b->cap_free *= 2;
        }
        memmove(&b->free[i + 1], &b->free[i], (b->n_free - i) * sizeof *b->free);
        b->free[i] = (ms_vk_span){offset, size};
        b->n_free++;
    }
    return 0;
}

/* ---------------------------------------------------------------- public */

int ms_vk_buf_alloc(ms_vk *vk, ms_vk_mem kind, uint64_t size, ms_vk_buf *out) {
    if (!out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (!vk || (uint32_t)kind > MS_VK_MEM_READBACK || size == 0) {
        MS_LOGE("ms_vk_buf_alloc: invalid argument (kind %d, size %llu)", (int)kind,
                (unsigned long long)size);
        return -MS_E_INVALID_ARG;
    }
    MS_VK_ALIVE(vk);
    const ms_vk_caps *c = &vk->caps;
    if (size > c->max_memory_allocation_size || size > c->max_buffer_size) {
        MS_LOGE("ms_vk_buf_alloc: %s buffer of %llu bytes exceeds the device limits "
                "(maxMemoryAllocationSize %llu, maxBufferSize %llu); split it",
                k_kind_names[kind], (unsigned long long)size,
                (unsigned long long)c->max_memory_allocation_size,
                (unsigned long long)c->max_buffer_size);
        return -MS_E_RANGE;
    }
    uint64_t asz = round_up(size, vk->align);
    uint32_t slot = UINT32_MAX;
    uint64_t offset = 0;
    int rc;
    if (asz > vk->block_size) {
        uint64_t limit = c->max_memory_allocation_size < c->max_buffer_size
                             ? c->max_memory_allocation_size
                             : c->max_buffer_size;
        uint64_t dsz = asz <= limit ? asz : size;
        rc = block_create(vk, kind, dsz, true, &slot);
        if (rc) return rc;
        bool took = block_take(vk->blocks[slot], dsz, &offset);
        MS_ASSERT(took);
    } else {
        for (uint32_t i = 0; i < vk->n_blocks && slot == UINT32_MAX; i++) {
            ms_vk_block *b = vk->blocks[i];
            if (b && b->kind == (uint32_t)kind && !b->dedicated && block_take(b, asz, &offset))
                slot = i;
        }
        if (slot == UINT32_MAX) {
            rc = block_create(vk, kind, vk->block_size, false, &slot);
            if (rc) return rc;
            bool took = block_take(vk->blocks[slot], asz, &offset);
            MS_ASSERT(took);
        }
    }
    ms_vk_block *b = vk->blocks[slot];
    out->buffer = b->buffer;
    out->offset = offset;
    out->size = size;
    out->map = b->map ? b->map + offset : NULL;
    out->kind = (uint32_t)kind;
    out->block = slot;
    return 0;
}

void ms_vk_buf_free(ms_vk *vk, ms_vk_buf *buf) {
    if (!vk || !buf || buf->buffer == VK_NULL_HANDLE) return;
    MS_ASSERT(buf->block < vk->n_blocks && vk->blocks[buf->block] &&
              vk->blocks[buf->block]->buffer == buf->buffer);
    uint32_t slot = buf->block;
    ms_vk_block *b = vk->blocks[slot];
    uint64_t asz = b->dedicated ? b->size : round_up(buf->size, vk->align);
    if (block_give(b, buf->offset, asz)) {
        /* the span is lost until the block goes; counted as used meanwhile */
        MS_LOGW("ms_vk_buf_free: out of host memory; %llu bytes of a %s block leaked",
                (unsigned long long)asz, k_kind_names[b->kind]);
        b->used += asz;
    }
    memset(buf, 0, sizeof *buf);
    if (b->used) return;
    bool other_empty = false;
    for (uint32_t i = 0; i < vk->n_blocks && !other_empty; i++) {
        const ms_vk_block *o = vk->blocks[i];
        other_empty = i != slot && o && o->kind == b->kind && !o->dedicated && o->used == 0;
    }
    if (b->dedicated || other_empty) block_destroy(vk, slot);
}

ms_vk_range ms_vk_buf_range(const ms_vk_buf *b, uint64_t offset, uint64_t size) {
    MS_ASSERT(offset <= b->size && size <= b->size - offset);
    ms_vk_range r = {b->buffer, b->offset + offset, size};
    return r;
}

void ms_vk_get_mem_stats(const ms_vk *vk, ms_vk_mem_stats *out) {
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < vk->n_blocks; i++) {
        const ms_vk_block *b = vk->blocks[i];
        if (!b) continue;
        out->bytes_reserved[b->kind] += b->size;
        out->bytes_used[b->kind] += b->used;
        out->n_blocks[b->kind]++;
    }
}

void ms_vk_mem_shutdown(ms_vk *vk) {
    uint64_t live = 0;
    for (uint32_t i = 0; i < vk->n_blocks; i++) {
        if (vk->blocks[i]) live += vk->blocks[i]->used;
        block_destroy(vk, i);
    }
    if (live) MS_LOGD("ms_vk_close: freed %llu bytes of live buffers", (unsigned long long)live);
    ms_free(vk->blocks);
    vk->blocks = NULL;
    vk->n_blocks = 0;
}

/* ---------------------------------------------------------------- host copies */

/* Flush (host writes → device) or invalidate (device writes → host) a non-coherent range. */
static int sync_host_range(ms_vk *vk, const ms_vk_block *b, uint64_t offset, uint64_t size,
                           bool flush) {
    if (b->coherent) return 0;
    uint64_t atom = vk->non_coherent_atom ? vk->non_coherent_atom : 1;
    uint64_t lo = offset / atom * atom;
    uint64_t hi = round_up(offset + size, atom);
    VkMappedMemoryRange mr = {
        .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
        .memory = b->memory,
        .offset = lo,
        .size = hi >= b->size ? VK_WHOLE_SIZE : hi - lo,
    };
    if (flush) return MS_VK_CALL(vk, vkFlushMappedMemoryRanges(vk->dev, 1, &mr));
    return MS_VK_CALL(vk, vkInvalidateMappedMemoryRanges(vk->dev, 1, &mr));
}

static int check_buf(const ms_vk *vk, const ms_vk_buf *b, uint64_t off, uint64_t size,
                     const char *what) {
    if (!b || b->buffer == VK_NULL_HANDLE || b->block >= vk->n_blocks || !vk->blocks[b->block] ||
        vk->blocks[b->block]->buffer != b->buffer) {
        MS_LOGE("%s: not a live buffer", what);
        return -MS_E_INVALID_ARG;
    }
    if (off > b->size || size > b->size - off) {
        MS_LOGE("%s: range [%llu, +%llu) outside a buffer of %llu bytes", what,
                (unsigned long long)off, (unsigned long long)size, (unsigned long long)b->size);
        return -MS_E_RANGE;
    }
    return 0;
}

static int xfer_cmd(ms_vk *vk, ms_vk_cmd **out) {
    if (!vk->xfer) {
        int rc = ms_vk_cmd_create_internal(vk, 0, true, &vk->xfer);
        if (rc) return rc;
    }
    *out = vk->xfer;
    return 0;
}

/* One staged copy through the internal command buffer; waits for completion. */
static int run_copy(ms_vk *vk, ms_vk_range src, ms_vk_range dst) {
    ms_vk_cmd *c;
    int rc = xfer_cmd(vk, &c);
    if (!rc) rc = ms_vk_cmd_begin(c);
    if (rc) return rc;
    ms_vk_cmd_copy(c, src, dst);
    ms_vk_cmd_barrier(c);
    rc = ms_vk_cmd_end(c);
    if (!rc) rc = ms_vk_cmd_run(c);
    return rc;
}

int ms_vk_upload(ms_vk *vk, const ms_vk_buf *dst, uint64_t dst_offset, const void *src,
                 uint64_t size) {
    if (!vk || (!src && size)) return -MS_E_INVALID_ARG;
    MS_VK_ALIVE(vk);
    int rc = check_buf(vk, dst, dst_offset, size, "ms_vk_upload");
    if (rc || size == 0) return rc;
    const ms_vk_block *b = vk->blocks[dst->block];
    if (dst->map) {
        memcpy((uint8_t *)dst->map + dst_offset, src, size);
        return sync_host_range(vk, b, dst->offset + dst_offset, size, true);
    }
    ms_vk_buf stage;
    uint64_t chunk = size < MS_VK_STAGE_CHUNK ? size : MS_VK_STAGE_CHUNK;
    rc = ms_vk_buf_alloc(vk, MS_VK_MEM_STAGING, chunk, &stage);
    if (rc) return rc;
    const ms_vk_block *sb = vk->blocks[stage.block];
    for (uint64_t done = 0; done < size && !rc; done += chunk) {
        uint64_t n = size - done < chunk ? size - done : chunk;
        memcpy(stage.map, (const uint8_t *)src + done, n);
        rc = sync_host_range(vk, sb, stage.offset, n, true);
        if (!rc)
            rc = run_copy(vk, ms_vk_buf_range(&stage, 0, n),
                          ms_vk_buf_range(dst, dst_offset + done, n));
    }
    ms_vk_buf_free(vk, &stage);
    return rc;
}

int ms_vk_download(ms_vk *vk, const ms_vk_buf *src, uint64_t src_offset, void *dst, uint64_t size) {
    if (!vk || (!dst && size)) return -MS_E_INVALID_ARG;
    MS_VK_ALIVE(vk);
    int rc = check_buf(vk, src, src_offset, size, "ms_vk_download");
    if (rc || size == 0) return rc;
    const ms_vk_block *b = vk->blocks[src->block];
    if (src->map) {
        rc = sync_host_range(vk, b, src->offset + src_offset, size, false);
        if (!rc) memcpy(dst, (const uint8_t *)src->map + src_offset, size);
        return rc;
    }
    ms_vk_buf rb;
    uint64_t chunk = size < MS_VK_STAGE_CHUNK ? size : MS_VK_STAGE_CHUNK;
    rc = ms_vk_buf_alloc(vk, MS_VK_MEM_READBACK, chunk, &rb);
    if (rc) return rc;
    const ms_vk_block *rbb = vk->blocks[rb.block];
    for (uint64_t done = 0; done < size && !rc; done += chunk) {
        uint64_t n = size - done < chunk ? size - done : chunk;
        rc = run_copy(vk, ms_vk_buf_range(src, src_offset + done, n), ms_vk_buf_range(&rb, 0, n));
        if (!rc) rc = sync_host_range(vk, rbb, rb.offset, n, false);
        if (!rc) memcpy((uint8_t *)dst + done, rb.map, n);
    }
    ms_vk_buf_free(vk, &rb);
    return rc;
}

int ms_vk_buf_invalidate(ms_vk *vk, const ms_vk_buf *b) {
    if (!vk) return -MS_E_INVALID_ARG;
    MS_VK_ALIVE(vk);
    int rc = check_buf(vk, b, 0, b ? b->size : 0, "ms_vk_buf_invalidate");
    if (rc || !b->map) return rc;
    return sync_host_range(vk, vk->blocks[b->block], b->offset, b->size, false);
}
