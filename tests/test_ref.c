/* CPU reference self-checks: the decoders against the format tables of V4_SPEC §2.1, and the
 * GEMV/RMSNorm references against products worked out by hand and on misaligned weight bytes. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/ref/ref.h"

#include "tests/check.h"



static int same(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

static void test_fp4(void) {
    /* The e2m1 code table from the checkpoint's converter (V4_SPEC §2.1). */
    static const float table[16] = {0,  0.5f,  1,  1.5f,  2,  3,  4,  6,
                                    -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int i = 0; i < 16; i++)
        CHECK(same(ms_ref_fp4_to_f32((uint8_t)i), table[i]), "fp4 %d -> %g, want %g", i,
              ms_ref_fp4_to_f32((uint8_t)i), table[i]);
}

static void test_e4m3(void) {
    struct {
        uint8_t code;
        float want;
    } cases[] = {
        {0x00, 0.0f},          {0x80, -0.0f},       {0x01, 0x1p-9f},      {0x07, 7 * 0x1p-9f},
        {0x08, 0x1p-6f},       {0x38, 1.0f},        {0x39, 1.125f},       {0x40, 2.0f},
        {0x7E, 448.0f},        {0xFE, -448.0f},     {0x7F, NAN},          {0xFF, NAN},
        {0x77, 240.0f},        {0xB8, -1.0f},       {0x3F, 1.875f},       {0x30, 0.5f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(same(ms_ref_e4m3_to_f32(cases[i].code), cases[i].want), "e4m3 0x%02x -> %g, want %g",
              cases[i].code, ms_ref_e4m3_to_f32(cases[i].code), cases[i].want);
    /* Every code against the format's definition, computed independently with ldexp. */
    for (int c = 0; c < 256; c++) {
        int e = (c >> 3) & 15, m = c & 7;
        double mag = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
        double want = (c & 0x80) ? -mag : mag;
        if ((c & 0x7F) == 0x7F) continue; /* NaN, checked above */
        CHECK((double)ms_ref_e4m3_to_f32((uint8_t)c) == want, "e4m3 0x%02x -> %g, want %g", c,
              ms_ref_e4m3_to_f32((uint8_t)c), want);
    }
    for (int v = 0; v < 255; v++)
        CHECK((double)ms_ref_e8m0_to_f32((uint8_t)v) == ldexp(1.0, v - 127), "e8m0 %d", v);
    /* Every finite positive code is strictly increasing; negatives mirror them. */
    for (int c = 1; c < 0x7F; c++) {
        CHECK(ms_ref_e4m3_to_f32((uint8_t)c) > ms_ref_e4m3_to_f32((uint8_t)(c - 1)), "e4m3 order %d", c);
        CHECK(same(ms_ref_e4m3_to_f32((uint8_t)(c | 0x80)), -ms_ref_e4m3_to_f32((uint8_t)c)),
              "e4m3 sign %d", c);
    }
}

static void test_e8m0_bf16(void) {
    CHECK(ms_ref_e8m0_to_f32(127) == 1.0f, "e8m0 127");
    CHECK(ms_ref_e8m0_to_f32(0) == 0x1p-127f, "e8m0 0");
    CHECK(ms_ref_e8m0_to_f32(254) == 0x1p127f, "e8m0 254");
    CHECK(isnan(ms_ref_e8m0_to_f32(255)), "e8m0 255 NaN");
    CHECK(ms_ref_e8m0_to_f32(120) == 0x1p-7f, "e8m0 120");
    CHECK(ms_ref_bf16_to_f32(0x3F80) == 1.0f, "bf16 1");
    CHECK(ms_ref_bf16_to_f32(0xC000) == -2.0f, "bf16 -2");
    CHECK(ms_ref_bf16_to_f32(0x3FC0) == 1.5f, "bf16 1.5");
    CHECK(isinf(ms_ref_bf16_to_f32(0x7F80)), "bf16 inf");
    CHECK(isnan(ms_ref_bf16_to_f32(0x7FC1)), "bf16 nan");
}

static void test_sizes(void) {
    CHECK(ms_wenc_data_bytes(MS_WENC_FP4, 3072, 7168) == 3072u * 3584u, "fp4 data size");
    CHECK(ms_wenc_scale_bytes(MS_WENC_FP4, 3072, 7168) == 3072u * 224u, "fp4 scale size");
    CHECK(ms_wenc_scale_bytes(MS_WENC_FP8, 1536, 7168) == 12u * 56u, "fp8 scale size");
    CHECK(ms_wenc_scale_bytes(MS_WENC_FP8, 129, 130) == 2u * 2u, "fp8 ragged scale size");
    CHECK(ms_wenc_data_bytes(MS_WENC_BF16, 3, 8) == 48, "bf16 size");
    CHECK(ms_wenc_scale_bytes(MS_WENC_F32, 3, 8) == 0, "f32 has no scales");
}

/* A 2x64 FP4 matrix with hand-picked nibbles and scales, times two activation columns. */
static void test_gemv_fp4(void) {
    uint8_t data[2 * 32], scale[2 * 2];
    memset(data, 0, sizeof data);
    data[0] = 0x72;         /* row 0: W[0,0] = 1 (code 2), W[0,1] = 6 (code 7) */
    data[16] = 0x09;        /* row 0: W[0,32] = -0.5 (code 9), W[0,33] = 0 */
    data[32 + 31] = 0xE0;   /* row 1: W[1,63] = -4 (code 14) */
    scale[0] = 127;         /* row 0 block 0: x1 */
    scale[1] = 129;         /* row 0 block 1: x4 */
    scale[2] = 127;
    scale[3] = 126;         /* row 1 block 1: x0.5 */
    float x[2][64];
    for (int i = 0; i < 64; i++) {
        x[0][i] = 1.0f;
        x[1][i] = (float)i;
    }
    ms_weight_view w = {MS_WENC_FP4, 2, 64, data, scale};
    float y[2][3];
    memset(y, 0, sizeof y);
    ms_ref_gemv(&w, &x[0][0], 64, &y[0][0], 3, 2);
    CHECK(y[0][0] == 1 + 6 - 0.5f * 4, "fp4 y00 %g", y[0][0]);
    CHECK(y[0][1] == -4 * 0.5f, "fp4 y01 %g", y[0][1]);
    CHECK(y[1][0] == 1 * 0 + 6 * 1 - 2.0f * 32, "fp4 y10 %g", y[1][0]);
    CHECK(y[1][1] == -2.0f * 63, "fp4 y11 %g", y[1][1]);
    CHECK(y[0][2] == 0 && y[1][2] == 0, "fp4 wrote past m");
}

/* FP8 with two row blocks and two column blocks (m = 130, k = 144): block scales apply per tile. */
static void test_gemv_fp8(void) {
    enum { M = 130, K = 144 };
    static uint8_t data[M * K];
    uint8_t scale[2 * 2] = {127, 128, 125, 127}; /* [row block][col block]: 1, 2, 1/4, 1 */
    memset(data, 0, sizeof data);
    data[0 * K + 0] = 0x38;     /* 1.0 in tile (0,0) */
    data[0 * K + 130] = 0x40;   /* 2.0 in tile (0,1) -> x2 */
    data[129 * K + 5] = 0xB8;   /* -1.0 in tile (1,0) -> x1/4 */
    data[129 * K + 143] = 0x01; /* 2^-9 in tile (1,1) */
    float x[K];
    for (int i = 0; i < K; i++) x[i] = 1.0f;
    float y[M];
    ms_weight_view w = {MS_WENC_FP8, M, K, data, scale};
    ms_ref_gemv_fp8(&w, x, K, y, M, 1);
    CHECK(y[0] == 1.0f + 4.0f, "fp8 y0 %g", y[0]);
    CHECK(y[129] == -0.25f + 0x1p-9f, "fp8 y129 %g", y[129]);
    CHECK(y[1] == 0.0f, "fp8 y1 %g", y[1]);
}

static void test_gemv_bf16_f32_nan(void) {
    uint16_t wb[2 * 8] = {0x3F80, 0x4000, 0, 0, 0, 0, 0, 0xBF80, /* row 0: 1, 2, ..., -1 */
                          0, 0, 0, 0, 0, 0, 0, 0};
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float y[2];
    ms_weight_view w = {MS_WENC_BF16, 2, 8, wb, NULL};
    ms_ref_gemv(&w, x, 8, y, 2, 1);
    CHECK(y[0] == 1 + 4 - 8, "bf16 y0 %g", y[0]);
    CHECK(y[1] == 0, "bf16 y1 %g", y[1]);
    float wf[4] = {1, 0, 0, 0};
    float xn[4] = {NAN, 0, 0, 0};
    ms_weight_view w2 = {MS_WENC_F32, 1, 4, wf, NULL};
    ms_ref_gemv(&w2, xn, 4, y, 1, 1);
    CHECK(isnan(y[0]), "NaN input must give NaN");
}

static void test_rmsnorm(void) {
    float x[2][4] = {{1, 1, 1, 1}, {3, -4, 0, 0}};
    float w[4] = {1, 2, 3, 4};
    float y[2][4];
    ms_ref_rmsnorm(&x[0][0], w, MS_WENC_F32, &y[0][0], 4, 2, 0.0f);
    CHECK(y[0][0] == 1 && y[0][3] == 4, "rmsnorm row 0");
    /* row 1: mean square = 25/4, rms = 2.5 */
    CHECK(fabsf(y[1][0] - 3 / 2.5f) < 1e-6f && fabsf(y[1][1] + 4 * 2 / 2.5f) < 1e-6f, "rmsnorm row 1");
    uint16_t wb[4] = {0x3F80, 0x4000, 0x4040, 0x4080}; /* 1 2 3 4 in bf16 */
    float y2[2][4];
    ms_ref_rmsnorm(&x[0][0], wb, MS_WENC_BF16, &y2[0][0], 4, 2, 0.0f);
    CHECK(memcmp(y, y2, sizeof y) == 0, "rmsnorm bf16 weight equals f32 weight");
}

/* Checkpoint tensors are read in place and may start at any byte offset. The same F32 or BF16
 * weights at an odd address must give bit-identical GEMV and RMSNorm results to the aligned copy;
 * built with -fsanitize=alignment (part of `undefined`) a typed load of weight bytes anywhere on
 * these paths is reported and stops the test. w: [M][K] in enc; x: [2][K]. */
enum { MIS_M = 3, MIS_K = 40 };
static void check_misaligned(ms_wenc enc, const void *w, size_t bytes, const float *x) {
    static union {
        float align;
        unsigned char b[1 + MIS_M * MIS_K * sizeof(float)];
    } buf;
    unsigned char *odd = buf.b + 1; /* 4-aligned + 1: misaligned for float and uint16_t */
    float ya[2][MIS_M], yu[2][MIS_M], na[2][MIS_K], nu[2][MIS_K];
    memcpy(odd, w, bytes);
    ms_weight_view wa = {enc, MIS_M, MIS_K, w, NULL}, wu = {enc, MIS_M, MIS_K, odd, NULL};
    ms_ref_gemv(&wa, x, MIS_K, &ya[0][0], MIS_M, 2);
    ms_ref_gemv(&wu, x, MIS_K, &yu[0][0], MIS_M, 2);
    CHECK(memcmp(ya, yu, sizeof ya) == 0, "%s gemv: misaligned weights differ", ms_wenc_name(enc));
    ms_ref_rmsnorm(x, w, enc, &na[0][0], MIS_K, 2, 1e-6f);
    ms_ref_rmsnorm(x, odd, enc, &nu[0][0], MIS_K, 2, 1e-6f);
    CHECK(memcmp(na, nu, sizeof na) == 0, "%s rmsnorm: misaligned weight differs", ms_wenc_name(enc));
    CHECK(ya[0][0] != 0 && na[1][MIS_K - 1] != 0, "%s: degenerate inputs", ms_wenc_name(enc));
}

static void test_misaligned_weights(void) {
    float wf[MIS_M * MIS_K], x[2][MIS_K];
    uint16_t wb[MIS_M * MIS_K];
    for (int i = 0; i < MIS_M * MIS_K; i++) {
        wf[i] = (float)(i % 7) * 0.25f - 0.5f;
        wb[i] = (uint16_t)(0x3F00 + (i * 37) % 0x100); /* bf16 values in [0.5, 1) */
    }
    for (int i = 0; i < MIS_K; i++) {
        x[0][i] = (float)i * 0.125f - 2;
        x[1][i] = 1.0f / (float)(i + 1);
    }
    check_misaligned(MS_WENC_F32, wf, sizeof wf, &x[0][0]);
    check_misaligned(MS_WENC_BF16, wb, sizeof wb, &x[0][0]);
}

int main(void) {
    test_fp4();
    test_e4m3();
    test_e8m0_bf16();
    test_sizes();
    test_gemv_fp4();
    test_gemv_fp8();
    test_gemv_bf16_f32_nan();
    test_rmsnorm();
    test_misaligned_weights();
    printf("%s (%d failures)\n", g_fail ? "FAIL" : "PASS", g_fail);
    return g_fail ? 1 : 0;
}
