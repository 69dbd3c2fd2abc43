/* storage/safetensors.c — safetensors reader (see safetensors.h).
 *
 * Every file is validated completely before anything in its data section is touched: the header
 * length against the file size, each entry's dtype, shape (overflow-checked element and byte
 * counts), data_offsets against the data section, and the entries against each other (sorted by
 * offset, no overlaps). Gaps between tensors are allowed (the format does not forbid padding).
 * Files are mapped read-only; a file truncated *after* open faults on access, which no size check
 * can prevent: every mapping is registered with common/fault.h so a program that installs its
 * SIGBUS handler reports the file by name instead of dying with "Bus error".
 */
#include "storage/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/fault.h"
#include "common/file.h"
#include "common/json.h"
#include "common/log.h"
#include "common/status.h"

#define MAX_HEADER_BYTES ((uint64_t)100 << 20)
#define MAX_INDEX_BYTES ((size_t)256 << 20)
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

typedef struct st_file {
    char *path;
    int fd;               /* -1 for parse_buffer */
    const uint8_t *map;   /* whole file */
    uint64_t size;
    bool mapped;
    char *names;          /* this file's tensor names, one block */
} st_file;

struct ms_st {
    st_file *files;
    uint32_t n_files;
    ms_st_tensor *tensors;
    uint32_t n_tensors, cap_tensors;
    uint32_t *by_name;    /* [n_tensors] indices sorted by name */
};

static const char *const k_dtype_names[MS_ST_DTYPE_COUNT] = {
    [MS_ST_BF16] = "BF16", [MS_ST_F16] = "F16",         [MS_ST_F32] = "F32",
    [MS_ST_F64] = "F64",   [MS_ST_F8_E4M3] = "F8_E4M3", [MS_ST_F8_E8M0] = "F8_E8M0",
    [MS_ST_I8] = "I8",     [MS_ST_U8] = "U8",           [MS_ST_I32] = "I32",
    [MS_ST_I64] = "I64",   [MS_ST_BOOL] = "BOOL",
};
static const uint8_t k_dtype_sizes[MS_ST_DTYPE_COUNT] = {
    [MS_ST_BF16] = 2, [MS_ST_F16] = 2,     [MS_ST_F32] = 4,     [MS_ST_F64] = 8,
    [MS_ST_F8_E4M3] = 1, [MS_ST_F8_E8M0] = 1, [MS_ST_I8] = 1, [MS_ST_U8] = 1,
    [MS_ST_I32] = 4,  [MS_ST_I64] = 8,     [MS_ST_BOOL] = 1,
};

const char *ms_st_dtype_name(ms_st_dtype dt) {
    return ((unsigned)dt < MS_ST_DTYPE_COUNT) ? k_dtype_names[dt] : "?";
}

uint32_t ms_st_dtype_size(ms_st_dtype dt) {
    return ((unsigned)dt < MS_ST_DTYPE_COUNT) ? k_dtype_sizes[dt] : 0;
}

int ms_st_dtype_from_name(const char *name, ms_st_dtype *out) {
    for (int i = 0; i < MS_ST_DTYPE_COUNT; i++) {
        if (name && strcmp(name, k_dtype_names[i]) == 0) {
            *out = (ms_st_dtype)i;
            return 0;
        }
    }
    return -MS_E_NOT_FOUND;
}

/* A short printable copy of a file path or name for messages: the last path component. */
static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return (s && s[1]) ? s + 1 : path;
}

static uint64_t rd_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* table                                                                                        */

static ms_st *st_new(void) { return ms_calloc(1, sizeof(ms_st)); }

void ms_st_close(ms_st *st) {
    if (!st) return;
    for (uint32_t i = 0; i < st->n_files; i++) {
        st_file *f = &st->files[i];
        if (f->mapped) {
            ms_fault_unregister(f->map);
            munmap((void *)f->map, f->size);
        }
        if (f->fd >= 0) close(f->fd);
        ms_free(f->path);
        ms_free(f->names);
    }
    ms_free(st->files);
    ms_free(st->tensors);
    ms_free(st->by_name);
    ms_free(st);
}

