/* engine/vk/pipeline.c — compute pipelines for the embedded shader variants, and the on-disk
 * pipeline cache.
 *
 * Pipelines are cached in vk->pipelines by (variant, specialization constants, required subgroup
 * size) and live until ms_vk_close. The VkPipelineCache is loaded at open from
 * <dir>/pipelines-<device uuid>-<driver version>.bin and written back at close through a temp
 * file + rename, so a crash never leaves a torn cache. Its header is checked before the driver
 * sees it: drivers are meant to reject foreign data, but not all do so gracefully.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/vk/vk_internal.h"
#include "shaders/shader_table.h"

#define MS_VK_MAX_SPEC 64
#define MS_VK_CACHE_FILE_MAX (512u << 20) /* larger files are not ours; ignore them */

/* ---------------------------------------------------------------- on-disk cache */

static char *cache_path(const ms_vk *vk) {
    const char *dir = vk->cache_dir, *suffix = "";
    if (!dir || !dir[0]) return NULL;
    char uuid[2 * VK_UUID_SIZE + 1];
    for (unsigned i = 0; i < VK_UUID_SIZE; i++)
        snprintf(uuid + 2 * i, 3, "%02x", vk->caps.device_uuid[i]);
    size_t n = strlen(dir) + strlen(suffix) + 2 * VK_UUID_SIZE + 64;
    char *p = ms_malloc(n);
    if (p)
        snprintf(p, n, "%s%s/pipelines-%s-%08x.bin", dir, suffix, uuid, vk->caps.driver_version);
    return p;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* VkPipelineCacheHeaderVersionOne, whose fields are little-endian whatever the host order. */
static bool cache_header_ok(const ms_vk *vk, const uint8_t *d, size_t n, const char *path) {
    const size_t hdr = 16 + VK_UUID_SIZE;
    if (n < hdr) {
        MS_LOGD("pipeline cache %s: %zu bytes, shorter than its header; ignored", path, n);
        return false;
    }
    uint32_t size = le32(d), version = le32(d + 4), vendor = le32(d + 8), device = le32(d + 12);
    if (size < hdr || size > n || version != VK_PIPELINE_CACHE_HEADER_VERSION_ONE ||
        vendor != vk->caps.vendor_id || device != vk->caps.device_id ||
        memcmp(d + 16, vk->caps.pipeline_cache_uuid, VK_UUID_SIZE) != 0) {
        MS_LOGD("pipeline cache %s: header does not match this device/driver (size %u, version "
                "%u, vendor 0x%x, device 0x%x); ignored",
                path, size, version, vendor, device);
        return false;
    }
    return true;
}

static void *read_file(const char *path, size_t *size) {
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno != ENOENT) MS_LOGD("pipeline cache %s: %s; ignored", path, strerror(errno));
        return NULL;
    }
    void *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n > 0 && (unsigned long)n <= MS_VK_CACHE_FILE_MAX && fseek(f, 0, SEEK_SET) == 0) {
        data = ms_malloc((size_t)n);
        if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
            MS_LOGD("pipeline cache %s: short read; ignored", path);
            ms_free(data);
            data = NULL;
        }
    } else if (n != 0) {
        MS_LOGD("pipeline cache %s: unreadable or too large (%ld bytes); ignored", path, n);
    }
    fclose(f);
    if (data) *size = (size_t)n;
    return data;
}

int ms_vk_pipeline_cache_open(ms_vk *vk, bool use_disk) {
    void *data = NULL;
    size_t size = 0;
    if (use_disk) {
        vk->pcache_path = cache_path(vk);
        if (!vk->pcache_path)
            MS_LOGD("pipeline cache: no MOESTREAM_CACHE_DIR, XDG_CACHE_HOME or HOME; not saved");
    }
    if (vk->pcache_path) {
        data = read_file(vk->pcache_path, &size);
        if (data && !cache_header_ok(vk, data, size, vk->pcache_path)) {
            ms_free(data);
            data = NULL;
            size = 0;
        }
    }
    VkPipelineCacheCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = size,
        .pInitialData = data,
    };
    VkResult r = vkCreatePipelineCache(vk->dev, &ci, NULL, &vk->pcache);
    if (r != VK_SUCCESS && data) {
        MS_LOGD("pipeline cache %s: rejected by the driver (%s); starting empty", vk->pcache_path,
                ms_vk_result_name(r));
        ms_free(data);
        data = NULL;
        size = 0;
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = vkCreatePipelineCache(vk->dev, &ci, NULL, &vk->pcache);
    }
    int rc = MS_VK_RESULT(vk, r, "vkCreatePipelineCache");
    if (rc) {
        vk->pcache = VK_NULL_HANDLE;
        ms_free(data);
        return rc;
    }
    if (data) MS_LOGD("pipeline cache: loaded %zu bytes from %s", size, vk->pcache_path);
    vk->pcache_loaded = data;
    vk->pcache_loaded_size = size;
    return 0;
}

