/* storage/safetensors: small valid files (single, directory, sharded) written here and read back
 * with their values; sharding errors; truncation at many points; seeded byte mutations; and the
 * hostile corpus (argv[1]) replayed through ms_st_parse_buffer and ms_st_open, each expecting a
 * clean error with a message. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/fault.h"
#include "common/status.h"
#include "storage/safetensors.h"

#include "tests/check.h"


static char g_dir[256];

/* ---- a tiny independent writer ---------------------------------------------------------- */

typedef struct wt {
    const char *name;
    const char *dtype;
    uint32_t n_dims;
    uint64_t shape[3];
    const void *data;
    size_t n_bytes;
} wt;

/* Serialises tensors (data back to back in the given order) into a malloc'd buffer. */
static uint8_t *build(const wt *ts, int n, const char *metadata, size_t *out_len) {
    char hdr[8192];
    size_t k = 0, off = 0;
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "{");
    if (metadata) k += (size_t)snprintf(hdr + k, sizeof hdr - k, "\"__metadata__\":%s,", metadata);
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              i ? "," : "", ts[i].name, ts[i].dtype);
        for (uint32_t d = 0; d < ts[i].n_dims; d++)
            k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s%llu", d ? "," : "",
                                  (unsigned long long)ts[i].shape[d]);
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "],\"data_offsets\":[%zu,%zu]}", off,
                              off + ts[i].n_bytes);
        off += ts[i].n_bytes;
    }
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "}");
    while (k % 8) hdr[k++] = ' ';
    size_t len = 8 + k + off;
    uint8_t *b = ms_malloc(len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)k >> (8 * i));
    memcpy(b + 8, hdr, k);
    size_t p = 8 + k;
    for (int i = 0; i < n; i++) {
        if (ts[i].n_bytes) memcpy(b + p, ts[i].data, ts[i].n_bytes);
        p += ts[i].n_bytes;
    }
    *out_len = len;
    return b;
}

static void write_file(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot create %s", path);
    if (!f) return;
    CHECK(fwrite(b, 1, n, f) == n, "short write %s", path);
    fclose(f);
}

static void path_in(char *out, size_t n, const char *sub, const char *name) {
    if (sub) snprintf(out, n, "%s/%s/%s", g_dir, sub, name);
    else snprintf(out, n, "%s/%s", g_dir, name);
}

static void mk_subdir(const char *sub) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, sub);
    CHECK(mkdir(p, 0700) == 0, "mkdir %s: %s", p, strerror(errno));
}

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[768];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rm_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* ---- data ----------------------------------------------------------------------------- */

static uint16_t bf16_v[6] = {0x3F80, 0x4000, 0xBF80, 0x0000, 0x7F80, 0x7FC0}; /* 1 2 -1 0 inf nan */
static uint16_t f16_v[4] = {0x3C00, 0x4000, 0xC000, 0x7BFF};
static float f32_v[3] = {1.5f, -2.25f, 3.0e38f};
static uint8_t e4m3_v[8] = {0x38, 0x40, 0xB8, 0x7E, 0x7F, 0x01, 0x00, 0x80};
static uint8_t e8m0_v[2] = {127, 0xFF};
static int8_t i8_v[4] = {0x21, -1, 0x7F, -128}; /* packed FP4 nibbles */
static int64_t i64_v[3] = {0, 255, -9};
static double f64_v[1] = {2.5};
static uint8_t bool_v[2] = {1, 0};

static const wt k_tensors[] = {
    {"embed.weight", "BF16", 2, {2, 3}, bf16_v, sizeof bf16_v},
    {"f16", "F16", 1, {4}, f16_v, sizeof f16_v},
    {"layers.0.attn_sink", "F32", 1, {3}, f32_v, sizeof f32_v},
    {"layers.0.attn.wq_a.weight", "F8_E4M3", 2, {2, 4}, e4m3_v, sizeof e4m3_v},
    {"layers.0.attn.wq_a.scale", "F8_E8M0", 2, {1, 2}, e8m0_v, sizeof e8m0_v},
    {"layers.0.ffn.experts.0.w1.weight", "I8", 2, {2, 2}, i8_v, sizeof i8_v},
    {"layers.0.ffn.gate.tid2eid", "I64", 2, {3, 1}, i64_v, sizeof i64_v},
    {"scalar", "F64", 0, {0}, f64_v, sizeof f64_v},
    {"empty", "F32", 2, {0, 5}, NULL, 0},
    {"flags", "BOOL", 1, {2}, bool_v, sizeof bool_v},
    {"\xc3\xa9t\xc3\xa9", "U8", 1, {1}, bool_v, 1},
};
#define N_TENSORS ((int)(sizeof k_tensors / sizeof k_tensors[0]))