static int st_add_file(ms_st *st, const char *path, uint32_t *index) {
    st_file *nf = ms_realloc(st->files, (st->n_files + 1) * sizeof *nf);
    if (!nf) return -MS_E_NOMEM;
    st->files = nf;
    st_file *f = &nf[st->n_files];
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = ms_strdup(path);
    if (!f->path) return -MS_E_NOMEM;
    *index = st->n_files++;
    return 0;
}

uint32_t ms_st_count(const ms_st *st) { return st ? st->n_tensors : 0; }

const ms_st_tensor *ms_st_at(const ms_st *st, uint32_t i) {
    return (st && i < st->n_tensors) ? &st->tensors[i] : NULL;
}

const char *ms_st_file_path(const ms_st *st, uint32_t file_index) {
    return (st && file_index < st->n_files) ? st->files[file_index].path : NULL;
}

uint32_t ms_st_file_count(const ms_st *st) { return st ? st->n_files : 0; }

int ms_st_file_fd(const ms_st *st, uint32_t file_index) {
    return (st && file_index < st->n_files) ? st->files[file_index].fd : -1;
}

uint64_t ms_st_file_size(const ms_st *st, uint32_t file_index) {
    return (st && file_index < st->n_files) ? st->files[file_index].size : 0;
}

int ms_st_find_index(const ms_st *st, const char *name, uint32_t *index) {
    if (!st || !name || !st->by_name) return -MS_E_NOT_FOUND;
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[st->by_name[mid]].name, name);
        if (c == 0) {
            if (index) *index = st->by_name[mid];
            return 0;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -MS_E_NOT_FOUND;
}

const ms_st_tensor *ms_st_find(const ms_st *st, const char *name) {
    uint32_t i;
    return ms_st_find_index(st, name, &i) == 0 ? &st->tensors[i] : NULL;
}

/* qsort has no context argument; the table being sorted is set just before each sort (open is
 * not re-entrant per table anyway, and this is only read inside the comparator). */
static _Thread_local const ms_st_tensor *t_sort_tensors;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(t_sort_tensors[*(const uint32_t *)a].name,
                  t_sort_tensors[*(const uint32_t *)b].name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const ms_st_tensor *x = &t_sort_tensors[*(const uint32_t *)a];
    const ms_st_tensor *y = &t_sort_tensors[*(const uint32_t *)b];
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    if (x->n_bytes != y->n_bytes) return x->n_bytes < y->n_bytes ? -1 : 1;
    return 0;
}

