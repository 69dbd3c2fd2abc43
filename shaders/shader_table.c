#include "shaders/shader_table.h"

#include <string.h>

const ms_shader_variant *ms_shader_find(const char *name) {
    for (uint32_t i = 0; i < ms_shader_variant_count; i++)
        if (strcmp(ms_shader_variants[i].name, name) == 0) return &ms_shader_variants[i];
    return NULL;
}
