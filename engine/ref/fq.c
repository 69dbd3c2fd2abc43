/* The official stored-value rounding on rows (the reference of shaders/fq.comp, V4_SPEC §3.8). */
#include "engine/ref/ref.h"
#include "engine/ref/v4_internal.h"

void ms_ref_fq(float *x, uint32_t n_rows, uint32_t row_stride, uint32_t len, ms_ref_fq_kind quant,
               bool hadamard) {
    for (uint32_t r = 0; r < n_rows; r++) {
        float *v = x + (size_t)r * row_stride;
        if (hadamard) ms_ref_v4_hadamard(v, len);
        if (quant == MS_REF_FQ_E4M3) ms_ref_v4_fake_quant_fp8(v, len, 64);
        if (quant == MS_REF_FQ_E2M1) ms_ref_v4_fake_quant_fp4(v, len, 32);
    }
}
