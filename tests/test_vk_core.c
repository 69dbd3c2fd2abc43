/* tests/test_vk_core.c — the Vulkan core: probe, sub-allocation, staged copies, command replay,
 * timestamps, pipelines and the on-disk pipeline cache, error paths.
 *
 * Runs with the validation layer when it is installed and fails on any validation message.
 * Exit 0 pass, 1 fail, 77 skip (no Vulkan device only).
 * Seed: MOESTREAM_TEST_SEED (default 1); printed on failure.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "engine/vk/vk.h"
#include "tools/env.h"
#include "shaders/shader_table.h"

#include "tests/check.h"

static uint64_t g_seed = 1;

#define CHECK_RC(rc, want, what) CHECK((rc) == (want), "%s: got %d (%s), want %d", what, rc, ms_strerror(rc), want)

/* ---------------------------------------------------------------- log sink */

static int g_expect;        /* > 0: errors are expected (error-path tests) */
static int g_unexpected;    /* errors and warnings logged while not expected */
static int g_errors_seen;   /* all errors */
static int g_cache_loaded;  /* "pipeline cache: loaded" debug lines */
static int g_cache_ignored; /* "ignored" debug lines from the cache reader */
static char g_last_error[512];

static void sink(ms_log_level level, const char *msg, void *user) {
    (void)user;
    if (strstr(msg, "pipeline cache: loaded")) g_cache_loaded++;
    if (strstr(msg, "pipeline cache") && strstr(msg, "ignored")) g_cache_ignored++;
    if (level > MS_LOG_WARN) return;
    if (level == MS_LOG_ERROR) {
        g_errors_seen++;
        snprintf(g_last_error, sizeof g_last_error, "%s", msg);
    }
    if (!g_expect) g_unexpected++;
    fprintf(stderr, "%s%s: %s\n", g_expect ? "[expected] " : "", ms_log_level_name(level), msg);
}

#if defined(__SANITIZE_ADDRESS__)
/* lavapipe/LLVM keep per-instance state that is never freed, and the ICD is dlclosed so its frames
 * are unnamed: suppress by the loader entry points (found only with the slow unwinder: the driver
 * has no frame pointers). Our own host allocations are checked with
 * ms_alloc_get_stats below, and leaked Vulkan objects by the validation layer. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; } /* driver frames */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:vkCreateInstance\nleak:vkEnumeratePhysicalDevices\nleak:vkAllocateCommandBuffers\n";
}
#endif

/* ---------------------------------------------------------------- helpers */

static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (g_seed += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rng() >> 56);
}

static bool has_validation_layer(void) {
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || !n) return false;
    VkLayerProperties *l = malloc(n * sizeof *l);
    bool found = false;
    if (l && vkEnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (strcmp(l[i].layerName, "VK_LAYER_KHRONOS_validation") == 0) found = true;
    free(l);
    return found;
}

static uint64_t block_bytes(const ms_vk_caps *c) {
    uint64_t align = c->min_storage_offset_align > 256 ? c->min_storage_offset_align : 256;
    uint64_t bs = 256ull << 20;
    if (c->max_memory_allocation_size < bs) bs = c->max_memory_allocation_size;
    if (c->max_buffer_size < bs) bs = c->max_buffer_size;
    return bs / align * align;
}

/* Finds the pipelines-*.bin file in dir; returns false if absent. */
static bool find_cache_file(const char *dir, char *path, size_t n) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "pipelines-", 10) == 0 && len > 4 &&
            strcmp(e->d_name + len - 4, ".bin") == 0) {
            snprintf(path, n, "%s/%s", dir, e->d_name);
            found = true;
        }
    }
    closedir(d);
    return found;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* ---------------------------------------------------------------- caps */

