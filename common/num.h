/* num: strict integer parsing, the one place every protocol, config and
 * console parser turns text into a number.
 *
 * Strict means: the whole of s[0..len) is the number (no leading or trailing
 * space, no trailing junk), decimal digits only, at least one digit, no '+'
 * (parse_i64 accepts one leading '-'), no overflow, and the value must lie
 * in [min, max]. strtoull's silent wrap of "-1" to 2^64-1, its skipping of
 * leading space and its acceptance of "12abc" are what this replaces.
 * s need not be NUL-terminated. *out is written only on success. */
#ifndef CORE_NUM_H
#define CORE_NUM_H

#include <stddef.h>
#include <stdint.h>

enum num_status {
    NUM_OK = 0,
    NUM_INVALID = -1, /* not a decimal integer */
    NUM_RANGE = -2,   /* an integer, but outside [min, max] (or 64 bits) */
};

int parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out);
int parse_i64(const char *s, size_t len, int64_t min, int64_t max, int64_t *out);
/* The same over a NUL-terminated string. */
int parse_u64_str(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int parse_i64_str(const char *s, int64_t min, int64_t max, int64_t *out);
/* An int in [min, max]: ports, counts, settings. */
int parse_int_str(const char *s, int min, int max, int *out);

#endif
