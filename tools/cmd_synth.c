/* tools/cmd_synth.c — `moestream synth`: a synthetic DeepSeek-V4 checkpoint in the official file
 * format (config.json, sharded safetensors with the official names and encodings, the index) at
 * the real V4-Flash or V4-Pro dimensions or those of any config.json, with a chosen number of
 * layers and experts per layer. Weights come from engine/model/v4_synth.h (random, scaled so
 * activations stay O(1)); for benchmarks and streaming tests, never for quality.
 *
 * Writing: tensors in table order, split into shards of --shard-size; each shard's data is cut
 * into 16 MiB pieces that worker threads generate and pwrite in place, so the rate is bound by the
 * disk, not one core. Every piece is a pure function of (seed, tensor, offset): the output does not
 * depend on the thread count. On any failure the files written so far are removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/file.h"
#include "common/status.h"
#include "common/timer.h"
#include "engine/model/config.h"
#include "engine/model/v4_synth.h"
#include "tools/cli.h"

int ms_cmd_synth(int argc, char **argv);

#define PIECE_BYTES ((uint64_t)16 << 20)
#define MAX_THREADS 64u

static void usage(FILE *f) {
    fprintf(f,
            "usage: moestream synth -o DIR [--like flash|pro | --config FILE] [--layers N]\n"
            "                       [--experts E] [--no-mtp] [--seed S] [--shard-size GIB]\n"
            "                       [--threads T] [--force]\n"
            "\n"
            "Writes a synthetic DeepSeek-V4 checkpoint in the official format (config.json,\n"
            "model-*.safetensors, model.safetensors.index.json) with random weights scaled so\n"
            "activations stay O(1). For benchmarks and streaming tests: it has no knowledge.\n"
            "\n"
            "  -o, --out DIR       output directory (created; must be empty unless --force)\n"
            "  --like flash|pro    the published dimensions (default flash)\n"
            "  --config FILE       or the dimensions of this config.json\n"
            "  --layers N          keep the first N layers of the schedule (default: all)\n"
            "  --experts E         routed experts per layer (default: all; at least\n"
            "                      num_experts_per_tok)\n"
            "  --no-mtp            leave out the MTP block\n"
            "  --seed S            weights seed (default 1); equal seeds give equal bytes\n"
            "  --shard-size GIB    shard size in GiB (default 4)\n"
            "  --threads T         generator threads (default: the CPUs, at most 64)\n"
            "  --force             write into a non-empty DIR (its model files are replaced)\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    return ms_cli_bad_usage("synth", usage, fmt, arg);
}


/* ---- the plan: which tensor goes to which shard at which offset ---- */

typedef struct item {
    ms_v4_tensor_spec spec;
    uint32_t shard;
    uint64_t off;   /* within the shard's data section */
    uint64_t bytes;
} item;

typedef struct plan {
    item *items;
    uint32_t n, cap;
    uint32_t n_shards;
    uint64_t shard_limit, cur_bytes, total_bytes;
} plan;

static int plan_fn(const ms_v4_tensor_spec *t, void *user) {
    plan *p = user;
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? 2 * p->cap : 1024;
        item *ni = ms_realloc(p->items, (size_t)cap * sizeof *ni);
        if (!ni) return -MS_E_NOMEM;
        p->items = ni;
        p->cap = cap;
    }
    uint64_t b = ms_v4_spec_bytes(t);
    if (p->n_shards == 0 || (p->cur_bytes > 0 && p->cur_bytes + b > p->shard_limit)) {
        p->n_shards++;
        p->cur_bytes = 0;
    }
    item *it = &p->items[p->n++];
    it->spec = *t;
    it->shard = p->n_shards - 1;
    it->off = p->cur_bytes;
    it->bytes = b;
    p->cur_bytes += b;
    p->total_bytes += b;
    return 0;
}

/* ---- one shard ---- */

typedef struct job {
    const ms_v4_config *cfg;
    const item *items; /* this shard's tensors */
    uint64_t seed;
    int fd;
    uint64_t data_base; /* file offset of the data section */
    atomic_uint_fast64_t next;  /* next piece index */
    uint64_t n_pieces;
    atomic_uint_fast64_t done_bytes;
    atomic_int failed;          /* first error (negative errno), 0 = none */
    /* piece p covers bytes [piece_off[p], + PIECE_BYTES) of item piece_item[p] (less at its end) */
    uint32_t *piece_item;
    uint64_t *piece_off;
} job;

