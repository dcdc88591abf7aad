/* Unit tests for common/http: heads, framing, smuggling defences, chunked,
 * Range, dates, path normalisation. */
#include "common/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"

static struct http_msg m;

static int req(const char *s) { return http_parse_request(s, strlen(s), NULL, &m); }

static int resp(const char *s, enum http_method meth) { return http_parse_response(s, strlen(s), meth, NULL, &m); }

static void test_simple_get(void)
{
    const char *s = "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\nrest";
    CHECK_EQ_INT(req(s), (int)strlen(s) - 4);
    CHECK_EQ_INT(m.method, HTTP_M_GET);
    CHECK_EQ_INT(m.target_len, 8);
    CHECK(memcmp(m.target, "/a/b?x=1", 8) == 0);
    CHECK_EQ_INT(m.version_minor, 1);
    CHECK_EQ_INT(m.nheaders, 2);
    CHECK(m.keep_alive);
    CHECK_EQ_INT(m.body, HTTP_BODY_NONE);
    size_t l;
    const char *v = http_header_value(&m, "user-agent", &l);
    CHECK(v && l == 1 && *v == 't');
    CHECK_EQ_INT(m.host_index, 0);
}

static void test_incremental(void)
{
    const char *s = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    size_t head = strlen(s) - 5;
    for (size_t i = 0; i < head; i++)
        CHECK_EQ_INT(http_parse_request(s, i, NULL, &m), 0);
    CHECK_EQ_INT(http_parse_request(s, head, NULL, &m), (int)head);
    CHECK_EQ_INT(m.body, HTTP_BODY_LENGTH);
    CHECK_EQ_INT(m.content_length, 5);
}

static void test_http10_keepalive(void)
{
    CHECK(req("GET / HTTP/1.0\r\n\r\n") > 0);
    CHECK(!m.keep_alive);
    CHECK(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0);
    CHECK(m.keep_alive);
    CHECK(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") > 0);
    CHECK(!m.keep_alive);
    CHECK(m.conn_close);
}

static void test_bare_lf_and_leading_crlf(void)
{
    CHECK(req("\r\nGET / HTTP/1.1\nHost: a\n\n") > 0);
    CHECK_EQ_INT(m.method, HTTP_M_GET);
}

static void test_errors(void)
{
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\n\r\n"), -1); /* no Host */
    CHECK_EQ_INT(m.error, 400);
    CHECK_EQ_INT(req("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), -1);
    CHECK_EQ_INT(m.error, 505);
    CHECK_EQ_INT(req("GET /\r\n\r\n"), -1);
    CHECK_EQ_INT(req("\x01\x02garbage"), -1);
    CHECK_EQ_INT(m.error, 400);
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), -1); /* space before colon */
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), -1);
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), -1);
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), -1);
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"), -1);
    CHECK_EQ_INT(m.error, 417);
    CHECK(req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n") > 0);
    CHECK(m.expect_continue);
}

/* A control character anywhere in a header line is refused, whatever its
 * place in a long value (the value check runs eight bytes at a time) or on
 * the request and status lines; HTAB and obs-text are allowed. */
static void test_control_bytes_anywhere(void)
{
    const char bad[] = { '\r', '\0', 0x01, 0x1f, 0x7f, 0x0b };
    for (size_t b = 0; b < sizeof bad; b++) {
        for (int pos = 0; pos < 21; pos++) {
            char v[22];
            memset(v, 'a', 21);
            v[21] = 0;
            v[pos] = bad[b];
            char buf[128];
            int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX-Long: %s\r\n\r\n", v);
            if (bad[b] == '\0') /* snprintf stops at the NUL: put it in by hand */
                buf[strlen("GET / HTTP/1.1\r\nHost: a\r\nX-Long: ") + (size_t)pos] = 0, n = (int)strlen(buf);
            int r = http_parse_request(buf, (size_t)n, NULL, &m);
            if (bad[b] == '\0') {
                /* cut short at the NUL: a head without its end is not done yet */
                CHECK(r <= 0);
                continue;
            }
            CHECK_EQ_INT(r, -1);
            CHECK_EQ_INT(m.error, 400);
        }
    }
    CHECK(req("GET / HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\tc\td\te\tf\tg\th\r\n\r\n") > 0);
    CHECK(req("GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9 \xff\xfe\x80 long enough\r\n\r\n") > 0);
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nX\rY: a\r\n\r\n"), -1); /* CR in a name */
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nX: a \r \r\n\r\n"), -1); /* CR among trailing blanks */
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n"), -1);   /* CR CR LF */
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n"), -1);      /* a line of one CR */
    CHECK_EQ_INT(req("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"), -1);        /* request line */
    CHECK_EQ_INT(resp("HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n", HTTP_M_GET), -1);
    CHECK_EQ_INT(m.error, 502);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nServer: some long name\x7f here\r\nContent-Length: 0\r\n\r\n", HTTP_M_GET),
                 -1);
    CHECK(resp("HTTP/1.1 200 OK\r\nServer: some long name here\r\nContent-Length: 0\r\n\r\n", HTTP_M_GET) > 0);
}

