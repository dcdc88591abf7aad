/* Unit tests of the MogileFS wire helpers: request parsing, URL coding as
 * MogileFS's eurl does it, OK/ERR replies with callid, fid paths, the
 * storage path rule, the side channel and the usage file. */
#include "mogilefs/mogilefs.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "tests/unit/unit.h"

static char *reply_text(struct evbuffer *out)
{
    size_t n = evbuffer_get_length(out);
    char *s = malloc(n + 1);
    evbuffer_remove(out, s, n);
    s[n] = '\0';
    return s;
}

static void test_parse_request(void)
{
    struct mog_req r;
    const char *line = "GET_PATHS domain=test+dom&key=foo%2Fbar&&noverify=1&flag&key=last";
    CHECK_EQ_INT(mog_parse_request(line, strlen(line), &r), MOG_PARSE_OK);
    CHECK_STR(r.cmd, "get_paths");
    CHECK_EQ_INT(r.nargs, 5);
    CHECK_STR(mog_arg(&r, "domain"), "test dom");
    CHECK_STR(mog_arg(&r, "key"), "last"); /* last wins */
    CHECK(mog_arg(&r, "flag") == NULL);    /* no '=' -> undef */
    CHECK(mog_arg(&r, "nothere") == NULL);
    mog_req_free(&r);

    CHECK_EQ_INT(mog_parse_request("   \r", 4, &r), MOG_PARSE_EMPTY);
    CHECK_EQ_INT(mog_parse_request("bad-cmd x=1", 11, &r), MOG_PARSE_BAD);
    CHECK_EQ_INT(mog_parse_request("noop", 4, &r), MOG_PARSE_OK);
    CHECK_EQ_INT(r.nargs, 0);
    mog_req_free(&r);

    /* A NUL byte survives decoding with its length. */
    CHECK_EQ_INT(mog_parse_request("x k=a%00b", 9, &r), MOG_PARSE_OK);
    size_t vl;
    const char *v = mog_arg_len(&r, "k", &vl);
    CHECK_EQ_INT(vl, 3);
    CHECK(v && v[1] == '\0' && v[2] == 'b');
    mog_req_free(&r);

    /* Bounded number of pairs. */
    size_t big = (MOG_MAX_ARGS + 1) * 4 + 8;
    char *many = malloc(big);
    strcpy(many, "x ");
    for (int i = 0; i <= MOG_MAX_ARGS; i++)
        strcat(many, "a=1&");
    CHECK_EQ_INT(mog_parse_request(many, strlen(many), &r), MOG_PARSE_TOO_MANY);
    mog_req_free(&r);
    free(many);
}

static void test_url_coding(void)
{
    char out[64];
    mog_url_encode("a b/c:d%e&f=", 12, out);
    CHECK_STR(out, "a+b/c:d%25e%26f%3D");
    char in[] = "a+b%2fc%zz%4";
    size_t n = mog_url_decode(in, strlen(in), in);
    in[n] = '\0';
    CHECK_STR(in, "a b/c%zz%4"); /* bad escapes stay as they are */
}

static void test_replies(void)
{
    struct evbuffer *out = evbuffer_new();
    struct mog_reply r;
    mog_reply_init(&r, out, NULL);
    mog_ok(&r);
    char *s = reply_text(out);
    CHECK_STR(s, "OK \r\n");
    free(s);

    mog_reply_init(&r, out, "7");
    mog_reply_kv(&r, "path1", "http://127.0.0.1:7500/dev1/0/000/000/0000000001.fid");
    mog_reply_kvi(&r, "paths", 1);
    mog_ok(&r);
    s = reply_text(out);
    CHECK_STR(s, "OK path1=http://127.0.0.1:7500/dev1/0/000/000/0000000001.fid&paths=1&callid=7\r\n");
    free(s);

    mog_reply_init(&r, out, "a b");
    mog_reply_kv(&r, "dropped", "x");
    CHECK_EQ_INT(mog_err(&r, "unknown_key", NULL), -1);
    s = reply_text(out);
    CHECK_STR(s, "ERR unknown_key unknown_key a+b\r\n");
    free(s);

    mog_reply_init(&r, out, NULL);
    mog_err(&r, "no_domain", NULL);
    mog_ok(&r); /* ignored after the ERR */
    s = reply_text(out);
    CHECK_STR(s, "ERR no_domain No+domain+provided\r\n");
    free(s);
    evbuffer_free(out);
}

