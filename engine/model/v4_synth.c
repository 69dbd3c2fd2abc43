/* engine/model/v4_synth.c — synthetic V4 weights (see v4_synth.h). */
#include "engine/model/v4_synth.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* splitmix64 finaliser: a good 64-bit mix of a counter */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) { /* FNV-1a */
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

/* uniform in [-1, 1) from 53 bits */
static double unif(uint64_t r) { return (double)(r >> 11) * 0x1p-52 - 1.0; }

static uint16_t f32_to_bf16(float f) { /* round to nearest even; inputs here are finite */
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7FFF + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

uint64_t ms_v4_spec_bytes(const ms_v4_tensor_spec *t) {
    uint64_t n = t->shape[0] * (t->n_dims > 1 ? t->shape[1] : 1);
    return n * ms_st_dtype_size(t->dtype);
}

/* center + spread * U(-1, 1) per role; roles not listed (spread 0 here) are linears with spread
 * 1.7 / sqrt(k), which keeps outputs at the inputs' scale, or the embedding (U(-1, 1)). */
static const struct {
    float center, spread;
} k_law[MS_V4_ROLE_COUNT] = {
    [MS_V4_ROLE_NORM] = {1, 0.2f},          [MS_V4_ROLE_ATTN_NORM] = {1, 0.2f},
    [MS_V4_ROLE_FFN_NORM] = {1, 0.2f},      [MS_V4_ROLE_Q_NORM] = {1, 0.2f},
    [MS_V4_ROLE_KV_NORM] = {1, 0.2f},       [MS_V4_ROLE_CMP_NORM] = {1, 0.2f},
    [MS_V4_ROLE_IDX_CMP_NORM] = {1, 0.2f},  [MS_V4_ROLE_MTP_ENORM] = {1, 0.2f},
    [MS_V4_ROLE_MTP_HNORM] = {1, 0.2f},     [MS_V4_ROLE_MTP_NORM] = {1, 0.2f},
    [MS_V4_ROLE_HC_HEAD_SCALE] = {0.7f, 0.3f}, [MS_V4_ROLE_HC_ATTN_SCALE] = {0.7f, 0.3f},
    [MS_V4_ROLE_HC_FFN_SCALE] = {0.7f, 0.3f},  [MS_V4_ROLE_MTP_HC_HEAD_SCALE] = {0.7f, 0.3f},
    [MS_V4_ROLE_HC_HEAD_BASE] = {0, 1},     [MS_V4_ROLE_HC_ATTN_BASE] = {0, 1},
    [MS_V4_ROLE_HC_FFN_BASE] = {0, 1},      [MS_V4_ROLE_MTP_HC_HEAD_BASE] = {0, 1},
    [MS_V4_ROLE_ATTN_SINK] = {0, 1.5f},     [MS_V4_ROLE_GATE_BIAS] = {0, 0.1f},
    [MS_V4_ROLE_CMP_APE] = {0, 0.5f},       [MS_V4_ROLE_IDX_CMP_APE] = {0, 0.5f},
    [MS_V4_ROLE_EMBED] = {0, 1},
};

static void value_law(const ms_v4_tensor_spec *t, double *center, double *spread) {
    *center = k_law[t->role].center;
    *spread = k_law[t->role].spread;
    if (*spread == 0) *spread = t->k ? 1.7 / sqrt((double)t->k) : 1.0;
}

static int ceil_log2(double v) { return (int)ceil(log2(v)); }

void ms_v4_synth_fill(const ms_v4_config *c, const ms_v4_tensor_spec *t, uint64_t seed,
                      uint64_t off, uint64_t n, void *out) {
    const uint64_t key = mix64(seed ^ name_hash(t->name));
    const uint32_t es = ms_st_dtype_size(t->dtype);
    const uint64_t i0 = off / es, cnt = n / es;
    uint8_t *o8 = out;
    double center, spread;
    value_law(t, &center, &spread);

    if (t->part == MS_V4_PART_SCALE) {
        /* e8m0 near 1/sqrt(k) (FP8 codes reach 1.875) or 1/(2 sqrt(k)) (FP4 codes reach 6),
         * +-1 binade of jitter */
        bool fp4 = t->shape[0] == t->m && t->shape[1] * 32 == t->k; /* [m][k/32]: 1x32 blocks */
        int base = 127 - ceil_log2(sqrt((double)t->k)) - (fp4 ? 1 : 0);
        for (uint64_t i = 0; i < cnt; i++)
            o8[i] = (uint8_t)(base + (int)(mix64(key + i0 + i) % 3) - 1);
        return;
    }
    if (t->part == MS_V4_PART_WEIGHT && t->dtype == MS_ST_F8_E4M3) {
        for (uint64_t i = 0; i < cnt; i++) { /* sign, exponent 5..7, any mantissa: never NaN */
            uint64_t v = mix64(key + i0 + i);
            o8[i] = (uint8_t)(((v & 1) << 7) | ((5 + (v >> 1) % 3) << 3) | ((v >> 8) & 7));
        }
        return;
    }
    if (t->part == MS_V4_PART_WEIGHT) { /* packed e2m1: every nibble is a finite value */
        uint64_t v = mix64(key + i0 / 8); /* byte g is byte g % 8 of word g / 8 */
        for (uint64_t g = i0; g < i0 + cnt; g++) {
            if (g % 8 == 0) v = mix64(key + g / 8);
            o8[g - i0] = (uint8_t)(v >> (8 * (g % 8)));
        }
        return;
    }
    if (t->dtype == MS_ST_BF16) {
        for (uint64_t i = 0; i < cnt; i++) {
            uint16_t b = f32_to_bf16((float)(center + spread * unif(mix64(key + i0 + i))));
            memcpy(o8 + 2 * i, &b, 2);
        }
    } else if (t->dtype == MS_ST_F32) {
        for (uint64_t i = 0; i < cnt; i++) {
            float f = (float)(center + spread * unif(mix64(key + i0 + i)));
            memcpy(o8 + 4 * i, &f, 4);
        }
    } else if (t->dtype == MS_ST_I64) { /* tid2eid rows: K distinct experts per token */
        uint32_t K = c->n_active_experts, E = c->n_routed_experts;
        for (uint64_t i = 0; i + K <= cnt; i += K) {
            uint64_t row = (i0 + i) / K, r = mix64(key + row);
            int64_t pick[64];
            for (uint32_t k = 0; k < K && k < 64; k++) {
                int64_t e;
                bool again;
                do { /* rejection: K << E in every V4 config */
                    r = mix64(r);
                    e = (int64_t)(r % E);
                    again = false;
                    for (uint32_t j = 0; j < k; j++) again |= pick[j] == e;
                } while (again);
                pick[k] = e;
                memcpy(o8 + 8 * (i + k), &e, 8);
            }
        }
    } else { /* no other dtype occurs in the table */
        memset(out, 0, (size_t)n);
    }
}