static void test_caps(const ms_vk_caps *c, uint32_t i) {
    CHECK(c->index == i, "index %u", c->index);
    CHECK(c->device_name[0] != 0, "device name");
    CHECK(strcmp(ms_vk_vendor_name(c->vendor_id), "") != 0, "vendor name");
    printf("device %u: %s (%s), driver %s %s, API %u.%u, subgroup %u [%u..%u], usable %d%s%s\n", i,
           c->device_name, ms_vk_vendor_name(c->vendor_id), c->driver_name, c->driver_info,
           VK_API_VERSION_MAJOR(c->api_version), VK_API_VERSION_MINOR(c->api_version),
           c->subgroup_size, c->subgroup_size_min, c->subgroup_size_max, c->usable,
           c->usable ? "" : ": ", c->unusable_reason);
    printf("  8bit %d 16bit %d f16 %d i8 %d i64 %d idot %d (4x8 acc %d) coopmat %d pushdesc %d "
           "timeline %d hostmem %d (align %llu) rebar %d, storage range %llu, alloc %llu, buffer "
           "%llu, ts %u bits %.2f ns\n",
           c->storage_8bit, c->storage_16bit, c->float16_arith, c->int8_arith, c->int64_arith,
           c->int_dot_product, c->int_dot_4x8_accelerated, c->cooperative_matrix,
           c->push_descriptor, c->timeline_semaphore, c->external_memory_host,
           (unsigned long long)c->min_imported_host_align, c->rebar,
           (unsigned long long)c->max_storage_buffer_range,
           (unsigned long long)c->max_memory_allocation_size,
           (unsigned long long)c->max_buffer_size, c->timestamp_valid_bits,
           c->timestamp_period_ns);
    if (!c->usable) {
        CHECK(c->unusable_reason[0] != 0, "unusable without a reason");
        return;
    }
    CHECK(c->unusable_reason[0] == 0, "usable with a reason: %s", c->unusable_reason);
    CHECK(c->api_version >= VK_API_VERSION_1_2, "api");
    CHECK(c->subgroup_size > 0 && (c->subgroup_size & (c->subgroup_size - 1)) == 0, "subgroup %u",
          c->subgroup_size);
    CHECK(c->subgroup_size_min > 0 && c->subgroup_size_min <= c->subgroup_size &&
              c->subgroup_size <= c->subgroup_size_max,
          "subgroup range %u..%u", c->subgroup_size_min, c->subgroup_size_max);
    CHECK(c->subgroup_arithmetic && c->storage_8bit && c->storage_16bit, "minimum features");
    CHECK(c->max_storage_buffer_range >= (1u << 27) || c->max_storage_buffer_range >= (1u << 16),
          "storage range");
    CHECK(c->max_memory_allocation_size >= (1u << 20), "alloc size");
    CHECK(c->max_buffer_size >= c->max_memory_allocation_size || c->max_buffer_size >= (1u << 30),
          "buffer size");
    CHECK(c->min_storage_offset_align > 0 &&
              (c->min_storage_offset_align & (c->min_storage_offset_align - 1)) == 0,
          "offset align");
    CHECK(c->max_shared_memory >= 16384, "shared memory %u", c->max_shared_memory);
    CHECK(c->max_workgroup_invocations >= 128, "invocations");
    CHECK(c->max_workgroup_count[0] >= 65535 && c->max_workgroup_count[1] >= 65535 &&
              c->max_workgroup_count[2] >= 65535,
          "workgroup count");
    CHECK(c->max_push_constants >= 128, "push constants");
    CHECK(c->n_heaps > 0 && c->n_types > 0, "memory heaps/types");
    for (uint32_t t = 0; t < c->n_types; t++) CHECK(c->types[t].heap < c->n_heaps, "type heap");
    CHECK(c->timestamp_valid_bits == 0 || c->timestamp_period_ns > 0, "timestamp period");
    CHECK(!c->external_memory_host || c->min_imported_host_align > 0, "host import align");
}

/* ---------------------------------------------------------------- memory */