static void test_fid_paths(void)
{
    char p[128];
    mog_fid_path(p, sizeof p, 1, 123);
    CHECK_STR(p, "/dev1/0/000/000/0000000123.fid");
    mog_fid_path(p, sizeof p, 2, 148056);
    CHECK_STR(p, "/dev2/0/000/148/0000148056.fid");
    mog_fid_path(p, sizeof p, 3, 12345678901LL);
    CHECK_STR(p, "/dev3/12/345/678/12345678901.fid");
    CHECK_EQ_INT(mog_path_devid("http://h:1/dev17/0/000/000/x.fid", 32), 17);
    CHECK_EQ_INT(mog_path_devid("/devx/1", 7), -1);
}

static void test_storage_rules(void)
{
    CHECK(mog_storage_path_ok("/dev1/0/000/000/0000000001.fid", 30));
    CHECK(!mog_storage_path_ok("/dev1/../x", 10));
    CHECK(!mog_storage_path_ok("/dev1/a b", 9));
    CHECK(!mog_storage_path_ok("/dev1//a", 8));
    CHECK(!mog_storage_path_ok("/dev1/a/", 8));
    CHECK(!mog_storage_path_ok("dev1/a", 6));

    char l1[] = "size /dev1/x.fid", l2[] = "MD5 /dev1/../x fsck", l3[] = "watch", l4[] = "show service";
    char *uri;
    size_t ul;
    CHECK_EQ_INT(mog_side_parse(l1, strlen(l1), &uri, &ul), MOG_SIDE_SIZE);
    CHECK(ul == 11 && !strncmp(uri, "/dev1/x.fid", ul));
    CHECK_EQ_INT(mog_side_parse(l2, strlen(l2), &uri, &ul), MOG_SIDE_DOTDOT);
    CHECK_EQ_INT(mog_side_parse(l3, strlen(l3), &uri, &ul), MOG_SIDE_WATCH);
    CHECK_EQ_INT(mog_side_parse(l4, strlen(l4), &uri, &ul), MOG_SIDE_OTHER);

    const char usage[] = "available: 10\ndevice: /dev/x\ntotal: 30\nuse: 66%\nused: 20\n";
    int64_t t = 0, u = 0;
    CHECK_EQ_INT(mog_usage_parse(usage, strlen(usage), &t, &u), 0);
    CHECK_EQ_INT(t, 30);
    CHECK_EQ_INT(u, 20);
    CHECK_EQ_INT(mog_usage_parse("total: 1\n", 9, &t, &u), -1);
}

