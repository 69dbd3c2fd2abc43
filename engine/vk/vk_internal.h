/* engine/vk/vk_internal.h — structures shared by device.c, memory.c, pipeline.c and cmd.c.
 *
 * Not part of the public API: ops.c and everything outside engine/vk/ use vk.h only.
 * Threading is the caller's (vk.h): one thread at a time per ms_vk; only n_validation is touched
 * from the validation layer's callback, which may run on any thread, hence atomic.
 */
#ifndef MS_ENGINE_VK_INTERNAL_H
#define MS_ENGINE_VK_INTERNAL_H

#include <stdatomic.h>

#include "engine/vk/vk.h"

/* Map a VkResult to 0 (any non-negative result) or a -MS_E_* status, logging
 * "vkXxx failed: VK_ERROR_... (file:line)". DEVICE_LOST marks vk dead (vk may be NULL). */
int ms_vk_result_(ms_vk *vk, VkResult r, const char *expr, const char *file, int line);
const char *ms_vk_result_name(VkResult r); /* "VK_ERROR_DEVICE_LOST"; "VK_RESULT_?" if unknown */

#define MS_VK_CALL(vk, call) ms_vk_result_((vk), (call), #call, __FILE__, __LINE__)
/* For a VkResult already in a variable: name is the call that produced it. */
#define MS_VK_RESULT(vk, r, name) ms_vk_result_((vk), (r), name, __FILE__, __LINE__)
#define MS_VK_CHECK(vk, call)                                                                      \
    do {                                                                                           \
        int ms_vk_rc_ = MS_VK_CALL(vk, call);                                                      \
        if (ms_vk_rc_) return ms_vk_rc_;                                                           \
    } while (0)
#define MS_VK_ALIVE(vk)                                                                            \
    do {                                                                                           \
        if ((vk)->dead) return -MS_E_DEVICE_LOST;                                                  \
    } while (0)

/* One VkDeviceMemory with one VkBuffer over all of it; sub-allocated by a sorted free list. */
typedef struct ms_vk_span {
    uint64_t offset, size;
} ms_vk_span;

typedef struct ms_vk_block {
    VkDeviceMemory memory;
    VkBuffer buffer;
    uint64_t size;
    uint64_t used;      /* bytes in live sub-allocations (aligned sizes) */
    uint8_t *map;       /* persistent mapping (STAGING/READBACK), else NULL */
    uint32_t kind;      /* ms_vk_mem */
    uint32_t mem_type;
    bool dedicated;     /* made for one request larger than the block size */
    bool coherent;      /* HOST_COHERENT; else flush/invalidate around host access */
    ms_vk_span *free;   /* [n_free] sorted by offset, never adjacent (coalesced) */
    uint32_t n_free, cap_free;
} ms_vk_block;

struct ms_vk {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice phys;
    VkDevice dev;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t api; /* effective API version: min(instance request, device) */
    ms_vk_caps caps;
    bool dead;
    bool validation;
    ms_vk_opts opts;      /* as given to ms_vk_open, with cache_dir pointing at our copy */
    char *cache_dir;      /* owned copy of opts.cache_dir, or NULL */
    atomic_uint n_validation;
    uint64_t non_coherent_atom;

    bool use_push_descriptor;
    PFN_vkCmdPushDescriptorSetKHR cmd_push_descriptor;

    /* submission: one timeline semaphore (each submit signals ++timeline_value), else fences */
    VkSemaphore timeline;
    uint64_t timeline_value;
    uint32_t n_cmds_live; /* user-visible ms_vk_cmd not yet freed (leak warning at close) */
    ms_vk_cmd *xfer;      /* internal, for staged upload/download; created on first use */

    /* memory (memory.c) */
    uint64_t block_size; /* regular block size; larger requests get a dedicated block */
    uint64_t align;      /* sub-allocation alignment */
    ms_vk_block **blocks; /* [n_blocks] slots; NULL = free slot; ms_vk_buf.block indexes this */
    uint32_t n_blocks;

    /* pipelines (pipeline.c) */
    VkPipelineCache pcache;
    char *pcache_path;    /* NULL when the on-disk cache is off */
    void *pcache_loaded;  /* the bytes read at open (to skip rewriting an unchanged cache) */
    size_t pcache_loaded_size;
    ms_vk_pipeline *pipelines; /* singly linked */
};

struct ms_vk_pipeline {
    ms_vk_pipeline *next;
    const char *variant; /* static string from the shader table */
    uint32_t *spec;      /* [n_spec] */
    uint32_t n_spec;
    uint32_t subgroup_size;
    uint32_t n_bindings;
    uint32_t push_size;
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipeline;
};

struct ms_vk_cmd {
    ms_vk *vk;
    bool internal; /* vk->xfer: not counted in n_cmds_live */
    VkCommandPool pool;
    VkCommandBuffer cb;
    VkFence fence; /* fallback when there is no timeline semaphore */
    VkQueryPool queries;
    uint32_t max_timestamps, n_timestamps, n_timestamps_done;
    VkDescriptorPool *dpools; /* [n_dpools]; pool i holds (64 << i) sets (descriptor-pool path) */
    uint32_t n_dpools, dpool_cur, dpool_used;
    uint64_t last_value;      /* timeline value of the last submit */
    bool recording, recorded, pending, ran;
    int err; /* sticky recording error from the void recorders, returned by end */
    uint32_t n_dispatches, n_barriers, n_transfers; /* in the current recording */
    bool since_barrier; /* work recorded since the last barrier (else a barrier is a no-op) */
};

/* memory.c */
void ms_vk_mem_init(ms_vk *vk);
void ms_vk_mem_shutdown(ms_vk *vk);

/* pipeline.c: open the pipeline cache (reads the file unless disabled); close saves it and
 * destroys every pipeline. */
int ms_vk_pipeline_cache_open(ms_vk *vk, bool use_disk);
void ms_vk_pipelines_close(ms_vk *vk);

/* cmd.c */
int ms_vk_cmd_create_internal(ms_vk *vk, uint32_t max_timestamps, bool internal, ms_vk_cmd **out);

#endif
