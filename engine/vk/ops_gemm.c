/* engine/vk/ops_gemm.c — the prefill GEMM recorder (shaders/gemm.comp, layout shaders/gemm.h): the
 * operation of ms_vk_rec_gemv for many tokens, one dispatch per weight part.
 *
 * Tuning: a tile of BM rows x BN tokens per workgroup, TM x TN outputs per invocation, KS K slices.
 * The per-device defaults below come from measurements (docs/bench-ledger.md); every tune the
 * sweep of `test_ops --perf -o gemm --sweep` tries is also run by the `gemm` test family. */
#include "engine/vk/vk.h"
#include "engine/vk/ops_internal.h"

#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "shaders/gemm.h"

#define VENDOR_NVIDIA 0x10DEu

static const char *const k_gemm_variant[MS_WENC_COUNT] = {"gemm_f32", "gemm_bf16", "gemm_fp8", "gemm_fp4"};
static const uint32_t k_chunk_elems[MS_WENC_COUNT] = {4, 8, 16, 32}; /* elements per 16 bytes */

static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

static void set_tune(ms_vk_gemm_tune *t, uint32_t bm, uint32_t bn, uint32_t bk, uint32_t tm, uint32_t tn,
                     uint32_t ks) {
    t->tile_rows = bm;
    t->tile_tokens = bn;
    t->tile_k = bk;
    t->rows_per_inv = tm;
    t->tokens_per_inv = tn;
    t->wg_size = (bm / tm) * (bn / tn) * ks;
    t->k_unroll = 0;
}

void ms_vk_gemm_tune_default(const ms_vk *vk, ms_wenc enc, uint32_t m, uint32_t k, uint32_t n,
                             ms_vk_gemm_tune *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!vk) return;
    (void)k;
    (void)n; /* the measured defaults do not depend on n yet */
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const uint32_t bk_min = (unsigned)enc < (unsigned)MS_WENC_COUNT ? k_chunk_elems[enc] : 32;
    const uint32_t bk = bk_min > 32 ? bk_min : 32;
    if (caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        /* lavapipe: a workgroup is a SIMD loop on one thread; 64 invocations with 4 x 4 outputs each
         * keep the loop body small and give the cores several groups each. 2 k steps unrolled: a
         * whole tile took LLVM 0.5-3 s per pipeline, which dominated the tests. */
        set_tune(out, 32, 32, bk, 4, 4, 1);
        out->k_unroll = 2;
        return;
    }
    if (caps->vendor_id == VENDOR_NVIDIA) {
        /* H200 (docs/bench-ledger.md, 2026-12-02): 64 x 64 tiles of 4 x 4 per invocation ran FP8
         * 7168x16384 and 4096x8192 at n = 64 at 25 TFLOP/s (1.3x the GEMV at n = 8), 1024x4096 with
         * 2 K slices at 21. 8 x 8 per invocation (128 x 128 tiles) took ~55 s to create a pipeline
         * on that driver, so no default uses it until a k_unroll that compiles fast is measured.
         * Few rows: K slices, so that the tiles still give every SM invocations. n > 64 has not been
         * measured (more tiles, the same per-invocation work). */
        set_tune(out, 64, 64, bk, 4, 4, m <= 2048 ? 2 : 1);
        return;
    }
    set_tune(out, 64, 64, bk, 4, 4, 1);
}

/* Fill the zero fields of *t from the default for the shape and check the result; 0, or
 * -MS_E_INVALID_ARG (malformed) / -MS_E_UNSUPPORTED (over this device's limits) with a logged reason. */
