/* storage/safetensors.h — Hugging Face safetensors reader (single file or sharded directory).
 *
 * Owns: the open files and their read-only mappings, the parsed tensor table. ms_st_close frees
 * everything; tensor pointers and names stay valid until then.
 * Trust: every header length, JSON field, offset, shape and dtype is bounds-checked before use;
 * a bad file is a returned error whose message names the file, the tensor and the problem.
 * Threads: after ms_st_open returns, all functions are read-only and may be called from any thread.
 */
#ifndef MS_STORAGE_SAFETENSORS_H
#define MS_STORAGE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum ms_st_dtype {
    MS_ST_BF16 = 0,
    MS_ST_F16,
    MS_ST_F32,
    MS_ST_F64,
    MS_ST_F8_E4M3,
    MS_ST_F8_E8M0,
    MS_ST_I8,   /* in V4 checkpoints: packed FP4 e2m1, two per byte */
    MS_ST_U8,
    MS_ST_I32,
    MS_ST_I64,
    MS_ST_BOOL,
    MS_ST_DTYPE_COUNT
} ms_st_dtype;

const char *ms_st_dtype_name(ms_st_dtype dt); /* the safetensors spelling, e.g. "F8_E4M3" */
uint32_t ms_st_dtype_size(ms_st_dtype dt);     /* bytes per element */
int ms_st_dtype_from_name(const char *name, ms_st_dtype *out); /* 0 or -MS_E_NOT_FOUND */

#define MS_ST_MAX_DIMS 8

typedef struct ms_st_tensor {
    const char *name;
    ms_st_dtype dtype;
    uint32_t n_dims;
    uint64_t shape[MS_ST_MAX_DIMS];
    uint64_t n_elems;
    const void *data;      /* mapped bytes, n_bytes long */
    uint64_t n_bytes;
    uint32_t file_index;   /* which shard */
    uint64_t file_offset;  /* absolute offset of data within that file */
} ms_st_tensor;

typedef struct ms_st ms_st;

/* path: a .safetensors file, or a directory holding model.safetensors.index.json (sharded) or a
 * single model.safetensors. err receives a message on failure. Returns 0, -MS_E_FORMAT (bad file:
 * the message names the file and tensor), -MS_E_NOMEM, or -errno (open/stat/mmap). Sharded: every
 * weight_map entry must be in the shard it names and every shard tensor must be in the weight_map;
 * shard names must be plain file names (no '/'). Tensors are in file order, shards sorted by
 * name. */
int ms_st_open(const char *path, ms_st **out, char *err, size_t err_len);
void ms_st_close(ms_st *st); /* NULL ok */

uint32_t ms_st_count(const ms_st *st);
const ms_st_tensor *ms_st_at(const ms_st *st, uint32_t i);
const ms_st_tensor *ms_st_find(const ms_st *st, const char *name); /* NULL if absent */
const char *ms_st_file_path(const ms_st *st, uint32_t file_index);

/* Index of the tensor called name (for per-tensor side tables): 0, or -MS_E_NOT_FOUND. */
int ms_st_find_index(const ms_st *st, const char *name, uint32_t *index);
uint32_t ms_st_file_count(const ms_st *st);
uint64_t ms_st_file_size(const ms_st *st, uint32_t file_index);
/* The open read-only descriptor of a shard (for reads that bypass the mapping, e.g. O_DIRECT
 * reopen or io_uring); owned by st, -1 for ms_st_parse_buffer tables. */
int ms_st_file_fd(const ms_st *st, uint32_t file_index);

/* Parse one file's header from memory (the fuzz target): buf holds the whole file. Tensors are
 * appended to a fresh table returned in *out (free with ms_st_close). */
int ms_st_parse_buffer(const uint8_t *buf, size_t len, const char *label, ms_st **out, char *err,
                       size_t err_len);

#endif