static int mkdir_p(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        int r = mkdir(path, 0755);
        *p = '/';
        if (r && errno != EEXIST) return -errno;
    }
    if (mkdir(path, 0755) && errno != EEXIST) return -errno;
    return 0;
}

static void cache_save(ms_vk *vk) {
    if (!vk->pcache || !vk->pcache_path || vk->dead) return;
    size_t n = 0;
    if (MS_VK_CALL(vk, vkGetPipelineCacheData(vk->dev, vk->pcache, &n, NULL)) || n == 0) return;
    void *data = ms_malloc(n);
    if (!data) return;
    VkResult r = vkGetPipelineCacheData(vk->dev, vk->pcache, &n, data);
    if (MS_VK_RESULT(vk, r, "vkGetPipelineCacheData") || n == 0 ||
        (n == vk->pcache_loaded_size && memcmp(data, vk->pcache_loaded, n) == 0)) {
        ms_free(data);
        return;
    }
    const char *path = vk->pcache_path;
    size_t plen = strlen(path);
    char *dir = ms_strdup(path);
    char *tmp = ms_malloc(plen + 32);
    const char *fail = NULL;
    int err = 0;
    if (!dir || !tmp) {
        fail = "out of memory";
    } else {
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) *slash = 0;
        snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
        if ((err = mkdir_p(dir)) != 0) fail = "cannot create the directory";
    }
    if (!fail) {
        FILE *f = fopen(tmp, "wb");
        if (!f) {
            err = -errno;
            fail = "cannot create the file";
        } else {
            bool ok = fwrite(data, 1, n, f) == n;
            ok = fflush(f) == 0 && ok;
            ok = fsync(fileno(f)) == 0 && ok;
            if (!ok) err = -errno;
            ok = fclose(f) == 0 && ok;
            if (!ok) fail = "write failed";
            else if (rename(tmp, path) != 0) {
                err = -errno;
                fail = "rename failed";
            }
            if (fail) unlink(tmp);
        }
    }
    if (fail)
        MS_LOGW("pipeline cache not saved to %s: %s (%s)", path, fail,
                err ? ms_strerror(err) : "-");
    else
        MS_LOGD("pipeline cache: saved %zu bytes to %s", n, path);
    ms_free(tmp);
    ms_free(dir);
    ms_free(data);
}

/* ---------------------------------------------------------------- pipelines */

static void pipeline_destroy(ms_vk *vk, ms_vk_pipeline *p) {
    if (p->pipeline) vkDestroyPipeline(vk->dev, p->pipeline, NULL);
    if (p->layout) vkDestroyPipelineLayout(vk->dev, p->layout, NULL);
    if (p->dsl) vkDestroyDescriptorSetLayout(vk->dev, p->dsl, NULL);
    ms_free(p->spec);
    ms_free(p);
}

void ms_vk_pipelines_close(ms_vk *vk) {
    if (!vk->dev) return;
    cache_save(vk);
    for (ms_vk_pipeline *p = vk->pipelines, *next; p; p = next) {
        next = p->next;
        pipeline_destroy(vk, p);
    }
    vk->pipelines = NULL;
    if (vk->pcache) vkDestroyPipelineCache(vk->dev, vk->pcache, NULL);
    vk->pcache = VK_NULL_HANDLE;
    ms_free(vk->pcache_path);
    ms_free(vk->pcache_loaded);
    vk->pcache_path = NULL;
    vk->pcache_loaded = NULL;
}

static int check_subgroup_size(const ms_vk *vk, const char *variant, uint32_t s) {
    const ms_vk_caps *c = &vk->caps;
    if (!c->subgroup_size_control) {
        MS_LOGE("pipeline %s: required subgroup size %u needs subgroup size control, which %s "
                "lacks",
                variant, s, c->device_name);
        return -MS_E_UNSUPPORTED;
    }
    if ((s & (s - 1)) != 0 || s < c->subgroup_size_min || s > c->subgroup_size_max) {
        MS_LOGE("pipeline %s: required subgroup size %u not supported (device range %u..%u, "
                "powers of two)",
                variant, s, c->subgroup_size_min, c->subgroup_size_max);
        return -MS_E_UNSUPPORTED;
    }
    return 0;
}

