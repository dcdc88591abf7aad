/* Unit tests for gearmand/proto.c: header/packet parsing, argument
 * splitting, limits, encoder round trips and admin text classification. */
#include "gearmand/proto.h"
#include "tests/unit/unit.h"

#include <stdarg.h>
#include <stdlib.h>

static size_t enc(char *buf, size_t cap, enum gm_magic m, uint32_t cmd, int argc, ...)
{
    const void *args[GM_MAX_ARGS];
    size_t lens[GM_MAX_ARGS];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        args[i] = va_arg(ap, const char *);
        lens[i] = strlen(args[i]);
    }
    va_end(ap);
    return gm_encode(buf, cap, m, cmd, argc, args, lens);
}

static void test_header_layout(void)
{
    unsigned char h[12];
    gm_encode_header(h, GM_REQ, GM_SUBMIT_JOB, 0x01020304);
    CHECK_MEM(h, "\0REQ\0\0\0\x07\x01\x02\x03\x04", 12);
    gm_encode_header(h, GM_RES, GM_NOOP, 0);
    CHECK_MEM(h, "\0RES\0\0\0\x06\0\0\0\0", 12);
}

static void test_submit_roundtrip(void)
{
    char buf[256];
    size_t n = enc(buf, sizeof buf, GM_REQ, GM_SUBMIT_JOB, 3, "reverse", "uk", "hello");
    CHECK_EQ_INT(n, 12 + 7 + 1 + 2 + 1 + 5);
    struct gm_packet p;
    size_t used = 0;
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1 << 20, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(used, n);
    CHECK_EQ_INT(p.magic, GM_REQ);
    CHECK_EQ_INT(p.cmd, GM_SUBMIT_JOB);
    CHECK_EQ_INT(p.argc, 3);
    CHECK_EQ_INT(p.arg_len[0], 7);
    CHECK_MEM(p.arg[0], "reverse", 7);
    CHECK_MEM(p.arg[1], "uk", 2);
    CHECK_MEM(p.arg[2], "hello", 5);
    /* every prefix needs more */
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_INT(gm_parse_packet(buf, i, 1 << 20, &p, &used), GM_PARSE_NEED_MORE);
}

static void test_data_may_contain_nul(void)
{
    const void *args[3] = { "f", "", "a\0b\0" };
    size_t lens[3] = { 1, 0, 4 };
    char buf[64];
    size_t n = gm_encode(buf, sizeof buf, GM_REQ, GM_SUBMIT_JOB_BG, 3, args, lens);
    struct gm_packet p;
    size_t used;
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(p.arg_len[1], 0);
    CHECK_EQ_INT(p.arg_len[2], 4);
    CHECK_MEM(p.arg[2], "a\0b\0", 4);
}

static void test_zero_arg_and_one_arg(void)
{
    char buf[64];
    size_t n = enc(buf, sizeof buf, GM_REQ, GM_GRAB_JOB_ALL, 0);
    CHECK_EQ_INT(n, 12);
    struct gm_packet p;
    size_t used;
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(p.argc, 0);
    n = enc(buf, sizeof buf, GM_REQ, GM_ECHO_REQ, 1, "ping");
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(p.argc, 1);
    CHECK_EQ_INT(p.arg_len[0], 4);
}

static void test_bad_magic_early(void)
{
    struct gm_packet p;
    size_t used;
    CHECK_EQ_INT(gm_parse_packet("\0RE", 3, 1024, &p, &used), GM_PARSE_NEED_MORE);
    CHECK_EQ_INT(gm_parse_packet("\0X", 2, 1024, &p, &used), GM_PARSE_BAD_MAGIC);
    CHECK_EQ_INT(gm_parse_packet("\0REX\0\0\0\1\0\0\0\0", 12, 1024, &p, &used), GM_PARSE_BAD_MAGIC);
    CHECK_EQ_INT(gm_parse_packet("GET ", 4, 1024, &p, &used), GM_PARSE_BAD_MAGIC);
    /* a RES packet parses (the server decides whether it accepts it) */
    CHECK_EQ_INT(gm_parse_packet("\0RES\0\0\0\6\0\0\0\0", 12, 1024, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(p.magic, GM_RES);
}

static void test_too_large(void)
{
    unsigned char h[12];
    gm_encode_header(h, GM_REQ, GM_SUBMIT_JOB, 1025);
    struct gm_packet p;
    size_t used;
    CHECK_EQ_INT(gm_parse_packet(h, 12, 1024, &p, &used), GM_PARSE_TOO_LARGE);
    gm_encode_header(h, GM_REQ, GM_SUBMIT_JOB, 0xffffffffu);
    CHECK_EQ_INT(gm_parse_header(h, 12, 0xfffffffeu, &p), GM_PARSE_TOO_LARGE);
}

static void test_unknown_and_bad_args(void)
{
    char buf[64];
    struct gm_packet p;
    size_t used = 0;
    size_t n = enc(buf, sizeof buf, GM_REQ, 5, 1, "x");
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_UNKNOWN_CMD);
    CHECK_EQ_INT(used, n);
    n = enc(buf, sizeof buf, GM_REQ, 9999, 0);
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_UNKNOWN_CMD);
    /* SUBMIT_JOB needs two NULs */
    n = enc(buf, sizeof buf, GM_REQ, GM_SUBMIT_JOB, 2, "fn", "data");
    CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_BAD_ARGS);
    CHECK_EQ_INT(used, n);
    CHECK(gm_cmd_name(GM_SUBMIT_JOB_EPOCH) && !strcmp(gm_cmd_name(GM_SUBMIT_JOB_EPOCH), "SUBMIT_JOB_EPOCH"));
    CHECK(gm_cmd_name(0) == NULL && gm_cmd_name(5) == NULL && gm_cmd_name(43) == NULL);
}