static void test_suballoc(ms_vk *vk) {
    const ms_vk_caps *c = ms_vk_get_caps(vk);
    const uint64_t align = c->min_storage_offset_align > 256 ? c->min_storage_offset_align : 256;
    const uint64_t block = block_bytes(c);
    enum { N = 300 };
    static ms_vk_buf b[N];
    ms_vk_mem_stats st0, st;
    ms_vk_get_mem_stats(vk, &st0);
    uint64_t total = 0;
    for (int i = 0; i < N; i++) {
        uint64_t size = 1 + rng() % (i % 3 == 0 ? 4u << 20 : 5000);
        ms_vk_mem kind = (ms_vk_mem)(i % 5 == 4 ? MS_VK_MEM_STAGING : MS_VK_MEM_DEVICE);
        int rc = ms_vk_buf_alloc(vk, kind, size, &b[i]);
        CHECK_RC(rc, 0, "alloc");
        if (rc) return;
        total += size;
        CHECK(b[i].offset % align == 0, "offset %llu not aligned", (unsigned long long)b[i].offset);
        CHECK(b[i].size == size && b[i].kind == (uint32_t)kind, "size/kind");
        CHECK((kind == MS_VK_MEM_DEVICE) == (b[i].map == NULL), "map only for host kinds");
    }
    int overlaps = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (b[i].buffer == b[j].buffer && b[i].offset < b[j].offset + b[j].size &&
                b[j].offset < b[i].offset + b[i].size)
                overlaps++;
    CHECK(overlaps == 0, "%d overlapping sub-allocations", overlaps);
    ms_vk_get_mem_stats(vk, &st);
    uint64_t used = st.bytes_used[0] + st.bytes_used[1] - st0.bytes_used[0] - st0.bytes_used[1];
    CHECK(used >= total && used <= total + N * align, "used %llu for %llu requested",
          (unsigned long long)used, (unsigned long long)total);
    CHECK(st.bytes_reserved[0] >= st.bytes_used[0] && st.n_blocks[0] >= 1, "device blocks");
    /* free odd then even: exercises coalescing from both sides */
    for (int i = 1; i < N; i += 2) ms_vk_buf_free(vk, &b[i]);
    for (int i = 0; i < N; i += 2) ms_vk_buf_free(vk, &b[i]);
    CHECK(b[0].buffer == VK_NULL_HANDLE && b[0].size == 0, "free zeroes the buf");
    ms_vk_buf_free(vk, &b[0]); /* a zeroed buf is a no-op */
    ms_vk_get_mem_stats(vk, &st);
    CHECK(st.bytes_used[0] == 0 && st.bytes_used[1] == 0, "all freed: used %llu/%llu",
          (unsigned long long)st.bytes_used[0], (unsigned long long)st.bytes_used[1]);
    CHECK(st.n_blocks[0] <= 1 && st.n_blocks[1] <= 1, "at most one empty block kept: %u %u",
          st.n_blocks[0], st.n_blocks[1]);

    /* coalescing: fill one block with four quarters, free the middle two, reuse them as one */
    uint64_t q = block / 4 / align * align;
    ms_vk_buf qb[4], big;
    for (int i = 0; i < 4; i++) CHECK_RC(ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, q, &qb[i]), 0, "q");
    ms_vk_get_mem_stats(vk, &st0);
    CHECK(st0.n_blocks[0] == 1, "four quarters in one block: %u blocks", st0.n_blocks[0]);
    ms_vk_buf_free(vk, &qb[2]);
    ms_vk_buf_free(vk, &qb[1]);
    CHECK_RC(ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 2 * q, &big), 0, "coalesced alloc");
    ms_vk_get_mem_stats(vk, &st);
    CHECK(st.n_blocks[0] == st0.n_blocks[0] && st.bytes_reserved[0] == st0.bytes_reserved[0],
          "coalesced space reused (blocks %u -> %u)", st0.n_blocks[0], st.n_blocks[0]);
    CHECK(big.buffer == qb[0].buffer && big.offset == qb[0].offset + q, "reused the middle");
    ms_vk_buf_free(vk, &big);
    ms_vk_buf_free(vk, &qb[0]);
    ms_vk_buf_free(vk, &qb[3]);

    /* dedicated block for more than a block, freed at once */
    ms_vk_get_mem_stats(vk, &st0);
    ms_vk_buf d;
    CHECK_RC(ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, block + 4096, &d), 0, "dedicated");
    ms_vk_get_mem_stats(vk, &st);
    CHECK(st.n_blocks[0] == st0.n_blocks[0] + 1, "dedicated block");
    CHECK(st.bytes_reserved[0] - st0.bytes_reserved[0] >= block + 4096 &&
              st.bytes_reserved[0] - st0.bytes_reserved[0] < block + 4096 + align,
          "dedicated size %llu", (unsigned long long)(st.bytes_reserved[0] - st0.bytes_reserved[0]));
    CHECK(d.offset == 0, "dedicated offset");
    ms_vk_buf_free(vk, &d);
    ms_vk_get_mem_stats(vk, &st);
    CHECK(st.n_blocks[0] == st0.n_blocks[0] && st.bytes_reserved[0] == st0.bytes_reserved[0],
          "dedicated block released");

    /* errors: too large, zero size */
    g_expect++;
    uint64_t huge = c->max_memory_allocation_size < c->max_buffer_size
                        ? c->max_memory_allocation_size
                        : c->max_buffer_size;
    CHECK_RC(ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, huge + 1, &d), -MS_E_RANGE, "over the limit");
    CHECK_RC(ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 0, &d), -MS_E_INVALID_ARG, "zero size");
    g_expect--;
    CHECK(d.buffer == VK_NULL_HANDLE, "failed alloc leaves a zeroed buf");
}