static void check_table(const ms_st *st, const wt *ts, int n, const char *what) {
    CHECK(ms_st_count(st) == (uint32_t)n, "%s: %u tensors, expected %d", what, ms_st_count(st), n);
    for (int i = 0; i < n; i++) {
        const ms_st_tensor *t = ms_st_find(st, ts[i].name);
        CHECK(t != NULL, "%s: '%s' not found", what, ts[i].name);
        if (!t) continue;
        ms_st_dtype dt;
        CHECK(ms_st_dtype_from_name(ts[i].dtype, &dt) == 0 && t->dtype == dt, "%s: %s dtype",
              what, ts[i].name);
        CHECK(strcmp(ms_st_dtype_name(t->dtype), ts[i].dtype) == 0, "dtype name");
        CHECK(t->n_dims == ts[i].n_dims, "%s: %s n_dims %u", what, ts[i].name, t->n_dims);
        uint64_t ne = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            CHECK(t->shape[d] == ts[i].shape[d], "%s: %s shape[%u]", what, ts[i].name, d);
            ne *= ts[i].shape[d];
        }
        CHECK(t->n_elems == ne, "%s: %s n_elems", what, ts[i].name);
        CHECK(t->n_bytes == ts[i].n_bytes && t->n_bytes == ne * ms_st_dtype_size(t->dtype),
              "%s: %s n_bytes", what, ts[i].name);
        CHECK(ts[i].n_bytes == 0 || memcmp(t->data, ts[i].data, ts[i].n_bytes) == 0,
              "%s: %s values differ", what, ts[i].name);
        uint32_t idx;
        CHECK(ms_st_find_index(st, ts[i].name, &idx) == 0 && ms_st_at(st, idx) == t, "find_index");
    }
    CHECK(ms_st_find(st, "nope") == NULL && ms_st_find(st, "") == NULL, "absent name");
    CHECK(ms_st_at(st, ms_st_count(st)) == NULL, "at OOB");
}

static void test_dtypes(void) {
    CHECK(ms_st_dtype_size(MS_ST_BF16) == 2 && ms_st_dtype_size(MS_ST_F8_E4M3) == 1 &&
              ms_st_dtype_size(MS_ST_I64) == 8 && ms_st_dtype_size(MS_ST_F32) == 4,
          "dtype sizes");
    for (int i = 0; i < MS_ST_DTYPE_COUNT; i++) {
        ms_st_dtype back;
        CHECK(ms_st_dtype_from_name(ms_st_dtype_name((ms_st_dtype)i), &back) == 0 && (int)back == i,
              "dtype round trip %d", i);
        CHECK(ms_st_dtype_size((ms_st_dtype)i) > 0, "dtype size %d", i);
    }
    ms_st_dtype dt;
    CHECK(ms_st_dtype_from_name("F8_E5M2", &dt) == -MS_E_NOT_FOUND, "unknown dtype name");
}