static void *worker(void *arg) {
    job *j = arg;
    uint8_t *buf = ms_malloc(PIECE_BYTES);
    if (!buf) {
        int zero = 0;
        atomic_compare_exchange_strong(&j->failed, &zero, -MS_E_NOMEM);
        return NULL;
    }
    for (;;) {
        if (atomic_load(&j->failed)) break;
        uint64_t p = atomic_fetch_add(&j->next, 1);
        if (p >= j->n_pieces) break;
        const item *it = &j->items[j->piece_item[p]];
        uint64_t off = j->piece_off[p];
        uint64_t n = it->bytes - off < PIECE_BYTES ? it->bytes - off : PIECE_BYTES;
        ms_v4_synth_fill(j->cfg, &it->spec, j->seed, off, n, buf);
        uint64_t done = 0;
        while (done < n) {
            ssize_t w = pwrite(j->fd, buf + done, (size_t)(n - done),
                               (off_t)(j->data_base + it->off + off + done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                int e = w < 0 ? -errno : -ENOSPC, zero = 0;
                atomic_compare_exchange_strong(&j->failed, &zero, e);
                break;
            }
            done += (uint64_t)w;
        }
        atomic_fetch_add(&j->done_bytes, n);
    }
    ms_free(buf);
    return NULL;
}

/* The safetensors header of items[0..n) (offsets relative to the data section), padded with spaces
 * to a multiple of 8 bytes as the reference writer does. */
static char *shard_header(const item *items, uint32_t n, size_t *len) {
    char *buf = NULL;
    size_t sz = 0;
    FILE *f = open_memstream(&buf, &sz);
    if (!f) return NULL;
    fprintf(f, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (uint32_t i = 0; i < n; i++) {
        const ms_v4_tensor_spec *t = &items[i].spec;
        fprintf(f, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu", t->name,
                ms_st_dtype_name(t->dtype), (unsigned long long)t->shape[0]);
        if (t->n_dims > 1) fprintf(f, ",%llu", (unsigned long long)t->shape[1]);
        fprintf(f, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)items[i].off,
                (unsigned long long)(items[i].off + items[i].bytes));
    }
    fputc('}', f);
    while (ftell(f) % 8) fputc(' ', f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = sz;
    return buf;
}

static int write_all(int fd, const void *b, size_t n, uint64_t off) {
    const uint8_t *p = b;
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -ENOSPC;
        p += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return 0;
}

static int write_shard(const ms_v4_config *cfg, const item *items, uint32_t n, uint64_t seed,
                       uint32_t threads, const char *path, uint64_t *done_total,
                       uint64_t grand_total, uint64_t t0) {
    size_t hlen = 0;
    char *hdr = shard_header(items, n, &hlen);
    if (!hdr) return -MS_E_NOMEM;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = -errno;
        free(hdr);
        return rc;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int rc = write_all(fd, le, 8, 0);
    if (!rc) rc = write_all(fd, hdr, hlen, 8);
    free(hdr);

    job j = {.cfg = cfg, .items = items, .seed = seed, .fd = fd, .data_base = 8 + hlen};
    for (uint32_t i = 0; i < n; i++) j.n_pieces += (items[i].bytes + PIECE_BYTES - 1) / PIECE_BYTES;
    j.piece_item = ms_malloc((j.n_pieces ? j.n_pieces : 1) * sizeof *j.piece_item);
    j.piece_off = ms_malloc((j.n_pieces ? j.n_pieces : 1) * sizeof *j.piece_off);
    if (!rc && (!j.piece_item || !j.piece_off)) rc = -MS_E_NOMEM;
    uint64_t p = 0;
    for (uint32_t i = 0; !rc && i < n; i++)
        for (uint64_t o = 0; o < items[i].bytes; o += PIECE_BYTES, p++) {
            j.piece_item[p] = i;
            j.piece_off[p] = o;
        }
    atomic_init(&j.next, 0);
    atomic_init(&j.done_bytes, 0);
    atomic_init(&j.failed, 0);
    pthread_t tids[MAX_THREADS];
    uint32_t started = 0;
    for (uint32_t t = 0; !rc && t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, &j) == 0) started++;
    if (!rc && started == 0) rc = -MS_E_INTERNAL;
    /* progress while the workers run: one line a second on a terminal, every 10% otherwise */
    bool tty = isatty(STDERR_FILENO);
    uint64_t last_pct = 0, last_ns = 0;
    uint64_t shard_bytes = 0;
    for (uint32_t i = 0; i < n; i++) shard_bytes += items[i].bytes;
    while (!rc && started) {
        uint64_t d = atomic_load(&j.done_bytes);
        if (d >= shard_bytes || atomic_load(&j.failed)) break; /* the workers end on their own */
        uint64_t now = ms_time_ns(), all = *done_total + d;
        uint64_t pct = grand_total ? all * 100 / grand_total : 100;
        if ((tty && now - last_ns > 1000000000ull) || (!tty && pct >= last_pct + 10)) {
            double s = (double)(now - t0) / 1e9;
            fprintf(stderr, "%ssynth: %.2f of %.2f GB (%llu%%), %.0f MB/s%s", tty ? "\r" : "",
                    (double)all / 1e9, (double)grand_total / 1e9, (unsigned long long)pct,
                    s > 0 ? (double)all / 1e6 / s : 0.0, tty ? "" : "\n");
            last_ns = now;
            last_pct = pct - pct % 10;
        }
        usleep(50000);
    }
    for (uint32_t t = 0; t < started; t++) pthread_join(tids[t], NULL);
    if (!rc) rc = atomic_load(&j.failed);
    *done_total += atomic_load(&j.done_bytes);
    if (close(fd) != 0 && !rc) rc = -errno;
    ms_free(j.piece_item);
    ms_free(j.piece_off);
    return rc;
}

/* ---- the command ---- */

/* The file name of shard i of n (as the index names it). */
static void shard_file(char *out, size_t len, uint32_t i, uint32_t n) {
    snprintf(out, len, "model-%05u-of-%05u.safetensors", i + 1, n);
}

static void shard_name(char *out, size_t len, const char *dir, uint32_t i, uint32_t n) {
    char f[64];
    shard_file(f, sizeof f, i, n);
    snprintf(out, len, "%s/%s", dir, f);
}

static void remove_outputs(const char *dir, uint32_t n_shards) {
    char p[4200];
    for (uint32_t i = 0; i < n_shards; i++) {
        shard_name(p, sizeof p, dir, i, n_shards);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
}

/* dir (a directory) already holds a model: a config.json or an index. */
static bool holds_model(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (access(p, F_OK) == 0) return true;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    return access(p, F_OK) == 0;
}

int ms_cmd_synth(int argc, char **argv) {
    const char *out = NULL, *like = "flash", *cfg_path = NULL;
    uint64_t layers = 0, experts = 0, seed = 1, shard_gib = 4, threads = 0;
    bool no_mtp = false, force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (!v) return bad_usage("%s needs a directory", a);
            out = argv[++i];
        } else if (!strcmp(a, "--like")) {
            if (!v || (strcmp(v, "flash") && strcmp(v, "pro")))
                return bad_usage("--like takes flash or pro, got '%s'", v ? v : "");
            like = argv[++i];
        } else if (!strcmp(a, "--config")) {
            if (!v) return bad_usage("%s needs a config.json", a);
            cfg_path = argv[++i];
        } else if (!strcmp(a, "--layers") || !strcmp(a, "--experts") || !strcmp(a, "--seed") ||
                   !strcmp(a, "--shard-size") || !strcmp(a, "--threads")) {
            uint64_t x;
            if (!v || !ms_cli_parse_u64(v, &x)) return bad_usage("%s needs a non-negative integer", a);
            i++;
            if (!strcmp(a, "--layers")) layers = x;
            else if (!strcmp(a, "--experts")) experts = x;
            else if (!strcmp(a, "--seed")) seed = x;
            else if (!strcmp(a, "--shard-size")) shard_gib = x;
            else threads = x;
        } else if (!strcmp(a, "--no-mtp")) {
            no_mtp = true;
        } else if (!strcmp(a, "--force")) {
            force = true;
        } else {
            return bad_usage("unknown option '%s'", a);
        }
    }
    if (!out) return bad_usage("%s", "-o DIR is required");
    if (shard_gib == 0 || shard_gib > 1024) return bad_usage("%s", "--shard-size must be 1..1024");
    if (threads > MAX_THREADS) return bad_usage("%s", "--threads must be at most 64");

    ms_v4_config c;
    char err[2048];
    int rc = cfg_path ? ms_v4_config_load(cfg_path, &c, err, sizeof err)
                      : ms_v4_config_preset(like, &c);
    if (rc) {
        fprintf(stderr, "moestream synth: %s\n", cfg_path ? err : "unknown preset");
        return cfg_path ? 1 : 2;
    }
    if (layers) {
        if (layers > c.n_layers)
            return bad_usage("--layers: the model has %s layers",
                             (snprintf(err, sizeof err, "%u", c.n_layers), err));
        /* keep the schedule's first N entries; the MTP entry (ratio of the old last+1) stays */
        uint32_t mtp_ratio = ms_v4_layer_ratio(&c, c.n_layers);
        c.n_layers = (uint32_t)layers;
        c.compress_ratios[c.n_layers] = mtp_ratio;
        c.n_compress_ratios = c.n_layers + 1;
        if (c.n_hash_layers > c.n_layers) c.n_hash_layers = c.n_layers;
    }
    if (experts) {
        if (experts < c.n_active_experts || experts > 4096)
            return bad_usage("--experts must be in num_experts_per_tok..4096 (%s)",
                             (snprintf(err, sizeof err, "num_experts_per_tok = %u",
                                       c.n_active_experts), err));
        c.n_routed_experts = (uint32_t)experts;
    }
    if (no_mtp) {
        c.n_mtp_layers = 0;
        c.n_compress_ratios = c.n_layers;
    }
    if (!threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (uint64_t)n : 1;
        if (threads > MAX_THREADS) threads = MAX_THREADS;
    }

    plan p = {.shard_limit = shard_gib << 30};
    rc = ms_v4_for_each_tensor(&c, c.n_mtp_layers > 0, plan_fn, &p);
    if (rc) {
        fprintf(stderr, "moestream synth: %s\n", ms_strerror(rc));
        ms_free(p.items);
        return 1;
    }

    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "moestream synth: cannot create %s: %s\n", out, strerror(errno));
        ms_free(p.items);
        return 1;
    }
    struct stat sb;
    if (stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "moestream synth: %s is not a directory\n", out);
        ms_free(p.items);
        return 1;
    }
    if (!force && holds_model(out)) {
        fprintf(stderr, "moestream synth: %s already holds a model (config.json or an index); "
                        "use --force to replace it\n", out);
        ms_free(p.items);
        return 1;
    }
    struct statvfs vf;
    char a[32], b[32];
    if (statvfs(out, &vf) == 0 && (uint64_t)vf.f_bavail * vf.f_frsize < p.total_bytes + (1u << 20)) {
        fprintf(stderr, "moestream synth: the model needs %s, %s has %s free; choose fewer "
                        "--layers or --experts, or another -o\n",
                ms_file_size_str(p.total_bytes, a, sizeof a), out,
                ms_file_size_str((uint64_t)vf.f_bavail * vf.f_frsize, b, sizeof b));
        ms_free(p.items);
        return 1;
    }
    fprintf(stderr, "synth: %u layers, %u experts, %u tensors, %s in %u shard%s, %llu threads\n",
            c.n_layers, c.n_routed_experts, p.n, ms_file_size_str(p.total_bytes, a, sizeof a),
            p.n_shards, p.n_shards == 1 ? "" : "s", (unsigned long long)threads);

    char path[4200];
    uint64_t t0 = ms_time_ns(), done = 0;
    snprintf(path, sizeof path, "%s/config.json", out);
    FILE *f = fopen(path, "w");
    rc = f ? ms_v4_config_write_json(&c, f) : -errno;
    if (f && fclose(f) != 0 && !rc) rc = -errno;
    uint32_t first = 0;
    for (uint32_t s = 0; !rc && s < p.n_shards; s++) {
        uint32_t last = first;
        while (last < p.n && p.items[last].shard == s) last++;
        shard_name(path, sizeof path, out, s, p.n_shards);
        rc = write_shard(&c, p.items + first, last - first, seed, (uint32_t)threads, path, &done,
                         p.total_bytes, t0);
        first = last;
    }
    if (!rc) { /* the index last: a directory with an index is a complete model */
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
        f = fopen(path, "w");
        if (!f) rc = -errno;
        if (f)
            fprintf(f, "{\"metadata\": {\"total_size\": %llu}, \"weight_map\": {",
                    (unsigned long long)p.total_bytes);
        for (uint32_t i = 0; f && i < p.n; i++) {
            char sn[64];
            shard_file(sn, sizeof sn, p.items[i].shard, p.n_shards);
            fprintf(f, "%s\n    \"%s\": \"%s\"", i ? "," : "", p.items[i].spec.name, sn);
        }
        if (f) {
            fprintf(f, "\n}}\n");
            if (ferror(f) && !rc) rc = -MS_E_IO;
            if (fclose(f) != 0 && !rc) rc = -errno;
        }
    }
    double secs = (double)(ms_time_ns() - t0) / 1e9;
    if (isatty(STDERR_FILENO)) fputc('\n', stderr);
    if (rc) {
        fprintf(stderr, "moestream synth: writing %s failed after %s: %s; the partial model was "
                        "removed\n",
                path, ms_file_size_str(done, a, sizeof a), ms_strerror(rc));
        remove_outputs(out, p.n_shards);
        ms_free(p.items);
        return 1;
    }
    fprintf(stderr, "synth: wrote %s to %s in %.1f s (%.0f MB/s)\n",
            ms_file_size_str(p.total_bytes, a, sizeof a), out, secs,
            secs > 0 ? (double)p.total_bytes / 1e6 / secs : 0.0);
    ms_free(p.items);
    return 0;
}