/* Build the name index; duplicates (across shards) are errors naming both files. */
static int st_index(ms_st *st, char *err, size_t err_len) {
    ms_free(st->by_name);
    st->by_name = NULL;
    if (st->n_tensors == 0) return 0;
    st->by_name = ms_malloc((size_t)st->n_tensors * sizeof(uint32_t));
    if (!st->by_name) return ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < st->n_tensors; i++) st->by_name[i] = i;
    t_sort_tensors = st->tensors;
    qsort(st->by_name, st->n_tensors, sizeof(uint32_t), cmp_by_name);
    for (uint32_t i = 1; i < st->n_tensors; i++) {
        const ms_st_tensor *a = &st->tensors[st->by_name[i - 1]];
        const ms_st_tensor *b = &st->tensors[st->by_name[i]];
        if (strcmp(a->name, b->name) == 0) {
            char nm[160];
            ms_json_escape(a->name, strlen(a->name), nm, sizeof nm);
            return ms_errf(err, err_len, -MS_E_FORMAT, "tensor '%s' appears in both %s and %s", nm,
                        base_name(st->files[a->file_index].path),
                        base_name(st->files[b->file_index].path));
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* one file's header                                                                            */

static int parse_dims(const ms_json *shape, ms_st_tensor *t, const char *label, const char *nm,
                      char *err, size_t err_len) {
    if (ms_json_type_of(shape) != MS_JSON_ARRAY)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': 'shape' is %s, expected an array",
                    label, nm, ms_json_kind(shape));
    uint32_t nd = ms_json_len(shape);
    if (nd > MS_ST_MAX_DIMS)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': %u dimensions (at most %d)",
                    label, nm, nd, MS_ST_MAX_DIMS);
    t->n_dims = nd;
    uint64_t n = 1;
    bool ovf = false;
    for (uint32_t d = 0; d < nd; d++) {
        const ms_json *v = ms_json_at(shape, d);
        if (!ms_json_is_int(v) || ms_json_int(v) < 0) {
            char what[48];
            if (ms_json_type_of(v) == MS_JSON_NUMBER)
                snprintf(what, sizeof what, "%s %.17g", ms_json_kind(v), ms_json_num(v));
            else
                snprintf(what, sizeof what, "%s", ms_json_kind(v));
            return ms_errf(err, err_len, -MS_E_FORMAT,
                        "%s: tensor '%s': shape[%u] must be a non-negative integer literal, found "
                        "%s",
                        label, nm, d, what);
        }
        t->shape[d] = (uint64_t)ms_json_int(v);
        if (t->shape[d] != 0 && n > UINT64_MAX / t->shape[d]) ovf = true;
        else n *= t->shape[d];
    }
    /* a zero dimension makes the product 0 even if an earlier partial product overflowed */
    for (uint32_t d = 0; d < nd; d++)
        if (t->shape[d] == 0) ovf = false, n = 0;
    if (ovf)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': shape element count overflows",
                    label, nm);
    t->n_elems = n;
    return 0;
}

static int parse_entry(const ms_json *e, const char *name, size_t name_len, ms_st_tensor *t,
                       uint64_t data_base, uint64_t data_len, const char *label, char *err,
                       size_t err_len) {
    char nm[160];
    ms_json_escape(name, name_len, nm, sizeof nm);
    if (name_len == 0)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: a tensor has an empty name", label);
    if (strlen(name) != name_len)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': name contains a NUL character",
                    label, nm);
    if (ms_json_type_of(e) != MS_JSON_OBJECT)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': entry is %s, expected an object",
                    label, nm, ms_json_kind(e));
    for (uint32_t i = 0; i < ms_json_len(e); i++) {
        size_t kl;
        const char *k = ms_json_key_at(e, i, &kl);
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
            char kk[64];
            ms_json_escape(k, kl, kk, sizeof kk);
            return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': unknown field '%s'", label,
                        nm, kk);
        }
    }
    const ms_json *dt = ms_json_get(e, "dtype");
    const ms_json *shape = ms_json_get(e, "shape");
    const ms_json *offs = ms_json_get(e, "data_offsets");
    if (!dt || !shape || !offs)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': missing '%s'", label, nm,
                    !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    size_t dl;
    const char *ds = ms_json_str(dt, &dl);
    if (!ds)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': 'dtype' is %s, expected a string",
                    label, nm, ms_json_kind(dt));
    if (ms_st_dtype_from_name(ds, &t->dtype) != 0 || strlen(ds) != dl) {
        char dd[48];
        ms_json_escape(ds, dl, dd, sizeof dd);
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", label,
                    nm, dd);
    }
    int rc = parse_dims(shape, t, label, nm, err, err_len);
    if (rc) return rc;
    if (ms_json_type_of(offs) != MS_JSON_ARRAY || ms_json_len(offs) != 2)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: tensor '%s': 'data_offsets' must be an array [begin, end]", label, nm);
    const ms_json *b = ms_json_at(offs, 0), *en = ms_json_at(offs, 1);
    if (!ms_json_is_int(b) || !ms_json_is_int(en) || ms_json_int(b) < 0 || ms_json_int(en) < 0)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: tensor '%s': data_offsets must be integers in [0, 2^63)", label, nm);
    uint64_t begin = (uint64_t)ms_json_int(b), end = (uint64_t)ms_json_int(en);
    if (end < begin)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: tensor '%s': data_offsets [%llu,%llu) end before begin", label, nm,
                    (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: tensor '%s': data_offsets [%llu,%llu) end beyond the data section (%llu "
                    "bytes)",
                    label, nm, (unsigned long long)begin, (unsigned long long)end,
                    (unsigned long long)data_len);
    uint32_t es = ms_st_dtype_size(t->dtype);
    if (t->n_elems > UINT64_MAX / es)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s': byte size overflows", label, nm);
    t->n_bytes = t->n_elems * es;
    if (end - begin != t->n_bytes)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: tensor '%s': data_offsets [%llu,%llu) hold %llu bytes, but %s shape needs "
                    "%llu",
                    label, nm, (unsigned long long)begin, (unsigned long long)end,
                    (unsigned long long)(end - begin), ms_st_dtype_name(t->dtype),
                    (unsigned long long)t->n_bytes);
    t->file_offset = data_base + begin;
    return 0;
}

