/* engine/vk/ops.c — weights resident in device memory and the op recorders (GEMV, RMSNorm).
 *
 * Uses only the public Vulkan-core API of engine/vk/vk.h. Shader layouts: shaders/gemv.h,
 * shaders/rmsnorm.h. Recorders validate every size against the bound ranges and return
 * -MS_E_INVALID_ARG (with a logged reason) rather than record an out-of-bounds dispatch.
 */
#include "engine/vk/vk.h"
#include "engine/vk/ops_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "shaders/fq.h"
#include "shaders/gemv.h"
#include "shaders/hc.h"
#include "shaders/rmsnorm.h"
#include "shaders/rope.h"
#include "shaders/router.h"
#include "shaders/swiglu.h"

#define ROW_ALIGN 128u /* part boundaries: the FP8 scale block height */

static const char *const k_gemv_variant[MS_WENC_COUNT] = {"gemv_f32", "gemv_bf16", "gemv_fp8", "gemv_fp4"};
static const char *const k_gemv_tiled_variant[MS_WENC_COUNT] = {"gemv_tiled_f32", "gemv_tiled_bf16",
                                                               "gemv_tiled_fp8", "gemv_tiled_fp4"};
static const uint32_t k_chunk_elems[MS_WENC_COUNT] = {4, 8, 16, 32}; /* elements per 16 bytes */

static bool enc_valid(ms_wenc enc) { return (unsigned)enc < (unsigned)MS_WENC_COUNT; }
static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }
static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static uint64_t row_bytes(ms_wenc enc, uint32_t k) { return (uint64_t)k * 16 / k_chunk_elems[enc]; }

static uint64_t scale_bytes(ms_wenc enc, uint32_t row0, uint32_t rows, uint32_t k) {
    return ms_wenc_scale_rows_bytes(enc, row0, rows, k);
}
static uint64_t scale_offset(ms_wenc enc, uint32_t row0, uint32_t k) {
    return ms_wenc_scale_rows_offset(enc, row0, k);
}

/* ---------------------------------------------------------------- weights */

void ms_vk_weight_free(ms_vk *vk, ms_vk_weight *w) {
    if (!w) return;
    for (uint32_t i = 0; i < w->n_parts && i < MS_VK_MAX_PARTS; i++) {
        ms_vk_buf_free(vk, &w->part[i].data);
        ms_vk_buf_free(vk, &w->part[i].scale);
    }
    memset(w, 0, sizeof *w);
}

