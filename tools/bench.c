/* tools/bench.c — `moestream bench`: prefill and decode speed at chosen context depths, as CSV rows
 * with the columns other runtimes print plus the bandwidth bound (docs/bench.md).
 *
 * Per context depth d: a fresh session holds d tokens (fed untimed), then prefill_tokens more are
 * fed in chunks (timed: prefill_tps), then gen_tokens are decoded one at a time, each the argmax of
 * the previous logits (timed: gen_tps). One warm-up run first, then the median of --reps runs.
 * The token ids come from a fixed seed, so every run and every backend sees the same prompt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/status.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "tools/cli.h"
#include "tools/env.h"

#define MAX_DEPTHS 16

int ms_cmd_bench(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: moestream bench -m MODEL_DIR [options]\n"
            "\n"
            "Prefill and decode speed at chosen context depths; one CSV row per depth:\n"
            "  ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,backend,device,\n"
            "  weight_bytes_per_token,bw_bound_tps,pct_of_bound,dispatches_per_layer\n"
            "(medians of --reps runs after one warm-up run; docs/bench.md explains each column)\n"
            "\n"
            "  -m, --model DIR     checkpoint directory (config.json + safetensors); `moestream synth`\n"
            "                      writes one at the real V4 dimensions\n"
            "  --ctx LIST          context depths before the timed prefill, comma-separated\n"
            "                      (default 0)\n"
            "  --prefill N         tokens prefilled after the context (default 512; 0 = none)\n"
            "  --chunk N           tokens per prefill call (default 512)\n"
            "  --gen N             tokens decoded one at a time (default 32; 0 = none)\n"
            "  --reps N            timed runs per depth, median reported (default 5)\n"
            "  --backend B         auto (default), cpu or vulkan\n"
            "  --peak GBPS         memory read bandwidth for the bound (default: measured by a\n"
            "                      device copy, read + written / 2; on NVIDIA that copy runs far\n"
            "                      below what shaders stream: give the datasheet figure)\n"
            "  --profile           after the timed runs, decode --gen tokens again with a GPU\n"
            "                      timestamp after each op class and print a second table:\n"
            "                      ctx_tokens,op_class,gpu_us_per_token,pct_of_gpu,dispatches_per_token\n"
            "                      (Vulkan only; the timestamps serialise the step a little)\n"
            "  --no-header         rows only\n"
            "\n"
            "bw_bound_tps = read bandwidth (--peak, or half the measured copy bandwidth) /\n"
            "weight_bytes_per_token: the decode rate if every weight byte a token needs were read\n"
            "once at that speed. pct_of_bound = 100 * gen_tps / bw_bound_tps.\n"
            "\n"
            "Exit status: 0 ok; 1 the model cannot be run; 2 bad usage.\n");
}

static int bad_usage(const char *fmt, const char *arg) { return ms_cli_bad_usage("bench", usage, fmt, arg); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, uint32_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* "0,4096,32768": up to MAX_DEPTHS decimal counts; an empty item is an error. */
static bool parse_depths(const char *s, uint32_t *out, uint32_t *n) {
    *n = 0;
    for (;;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        char item[16];
        if (*n == MAX_DEPTHS || len == 0 || len >= sizeof item) return false;
        memcpy(item, s, len);
        item[len] = '\0';
        if (!ms_cli_parse_u32(item, &out[*n]) || out[*n] > (1u << 24)) return false;
        (*n)++;
        if (!end) return true;
        s = end + 1;
    }
}

/* One run at depth d: *pp and *tg tokens/s (0 when not measured). */
static int run_once(ms_session *s, const uint32_t *prompt, uint32_t depth, uint32_t prefill,
                    uint32_t chunk, uint32_t gen, double *pp, double *tg) {
    ms_session_reset(s);
    int rc = 0;
    for (uint32_t p = 0; p < depth && !rc; p += chunk)
        rc = ms_session_feed(s, prompt + p, depth - p < chunk ? depth - p : chunk, NULL);
    uint64_t t0 = ms_time_ns();
    for (uint32_t p = 0; p < prefill && !rc; p += chunk)
        rc = ms_session_feed(s, prompt + depth + p, prefill - p < chunk ? prefill - p : chunk, NULL);
    *pp = prefill && !rc ? prefill / (ms_elapsed_ms(t0) * 1e-3) : 0;
    uint32_t next = prompt[depth + prefill];
    if (!rc && depth + prefill > 0) rc = ms_session_top_k(s, 1, &next, NULL);
    t0 = ms_time_ns();
    for (uint32_t i = 0; i < gen && !rc; i++) {
        rc = ms_session_feed(s, &next, 1, NULL);
        if (!rc) rc = ms_session_top_k(s, 1, &next, NULL);
    }
    *tg = gen && !rc ? gen / (ms_elapsed_ms(t0) * 1e-3) : 0;
    return rc;
}