/* A host's altmask, as Net::Netmask->new2 reads it. */
static void test_netmask(void)
{
    CHECK(mog_netmask_match("10.1.0.0/16", "10.1.200.3"));
    CHECK(!mog_netmask_match("10.1.0.0/16", "10.2.0.1"));
    CHECK(mog_netmask_match("10.1.2.3/16", "10.1.9.9")); /* host bits ignored */
    CHECK(mog_netmask_match("192.168.5.0/255.255.255.0", "192.168.5.77"));
    CHECK(mog_netmask_match("192.168.5.0:255.255.255.0", "192.168.5.77"));
    CHECK(!mog_netmask_match("192.168.5.0:255.255.255.0", "192.168.6.77"));
    CHECK(mog_netmask_match("127.0.0.1", "127.0.0.1")); /* one address */
    CHECK(!mog_netmask_match("127.0.0.1", "127.0.0.2"));
    /* Net::Netmask 2 (Debian 12) refuses the short forms */
    CHECK(!mog_netmask_match("172.16", "172.16.4.4"));
    CHECK(!mog_netmask_match("10/8", "10.250.0.1"));
    CHECK(!mog_netmask_match("10.0.0/24", "10.0.0.1"));
    CHECK(mog_netmask_match("127.0.0.0#0.255.255.255", "127.9.9.9"));
    CHECK(mog_netmask_match("127.0.0.0 - 127.255.255.255", "127.0.0.1"));
    CHECK(!mog_netmask_match("127.0.0.0 - 127.255.255.255", "128.0.0.1"));
    CHECK(!mog_netmask_match("127.0.0.0 - 127.0.0.5", "127.0.0.1")); /* not one block */
    CHECK(mog_netmask_match("default", "192.0.2.1"));
    CHECK(mog_netmask_match("any", "192.0.2.1"));
    CHECK(mog_netmask_match("127.0.0.5/8", "127.0.0.1"));
    CHECK(mog_netmask_match("0.0.0.0/0", "8.8.8.8"));
    CHECK(mog_netmask_match("1.2.3.4/32", "1.2.3.4"));
    CHECK(!mog_netmask_match("1.2.3.4/32", "1.2.3.5"));
    /* invalid masks never match (MogileFS then ignores altip) */
    CHECK(!mog_netmask_match("", "1.2.3.4"));
    CHECK(!mog_netmask_match("10.0.0.0/33", "10.0.0.1"));
    CHECK(!mog_netmask_match("10.0.0.0/255.0.255.0", "10.0.0.1")); /* not contiguous */
    CHECK(!mog_netmask_match("10.0.0.256/8", "10.0.0.1"));
    CHECK(!mog_netmask_match("10.0.0.0/8x", "10.0.0.1"));
    CHECK(!mog_netmask_match("10.0.0.0.0", "10.0.0.1"));
    CHECK(!mog_netmask_match("10..0.0/8", "10.0.0.1"));
    CHECK(!mog_netmask_match("10.0.0.0/8", "10.0.0")); /* the client is a full address */
    CHECK(!mog_netmask_match("10.0.0.0/8", NULL));
    CHECK(mog_netmask_match("10.0.0.0/8", "::ffff:10.3.3.3")); /* dual-stack listener */
    uint32_t net, m;
    CHECK_EQ_INT(mog_netmask_parse("192.168.1.9/24", &net, &m), 0);
    CHECK_EQ_INT(net, 0xc0a80100u);
    CHECK_EQ_INT(m, 0xffffff00u);
}

static void test_content_range(void)
{
    uint64_t a = 9, b = 9;
    CHECK_EQ_INT(mog_content_range_parse("bytes 6-10/*", 12, &a, &b), 0);
    CHECK(a == 6 && b == 10);
    CHECK_EQ_INT(mog_content_range_parse("bytes 0-0/1", 11, &a, &b), 0);
    CHECK(a == 0 && b == 0);
    CHECK_EQ_INT(mog_content_range_parse(" BYTES  5-9/100 ", 16, &a, &b), 0);
    CHECK(a == 5 && b == 9);
    const char *bad[] = { "bytes 10-6/*",
                          "bytes 6-10/10",
                          "bytes 6-10",
                          "bytes -10/*",
                          "bytes 6-/*",
                          "bytes */10",
                          "items 1-2/*",
                          "bytes 1-2/*x",
                          "bytes 1-2/**",
                          "bytes 99999999999999999999-1/*",
                          "bytes 1-2,4-5/*",
                          "",
                          "bytes" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(mog_content_range_parse(bad[i], strlen(bad[i]), &a, &b), -1);
}

static void test_hosts_per_network(void)
{
    struct mog_hpn h;
    CHECK_EQ_INT(mog_hpn_parse("HostsPerNetwork(east=2, west=1)", &h), 0);
    CHECK(h.n == 2 && !strcmp(h.zone[0], "east") && h.need[0] == 2 && !strcmp(h.zone[1], "west") && h.need[1] == 1);
    CHECK_EQ_INT(mog_hpn_parse("HostsPerNetwork( a = 3 )", &h), 0);
    CHECK(h.n == 1 && !strcmp(h.zone[0], "a") && h.need[0] == 3);
    const char *bad[] = { "HostsPerNetwork()",        "HostsPerNetwork(a)",       "HostsPerNetwork(a=0)",
                          "HostsPerNetwork(=1)",      "HostsPerNetwork(a=1",      "HostsPerNetwork(a=1)x",
                          "HostsPerNetwork(a=1 b=2)", "HostsPerNetwork(a=99999)", "MultipleHosts(2)",
                          "HostsPerNetwork(a=x)" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(mog_hpn_parse(bad[i], &h), -1);
}

int main(void)
{
    RUN(test_parse_request);
    RUN(test_url_coding);
    RUN(test_replies);
    RUN(test_fid_paths);
    RUN(test_storage_rules);
    RUN(test_netmask);
    RUN(test_content_range);
    RUN(test_hosts_per_network);
    return unit_done();
}