static void test_roundtrip(ms_vk *vk) {
    const uint64_t len = (70ull << 20) + 12345; /* > one 64 MiB staging chunk */
    const uint64_t off = 333, pad = 1000;
    uint8_t *src = malloc(len), *dst = malloc(len + 2 * pad), *guard = malloc(pad);
    if (!src || !dst || !guard) {
        CHECK(0, "host memory");
        return;
    }
    memset(guard, 0xA5, pad);
    for (int kind = 0; kind < 3; kind++) {
        fill_random(src, len);
        ms_vk_buf b;
        int rc = ms_vk_buf_alloc(vk, (ms_vk_mem)kind, off + len + pad, &b);
        CHECK_RC(rc, 0, "alloc round trip");
        if (rc) continue;
        /* guard bytes before and after the written range */
        CHECK_RC(ms_vk_upload(vk, &b, 0, guard, off), 0, "guard upload");
        CHECK_RC(ms_vk_upload(vk, &b, off + len, guard, pad), 0, "guard upload 2");
        CHECK_RC(ms_vk_upload(vk, &b, off, src, len), 0, "upload");
        memset(dst, 0, len + 2 * pad);
        CHECK_RC(ms_vk_download(vk, &b, off, dst, len), 0, "download");
        CHECK(memcmp(src, dst, len) == 0, "kind %d: round trip differs (seed %llu)", kind,
              (unsigned long long)g_seed);
        CHECK_RC(ms_vk_download(vk, &b, 0, dst, off), 0, "guard download");
        CHECK(memcmp(dst, guard, off) == 0, "kind %d: guard before overwritten", kind);
        CHECK_RC(ms_vk_download(vk, &b, off + len, dst, pad), 0, "guard download 2");
        CHECK(memcmp(dst, guard, pad) == 0, "kind %d: guard after overwritten", kind);
        /* an odd sub-range across the chunk boundary */
        uint64_t so = (64ull << 20) - 777, sn = 4099;
        CHECK_RC(ms_vk_download(vk, &b, off + so, dst, sn), 0, "sub download");
        CHECK(memcmp(src + so, dst, sn) == 0, "kind %d: sub-range differs", kind);
        /* out of bounds: an error, nothing written */
        g_expect++;
        CHECK_RC(ms_vk_upload(vk, &b, b.size - 10, src, 20), -MS_E_RANGE, "upload oob");
        CHECK_RC(ms_vk_upload(vk, &b, UINT64_MAX - 4, src, 20), -MS_E_RANGE, "upload overflow");
        CHECK_RC(ms_vk_download(vk, &b, b.size, dst, 1), -MS_E_RANGE, "download oob");
        g_expect--;
        ms_vk_buf_free(vk, &b);
    }
    ms_vk_mem_stats st;
    ms_vk_get_mem_stats(vk, &st);
    CHECK(st.bytes_used[0] + st.bytes_used[1] + st.bytes_used[2] == 0, "staging freed");
    free(src);
    free(dst);
    free(guard);
}

/* ---------------------------------------------------------------- commands */

