/* engine/vk/device.c — instance, validation, capability probe, device choice and creation.
 *
 * Features are enabled by querying the device's feature chain and passing that same chain back
 * to vkCreateDevice, so every supported feature is on (except robustBufferAccess: our shaders
 * bounds-check themselves, and robust access costs bandwidth on some drivers).
 */
#if defined(__SANITIZE_ADDRESS__)
#define _GNU_SOURCE 1 /* dl_iterate_phdr */
#include <dlfcn.h>
#include <link.h>
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/vk/vk_internal.h"

#if defined(__SANITIZE_ADDRESS__)
/* Sanitizer builds: the Vulkan loader unloads the drivers and layers when the last instance goes,
 * and LeakSanitizer then no longer sees their globals as roots, so blocks they still point to are
 * reported as leaks (Mesa 22.3's lavapipe: one 128-byte block of its one-time init in every
 * process). Pinning every loaded driver and layer (RTLD_NODELETE) keeps them, and the check
 * exact, for the rest of the process. */
static int pin_lib(struct dl_phdr_info *info, size_t size, void *ctx) {
    (void)size, (void)ctx;
    const char *n = info->dlpi_name, *base = n ? strrchr(n, '/') : NULL;
    base = base ? base + 1 : n;
    if (base && (!strncmp(base, "libvulkan_", 10) || !strncmp(base, "libVkLayer_", 11)))
        (void)dlopen(n, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    return 0;
}
static void keep_vulkan_libs_loaded(void) { dl_iterate_phdr(pin_lib, NULL); }
#else
static void keep_vulkan_libs_loaded(void) {}
#endif

#define MS_VK_API_WANT VK_API_VERSION_1_3
#define LAYER_VALIDATION "VK_LAYER_KHRONOS_validation"

/* ---------------------------------------------------------------- results */

const char *ms_vk_result_name(VkResult r) {
    /* int switch: VkResult has extension values we do not list (-Wswitch-enum) */
    switch ((int)r) {
#define R(x)                                                                                       \
    case x: return #x;
        R(VK_SUCCESS)
        R(VK_NOT_READY)
        R(VK_TIMEOUT)
        R(VK_EVENT_SET)
        R(VK_EVENT_RESET)
        R(VK_INCOMPLETE)
        R(VK_ERROR_OUT_OF_HOST_MEMORY)
        R(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        R(VK_ERROR_INITIALIZATION_FAILED)
        R(VK_ERROR_DEVICE_LOST)
        R(VK_ERROR_MEMORY_MAP_FAILED)
        R(VK_ERROR_LAYER_NOT_PRESENT)
        R(VK_ERROR_EXTENSION_NOT_PRESENT)
        R(VK_ERROR_FEATURE_NOT_PRESENT)
        R(VK_ERROR_INCOMPATIBLE_DRIVER)
        R(VK_ERROR_TOO_MANY_OBJECTS)
        R(VK_ERROR_FORMAT_NOT_SUPPORTED)
        R(VK_ERROR_FRAGMENTED_POOL)
        R(VK_ERROR_UNKNOWN)
        R(VK_ERROR_OUT_OF_POOL_MEMORY)
        R(VK_ERROR_INVALID_EXTERNAL_HANDLE)
        R(VK_ERROR_FRAGMENTATION)
        R(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
        R(VK_PIPELINE_COMPILE_REQUIRED)
        R(VK_ERROR_VALIDATION_FAILED_EXT)
        R(VK_ERROR_NOT_PERMITTED_KHR)
#undef R
    }
    return "VK_RESULT_?";
}

int ms_vk_result_(ms_vk *vk, VkResult r, const char *expr, const char *file, int line) {
    if (r >= 0) return 0;
    const char *paren = strchr(expr, '(');
    int name_len = paren ? (int)(paren - expr) : (int)strlen(expr);
    const char *slash = strrchr(file, '/');
    const char *base = slash ? slash + 1 : file;
    MS_LOGE("%.*s failed: %s (%d) (%s:%d)", name_len, expr, ms_vk_result_name(r), (int)r, base,
            line);
    switch ((int)r) {
    case VK_ERROR_DEVICE_LOST:
        if (vk) {
            if (!vk->dead) MS_LOGE("Vulkan device lost: the engine is dead; restart moestream");
            vk->dead = true;
        }
        return -MS_E_DEVICE_LOST;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return -MS_E_DEVICE_OOM;
    default:
        return -MS_E_VULKAN;
    }
}

static void set_err(char *err, size_t err_len, const char *fmt, ...) MS_PRINTF(3, 4);
static void set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || !err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- vendor names */

const char *ms_vk_vendor_name(uint32_t vendor_id) {
    switch (vendor_id) {
    case 0x10DE: return "NVIDIA";
    case 0x1002: return "AMD";
    case 0x1022: return "AMD";
    case 0x8086: return "Intel";
    case 0x13B5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x1010: return "Imagination";
    case 0x106B: return "Apple";
    case 0x14E4: return "Broadcom";
    case 0x19E5: return "Huawei";
    case 0x1AE0: return "Google";
    case VK_VENDOR_ID_MESA: return "Mesa/CPU";
    case VK_VENDOR_ID_VIV: return "Vivante";
    case VK_VENDOR_ID_VSI: return "VeriSilicon";
    case VK_VENDOR_ID_KAZAN: return "Kazan";
    case VK_VENDOR_ID_CODEPLAY: return "Codeplay";
    case VK_VENDOR_ID_POCL: return "PoCL";
    default: return "unknown";
    }
}

/* ---------------------------------------------------------------- probe */

typedef struct probe {
    ms_vk_caps caps;
    uint32_t api;         /* effective API version */
    int32_t queue_family; /* -1: no compute queue */
    bool ext_push_descriptor, ext_memory_host, ext_sgsc, ext_idot, ext_maint4, ext_portability;
    uint64_t non_coherent_atom;
} probe;

/* The feature structs we query and pass back. 1.3 core replaces the three extension structs,
 * which must then not be chained (their sTypes alias the 1.3 ones). */
typedef struct feat_chain {
    VkPhysicalDeviceFeatures2 f2;
    VkPhysicalDeviceVulkan11Features v11;
    VkPhysicalDeviceVulkan12Features v12;
    VkPhysicalDeviceVulkan13Features v13;
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgsc;
    VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR idot;
    VkPhysicalDeviceMaintenance4FeaturesKHR maint4;
} feat_chain;

#define LINK(next, s, st)                                                                          \
    do {                                                                                           \
        (s).sType = (st);                                                                          \
        *(next) = &(s);                                                                            \
        (next) = &(s).pNext;                                                                       \
    } while (0)

static void feat_chain_init(feat_chain *fc, const probe *p) {
    memset(fc, 0, sizeof *fc);
    fc->f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
    void **next = &fc->f2.pNext;
    if (p->api >= VK_API_VERSION_1_2) {
        LINK(next, fc->v11, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES);
        LINK(next, fc->v12, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES);
    }
    if (p->api >= VK_API_VERSION_1_3) {
        LINK(next, fc->v13, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES);
    } else {
        if (p->ext_sgsc)
            LINK(next, fc->sgsc, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES);
        if (p->ext_idot)
            LINK(next, fc->idot,
                 VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES);
        if (p->ext_maint4)
            LINK(next, fc->maint4, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_FEATURES);
    }
}

static bool has_ext(const VkExtensionProperties *e, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(e[i].extensionName, name) == 0) return true;
    return false;
}

/* A compute-only family if there is one (it may run beside graphics work), else graphics+compute. */
static int32_t pick_queue_family(VkPhysicalDevice pd, uint32_t *ts_bits) {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
    if (n == 0) return -1;
    VkQueueFamilyProperties *q = ms_malloc(n * sizeof *q);
    if (!q) return -1;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q);
    int32_t best = -1;
    for (uint32_t i = 0; i < n && best < 0; i++)
        if ((q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) &&
            q[i].queueCount > 0)
            best = (int32_t)i;
    for (uint32_t i = 0; i < n && best < 0; i++)
        if ((q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && q[i].queueCount > 0) best = (int32_t)i;
    *ts_bits = best >= 0 ? q[best].timestampValidBits : 0;
    ms_free(q);
    return best;
}

static void add_reason(ms_vk_caps *c, const char *why) {
    size_t len = strlen(c->unusable_reason);
    snprintf(c->unusable_reason + len, sizeof c->unusable_reason - len, "%s%s", len ? "; " : "",
             why);
}

static int probe_device(VkPhysicalDevice pd, uint32_t index, uint32_t instance_api, probe *p) {
    memset(p, 0, sizeof *p);
    ms_vk_caps *c = &p->caps;
    c->index = index;

    VkPhysicalDeviceProperties base;
    vkGetPhysicalDeviceProperties(pd, &base);
    p->api = base.apiVersion < instance_api ? base.apiVersion : instance_api;

    uint32_t n_ext = 0;
    VkExtensionProperties *ext = NULL;
    int rc = MS_VK_CALL(NULL, vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, NULL));
    if (rc) return rc;
    if (n_ext) {
        ext = ms_malloc(n_ext * sizeof *ext);
        if (!ext) return -MS_E_NOMEM;
        rc = MS_VK_CALL(NULL, vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, ext));
        if (rc) {
            ms_free(ext);
            return rc;
        }
    }
    bool pre13 = p->api < VK_API_VERSION_1_3;
    p->ext_push_descriptor = has_ext(ext, n_ext, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    p->ext_memory_host = has_ext(ext, n_ext, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
    p->ext_sgsc = pre13 && has_ext(ext, n_ext, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    p->ext_idot = pre13 && has_ext(ext, n_ext, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
    p->ext_maint4 = pre13 && has_ext(ext, n_ext, VK_KHR_MAINTENANCE_4_EXTENSION_NAME);
    p->ext_portability = has_ext(ext, n_ext, "VK_KHR_portability_subset");
    /* string literals: VK_KHR_cooperative_matrix is newer than some installed headers */
    c->cooperative_matrix = has_ext(ext, n_ext, "VK_KHR_cooperative_matrix") ||
                            has_ext(ext, n_ext, "VK_NV_cooperative_matrix");
    ms_free(ext);

    /* properties */
    VkPhysicalDeviceProperties2 pr = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    VkPhysicalDeviceSubgroupProperties sg = {0};
    VkPhysicalDeviceMaintenance3Properties m3 = {0};
    VkPhysicalDeviceIDProperties id = {0};
    VkPhysicalDeviceVulkan12Properties v12p = {0};
    VkPhysicalDeviceVulkan13Properties v13p = {0};
    VkPhysicalDeviceSubgroupSizeControlPropertiesEXT sgscp = {0};
    VkPhysicalDeviceShaderIntegerDotProductPropertiesKHR idotp = {0};
    VkPhysicalDeviceMaintenance4PropertiesKHR m4p = {0};
    VkPhysicalDeviceExternalMemoryHostPropertiesEXT hostp = {0};
    void **next = &pr.pNext;
    LINK(next, sg, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
    LINK(next, m3, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES);
    LINK(next, id, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES);
    if (p->api >= VK_API_VERSION_1_2)
        LINK(next, v12p, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES);
    if (!pre13) LINK(next, v13p, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_PROPERTIES);
    if (p->ext_sgsc)
        LINK(next, sgscp, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES);
    if (p->ext_idot)
        LINK(next, idotp, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES);
    if (p->ext_maint4) LINK(next, m4p, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES);
    if (p->ext_memory_host)
        LINK(next, hostp, VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT);
    vkGetPhysicalDeviceProperties2(pd, &pr);

    feat_chain fc;
    feat_chain_init(&fc, p);
    vkGetPhysicalDeviceFeatures2(pd, &fc.f2);

    const VkPhysicalDeviceLimits *lim = &pr.properties.limits;
    snprintf(c->device_name, sizeof c->device_name, "%s", pr.properties.deviceName);
    if (p->api >= VK_API_VERSION_1_2) {
        snprintf(c->driver_name, sizeof c->driver_name, "%s", v12p.driverName);
        snprintf(c->driver_info, sizeof c->driver_info, "%s", v12p.driverInfo);
        c->driver_id = (uint32_t)v12p.driverID;
    }
    c->vendor_id = pr.properties.vendorID;
    c->device_id = pr.properties.deviceID;
    c->type = pr.properties.deviceType;
    c->api_version = pr.properties.apiVersion;
    c->driver_version = pr.properties.driverVersion;
    memcpy(c->device_uuid, id.deviceUUID, VK_UUID_SIZE);
    memcpy(c->pipeline_cache_uuid, pr.properties.pipelineCacheUUID, VK_UUID_SIZE);

    c->subgroup_size = sg.subgroupSize;
    c->subgroup_arithmetic = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                             (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    bool sgsc_feat = pre13 ? fc.sgsc.subgroupSizeControl : fc.v13.subgroupSizeControl;
    VkShaderStageFlags sgsc_stages =
        pre13 ? sgscp.requiredSubgroupSizeStages : v13p.requiredSubgroupSizeStages;
    c->subgroup_size_control = sgsc_feat && (sgsc_stages & VK_SHADER_STAGE_COMPUTE_BIT);
    c->subgroup_size_min = c->subgroup_size_max = c->subgroup_size;
    if (c->subgroup_size_control) {
        c->subgroup_size_min = pre13 ? sgscp.minSubgroupSize : v13p.minSubgroupSize;
        c->subgroup_size_max = pre13 ? sgscp.maxSubgroupSize : v13p.maxSubgroupSize;
    }

    c->storage_8bit = fc.v12.storageBuffer8BitAccess;
    c->storage_16bit = fc.v11.storageBuffer16BitAccess;
    c->float16_arith = fc.v12.shaderFloat16;
    c->int8_arith = fc.v12.shaderInt8;
    c->int64_arith = fc.f2.features.shaderInt64;
    c->int_dot_product = pre13 ? fc.idot.shaderIntegerDotProduct : fc.v13.shaderIntegerDotProduct;
    if (c->int_dot_product)
        c->int_dot_4x8_accelerated =
            pre13 ? idotp.integerDotProduct4x8BitPackedSignedAccelerated
                  : v13p.integerDotProduct4x8BitPackedSignedAccelerated;
    c->push_descriptor = p->ext_push_descriptor;
    c->timeline_semaphore = fc.v12.timelineSemaphore;
    c->external_memory_host = p->ext_memory_host;
    c->min_imported_host_align = p->ext_memory_host ? hostp.minImportedHostPointerAlignment : 0;

    c->max_storage_buffer_range = lim->maxStorageBufferRange;
    c->max_memory_allocation_size = m3.maxMemoryAllocationSize;
    c->max_buffer_size = m3.maxMemoryAllocationSize;
    if (!pre13 && fc.v13.maintenance4) c->max_buffer_size = v13p.maxBufferSize;
    if (pre13 && fc.maint4.maintenance4) c->max_buffer_size = m4p.maxBufferSize;
    c->min_storage_offset_align = lim->minStorageBufferOffsetAlignment;
    c->max_shared_memory = lim->maxComputeSharedMemorySize;
    c->max_workgroup_invocations = lim->maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) c->max_workgroup_count[i] = lim->maxComputeWorkGroupCount[i];
    c->max_push_constants = lim->maxPushConstantsSize;
    p->non_coherent_atom = lim->nonCoherentAtomSize;

    uint32_t ts_bits = 0;
    p->queue_family = pick_queue_family(pd, &ts_bits);
    c->timestamp_valid_bits = ts_bits;
    c->timestamp_period_ns = ts_bits ? lim->timestampPeriod : 0.0f;

    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    c->n_heaps = mp.memoryHeapCount < MS_VK_MAX_HEAPS ? mp.memoryHeapCount : MS_VK_MAX_HEAPS;
    for (uint32_t i = 0; i < c->n_heaps; i++) {
        c->heaps[i].size = mp.memoryHeaps[i].size;
        c->heaps[i].device_local = mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
        if (c->heaps[i].device_local) c->device_local_bytes += c->heaps[i].size;
    }
    c->n_types = mp.memoryTypeCount < MS_VK_MAX_TYPES ? mp.memoryTypeCount : MS_VK_MAX_TYPES;
    const VkMemoryPropertyFlags bar =
        VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    for (uint32_t i = 0; i < c->n_types; i++) {
        c->types[i].flags = mp.memoryTypes[i].propertyFlags;
        c->types[i].heap = mp.memoryTypes[i].heapIndex;
        if ((c->types[i].flags & bar) == bar && c->types[i].heap < c->n_heaps &&
            c->heaps[c->types[i].heap].size > (256ull << 20))
            c->rebar = true;
    }

    char why[64];
    if (p->api < VK_API_VERSION_1_2) {
        snprintf(why, sizeof why, "needs Vulkan 1.2 (device has %u.%u)",
                 VK_API_VERSION_MAJOR(p->api), VK_API_VERSION_MINOR(p->api));
        add_reason(c, why);
    }
    if (p->queue_family < 0) add_reason(c, "no compute queue");
    if (!c->subgroup_arithmetic) add_reason(c, "no subgroup arithmetic and shuffles in compute shaders");
    if (p->api >= VK_API_VERSION_1_2 && !c->storage_8bit)
        add_reason(c, "no storageBuffer8BitAccess");
    if (p->api >= VK_API_VERSION_1_2 && !c->storage_16bit)
        add_reason(c, "no storageBuffer16BitAccess");
    c->usable = c->unusable_reason[0] == 0;
    return 0;
}

/* ---------------------------------------------------------------- instance */

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT type,
                                               const VkDebugUtilsMessengerCallbackDataEXT *d,
                                               void *user) {
    (void)type;
    ms_vk *vk = user;
    if (sev & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
               VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
        if (vk) atomic_fetch_add(&vk->n_validation, 1);
        MS_LOGE("vulkan validation: %s", d && d->pMessage ? d->pMessage : "(no message)");
    }
    return VK_FALSE;
}

static bool has_layer(const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0) return false;
    VkLayerProperties *l = ms_malloc(n * sizeof *l);
    if (!l) return false;
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, l) >= 0)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(l[i].layerName, name) == 0;
    ms_free(l);
    return found;
}

static bool has_instance_ext(const char *layer, const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *e = ms_malloc(n * sizeof *e);
    if (!e) return false;
    bool found = vkEnumerateInstanceExtensionProperties(layer, &n, e) >= 0 && has_ext(e, n, name);
    ms_free(e);
    return found;
}

/* Creates vk->instance (and the messenger when validating). vk->validation says whether the layer
 * is on. */
static int create_instance(ms_vk *vk, bool validation, bool required, uint32_t *api_out,
                           char *err, size_t err_len) {
    uint32_t loader_api = VK_API_VERSION_1_0;
    PFN_vkEnumerateInstanceVersion eiv =
        (PFN_vkEnumerateInstanceVersion)vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
    if (eiv && eiv(&loader_api) != VK_SUCCESS) loader_api = VK_API_VERSION_1_0;
    if (loader_api < VK_API_VERSION_1_1) {
        set_err(err, err_len, "the Vulkan loader supports only 1.0; moestream needs 1.2");
        return -MS_E_NO_DEVICE;
    }
    uint32_t api = loader_api < MS_VK_API_WANT ? loader_api : MS_VK_API_WANT;
    *api_out = api;

    const char *layers[1];
    uint32_t n_layers = 0;
    const char *exts[4];
    uint32_t n_exts = 0;
    bool debug_utils = false, val_features = false;
    if (validation) {
        if (has_layer(LAYER_VALIDATION)) {
            layers[n_layers++] = LAYER_VALIDATION;
            debug_utils = has_instance_ext(NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) ||
                          has_instance_ext(LAYER_VALIDATION, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
            val_features = has_instance_ext(LAYER_VALIDATION,
                                            VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
            if (debug_utils) exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
            if (val_features) exts[n_exts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
            if (!debug_utils)
                MS_LOGW("validation layer on but VK_EXT_debug_utils is missing: messages are "
                        "printed by the layer and not counted");
        } else if (required) {
            set_err(err, err_len,
                    "Vulkan validation requested but %s is not installed (install "
                    "vulkan-validationlayers, or the Vulkan SDK)",
                    LAYER_VALIDATION);
            return -MS_E_UNSUPPORTED;
        } else {
            MS_LOGW("Vulkan validation requested but %s is not installed (install "
                    "vulkan-validationlayers); continuing without it",
                    LAYER_VALIDATION);
        }
    }
    bool portability = has_instance_ext(NULL, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    if (portability) exts[n_exts++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "moestream",
        .applicationVersion = 1,
        .pEngineName = "moestream",
        .engineVersion = 1,
        .apiVersion = api,
    };
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_cb,
        .pUserData = vk,
    };
    /* synchronization validation: a missing barrier in a replayed command buffer is the bug
     * most worth catching here */
    VkValidationFeatureEnableEXT vf_enable[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT vf = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = vf_enable,
    };
    const void *pnext = NULL;
    if (debug_utils) pnext = &mci;
    if (val_features && n_layers) {
        vf.pNext = pnext;
        pnext = &vf;
    }
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = pnext,
        .flags = portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pApplicationInfo = &app,
        .enabledLayerCount = n_layers,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = vkCreateInstance(&ci, NULL, &vk->instance);
    keep_vulkan_libs_loaded();
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED) {
        set_err(err, err_len, "no Vulkan driver: vkCreateInstance returned %s",
                ms_vk_result_name(r));
        vk->instance = VK_NULL_HANDLE;
        return -MS_E_NO_DEVICE;
    }
    int rc = MS_VK_RESULT(vk, r, "vkCreateInstance");
    if (rc) {
        set_err(err, err_len, "vkCreateInstance failed: %s", ms_vk_result_name(r));
        vk->instance = VK_NULL_HANDLE;
        return rc;
    }
    vk->validation = n_layers > 0;
    if (debug_utils) {
        PFN_vkCreateDebugUtilsMessengerEXT cm = (PFN_vkCreateDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(vk->instance, "vkCreateDebugUtilsMessengerEXT");
        if (cm) {
            rc = MS_VK_CALL(vk, cm(vk->instance, &mci, NULL, &vk->messenger));
            if (rc) return rc;
        }
    }
    return 0;
}

static void destroy_instance(ms_vk *vk) {
    if (!vk->instance) return;
    if (vk->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT dm = (PFN_vkDestroyDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(vk->instance, "vkDestroyDebugUtilsMessengerEXT");
        if (dm) dm(vk->instance, vk->messenger, NULL);
        vk->messenger = VK_NULL_HANDLE;
    }
    vkDestroyInstance(vk->instance, NULL);
    vk->instance = VK_NULL_HANDLE;
}

/* Physical devices and their probes; *probes freed by the caller with ms_free. */
static int probe_all(ms_vk *vk, uint32_t api, VkPhysicalDevice **pds_out, probe **probes_out,
                     uint32_t *n_out) {
    uint32_t n = 0;
    *pds_out = NULL;
    *probes_out = NULL;
    *n_out = 0;
    MS_VK_CHECK(vk, vkEnumeratePhysicalDevices(vk->instance, &n, NULL));
    if (n == 0) return 0;
    VkPhysicalDevice *pds = ms_malloc(n * sizeof *pds);
    probe *probes = ms_calloc(n, sizeof *probes);
    if (!pds || !probes) {
        ms_free(pds);
        ms_free(probes);
        return -MS_E_NOMEM;
    }
    int rc = MS_VK_CALL(vk, vkEnumeratePhysicalDevices(vk->instance, &n, pds));
    for (uint32_t i = 0; i < n && !rc; i++) rc = probe_device(pds[i], i, api, &probes[i]);
    if (rc) {
        ms_free(pds);
        ms_free(probes);
        return rc;
    }
    *pds_out = pds;
    *probes_out = probes;
    *n_out = n;
    return 0;
}

int ms_vk_enumerate(ms_vk_caps **out, uint32_t *n, char *err, size_t err_len) {
    if (!out || !n) return -MS_E_INVALID_ARG;
    *out = NULL;
    *n = 0;
    ms_vk tmp;
    memset(&tmp, 0, sizeof tmp);
    uint32_t api = 0;
    int rc = create_instance(&tmp, false, false, &api, err, err_len);
    if (rc) return rc == -MS_E_NO_DEVICE ? rc : -MS_E_NO_DEVICE;
    VkPhysicalDevice *pds;
    probe *probes;
    uint32_t np;
    rc = probe_all(&tmp, api, &pds, &probes, &np);
    if (rc) {
        set_err(err, err_len, "probing Vulkan devices failed: %s", ms_strerror(rc));
        destroy_instance(&tmp);
        return rc;
    }
    if (np) {
        ms_vk_caps *caps = ms_malloc(np * sizeof *caps);
        if (!caps) rc = -MS_E_NOMEM;
        for (uint32_t i = 0; i < np && caps; i++) caps[i] = probes[i].caps;
        *out = caps;
        *n = caps ? np : 0;
    }
    ms_free(pds);
    ms_free(probes);
    destroy_instance(&tmp);
    return rc;
}

/* ---------------------------------------------------------------- open / close */

ms_vk_opts ms_vk_opts_default(void) {
    ms_vk_opts o = {.device_index = -1};
    return o;
}

const char *ms_vk_type_name(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    case VK_PHYSICAL_DEVICE_TYPE_OTHER:
    case VK_PHYSICAL_DEVICE_TYPE_MAX_ENUM: break;
    }
    return "other";
}

static int type_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_OTHER:
    case VK_PHYSICAL_DEVICE_TYPE_MAX_ENUM: break;
    }
    return 0;
}

static void log_devices(const probe *probes, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        const ms_vk_caps *c = &probes[i].caps;
        MS_LOGE("  device %u: %s (%s, %s)%s%s", i, c->device_name, ms_vk_vendor_name(c->vendor_id),
                ms_vk_type_name(c->type), c->usable ? "" : " unusable: ", c->unusable_reason);
    }
}

int ms_vk_choose_device(const ms_vk_caps *caps, uint32_t n, int32_t requested) {
    if (requested >= 0) {
        if ((uint32_t)requested >= n) return -MS_E_RANGE;
        return caps[requested].usable ? requested : -MS_E_UNSUPPORTED;
    }
    int best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (caps[i].usable && (best < 0 || type_rank(caps[i].type) > type_rank(caps[best].type)))
            best = (int)i;
    return best >= 0 ? best : -MS_E_NO_DEVICE;
}

static int choose_device(const probe *probes, uint32_t n, int32_t want, uint32_t *out) {
    if (n == 0) {
        MS_LOGE("no Vulkan physical device found (is a Vulkan driver installed? for CPU-only "
                "testing install mesa-vulkan-drivers for lavapipe)");
        return -MS_E_NO_DEVICE;
    }
    ms_vk_caps *caps = ms_malloc(sizeof *caps * n);
    if (!caps) return -MS_E_NOMEM;
    for (uint32_t i = 0; i < n; i++) caps[i] = probes[i].caps;
    int pick = ms_vk_choose_device(caps, n, want);
    ms_free(caps);
    if (pick >= 0) {
        *out = (uint32_t)pick;
        return 0;
    }
    if (pick == -MS_E_RANGE)
        MS_LOGE("Vulkan device index %d out of range (%u device%s):", want, n, n == 1 ? "" : "s");
    else if (pick == -MS_E_UNSUPPORTED)
        MS_LOGE("Vulkan device %d (%s) is not usable: %s. Devices:", want,
                probes[want].caps.device_name, probes[want].caps.unusable_reason);
    else
        MS_LOGE("no usable Vulkan device; found:");
    log_devices(probes, n);
    return pick;
}

static int create_device(ms_vk *vk, const probe *p) {
    const char *exts[8];
    uint32_t n_exts = 0;
    if (p->ext_push_descriptor) exts[n_exts++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    if (p->ext_memory_host) exts[n_exts++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
    if (p->ext_sgsc) exts[n_exts++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
    if (p->ext_idot) exts[n_exts++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
    if (p->ext_maint4) exts[n_exts++] = VK_KHR_MAINTENANCE_4_EXTENSION_NAME;
    if (p->ext_portability) exts[n_exts++] = "VK_KHR_portability_subset";

    feat_chain fc;
    feat_chain_init(&fc, p);
    vkGetPhysicalDeviceFeatures2(vk->phys, &fc.f2);
    fc.f2.features.robustBufferAccess = VK_FALSE;

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = (uint32_t)p->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    VkDeviceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &fc.f2,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = exts,
    };
    MS_VK_CHECK(vk, vkCreateDevice(vk->phys, &ci, NULL, &vk->dev));
    vk->queue_family = (uint32_t)p->queue_family;
    vkGetDeviceQueue(vk->dev, vk->queue_family, 0, &vk->queue);

    if (p->ext_push_descriptor && !vk->opts.disable_push_descriptor) {
        vk->cmd_push_descriptor = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(
            vk->dev, "vkCmdPushDescriptorSetKHR");
        vk->use_push_descriptor = vk->cmd_push_descriptor != NULL;
    }
    if (vk->caps.timeline_semaphore && !vk->opts.disable_timeline_semaphore) {
        VkSemaphoreTypeCreateInfo tci = {
            .sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
            .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE,
            .initialValue = 0,
        };
        VkSemaphoreCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO,
                                     .pNext = &tci};
        MS_VK_CHECK(vk, vkCreateSemaphore(vk->dev, &sci, NULL, &vk->timeline));
    }
    return 0;
}

int ms_vk_open(ms_vk **out, const ms_vk_opts *opts_in) {
    if (!out) return -MS_E_INVALID_ARG;
    *out = NULL;
    ms_vk_opts opts = opts_in ? *opts_in : ms_vk_opts_default();
    bool validation = opts.validation, required = opts.validation_required;
    int32_t want = opts.device_index;

    ms_vk *vk = ms_calloc(1, sizeof *vk);
    if (!vk) return -MS_E_NOMEM;
    vk->opts = opts;
    if (opts.cache_dir && !(vk->cache_dir = ms_strdup(opts.cache_dir))) {
        ms_free(vk);
        return -MS_E_NOMEM;
    }
    vk->opts.cache_dir = vk->cache_dir; /* the caller's string need not outlive the call */
    atomic_init(&vk->n_validation, 0);
    char err[256] = "";
    uint32_t api = 0;
    int rc = create_instance(vk, validation || required, required, &api, err, sizeof err);
    if (rc) {
        if (err[0]) MS_LOGE("%s", err);
        destroy_instance(vk);
        ms_free(vk->cache_dir);
        ms_free(vk);
        return rc;
    }
    VkPhysicalDevice *pds = NULL;
    probe *probes = NULL;
    uint32_t n = 0, pick = 0;
    rc = probe_all(vk, api, &pds, &probes, &n);
    if (!rc) rc = choose_device(probes, n, want, &pick);
    if (!rc) {
        vk->phys = pds[pick];
        vk->caps = probes[pick].caps;
        vk->api = probes[pick].api;
        vk->non_coherent_atom = probes[pick].non_coherent_atom;
        rc = create_device(vk, &probes[pick]);
    }
    if (!rc) {
        ms_vk_mem_init(vk);
        rc = ms_vk_pipeline_cache_open(vk, vk->cache_dir != NULL);
    }
    ms_free(pds);
    ms_free(probes);
    if (rc) {
        ms_vk_close(vk);
        return rc;
    }
    const ms_vk_caps *c = &vk->caps;
    MS_LOGD("vulkan: device %u %s (%s, %s), driver %s %s, API %u.%u.%u, subgroup %u [%u..%u], "
            "push descriptors %s, timeline %s, validation %s",
            c->index, c->device_name, ms_vk_vendor_name(c->vendor_id), ms_vk_type_name(c->type),
            c->driver_name, c->driver_info, VK_API_VERSION_MAJOR(c->api_version),
            VK_API_VERSION_MINOR(c->api_version), VK_API_VERSION_PATCH(c->api_version),
            c->subgroup_size, c->subgroup_size_min, c->subgroup_size_max,
            vk->use_push_descriptor ? "on" : "off", vk->timeline ? "on" : "off",
            vk->validation ? "on" : "off");
    *out = vk;
    return 0;
}

void ms_vk_close(ms_vk *vk) {
    if (!vk) return;
    if (vk->dev) {
        if (!vk->dead) (void)MS_VK_CALL(vk, vkDeviceWaitIdle(vk->dev));
        if (vk->xfer) {
            ms_vk_cmd_free(vk->xfer);
            vk->xfer = NULL;
        }
        if (vk->n_cmds_live)
            MS_LOGW("ms_vk_close: %u command context%s not freed (ms_vk_cmd_free)",
                    vk->n_cmds_live, vk->n_cmds_live == 1 ? "" : "s");
        ms_vk_pipelines_close(vk);
        ms_vk_mem_shutdown(vk);
        if (vk->timeline) vkDestroySemaphore(vk->dev, vk->timeline, NULL);
        vkDestroyDevice(vk->dev, NULL);
    }
    destroy_instance(vk);
    ms_free(vk->cache_dir);
    ms_free(vk);
}

const ms_vk_caps *ms_vk_get_caps(const ms_vk *vk) { return &vk->caps; }

const ms_vk_opts *ms_vk_get_opts(const ms_vk *vk) { return &vk->opts; }

VkDevice ms_vk_device(const ms_vk *vk) { return vk->dev; }

uint32_t ms_vk_validation_count(const ms_vk *vk) {
    return atomic_load(&vk->n_validation);
}

bool ms_vk_validation_enabled(const ms_vk *vk) { return vk->validation; }