static int pipeline_build(ms_vk *vk, const ms_shader_variant *sv, ms_vk_pipeline *p) {
    VkDescriptorSetLayoutBinding binds[MS_VK_MAX_BINDINGS];
    for (uint32_t i = 0; i < sv->n_bindings; i++)
        binds[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = vk->use_push_descriptor ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR
                                         : 0,
        .bindingCount = sv->n_bindings,
        .pBindings = binds,
    };
    MS_VK_CHECK(vk, vkCreateDescriptorSetLayout(vk->dev, &dci, NULL, &p->dsl));

    VkPushConstantRange pcr = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .offset = 0,
        .size = sv->push_size,
    };
    VkPipelineLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &p->dsl,
        .pushConstantRangeCount = sv->push_size ? 1 : 0,
        .pPushConstantRanges = &pcr,
    };
    MS_VK_CHECK(vk, vkCreatePipelineLayout(vk->dev, &lci, NULL, &p->layout));

    VkShaderModuleCreateInfo mci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = sv->spirv_bytes,
        .pCode = sv->spirv,
    };
    VkShaderModule module;
    MS_VK_CHECK(vk, vkCreateShaderModule(vk->dev, &mci, NULL, &module));

    VkSpecializationMapEntry map[MS_VK_MAX_SPEC];
    for (uint32_t i = 0; i < p->n_spec; i++)
        map[i] = (VkSpecializationMapEntry){.constantID = i, .offset = 4 * i, .size = 4};
    VkSpecializationInfo si = {
        .mapEntryCount = p->n_spec,
        .pMapEntries = map,
        .dataSize = 4 * (size_t)p->n_spec,
        .pData = p->spec,
    };
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rss = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = p->subgroup_size,
    };
    VkComputePipelineCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .pNext = p->subgroup_size ? &rss : NULL,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = module,
                .pName = "main",
                .pSpecializationInfo = p->n_spec ? &si : NULL,
            },
        .layout = p->layout,
    };
    int rc = MS_VK_CALL(vk, vkCreateComputePipelines(vk->dev, vk->pcache, 1, &pci, NULL,
                                                      &p->pipeline));
    vkDestroyShaderModule(vk->dev, module, NULL);
    if (rc) MS_LOGE("pipeline %s: creation failed", sv->name);
    return rc;
}

int ms_vk_pipeline_get(ms_vk *vk, const char *variant, const uint32_t *spec, uint32_t n_spec,
                       uint32_t required_subgroup_size, ms_vk_pipeline **out) {
    if (!out) return -MS_E_INVALID_ARG;
    *out = NULL;
    if (!vk || !variant || (n_spec && !spec) || n_spec > MS_VK_MAX_SPEC) {
        MS_LOGE("ms_vk_pipeline_get: invalid argument (variant %s, %u spec constants, max %u)",
                variant ? variant : "(null)", n_spec, MS_VK_MAX_SPEC);
        return -MS_E_INVALID_ARG;
    }
    MS_VK_ALIVE(vk);
    const ms_shader_variant *sv = ms_shader_find(variant);
    if (!sv) {
        MS_LOGE("shader variant '%s' not found (%u variants embedded; see shaders/variants.txt)",
                variant, ms_shader_variant_count);
        return -MS_E_NOT_FOUND;
    }
    for (ms_vk_pipeline *p = vk->pipelines; p; p = p->next)
        if (p->variant == sv->name && p->n_spec == n_spec &&
            p->subgroup_size == required_subgroup_size &&
            (n_spec == 0 || memcmp(p->spec, spec, 4 * (size_t)n_spec) == 0)) {
            *out = p;
            return 0;
        }
    if (required_subgroup_size) {
        int rc = check_subgroup_size(vk, variant, required_subgroup_size);
        if (rc) return rc;
    }
    if (sv->n_bindings > MS_VK_MAX_BINDINGS) {
        MS_LOGE("shader variant %s: %u bindings, more than MS_VK_MAX_BINDINGS (%d)", variant,
                sv->n_bindings, MS_VK_MAX_BINDINGS);
        return -MS_E_UNSUPPORTED;
    }
    if (sv->push_size > vk->caps.max_push_constants || sv->push_size % 4) {
        MS_LOGE("shader variant %s: push constants of %u bytes (device maximum %u, must be a "
                "multiple of 4)",
                variant, sv->push_size, vk->caps.max_push_constants);
        return -MS_E_UNSUPPORTED;
    }
    ms_vk_pipeline *p = ms_calloc(1, sizeof *p);
    if (!p) return -MS_E_NOMEM;
    p->variant = sv->name;
    p->n_spec = n_spec;
    p->subgroup_size = required_subgroup_size;
    p->n_bindings = sv->n_bindings;
    p->push_size = sv->push_size;
    if (n_spec) {
        p->spec = ms_malloc(4 * (size_t)n_spec);
        if (!p->spec) {
            ms_free(p);
            return -MS_E_NOMEM;
        }
        memcpy(p->spec, spec, 4 * (size_t)n_spec);
    }
    int rc = pipeline_build(vk, sv, p);
    if (rc) {
        pipeline_destroy(vk, p);
        return rc;
    }
    p->next = vk->pipelines;
    vk->pipelines = p;
    *out = p;
    return 0;
}