int ms_cmd_bench(int argc, char **argv) {
    const char *dir = NULL;
    uint32_t depths[MAX_DEPTHS] = {0}, n_depths = 1, prefill = 512, chunk = 512, gen = 32, reps = 5;
    bool header = true, profile = false;
    double peak = 0;
    ms_engine_opts eo = ms_engine_opts_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) return bad_usage("%s needs a directory", a);
            dir = argv[++i];
        } else if (!strcmp(a, "--ctx")) {
            if (!v || !parse_depths(v, depths, &n_depths))
                return bad_usage("--ctx takes up to 16 comma-separated token counts (each <= 16777216), got '%s'", v ? v : "");
            i++;
        } else if (!strcmp(a, "--prefill") || !strcmp(a, "--chunk") || !strcmp(a, "--gen") ||
                   !strcmp(a, "--reps")) {
            uint32_t x;
            if (!v || !ms_cli_parse_u32(v, &x)) return bad_usage("%s needs a number", a);
            if ((!strcmp(a, "--chunk") || !strcmp(a, "--reps")) && x == 0)
                return bad_usage("%s must be at least 1", a);
            if (x > (1u << 20)) return bad_usage("%s: at most 1048576", a);
            *(a[2] == 'p' ? &prefill : a[2] == 'c' ? &chunk : a[2] == 'g' ? &gen : &reps) = x;
            i++;
        } else if (!strcmp(a, "--backend")) {
            if (!v || ms_backend_from_name(v, &eo.backend) != 0)
                return bad_usage("--backend takes auto, cpu or vulkan, got '%s'", v ? v : "");
            i++;
        } else if (!strcmp(a, "--peak")) {
            uint32_t x;
            if (!v || !ms_cli_parse_u32(v, &x) || x == 0) return bad_usage("--peak needs GB/s, got '%s'", v ? v : "");
            peak = x;
            i++;
        } else if (!strcmp(a, "--profile")) {
            profile = true;
        } else if (!strcmp(a, "--no-header")) {
            header = false;
        } else {
            return bad_usage("unknown option '%s'", a);
        }
    }
    if (!dir) return bad_usage("%s", "-m MODEL_DIR is required");
    if (prefill == 0 && gen == 0) return bad_usage("%s", "nothing to time: --prefill and --gen are both 0");
    if (profile && gen == 0) return bad_usage("%s", "--profile times decode steps: --gen must be at least 1");
    char err[4096];
    if (ms_env_vk_opts(&eo.vk, err, sizeof err) != 0) {
        fprintf(stderr, "moestream bench: %s\n", err);
        return 2;
    }
    ms_engine *e = NULL;
    int rc = ms_engine_open(dir, &eo, &e, err, sizeof err);
    if (rc) {
        fprintf(stderr, "moestream bench: %s\n", err);
        return 1;
    }
    const ms_v4_config *cfg = ms_engine_config(e);
    ms_engine_info info;
    rc = ms_engine_get_info(e, true, &info);
    if (rc) {
        fprintf(stderr, "moestream bench: measuring the device: %s\n", ms_strerror(rc));
        ms_engine_close(e);
        return 1;
    }
    if (profile && info.backend != MS_BACKEND_VULKAN) {
        fprintf(stderr, "moestream bench: --profile needs the Vulkan backend (this run uses %s)\n",
                ms_backend_name(info.backend));
        ms_engine_close(e);
        return 1;
    }
    uint32_t max_depth = 0;
    ms_profile *profs = profile ? ms_calloc(n_depths, sizeof *profs) : NULL;
    for (uint32_t i = 0; i < n_depths; i++) max_depth = depths[i] > max_depth ? depths[i] : max_depth;
    uint32_t total = max_depth + prefill + gen + 1;
    uint32_t *prompt = ms_malloc((size_t)total * sizeof *prompt);
    double *pp = ms_malloc(reps * sizeof *pp), *tg = ms_malloc(reps * sizeof *tg);
    if (!prompt || !pp || !tg || (profile && !profs)) {
        fprintf(stderr, "moestream bench: %s\n", ms_strerror(-MS_E_NOMEM));
        rc = -MS_E_NOMEM;
        goto out;
    }
    uint64_t x = 0x2545F4914F6CDD1Dull; /* fixed prompt: xorshift64 */
    for (uint32_t i = 0; i < total; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        prompt[i] = (uint32_t)(x % cfg->vocab_size);
    }
    /* the bound: a weight byte is read once (a copy moves each byte twice) */
    double read_gbs = peak > 0 ? peak : info.mem_gbs / 2;
    double bound = read_gbs > 0 ? read_gbs * 1e9 / (double)info.weight_bytes_per_token : 0;
    fprintf(stderr, "moestream bench: %s, %s; weights %.2f GiB, %.1f MiB per token; device copy %.0f GB/s, bound from %.0f GB/s\n",
            ms_backend_name(info.backend), info.device, (double)info.weight_bytes / (1 << 30),
            (double)info.weight_bytes_per_token / (1 << 20), info.mem_gbs, read_gbs);
    if (header)
        printf("ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,backend,device,"
               "weight_bytes_per_token,bw_bound_tps,pct_of_bound,dispatches_per_layer\n");
    for (uint32_t di = 0; di < n_depths && !rc; di++) {
        uint32_t d = depths[di];
        ms_session *s = NULL;
        rc = ms_session_create(e, d + prefill + gen + 1, &s);
        if (rc) {
            fprintf(stderr, "moestream bench: a session of %u tokens: %s\n", d + prefill + gen + 1,
                    ms_strerror(rc));
            break;
        }
        double w_pp, w_tg;
        rc = run_once(s, prompt, d, prefill, chunk, gen, &w_pp, &w_tg); /* warm-up */
        for (uint32_t r = 0; r < reps && !rc; r++) {
            rc = run_once(s, prompt, d, prefill, chunk, gen, &pp[r], &tg[r]);
            fprintf(stderr, "  ctx %u run %u/%u: prefill %.1f tok/s, decode %.2f tok/s\n", d, r + 1, reps,
                    pp[r], tg[r]);
        }
        if (rc) {
            fprintf(stderr, "moestream bench: ctx %u: %s\n", d, ms_strerror(rc));
            ms_session_free(s);
            break;
        }
        ms_session_stats st;
        ms_session_get_stats(s, &st);
        double mpp = median(pp, reps), mtg = median(tg, reps);
        char dev[256];
        snprintf(dev, sizeof dev, "%s", info.device);
        for (char *q = dev; *q; q++)
            if (*q == ',' || *q == '"') *q = ' '; /* keep the CSV plain */
        printf("%u,%u,%.2f,%u,%.3f,%llu,%s,%s,%llu,%.3f,%.1f,%u\n", d, prefill, mpp, gen, mtg,
               (unsigned long long)st.kv_bytes, ms_backend_name(info.backend), dev,
               (unsigned long long)info.weight_bytes_per_token, bound,
               bound > 0 ? 100.0 * mtg / bound : 0.0, st.dispatches_per_layer);
        fflush(stdout);
        if (profs) {
            rc = ms_session_set_profiling(s, true);
            if (!rc) rc = run_once(s, prompt, d, prefill, chunk, gen, &w_pp, &w_tg);
            if (!rc) rc = ms_session_get_profile(s, &profs[di]);
            if (rc) fprintf(stderr, "moestream bench: ctx %u: profiling: %s\n", d, ms_strerror(rc));
        }
        ms_session_free(s);
    }
    for (uint32_t di = 0; profs && !rc && di < n_depths; di++) {
        const ms_profile *p = &profs[di];
        double sum = 0;
        uint32_t disp = 0;
        for (uint32_t k = 0; k < p->n_classes; k++) sum += p->cls[k].gpu_ns, disp += p->cls[k].dispatches;
        if (header && di == 0) printf("\nctx_tokens,op_class,gpu_us_per_token,pct_of_gpu,dispatches_per_token\n");
        for (uint32_t k = 0; k < p->n_classes && p->steps; k++)
            printf("%u,%s,%.2f,%.1f,%u\n", depths[di], p->cls[k].name, p->cls[k].gpu_ns / p->steps * 1e-3,
                   sum > 0 ? 100.0 * p->cls[k].gpu_ns / sum : 0.0, p->cls[k].dispatches);
        printf("%u,total,%.2f,100.0,%u\n", depths[di], p->steps ? sum / p->steps * 1e-3 : 0.0, disp);
    }
out:
    ms_free(profs);
    ms_free(prompt);
    ms_free(pp);
    ms_free(tg);
    ms_engine_close(e);
    if (ferror(stdout)) {
        fprintf(stderr, "moestream bench: error writing standard output\n");
        return 1;
    }
    return rc ? 1 : 0;
}