static int check_metadata(const ms_json *m, const char *label, char *err, size_t err_len) {
    if (ms_json_type_of(m) != MS_JSON_OBJECT)
        return ms_errf(err, err_len, -MS_E_FORMAT, "%s: '__metadata__' is %s, expected an object",
                    label, ms_json_kind(m));
    for (uint32_t i = 0; i < ms_json_len(m); i++) {
        if (ms_json_type_of(ms_json_value_at(m, i)) != MS_JSON_STRING) {
            size_t kl;
            const char *k = ms_json_key_at(m, i, &kl);
            char kk[64];
            ms_json_escape(k, kl, kk, sizeof kk);
            return ms_errf(err, err_len, -MS_E_FORMAT,
                        "%s: '__metadata__' value of '%s' is %s, expected a string", label, kk,
                        ms_json_kind(ms_json_value_at(m, i)));
        }
    }
    return 0;
}

/* Parse and validate buf (one whole file) and append its tensors to st as file file_index. */
static int st_parse_file(ms_st *st, uint32_t file_index, const uint8_t *buf, uint64_t len,
                         const char *label, char *err, size_t err_len) {
    if (len < 8)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: file is %llu bytes, too short for the 8-byte header length", label,
                    (unsigned long long)len);
    uint64_t hlen = rd_le64(buf);
    if (hlen == 0) return ms_errf(err, err_len, -MS_E_FORMAT, "%s: header length is 0", label);
    if (hlen > MAX_HEADER_BYTES)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: header length %llu exceeds the 100 MiB limit", label,
                    (unsigned long long)hlen);
    if (hlen > len - 8)
        return ms_errf(err, err_len, -MS_E_FORMAT,
                    "%s: header length %llu beyond the end of the file (%llu bytes)", label,
                    (unsigned long long)hlen, (unsigned long long)len);
    uint64_t data_base = 8 + hlen, data_len = len - data_base;

    ms_json_doc *doc = NULL;
    ms_json_error je;
    ms_json_opts jo = {.max_size = (size_t)MAX_HEADER_BYTES};
    int rc = ms_json_parse((const char *)buf + 8, (size_t)hlen, &jo, &doc, &je);
    if (rc) {
        /* JSON offsets are relative to the header: add 8 for the file offset */
        return ms_errf(err, err_len, rc, "%s: header JSON (file offset %llu): %s", label,
                    (unsigned long long)(je.offset + 8), je.msg);
    }
    const ms_json *root = ms_json_root(doc);
    if (ms_json_type_of(root) != MS_JSON_OBJECT) {
        rc = ms_errf(err, err_len, -MS_E_FORMAT, "%s: header is a JSON %s, expected an object", label,
                  ms_json_kind(root));
        goto out;
    }
    uint32_t n = ms_json_len(root), n_new = 0;
    size_t name_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t kl;
        const char *k = ms_json_key_at(root, i, &kl);
        if (strcmp(k, "__metadata__") == 0) {
            rc = check_metadata(ms_json_value_at(root, i), label, err, err_len);
            if (rc) goto out;
            continue;
        }
        n_new++;
        name_bytes += kl + 1;
    }
    if ((uint64_t)st->n_tensors + n_new > UINT32_MAX / 2) {
        rc = ms_errf(err, err_len, -MS_E_FORMAT, "%s: too many tensors", label);
        goto out;
    }
    if (st->n_tensors + n_new > st->cap_tensors) {
        uint32_t cap = st->cap_tensors ? st->cap_tensors : 256;
        while (cap < st->n_tensors + n_new) cap *= 2;
        ms_st_tensor *nt = ms_realloc(st->tensors, (size_t)cap * sizeof *nt);
        if (!nt) {
            rc = ms_errf(err, err_len, -MS_E_NOMEM, "%s: out of memory", label);
            goto out;
        }
        st->tensors = nt;
        st->cap_tensors = cap;
    }
    st_file *f = &st->files[file_index];
    f->names = ms_malloc(name_bytes ? name_bytes : 1);
    if (!f->names) {
        rc = ms_errf(err, err_len, -MS_E_NOMEM, "%s: out of memory", label);
        goto out;
    }
    uint32_t first = st->n_tensors;
    char *np = f->names;
    for (uint32_t i = 0; i < n; i++) {
        size_t kl;
        const char *k = ms_json_key_at(root, i, &kl);
        if (strcmp(k, "__metadata__") == 0) continue;
        ms_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        rc = parse_entry(ms_json_value_at(root, i), k, kl, t, data_base, data_len, label, err,
                         err_len);
        if (rc) {
            st->n_tensors = first;
            goto out;
        }
        memcpy(np, k, kl + 1);
        t->name = np;
        np += kl + 1;
        t->file_index = file_index;
        t->data = buf + t->file_offset;
        st->n_tensors++;
    }

    /* overlaps: sort this file's tensors by offset; each must end before the next begins */
    if (n_new > 1) {
        uint32_t *ord = ms_malloc((size_t)n_new * sizeof *ord);
        if (!ord) {
            st->n_tensors = first;
            rc = ms_errf(err, err_len, -MS_E_NOMEM, "%s: out of memory", label);
            goto out;
        }
        for (uint32_t i = 0; i < n_new; i++) ord[i] = first + i;
        t_sort_tensors = st->tensors;
        qsort(ord, n_new, sizeof *ord, cmp_by_offset);
        for (uint32_t i = 1; i < n_new && !rc; i++) {
            const ms_st_tensor *a = &st->tensors[ord[i - 1]], *b = &st->tensors[ord[i]];
            if (a->n_bytes && b->n_bytes && a->file_offset + a->n_bytes > b->file_offset) {
                char na[120], nb[120];
                ms_json_escape(a->name, strlen(a->name), na, sizeof na);
                ms_json_escape(b->name, strlen(b->name), nb, sizeof nb);
                rc = ms_errf(err, err_len, -MS_E_FORMAT,
                          "%s: tensors '%s' [%llu,%llu) and '%s' [%llu,%llu) overlap", label, na,
                          (unsigned long long)(a->file_offset - data_base),
                          (unsigned long long)(a->file_offset - data_base + a->n_bytes), nb,
                          (unsigned long long)(b->file_offset - data_base),
                          (unsigned long long)(b->file_offset - data_base + b->n_bytes));
            }
        }
        ms_free(ord);
        if (rc) {
            st->n_tensors = first;
            goto out;
        }
    }
    rc = 0;