static void test_single(void) {
    size_t len;
    uint8_t *b = build(k_tensors, N_TENSORS, "{\"format\":\"pt\"}", &len);
    char err[512];
    ms_st *st = NULL;
    int rc = ms_st_parse_buffer(b, len, "mem", &st, err, sizeof err);
    CHECK(rc == 0, "parse_buffer: %s", err);
    if (!rc) {
        check_table(st, k_tensors, N_TENSORS, "buffer");
        const ms_st_tensor *t = ms_st_find(st, "embed.weight");
        CHECK(t && t->data == b + t->file_offset, "buffer data points into buf");
        CHECK(ms_st_file_fd(st, 0) == -1 && strcmp(ms_st_file_path(st, 0), "mem") == 0,
              "buffer file entry");
        /* spot values through typed views */
        const uint16_t *bf = ms_st_find(st, "embed.weight")->data;
        CHECK(bf[1] == 0x4000 && bf[5] == 0x7FC0, "bf16 values");
        int64_t v;
        memcpy(&v, (const uint8_t *)ms_st_find(st, "layers.0.ffn.gate.tid2eid")->data + 16, 8);
        CHECK(v == -9, "i64 value");
    }
    ms_st_close(st);

    char p[512];
    path_in(p, sizeof p, NULL, "one.safetensors");
    write_file(p, b, len);
    st = NULL;
    rc = ms_st_open(p, &st, err, sizeof err);
    CHECK(rc == 0, "open file: %s", err);
    if (!rc) {
        check_table(st, k_tensors, N_TENSORS, "file");
        CHECK(ms_st_file_count(st) == 1 && ms_st_file_fd(st, 0) >= 0 &&
                  ms_st_file_size(st, 0) == len && strcmp(ms_st_file_path(st, 0), p) == 0,
              "file entry");
        const ms_st_tensor *t = ms_st_find(st, "flags");
        CHECK(t && t->file_index == 0 && t->file_offset + t->n_bytes <= len, "file offset");
        /* the mapping holds exactly the file bytes */
        CHECK(t && memcmp(t->data, b + t->file_offset, t->n_bytes) == 0, "mapped bytes");
    }
    ms_st_close(st);

    /* a directory holding model.safetensors */
    mk_subdir("single");
    path_in(p, sizeof p, "single", "model.safetensors");
    write_file(p, b, len);
    path_in(p, sizeof p, "single", "");
    st = NULL;
    rc = ms_st_open(p, &st, err, sizeof err);
    CHECK(rc == 0, "open dir: %s", err);
    if (!rc) check_table(st, k_tensors, N_TENSORS, "dir");
    ms_st_close(st);

    /* an empty directory / a missing path */
    mk_subdir("empty");
    path_in(p, sizeof p, "empty", "");
    rc = ms_st_open(p, &st, err, sizeof err);
    CHECK(rc == -ENOENT && strstr(err, "model.safetensors"), "empty dir: %d %s", rc, err);
    path_in(p, sizeof p, NULL, "does-not-exist.safetensors");
    rc = ms_st_open(p, &st, err, sizeof err);
    CHECK(rc == -ENOENT && st == NULL && err[0], "missing file: %d %s", rc, err);

    /* an empty header object is a valid, empty file */
    static const uint8_t empty_hdr[16] = {8,   0,   0,   0,   0,   0,   0,   0,
                                          '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    rc = ms_st_parse_buffer(empty_hdr, sizeof empty_hdr, "e", &st, err, sizeof err);
    CHECK(rc == 0 && ms_st_count(st) == 0 && ms_st_find(st, "x") == NULL, "empty table: %s", err);
    ms_st_close(st);
    ms_st_close(NULL);
    ms_free(b);
}

/* Truncating a valid file at any point before its end must be rejected. */
static void test_truncation(void) {
    size_t len;
    uint8_t *b = build(k_tensors, N_TENSORS, NULL, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + (size_t)hlen / 2, 8 + (size_t)hlen - 1, 8 + (size_t)hlen,
                     8 + (size_t)hlen + 1, len / 2 + 8 + (size_t)hlen / 2, len - 2, len - 1};
    char p[512], err[512];
    path_in(p, sizeof p, NULL, "cut.safetensors");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        size_t n = cuts[i];
        if (n >= len) continue;
        uint8_t *copy = ms_malloc(n ? n : 1); /* exact size: ASan sees any over-read */
        memcpy(copy, b, n);
        ms_st *st = NULL;
        err[0] = '\0';
        int rc = ms_st_parse_buffer(copy, n, "cut", &st, err, sizeof err);
        CHECK(rc == -MS_E_FORMAT && st == NULL && err[0], "cut at %zu of %zu accepted", n, len);
        write_file(p, b, n);
        err[0] = '\0';
        rc = ms_st_open(p, &st, err, sizeof err);
        CHECK(rc == -MS_E_FORMAT && st == NULL && strstr(err, "cut.safetensors"),
              "open cut at %zu: rc %d '%s'", n, rc, err);
        ms_free(copy);
    }
    ms_free(b);
}

/* Seeded random byte mutations of a valid file: any result is fine except a crash; an accepted
 * file must still be self-consistent. */
