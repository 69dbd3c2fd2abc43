// shaders/wdecode.glsl — the one exact decoder of checkpoint weight encodings in GLSL, included by
// every shader that reads weights (the CPU twins are ms_ref_*_to_f32 in engine/ref/decode.c).
//
// The including shader defines ENC (0 f32, 1 bf16, 2 fp8, 3 fp4) and MS_SCALE_BINDING (the binding
// of the e8m0 scale buffer, declared here as `uint sw[]` for fp8/fp4) before including this file. Weights are read as 16-byte chunks
// (uvec4): ELEMS values each. Decoding never relies on F32 denormals: e4m3 and e2m1 codes are
// moved by shifts into f16 bit patterns (e4m3 -> value * 2^-8, e2m1 -> value * 2^-14; subnormal
// codes become f16 subnormals) and widened with unpackHalf2x16; a block scale multiplies the F32
// partial sum of a chunk (16 FP8 / 32 FP4 weights lie inside one scale block), and POST (2^8 /
// 2^14) is applied once per output. NaN codes (e4m3 0x7F/0xFF, e8m0 0xFF) make the chunk's scale
// NaN, as the reference's decoded weight is NaN.
#ifndef MS_WDECODE_GLSL
#define MS_WDECODE_GLSL

#define ENC_F32 0
#define ENC_BF16 1
#define ENC_FP8 2
#define ENC_FP4 3
#ifndef ENC
#error "ENC must be defined (0 f32, 1 bf16, 2 fp8, 3 fp4)"
#endif

#if ENC == ENC_F32
#define ELEMS 4u
#elif ENC == ENC_BF16
#define ELEMS 8u
#elif ENC == ENC_FP8
#define ELEMS 16u
#define POST 256.0
#else
#define ELEMS 32u
#define POST 16384.0
#endif
#define V (ELEMS / 4u) // vec4s of activations per 16-byte weight chunk

#define MS_NAN uintBitsToFloat(0x7FC00000u)

// BF16: the 4 values of two words (elements 2i and 2i+1 of each word: low half, high half).
vec4 dec_bf16(uint a, uint b) {
    return vec4(uintBitsToFloat(a << 16), uintBitsToFloat(a & 0xFFFF0000u),
                uintBitsToFloat(b << 16), uintBitsToFloat(b & 0xFFFF0000u));
}

// e4m3: the 4 bytes of one word as values * 2^-8 (bytes 0 and 2 form one f16 pair, 1 and 3 the
// other; sign to bit 15, exponent and mantissa to bits 7..13).
vec4 dec_fp8(uint w) {
    const vec2 a = unpackHalf2x16(((w << 7) & 0x3F803F80u) | ((w << 8) & 0x80008000u));
    const vec2 b = unpackHalf2x16(((w >> 1) & 0x3F803F80u) | (w & 0x80008000u));
    return vec4(a.x, b.x, a.y, b.y);
}

// True when one of the chunk's 16 e4m3 codes is a NaN (0x7F / 0xFF): its low 7 bits + 1 carry into
// bit 7, and no carry crosses a byte.
bool fp8_has_nan(uvec4 w) {
    const uvec4 t = (w & 0x7F7F7F7Fu) + 0x01010101u;
    return ((t.x | t.y | t.z | t.w) & 0x80808080u) != 0u;
}

// e2m1: the 8 nibbles of one word (nibble i = element i) as values * 2^-14: lo = elements 0..3,
// hi = elements 4..7. Nibbles j and j+4 form one f16 pair: magnitude to bits 9..11, sign to 15.
// Masked before the shift, with the sign bits moved next to their magnitudes once (w3 = w << 3):
// 13 INT ops a word where shift-then-mask ((w << 9) & M | (w << 12) & S, ...) took 15; FP4 is
// bound by instruction issue on an H200, and this measured 3-4% faster there (docs/bench-ledger.md,
// 2026-12-02). The same bits either way.
void dec_fp4(uint w, out vec4 lo, out vec4 hi) {
    const uint w3 = w << 3;
    const vec2 d0 = unpackHalf2x16(((w & 0x00070007u) | (w3 & 0x00400040u)) << 9);
    const vec2 d1 = unpackHalf2x16(((w & 0x00700070u) | (w3 & 0x04000400u)) << 5);
    const vec2 d2 = unpackHalf2x16(((w & 0x07000700u) | (w3 & 0x40004000u)) << 1);
    const vec2 d3 = unpackHalf2x16(((w >> 3) & 0x0E000E00u) | (w & 0x80008000u));
    lo = vec4(d0.x, d1.x, d2.x, d3.x);
    hi = vec4(d0.y, d1.y, d2.y, d3.y);
}

#if ENC == ENC_FP8 || ENC == ENC_FP4
#ifndef MS_SCALE_BINDING
#error "MS_SCALE_BINDING must be defined for fp8/fp4"
#endif
layout(set = 0, binding = MS_SCALE_BINDING, std430) readonly restrict buffer Sbuf { uint sw[]; };

uint scale_byte(uint i) { return (sw[i >> 2] >> ((i & 3u) << 3)) & 0xFFu; }

// e8m0 -> 2^(e-127); 0xFF is NaN as in ms_ref_e8m0_to_f32. e = 0 is the F32 subnormal 2^-127.
float e8m0(uint e) {
    if (e == 255u) return MS_NAN;
    return e == 0u ? uintBitsToFloat(0x00400000u) : uintBitsToFloat(e << 23);
}
#endif

// a + dot(w, x) as four FMAs in element order (the order every GEMV kernel uses).
float fma4(vec4 w, vec4 x, float a) {
    a = fma(w.x, x.x, a);
    a = fma(w.y, x.y, a);
    a = fma(w.z, x.z, a);
    return fma(w.w, x.w, a);
}

// Exact F32 weights for kernels that stage a decoded tile (gemm.comp) instead of scaling partial
// sums: the shifted codes are undone (x POST, exact) and the block scale f (e8m0(...), a power of
// two) applied, exact whenever the weight is a normal F32 (checkpoint scales keep it there). A NaN
// scale makes all values NaN; dec_fp8_scaled also makes each NaN code (0x7F / 0xFF) NaN, as the
// reference decodes it, where the GEMV kernels use fp8_has_nan per chunk.
#if ENC == ENC_FP8
vec4 dec_fp8_scaled(uint w, float f) {
    const vec4 v = dec_fp8(w) * POST * f;
    const bvec4 nan = equal((uvec4(w) >> uvec4(0u, 8u, 16u, 24u)) & 0x7Fu, uvec4(0x7Fu));
    return mix(v, vec4(MS_NAN), nan);
}
#elif ENC == ENC_FP4
void dec_fp4_scaled(uint w, float f, out vec4 lo, out vec4 hi) {
    dec_fp4(w, lo, hi);
    lo = lo * POST * f;
    hi = hi * POST * f;
}
#endif

#endif