out:
    ms_json_free(doc);
    return rc;
}

int ms_st_parse_buffer(const uint8_t *buf, size_t len, const char *label, ms_st **out, char *err,
                       size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!out || (!buf && len)) return ms_errf(err, err_len, -MS_E_INVALID_ARG, "invalid argument");
    *out = NULL;
    if (!label) label = "(buffer)";
    ms_st *st = st_new();
    if (!st) return ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
    uint32_t fi;
    int rc = st_add_file(st, label, &fi);
    if (rc) {
        ms_st_close(st);
        return ms_errf(err, err_len, rc, "out of memory");
    }
    st->files[fi].map = buf;
    st->files[fi].size = len;
    rc = st_parse_file(st, fi, buf, len, label, err, err_len);
    if (!rc) rc = st_index(st, err, err_len);
    if (rc) {
        ms_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* files                                                                                        */

static int map_file(ms_st *st, const char *path, uint32_t *index, char *err, size_t err_len) {
    int rc = st_add_file(st, path, index);
    if (rc) return ms_errf(err, err_len, rc, "%s: out of memory", base_name(path));
    st_file *f = &st->files[*index];
    rc = ms_file_open_regular(path, "safetensors file", &f->fd, &f->size, err, err_len);
    if (rc) return rc;
    if (f->size < 8) return 0; /* st_parse_file reports it; nothing to map */
    void *m = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED) {
        rc = -errno;
        return ms_errf(err, err_len, rc, "%s: mmap of %llu bytes failed: %s", path,
                    (unsigned long long)f->size, ms_strerror(rc));
    }
    f->map = m;
    f->mapped = true;
    /* a shard truncated while mapped faults on access: let a SIGBUS name the file (fault.h) */
    if (ms_fault_register(m, (size_t)f->size, f->path, f->fd, f->size) != 0)
        MS_LOGW("%s: more than %d mapped files; a fault in this one will not be named", path,
                MS_FAULT_MAX_MAPS);
    return 0;
}