static void test_mutations(void) {
    size_t len;
    uint8_t *b = build(k_tensors, N_TENSORS, "{\"a\":\"b\"}", &len);
    unsigned seed = 12345u;
    const char *env = getenv("MS_TEST_SEED");
    if (env) seed = (unsigned)strtoul(env, NULL, 0);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    int accepted = 0;
    for (int it = 0; it < 3000; it++) {
        uint8_t *m = ms_malloc(len);
        memcpy(m, b, len);
        int flips = 1 + it % 4;
        for (int f = 0; f < flips; f++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % (8 + 300 < len ? 8 + 300 : len)); /* mostly the header */
            m[at] = (uint8_t)(x >> 24);
        }
        ms_st *st = NULL;
        char err[256] = "";
        int rc = ms_st_parse_buffer(m, len, "mut", &st, err, sizeof err);
        if (rc == 0) {
            accepted++;
            for (uint32_t i = 0; i < ms_st_count(st); i++) {
                const ms_st_tensor *t = ms_st_at(st, i);
                CHECK(t->file_offset + t->n_bytes <= len, "seed %u it %d: tensor beyond buffer",
                      seed, it);
            }
        } else {
            CHECK(err[0], "seed %u it %d: empty message", seed, it);
        }
        ms_st_close(st);
        ms_free(m);
    }
    printf("mutations: seed %u, %d of 3000 accepted\n", seed, accepted);
    ms_free(b);
}

/* ---- sharded ------------------------------------------------------------------------- */

static void write_shard(const char *sub, const char *name, const wt *ts, int n) {
    size_t len;
    uint8_t *b = build(ts, n, NULL, &len);
    char p[512];
    path_in(p, sizeof p, sub, name);
    write_file(p, b, len);
    ms_free(b);
}

static void write_index(const char *sub, const char *body) {
    char p[512];
    path_in(p, sizeof p, sub, "model.safetensors.index.json");
    write_file(p, body, strlen(body));
}

static int open_sub(const char *sub, ms_st **st, char *err, size_t err_len) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s/", g_dir, sub); /* trailing slash on purpose */
    return ms_st_open(p, st, err, err_len);
}

static const char *k_index_ok =
    "{\"metadata\":{\"total_size\":1},\"weight_map\":{"
    "\"embed.weight\":\"model-00001-of-00002.safetensors\","
    "\"f16\":\"model-00001-of-00002.safetensors\","
    "\"layers.0.attn_sink\":\"model-00001-of-00002.safetensors\","
    "\"layers.0.attn.wq_a.weight\":\"model-00002-of-00002.safetensors\","
    "\"layers.0.attn.wq_a.scale\":\"model-00002-of-00002.safetensors\","
    "\"layers.0.ffn.experts.0.w1.weight\":\"model-00002-of-00002.safetensors\","
    "\"layers.0.ffn.gate.tid2eid\":\"model-00002-of-00002.safetensors\"}}";

