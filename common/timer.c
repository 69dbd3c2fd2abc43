#include "common/timer.h"

#include <time.h>

uint64_t ms_time_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double ms_time_s(void) { return (double)ms_time_ns() * 1e-9; }

double ms_elapsed_ms(uint64_t t0) { return (double)(ms_time_ns() - t0) * 1e-6; }