static void test_cmd(ms_vk *vk) {
    const ms_vk_caps *c = ms_vk_get_caps(vk);
    const uint64_t n = 1 << 20, h = n / 2;
    ms_vk_buf a, b, r;
    if (ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, n, &a) || ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, n, &b) ||
        ms_vk_buf_alloc(vk, MS_VK_MEM_READBACK, n, &r)) {
        CHECK(0, "cmd buffers");
        return;
    }
    bool ts = c->timestamp_valid_bits > 0;
    if (!ts) printf("note: the compute queue has no timestamps; timestamp checks skipped\n");
    ms_vk_cmd *cmd;
    int rc = ms_vk_cmd_create(vk, ts ? 4 : 0, &cmd);
    CHECK_RC(rc, 0, "cmd create");
    if (rc) return;
    CHECK(ms_vk_cmd_vk(cmd) == vk, "cmd vk");
    uint32_t idx[3] = {9, 9, 9};
    CHECK_RC(ms_vk_cmd_begin(cmd), 0, "begin");
    if (ts) CHECK_RC(ms_vk_cmd_timestamp(cmd, &idx[0]), 0, "ts0");
    ms_vk_cmd_fill(cmd, ms_vk_buf_range(&b, 0, h), 0xDEADBEEFu);
    ms_vk_cmd_copy(cmd, ms_vk_buf_range(&a, h, h), ms_vk_buf_range(&b, h, h));
    ms_vk_cmd_barrier(cmd);
    if (ts) CHECK_RC(ms_vk_cmd_timestamp(cmd, &idx[1]), 0, "ts1");
    ms_vk_cmd_copy(cmd, ms_vk_buf_range(&b, 0, n), ms_vk_buf_range(&r, 0, n));
    ms_vk_cmd_barrier(cmd);
    if (ts) CHECK_RC(ms_vk_cmd_timestamp(cmd, &idx[2]), 0, "ts2");
    CHECK_RC(ms_vk_cmd_end(cmd), 0, "end");
    if (ts) CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 2, "timestamp indices");

    uint8_t *src = malloc(n), *out = malloc(n);
    for (int run = 0; run < 3 && src && out; run++) {
        fill_random(src, n);
        CHECK_RC(ms_vk_upload(vk, &a, 0, src, n), 0, "upload a");
        CHECK_RC(ms_vk_cmd_submit(cmd), 0, "submit");
        CHECK_RC(ms_vk_cmd_wait(cmd, UINT64_MAX), 0, "wait");
        CHECK_RC(ms_vk_buf_invalidate(vk, &r), 0, "invalidate");
        const uint32_t *w = r.map;
        int bad = 0;
        for (uint64_t i = 0; i < h / 4; i++) bad += w[i] != 0xDEADBEEFu;
        CHECK(bad == 0, "run %d: fill wrong in %d words", run, bad);
        CHECK(memcmp((const uint8_t *)r.map + h, src + h, h) == 0, "run %d: copy wrong", run);
        CHECK_RC(ms_vk_download(vk, &b, 0, out, n), 0, "download b");
        CHECK(memcmp(out + h, src + h, h) == 0 && memcmp(out, r.map, h) == 0, "run %d: b", run);
        if (ts) {
            double ns[3] = {-1, -1, -1};
            CHECK_RC(ms_vk_cmd_timestamps(cmd, ns, 3), 0, "timestamps");
            CHECK(ns[0] == 0 && ns[1] >= ns[0] && ns[2] >= ns[1], "run %d: ns %.0f %.0f %.0f", run,
                  ns[0], ns[1], ns[2]);
            if (run == 0) printf("timestamps: fill+copy %.0f ns, readback copy %.0f ns\n", ns[1],
                                 ns[2] - ns[1]);
        }
    }
    CHECK_RC(ms_vk_cmd_run(cmd), 0, "run (replay 4)");
    free(src);
    free(out);

    g_expect++;
    if (ts) {
        double ns[8];
        CHECK_RC(ms_vk_cmd_timestamps(cmd, ns, 4), -MS_E_RANGE, "more timestamps than written");
        CHECK_RC(ms_vk_cmd_begin(cmd), 0, "begin 2");
        for (int i = 0; i < 4; i++) CHECK_RC(ms_vk_cmd_timestamp(cmd, NULL), 0, "fill pool");
        CHECK_RC(ms_vk_cmd_timestamp(cmd, NULL), -MS_E_RANGE, "pool full");
        CHECK_RC(ms_vk_cmd_end(cmd), 0, "end 2");
    }
    /* a misaligned fill poisons the recording; end reports it and submit refuses */
    CHECK_RC(ms_vk_cmd_begin(cmd), 0, "begin 3");
    ms_vk_cmd_fill(cmd, ms_vk_buf_range(&b, 0, 6), 0);
    CHECK_RC(ms_vk_cmd_end(cmd), -MS_E_INVALID_ARG, "bad fill");
    CHECK_RC(ms_vk_cmd_submit(cmd), -MS_E_INVALID_ARG, "submit after failed recording");
    CHECK(ms_vk_cmd_end(cmd) != 0, "end without begin");
    ms_vk_cmd *nots;
    CHECK_RC(ms_vk_cmd_create(vk, 0, &nots), 0, "cmd without timestamps");
    CHECK_RC(ms_vk_cmd_begin(nots), 0, "begin");
    CHECK_RC(ms_vk_cmd_timestamp(nots, NULL), -MS_E_UNSUPPORTED, "no timestamp pool");
    CHECK_RC(ms_vk_cmd_end(nots), 0, "end");
    ms_vk_cmd_free(nots);
    g_expect--;

    ms_vk_cmd_free(cmd);
    ms_vk_buf_free(vk, &a);
    ms_vk_buf_free(vk, &b);
    ms_vk_buf_free(vk, &r);
}