static int tune_resolve(const ms_vk *vk, ms_wenc enc, uint32_t m, uint32_t k, uint32_t n, ms_vk_gemm_tune *t,
                        uint32_t *ks_out) {
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    const char *en = ms_wenc_name(enc);
    ms_vk_gemm_tune d;
    ms_vk_gemm_tune_default(vk, enc, m, k, n, &d);
    const uint32_t d_ks = d.wg_size / ((d.tile_rows / d.rows_per_inv) * (d.tile_tokens / d.tokens_per_inv));
    if (!t->tile_rows) t->tile_rows = d.tile_rows;
    if (!t->tile_tokens) t->tile_tokens = d.tile_tokens;
    if (!t->tile_k) t->tile_k = d.tile_k;
    if (!t->rows_per_inv) t->rows_per_inv = d.rows_per_inv;
    if (!t->tokens_per_inv) t->tokens_per_inv = d.tokens_per_inv;
    const uint32_t bm = t->tile_rows, bn = t->tile_tokens, bk = t->tile_k, tm = t->rows_per_inv,
                   tn = t->tokens_per_inv;
    if (!t->k_unroll) t->k_unroll = caps->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 2 : t->tile_k;
    if ((tm != 4 && tm != 8) || (tn != 4 && tn != 8) || !is_pow2(bm) || !is_pow2(bn) || !is_pow2(bk) ||
        bm < tm || bn < tn || bm > 1024 || bn > 1024 || bk < k_chunk_elems[enc] || bk > 1024 ||
        !is_pow2(t->k_unroll) || t->k_unroll > bk) {
        MS_LOGE("rec_gemm: %s: bad tune: tile %u rows x %u tokens x %u k, %u x %u per invocation, k_unroll %u "
                "(powers of two; 4 or 8 per invocation, tiles of at least that and at most 1024; tile_k >= %u; "
                "k_unroll <= tile_k)",
                en, bm, bn, bk, tm, tn, t->k_unroll, k_chunk_elems[enc]);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t plane = (bm / tm) * (bn / tn);
    if (!t->wg_size) {
        /* the default's K slices, also for a tile of the caller's; fewer where they do not fit */
        uint32_t ks = d_ks;
        while (ks > 1 && ((uint64_t)plane * ks > caps->max_workgroup_invocations || ks > bk ||
                          MS_GEMM_SHARED_BYTES((uint64_t)bm, bn, bk, ks) > caps->max_shared_memory))
            ks /= 2;
        t->wg_size = plane * ks;
    }
    const uint32_t wg = t->wg_size;
    if (!is_pow2(wg) || wg < plane || wg / plane > bk) {
        MS_LOGE("rec_gemm: %s: bad tune: wg_size %u must be a power of two, (%u / %u) * (%u / %u) = %u times "
                "the K slices (1..tile_k %u)",
                en, wg, bm, tm, bn, tn, plane, bk);
        return -MS_E_INVALID_ARG;
    }
    const uint32_t ks = wg / plane;
    const uint64_t shm = MS_GEMM_SHARED_BYTES((uint64_t)bm, bn, bk, ks);
    if (wg > caps->max_workgroup_invocations || shm > caps->max_shared_memory) {
        MS_LOGE("rec_gemm: %s: tune tile %ux%ux%u, %ux%u per invocation, %u invocations needs %llu bytes of "
                "shared memory and %u invocations; this device allows %u and %u",
                en, bm, bn, bk, tm, tn, wg, (unsigned long long)shm, wg, caps->max_shared_memory,
                caps->max_workgroup_invocations);
        return -MS_E_UNSUPPORTED;
    }
    *ks_out = ks;
    return 0;
}

int ms_vk_rec_gemm(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride, ms_vk_range y,
                   uint32_t y_stride, uint32_t n, const ms_vk_gemm_tune *tune) {
    if (!c || !w) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    if ((unsigned)w->enc >= (unsigned)MS_WENC_COUNT || w->n_parts < 1 || w->n_parts > MS_VK_MAX_PARTS || w->m < 1 ||
        w->k < 1) {
        MS_LOGE("rec_gemm: weight not uploaded (enc %d, %u parts)", (int)w->enc, w->n_parts);
        return -MS_E_INVALID_ARG;
    }
    const char *en = ms_wenc_name(w->enc);
    if (n < 1) {
        MS_LOGE("rec_gemm: %s [%u x %u]: n = 0 tokens", en, w->m, w->k);
        return -MS_E_INVALID_ARG;
    }
    if (x_stride < w->k || y_stride < w->m) {
        MS_LOGE("rec_gemm: %s [%u x %u]: x_stride %u must be >= k and y_stride %u >= m", en, w->m, w->k, x_stride,
                y_stride);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t x_need = ((uint64_t)(n - 1) * x_stride + w->k) * 4;
    const uint64_t y_need = ((uint64_t)(n - 1) * y_stride + w->m) * 4;
    if (!ms_vk_op_range_ok(x, x_need) || !ms_vk_op_range_ok(y, y_need)) {
        MS_LOGE("rec_gemm: %s [%u x %u], n %u: x range %llu bytes (need %llu: (n-1)*x_stride %u + k floats), "
                "y range %llu bytes (need %llu: (n-1)*y_stride %u + m floats)",
                en, w->m, w->k, n, (unsigned long long)x.size, (unsigned long long)x_need, x_stride,
                (unsigned long long)y.size, (unsigned long long)y_need, y_stride);
        return -MS_E_INVALID_ARG;
    }
    if (x.size > caps->max_storage_buffer_range || y.size > caps->max_storage_buffer_range) {
        MS_LOGE("rec_gemm: %s [%u x %u], n %u: x range %llu or y range %llu bytes exceeds maxStorageBufferRange "
                "(%llu bytes): split the tokens",
                en, w->m, w->k, n, (unsigned long long)x.size, (unsigned long long)y.size,
                (unsigned long long)caps->max_storage_buffer_range);
        return -MS_E_UNSUPPORTED;
    }
    /* The shader indexes floats with 32-bit integers (tokens past n are never addressed). */
    if (x_need / 4 > 0xFFFFFFFFull || y_need / 4 > 0xFFFFFFFFull) {
        MS_LOGE("rec_gemm: %s [%u x %u], n %u: activations exceed 2^32 floats: split the tokens", en, w->m, w->k, n);
        return -MS_E_UNSUPPORTED;
    }

    ms_vk_gemm_tune t;
    if (tune)
        t = *tune;
    else
        memset(&t, 0, sizeof t);
    uint32_t ks = 1;
    int rc = tune_resolve(vk, w->enc, w->m, w->k, n, &t, &ks);
    if (rc) return rc;
    uint32_t spec[MS_GEMM_N_SPEC];
    spec[MS_GEMM_SPEC_WG] = t.wg_size;
    spec[MS_GEMM_SPEC_BM] = t.tile_rows;
    spec[MS_GEMM_SPEC_BN] = t.tile_tokens;
    spec[MS_GEMM_SPEC_BK] = t.tile_k;
    spec[MS_GEMM_SPEC_TM] = t.rows_per_inv;
    spec[MS_GEMM_SPEC_TN] = t.tokens_per_inv;
    spec[MS_GEMM_SPEC_X_VEC4] = (x_stride % 4 == 0 && x.offset % 16 == 0) ? 1u : 0u;
    spec[MS_GEMM_SPEC_KU] = t.k_unroll;
    ms_vk_pipeline *pipe;
    rc = ms_vk_pipeline_get(vk, k_gemm_variant[w->enc], spec, MS_GEMM_N_SPEC, 0, &pipe);
    if (rc) {
        MS_LOGE("rec_gemm: %s: no pipeline for tile %ux%ux%u, %ux%u per invocation, %u invocations: %s", en,
                t.tile_rows, t.tile_tokens, t.tile_k, t.rows_per_inv, t.tokens_per_inv, t.wg_size, ms_strerror(rc));
        return rc;
    }

    const uint64_t n_tok_tiles = ((uint64_t)n + t.tile_tokens - 1) / t.tile_tokens;
    for (uint32_t i = 0; i < w->n_parts; i++) {
        const uint32_t row0 = w->part[i].row0, rows = w->part[i].rows;
        ms_vk_range b[4];
        rc = ms_vk_op_weight_part("rec_gemm", w, i, &b[MS_GEMM_BIND_W], &b[MS_GEMM_BIND_S]);
        if (rc) return rc;
        b[MS_GEMM_BIND_X] = x;
        b[MS_GEMM_BIND_Y] = y;
        const ms_gemm_push pc = {
            .m = rows, .k = w->k, .n = n, .x_stride = x_stride, .y_stride = y_stride, .y_row0 = row0};
        const uint64_t groups = ((uint64_t)rows + t.tile_rows - 1) / t.tile_rows * n_tok_tiles;
        uint32_t gx, gy;
        if (groups > 0xFFFFFFFFull || ms_vk_op_grid_2d(caps, groups, &gx, &gy) != 0) {
            MS_LOGE("rec_gemm: %s [%u x %u], n %u: %llu workgroups exceed the device grid", en, w->m, w->k, n,
                    (unsigned long long)groups);
            return -MS_E_UNSUPPORTED;
        }
        rc = ms_vk_cmd_dispatch(c, pipe, b, 4, &pc, sizeof pc, gx, gy, 1);
        if (rc) return rc;
    }
    return 0;
}