int ms_vk_weight_upload(ms_vk *vk, const ms_weight_view *w, uint64_t max_part_bytes, ms_vk_weight *out) {
    if (!vk || !w || !out) return -MS_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (!enc_valid(w->enc)) {
        MS_LOGE("weight upload: unknown encoding %d", (int)w->enc);
        return -MS_E_UNSUPPORTED;
    }
    const char *en = ms_wenc_name(w->enc);
    const uint32_t kmul = w->enc == MS_WENC_FP4 ? 32 : k_chunk_elems[w->enc];
    if (w->m < 1 || w->k < 1 || w->k % kmul != 0) {
        MS_LOGE("weight upload: %s weight [%u x %u]: need m >= 1 and k a positive multiple of %u "
                "(rows must start 16-byte aligned%s)",
                en, w->m, w->k, kmul, w->enc == MS_WENC_FP4 ? " and hold whole 32-element scale blocks" : "");
        return -MS_E_UNSUPPORTED;
    }
    if (!w->data || ((w->enc == MS_WENC_FP8 || w->enc == MS_WENC_FP4) && !w->scale)) {
        MS_LOGE("weight upload: %s weight [%u x %u]: missing %s array", en, w->m, w->k, w->data ? "scale" : "data");
        return -MS_E_INVALID_ARG;
    }

    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    uint64_t limit = min_u64(caps->max_storage_buffer_range, caps->max_memory_allocation_size);
    if (caps->max_buffer_size) limit = min_u64(limit, caps->max_buffer_size);
    if (max_part_bytes) limit = min_u64(limit, max_part_bytes);
    /* The shader indexes 16-byte chunks and scale words with 32-bit integers. */
    limit = min_u64(limit, 0xFFFFFFF0ull);

    const uint64_t rb = row_bytes(w->enc, w->k);
    /* Rows per part: the largest multiple of 128 whose data (and scales, rounded up to whole words)
     * fit the limit; the whole matrix when it fits in one part. */
    uint64_t rows_fit = limit / rb;
    if (rows_fit >= w->m && (scale_bytes(w->enc, 0, w->m, w->k) + 3) / 4 * 4 <= limit) {
        rows_fit = w->m;
    } else {
        rows_fit = rows_fit / ROW_ALIGN * ROW_ALIGN;
        while (rows_fit && (scale_bytes(w->enc, 0, (uint32_t)rows_fit, w->k) + 3) / 4 * 4 > limit)
            rows_fit -= ROW_ALIGN;
        if (rows_fit == 0) {
            MS_LOGE("weight upload: %s weight [%u x %u]: 128 rows take %llu bytes, more than the "
                    "%llu-byte part limit (binding range / allocation size%s)",
                    en, w->m, w->k, (unsigned long long)(rb * ROW_ALIGN), (unsigned long long)limit,
                    max_part_bytes ? " / max_part_bytes" : "");
            return -MS_E_UNSUPPORTED;
        }
    }
    const uint64_t n_parts = (w->m + rows_fit - 1) / rows_fit;
    if (n_parts > MS_VK_MAX_PARTS) {
        MS_LOGE("weight upload: %s weight [%u x %u] needs %llu parts of %llu rows (limit %llu bytes), "
                "more than MS_VK_MAX_PARTS=%d",
                en, w->m, w->k, (unsigned long long)n_parts, (unsigned long long)rows_fit,
                (unsigned long long)limit, MS_VK_MAX_PARTS);
        return -MS_E_UNSUPPORTED;
    }

    out->enc = w->enc;
    out->m = w->m;
    out->k = w->k;
    int rc = 0;
    for (uint32_t i = 0; i < n_parts; i++) {
        const uint32_t row0 = (uint32_t)(i * rows_fit);
        const uint32_t rows = (uint32_t)min_u64(rows_fit, w->m - row0);
        out->part[i].row0 = row0;
        out->part[i].rows = rows;
        out->n_parts = i + 1;
        const uint64_t db = rb * rows;
        rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, db, &out->part[i].data);
        if (!rc) rc = ms_vk_upload(vk, &out->part[i].data, 0, (const uint8_t *)w->data + rb * row0, db);
        const uint64_t sb = scale_bytes(w->enc, row0, rows, w->k);
        if (!rc && sb) {
            /* Rounded up to whole words: the shader reads scales as uint; the pad is never used. */
            rc = ms_vk_buf_alloc(vk, MS_VK_MEM_DEVICE, (sb + 3) / 4 * 4, &out->part[i].scale);
            if (!rc) rc = ms_vk_upload(vk, &out->part[i].scale, 0, w->scale + scale_offset(w->enc, row0, w->k), sb);
        }
        if (rc) {
            MS_LOGE("weight upload: %s weight [%u x %u], part %u (rows %u..%u): %s", en, w->m, w->k, i, row0,
                    row0 + rows - 1, ms_strerror(rc));
            ms_vk_weight_free(vk, out);
            return rc;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- GEMV tuning */

#define VENDOR_NVIDIA 0x10DEu
#define VENDOR_AMD 0x1002u
#define VENDOR_INTEL 0x8086u

static void tune_device_default(const ms_vk_caps *caps, ms_wenc enc, ms_vk_gemv_tune *t) {
    memset(t, 0, sizeof *t);
    if (caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        /* lavapipe/SwiftShader: a workgroup runs as SIMD loops on one thread, so small groups (8 x
         * 8-wide subgroups) spread across cores; more rows per group only grow the loop body. */
        t->wg_size = 64;
        t->rows_per_wg = 2;
        t->unroll = 1;
        return;
    }
    switch (caps->vendor_id) {
    case VENDOR_NVIDIA:
        /* Measured on an H200 (sweeps of wg x rows x unroll; tmp bench, see the ops report):
         * F32/BF16 stream at ~4.5 TB/s with 4 warps, 4 rows and 2 chunks per row in flight
         * (8 x 16-byte loads per lane). FP8 does best with 2 warps x 8 rows (4.45 TB/s at n = 1,
         * and it keeps more of that at n > 1, where x loads dominate). FP4 is bound by instruction
         * issue (~4 ops per weight: shifts/masks on the half-rate INT pipe, f16->f32, FMA) and by
         * x loads (8 bytes of x per weight byte): one warp and 8 rows per x chunk did best
         * (2.5-2.8 TB/s); 16 rows or unroll 2 lost. */
        t->wg_size = enc == MS_WENC_FP4 ? 32 : enc == MS_WENC_FP8 ? 64 : 128;
        t->rows_per_wg = enc == MS_WENC_FP4 || enc == MS_WENC_FP8 ? 8 : 4;
        t->unroll = enc == MS_WENC_FP4 || enc == MS_WENC_FP8 ? 1 : 2;
        return;
    case VENDOR_AMD:
        /* Wave64 (or wave32 on RDNA): 256 lanes keeps 4-8 waves per group; same reuse reasoning. */
        t->wg_size = 256;
        t->rows_per_wg = enc == MS_WENC_FP4 ? 8 : 4;
        t->unroll = 2;
        return;
    case VENDOR_INTEL:
        /* SIMD8-32 EUs with small register files per lane: fewer rows, moderate groups. */
        t->wg_size = 128;
        t->rows_per_wg = 2;
        t->unroll = 2;
        return;
    default:
        t->wg_size = 128;
        t->rows_per_wg = 2;
        t->unroll = 2;
        return;
    }
}

/* Which kernel: gemv_tiled_<enc> (x staged in shared memory per K-tile, each subgroup owns its
 * rows) for FP4 and for n > 1, where x traffic and FP4 decoding bound gemv.comp; gemv_<enc> for
 * F32/BF16/FP8 at n = 1, which already stream at ~90% of the H200's bandwidth. */
static bool gemv_tiled(const ms_vk *vk, ms_wenc enc, uint32_t n, uint32_t kernel) {
    if (kernel == MS_VK_GEMV_CLASSIC) return false;
    if (kernel == MS_VK_GEMV_TILED) return true;
    if (ms_vk_get_opts(vk)->disable_tiled_gemv) return false;
    return enc == MS_WENC_FP4 || n > 1;
}

/* Defaults of the tiled kernel; rows_per_wg is rows per workgroup = rows per subgroup x subgroups. */
static void tune_tiled_default(const ms_vk_caps *caps, ms_wenc enc, uint32_t n, ms_vk_gemv_tune *t) {
    memset(t, 0, sizeof *t);
    const uint32_t sg = caps->subgroup_size ? caps->subgroup_size : 1;
    uint32_t wg, rows_sg;
    if (caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        wg = 64;
        rows_sg = n <= 2 ? 2 : 1;
    } else if (caps->vendor_id == VENDOR_NVIDIA) {
        /* H200 sweep (docs/bench-ledger.md, 2026-11-30): 4 rows per warp won at every n (FP4 n = 1
         * 2.75 TB/s with 4 warps, the same with 8 rows a warp but 38% slower alone; FP4 n = 4 and
         * FP8 n = 8 best with 8 warps: 1.17 / 1.24 TB/s; 16 warps or unroll 2 lost). */
        wg = enc == MS_WENC_FP4 && n == 1 ? 128 : 256;
        rows_sg = 4;
    } else {
        wg = 256;
        rows_sg = n <= 2 ? 4 : 2;
    }
    if (wg < sg) wg = sg;
    t->wg_size = wg;
    t->rows_per_wg = rows_sg * (wg / sg);
    t->unroll = 1;
}

void ms_vk_gemv_tune_default(const ms_vk *vk, ms_wenc enc, ms_vk_gemv_tune *out) {
    if (!out) return;
    if (!vk) {
        memset(out, 0, sizeof *out);
        return;
    }
    if (!enc_valid(enc)) enc = MS_WENC_F32;
    if (gemv_tiled(vk, enc, 1, MS_VK_GEMV_AUTO))
        tune_tiled_default(ms_vk_get_caps(vk), enc, 1, out);
    else
        tune_device_default(ms_vk_get_caps(vk), enc, out);
}

/* Fill zero fields of *t with defaults adapted to the shape: fewer rows per group for large n
 * (rows x n accumulators live in registers), and smaller groups when a row has too few chunks to
 * give every invocation two steps (short-K rows otherwise leave most lanes idle: H200 FP8
 * [65536 x 1536], 96 chunks a row: 32 lanes 3.99 TB/s, 128 lanes 2.64). */
static void tune_resolve(const ms_vk_caps *caps, ms_wenc enc, uint32_t m, uint32_t k, uint32_t n,
                         ms_vk_gemv_tune *t) {
    ms_vk_gemv_tune d;
    tune_device_default(caps, enc, &d);
    const bool gpu = caps->type != VK_PHYSICAL_DEVICE_TYPE_CPU;
    const bool rows_set = t->rows_per_wg != 0;
    if (!t->rows_per_wg) {
        /* x loads scale with n / rows; registers with rows x n. H200: more rows won at every n
         * (x-load bound; FP4 n = 8: 8 rows 431 GB/s, 4 rows 253), so shrink only past 64. */
        uint32_t r = d.rows_per_wg;
        while (r > 1 && r * n > 64) r /= 2;
        /* A matrix of few long rows (the mHC mixing matrix: 24 x 16384 F32) would run on a
         * handful of workgroups, each walking its rows serially: one row per workgroup there. */
        while (gpu && r > 1 && (m + r - 1) / r < 64) r /= 2;
        t->rows_per_wg = r;
    }
    if (!t->unroll) t->unroll = d.unroll;
    if (!t->wg_size) {
        const uint32_t nch = k / k_chunk_elems[enc];
        const uint32_t sg = t->subgroup_size ? t->subgroup_size : caps->subgroup_size;
        uint32_t wg = d.wg_size;
        while (wg > sg && (uint64_t)wg * t->unroll * 2 > nch) wg /= 2;
        /* ... and with still few workgroups, wider ones, while each lane keeps two steps
         * (H200, 24 x 16384 F32: 4 -> 1 rows and 128 -> 1024 lanes per workgroup) */
        while (gpu && !rows_set && m / t->rows_per_wg < 64 && wg < 1024 && wg * 2 <= caps->max_workgroup_invocations &&
               (uint64_t)wg * 2 * t->unroll * 2 <= nch)
            wg *= 2;
        t->wg_size = wg;
    }
}

/* ---------------------------------------------------------------- GEMV */

static int rec_gemv(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride, uint32_t group_rows,
                    uint32_t group_x, ms_vk_range y, uint32_t y_stride, uint32_t n, const ms_vk_gemv_tune *tune);

int ms_vk_rec_gemv(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride, ms_vk_range y,
                   uint32_t y_stride, uint32_t n, const ms_vk_gemv_tune *tune) {
    return rec_gemv(c, w, x, x_stride, 0, 0, y, y_stride, n, tune);
}

int ms_vk_rec_gemv_grouped(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride,
                           uint32_t group_rows, uint32_t group_x, ms_vk_range y, uint32_t y_stride, uint32_t n,
                           const ms_vk_gemv_tune *tune) {
    if (!w || !group_rows || w->m % group_rows || group_rows % 128) {
        MS_LOGE("rec_gemv_grouped: groups of %u rows must be a multiple of 128 that divides the %u rows",
                group_rows, w ? w->m : 0);
        return -MS_E_INVALID_ARG;
    }
    return rec_gemv(c, w, x, x_stride, group_rows, group_x, y, y_stride, n, tune);
}

static int rec_gemv(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride, uint32_t group_rows,
                    uint32_t group_x, ms_vk_range y, uint32_t y_stride, uint32_t n, const ms_vk_gemv_tune *tune) {
    if (!c || !w) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    if (!enc_valid(w->enc) || w->n_parts < 1 || w->n_parts > MS_VK_MAX_PARTS || w->m < 1) {
        MS_LOGE("rec_gemv: weight not uploaded (enc %d, %u parts)", (int)w->enc, w->n_parts);
        return -MS_E_INVALID_ARG;
    }
    const char *en = ms_wenc_name(w->enc);
    if (n < 1 || n > MS_GEMV_MAX_COLS) {
        MS_LOGE("rec_gemv: %s [%u x %u]: n = %u activation columns, supported 1..%d", en, w->m, w->k, n,
                MS_GEMV_MAX_COLS);
        return -MS_E_INVALID_ARG;
    }
    if (x_stride < w->k || y_stride < w->m) {
        MS_LOGE("rec_gemv: %s [%u x %u]: x_stride %u must be >= k and y_stride %u >= m", en, w->m, w->k, x_stride,
                y_stride);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t x_need =
        ((uint64_t)(n - 1) * x_stride + (group_rows ? (uint64_t)(w->m / group_rows - 1) * group_x : 0) + w->k) * 4;
    const uint64_t y_need = ((uint64_t)(n - 1) * y_stride + w->m) * 4;
    if (x.size < x_need || y.size < y_need || !x.buffer || !y.buffer) {
        MS_LOGE("rec_gemv: %s [%u x %u], n %u: x range %llu bytes (need %llu: (n-1)*x_stride %u + k floats), "
                "y range %llu bytes (need %llu: (n-1)*y_stride %u + m floats)",
                en, w->m, w->k, n, (unsigned long long)x.size, (unsigned long long)x_need, x_stride,
                (unsigned long long)y.size, (unsigned long long)y_need, y_stride);
        return -MS_E_INVALID_ARG;
    }
    if (x.size > caps->max_storage_buffer_range || y.size > caps->max_storage_buffer_range) {
        MS_LOGE("rec_gemv: %s: x or y range exceeds maxStorageBufferRange (%llu bytes)", en,
                (unsigned long long)caps->max_storage_buffer_range);
        return -MS_E_INVALID_ARG;
    }
    if (x_need / 4 > 0xFFFFFFFFull || y_need / 4 > 0xFFFFFFFFull) {
        MS_LOGE("rec_gemv: %s: activations exceed 2^32 floats", en);
        return -MS_E_INVALID_ARG;
    }

    ms_vk_gemv_tune t;
    if (tune)
        t = *tune;
    else
        memset(&t, 0, sizeof t);
    if (t.kernel > MS_VK_GEMV_TILED) {
        MS_LOGE("rec_gemv: %s: unknown kernel %u (0 auto, 1 classic, 2 tiled)", en, t.kernel);
        return -MS_E_INVALID_ARG;
    }
    const bool tiled = gemv_tiled(vk, w->enc, n, t.kernel);
    uint32_t spec[MS_GEMV_N_SPEC];
    uint32_t req_sg = t.subgroup_size;
    if (tiled) {
        /* Every subgroup owns rows_per_wg / (wg / sg) rows; the shader needs the exact subgroup
         * size, so it is pinned where the device may vary it. */
        const uint32_t sg = t.subgroup_size ? t.subgroup_size : caps->subgroup_size;
        if (!req_sg && caps->subgroup_size_control && caps->subgroup_size_min != caps->subgroup_size_max)
            req_sg = sg;
        ms_vk_gemv_tune d;
        tune_tiled_default(caps, w->enc, n, &d);
        if (!t.wg_size) t.wg_size = d.wg_size;
        if (!t.rows_per_wg && sg && d.wg_size >= sg && t.wg_size >= sg)
            t.rows_per_wg = d.rows_per_wg / (d.wg_size / sg) * (t.wg_size / sg);
        const uint64_t v4 = k_chunk_elems[w->enc] / 4;
        if (!t.unroll) {
            t.unroll = d.unroll;
            while (t.unroll > 1 && n * v4 * ((uint64_t)sg * t.unroll + 1) * 16 > caps->max_shared_memory)
                t.unroll /= 2;
        }
        const uint32_t nsg = sg ? t.wg_size / sg : 0;
        const uint32_t rows_sg = nsg ? t.rows_per_wg / nsg : 0;
        const uint64_t shm = n * v4 * ((uint64_t)sg * t.unroll + 1) * 16;
        if (!is_pow2(sg) || !is_pow2(t.wg_size) || t.wg_size < sg || t.wg_size > caps->max_workgroup_invocations ||
            t.wg_size > 1024 || !is_pow2(rows_sg) || rows_sg * nsg != t.rows_per_wg || rows_sg > 64 ||
            t.unroll < 1 || t.unroll > 8 || shm > caps->max_shared_memory) {
            MS_LOGE("rec_gemv: %s (tiled): bad tune wg_size %u (power of two, >= subgroup %u, <= %u), rows_per_wg "
                    "%u (a power of two <= 64 per subgroup), unroll %u (1..8), or shared memory %llu > %u bytes",
                    en, t.wg_size, sg, caps->max_workgroup_invocations < 1024 ? caps->max_workgroup_invocations : 1024,
                    t.rows_per_wg, t.unroll, (unsigned long long)shm, caps->max_shared_memory);
            return -MS_E_INVALID_ARG;
        }
        spec[MS_GEMV_SPEC_ROWS] = rows_sg;
        spec[MS_GEMV_SPEC_SG_MIN] = sg;
    } else {
        tune_resolve(caps, w->enc, w->m, w->k, n, &t);
        const uint32_t sg_min = t.subgroup_size ? t.subgroup_size : caps->subgroup_size_min;
        const uint32_t nsg_max = (t.wg_size + sg_min - 1) / sg_min;
        if (!is_pow2(t.wg_size) || t.wg_size > caps->max_workgroup_invocations || t.wg_size > 1024 ||
            !is_pow2(t.rows_per_wg) || t.rows_per_wg > 64 || t.unroll < 1 || t.unroll > 8 ||
            (t.subgroup_size && !is_pow2(t.subgroup_size)) ||
            (uint64_t)nsg_max * t.rows_per_wg * n * 4 > caps->max_shared_memory) {
            MS_LOGE("rec_gemv: %s: bad tune wg_size %u (power of two <= %u), rows_per_wg %u (power of two <= 64), "
                    "unroll %u (1..8), subgroup_size %u, or shared memory %llu > %u bytes",
                    en, t.wg_size, caps->max_workgroup_invocations < 1024 ? caps->max_workgroup_invocations : 1024,
                    t.rows_per_wg, t.unroll, t.subgroup_size, (unsigned long long)nsg_max * t.rows_per_wg * n * 4,
                    caps->max_shared_memory);
            return -MS_E_INVALID_ARG;
        }
        spec[MS_GEMV_SPEC_ROWS] = t.rows_per_wg;
        spec[MS_GEMV_SPEC_SG_MIN] = sg_min;
    }
    spec[MS_GEMV_SPEC_WG] = t.wg_size;
    spec[MS_GEMV_SPEC_UNROLL] = t.unroll;
    spec[MS_GEMV_SPEC_NCOLS] = n;
    spec[MS_GEMV_SPEC_X_VEC4] = (x_stride % 4 == 0 && group_x % 4 == 0 && x.offset % 16 == 0) ? 1u : 0u;
    /* grouped: a workgroup's rows (rows_per_wg, a power of two) must share one group, which holds
     * when they divide 128 (part and group starts are multiples of 128) */
    if (group_rows && 128 % t.rows_per_wg) {
        MS_LOGE("rec_gemv: %s: a grouped GEMV needs rows_per_wg dividing 128, got %u", en, t.rows_per_wg);
        return -MS_E_UNSUPPORTED;
    }
    const char *variant = tiled ? k_gemv_tiled_variant[w->enc] : k_gemv_variant[w->enc];
    ms_vk_pipeline *pipe;
    int rc = ms_vk_pipeline_get(vk, variant, spec, MS_GEMV_N_SPEC, req_sg, &pipe);
    if (rc) {
        MS_LOGE("rec_gemv: %s: no pipeline %s for wg %u rows %u unroll %u n %u subgroup %u: %s", en, variant,
                t.wg_size, t.rows_per_wg, t.unroll, n, req_sg, ms_strerror(rc));
        return rc;
    }

    for (uint32_t i = 0; i < w->n_parts; i++) {
        const uint32_t row0 = w->part[i].row0, rows = w->part[i].rows;
        ms_vk_range b[4];
        rc = ms_vk_op_weight_part("rec_gemv", w, i, &b[MS_GEMV_BIND_W], &b[MS_GEMV_BIND_S]);
        if (rc) return rc;
        b[MS_GEMV_BIND_X] = x;
        b[MS_GEMV_BIND_Y] = y;
        const ms_gemv_push pc = {.m = rows, .k = w->k, .x_stride = x_stride, .y_stride = y_stride, .y_row0 = row0,
                                 .group_rows = group_rows, .group_x = group_x};
        const uint32_t groups = (rows + t.rows_per_wg - 1) / t.rows_per_wg;
        const uint32_t gx = groups < caps->max_workgroup_count[0] ? groups : caps->max_workgroup_count[0];
        const uint32_t gy = (groups + gx - 1) / gx;
        if (gy > caps->max_workgroup_count[1]) {
            MS_LOGE("rec_gemv: %s: %u workgroups exceed the device grid", en, groups);
            return -MS_E_UNSUPPORTED;
        }
        rc = ms_vk_cmd_dispatch(c, pipe, b, 4, &pc, sizeof pc, gx, gy, 1);
        if (rc) return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- RMSNorm */

int ms_vk_rec_rmsnorm(ms_vk_cmd *c, ms_vk_range x, ms_vk_range w, ms_wenc w_enc, ms_vk_range y, uint32_t dim,
                      uint32_t n_rows, float eps) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    if (w_enc != MS_WENC_F32 && w_enc != MS_WENC_BF16) {
        MS_LOGE("rec_rmsnorm: weight encoding %d: only f32 and bf16 weights are supported", (int)w_enc);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t xy_need = (uint64_t)dim * n_rows * 4;
    const uint64_t w_need = (uint64_t)dim * (w_enc == MS_WENC_BF16 ? 2 : 4);
    if (dim < 1 || n_rows < 1 || xy_need / 4 > 0xFFFFFFFFull || x.size < xy_need || y.size < xy_need ||
        w.size < w_need || !x.buffer || !y.buffer || !w.buffer) {
        MS_LOGE("rec_rmsnorm: %u rows of dim %u: x range %llu, y range %llu bytes (need %llu), w range %llu "
                "bytes (need %llu)",
                n_rows, dim, (unsigned long long)x.size, (unsigned long long)y.size, (unsigned long long)xy_need,
                (unsigned long long)w.size, (unsigned long long)w_need);
        return -MS_E_INVALID_ARG;
    }
    if (w_enc == MS_WENC_BF16 && !caps->storage_16bit) {
        MS_LOGE("rec_rmsnorm: bf16 weights need 16-bit storage buffer access, which this device lacks");
        return -MS_E_UNSUPPORTED;
    }
    /* One group per row: wide enough to stream a 7168-wide row in a few steps per lane, small on
     * CPU devices where a group is a loop. */
    uint32_t wg = caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 64 : 256;
    if (wg > caps->max_workgroup_invocations) wg = caps->max_workgroup_invocations;
    while (wg > 32 && wg / 2 >= dim) wg /= 2;
    uint32_t spec[MS_RMSNORM_N_SPEC];
    spec[MS_RMSNORM_SPEC_WG] = wg;
    spec[MS_RMSNORM_SPEC_W_BF16] = w_enc == MS_WENC_BF16;
    spec[MS_RMSNORM_SPEC_SG_MIN] = caps->subgroup_size_min;
    ms_vk_pipeline *pipe;
    int rc = ms_vk_pipeline_get(vk, "rmsnorm", spec, MS_RMSNORM_N_SPEC, 0, &pipe);
    if (rc) {
        MS_LOGE("rec_rmsnorm: no pipeline (wg %u): %s", wg, ms_strerror(rc));
        return rc;
    }
    ms_vk_range b[3];
    b[MS_RMSNORM_BIND_X] = x;
    b[MS_RMSNORM_BIND_W] = w;
    b[MS_RMSNORM_BIND_Y] = y;
    const ms_rmsnorm_push pc = {.dim = dim, .n_rows = n_rows, .eps = eps};
    const uint32_t gx = n_rows < caps->max_workgroup_count[0] ? n_rows : caps->max_workgroup_count[0];
    const uint32_t gy = (n_rows + gx - 1) / gx;
    if (gy > caps->max_workgroup_count[1]) {
        MS_LOGE("rec_rmsnorm: %u rows exceed the device grid", n_rows);
        return -MS_E_UNSUPPORTED;
    }
    return ms_vk_cmd_dispatch(c, pipe, b, 3, &pc, sizeof pc, gx, gy, 1);
}

/* ------------------------------------------------------------------ mHC */

int ms_vk_rec_hc_pre(ms_vk_cmd *c, ms_vk_range mixraw, ms_vk_range h, ms_vk_range scale,
                     ms_vk_range base, ms_vk_range x, ms_vk_range post, ms_vk_range comb,
                     ms_vk_range norm, uint32_t dim, uint32_t hc, uint32_t n, uint32_t sinkhorn_iters,
                     float hc_eps, float rms_eps, bool head) {
    return ms_vk_rec_hc_pre_parts(c, mixraw, 0, h, scale, base, x, post, comb, norm, dim, hc, n,
                                  sinkhorn_iters, hc_eps, rms_eps, head);
}

int ms_vk_rec_hc_pre_parts(ms_vk_cmd *c, ms_vk_range mixraw, uint32_t n_parts, ms_vk_range h,
                           ms_vk_range scale, ms_vk_range base, ms_vk_range x, ms_vk_range post,
                           ms_vk_range comb, ms_vk_range norm, uint32_t dim, uint32_t hc, uint32_t n,
                           uint32_t sinkhorn_iters, float hc_eps, float rms_eps, bool head) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t mix_n = head ? hc : (uint64_t)(2 + hc) * hc;
    if (!dim || !hc || hc > MS_HC_MAX || !n || (!head && !sinkhorn_iters) ||
        (uint64_t)n * hc * dim > 0xFFFFFFFFull ||
        !ms_vk_op_range_ok(mixraw, n_parts ? 4 * (mix_n + 1) * n_parts * n : 4 * mix_n * n) ||
        !ms_vk_op_range_ok(h, 4ull * n * hc * dim) || !ms_vk_op_range_ok(scale, head ? 4 : 12) ||
        !ms_vk_op_range_ok(base, 4 * mix_n) || !ms_vk_op_range_ok(x, 4ull * n * dim) ||
        !ms_vk_op_range_ok(post, head ? 4 : 4ull * n * hc) || !ms_vk_op_range_ok(comb, head ? 4 : 4ull * n * hc * hc) ||
        (norm.size && !ms_vk_op_range_ok(norm, 2ull * dim))) {
        MS_LOGE("rec_hc_pre: %u tokens, hc %u, dim %u, %u Sinkhorn iterations: a range is too "
                "small or a size out of range",
                n, hc, dim, sinkhorn_iters);
        return -MS_E_INVALID_ARG;
    }
    /* One workgroup per token; at least hc*hc invocations own the combination matrix. At n = 1
     * the whole step is this one workgroup's loops over h (hc*dim floats) and x, so a GPU gets
     * the widest group it allows (H200, V4-Flash decode: 256 -> 1024 invocations). */
    uint32_t wg = caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 64 : caps->max_workgroup_invocations >= 1024 ? 1024 : 256;
    if (wg < hc * hc) wg = hc * hc;
    if (wg > caps->max_workgroup_invocations) {
        MS_LOGE("rec_hc_pre: hc %u needs %u invocations per workgroup; the device allows %u", hc,
                wg, caps->max_workgroup_invocations);
        return -MS_E_UNSUPPORTED;
    }
    uint32_t spec[MS_HC_PRE_N_SPEC];
    spec[MS_HC_PRE_SPEC_WG] = wg;
    spec[MS_HC_PRE_SPEC_HEAD] = head;
    spec[MS_HC_PRE_SPEC_SG_MIN] = caps->subgroup_size_min;
    ms_vk_range b[8];
    b[MS_HC_PRE_BIND_MIX] = mixraw;
    b[MS_HC_PRE_BIND_H] = h;
    b[MS_HC_PRE_BIND_SCALE] = scale;
    b[MS_HC_PRE_BIND_BASE] = base;
    b[MS_HC_PRE_BIND_X] = x;
    b[MS_HC_PRE_BIND_POST] = post;
    b[MS_HC_PRE_BIND_COMB] = comb;
    b[MS_HC_PRE_BIND_NORM] = norm.size ? norm : comb; /* unused without norm */
    ms_hc_pre_push pc = {.dim = dim, .hc = hc, .n = n, .sinkhorn_iters = sinkhorn_iters,
                         .hc_eps = hc_eps, .rms_eps = rms_eps, .norm = norm.size ? 1u : 0u,
                         .n_parts = n_parts};
    return ms_vk_op_dispatch(c, "hc_pre", spec, MS_HC_PRE_N_SPEC, b, 8, &pc, sizeof pc, NULL, n);
}

uint32_t ms_vk_hc_mix_slices(const ms_vk *vk, uint32_t dim, uint32_t hc) {
    const uint32_t wg = ms_vk_op_wg(ms_vk_get_caps(vk));
    return (uint32_t)(((uint64_t)hc * dim + wg - 1) / wg);
}

static int rec_hc_mix(ms_vk_cmd *c, const ms_vk_weight *fn, ms_vk_range y, ms_vk_range res, ms_vk_range post,
                      ms_vk_range comb, ms_vk_range h, ms_vk_range part, ms_vk_range flags, uint32_t watch,
                      uint32_t dim, uint32_t hc, uint32_t n, bool post_fused);

int ms_vk_rec_hc_mix(ms_vk_cmd *c, const ms_vk_weight *fn, ms_vk_range y, ms_vk_range res,
                     ms_vk_range post, ms_vk_range comb, ms_vk_range h, ms_vk_range part, uint32_t dim,
                     uint32_t hc, uint32_t n, bool post_fused) {
    return rec_hc_mix(c, fn, y, res, post, comb, h, part, part, 0, dim, hc, n, post_fused);
}

int ms_vk_rec_hc_mix_watch(ms_vk_cmd *c, const ms_vk_weight *fn, ms_vk_range y, ms_vk_range res,
                           ms_vk_range post, ms_vk_range comb, ms_vk_range h, ms_vk_range part,
                           ms_vk_range flags, uint32_t code, uint32_t dim, uint32_t hc, uint32_t n) {
    if (code == 0xFFFFFFFFu || !ms_vk_op_range_ok(flags, 4ull * n)) {
        MS_LOGE("rec_hc_mix: the flags range holds fewer than %u words, or the code is 0xFFFFFFFF", n);
        return -MS_E_INVALID_ARG;
    }
    return rec_hc_mix(c, fn, y, res, post, comb, h, part, flags, code + 1, dim, hc, n, true);
}

static int rec_hc_mix(ms_vk_cmd *c, const ms_vk_weight *fn, ms_vk_range y, ms_vk_range res, ms_vk_range post,
                      ms_vk_range comb, ms_vk_range h, ms_vk_range part, ms_vk_range flags, uint32_t watch,
                      uint32_t dim, uint32_t hc, uint32_t n, bool post_fused) {
    if (!c || !fn) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t total = (uint64_t)n * hc * dim;
    const uint32_t mix_n = fn->m, slices = dim && hc ? ms_vk_hc_mix_slices(vk, dim, hc) : 0;
    if (!dim || !hc || hc > MS_HC_MAX || !n || total > 0xFFFFFFFFull || fn->enc != MS_WENC_F32 ||
        fn->n_parts != 1 || fn->k != hc * dim || !mix_n || mix_n > (2 + MS_HC_MAX) * MS_HC_MAX ||
        !ms_vk_op_range_ok(h, 4 * total) ||
        !ms_vk_op_range_ok(part, 4ull * n * slices * (mix_n + 1)) ||
        (post_fused && (!ms_vk_op_range_ok(y, 4ull * n * dim) || !ms_vk_op_range_ok(res, 4 * total) ||
                        !ms_vk_op_range_ok(post, 4ull * n * hc) || !ms_vk_op_range_ok(comb, 4ull * n * hc * hc) ||
                        (res.buffer == h.buffer && res.offset < h.offset + h.size &&
                         h.offset < res.offset + res.size)))) {
        MS_LOGE("rec_hc_mix: %u tokens, hc %u, dim %u, fn %s [%u x %u] in %u part(s): a range is too small, "
                "h overlaps res, or fn is not one F32 part of [mix_n <= %u x hc*dim]",
                n, hc, dim, ms_wenc_name(fn->enc), fn->m, fn->k, fn->n_parts, (2 + MS_HC_MAX) * MS_HC_MAX);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t wg = ms_vk_op_wg(caps);
    uint32_t spec[MS_HC_MIX_N_SPEC];
    spec[MS_HC_MIX_SPEC_WG] = wg;
    spec[MS_HC_MIX_SPEC_POST] = post_fused;
    spec[MS_HC_MIX_SPEC_MIX] = mix_n;
    spec[MS_HC_MIX_SPEC_SG_MIN] = caps->subgroup_size_min;
    ms_vk_range fr = ms_vk_buf_range(&fn->part[0].data, 0, fn->part[0].data.size);
    ms_vk_range b[8];
    b[MS_HC_MIX_BIND_FN] = fr;
    b[MS_HC_MIX_BIND_FLAGS] = flags;
    b[MS_HC_MIX_BIND_Y] = post_fused ? y : fr;
    b[MS_HC_MIX_BIND_RES] = post_fused ? res : fr;
    b[MS_HC_MIX_BIND_POST] = post_fused ? post : fr;
    b[MS_HC_MIX_BIND_COMB] = post_fused ? comb : fr;
    b[MS_HC_MIX_BIND_H] = h;
    b[MS_HC_MIX_BIND_PART] = part;
    ms_hc_mix_push pc = {.dim = dim, .hc = hc, .n = n, .n_slices = slices, .watch = watch};
    return ms_vk_op_dispatch(c, "hc_mix", spec, MS_HC_MIX_N_SPEC, b, 8, &pc, sizeof pc, &pc.groups_x,
                             (uint64_t)n * slices);
}

int ms_vk_rec_hc_post(ms_vk_cmd *c, ms_vk_range y, ms_vk_range res, ms_vk_range post,
                      ms_vk_range comb, ms_vk_range h, uint32_t dim, uint32_t hc, uint32_t n) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t total = (uint64_t)n * hc * dim;
    if (!dim || !hc || hc > MS_HC_MAX || !n || total > 0xFFFFFFFFull ||
        !ms_vk_op_range_ok(y, 4ull * n * dim) || !ms_vk_op_range_ok(res, 4 * total) ||
        !ms_vk_op_range_ok(post, 4ull * n * hc) || !ms_vk_op_range_ok(comb, 4ull * n * hc * hc) ||
        !ms_vk_op_range_ok(h, 4 * total) ||
        (res.buffer == h.buffer && res.offset < h.offset + h.size && h.offset < res.offset + res.size)) {
        MS_LOGE("rec_hc_post: %u tokens, hc %u, dim %u: a range is too small, or h overlaps res",
                n, hc, dim);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t wg = ms_vk_op_wg(caps), spec[MS_HC_POST_N_SPEC] = {wg};
    ms_vk_range b[5];
    b[MS_HC_POST_BIND_Y] = y;
    b[MS_HC_POST_BIND_RES] = res;
    b[MS_HC_POST_BIND_POST] = post;
    b[MS_HC_POST_BIND_COMB] = comb;
    b[MS_HC_POST_BIND_H] = h;
    ms_hc_post_push pc = {.dim = dim, .hc = hc, .n = n};
    return ms_vk_op_dispatch(c, "hc_post", spec, MS_HC_POST_N_SPEC, b, 5, &pc, sizeof pc,
                           &pc.groups_x, (total + wg - 1) / wg);
}

int ms_vk_rec_hc_embed(ms_vk_cmd *c, ms_vk_range tokens, ms_vk_range embed, ms_vk_range h,
                       uint32_t vocab, uint32_t dim, uint32_t hc, uint32_t n) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t total = (uint64_t)n * hc * dim;
    if (!dim || !hc || hc > MS_HC_MAX || !n || !vocab || total > 0xFFFFFFFFull ||
        (uint64_t)vocab * dim > 0xFFFFFFFFull || !ms_vk_op_range_ok(tokens, 4ull * n) ||
        !ms_vk_op_range_ok(embed, 2ull * vocab * dim) || !ms_vk_op_range_ok(h, 4 * total)) {
        MS_LOGE("rec_hc_embed: %u tokens, vocab %u, dim %u, hc %u: a range is too small or a "
                "size out of range",
                n, vocab, dim, hc);
        return -MS_E_INVALID_ARG;
    }
    if (!caps->storage_16bit) {
        MS_LOGE("rec_hc_embed: the BF16 embedding needs 16-bit storage access, which this device "
                "lacks");
        return -MS_E_UNSUPPORTED;
    }
    const uint32_t wg = ms_vk_op_wg(caps), spec[MS_HC_POST_N_SPEC] = {wg};
    ms_vk_range b[3];
    b[MS_HC_EMBED_BIND_TOK] = tokens;
    b[MS_HC_EMBED_BIND_EMBED] = embed;
    b[MS_HC_EMBED_BIND_H] = h;
    ms_hc_embed_push pc = {.dim = dim, .hc = hc, .n = n, .vocab = vocab};
    return ms_vk_op_dispatch(c, "hc_embed", spec, MS_HC_POST_N_SPEC, b, 3, &pc, sizeof pc,
                           &pc.groups_x, (total + wg - 1) / wg);
}

/* ------------------------------------------------------------------ RoPE */

int ms_vk_rec_rope(ms_vk_cmd *c, ms_vk_range x, ms_vk_range cs, uint32_t n, uint32_t n_heads,
                   uint32_t head_dim, uint32_t head_stride, uint32_t token_stride, uint32_t off,
                   uint32_t rope_dim, bool rms, float eps, bool inverse) {
    ms_vk_range none = {cs.buffer, cs.offset, 0};
    return ms_vk_rec_rope_norm(c, x, cs, none, n, n_heads, head_dim, head_stride, token_stride, off, rope_dim,
                               rms, eps, inverse);
}

int ms_vk_rec_rope_norm(ms_vk_cmd *c, ms_vk_range x, ms_vk_range cs, ms_vk_range w, uint32_t n,
                        uint32_t n_heads, uint32_t head_dim, uint32_t head_stride, uint32_t token_stride,
                        uint32_t off, uint32_t rope_dim, bool rms, float eps, bool inverse) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    /* the last element touched: the last head of the last token */
    const uint64_t last = (uint64_t)(n ? n - 1 : 0) * token_stride +
                          (uint64_t)(n_heads ? n_heads - 1 : 0) * head_stride + head_dim;
    if (!n || !n_heads || !head_dim || !rope_dim || rope_dim % 2 || off + rope_dim > head_dim ||
        (n_heads > 1 && head_stride < head_dim) || last > 0xFFFFFFFFull ||
        (uint64_t)n * n_heads > 0xFFFFFFFFull || !ms_vk_op_range_ok(x, 4 * last) ||
        !ms_vk_op_range_ok(cs, 4ull * n * rope_dim) || (w.size && (!rms || !ms_vk_op_range_ok(w, 2ull * head_dim)))) {
        MS_LOGE("rec_rope: %u tokens x %u heads of %u (stride %u, token stride %u), rotating "
                "[%u, %u): a range is too small or the layout is invalid",
                n, n_heads, head_dim, head_stride, token_stride, off, off + rope_dim);
        return -MS_E_INVALID_ARG;
    }
    uint32_t wg = 64;
    if (wg > caps->max_workgroup_invocations) wg = caps->max_workgroup_invocations;
    uint32_t spec[MS_ROPE_N_SPEC];
    spec[MS_ROPE_SPEC_WG] = wg;
    spec[MS_ROPE_SPEC_RMS] = w.size ? 2u : rms ? 1u : 0u;
    spec[MS_ROPE_SPEC_INVERSE] = inverse;
    spec[MS_ROPE_SPEC_SG_MIN] = caps->subgroup_size_min;
    ms_vk_range b[3];
    b[MS_ROPE_BIND_X] = x;
    b[MS_ROPE_BIND_CS] = cs;
    b[MS_ROPE_BIND_W] = w.size ? w : cs; /* unused without a weight */
    ms_rope_push pc = {.n = n, .n_heads = n_heads, .head_dim = head_dim,
                       .head_stride = head_stride, .token_stride = token_stride, .off = off,
                       .rope_dim = rope_dim, .eps = eps};
    return ms_vk_op_dispatch(c, "rope", spec, MS_ROPE_N_SPEC, b, 3, &pc, sizeof pc, &pc.groups_x,
                           (uint64_t)n * n_heads);
}

/* ------------------------------------------------------------------ stored-value rounding */

int ms_vk_rec_fq(ms_vk_cmd *c, ms_vk_range x, uint32_t n_rows, uint32_t row_stride, uint32_t len,
                 uint32_t quant, bool hadamard) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint32_t block = quant == 1 ? 64 : quant == 2 ? 32 : 1;
    const uint64_t need = (uint64_t)(n_rows ? n_rows - 1 : 0) * row_stride + len;
    if (!n_rows || !len || quant > 2 || len % block || row_stride < len ||
        need > 0xFFFFFFFFull || !ms_vk_op_range_ok(x, 4 * need) ||
        (hadamard && (len > MS_FQ_MAX_HADAMARD || (len & (len - 1))))) {
        MS_LOGE("rec_fq: %u rows of %u (stride %u), quant %u%s: invalid layout or range too small",
                n_rows, len, row_stride, quant, hadamard ? ", Hadamard" : "");
        return -MS_E_INVALID_ARG;
    }
    if (hadamard && caps->max_shared_memory < 4u * MS_FQ_MAX_HADAMARD) {
        MS_LOGE("rec_fq: the Hadamard rotation needs %u bytes of shared memory; the device has %u",
                4u * MS_FQ_MAX_HADAMARD, caps->max_shared_memory);
        return -MS_E_UNSUPPORTED;
    }
    uint32_t wg = 64;
    if (wg > caps->max_workgroup_invocations) wg = caps->max_workgroup_invocations;
    uint32_t spec[MS_FQ_N_SPEC];
    spec[MS_FQ_SPEC_WG] = wg;
    spec[MS_FQ_SPEC_QUANT] = quant;
    spec[MS_FQ_SPEC_HADAMARD] = hadamard;
    ms_fq_push pc = {.n_rows = n_rows, .row_stride = row_stride, .len = len};
    return ms_vk_op_dispatch(c, "fq", spec, MS_FQ_N_SPEC, &x, 1, &pc, sizeof pc, &pc.groups_x, n_rows);
}

/* ------------------------------------------------------------------ MoE router */

int ms_vk_rec_router(ms_vk_cmd *c, ms_vk_range logits, ms_vk_range bias, ms_vk_range tokens,
                     ms_vk_range tid2eid, ms_vk_range idx, ms_vk_range w, uint32_t n,
                     uint32_t n_experts, uint32_t k, uint32_t vocab, bool hash, bool norm,
                     float scale) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    if (!n || !n_experts || n_experts > MS_ROUTER_MAX_E || !k || k > MS_ROUTER_MAX_K || k > n_experts ||
        (uint64_t)n * n_experts > 0xFFFFFFFFull || !ms_vk_op_range_ok(logits, 4ull * n * n_experts) ||
        !ms_vk_op_range_ok(idx, 4ull * n * k) || !ms_vk_op_range_ok(w, 4ull * n * k) ||
        (!hash && !ms_vk_op_range_ok(bias, 4ull * n_experts)) ||
        (hash && (!vocab || !ms_vk_op_range_ok(tokens, 4ull * n) || !ms_vk_op_range_ok(tid2eid, 4ull * vocab * k))) ||
        !bias.buffer || !tokens.buffer || !tid2eid.buffer) {
        MS_LOGE("rec_router: %u tokens, %u experts (at most %u), top %u (at most %u)%s: a range is "
                "too small or a size out of range (every binding must be a buffer, unused ones too)",
                n, n_experts, MS_ROUTER_MAX_E, k, MS_ROUTER_MAX_K, hash ? ", hash routing" : "");
        return -MS_E_INVALID_ARG;
    }
    const uint32_t shared_need = 4 * (MS_ROUTER_MAX_E + MS_ROUTER_MAX_K);
    if (caps->max_shared_memory < shared_need) {
        MS_LOGE("rec_router: needs %u bytes of shared memory; the device has %u", shared_need,
                caps->max_shared_memory);
        return -MS_E_UNSUPPORTED;
    }
    uint32_t spec[MS_ROUTER_N_SPEC];
    spec[MS_ROUTER_SPEC_WG] = ms_vk_op_wg(caps);
    spec[MS_ROUTER_SPEC_HASH] = hash;
    spec[MS_ROUTER_SPEC_NORM] = norm;
    ms_vk_range b[6];
    b[MS_ROUTER_BIND_LOGITS] = logits;
    b[MS_ROUTER_BIND_BIAS] = bias;
    b[MS_ROUTER_BIND_TOK] = tokens;
    b[MS_ROUTER_BIND_T2E] = tid2eid;
    b[MS_ROUTER_BIND_IDX] = idx;
    b[MS_ROUTER_BIND_W] = w;
    ms_router_push pc = {.n = n, .n_experts = n_experts, .k = k, .vocab = hash ? vocab : 1,
                         .scale = scale};
    return ms_vk_op_dispatch(c, "router", spec, MS_ROUTER_N_SPEC, b, 6, &pc, sizeof pc, &pc.groups_x, n);
}

/* ------------------------------------------------------------------ expert activation */

int ms_vk_rec_swiglu(ms_vk_cmd *c, ms_vk_range gate, ms_vk_range up, ms_vk_range w, uint32_t n,
                     uint32_t inter, uint32_t stride, float limit) {
    if (!c) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint64_t need = (uint64_t)(n ? n - 1 : 0) * stride + inter;
    if (!n || !inter || stride < inter || need > 0xFFFFFFFFull || !(limit >= 0) ||
        !ms_vk_op_range_ok(gate, 4 * need) || !ms_vk_op_range_ok(up, 4 * need) || !ms_vk_op_range_ok(w, 4ull * n)) {
        MS_LOGE("rec_swiglu: %u rows of %u (stride %u), limit %g: invalid layout or range too small",
                n, inter, stride, (double)limit);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t wg = ms_vk_op_wg(caps), spec[MS_SWIGLU_N_SPEC] = {wg};
    ms_vk_range b[3];
    b[MS_SWIGLU_BIND_GATE] = gate;
    b[MS_SWIGLU_BIND_UP] = up;
    b[MS_SWIGLU_BIND_W] = w;
    ms_swiglu_push pc = {.n = n, .inter = inter, .stride = stride, .limit = limit};
    return ms_vk_op_dispatch(c, "swiglu", spec, MS_SWIGLU_N_SPEC, b, 3, &pc, sizeof pc,
                           &pc.groups_x, ((uint64_t)n * inter + wg - 1) / wg);
}
