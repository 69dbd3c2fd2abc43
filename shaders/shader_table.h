/* shaders/shader_table.h — the embedded SPIR-V variants (generated from shaders/variants.txt).
 * Read-only static data; thread-safe. */
#ifndef MS_SHADERS_SHADER_TABLE_H
#define MS_SHADERS_SHADER_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ms_shader_variant {
    const char *name;        /* variant name, e.g. "gemv_fp8" */
    const uint32_t *spirv;   /* SPIR-V words */
    size_t spirv_bytes;
    uint32_t n_bindings;     /* storage buffers at set 0, bindings 0..n-1 */
    uint32_t push_size;      /* bytes of the push-constant struct, 0 if none */
} ms_shader_variant;

extern const ms_shader_variant ms_shader_variants[];
extern const uint32_t ms_shader_variant_count;

/* NULL when no variant has that name. */
const ms_shader_variant *ms_shader_find(const char *name);

#endif
