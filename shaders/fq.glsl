// shaders/fq.glsl — the official model's stored-value rounding (V4_SPEC §3.8) and the orthonormal
// Hadamard rotation in GLSL, shared by shaders/fq.comp and shaders/compress_emit.comp (the CPU
// twins: ms_ref_v4_round_e4m3 / _e2m1, ms_ref_v4_pow2_scale, ms_ref_v4_hadamard in
// engine/ref/v4_ops.c).
//
// fq_hadamard works on a shared float array the includer names by defining FQ_HV before this
// file (it holds the row being rotated); without FQ_HV only the rounding functions exist.
#ifndef MS_FQ_GLSL
#define MS_FQ_GLSL

// |x| (clamped to max_v) rounded to the minifloat grid with mbits mantissa bits and smallest normal
// exponent emin, ties to even: within [2^e, 2^(e+1)) the step is 2^(e - mbits), below 2^emin the
// subnormal step 2^(emin - mbits); a / step is exact, so roundEven is RNE on the grid.
float fq_round_minifloat(float x, int mbits, int emin, float max_v) {
    if (isnan(x)) return x;
    x = clamp(x, -max_v, max_v);
    const float a = abs(x);
    if (a == 0.0) return x;
    int ex;
    frexp(a, ex); // a = f * 2^ex, f in [0.5, 1)
    const int e = max(ex - 1, emin);
    const float step = ldexp(1.0, e - mbits);
    const float q = min(roundEven(a / step) * step, max_v);
    return x < 0.0 ? -q : q;
}

// 2^ceil(log2(amax * inv_max)) from the F32 product (exponent bits, +1 unless the mantissa is 0).
float fq_pow2_scale(float amax, float inv_max) {
    const float t = amax * inv_max;
    int ex;
    const float f = frexp(t, ex);
    return f == 0.5 ? t : ldexp(1.0, ex);
}

// The block format of quant 1 (e4m3: block 64, amax floor 1e-4, max 448) and 2 (e2m1: block 32,
// floor 6 * 2^-126, max 6).
uint fq_block(uint quant) { return quant == 1u ? 64u : 32u; }
float fq_floor_amax(uint quant) { return quant == 1u ? 1e-4 : 6.0 * uintBitsToFloat(0x00800000u); }
float fq_inv_max(uint quant) { return quant == 1u ? 1.0 / 448.0 : 1.0 / 6.0; }
// v (already divided by the block scale) rounded to the format's grid.
float fq_round(uint quant, float v) {
    return quant == 1u ? fq_round_minifloat(v, 3, -6, 448.0) : fq_round_minifloat(v, 1, 0, 6.0);
}

#ifdef FQ_HV
// FQ_HV[0..n) = H_n FQ_HV / sqrt(n) (Sylvester order, F32 butterflies of H_2m = [[H, H], [H, -H]],
// one pair per invocation per stage); n a power of two. Called by the whole workgroup (tid < wg)
// in uniform control flow, after FQ_HV was written and a barrier; ends with a barrier.
void fq_hadamard(uint n, uint tid, uint wg) {
    for (uint h = 1u; h < n; h *= 2u) {
        for (uint q = tid; q < n / 2u; q += wg) {
            const uint j = (q / h) * 2u * h + (q % h);
            const float a = FQ_HV[j], b = FQ_HV[j + h];
            FQ_HV[j] = a + b;
            FQ_HV[j + h] = a - b;
        }
        barrier();
    }
    const float scale = inversesqrt(float(n));
    for (uint i = tid; i < n; i += wg) FQ_HV[i] *= scale;
    barrier();
}
#endif

#endif