static void test_smuggling(void)
{
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), -1);
    CHECK_EQ_INT(m.error, 400);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), -1);
    CHECK(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n") > 0);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), -1);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), -1);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), -1);
    CHECK_EQ_INT(m.error, 501);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), -1);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
                 -1);
    /* HTTP/1.0 + chunked: read as chunked, then the connection closes
     * (RFC 9112 6.1), even when the client asked to keep it */
    CHECK(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n") > 0);
    CHECK_EQ_INT(m.body, HTTP_BODY_CHUNKED);
    CHECK(!m.keep_alive);
    CHECK_EQ_INT(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), -1);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_LENGTH_AND_CHUNKED);
    CHECK_EQ_INT(req("POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n"), -1);
    CHECK_EQ_INT(m.error, 501);
    /* a negative Content-Length is told apart from other bad lengths */
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n"), -1);
    CHECK_EQ_INT(m.error, 400);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_NEGATIVE_LENGTH);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -\r\n\r\n"), -1);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_BAD_LENGTH);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5x\r\n\r\n"), -1);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_BAD_LENGTH);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), -1);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_BAD_LENGTH);
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), -1);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_OTHER);
    CHECK(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n") > 0);
    CHECK_EQ_INT(m.fault, HTTP_FAULT_OTHER);
    CHECK_EQ_INT(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"), -1);
    CHECK(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n") > 0);
    CHECK_EQ_INT(m.body, HTTP_BODY_CHUNKED);
}

static void test_limits(void)
{
    char big[20000];
    strcpy(big, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    size_t n = strlen(big);
    memset(big + n, 'a', sizeof big - n - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ_INT(http_parse_request(big, strlen(big), NULL, &m), -1);
    CHECK_EQ_INT(m.error, 431);
    struct http_limits lim = { .max_head = 0, .max_headers = 3 };
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_EQ_INT(http_parse_request(s, strlen(s), &lim, &m), -1);
    CHECK_EQ_INT(m.error, 431);
    /* an incomplete head shorter than the limit wants more */
    CHECK_EQ_INT(http_parse_request(big, 1000, NULL, &m), 0);
}

static void test_response(void)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    CHECK_EQ_INT(resp(s, HTTP_M_GET), (int)strlen(s) - 3);
    CHECK_EQ_INT(m.status, 200);
    CHECK_EQ_INT(m.body, HTTP_BODY_LENGTH);
    CHECK(m.keep_alive);
    CHECK(resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", HTTP_M_HEAD) > 0);
    CHECK_EQ_INT(m.body, HTTP_BODY_NONE);
    CHECK(resp("HTTP/1.1 304 Not Modified\r\n\r\n", HTTP_M_GET) > 0);
    CHECK_EQ_INT(m.body, HTTP_BODY_NONE);
    CHECK(resp("HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", HTTP_M_GET) > 0);
    CHECK_EQ_INT(m.body, HTTP_BODY_CLOSE);
    CHECK(!m.keep_alive);
    CHECK(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_M_GET) > 0);
    CHECK_EQ_INT(m.body, HTTP_BODY_CHUNKED);
    CHECK(resp("HTTP/1.1 204\r\n\r\n", HTTP_M_GET) > 0);
    CHECK_EQ_INT(resp("SSH-2.0-OpenSSH\r\n\r\n", HTTP_M_GET), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 2x0 OK\r\n\r\n", HTTP_M_GET), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_M_GET), -1);
}

static void test_chunked(void)
{
    const char *s = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    size_t len = strlen(s);
    /* feed byte by byte and whole, both must give the same payload */
    for (int mode = 0; mode < 2; mode++) {
        struct http_chunked c;
        http_chunked_init(&c, 0);
        char out[64];
        size_t o = 0, pos = 0;
        int done = 0;
        while (pos < len && !done) {
            size_t avail = mode ? len - pos : 1;
            size_t cons, off, dl;
            enum http_chunk_result r = http_chunked_step(&c, s + pos, avail, &cons, &off, &dl);
            CHECK(r != HTTP_CHUNK_ERROR);
            if (r == HTTP_CHUNK_ERROR)
                break;
            if (r == HTTP_CHUNK_DATA) {
                memcpy(out + o, s + pos + off, dl);
                o += dl;
            }
            if (r == HTTP_CHUNK_DONE)
                done = 1;
            pos += cons;
        }
        CHECK(done);
        CHECK_EQ_INT(o, 11);
        CHECK(memcmp(out, "hello world", 11) == 0);
        CHECK_EQ_INT(pos, len - 4);
    }
    struct http_chunked c;
    size_t cons, off, dl;
    http_chunked_init(&c, 0);
    CHECK_EQ_INT(http_chunked_step(&c, "zz\r\n", 4, &cons, &off, &dl), HTTP_CHUNK_ERROR);
    http_chunked_init(&c, 0);
    CHECK_EQ_INT(http_chunked_step(&c, "ffffffffffffffffff\r\n", 20, &cons, &off, &dl), HTTP_CHUNK_ERROR);
    http_chunked_init(&c, 10);
    CHECK_EQ_INT(http_chunked_step(&c, "b\r\n", 3, &cons, &off, &dl), HTTP_CHUNK_ERROR);
    http_chunked_init(&c, 0);
    CHECK_EQ_INT(http_chunked_step(&c, "1\r\nab", 5, &cons, &off, &dl), HTTP_CHUNK_DATA);
    CHECK_EQ_INT(http_chunked_step(&c, "b", 1, &cons, &off, &dl), HTTP_CHUNK_ERROR);
    char hdr[24];
    CHECK_EQ_INT(http_chunk_header(hdr, 255), 4);
    CHECK_STR(hdr, "ff\r\n");
}

static void test_range(void)
{
    uint64_t a, b;
    CHECK_EQ_INT(http_parse_range("bytes=0-99", 10, 1000, &a, &b), HTTP_RANGE_OK);
    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(b, 99);
    CHECK_EQ_INT(http_parse_range("bytes=900-", 10, 1000, &a, &b), HTTP_RANGE_OK);
    CHECK_EQ_INT(b, 999);
    CHECK_EQ_INT(http_parse_range("bytes=-100", 10, 1000, &a, &b), HTTP_RANGE_OK);
    CHECK_EQ_INT(a, 900);
    CHECK_EQ_INT(http_parse_range("bytes=-5000", 11, 1000, &a, &b), HTTP_RANGE_OK);
    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(http_parse_range("bytes=0-5000", 12, 1000, &a, &b), HTTP_RANGE_OK);
    CHECK_EQ_INT(b, 999);
    CHECK_EQ_INT(http_parse_range("bytes=1000-", 11, 1000, &a, &b), HTTP_RANGE_UNSATISFIABLE);
    CHECK_EQ_INT(http_parse_range("bytes=5-1", 9, 1000, &a, &b), HTTP_RANGE_INVERTED); /* callers may 416 */
    CHECK_EQ_INT(http_parse_range("bytes=5000-1", 12, 1000, &a, &b), HTTP_RANGE_INVERTED);
    CHECK_EQ_INT(http_parse_range("bytes=5-5", 9, 1000, &a, &b), HTTP_RANGE_OK);
    CHECK_EQ_INT(http_parse_range("bytes=0-1,5-6", 13, 1000, &a, &b), HTTP_RANGE_IGNORE);
    CHECK_EQ_INT(http_parse_range("items=0-1", 9, 1000, &a, &b), HTTP_RANGE_IGNORE);
}

static void test_dates(void)
{
    char buf[32];
    CHECK_EQ_INT(http_date_format(784111777, buf), 29);
    CHECK_STR(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    time_t t;
    CHECK_EQ_INT(http_date_parse(buf, 29, &t), 0);
    CHECK_EQ_INT(t, 784111777);
    const char *r850 = "Sunday, 06-Nov-94 08:49:37 GMT";
    CHECK_EQ_INT(http_date_parse(r850, strlen(r850), &t), 0);
    CHECK_EQ_INT(t, 784111777);
    const char *asc = "Sun Nov  6 08:49:37 1994";
    CHECK_EQ_INT(http_date_parse(asc, strlen(asc), &t), 0);
    CHECK_EQ_INT(t, 784111777);
    CHECK_EQ_INT(http_date_parse("yesterday", 9, &t), -1);
}

static const char *norm(const char *in, bool *slash)
{
    static char out[256];
    if (http_path_normalize(in, strlen(in), out, sizeof out, slash) < 0)
        return NULL;
    return out;
}

static void test_paths(void)
{
    bool sl;
    CHECK_STR(norm("/a/b/c.txt?x=1", &sl), "/a/b/c.txt");
    CHECK(!sl);
    CHECK_STR(norm("/a//b/./c/../d/", &sl), "/a/b/d");
    CHECK(sl);
    CHECK_STR(norm("/", &sl), "/");
    CHECK(sl);
    CHECK_STR(norm("/%41%20b", &sl), "/A b");
    CHECK(norm("/../etc/passwd", &sl) == NULL);
    CHECK(norm("/a/../../etc", &sl) == NULL);
    CHECK(norm("/%2e%2e/etc", &sl) == NULL);
    CHECK(norm("/a%00b", &sl) == NULL);
    CHECK(norm("/a%2fb", &sl) == NULL);
    CHECK(norm("/a%zz", &sl) == NULL);
    CHECK(norm("relative", &sl) == NULL);
    CHECK_STR(norm("http://host:80/x/y", &sl), "/x/y");
}

int main(void)
{
    RUN(test_simple_get);
    RUN(test_incremental);
    RUN(test_http10_keepalive);
    RUN(test_bare_lf_and_leading_crlf);
    RUN(test_errors);
    RUN(test_control_bytes_anywhere);
    RUN(test_smuggling);
    RUN(test_limits);
    RUN(test_response);
    RUN(test_chunked);
    RUN(test_range);
    RUN(test_dates);
    RUN(test_paths);
    return unit_done();
}