static void test_sharded(void) {
    const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
    char err[512];
    ms_st *st = NULL;

    mk_subdir("sh");
    write_shard("sh", s1, k_tensors, 3);
    write_shard("sh", s2, k_tensors + 3, 4);
    write_index("sh", k_index_ok);
    int rc = open_sub("sh", &st, err, sizeof err);
    CHECK(rc == 0, "sharded open: %s", err);
    if (!rc) {
        check_table(st, k_tensors, 7, "sharded");
        CHECK(ms_st_file_count(st) == 2, "two shards");
        const ms_st_tensor *t = ms_st_find(st, "layers.0.ffn.gate.tid2eid");
        CHECK(t && strstr(ms_st_file_path(st, t->file_index), s2), "tensor in shard 2");
        t = ms_st_find(st, "embed.weight");
        CHECK(t && strstr(ms_st_file_path(st, t->file_index), s1), "tensor in shard 1");
    }
    ms_st_close(st);

    /* weight_map naming a shard that does not exist */
    mk_subdir("sh_missing");
    write_shard("sh_missing", s1, k_tensors, 3);
    write_index("sh_missing", k_index_ok);
    rc = open_sub("sh_missing", &st, err, sizeof err);
    CHECK(rc == -ENOENT && strstr(err, s2), "missing shard: %d %s", rc, err);

    /* a tensor missing from its shard (present nowhere) */
    mk_subdir("sh_absent");
    write_shard("sh_absent", s1, k_tensors, 3);
    write_shard("sh_absent", s2, k_tensors + 3, 3); /* tid2eid left out */
    write_index("sh_absent", k_index_ok);
    rc = open_sub("sh_absent", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "layers.0.ffn.gate.tid2eid") && strstr(err, s2),
          "absent tensor: %s", err);

    /* a tensor in the other shard than the weight_map says: message names both */
    mk_subdir("sh_moved");
    write_shard("sh_moved", s1, k_tensors, 4);      /* wq_a.weight moved to shard 1 */
    write_shard("sh_moved", s2, k_tensors + 4, 3);
    write_index("sh_moved", k_index_ok);
    rc = open_sub("sh_moved", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "layers.0.attn.wq_a.weight") && strstr(err, s1) &&
              strstr(err, s2),
          "moved tensor: %s", err);

    /* a shard tensor not listed in the weight_map */
    mk_subdir("sh_extra");
    write_shard("sh_extra", s1, k_tensors, 3);
    write_shard("sh_extra", s2, k_tensors + 3, 5); /* + "scalar" */
    write_index("sh_extra", k_index_ok);
    rc = open_sub("sh_extra", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "'scalar'") && strstr(err, "not listed"),
          "unlisted tensor: %s", err);

    /* the same tensor in two shards */
    mk_subdir("sh_dup");
    write_shard("sh_dup", s1, k_tensors, 4);
    write_shard("sh_dup", s2, k_tensors + 3, 4);
    write_index("sh_dup", k_index_ok);
    rc = open_sub("sh_dup", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "both") && strstr(err, s1) && strstr(err, s2),
          "duplicate across shards: %s", err);

    /* shard names that leave the directory, bad index JSON, weight_map of the wrong type */
    mk_subdir("sh_bad");
    write_index("sh_bad", "{\"weight_map\":{\"embed.weight\":\"../one.safetensors\"}}");
    rc = open_sub("sh_bad", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "../one.safetensors"), "path escape: %s", err);
    write_index("sh_bad", "{\"weight_map\":{\"embed.weight\":7}}");
    rc = open_sub("sh_bad", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && err[0], "non-string shard: %s", err);
    write_index("sh_bad", "{\"weight_map\":[]}");
    rc = open_sub("sh_bad", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "weight_map"), "weight_map array: %s", err);
    write_index("sh_bad", "{\"weight_map\":{\"a\":\"x\",}}");
    rc = open_sub("sh_bad", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && strstr(err, "model.safetensors.index.json") &&
              strstr(err, "line 1"),
          "bad index JSON: %s", err);
    CHECK(st == NULL, "no table on failure");
}

/* ---- hostile corpus ------------------------------------------------------------------ */

/* A shard truncated after open: touching its data raises SIGBUS. With the handler (common/fault.h)
 * the process says which file and exits 1; without it, the signal kills it (the "before"). Each
 * run is a child process; its stderr goes to a file we read back. */
static int truncated_access(bool install, char *msg, size_t msg_len) {
    char p[512], ep[512];
    path_in(p, sizeof p, NULL, install ? "trunc_h.safetensors" : "trunc_n.safetensors");
    path_in(ep, sizeof ep, NULL, "trunc.err");
    static uint8_t big[3 * 65536];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
    wt t = {"w", "U8", 1, {sizeof big}, big, sizeof big};
    size_t len;
    uint8_t *b = build(&t, 1, NULL, &len);
    write_file(p, b, len);
    ms_free(b);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int efd = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(efd, 2);
        if (install)
            ms_fault_install_sigbus();
        else
            signal(SIGBUS, SIG_DFL); /* the default action (a sanitizer runtime installs its own) */
        ms_st *st = NULL;
        char err[256];
        if (ms_st_open(p, &st, err, sizeof err) != 0) _exit(3);
        const ms_st_tensor *w = ms_st_find(st, "w");
        if (truncate(p, 4096) != 0) _exit(4);
        volatile uint8_t sink = 0;
        for (uint64_t i = 0; i < w->n_bytes; i += 4096) sink ^= ((const uint8_t *)w->data)[i];
        (void)sink;
        _exit(5); /* the read must not succeed */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    msg[0] = '\0';
    FILE *f = fopen(ep, "r");
    if (f) {
        size_t n = fread(msg, 1, msg_len - 1, f);
        msg[n] = '\0';
        fclose(f);
    }
    unlink(ep);
    unlink(p);
    return status;
}