/* ---------------------------------------------------------------- pipelines */

static void test_pipelines(ms_vk *vk, int round) {
    const ms_vk_caps *c = ms_vk_get_caps(vk);
    ms_vk_pipeline *p = NULL, *p2 = NULL;
    g_expect++;
    CHECK_RC(ms_vk_pipeline_get(vk, "no_such_variant", NULL, 0, 0, &p), -MS_E_NOT_FOUND,
             "unknown variant");
    g_expect--;
    CHECK(p == NULL, "no pipeline on error");
    if (ms_shader_variant_count == 0) {
        printf("note: no shader variants embedded yet; pipeline creation and dispatch skipped\n");
        return;
    }
    /* every embedded variant builds with default specialization */
    for (uint32_t i = 0; i < ms_shader_variant_count; i++) {
        const char *name = ms_shader_variants[i].name;
        CHECK_RC(ms_vk_pipeline_get(vk, name, NULL, 0, 0, &p), 0, name);
        CHECK_RC(ms_vk_pipeline_get(vk, name, NULL, 0, 0, &p2), 0, name);
        CHECK(p && p == p2, "%s: second get returns the cached pipeline", name);
    }
    const ms_shader_variant *sv = ms_shader_find("rmsnorm");
    if (!sv) sv = &ms_shader_variants[0];
    CHECK_RC(ms_vk_pipeline_get(vk, sv->name, NULL, 0, 0, &p), 0, "get");
    if (!p) return;
    if (c->subgroup_size_control) {
        CHECK_RC(ms_vk_pipeline_get(vk, sv->name, NULL, 0, c->subgroup_size_min, &p2), 0,
                 "required subgroup size");
        CHECK(p2 != p, "subgroup size is part of the cache key");
    }
    g_expect++;
    CHECK_RC(ms_vk_pipeline_get(vk, sv->name, NULL, 0, 3, &p2), -MS_E_UNSUPPORTED,
             "subgroup size 3");
    CHECK_RC(ms_vk_pipeline_get(vk, sv->name, NULL, 0, c->subgroup_size_max * 2, &p2),
             -MS_E_UNSUPPORTED, "subgroup size above max");
    g_expect--;

    /* dispatch argument checks, then recorded dispatches of zero workgroups: descriptors and push
     * constants go through the driver and the validation layer, no shader runs on garbage */
    ms_vk_buf buf;
    if (ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, 1 << 16, &buf)) {
        CHECK(0, "alloc");
        return;
    }
    ms_vk_range rg[MS_VK_MAX_BINDINGS];
    for (int i = 0; i < MS_VK_MAX_BINDINGS; i++) rg[i] = ms_vk_buf_range(&buf, 0, 1 << 16);
    uint8_t push[256] = {0};
    ms_vk_cmd *cmd;
    CHECK_RC(ms_vk_cmd_create(vk, 0, &cmd), 0, "cmd");
    CHECK_RC(ms_vk_cmd_begin(cmd), 0, "begin");
    g_expect++;
    CHECK_RC(ms_vk_cmd_dispatch(cmd, p, rg, sv->n_bindings + 1, push, sv->push_size, 1, 1, 1),
             -MS_E_INVALID_ARG, "wrong binding count");
    CHECK_RC(ms_vk_cmd_dispatch(cmd, p, rg, sv->n_bindings, push, sv->push_size + 4, 1, 1, 1),
             -MS_E_INVALID_ARG, "wrong push size");
    if (c->max_workgroup_count[0] < UINT32_MAX)
        CHECK_RC(ms_vk_cmd_dispatch(cmd, p, rg, sv->n_bindings, push, sv->push_size,
                                    c->max_workgroup_count[0] + 1, 1, 1),
                 -MS_E_RANGE, "too many workgroups");
    g_expect--;
    /* enough dispatches to outgrow the first descriptor pool on the pool path */
    for (int i = 0; i < 150; i++)
        CHECK_RC(ms_vk_cmd_dispatch(cmd, p, rg, sv->n_bindings, push, sv->push_size, 0, 1, 1), 0,
                 "empty dispatch");
    ms_vk_cmd_barrier(cmd);
    CHECK_RC(ms_vk_cmd_end(cmd), 0, "end");
    for (int i = 0; i < 2; i++) CHECK_RC(ms_vk_cmd_run(cmd), 0, "run");
    ms_vk_cmd_free(cmd);
    ms_vk_buf_free(vk, &buf);
    (void)round;
}

