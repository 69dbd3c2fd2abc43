/* common/: status codes, logging sink and levels, allocation counters and guard, timers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/status.h"
#include "common/timer.h"

#include "tests/check.h"


static char g_last[256];
static int g_count;
static void sink(ms_log_level level, const char *msg, void *user) {
    (void)user;
    snprintf(g_last, sizeof g_last, "%s:%s", ms_log_level_name(level), msg);
    g_count++;
}

int main(void) {
    CHECK(strcmp(ms_strerror(0), "success") == 0, "strerror 0");
    CHECK(strcmp(ms_strerror(-MS_E_VULKAN), "Vulkan call failed") == 0, "strerror project code");
    CHECK(strcmp(ms_status_name(-MS_E_DEVICE_LOST), "MS_E_DEVICE_LOST") == 0, "status name");
    CHECK(ms_status_name(-ENOENT) == NULL, "errno has no project name");
    CHECK(strstr(ms_strerror(-ENOENT), "No such file") != NULL, "errno text passes through");

    ms_log_set_sink(sink, NULL);
    ms_log_set_level(MS_LOG_WARN);
    MS_LOGI("hidden %d", 1);
    CHECK(g_count == 0, "info filtered at warn level");
    MS_LOGE("shown %d", 2);
    CHECK(g_count == 1 && strcmp(g_last, "error:shown 2") == 0, "error reaches sink");
    ms_log_set_sink(NULL, NULL);
    ms_log_set_level(MS_LOG_INFO);

    ms_alloc_stats s0, s1;
    ms_alloc_get_stats(&s0);
    ms_alloc_guard g;
    ms_alloc_guard_begin(&g);
    CHECK(ms_alloc_guard_end(&g) == 0, "guard counts nothing when nothing is allocated");
    void *p = ms_malloc(100);
    char *d = ms_strdup("abc");
    p = ms_realloc(p, 1000);
    CHECK(p && d && strcmp(d, "abc") == 0, "alloc works");
    CHECK(ms_alloc_guard_end(&g) >= 3, "guard sees allocations");
    ms_alloc_get_stats(&s1);
    CHECK(s1.n_live == s0.n_live + 2, "two live blocks");
    ms_free(p);
    ms_free(d);
    ms_alloc_get_stats(&s1);
    CHECK(s1.n_live == s0.n_live, "all freed");
    CHECK(ms_calloc((size_t)1 << 62, 8) == NULL, "calloc overflow is refused");

    uint64_t t0 = ms_time_ns();
    uint64_t t1 = ms_time_ns();
    CHECK(t1 >= t0 && ms_elapsed_ms(t0) >= 0.0, "monotonic clock");

    printf("%s (%d failures)\n", g_fail ? "FAIL" : "PASS", g_fail);
    return g_fail ? 1 : 0;
}
