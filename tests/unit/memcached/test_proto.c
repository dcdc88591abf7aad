/* Unit tests for the memcached protocol parsers (text, meta, binary):
 * every command's fields, memcached's error strings, need-more on partial
 * input, and the bounds (key length, line length, binary body size). */
#include "memcached/proto.h"
#include "tests/unit/unit.h"

#include <stdlib.h>

static enum mc_parse tp(const char *s, struct mc_text_req *r) { return mc_text_parse(s, strlen(s), r); }

static void test_text_storage(void)
{
    struct mc_text_req r;
    CHECK_EQ_INT(tp("set foo 5 100 3\r\nbar\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_SET);
    CHECK_EQ_INT(r.nkey, 3);
    CHECK(memcmp(r.key, "foo", 3) == 0);
    CHECK_EQ_INT(r.flags, 5);
    CHECK_EQ_INT(r.exptime, 100);
    CHECK_EQ_INT(r.bytes, 3);
    CHECK_EQ_INT(r.consumed, 17);
    CHECK(!r.noreply);
    CHECK_EQ_INT(tp("add k 0 -1 0 noreply\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_ADD);
    CHECK_EQ_INT(r.exptime, -1);
    CHECK(r.noreply);
    CHECK_EQ_INT(r.consumed, 21);
    CHECK_EQ_INT(tp("cas k 1 2 3 99\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_CAS);
    CHECK_EQ_INT(r.cas, 99);
    CHECK_EQ_INT(tp("cas k 1 2 3\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "ERROR");
    CHECK_EQ_INT(tp("set k abc 0 1\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "CLIENT_ERROR bad command line format");
    CHECK_EQ_INT(tp("set k 0 0 -1\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "CLIENT_ERROR bad command line format");
    CHECK_EQ_INT(tp("set k 4294967296 0 1\r\n", &r), MC_PARSE_ERROR);
    CHECK_EQ_INT(tp("set k 4294967295 0 1\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.flags, 4294967295u);
    /* Key length: 250 ok, 251 refused. */
    char line[400];
    memset(line, 0, sizeof line);
    strcpy(line, "set ");
    memset(line + 4, 'k', 250);
    strcat(line, " 0 0 1\r\n");
    CHECK_EQ_INT(tp(line, &r), MC_PARSE_OK);
    memset(line + 4, 'k', 251);
    strcpy(line + 4 + 251, " 0 0 1\r\n");
    CHECK_EQ_INT(tp(line, &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "CLIENT_ERROR bad command line format");
}

static void test_text_get_and_misc(void)
{
    struct mc_text_req r;
    CHECK_EQ_INT(tp("get a bb ccc\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_GET);
    const char *p = r.keys, *end = r.keys + r.keys_len, *k;
    size_t nk;
    int n = 0;
    while (mc_text_next_key(&p, end, &k, &nk))
        n++;
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(tp("gets x\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_GETS);
    CHECK_EQ_INT(tp("get\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "ERROR");
    CHECK_EQ_INT(tp("gat 10 a b\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_GAT);
    CHECK_EQ_INT(r.exptime, 10);
    CHECK_EQ_INT(tp("gat xx a\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "CLIENT_ERROR invalid exptime argument");
    CHECK_EQ_INT(tp("incr n 18446744073709551615\r\n", &r), MC_PARSE_OK);
    CHECK(r.delta == UINT64_MAX);
    CHECK_EQ_INT(tp("incr n -1\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "CLIENT_ERROR invalid numeric delta argument");
    CHECK_EQ_INT(tp("delete k noreply\r\n", &r), MC_PARSE_OK);
    CHECK(r.noreply);
    CHECK_EQ_INT(tp("delete k 0\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(tp("delete k 5\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
    CHECK_EQ_INT(tp("touch k 10 noreply\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_TOUCH);
    CHECK_EQ_INT(tp("flush_all 10 noreply\r\n", &r), MC_PARSE_OK);
    CHECK(r.has_delay && r.noreply && r.exptime == 10);
    CHECK_EQ_INT(tp("flush_all\r\n", &r), MC_PARSE_OK);
    CHECK(!r.has_delay);
    CHECK_EQ_INT(tp("flush_all x\r\n", &r), MC_PARSE_ERROR);
    CHECK_EQ_INT(tp("stats slabs\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_STATS);
    CHECK_EQ_INT(r.args_len, 5);
    CHECK_EQ_INT(tp("version\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(tp("mg foo v\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_META);
    CHECK_EQ_INT(tp("bogus\r\n", &r), MC_PARSE_ERROR);
    CHECK_STR(r.error, "ERROR");
    CHECK_EQ_INT(tp("\r\n", &r), MC_PARSE_ERROR);
    CHECK_EQ_INT(tp("GET / HTTP/1.1\r\n", &r), MC_PARSE_ERROR);
    CHECK(r.close);
}

static void test_text_noreply_on_bad_lines(void)
{
    struct mc_text_req r;
    /* memcached silences errors of a line whose last token is noreply */
    CHECK_EQ_INT(tp("touch k abc noreply\r\n", &r), MC_PARSE_ERROR);
    CHECK(r.noreply);
    CHECK_EQ_INT(tp("set k abc 0 1 noreply\r\n", &r), MC_PARSE_ERROR);
    CHECK(r.noreply);
    CHECK_EQ_INT(tp("incr k x noreply\r\n", &r), MC_PARSE_ERROR);
    CHECK(r.noreply);
    CHECK_EQ_INT(tp("set k 0 noreply\r\n", &r), MC_PARSE_ERROR); /* wrong token count */
    CHECK(!r.noreply);
    CHECK_STR(r.error, "ERROR");
    CHECK_EQ_INT(tp("set k 0 0 1 extra\r\n", &r), MC_PARSE_OK); /* extra token ignored */
    CHECK(!r.noreply);
    CHECK_EQ_INT(tp("set k 0 0 2147483647\r\n", &r), MC_PARSE_ERROR); /* + CRLF overflows an int */
    CHECK_STR(r.error, "CLIENT_ERROR bad command line format");
    CHECK_EQ_INT(tp("set k 0 0 2147483645\r\n", &r), MC_PARSE_OK);
    CHECK_EQ_INT(tp("GET / HTTP/1.0\r\n", &r), MC_PARSE_ERROR); /* silent close */
    CHECK(r.close && r.noreply);
}

static void test_text_partial_and_bounds(void)
{
    struct mc_text_req r;
    CHECK_EQ_INT(tp("get foo", &r), MC_PARSE_NEED_MORE);
    CHECK_EQ_INT(tp("", &r), MC_PARSE_NEED_MORE);
    size_t n = MC_MAX_LINE + 10;
    char *big = malloc(n);
    memset(big, 'a', n);
    CHECK_EQ_INT(mc_text_parse(big, n, &r), MC_PARSE_ERROR);
    CHECK(r.close);
    CHECK_EQ_INT(mc_text_parse(big, MC_MAX_LINE - 1, &r), MC_PARSE_NEED_MORE);
    free(big);
}

static void test_numbers(void)
{
    uint64_t u;
    int64_t i;
    char b[24];
    CHECK(mc_parse_u64("18446744073709551615", 20, &u) && u == UINT64_MAX);
    CHECK(!mc_parse_u64("18446744073709551616", 20, &u));
    CHECK(!mc_parse_u64("", 0, &u));
    CHECK(!mc_parse_u64("1x", 2, &u));
    CHECK(mc_parse_i32("-2147483648", 11, &i) && i == INT32_MIN);
    CHECK(!mc_parse_i32("2147483648", 10, &i));
    CHECK_EQ_INT(mc_u64toa(0, b), 1);
    size_t l = mc_u64toa(UINT64_MAX, b);
    b[l] = 0;
    CHECK_STR(b, "18446744073709551615");
}

static enum mc_parse mp(const char *s, struct mc_meta_req *m) { return mc_meta_parse(s, strlen(s), strlen(s) + 2, m); }

static void test_meta(void)
{
    struct mc_meta_req m;
    CHECK_EQ_INT(mp("mg foo v f t c k s Oab", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.cmd, MC_META_GET);
    CHECK(m.flags & MC_MF('v'));
    CHECK(m.flags & MC_MF('O'));
    CHECK_EQ_INT(m.nopaque, 2);
    CHECK_EQ_INT(m.nrkey, 3);
    CHECK_EQ_INT(mp("ms foo 2 T60 F5 c MR I", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.cmd, MC_META_SET);
    CHECK_EQ_INT(m.datalen, 2);
    CHECK_EQ_INT(m.T_ttl, 60);
    CHECK_EQ_INT(m.F_flags, 5);
    CHECK_EQ_INT(m.mode, 'R');
    CHECK_EQ_INT(mp("ms foo 2 MX", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR invalid mode for ms M token");
    CHECK_EQ_INT(m.swallow, 4);
    CHECK_EQ_INT(mp("ms foo bar", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR bad command line format");
    CHECK_EQ_INT(mp("ms foo 2 S", &m), MC_PARSE_ERROR); /* not an ms flag */
    CHECK_STR(m.error, "CLIENT_ERROR invalid flag");
    CHECK_EQ_INT(m.swallow, 4);
    CHECK_EQ_INT(mp("mg", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "ERROR");
    CHECK_EQ_INT(mp("ms foo 2 M", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR incorrect length for M token");
    CHECK_EQ_INT(mp("mg foo k O1", &m), MC_PARSE_OK);
    CHECK(m.key_first);
    CHECK_EQ_INT(mp("mg foo v v", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR duplicate flag");
    CHECK_EQ_INT(mp("mg foo !", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR invalid flag");
    CHECK_EQ_INT(mp("mg foo O123456789012345678901234567890123", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR opaque token too long");
    CHECK_EQ_INT(mp("mg foo Tabc", &m), MC_PARSE_ERROR);
    CHECK_STR(m.error, "CLIENT_ERROR bad token in command line format");
    CHECK_EQ_INT(mp("ma cnt N0 J10 MD D3 v", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.cmd, MC_META_ARITH);
    CHECK_EQ_INT(m.initial, 10);
    CHECK_EQ_INT(m.delta, 3);
    CHECK_EQ_INT(mp("mn", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.cmd, MC_META_NOOP);
    CHECK_EQ_INT(mp("md foo q I T30", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.cmd, MC_META_DELETE);
    CHECK_EQ_INT(mp("me foo", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.cmd, MC_META_DEBUG);
    /* base64 key "foo" = "Zm9v" */
    CHECK_EQ_INT(mp("mg Zm9v b v", &m), MC_PARSE_OK);
    CHECK_EQ_INT(m.nrkey, 3);
    CHECK(memcmp(m.rkey, "foo", 3) == 0);
    CHECK_EQ_INT(mp("mg Zm9 b v", &m), MC_PARSE_ERROR);
    CHECK_EQ_INT(mp("mx foo", &m), MC_PARSE_ERROR);
    CHECK_EQ_INT(mp("mg", &m), MC_PARSE_ERROR);
}

static void test_base64(void)
{
    char out[64], back[64];
    int n = mc_base64_encode("hello!?", 7, out, sizeof out);
    CHECK_EQ_INT(n, 12);
    out[n] = 0;
    CHECK_STR(out, "aGVsbG8hPw==");
    int m = mc_base64_decode(out, (size_t)n, back, sizeof back);
    CHECK_EQ_INT(m, 7);
    CHECK(memcmp(back, "hello!?", 7) == 0);
    CHECK_EQ_INT(mc_base64_decode("a=bc", 4, back, sizeof back), -1);
}

static void test_binary(void)
{
    uint8_t pkt[64];
    memset(pkt, 0, sizeof pkt);
    pkt[0] = 0x80;
    pkt[1] = MC_BIN_SET;
    pkt[3] = 3;          /* keylen */
    pkt[4] = 8;          /* extlen */
    pkt[11] = 8 + 3 + 2; /* bodylen */
    pkt[15] = 7;         /* opaque */
    memcpy(pkt + 24 + 8, "keyvv", 5);
    struct mc_bin_req r;
    CHECK_EQ_INT(mc_bin_parse(pkt, 10, 1000, &r), MC_PARSE_NEED_MORE);
    CHECK_EQ_INT(mc_bin_parse(pkt, 30, 1000, &r), MC_PARSE_NEED_MORE);
    CHECK_EQ_INT(mc_bin_parse(pkt, 37, 1000, &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.opcode, MC_BIN_SET);
    CHECK_EQ_INT(r.keylen, 3);
    CHECK_EQ_INT(r.vlen, 2);
    CHECK_EQ_INT(r.opaque, 7);
    CHECK(memcmp(r.key, "key", 3) == 0);
    CHECK_EQ_INT(r.consumed, 37);
    CHECK_EQ_INT(mc_bin_parse(pkt, 37, 5, &r), MC_PARSE_ERROR); /* body over the bound */
    pkt[11] = 5;                                                /* key+extras longer than the body */
    CHECK_EQ_INT(mc_bin_parse(pkt, 37, 1000, &r), MC_PARSE_ERROR);
    pkt[0] = 0x81;
    CHECK_EQ_INT(mc_bin_parse_header(pkt, 37, 1000, &r), MC_PARSE_ERROR);
    uint8_t h[24];
    mc_bin_write_header(h, MC_BIN_GET, 3, 4, MC_BIN_KEY_ENOENT, 0x01020304, 0xaabbccdd, 0x1122334455667788ull);
    CHECK_EQ_INT(h[0], 0x81);
    CHECK_EQ_INT(h[3], 3);
    CHECK_EQ_INT(h[4], 4);
    CHECK_EQ_INT(h[7], 1);
    CHECK_EQ_INT(h[8], 1);
    CHECK_EQ_INT(h[11], 4);
    CHECK_EQ_INT(h[12], 0xaa);
    CHECK_EQ_INT(h[16], 0x11);
    CHECK_EQ_INT(h[23], 0x88);
}

/* Build a request packet in buf; returns its length. */
static size_t pkt(uint8_t *buf, uint8_t op, const void *ext, uint8_t extlen, const char *key, const char *val)
{
    size_t nkey = key ? strlen(key) : 0, nval = val ? strlen(val) : 0;
    uint32_t body = (uint32_t)(extlen + nkey + nval);
    memset(buf, 0, 24);
    buf[0] = 0x80;
    buf[1] = op;
    buf[2] = (uint8_t)(nkey >> 8);
    buf[3] = (uint8_t)nkey;
    buf[4] = extlen;
    buf[8] = (uint8_t)(body >> 24);
    buf[9] = (uint8_t)(body >> 16);
    buf[10] = (uint8_t)(body >> 8);
    buf[11] = (uint8_t)body;
    /* memcpy with a NULL source is undefined even for 0 bytes (UBSan) */
    if (extlen)
        memcpy(buf + 24, ext, extlen);
    if (nkey)
        memcpy(buf + 24 + extlen, key, nkey);
    if (nval)
        memcpy(buf + 24 + extlen + nkey, val, nval);
    return 24 + body;
}

static void decode(const uint8_t *buf, size_t len, struct mc_bin_cmd *c)
{
    struct mc_bin_req r;
    CHECK_EQ_INT(mc_bin_parse(buf, len, 1u << 20, &r), MC_PARSE_OK);
    mc_bin_decode(&r, c);
}

static void test_binary_decode(void)
{
    uint8_t b[600];
    struct mc_bin_cmd c;
    /* set: flags and exptime from the 8 extra bytes, exptime signed */
    static const uint8_t set_ext[8] = { 0, 0, 0x12, 0x34, 0xff, 0xff, 0xff, 0xfe };
    decode(b, pkt(b, MC_BIN_SETQ, set_ext, 8, "k", "v"), &c);
    CHECK_EQ_INT(c.status, MC_BIN_OK);
    CHECK_EQ_INT(c.kind, MC_BINK_STORE);
    CHECK_EQ_INT(c.store, MC_BINS_SET);
    CHECK(c.quiet);
    CHECK_EQ_INT(c.flags, 0x1234);
    CHECK_EQ_INT(c.exptime, -2);
    /* set without its extras, append with extras: invalid arguments */
    decode(b, pkt(b, MC_BIN_SET, NULL, 0, "k", "v"), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL);
    decode(b, pkt(b, MC_BIN_APPEND, set_ext, 8, "k", "v"), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL);
    decode(b, pkt(b, MC_BIN_PREPENDQ, NULL, 0, "k", "v"), &c);
    CHECK_EQ_INT(c.status, MC_BIN_OK);
    CHECK_EQ_INT(c.store, MC_BINS_PREPEND);
    /* get family: no extras/value; getk wants the key; touch has no value */
    decode(b, pkt(b, MC_BIN_GETK, NULL, 0, "key", NULL), &c);
    CHECK_EQ_INT(c.kind, MC_BINK_GET);
    CHECK(c.want_key && c.want_value && !c.touch && !c.quiet);
    decode(b, pkt(b, MC_BIN_GET, NULL, 0, "", NULL), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL); /* no key */
    decode(b, pkt(b, MC_BIN_GET, NULL, 0, "k", "x"), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL); /* a value */
    static const uint8_t ttl[4] = { 0, 0, 0, 60 };
    decode(b, pkt(b, MC_BIN_TOUCH, ttl, 4, "k", NULL), &c);
    CHECK(c.touch && !c.want_value);
    CHECK_EQ_INT(c.exptime, 60);
    decode(b, pkt(b, MC_BIN_GATKQ, ttl, 4, "k", NULL), &c);
    CHECK(c.touch && c.want_key && c.want_value && c.quiet);
    decode(b, pkt(b, MC_BIN_GAT, NULL, 0, "k", NULL), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL); /* gat without its exptime */
    /* incr: delta, initial, exptime; 0xffffffff = don't create */
    uint8_t ar[20] = { 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff };
    decode(b, pkt(b, MC_BIN_DECRQ, ar, 20, "n", NULL), &c);
    CHECK_EQ_INT(c.kind, MC_BINK_ARITH);
    CHECK(!c.incr && c.quiet && !c.create);
    CHECK_EQ_INT(c.delta, 5);
    CHECK_EQ_INT(c.initial, 9);
    ar[16] = 0;
    decode(b, pkt(b, MC_BIN_INCR, ar, 20, "n", NULL), &c);
    CHECK(c.incr && c.create);
    CHECK_EQ_INT(c.exptime, 0xffffff);
    decode(b, pkt(b, MC_BIN_INCR, ar, 8, "n", NULL), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL);
    /* flush: optional 4-byte delay */
    decode(b, pkt(b, MC_BIN_FLUSH, ttl, 4, NULL, NULL), &c);
    CHECK(c.has_delay);
    CHECK_EQ_INT(c.delay, 60);
    decode(b, pkt(b, MC_BIN_FLUSHQ, NULL, 0, NULL, NULL), &c);
    CHECK(!c.has_delay && c.quiet);
    decode(b, pkt(b, MC_BIN_FLUSH, NULL, 0, "k", NULL), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL);
    /* verbosity without its extras: memcached answers unknown command */
    decode(b, pkt(b, MC_BIN_VERBOSITY, NULL, 0, NULL, NULL), &c);
    CHECK_EQ_INT(c.status, MC_BIN_UNKNOWN_COMMAND);
    decode(b, pkt(b, MC_BIN_VERBOSITY, ttl, 4, NULL, NULL), &c);
    CHECK_EQ_INT(c.verbosity, 60);
    /* what may run before SASL authentication */
    decode(b, pkt(b, MC_BIN_NOOP, NULL, 0, NULL, NULL), &c);
    CHECK(c.pre_auth);
    decode(b, pkt(b, MC_BIN_VERSION, NULL, 0, NULL, NULL), &c);
    CHECK(c.pre_auth);
    decode(b, pkt(b, MC_BIN_GET, NULL, 0, "k", NULL), &c);
    CHECK(!c.pre_auth);
    /* SASL PLAIN: authzid NUL user NUL pass */
    static const char plain[] = "z\0user\0secret";
    uint8_t sb[64];
    size_t n = pkt(sb, MC_BIN_SASL_AUTH, NULL, 0, "PLAIN", NULL);
    memcpy(sb + n, plain, sizeof plain - 1);
    sb[11] = (uint8_t)(sb[11] + sizeof plain - 1);
    decode(sb, n + sizeof plain - 1, &c);
    CHECK(c.pre_auth && c.plain_ok);
    CHECK_EQ_INT(c.nuser, 4);
    CHECK_MEM(c.user, "user", 4);
    CHECK_EQ_INT(c.npass, 6);
    CHECK_MEM(c.pass, "secret", 6);
    decode(b, pkt(b, MC_BIN_SASL_AUTH, NULL, 0, "PLAIN", "nouser"), &c);
    CHECK(!c.plain_ok);
    decode(b, pkt(b, MC_BIN_SASL_AUTH, NULL, 0, "CRAM-MD5", "x"), &c);
    CHECK(!c.plain_ok);
    /* keys over 250 bytes; unknown opcodes (range ops 0x30..) */
    char big[252];
    memset(big, 'k', 251);
    big[251] = 0;
    decode(b, pkt(b, MC_BIN_DELETE, NULL, 0, big, NULL), &c);
    CHECK_EQ_INT(c.status, MC_BIN_EINVAL);
    decode(b, pkt(b, 0x30, NULL, 0, "k", NULL), &c);
    CHECK_EQ_INT(c.kind, MC_BINK_UNKNOWN);
    CHECK_EQ_INT(c.status, MC_BIN_UNKNOWN_COMMAND);
    CHECK_STR(mc_bin_status_text(MC_BIN_KEY_ENOENT), "Not found");
    CHECK_STR(mc_bin_status_text(MC_BIN_EINVAL), "Invalid arguments");
    CHECK_STR(mc_bin_status_text(0x81), "Unknown command");
}

/* "watch": the kinds as memcached 1.6.18's LOG_* bits, fetchers by
 * default, ERROR for an unknown word (silent with noreply). */
static void test_text_watch(void)
{
    struct mc_text_req r;
    const char *l = "watch\r\n";
    CHECK_EQ_INT(mc_text_parse(l, strlen(l), &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.cmd, MC_TXT_WATCH);
    CHECK_EQ_INT(r.delta, 1 << 2);
    l = "watch mutations evictions connevents sysevents\r\n";
    CHECK_EQ_INT(mc_text_parse(l, strlen(l), &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.delta, (1 << 3) | (1 << 6) | (1 << 5) | (1 << 1));
    l = "watch rawcmds proxyreqs proxyevents proxyuser fetchers\n";
    CHECK_EQ_INT(mc_text_parse(l, strlen(l), &r), MC_PARSE_OK);
    CHECK_EQ_INT(r.delta, (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 2));
    l = "watch fetchers bogus\r\n";
    CHECK_EQ_INT(mc_text_parse(l, strlen(l), &r), MC_PARSE_ERROR);
    CHECK(strcmp(r.error, "ERROR") == 0 && !r.noreply && !r.close);
    l = "watch bogus noreply\r\n";
    CHECK_EQ_INT(mc_text_parse(l, strlen(l), &r), MC_PARSE_ERROR);
    CHECK(r.noreply);
    l = "watch fetchers";
    CHECK_EQ_INT(mc_text_parse(l, strlen(l), &r), MC_PARSE_NEED_MORE);
}

int main(void)
{
    RUN(test_text_storage);
    RUN(test_text_get_and_misc);
    RUN(test_text_noreply_on_bad_lines);
    RUN(test_text_watch);
    RUN(test_text_partial_and_bounds);
    RUN(test_numbers);
    RUN(test_meta);
    RUN(test_base64);
    RUN(test_binary);
    RUN(test_binary_decode);
    return unit_done();
}
