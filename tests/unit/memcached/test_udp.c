/* Unit tests of memcached/proto_udp.c: the UDP frame header, datagram
 * counts, and the cut of a text get's reply into memcached's per-key
 * response objects. */
#include <stdint.h>
#include <string.h>

#include "memcached/udp.h"
#include "tests/unit/unit.h"

static void test_frame_accepted_and_dropped(void)
{
    const uint8_t ok[] = { 0x12, 0x34, 0, 5, 0, 1, 0, 9, 'g', 'e', 't' };
    struct mc_udp_frame f;
    CHECK(mc_udp_parse_frame(ok, sizeof ok, &f));
    CHECK_EQ_INT(f.req_id, 0x1234);
    CHECK_EQ_INT(f.seq, 5);      /* not looked at */
    CHECK_EQ_INT(f.reserved, 9); /* not looked at */
    CHECK_EQ_INT(f.len, 3);
    CHECK(f.payload == ok + 8);
    /* no longer than the header */
    CHECK(!mc_udp_parse_frame(ok, 8, &f));
    CHECK(!mc_udp_parse_frame(ok, 0, &f));
    /* one of several datagrams, or a count of 0 */
    const uint8_t two[] = { 0, 1, 0, 0, 0, 2, 0, 0, 'x' }, none[] = { 0, 1, 0, 0, 0, 0, 0, 0, 'x' },
                  big[] = { 0, 1, 0, 0, 1, 1, 0, 0, 'x' };
    CHECK(!mc_udp_parse_frame(two, sizeof two, &f));
    CHECK(!mc_udp_parse_frame(none, sizeof none, &f));
    CHECK(!mc_udp_parse_frame(big, sizeof big, &f));
}

static void test_header_and_counts(void)
{
    uint8_t h[8];
    mc_udp_write_header(h, 0xABCD, 0x0102, 0x0304);
    const uint8_t want[] = { 0xAB, 0xCD, 1, 2, 3, 4, 0, 0 };
    CHECK_MEM(h, want, 8);
    CHECK_EQ_INT(mc_udp_total(0), 0);
    CHECK_EQ_INT(mc_udp_total(1), 1);
    CHECK_EQ_INT(mc_udp_total(1392), 1);
    CHECK_EQ_INT(mc_udp_total(1393), 2);
    CHECK_EQ_INT(mc_udp_total(1048576 + 40), 754);
    CHECK_EQ_INT(mc_udp_total((size_t)70000 * 1392), 65535);
}

struct cuts {
    size_t len[16];
    int n;
};

static void add(size_t len, void *arg)
{
    struct cuts *c = arg;
    if (c->n < 16)
        c->len[c->n] = len;
    c->n++;
}

static void test_get_reply_cut_per_key(void)
{
    const char *foo = "VALUE foo 0 6\r\nfooval\r\n"; /* 23 bytes */
    char reply[256];
    struct cuts c = { { 0 }, 0 };
    /* "get foo nope foo": hit, miss (empty), hit + END */
    snprintf(reply, sizeof reply, "%s%sEND\r\n", foo, foo);
    CHECK(mc_udp_split_get("foo nope foo", 12, reply, strlen(reply), add, &c));
    CHECK_EQ_INT(c.n, 3);
    CHECK_EQ_INT(c.len[0], 23);
    CHECK_EQ_INT(c.len[1], 0);
    CHECK_EQ_INT(c.len[2], 28);
    /* all misses: empty objects, END alone on the last */
    c.n = 0;
    CHECK(mc_udp_split_get("a  b c", 6, "END\r\n", 5, add, &c));
    CHECK_EQ_INT(c.n, 3);
    CHECK_EQ_INT(c.len[0], 0);
    CHECK_EQ_INT(c.len[2], 5);
    /* gets (a CAS after the length), a value holding "VALUE" and CRLFs */
    c.n = 0;
    const char *g = "VALUE k 1 13 99\r\nVALUE x\r\n\r\nab\r\nEND\r\n";
    CHECK(mc_udp_split_get("k", 1, g, strlen(g), add, &c));
    CHECK_EQ_INT(c.n, 1);
    CHECK_EQ_INT(c.len[0], strlen(g));
    /* not that shape: an error line, a key that does not match, a cut value */
    c.n = 0;
    const char *e = "CLIENT_ERROR bad command line format\r\n";
    CHECK(!mc_udp_split_get("k", 1, e, strlen(e), add, &c));
    CHECK(!mc_udp_split_get("zz", 2, foo, strlen(foo), add, &c));
    const char *cut = "VALUE foo 0 60\r\nfooval\r\nEND\r\n";
    CHECK(!mc_udp_split_get("foo", 3, cut, strlen(cut), add, &c));
    const char *huge = "VALUE foo 0 99999999999999999999999\r\nEND\r\n";
    CHECK(!mc_udp_split_get("foo", 3, huge, strlen(huge), add, &c));
    CHECK_EQ_INT(c.n, 0); /* nothing emitted when the shape is wrong */
}

int main(void)
{
    RUN(test_frame_accepted_and_dropped);
    RUN(test_header_and_counts);
    RUN(test_get_reply_cut_per_key);
    return unit_done();
}
