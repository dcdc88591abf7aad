/* clock: see clock.h. vDSO clock_gettime is a few nanoseconds, so nothing is
 * cached: a cache per loop iteration would need the loop to refresh it and
 * would hand stale time to worker threads. */
#include "common/clock.h"

#include <time.h>

uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t clock_now_us(void) { return clock_now_ns() / 1000; }
uint64_t clock_now_ms(void) { return clock_now_ns() / 1000000; }

uint64_t clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

double clock_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
