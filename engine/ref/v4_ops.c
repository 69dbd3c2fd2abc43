/* DeepSeek-V4 reference: small numeric building blocks — the two fake quantisations the official
 * model stores (V4_SPEC §3.8), the Hadamard rotation, RoPE with YaRN (§3.7) and the mHC Sinkhorn
 * split (§3.2). */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "engine/ref/v4_internal.h"

/* Round |x| (already clamped to max_v) to a binary minifloat with mbits mantissa bits whose
 * smallest normal exponent is emin, ties to even. Within one binade [2^e, 2^(e+1)) the grid step is
 * 2^(e - mbits); below 2^emin the subnormal step is 2^(emin - mbits). x / step is exact, so rint
 * (round-half-even in the default rounding mode) on it is exactly RNE on the grid; an even
 * multiple of the step is an even mantissa. */
static float round_minifloat(float x, int mbits, int emin, float max_v) {
    if (isnan(x)) return x;
    if (x > max_v) x = max_v;
    if (x < -max_v) x = -max_v;
    double a = fabs((double)x);
    if (a == 0.0) return x;
    int ex;
    (void)frexp(a, &ex); /* a = f * 2^ex, f in [0.5, 1): floor(log2 a) = ex - 1 */
    int e = ex - 1 < emin ? emin : ex - 1;
    double step = ldexp(1.0, e - mbits);
    double q = rint(a / step) * step;
    if (q > max_v) q = max_v;
    return (float)(x < 0 ? -q : q);
}

float ms_ref_v4_round_e4m3(float x) { return round_minifloat(x, 3, -6, 448.0f); }

float ms_ref_v4_round_e2m1(float x) { return round_minifloat(x, 1, 0, 6.0f); }

float ms_ref_v4_pow2_scale(float amax, float inv_max) {
    float t = amax * inv_max; /* F32 product, as the kernels compute it */
    int ex;
    float f = frexpf(t, &ex); /* t = f * 2^ex, f in [0.5, 1) */
    if (f == 0.5f) return t;  /* already a power of two: mantissa bits zero */
    return ldexpf(1.0f, ex);
}

