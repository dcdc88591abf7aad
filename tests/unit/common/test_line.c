/* line framing and tokenising */
#include <string.h>

#include <event2/buffer.h>

#include "common/line.h"
#include "tests/unit/unit.h"

static void test_find_crlf_and_lf(void)
{
    size_t len, used;
    CHECK_EQ_INT(line_find("get a\r\nrest", 11, 100, &len, &used), LINE_OK);
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_INT(used, 7);
    CHECK_EQ_INT(line_find("get a\nrest", 10, 100, &len, &used), LINE_OK);
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_INT(used, 6);
    CHECK_EQ_INT(line_find("\r\n", 2, 100, &len, &used), LINE_OK);
    CHECK_EQ_INT(len, 0);
}

static void test_need_more_and_too_long(void)
{
    size_t len, used;
    CHECK_EQ_INT(line_find("get a", 5, 100, &len, &used), LINE_NEED_MORE);
    CHECK_EQ_INT(line_find("", 0, 100, &len, &used), LINE_NEED_MORE);
    /* exactly max bytes then CRLF is fine; max+1 is too long */
    CHECK_EQ_INT(line_find("abcd\r\n", 6, 4, &len, &used), LINE_OK);
    CHECK_EQ_INT(line_find("abcde\r\n", 7, 4, &len, &used), LINE_TOO_LONG);
    CHECK_EQ_INT(line_find("abcde\n", 6, 4, &len, &used), LINE_TOO_LONG);
    CHECK_EQ_INT(line_find("abcdef", 6, 4, &len, &used), LINE_TOO_LONG);
    /* "abcd\r" could still become a good line */
    CHECK_EQ_INT(line_find("abcd\r", 5, 4, &len, &used), LINE_NEED_MORE);
}

static void test_split(void)
{
    char buf[] = "  set  key 0\t10 5 ";
    char *tok[8];
    CHECK_EQ_INT(line_split(buf, strlen(buf), tok, 8), 5);
    CHECK_STR(tok[0], "set");
    CHECK_STR(tok[1], "key");
    CHECK_STR(tok[4], "5");
    char buf2[] = "a b c";
    CHECK_EQ_INT(line_split(buf2, strlen(buf2), tok, 2), -1);
    char buf3[] = "   ";
    CHECK_EQ_INT(line_split(buf3, 3, tok, 2), 0);
}

static void test_peek_across_chunks(void)
{
    struct evbuffer *b = evbuffer_new();
    struct evbuffer *part = evbuffer_new();
    evbuffer_add(b, "hello ", 6);
    evbuffer_add(part, "world\r\nnext", 11);
    evbuffer_add_buffer(b, part); /* a second chain */
    size_t len, used;
    enum line_status st;
    char *line = line_peek(b, 100, &len, &used, &st);
    CHECK_EQ_INT(st, LINE_OK);
    CHECK(line && len == 11 && memcmp(line, "hello world", 11) == 0);
    evbuffer_drain(b, used);
    line = line_peek(b, 100, &len, &used, &st);
    CHECK_EQ_INT(st, LINE_NEED_MORE);
    CHECK(line == NULL);
    evbuffer_drain(b, evbuffer_get_length(b));
    char big[300];
    memset(big, 'x', sizeof(big));
    evbuffer_add(b, big, sizeof(big));
    line = line_peek(b, 100, &len, &used, &st);
    CHECK_EQ_INT(st, LINE_TOO_LONG);
    evbuffer_free(b);
    evbuffer_free(part);
}

int main(void)
{
    RUN(test_find_crlf_and_lf);
    RUN(test_need_more_and_too_long);
    RUN(test_split);
    RUN(test_peek_across_chunks);
    return unit_done();
}
