/* engine/model/weights.h — the weight encodings a DeepSeek-V4 checkpoint ships and their byte
 * layouts (V4_SPEC §2.1): one place for both backends, the store and the tools.
 *
 *   F32   data [m][k] float
 *   BF16  data [m][k] uint16 (bfloat16 bits)
 *   FP8   data [m][k] uint8 OCP e4m3fn; scale [ceil(m/128)][ceil(k/128)] uint8 e8m0 (2^(e-127))
 *   FP4   data [m][k/2] uint8 e2m1, element 2j in the low nibble; scale [m][k/32] uint8 e8m0
 * Plain data and pure functions; thread-safe.
 */
#ifndef MS_ENGINE_MODEL_WEIGHTS_H
#define MS_ENGINE_MODEL_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

typedef enum ms_wenc {
    MS_WENC_F32 = 0,
    MS_WENC_BF16 = 1,
    MS_WENC_FP8 = 2,
    MS_WENC_FP4 = 3,
    MS_WENC_COUNT
} ms_wenc;

const char *ms_wenc_name(ms_wenc enc); /* "f32", "bf16", "fp8", "fp4" */

/* A weight matrix as laid out in the checkpoint. Pointers are borrowed. */
typedef struct ms_weight_view {
    ms_wenc enc;
    uint32_t m;           /* rows (outputs) */
    uint32_t k;           /* columns (inputs) */
    const void *data;     /* see the layout table above */
    const uint8_t *scale; /* FP8/FP4 only, else NULL */
} ms_weight_view;

/* Byte sizes of the data and scale arrays for an encoding and shape (0 scale bytes for F32/BF16). */
size_t ms_wenc_data_bytes(ms_wenc enc, uint32_t m, uint32_t k);
size_t ms_wenc_scale_bytes(ms_wenc enc, uint32_t m, uint32_t k);

/* The scale bytes of rows [row0, row0 + rows) and where they start (row0 a multiple of 128 for
 * FP8, whose scale rows cover 128 weight rows each): for splitting a matrix into parts. */
size_t ms_wenc_scale_rows_bytes(ms_wenc enc, uint32_t row0, uint32_t rows, uint32_t k);
size_t ms_wenc_scale_rows_offset(ms_wenc enc, uint32_t row0, uint32_t k);

/* Rows [r0, r0 + m) of w as a view of their own (borrowing w's bytes); for FP8, r0 must be a
 * multiple of 128 (a scale row covers 128 weight rows). */
ms_weight_view ms_weight_view_rows(const ms_weight_view *w, uint32_t r0, uint32_t m);

#endif
