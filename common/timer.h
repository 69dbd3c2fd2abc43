/* common/timer.h — monotonic clock helpers (CLOCK_MONOTONIC). Thread-safe. */
#ifndef MS_COMMON_TIMER_H
#define MS_COMMON_TIMER_H

#include <stdint.h>

uint64_t ms_time_ns(void);          /* monotonic nanoseconds since an arbitrary start */
double ms_time_s(void);             /* the same, in seconds */
double ms_elapsed_ms(uint64_t t0);  /* milliseconds since a ms_time_ns() reading */

#endif
