/* engine/vk/vk_opts.h — the Vulkan backend's options as plain data (no Vulkan types), so that
 * engine.h can carry them without including the backend: engine/vk/vk.h is for engine/ only. */
#ifndef MS_ENGINE_VK_VK_OPTS_H
#define MS_ENGINE_VK_VK_OPTS_H

#include <stdbool.h>
#include <stdint.h>

/* Options; this library reads no environment variables (programs map them onto these: see
 * tools/env.h). */
typedef struct ms_vk_opts {
    int32_t device_index;    /* -1: the best (discrete > integrated > virtual > cpu); start from
                              * ms_vk_opts_default, since 0 after zeroing means device 0 */
    bool validation;         /* enable VK_LAYER_KHRONOS_validation (error if absent and required) */
    bool validation_required;/* fail ms_vk_open when the layer is missing */
    const char *cache_dir;   /* directory of the on-disk pipeline cache (created if missing);
                              * NULL: no cache on disk. Copied by ms_vk_open */
    /* kill switches for fast paths (each has a plain fallback) */
    bool disable_push_descriptor;    /* descriptor pools instead of VK_KHR_push_descriptor */
    bool disable_timeline_semaphore; /* fences instead of one timeline semaphore */
    bool disable_tiled_gemv;         /* gemv_<enc> where the tune would pick gemv_tiled_<enc> */
} ms_vk_opts;

/* All defaults: device_index -1, everything else off, no on-disk cache. */
ms_vk_opts ms_vk_opts_default(void);

#endif
