/* proto_storage: pure checks and parsers of the storage node (mogstored):
 * which request paths it accepts, the side-channel command line, and the
 * usage file the tracker's monitor reads. No sockets, no files. */
#include "mogilefs/mogilefs.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ^(/[\w\-.]+)*\/[\w\-.]+$ with no ".." anywhere, as Perlbal's PUT check. */
bool mog_storage_path_ok(const char *path, size_t len)
{
    if (len < 2 || path[0] != '/' || path[len - 1] == '/')
        return false;
    size_t seg = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '/') {
            if (i > 0 && seg == 0)
                return false; /* "//" */
            seg = 0;
            continue;
        }
        if (!(isalnum(c) || c == '_' || c == '-' || c == '.'))
            return false;
        if (c == '.' && i + 1 < len && path[i + 1] == '.')
            return false;
        seg++;
    }
    return true;
}

enum mog_side_cmd mog_side_parse(char *line, size_t len, char **uri, size_t *uri_len)
{
    *uri = NULL;
    *uri_len = 0;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    size_t i = 0;
    while (i < len && line[i] != ' ')
        i++;
    size_t wl = i;
    while (i < len && line[i] == ' ')
        i++;
    size_t us = i;
    while (i < len && line[i] != ' ')
        i++;
    enum mog_side_cmd kind = MOG_SIDE_OTHER;
    if (wl == 4 && !strncmp(line, "size", 4))
        kind = MOG_SIDE_SIZE;
    else if (wl == 3 && !strncmp(line, "MD5", 3))
        kind = MOG_SIDE_MD5;
    else if (wl == 5 && !strncmp(line, "SHA-1", 5))
        kind = MOG_SIDE_SHA1;
    else if (wl == 5 && !strncmp(line, "watch", 5))
        return MOG_SIDE_WATCH;
    else if (wl == 0)
        return MOG_SIDE_BAD;
    if (kind == MOG_SIDE_OTHER)
        return kind;
    if (i == us)
        return MOG_SIDE_BAD;
    *uri = line + us;
    *uri_len = i - us;
    for (size_t k = us; k + 1 < i; k++)
        if (line[k] == '.' && line[k + 1] == '.')
            return MOG_SIDE_DOTDOT;
    return kind;
}

int mog_usage_parse(const char *buf, size_t len, int64_t *total_kib, int64_t *used_kib)
{
    bool have_total = false, have_used = false;
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t kl = (size_t)(colon - p);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            if (v < le && isdigit((unsigned char)*v)) {
                long long x = 0;
                int digits = 0;
                while (v < le && isdigit((unsigned char)*v) && digits < 18) {
                    x = x * 10 + (*v - '0');
                    v++;
                    digits++;
                }
                if (kl == 5 && !strncmp(p, "total", 5)) {
                    *total_kib = x;
                    have_total = true;
                } else if (kl == 4 && !strncmp(p, "used", 4)) {
                    *used_kib = x;
                    have_used = true;
                }
            }
        }
        p = nl ? nl + 1 : end;
    }
    return have_total && have_used ? 0 : -1;
}

/* "bytes S-E/T", T also an asterisk (the Content-Range of a partial PUT, as
 * MogileFS::ClientHTTPFile sends it): 0 with *start <= *end, else -1.
 * Numbers are plain decimal below 2^62; T, when given, must exceed E. */
int mog_content_range_parse(const char *v, size_t len, uint64_t *start, uint64_t *end)
{
    const uint64_t big = (uint64_t)1 << 62;
    size_t i = 0;
    while (i < len && v[i] == ' ')
        i++;
    if (len - i < 6 || strncasecmp(v + i, "bytes", 5) || v[i + 5] != ' ')
        return -1;
    i += 6;
    while (i < len && v[i] == ' ')
        i++;
    uint64_t n[3] = { 0, 0, 0 };
    int which = 0;
    bool digits = false, star = false;
    for (; i < len; i++) {
        char c = v[i];
        if (c >= '0' && c <= '9' && !star) {
            n[which] = n[which] * 10 + (uint64_t)(c - '0');
            if (n[which] >= big)
                return -1;
            digits = true;
        } else if (c == '-' && which == 0 && digits) {
            which = 1;
            digits = false;
        } else if (c == '/' && which == 1 && digits) {
            which = 2;
            digits = false;
        } else if (c == '*' && which == 2 && !digits && !star) {
            star = true;
        } else if (c == ' ' || c == '\t') {
            break;
        } else {
            return -1;
        }
    }
    for (; i < len; i++)
        if (v[i] != ' ' && v[i] != '\t')
            return -1;
    if (which != 2 || (!digits && !star) || n[0] > n[1] || (!star && n[2] <= n[1]))
        return -1;
    *start = n[0];
    *end = n[1];
    return 0;
}