static void test_every_type_roundtrips(void)
{
    char buf[512];
    for (uint32_t c = 1; c < GM_CMD_MAX; c++) {
        int argc = gm_cmd_argc(c);
        if (argc < 0)
            continue;
        const void *args[GM_MAX_ARGS];
        size_t lens[GM_MAX_ARGS];
        char vals[GM_MAX_ARGS][16];
        for (int i = 0; i < argc; i++) {
            snprintf(vals[i], sizeof vals[i], "a%d", i);
            args[i] = vals[i];
            lens[i] = strlen(vals[i]);
        }
        size_t n = gm_encode(buf, sizeof buf, GM_RES, c, argc, args, lens);
        struct gm_packet p;
        size_t used;
        CHECK_EQ_INT(gm_parse_packet(buf, n, 1024, &p, &used), GM_PARSE_OK);
        CHECK_EQ_INT(p.argc, argc);
        for (int i = 0; i < argc; i++)
            CHECK(p.arg_len[i] == lens[i] && !memcmp(p.arg[i], vals[i], lens[i]));
    }
}

static void test_two_packets_in_one_buffer(void)
{
    char buf[128];
    size_t a = enc(buf, sizeof buf, GM_REQ, GM_CAN_DO, 1, "f1");
    size_t b = enc(buf + a, sizeof buf - a, GM_REQ, GM_PRE_SLEEP, 0);
    struct gm_packet p;
    size_t used;
    CHECK_EQ_INT(gm_parse_packet(buf, a + b, 1024, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(used, a);
    CHECK_EQ_INT(gm_parse_packet(buf + used, a + b - used, 1024, &p, &used), GM_PARSE_OK);
    CHECK_EQ_INT(p.cmd, GM_PRE_SLEEP);
}

static void test_encode_small_cap(void)
{
    char buf[14];
    size_t n = enc(buf, sizeof buf, GM_RES, GM_JOB_CREATED, 1, "H:host:1");
    CHECK_EQ_INT(n, 20);
}

static void test_parse_u64(void)
{
    uint64_t v;
    CHECK_EQ_INT(gm_parse_u64("123", 3, 1000, &v), 0);
    CHECK_EQ_INT(v, 123);
    CHECK_EQ_INT(gm_parse_u64("1001", 4, 1000, &v), -1);
    CHECK_EQ_INT(gm_parse_u64("", 0, 1000, &v), -1);
    CHECK_EQ_INT(gm_parse_u64("12a", 3, 1000, &v), -1);
    CHECK_EQ_INT(gm_parse_u64("18446744073709551615", 20, UINT64_MAX, &v), 0);
    CHECK(v == UINT64_MAX);
    CHECK_EQ_INT(gm_parse_u64("18446744073709551616", 20, UINT64_MAX, &v), -1);
}

static struct gm_text classify(const char *s)
{
    static char line[256];
    char *tok[GM_TEXT_MAX_TOKENS];
    snprintf(line, sizeof line, "%s", s);
    int n = gm_text_split(line, strlen(line), tok, GM_TEXT_MAX_TOKENS);
    struct gm_text t;
    gm_text_classify(n, tok, &t);
    return t;
}

static void test_text(void)
{
    CHECK_EQ_INT(classify("").cmd, GM_TEXT_NONE);
    CHECK_EQ_INT(classify("   ").cmd, GM_TEXT_NONE);
    CHECK_EQ_INT(classify("workers").cmd, GM_TEXT_WORKERS);
    CHECK_EQ_INT(classify("STATUS\r").cmd, GM_TEXT_STATUS);
    CHECK_EQ_INT(classify("prioritystatus").cmd, GM_TEXT_PRIORITYSTATUS);
    CHECK_EQ_INT(classify("version").cmd, GM_TEXT_VERSION);
    CHECK_EQ_INT(classify("getpid").cmd, GM_TEXT_GETPID);
    CHECK_EQ_INT(classify("verbose").cmd, GM_TEXT_VERBOSE);
    struct gm_text t = classify("maxqueue fn 1 2 3");
    CHECK_EQ_INT(t.cmd, GM_TEXT_MAXQUEUE);
    CHECK_EQ_INT(t.argc, 4);
    CHECK_STR(t.arg[0], "fn");
    CHECK_STR(t.arg[3], "3");
    CHECK_EQ_INT(classify("maxqueue").cmd, GM_TEXT_BAD_ARGS);
    CHECK_EQ_INT(classify("show jobs").cmd, GM_TEXT_SHOW_JOBS);
    CHECK_EQ_INT(classify("show unique jobs").cmd, GM_TEXT_SHOW_UNIQUE_JOBS);
    CHECK_EQ_INT(classify("show bogus").cmd, GM_TEXT_SHOW_UNKNOWN);
    CHECK_EQ_INT(classify("show").cmd, GM_TEXT_OTHER);
    CHECK_EQ_INT(classify("show settings").cmd, GM_TEXT_SHOW_UNKNOWN); /* as gearmand; the console has its own */
    t = classify("cancel job H:x:1");
    CHECK_EQ_INT(t.cmd, GM_TEXT_CANCEL_JOB);
    CHECK_STR(t.arg[0], "H:x:1");
    /* gearmand 1.1.20, side by side: "cancel job" alone is an unknown
     * command; a word too many is refused when run (ERR UNKNOWN_ERROR) */
    CHECK_EQ_INT(classify("cancel job").cmd, GM_TEXT_OTHER);
    t = classify("cancel job H:x:1 more words here");
    CHECK_EQ_INT(t.cmd, GM_TEXT_CANCEL_JOB);
    CHECK_EQ_INT(t.argc, 4);
    CHECK_STR(t.arg[0], "H:x:1");
    CHECK_STR(t.arg[3], "here");
    /* more words than arg[] holds: argc stays within it, every arg set */
    t = classify("cancel job a b c d e f");
    CHECK_EQ_INT(t.argc, 4);
    CHECK_STR(t.arg[3], "d");
    CHECK_EQ_INT(classify("show jobs extra").cmd, GM_TEXT_SHOW_UNKNOWN);
    CHECK_EQ_INT(classify("show unique jobs x").cmd, GM_TEXT_SHOW_UNKNOWN);
    CHECK_EQ_INT(classify("cancel").cmd, GM_TEXT_OTHER);
    t = classify("create function foo");
    CHECK_EQ_INT(t.cmd, GM_TEXT_CREATE_FUNCTION);
    CHECK_STR(t.arg[0], "foo");
    CHECK_EQ_INT(classify("drop function foo").cmd, GM_TEXT_DROP_FUNCTION);
    t = classify("shutdown graceful");
    CHECK_EQ_INT(t.cmd, GM_TEXT_SHUTDOWN);
    CHECK(t.graceful);
    CHECK(!classify("shutdown").graceful);
    CHECK_EQ_INT(classify("shutdown").argc, 0);
    t = classify("shutdown now");
    CHECK_EQ_INT(t.cmd, GM_TEXT_SHUTDOWN);
    CHECK(!t.graceful);
    CHECK_EQ_INT(t.argc, 1);
    CHECK_STR(t.arg[0], "now");
    CHECK_EQ_INT(classify("bogus").cmd, GM_TEXT_OTHER);
    CHECK_EQ_INT(classify("stats").cmd, GM_TEXT_OTHER);
}

static void test_text_split_bound(void)
{
    char line[64] = "a b c d e f g h i j";
    char *tok[4];
    CHECK_EQ_INT(gm_text_split(line, strlen(line), tok, 4), 4);
    CHECK_STR(tok[3], "d");
}

int main(void)
{
    RUN(test_header_layout);
    RUN(test_submit_roundtrip);
    RUN(test_data_may_contain_nul);
    RUN(test_zero_arg_and_one_arg);
    RUN(test_bad_magic_early);
    RUN(test_too_large);
    RUN(test_unknown_and_bad_args);
    RUN(test_every_type_roundtrips);
    RUN(test_two_packets_in_one_buffer);
    RUN(test_encode_small_cap);
    RUN(test_parse_u64);
    RUN(test_text);
    RUN(test_text_split_bound);
    return unit_done();
}
