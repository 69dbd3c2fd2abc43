/* tools/moestream.c — the one `moestream` binary: subcommand dispatch, --help, --version.
 *
 * Each subcommand is `int ms_cmd_<name>(int argc, char **argv)` with argv[0] = the subcommand's
 * name; it returns the process exit status (0 ok, 1 failure, 2 bad usage). Later issues add run,
 * chat, serve, convert, bench, inspect and logits to the table below.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/fault.h"
#include "tools/env.h"

#ifndef MS_VERSION
#define MS_VERSION "unknown" /* CMake passes PROJECT_VERSION */
#endif

int ms_cmd_doctor(int argc, char **argv); /* tools/doctor.c */
int ms_cmd_logits(int argc, char **argv); /* tools/logits.c */
int ms_cmd_synth(int argc, char **argv);  /* tools/cmd_synth.c */
int ms_cmd_bench(int argc, char **argv);  /* tools/bench.c */
int ms_cmd_diff(int argc, char **argv);   /* tools/diff.c */

typedef int (*cmd_fn)(int argc, char **argv);
static int run(int argc, char **argv);

static const struct {
    const char *name;
    cmd_fn fn;
    const char *summary;
} commands[] = {
    {"doctor", ms_cmd_doctor, "check this machine: Vulkan devices, io_uring, O_DIRECT, RAM"},
    {"logits", ms_cmd_logits, "logits of a token list as JSON (correctness hook; cpu or vulkan)"},
    {"bench", ms_cmd_bench, "prefill and decode speed at chosen context depths (CSV)"},
    {"synth", ms_cmd_synth, "write a synthetic V4 checkpoint (random weights, real dimensions)"},
    {"diff", ms_cmd_diff, "the CPU reference and Vulkan side by side, per layer and stage"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f,
            "moestream %s — run huge mixture-of-experts models from NVMe on one GPU (Vulkan)\n"
            "\n"
            "usage: moestream <command> [options]\n"
            "       moestream <command> --help\n"
            "       moestream --version\n"
            "\n"
            "commands:\n",
            MS_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n%s", ms_env_help);
}

/* Output that did not reach its destination (a full disk, a closed pipe, /dev/full) is a failure
 * whatever the command thought: stdout is flushed and closed here, and a failure says so. */
static int finish(int status) {
    errno = 0;
    bool bad = fflush(stdout) != 0 || ferror(stdout);
    int e = errno;
    if (fclose(stdout) != 0 && !bad) bad = true, e = errno;
    if (bad) {
        fprintf(stderr, "moestream: error writing standard output: %s\n",
                e ? strerror(e) : "an earlier write failed");
        return status ? status : 1;
    }
    return status;
}

int main(int argc, char **argv) {
    ms_env_log(); /* the other variables are read where they are used: tools/env.h */
    /* a model file truncated while mapped: a message naming it instead of "Bus error" */
    ms_fault_install_sigbus();
    return finish(run(argc, argv));
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
        printf("moestream %s\n", MS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);

    if (cmd[0] == '-')
        fprintf(stderr, "moestream: unknown option '%s'\n\n", cmd);
    else
        fprintf(stderr, "moestream: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
