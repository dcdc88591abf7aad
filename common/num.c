/* num: strict integer parsing; see num.h. */
#include "common/num.h"

#include <string.h>

/* Digits only; NUM_RANGE on 64-bit overflow (the digits are still checked
 * to the end first, so "99999999999999999999x" is INVALID, not RANGE). */
static int digits_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0)
        return NUM_INVALID;
    uint64_t v = 0;
    int rc = NUM_OK;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return NUM_INVALID;
        if (rc == NUM_OK) {
            if (v > (UINT64_MAX - d) / 10)
                rc = NUM_RANGE;
            else
                v = v * 10 + d;
        }
    }
    if (rc == NUM_OK)
        *out = v;
    return rc;
}

int parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!s)
        return NUM_INVALID;
    int rc = digits_u64(s, len, &v);
    if (rc != NUM_OK)
        return rc;
    if (v < min || v > max)
        return NUM_RANGE;
    *out = v;
    return NUM_OK;
}

int parse_i64(const char *s, size_t len, int64_t min, int64_t max, int64_t *out)
{
    if (!s)
        return NUM_INVALID;
    int neg = len > 0 && s[0] == '-';
    uint64_t mag = 0;
    int rc = digits_u64(s + neg, len - (size_t)neg, &mag);
    if (rc != NUM_OK)
        return rc;
    int64_t v;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return NUM_RANGE;
        v = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return NUM_RANGE;
        v = (int64_t)mag;
    }
    if (v < min || v > max)
        return NUM_RANGE;
    *out = v;
    return NUM_OK;
}

int parse_u64_str(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    return parse_u64(s, s ? strlen(s) : 0, min, max, out);
}

int parse_i64_str(const char *s, int64_t min, int64_t max, int64_t *out)
{
    return parse_i64(s, s ? strlen(s) : 0, min, max, out);
}

int parse_int_str(const char *s, int min, int max, int *out)
{
    int64_t v;
    int rc = parse_i64_str(s, min, max, &v);
    if (rc == NUM_OK)
        *out = (int)v;
    return rc;
}