/* ---------------------------------------------------------------- main */

/* The options a program would pass: the environment (tools/env.h), plus validation. */
static int open_vk(ms_vk **vk, bool validation) {
    ms_vk_opts o = ms_vk_opts_default();
    char err[256];
    int rc = ms_env_vk_opts(&o, err, sizeof err);
    if (rc) {
        printf("%s\n", err);
        return rc;
    }
    o.validation = o.validation || validation;
    return ms_vk_open(vk, &o);
}

static void end_checks(ms_vk *vk, const char *when) {
    CHECK(ms_vk_validation_count(vk) == 0, "%s: %u validation messages", when,
          ms_vk_validation_count(vk));
}

int main(void) {
    const char *seed_env = getenv("MOESTREAM_TEST_SEED");
    if (seed_env) g_seed = strtoull(seed_env, NULL, 10);
    const uint64_t seed0 = g_seed;
    ms_log_set_sink(sink, NULL);
    ms_log_set_level(MS_LOG_DEBUG);

    ms_vk_caps *caps = NULL;
    uint32_t n = 0;
    char err[256] = "";
    int rc = ms_vk_enumerate(&caps, &n, err, sizeof err);
    if (rc == -MS_E_NO_DEVICE || (rc == 0 && n == 0)) {
        printf("SKIP: no Vulkan device (%s)\n", err[0] ? err : "none enumerated");
        return 77;
    }
    CHECK_RC(rc, 0, "enumerate");
    for (uint32_t i = 0; i < n; i++) test_caps(&caps[i], i);
    ms_free(caps);

    char dir[] = "/tmp/ms_vk_core_XXXXXX";
    if (!mkdtemp(dir)) {
        printf("FAIL: mkdtemp\n");
        return 1;
    }
    char cachedir[sizeof dir + 16];
    snprintf(cachedir, sizeof cachedir, "%s/sub/dir", dir); /* created on save */
    setenv("MOESTREAM_CACHE_DIR", cachedir, 1);
    unsetenv("MOESTREAM_DEVICE");
    unsetenv("MOESTREAM_NO_PIPELINE_CACHE");

    bool validation = has_validation_layer();
    if (!validation) printf("note: VK_LAYER_KHRONOS_validation not installed; running without\n");
    ms_vk *vk = NULL;
    rc = open_vk(&vk, validation);
    if (rc == -MS_E_NO_DEVICE) {
        printf("SKIP: no usable Vulkan device\n");
        remove_dir(dir);
        return 77;
    }
    CHECK_RC(rc, 0, "open");
    if (rc) return 1;
    CHECK(ms_vk_validation_enabled(vk) == validation, "validation enabled");
    CHECK(ms_vk_device(vk) != VK_NULL_HANDLE, "device");
    printf("opened %s (validation %s)\n", ms_vk_get_caps(vk)->device_name,
           validation ? "on" : "off");

    test_suballoc(vk);
    test_roundtrip(vk);
    test_cmd(vk);
    test_pipelines(vk, 0);
    end_checks(vk, "first open");
    ms_vk_close(vk);

    char path[1024];
    CHECK(find_cache_file(cachedir, path, sizeof path), "pipeline cache written to %s", cachedir);

    /* second open: reads the cache; descriptor pools and fences instead of push descriptors and
     * the timeline semaphore; no errors */
    int unexpected0 = g_unexpected, loaded0 = g_cache_loaded;
    setenv("MOESTREAM_DISABLE_PUSH_DESCRIPTOR", "1", 1);
    setenv("MOESTREAM_DISABLE_TIMELINE_SEMAPHORE", "1", 1);
    rc = open_vk(&vk, validation);
    CHECK_RC(rc, 0, "second open");
    if (!rc) {
        CHECK(g_cache_loaded == loaded0 + 1, "pipeline cache read on the second open");
        test_pipelines(vk, 1);
        test_cmd(vk);
        end_checks(vk, "second open");
        ms_vk_close(vk);
    }
    unsetenv("MOESTREAM_DISABLE_PUSH_DESCRIPTOR");
    unsetenv("MOESTREAM_DISABLE_TIMELINE_SEMAPHORE");
    CHECK(g_unexpected == unexpected0, "second open logged %d errors/warnings",
          g_unexpected - unexpected0);

    /* corrupt caches are ignored, never fatal, and replaced at close */
    static const size_t lens[2] = {10, 4096};
    for (int k = 0; k < 2 && find_cache_file(cachedir, path, sizeof path); k++) {
        FILE *f = fopen(path, "wb");
        uint8_t junk[4096];
        fill_random(junk, sizeof junk);
        junk[0] = 32; /* plausible header size, wrong everything else */
        junk[1] = junk[2] = junk[3] = 0;
        if (f) {
            fwrite(junk, 1, lens[k], f);
            fclose(f);
        }
        int ignored0 = g_cache_ignored;
        unexpected0 = g_unexpected;
        rc = open_vk(&vk, validation);
        CHECK_RC(rc, 0, "open with a corrupt cache");
        if (rc) break;
        CHECK(g_cache_ignored == ignored0 + 1, "corrupt cache %d ignored", k);
        test_pipelines(vk, 2);
        end_checks(vk, "corrupt cache");
        ms_vk_close(vk);
        CHECK(g_unexpected == unexpected0, "corrupt cache: no errors");
    }

    /* device selection errors */
    g_expect++;
    setenv("MOESTREAM_DEVICE", "99", 1);
    vk = NULL;
    rc = open_vk(&vk, false);
    CHECK_RC(rc, -MS_E_RANGE, "MOESTREAM_DEVICE out of range");
    CHECK(vk == NULL, "no handle on error");
    setenv("MOESTREAM_DEVICE", "abc", 1);
    rc = open_vk(&vk, false);
    CHECK_RC(rc, -MS_E_INVALID_ARG, "MOESTREAM_DEVICE not a number");
    unsetenv("MOESTREAM_DEVICE");
    ms_vk_opts o = ms_vk_opts_default();
    ms_env_vk_opts(&o, NULL, 0);
    o.device_index = (int32_t)n;
    rc = ms_vk_open(&vk, &o);
    CHECK_RC(rc, -MS_E_RANGE, "device_index out of range");
    g_expect--;

    /* a missing validation layer: an error naming the package when required, else a warning */
    setenv("VK_LOADER_LAYERS_DISABLE", "VK_LAYER_KHRONOS_validation", 1);
    g_expect++;
    int errors0 = g_errors_seen;
    o = ms_vk_opts_default();
    ms_env_vk_opts(&o, NULL, 0);
    o.validation = o.validation_required = true;
    rc = ms_vk_open(&vk, &o);
    CHECK_RC(rc, -MS_E_UNSUPPORTED, "validation required but missing");
    CHECK(g_errors_seen == errors0 + 1 && strstr(g_last_error, "vulkan-validationlayers"),
          "one error naming the package: %s", g_last_error);
    o.validation_required = false;
    unsetenv("MOESTREAM_VALIDATION_REQUIRED");
    rc = ms_vk_open(&vk, &o);
    CHECK_RC(rc, 0, "validation wanted but missing");
    if (!rc) {
        CHECK(!ms_vk_validation_enabled(vk), "validation off without the layer");
        ms_vk_close(vk);
    }
    g_expect--;
    unsetenv("VK_LOADER_LAYERS_DISABLE");

    remove_dir(cachedir);
    char sub[sizeof dir + 8];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    rmdir(sub);
    rmdir(dir);

    ms_alloc_stats as;
    ms_alloc_get_stats(&as);
    CHECK(as.n_live == 0, "%llu host allocations leaked", (unsigned long long)as.n_live);
    if (g_unexpected) printf("FAIL: %d unexpected errors/warnings logged\n", g_unexpected);
    if (g_fail || g_unexpected) {
        printf("test_vk_core: %d failures (seed %llu)\n", g_fail, (unsigned long long)seed0);
        return 1;
    }
    printf("test_vk_core: ok\n");
    return 0;
}