static int open_one(ms_st *st, const char *path, uint32_t *index, char *err, size_t err_len) {
    int rc = map_file(st, path, index, err, err_len);
    if (rc) return rc;
    st_file *f = &st->files[*index];
    static const uint8_t empty[8];
    return st_parse_file(st, *index, f->map ? f->map : empty, f->size, base_name(path), err,
                         err_len);
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool valid_shard_name(const char *s, size_t len) {
    if (len == 0 || strlen(s) != len) return false;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return strchr(s, '/') == NULL; /* shards live in the model directory, nowhere else */
}

static int open_sharded(ms_st *st, const char *dir, const char *index_path, char *err,
                        size_t err_len) {
    char *text = NULL, **shards = NULL, *path = NULL;
    size_t text_len = 0;
    ms_json_doc *doc = NULL;
    int rc = ms_file_read_all(index_path, "safetensors index", MAX_INDEX_BYTES, &text, &text_len,
                              err, err_len);
    if (rc) return rc;
    ms_json_error je;
    rc = ms_json_parse(text, text_len, NULL, &doc, &je);
    if (rc) {
        rc = ms_errf(err, err_len, rc, "%s: %s", INDEX_NAME, je.msg);
        goto out;
    }
    const ms_json *wm = ms_json_get(ms_json_root(doc), "weight_map");
    if (ms_json_type_of(wm) != MS_JSON_OBJECT) {
        rc = ms_errf(err, err_len, -MS_E_FORMAT, "%s: 'weight_map' is %s, expected an object",
                  INDEX_NAME, ms_json_kind(wm));
        goto out;
    }
    uint32_t n = ms_json_len(wm);
    shards = ms_malloc((n ? n : 1) * sizeof *shards);
    if (!shards) {
        rc = ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t kl, vl;
        const char *k = ms_json_key_at(wm, i, &kl);
        const char *v = ms_json_str(ms_json_value_at(wm, i), &vl);
        char kk[160];
        ms_json_escape(k, kl, kk, sizeof kk);
        if (!v || !valid_shard_name(v, vl)) {
            char vv[80];
            ms_json_escape(v ? v : "", vl, vv, sizeof vv);
            rc = ms_errf(err, err_len, -MS_E_FORMAT,
                      "%s: weight_map['%s']: '%s' is not a file name in the model directory",
                      INDEX_NAME, kk, vv);
            goto out;
        }
        shards[i] = (char *)v;
    }
    qsort(shards, n, sizeof *shards, cmp_cstr);
    size_t dl = strlen(dir);
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0) continue; /* each shard once */
        size_t need = dl + 1 + strlen(shards[i]) + 1;
        ms_free(path);
        path = ms_malloc(need);
        if (!path) {
            rc = ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
            goto out;
        }
        snprintf(path, need, "%s/%s", dir, shards[i]);
        uint32_t fi;
        rc = open_one(st, path, &fi, err, err_len);
        if (rc) goto out;
    }
    rc = st_index(st, err, err_len);
    if (rc) goto out;
    /* every weight_map entry is in its named shard; every shard tensor is in the weight_map */
    for (uint32_t i = 0; i < n; i++) {
        size_t kl, vl;
        const char *k = ms_json_key_at(wm, i, &kl);
        const char *v = ms_json_str(ms_json_value_at(wm, i), &vl);
        char kk[160];
        ms_json_escape(k, kl, kk, sizeof kk);
        const ms_st_tensor *t = strlen(k) == kl ? ms_st_find(st, k) : NULL;
        if (!t) {
            rc = ms_errf(err, err_len, -MS_E_FORMAT,
                      "%s: tensor '%s' is listed in %s but not found there", v, kk, INDEX_NAME);
            goto out;
        }
        const char *in = base_name(st->files[t->file_index].path);
        if (strcmp(in, v) != 0) {
            rc = ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s' is in %s, but %s names %s", in,
                      kk, in, INDEX_NAME, v);
            goto out;
        }
    }
    if (st->n_tensors != n) {
        /* counts differ and every weight_map name was found: some shard tensor is unlisted */
        for (uint32_t i = 0; i < st->n_tensors; i++) {
            if (!ms_json_get(wm, st->tensors[i].name)) {
                char kk[160];
                ms_json_escape(st->tensors[i].name, strlen(st->tensors[i].name), kk, sizeof kk);
                rc = ms_errf(err, err_len, -MS_E_FORMAT, "%s: tensor '%s' is not listed in %s",
                          base_name(st->files[st->tensors[i].file_index].path), kk, INDEX_NAME);
                goto out;
            }
        }
    }
    rc = 0;
