/* line: finding lines and splitting them into words, without allocating. */
#include "common/line.h"

#include <string.h>

#include <event2/buffer.h>

enum line_status line_find(const char *buf, size_t len, size_t max, size_t *line_len, size_t *consumed)
{
    /* A terminator may sit at index max ("\n") or max+1 ("\r\n"). */
    size_t scan = len < max + 2 ? len : max + 2;
    const char *nl = memchr(buf, '\n', scan);
    if (!nl)
        return len > max + 1 ? LINE_TOO_LONG : LINE_NEED_MORE;
    size_t n = (size_t)(nl - buf);
    *consumed = n + 1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > max)
        return LINE_TOO_LONG;
    *line_len = n;
    return LINE_OK;
}

char *line_peek(struct evbuffer *in, size_t max, size_t *line_len, size_t *consumed, enum line_status *st)
{
    size_t have = evbuffer_get_length(in);
    if (have == 0) {
        *st = LINE_NEED_MORE;
        return NULL;
    }
    /* Look in the first chunk before making anything contiguous: lines are
     * nearly always inside it. */
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0) {
        *st = line_find(v.iov_base, v.iov_len, max, line_len, consumed);
        if (*st == LINE_OK)
            return v.iov_base;
        if (*st == LINE_TOO_LONG || v.iov_len == have)
            return NULL;
    }
    size_t want = have < max + 2 ? have : max + 2;
    char *p = (char *)evbuffer_pullup(in, (ssize_t)want);
    if (!p) {
        *st = LINE_NEED_MORE;
        return NULL;
    }
    *st = line_find(p, want, max, line_len, consumed);
    if (*st == LINE_NEED_MORE && want < have)
        *st = LINE_TOO_LONG;
    return *st == LINE_OK ? p : NULL;
}

int line_split(char *line, size_t len, char **tok, int max)
{
    int n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i >= len)
            break;
        if (n == max)
            return -1;
        tok[n++] = &line[i];
        while (i < len && line[i] != ' ' && line[i] != '\t')
            i++;
        if (i < len)
            line[i++] = '\0';
    }
    line[len] = '\0';
    return n;
}

size_t line_copy_at(struct evbuffer *b, size_t off, char *dst, size_t cap)
{
    struct evbuffer_ptr at;
    struct evbuffer_iovec v[4];
    if (evbuffer_ptr_set(b, &at, off, EVBUFFER_PTR_SET) < 0)
        return 0;
    int n = evbuffer_peek(b, (ev_ssize_t)cap, &at, v, 4);
    size_t got = 0;
    for (int i = 0; i < n && i < 4 && got < cap; i++) {
        size_t k = v[i].iov_len < cap - got ? v[i].iov_len : cap - got;
        memcpy(dst + got, v[i].iov_base, k);
        got += k;
    }
    return got;
}
