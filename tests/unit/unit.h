/* unit.h: the tiny in-repo test harness. Each test file is one program:
 *   static void test_x(void) { CHECK(...); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(test_x); return unit_done(); }
 * It prints every failed check and a closing line "N passed, N failed"
 * (counting tests, not checks), and exits non-zero on any failure. */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_checks_failed_in_test;
static int unit_tests_passed, unit_tests_failed;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                                   \
            unit_checks_failed_in_test++;                                                                              \
        }                                                                                                              \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                                             \
    do {                                                                                                               \
        long long unit_a_ = (long long)(a), unit_b_ = (long long)(b);                                                  \
        if (unit_a_ != unit_b_) {                                                                                      \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, unit_a_, unit_b_);   \
            unit_checks_failed_in_test++;                                                                              \
        }                                                                                                              \
    } while (0)

#define CHECK_STR(a, b)                                                                                                \
    do {                                                                                                               \
        const char *unit_a_ = (a), *unit_b_ = (b);                                                                     \
        if (!unit_a_ || !unit_b_ || strcmp(unit_a_, unit_b_) != 0) {                                                   \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b,                  \
                    unit_a_ ? unit_a_ : "(null)", unit_b_ ? unit_b_ : "(null)");                                       \
            unit_checks_failed_in_test++;                                                                              \
        }                                                                                                              \
    } while (0)

#define CHECK_MEM(a, b, n)                                                                                             \
    do {                                                                                                               \
        if (memcmp((a), (b), (n)) != 0) {                                                                              \
            fprintf(stderr, "%s:%d: memcmp(%s, %s, %s) failed\n", __FILE__, __LINE__, #a, #b, #n);                     \
            unit_checks_failed_in_test++;                                                                              \
        }                                                                                                              \
    } while (0)

#define RUN(fn)                                                                                                        \
    do {                                                                                                               \
        unit_checks_failed_in_test = 0;                                                                                \
        fn();                                                                                                          \
        if (unit_checks_failed_in_test) {                                                                              \
            unit_tests_failed++;                                                                                       \
            fprintf(stderr, "FAIL %s\n", #fn);                                                                         \
        } else                                                                                                         \
            unit_tests_passed++;                                                                                       \
    } while (0)

static inline int unit_done(void)
{
    printf("%d passed, %d failed\n", unit_tests_passed, unit_tests_failed);
    return unit_tests_failed ? 1 : 0;
}

#endif
