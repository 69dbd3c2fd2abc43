/* engine/vk/ops_compress.c — the recorder of the gated-pooling compressor (V4_SPEC §3.4):
 * compress_pool (state update and pooling, one invocation per channel), a barrier, compress_emit
 * (norm, RoPE, Hadamard, rounding; one workgroup per completed block). Layout: shaders/compress.h. */
#include "engine/vk/vk.h"
#include "engine/vk/ops_internal.h"

#include "common/log.h"
#include "common/status.h"
#include "shaders/compress.h"

static uint64_t max_u64(uint64_t x, uint64_t y) { return x > y ? x : y; }

int ms_vk_rec_compress_phase(ms_vk_cmd *c, ms_vk_range a, ms_vk_range g, uint32_t in_stride, ms_vk_range ape,
                       ms_vk_range norm, ms_vk_range cs, ms_vk_range pos, ms_vk_range kv,
                       ms_vk_range score, ms_vk_range rows, uint32_t n, uint32_t ratio, uint32_t coff,
                       uint32_t d, uint32_t rope_dim, uint32_t n_rows, float eps, uint32_t quant,
                       bool hadamard, uint32_t phase) {
    if (!c || phase < MS_VK_COMPRESS_POOL || phase > MS_VK_COMPRESS_BOTH) return -MS_E_INVALID_ARG;
    ms_vk *vk = ms_vk_cmd_vk(c);
    const ms_vk_caps *caps = ms_vk_get_caps(vk);
    if (!n || !ratio || (coff != 1 && coff != 2) || d < 2 || d % 2 || d > MS_COMPRESS_MAX_D ||
        rope_dim % 2 || rope_dim > d || quant > 2 || (quant == 1 && (d - rope_dim) % 64) ||
        (quant == 2 && d % 32) || (hadamard && (d & (d - 1))) || !(eps >= 0)) {
        MS_LOGE("rec_compress: d %u, rope_dim %u, coff %u, ratio %u, quant %u%s, eps %g: unsupported "
                "(coff 1 or 2; d even <= %u; rope_dim even <= d; quant 1 needs (d - rope_dim) %% 64 == 0, "
                "quant 2 d %% 32 == 0, the Hadamard d a power of two)",
                d, rope_dim, coff, ratio, quant, hadamard ? ", Hadamard" : "", (double)eps, MS_COMPRESS_MAX_D);
        return -MS_E_INVALID_ARG;
    }
    const uint64_t w = (uint64_t)coff * d, in_need = (uint64_t)(n - 1) * in_stride + w;
    const uint64_t state = (uint64_t)coff * ratio * w, rows_need = max_u64((uint64_t)n_rows * d, 1);
    if (in_stride < w || in_need > 0xFFFFFFFFull || state > 0xFFFFFFFFull || rows_need > 0xFFFFFFFFull ||
        (uint64_t)n + ratio > 0xFFFFFFFFull || !ms_vk_op_range_ok(a, 4 * in_need) ||
        !ms_vk_op_range_ok(g, 4 * in_need) || !ms_vk_op_range_ok(ape, 4ull * ratio * w) ||
        !ms_vk_op_range_ok(norm, 2ull * d) || !ms_vk_op_range_ok(cs, max_u64(4ull * n * rope_dim, 8)) ||
        !ms_vk_op_range_ok(pos, 4) || !ms_vk_op_range_ok(kv, 4 * state) ||
        !ms_vk_op_range_ok(score, 4 * state) || !ms_vk_op_range_ok(rows, 4 * rows_need)) {
        MS_LOGE("rec_compress: %u tokens (stride %u) of %u x %llu, ratio %u, %u rows: a range is too "
                "small or a size out of range",
                n, in_stride, coff, (unsigned long long)d, ratio, n_rows);
        return -MS_E_INVALID_ARG;
    }
    const ms_vk_range outs[3] = {kv, score, rows}, ins[6] = {a, g, ape, norm, cs, pos};
    for (int i = 0; i < 3; i++) {
        bool bad = false;
        for (int k = i + 1; k < 3; k++) bad |= ms_vk_op_overlap(outs[i], outs[k]);
        for (int k = 0; k < 6; k++) bad |= ms_vk_op_overlap(outs[i], ins[k]);
        if (bad) {
            MS_LOGE("rec_compress: the %s range overlaps another binding", i == 0 ? "kv" : i == 1 ? "score" : "rows");
            return -MS_E_INVALID_ARG;
        }
    }
    /* emission: a power-of-two group (the tree reduction), about one invocation per two dims */
    uint32_t wg_emit = ms_vk_op_wg(caps);
    while (wg_emit & (wg_emit - 1)) wg_emit &= wg_emit - 1;
    while (wg_emit > 32 && wg_emit >= d) wg_emit /= 2;
    const uint32_t shared_need = 4 * (d + wg_emit);
    if (caps->max_shared_memory < shared_need) {
        MS_LOGE("rec_compress: d %u needs %u bytes of shared memory; the device has %u", d, shared_need,
                caps->max_shared_memory);
        return -MS_E_UNSUPPORTED;
    }

    /* Pooling: small groups, so that the d channels' sequential walks spread over the GPU. */
    uint32_t wg_pool = 64;
    if (wg_pool > caps->max_workgroup_invocations) wg_pool = caps->max_workgroup_invocations;
    const uint32_t spec_pool[MS_COMPRESS_POOL_N_SPEC] = {wg_pool};
    ms_vk_range bp[MS_COMPRESS_POOL_N_BIND];
    bp[MS_COMPRESS_POOL_BIND_A] = a;
    bp[MS_COMPRESS_POOL_BIND_G] = g;
    bp[MS_COMPRESS_POOL_BIND_APE] = ape;
    bp[MS_COMPRESS_POOL_BIND_POS] = pos;
    bp[MS_COMPRESS_POOL_BIND_KV] = kv;
    bp[MS_COMPRESS_POOL_BIND_SCORE] = score;
    bp[MS_COMPRESS_POOL_BIND_ROWS] = rows;
    ms_compress_pool_push pp = {.n = n, .in_stride = in_stride, .ratio = ratio, .coff = coff, .d = d,
                                .n_rows = n_rows};
    if (phase & MS_VK_COMPRESS_POOL) {
        int rc = ms_vk_op_dispatch(c, "compress_pool", spec_pool, MS_COMPRESS_POOL_N_SPEC, bp,
                                   MS_COMPRESS_POOL_N_BIND, &pp, sizeof pp, &pp.groups_x,
                                   (d + wg_pool - 1) / wg_pool);
        if (rc || phase == MS_VK_COMPRESS_POOL) return rc;
    }
    if (phase == MS_VK_COMPRESS_BOTH) ms_vk_cmd_barrier(c);

    /* Emission: n consecutive tokens complete at most ceil(n / ratio) blocks. */
    uint32_t spec_emit[MS_COMPRESS_EMIT_N_SPEC];
    spec_emit[MS_COMPRESS_SPEC_WG] = wg_emit;
    spec_emit[MS_COMPRESS_SPEC_QUANT] = quant;
    spec_emit[MS_COMPRESS_SPEC_HADAMARD] = hadamard;
    spec_emit[MS_COMPRESS_SPEC_D] = d;
    ms_vk_range be[MS_COMPRESS_EMIT_N_BIND];
    be[MS_COMPRESS_EMIT_BIND_ROWS] = rows;
    be[MS_COMPRESS_EMIT_BIND_NORM] = norm;
    be[MS_COMPRESS_EMIT_BIND_CS] = cs;
    be[MS_COMPRESS_EMIT_BIND_POS] = pos;
    ms_compress_emit_push pe = {.n = n, .ratio = ratio, .rope_dim = rope_dim, .n_rows = n_rows, .eps = eps};
    return ms_vk_op_dispatch(c, "compress_emit", spec_emit, MS_COMPRESS_EMIT_N_SPEC, be,
                             MS_COMPRESS_EMIT_N_BIND, &pe, sizeof pe, &pe.groups_x,
                             ((uint64_t)n + ratio - 1) / ratio);
}

int ms_vk_rec_compress(ms_vk_cmd *c, ms_vk_range a, ms_vk_range g, uint32_t in_stride, ms_vk_range ape,
                       ms_vk_range norm, ms_vk_range cs, ms_vk_range pos, ms_vk_range kv,
                       ms_vk_range score, ms_vk_range rows, uint32_t n, uint32_t ratio, uint32_t coff,
                       uint32_t d, uint32_t rope_dim, uint32_t n_rows, float eps, uint32_t quant,
                       bool hadamard) {
    return ms_vk_rec_compress_phase(c, a, g, in_stride, ape, norm, cs, pos, kv, score, rows, n, ratio, coff, d,
                                    rope_dim, n_rows, eps, quant, hadamard, MS_VK_COMPRESS_BOTH);
}
