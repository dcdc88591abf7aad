/* proto_upload: see proto_upload.h. Every loop is bounded by the input's
 * length; nothing here reads past it or allocates. */
#include "perlbal/proto_upload.h"

#include <ctype.h>
#include <string.h>

static bool is_word(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* digits up to ':' or the end: at least one, at most 18 (fits in int64) */
static const char *number(const char *p, const char *e, uint64_t *v)
{
    uint64_t n = 0;
    int d = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        if (++d > 18)
            return NULL;
        n = n * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (!d)
        return NULL;
    *v = n;
    return p;
}

int pb_upload_report_parse(const char *buf, size_t len, struct pb_upload_report *out)
{
    const char *p = buf, *e = buf + len;
    if (len < 7 || memcmp(p, "UPLOAD:", 7))
        return -1;
    p += 7;
    size_t n = 0;
    while (p + n < e && is_word(p[n]))
        n++;
    if (n < 5 || n > PB_UPLOAD_SESS_MAX || p + n >= e || p[n] != ':')
        return -1;
    memcpy(out->sess, p, n);
    out->sess[n] = 0;
    p += n + 1;
    uint64_t *f[4] = { &out->done, &out->total, &out->start, &out->now };
    for (int i = 0; i < 4; i++) {
        if (!(p = number(p, e, f[i])))
            return -1;
        if (i < 3) {
            if (p >= e || *p != ':')
                return -1;
            p++;
        }
    }
    return p == e ? 0 : -1;
}

bool pb_upload_session_of(const char *t, size_t len, char *out)
{
    static const char key[] = "client_up_sess=";
    const size_t kl = sizeof key - 1;
    for (size_t i = 0; i + 1 + kl < len; i++) {
        if ((t[i] != '?' && t[i] != '&') || memcmp(t + i + 1, key, kl))
            continue;
        size_t s = i + 1 + kl, n = 0;
        while (s + n < len && is_word(t[s + n]) && n <= PB_UPLOAD_SESS_MAX)
            n++;
        if (n >= 5 && n <= PB_UPLOAD_SESS_MAX) {
            memcpy(out, t + s, n);
            out[n] = 0;
            return true;
        }
    }
    return false;
}

uint64_t pb_flv_start_of(const char *t, size_t len)
{
    const char *q = memchr(t, '?', len);
    size_t pl = q ? (size_t)(q - t) : len;
    if (!q || pl < 4 || memcmp(t + pl - 4, ".flv", 4))
        return 0;
    const char *p = q + 1, *end = t + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        if (pe - p > 6 && !memcmp(p, "start=", 6)) {
            uint64_t v = 0;
            const char *d = number(p + 6, pe, &v);
            return d == pe ? v : 0;
        }
        p = pe + 1;
    }
    return 0;
}

long long pb_uri_version(const char *t, size_t len)
{
    for (size_t i = 0; i + 2 < len; i++) {
        if (t[i] != 'v' || t[i + 1] != '=' || (i > 0 && is_word(t[i - 1])))
            continue;
        uint64_t v = 0;
        const char *d = number(t + i + 2, t + len, &v);
        if (d && (d == t + len || !is_word(*d)))
            return (long long)v;
    }
    return 0;
}
