/* libFuzzer harness: any byte string as a whole safetensors file (ms_st_parse_buffer).
 * Accepted files must be self-consistent: every tensor lies inside the buffer, its byte count is
 * its element count times the dtype size, and lookups by name find it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"
#include "storage/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ms_st *st = NULL;
    char err[512];
    err[0] = '\0';
    int rc = ms_st_parse_buffer(data, size, "fuzz", &st, err, sizeof err);
    if (rc != 0) {
        MS_ASSERT(st == NULL && err[0] != '\0' && strlen(err) < sizeof err);
        return 0;
    }
    for (uint32_t i = 0; i < ms_st_count(st); i++) {
        const ms_st_tensor *t = ms_st_at(st, i);
        MS_ASSERT(t->file_offset <= size && t->n_bytes <= size - t->file_offset);
        MS_ASSERT(t->n_bytes == t->n_elems * ms_st_dtype_size(t->dtype));
        MS_ASSERT((const uint8_t *)t->data == data + t->file_offset);
        MS_ASSERT(t->name[0] != '\0' && ms_st_find(st, t->name) == t);
        volatile uint8_t sink = 0;
        if (t->n_bytes) sink ^= ((const uint8_t *)t->data)[t->n_bytes - 1]; /* in bounds */
        (void)sink;
    }
    ms_st_close(st);
    return 0;
}
