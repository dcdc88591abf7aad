/* Unit tests for the small kits: strict integer parsing (common/num),
 * byte order (common/bytes.h), the intrusive list (common/list.h) and the
 * monotonic clock (common/clock). */
#include "common/bytes.h"
#include "common/clock.h"
#include "common/list.h"
#include "common/num.h"
#include "tests/unit/unit.h"

#include <stdint.h>
#include <time.h>

static void test_parse_u64_strict(void)
{
    uint64_t v = 7;
    CHECK_EQ_INT(parse_u64_str("0", 0, UINT64_MAX, &v), NUM_OK);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(parse_u64_str("18446744073709551615", 0, UINT64_MAX, &v), NUM_OK);
    CHECK(v == UINT64_MAX);
    v = 7;
    CHECK_EQ_INT(parse_u64_str("18446744073709551616", 0, UINT64_MAX, &v), NUM_RANGE);
    CHECK_EQ_INT(parse_u64_str("99999999999999999999999", 0, UINT64_MAX, &v), NUM_RANGE);
    CHECK_EQ_INT(v, 7); /* untouched on failure */
    /* what strtoull would accept */
    CHECK_EQ_INT(parse_u64_str("-1", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str(" 1", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str("1 ", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str("+1", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str("12abc", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str("0x10", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str("", 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str(NULL, 0, UINT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_u64_str("99999999999999999999x", 0, UINT64_MAX, &v), NUM_INVALID);
    /* range */
    CHECK_EQ_INT(parse_u64_str("10", 1, 10, &v), NUM_OK);
    CHECK_EQ_INT(parse_u64_str("11", 1, 10, &v), NUM_RANGE);
    CHECK_EQ_INT(parse_u64_str("0", 1, 10, &v), NUM_RANGE);
    /* length-bounded: not NUL-terminated input */
    CHECK_EQ_INT(parse_u64("12345", 3, 0, UINT64_MAX, &v), NUM_OK);
    CHECK_EQ_INT(v, 123);
    CHECK_EQ_INT(parse_u64("12345", 0, 0, UINT64_MAX, &v), NUM_INVALID);
}

static void test_parse_i64_strict(void)
{
    int64_t v = 0;
    CHECK_EQ_INT(parse_i64_str("-9223372036854775808", INT64_MIN, INT64_MAX, &v), NUM_OK);
    CHECK(v == INT64_MIN);
    CHECK_EQ_INT(parse_i64_str("9223372036854775807", INT64_MIN, INT64_MAX, &v), NUM_OK);
    CHECK(v == INT64_MAX);
    CHECK_EQ_INT(parse_i64_str("9223372036854775808", INT64_MIN, INT64_MAX, &v), NUM_RANGE);
    CHECK_EQ_INT(parse_i64_str("-9223372036854775809", INT64_MIN, INT64_MAX, &v), NUM_RANGE);
    CHECK_EQ_INT(parse_i64_str("-", INT64_MIN, INT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_i64_str("--1", INT64_MIN, INT64_MAX, &v), NUM_INVALID);
    CHECK_EQ_INT(parse_i64_str("-5", -10, 10, &v), NUM_OK);
    CHECK_EQ_INT(v, -5);
    CHECK_EQ_INT(parse_i64_str("-11", -10, 10, &v), NUM_RANGE);
    int i = 0;
    CHECK_EQ_INT(parse_int_str("65535", 0, 65535, &i), NUM_OK);
    CHECK_EQ_INT(i, 65535);
    CHECK_EQ_INT(parse_int_str("65536", 0, 65535, &i), NUM_RANGE);
    CHECK_EQ_INT(parse_int_str("4294967296", INT32_MIN, INT32_MAX, &i), NUM_RANGE);
}

static void test_bytes(void)
{
    unsigned char b[16] = { 0 };
    put_be16(b, 0x0102);
    CHECK(b[0] == 1 && b[1] == 2);
    put_be32(b + 1, 0x01020304); /* unaligned */
    CHECK(b[1] == 1 && b[2] == 2 && b[3] == 3 && b[4] == 4);
    CHECK(get_be32(b + 1) == 0x01020304);
    put_be64(b + 3, 0x0102030405060708ULL);
    CHECK(b[3] == 1 && b[10] == 8);
    CHECK(get_be64(b + 3) == 0x0102030405060708ULL);
    put_le32(b, 0x01020304);
    CHECK(b[0] == 4 && b[3] == 1);
    CHECK(get_le32(b) == 0x01020304);
    put_le16(b, 0xabcd);
    CHECK(get_le16(b) == 0xabcd && b[0] == 0xcd);
    put_le64(b, 0x1122334455667788ULL);
    CHECK(get_le64(b) == 0x1122334455667788ULL && b[0] == 0x88);
    put_le24(b, 0x123456);
    CHECK(b[0] == 0x56 && b[2] == 0x12);
    CHECK(get_le24(b) == 0x123456);
    CHECK(get_be16(b) == 0x5634);
}

struct item {
    int v;
    struct list_node node;
};

static void test_list(void)
{
    struct list_node head = LIST_HEAD_INIT(head), other;
    list_init(&other);
    struct item it[5];
    CHECK(list_empty(&head));
    CHECK(list_first(&head) == NULL);
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        list_init(&it[i].node);
        CHECK(!list_linked(&it[i].node));
        list_add_tail(&head, &it[i].node);
        CHECK(list_linked(&it[i].node));
    }
    list_del(&it[2].node);
    list_del(&it[2].node); /* twice is harmless */
    list_add_head(&head, &it[2].node);
    int want[] = { 2, 0, 1, 3, 4 }, n = 0;
    struct list_node *pos, *tmp;
    list_for_each(pos, &head)
    {
        CHECK_EQ_INT(list_entry(pos, struct item, node)->v, want[n]);
        n++;
    }
    CHECK_EQ_INT(n, 5);
    /* delete while walking */
    list_for_each_safe(pos, tmp, &head) if (list_entry(pos, struct item, node)->v % 2) list_del(pos);
    CHECK_EQ_INT(list_entry(list_first(&head), struct item, node)->v, 2);
    CHECK_EQ_INT(list_entry(list_last(&head), struct item, node)->v, 4);
    list_add_tail(&other, &it[1].node);
    list_splice_tail(&other, &head);
    CHECK(list_empty(&head));
    int want2[] = { 1, 2, 0, 4 };
    n = 0;
    list_for_each(pos, &other)
    {
        CHECK_EQ_INT(list_entry(pos, struct item, node)->v, want2[n]);
        n++;
    }
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_INT(list_entry(list_pop(&other), struct item, node)->v, 1);
    CHECK(!list_linked(&it[1].node));
}

static void test_clock(void)
{
    uint64_t a = clock_now_us(), ms = clock_now_ms();
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    uint64_t b = clock_now_us();
    CHECK(b >= a + 20000);
    CHECK(b < a + 5 * 1000 * 1000); /* sanity, not a timing threshold */
    CHECK(clock_now_ms() >= ms + 20);
    CHECK(clock_now_ns() / 1000 >= b);
    CHECK(clock_wall() > 1.7e9);
    CHECK(clock_wall_us() / 1000000 > 1700000000ULL);
}

int main(void)
{
    RUN(test_parse_u64_strict);
    RUN(test_parse_i64_strict);
    RUN(test_bytes);
    RUN(test_list);
    RUN(test_clock);
    return unit_done();
}
