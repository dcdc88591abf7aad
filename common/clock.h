/* clock: one monotonic clock for timeouts, deadlines and latency, and one
 * wall clock for what humans and protocols read. The monotonic one never
 * jumps with NTP or date changes; use it for every "how long since". */
#ifndef CORE_CLOCK_H
#define CORE_CLOCK_H

#include <stdint.h>

/* Monotonic time since an arbitrary start (CLOCK_MONOTONIC). */
uint64_t clock_now_ns(void);
uint64_t clock_now_us(void);
uint64_t clock_now_ms(void);
/* Wall-clock time since the Unix epoch (CLOCK_REALTIME). */
uint64_t clock_wall_us(void);
double clock_wall(void); /* seconds, with fractions */

#endif
