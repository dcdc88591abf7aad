/* proto_upload: see proto_upload.h. Every loop is bounded by the input's
 * length; nothing here reads past it or allocates. */
#include "perlbal/proto_upload.h"

#include <ctype.h>
#include <string.h>
#include <zlib.h>

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

/* ---- Palimg ---- */

static int hexv(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

static bool hexes(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hexv(s[i]) < 0)
            return false;
    return true;
}

static int hex2(const char *s) { return hexv(s[0]) * 16 + hexv(s[1]); }

static void color(const char *s, uint8_t out[3])
{
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)hex2(s + 2 * c);
}

int pb_pal_parse_spec(const char *s, size_t n, struct pb_pal_spec *p)
{
    memset(p, 0, sizeof *p);
    if (n == 17 && s[0] == 'g' && hexes(s + 1, 16)) {
        int from = hex2(s + 1), to = hex2(s + 9);
        uint8_t fc[3], tc[3];
        color(s + 3, fc);
        color(s + 11, tc);
        if (from == to)
            return 404;
        if (to < from) {
            int t = from;
            from = to;
            to = t;
            uint8_t x[3];
            memcpy(x, fc, 3);
            memcpy(fc, tc, 3);
            memcpy(tc, x, 3);
        }
        for (int i = from; i <= to; i++) {
            p->set[i] = true;
            for (int c = 0; c < 3; c++) /* Perl's int(): toward zero, the sum is never negative */
                p->rgb[i][c] = (uint8_t)(int)(fc[c] + (double)(tc[c] - fc[c]) * (i - from) / (to - from));
        }
        p->any = true;
        return 0;
    }
    if ((n == 7 || n == 13) && s[0] == 't' && hexes(s + 1, n - 1)) {
        p->tint = p->any = true;
        color(s + 1, p->tint_c);
        if (n == 13)
            color(s + 7, p->tint_dark);
        return 0;
    }
    if (n > 42 || !hexes(s, n) || n % 7)
        return 404;
    for (size_t i = 0; i < n; i += 7) {
        int idx = hexv(s[i]);
        p->set[idx] = true;
        color(s + i + 1, p->rgb[idx]);
        p->any = true;
    }
    return 0;
}

/* common_alter: the colour table (n entries of 3 bytes) in place */
static void pal_alter(const struct pb_pal_spec *p, unsigned char *table, size_t entries)
{
    for (size_t i = 0; i < entries; i++)
        for (int c = 0; c < 3; c++) {
            if (p->tint) {
                int diff = p->tint_c[c] - p->tint_dark[c];
                table[i * 3 + c] = (unsigned char)(int)(p->tint_dark[c] + (double)diff * table[i * 3 + c] / 255);
            } else if (i < 256 && p->set[i]) {
                table[i * 3 + c] = p->rgb[i][c];
            }
        }
}

bool pb_pal_gif(const struct pb_pal_spec *p, unsigned char *d, size_t len)
{
    if (len < 11)
        return false;
    size_t gct = (size_t)2 << (d[10] & 7);
    if (len < 13 + 3 * gct)
        return false;
    pal_alter(p, d + 13, gct);
    return true;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

bool pb_pal_png(const struct pb_pal_spec *p, unsigned char *d, size_t len)
{
    static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (len < 8 || memcmp(d, sig, 8))
        return false;
    size_t at = 8;
    while (at + 8 <= len) {
        uint32_t clen = be32(d + at);
        const unsigned char *type = d + at + 4;
        if (clen > len || at + 8 + clen + 4 > len)
            return false; /* not within the first 2048 bytes */
        unsigned char *body = d + at + 8;
        if (!memcmp(type, "IHDR", 4)) {
            if (clen < 13 || body[9] != 3)
                return false; /* not a paletted image */
        } else if (!memcmp(type, "PLTE", 4)) {
            pal_alter(p, body, clen / 3);
            uint32_t crc = (uint32_t)crc32(0L, type, 4);
            crc = (uint32_t)crc32(crc, body, clen);
            unsigned char *cb = body + clen;
            cb[0] = (unsigned char)(crc >> 24);
            cb[1] = (unsigned char)(crc >> 16);
            cb[2] = (unsigned char)(crc >> 8);
            cb[3] = (unsigned char)crc;
            return true;
        }
        at += 8 + clen + 4;
    }
    return false;
}
