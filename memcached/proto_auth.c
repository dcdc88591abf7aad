/* proto_auth: the pure parser of memcached's text-protocol login (-Y):
 * "set <key> <flags> <exptime> <n>\r\n<user> <password>\r\n" (see auth.h).
 * Looks at (buf, len) only; fuzzed by tests/fuzz/fuzz_mc_auth.c. */
#include "memcached/auth.h"

#include <stdint.h>
#include <string.h>

/* Space-separated tokens of p[0..n), empty ones skipped (memcached's
 * tokenizer); at most max. */
static int tokens(const char *p, size_t n, const char **tok, size_t *tlen, int max)
{
    int k = 0;
    size_t i = 0;
    while (i < n && k < max) {
        while (i < n && p[i] == ' ')
            i++;
        if (i >= n)
            break;
        size_t start = i;
        while (i < n && p[i] != ' ')
            i++;
        tok[k] = p + start;
        tlen[k] = i - start;
        k++;
    }
    return k;
}

/* A decimal as memcached's strtoul takes it: digits, then the end or
 * white space (such as the line's \r). At most 2^32-1. */
static bool parse_size(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        if (v > (UINT32_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (i == 0 || (i < n && p[i] != '\r' && p[i] != ' ' && p[i] != '\t'))
        return false;
    *out = v;
    return true;
}

enum mc_auth_kind mc_auth_ascii_parse(const char *p, size_t len, struct mc_auth_req *r)
{
    memset(r, 0, sizeof *r);
    if (len < 2)
        return r->kind = MC_AUTH_NEED_MORE;
    size_t look = len < MC_AUTH_LINE_MAX + 1 ? len : MC_AUTH_LINE_MAX + 1;
    const char *lf = memchr(p, '\n', look);
    if (!lf)
        return r->kind = len > MC_AUTH_LINE_MAX ? MC_AUTH_JUNK : MC_AUTH_NEED_MORE;
    size_t line_len = (size_t)(lf - p);
    const char *tok[6];
    size_t tl[6];
    int nt = tokens(p, line_len, tok, tl, 6);
    uint64_t size = 0;
    if (nt < 5 || tl[0] != 3 || memcmp(tok[0], "set", 3) != 0 || !parse_size(tok[4], tl[4], &size)) {
        r->consumed = line_len + 1;
        return r->kind = MC_AUTH_NOT_LOGIN;
    }
    if (size + 2 > MC_AUTH_DATA_MAX)
        return r->kind = MC_AUTH_TOO_LONG;
    size_t need = line_len + 1 + (size_t)size + 2;
    if (len < need)
        return r->kind = MC_AUTH_NEED_MORE;
    r->consumed = need;
    const char *data = p + line_len + 1;
    if (data[size] != '\r' || data[size + 1] != '\n')
        return r->kind = MC_AUTH_BAD_END;
    if (tokens(data, (size_t)size, tok, tl, 2) < 2)
        return r->kind = MC_AUTH_BAD_FORMAT;
    r->user = tok[0];
    r->nuser = tl[0];
    r->pass = tok[1];
    r->npass = tl[1];
    return r->kind = MC_AUTH_PAIR;
}