out:
    ms_free(path);
    ms_free(shards);
    ms_json_free(doc);
    ms_free(text);
    return rc;
}

int ms_st_open(const char *path, ms_st **out, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!out || !path) return ms_errf(err, err_len, -MS_E_INVALID_ARG, "invalid argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int rc = -errno;
        return ms_errf(err, err_len, rc, "%s: %s", path, ms_strerror(rc));
    }
    ms_st *st = st_new();
    if (!st) return ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
    int rc;
    if (S_ISDIR(sb.st_mode)) {
        size_t dl = strlen(path);
        while (dl > 1 && path[dl - 1] == '/') dl--;
        size_t need = dl + 1 + sizeof INDEX_NAME;
        char *dir = ms_malloc(dl + 1), *p = ms_malloc(need);
        if (!dir || !p) {
            ms_free(dir);
            ms_free(p);
            ms_st_close(st);
            return ms_errf(err, err_len, -MS_E_NOMEM, "out of memory");
        }
        memcpy(dir, path, dl);
        dir[dl] = '\0';
        snprintf(p, need, "%s/%s", dir, INDEX_NAME);
        if (access(p, F_OK) == 0) {
            rc = open_sharded(st, dir, p, err, err_len);
        } else {
            snprintf(p, need, "%s/%s", dir, SINGLE_NAME);
            if (access(p, F_OK) == 0) {
                uint32_t fi;
                rc = open_one(st, p, &fi, err, err_len);
                if (!rc) rc = st_index(st, err, err_len);
            } else {
                rc = ms_errf(err, err_len, -ENOENT, "%s: no %s or %s in this directory", dir,
                          INDEX_NAME, SINGLE_NAME);
            }
        }
        ms_free(dir);
        ms_free(p);
    } else {
        uint32_t fi;
        rc = open_one(st, path, &fi, err, err_len);
        if (!rc) rc = st_index(st, err, err_len);
    }
    if (rc) {
        ms_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}