static void test_truncated_while_mapped(void) {
    char msg[1024];
    int st = truncated_access(false, msg, sizeof msg);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "without the handler: status %#x", st);
    st = truncated_access(true, msg, sizeof msg);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "with the handler: status %#x, stderr '%s'", st,
          msg);
    CHECK(strstr(msg, "trunc_h.safetensors changed while in use") && strstr(msg, "now 4096 bytes"),
          "message: '%s'", msg);
}

/* A FIFO (or other non-regular file) as a shard or the index used to block in open(2). */
static void test_non_regular(void) {
    char p[512], err[512];
    mk_subdir("fifo1");
    path_in(p, sizeof p, "fifo1", "model.safetensors");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo %s", p);
    ms_st *st = NULL;
    int rc = open_sub("fifo1", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && !st && strstr(err, "model.safetensors: is a FIFO"),
          "FIFO single file: %d %s", rc, err);
    mk_subdir("fifo2");
    path_in(p, sizeof p, "fifo2", "model.safetensors.index.json");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo %s", p);
    rc = open_sub("fifo2", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && !st && strstr(err, "index.json: is a FIFO"), "FIFO index: %d %s",
          rc, err);
    mk_subdir("fifo3");
    write_index("fifo3", "{\"weight_map\": {\"a\": \"model-1.safetensors\"}}");
    path_in(p, sizeof p, "fifo3", "model-1.safetensors");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo %s", p);
    rc = open_sub("fifo3", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && !st && strstr(err, "model-1.safetensors: is a FIFO"),
          "FIFO shard: %d %s", rc, err);
    mk_subdir("devnull");
    write_index("devnull", "{\"weight_map\": {\"a\": \"model-1.safetensors\"}}");
    path_in(p, sizeof p, "devnull", "model-1.safetensors");
    CHECK(symlink("/dev/null", p) == 0, "symlink %s", p);
    rc = open_sub("devnull", &st, err, sizeof err);
    CHECK(rc == -MS_E_FORMAT && !st && strstr(err, "is a character device"),
          "device shard: %d %s", rc, err);
}

static int read_all(const char *path, uint8_t **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    *out = NULL;
    *len = 0;
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = ms_malloc(n > 0 ? (size_t)n : 1);
    size_t got = n > 0 ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    *out = b;
    *len = got;
    return got == (size_t)(n > 0 ? n : 0) ? 0 : -1;
}

static void test_hostile(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open corpus dir %s", dir);
    if (!d) return;
    int count = 0;
    struct dirent *e;
    bool verbose = getenv("MS_TEST_VERBOSE") != NULL;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl < 12 || strcmp(e->d_name + nl - 12, ".safetensors") != 0) continue;
        char p[768];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        uint8_t *b = NULL;
        size_t len = 0;
        if (read_all(p, &b, &len) != 0) {
            CHECK(0, "cannot read %s", p);
            ms_free(b);
            continue;
        }
        ms_st *st = NULL;
        char err[512] = "";
        int rc = ms_st_parse_buffer(b, len, e->d_name, &st, err, sizeof err);
        CHECK(rc < 0 && st == NULL && err[0], "%s: parse_buffer rc %d, msg '%s'", e->d_name, rc,
              err);
        if (verbose) printf("%-40s %s\n", e->d_name, err);
        char err2[512] = "";
        rc = ms_st_open(p, &st, err2, sizeof err2);
        CHECK(rc < 0 && st == NULL && strstr(err2, e->d_name), "%s: open rc %d, msg '%s'",
              e->d_name, rc, err2);
        ms_st_close(st);
        ms_free(b);
        count++;
    }
    closedir(d);
    CHECK(count >= 15, "only %d hostile files in %s", count, dir);
    printf("hostile corpus: %d files rejected\n", count);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("usage: test_safetensors HOSTILE_CORPUS_DIR\n");
        return 1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/ms_st_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        printf("mkdtemp %s: %s\n", g_dir, strerror(errno));
        return 1;
    }
    ms_alloc_stats s0, s1;
    ms_alloc_get_stats(&s0);
    test_dtypes();
    test_single();
    test_truncation();
    test_mutations();
    test_sharded();
    test_hostile(argv[1]);
    test_non_regular();
    test_truncated_while_mapped();
    ms_alloc_get_stats(&s1);
    CHECK(s1.n_live == s0.n_live, "leaked %llu blocks",
          (unsigned long long)(s1.n_live - s0.n_live));
    rm_tree(g_dir);
    if (g_fail) {
        printf("%d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_safetensors: ok\n");
    return 0;
}