/* x: [n] fake-quantised in place per block; round: the element format. */
static void fake_quant(float *x, uint32_t n, uint32_t block, float floor_amax, float inv_max,
                       float (*round)(float)) {
    for (uint32_t b0 = 0; b0 < n; b0 += block) {
        float amax = floor_amax;
        for (uint32_t i = b0; i < b0 + block; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        float s = ms_ref_v4_pow2_scale(amax, inv_max);
        for (uint32_t i = b0; i < b0 + block; i++) x[i] = round(x[i] / s) * s;
    }
}

void ms_ref_v4_fake_quant_fp8(float *x, uint32_t n, uint32_t block) {
    fake_quant(x, n, block, 1e-4f, 1.0f / 448.0f, ms_ref_v4_round_e4m3);
}

void ms_ref_v4_fake_quant_fp4(float *x, uint32_t n, uint32_t block) {
    fake_quant(x, n, block, 6.0f * 0x1p-126f, 1.0f / 6.0f, ms_ref_v4_round_e2m1);
}

void ms_ref_v4_hadamard(float *x, uint32_t n) {
    double t[MS_V4_MAX_HADAMARD]; /* 32 KiB of stack */
    for (uint32_t i = 0; i < n; i++) t[i] = x[i];
    /* Butterflies of the Sylvester construction H_2n = [[H, H], [H, -H]] (natural order). */
    for (uint32_t h = 1; h < n; h *= 2)
        for (uint32_t i = 0; i < n; i += 2 * h)
            for (uint32_t j = i; j < i + h; j++) {
                double a = t[j], b = t[j + h];
                t[j] = a + b;
                t[j + h] = a - b;
            }
    double scale = 1.0 / sqrt((double)n);
    for (uint32_t i = 0; i < n; i++) x[i] = (float)(t[i] * scale);
}

/* YaRN: the dimension whose wavelength completes n rotations over the original context. */
static double yarn_corr(double n_rot, uint32_t rope_dim, double base, double orig_max_pos) {
    return rope_dim * log(orig_max_pos / (n_rot * 2.0 * M_PI)) / (2.0 * log(base));
}

/* v clamped to [lo, hi] in double, NaN taken as nan_to, then converted: converting ±inf, NaN or a
 * value outside int's range to int is undefined behaviour. */
static int clamp_to_int(double v, double lo, double hi, double nan_to) {
    if (isnan(v)) v = nan_to;
    return (int)(v < lo ? lo : v > hi ? hi : v);
}

/* As the official find_correction_range, each end is clamped on one side only: low >= 0 and
 * high <= rope_dim - 1. A range lying past the dims keeps its other end (compress_rope_theta 10:
 * low 80, high 63), and the ramp depends on it (there: every frequency interpolated), so clamping
 * both ends into [0, rope_dim - 1] would change the model. A degenerate config (base 1: log(base)
 * is 0; beta 0: log of inf; beta < 0: log of a negative) gives ±inf or NaN: ±inf stops at the int
 * range, NaN takes the clamped bound. */
void ms_ref_v4_yarn_range(uint32_t rope_dim, double base, double orig_max_pos, double beta_fast,
                          double beta_slow, int *low, int *high) {
    double top = (double)rope_dim - 1;
    *low = clamp_to_int(floor(yarn_corr(beta_fast, rope_dim, base, orig_max_pos)), 0, INT_MAX, 0);
    *high = clamp_to_int(ceil(yarn_corr(beta_slow, rope_dim, base, orig_max_pos)), INT_MIN, top, top);
}

void ms_ref_v4_rope_freqs(const ms_v4_config *cfg, bool compressing, double *freq) {
    uint32_t half = cfg->rope_dim / 2;
    double base = compressing ? cfg->compress_rope_theta : cfg->rope_theta;
    for (uint32_t i = 0; i < half; i++) freq[i] = pow(base, -(2.0 * i) / cfg->rope_dim);
    /* YaRN only on compressing layers (V4_SPEC §1.3): blend each frequency between itself and
     * itself / factor along a linear ramp over [low, high]; no attention-scale (mscale) term. */
    if (!compressing || !cfg->yarn || cfg->yarn_original_max_pos == 0) return;
    int low, high;
    ms_ref_v4_yarn_range(cfg->rope_dim, base, cfg->yarn_original_max_pos, cfg->yarn_beta_fast,
                         cfg->yarn_beta_slow, &low, &high);
    double lo = low, hi = high;
    if (lo == hi) hi += 0.001; /* the reference's guard against a zero-width ramp */
    for (uint32_t i = 0; i < half; i++) {
        double ramp = (i - lo) / (hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        freq[i] = freq[i] / cfg->yarn_factor * ramp + freq[i] * (1.0 - ramp);
    }
}

void ms_ref_v4_rope(float *x, const double *freq, uint32_t rope_dim, uint64_t pos, bool inverse) {
    for (uint32_t i = 0; i < rope_dim / 2; i++) {
        double ang = (double)pos * freq[i];
        double c = cos(ang), sn = inverse ? -sin(ang) : sin(ang);
        double re = x[2 * i], im = x[2 * i + 1];
        x[2 * i] = (float)(re * c - im * sn);
        x[2 * i + 1] = (float)(re * sn + im * c);
    }
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

void ms_ref_v4_hc_split(const float *mix, const void *scale, const void *base, uint32_t hc,
                        uint32_t sinkhorn_iters, double hc_eps, float *pre, float *post,
                        float *comb) {
    double c[MS_V4_MAX_HC][MS_V4_MAX_HC];
    double s_pre = ms_ref_ld_f32(scale, 0), s_post = ms_ref_ld_f32(scale, 1);
    double s_comb = ms_ref_ld_f32(scale, 2);
    for (uint32_t j = 0; j < hc; j++) {
        pre[j] = (float)(sigmoid(mix[j] * s_pre + ms_ref_ld_f32(base, j)) + hc_eps);
        post[j] = (float)(2.0 * sigmoid(mix[hc + j] * s_post + ms_ref_ld_f32(base, hc + j)));
    }
    /* Row softmax (+eps), then column normalisation, then (iters - 1) row/column rounds. */
    for (uint32_t j = 0; j < hc; j++) {
        double mx = -INFINITY, sum = 0;
        for (uint32_t k = 0; k < hc; k++) {
            c[j][k] = mix[2 * hc + j * hc + k] * s_comb + ms_ref_ld_f32(base, 2 * hc + j * hc + k);
            if (c[j][k] > mx) mx = c[j][k];
        }
        for (uint32_t k = 0; k < hc; k++) sum += (c[j][k] = exp(c[j][k] - mx));
        for (uint32_t k = 0; k < hc; k++) c[j][k] = c[j][k] / sum + hc_eps;
    }
    uint32_t n_iter = sinkhorn_iters ? sinkhorn_iters : 1; /* the first column pass always runs */
    for (uint32_t it = 0; it < n_iter; it++) {
        if (it > 0)
            for (uint32_t j = 0; j < hc; j++) {
                double sum = 0;
                for (uint32_t k = 0; k < hc; k++) sum += c[j][k];
                for (uint32_t k = 0; k < hc; k++) c[j][k] /= sum + hc_eps;
            }
        for (uint32_t k = 0; k < hc; k++) {
            double sum = 0;
            for (uint32_t j = 0; j < hc; j++) sum += c[j][k];
            for (uint32_t j = 0; j < hc; j++) c[j][k] /= sum + hc_eps;
        }
    }
    for (uint32_t j = 0; j < hc; j++)
        for (uint32_t k = 0; k < hc; k++) comb[j * hc + k] = (float)c[j][k];
}
