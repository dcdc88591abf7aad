/* plugins/palimg.c: Perlbal's Palimg plugin — GIF and PNG images under
 * <docroot>/palimg/ served with their palette changed by the URL:
 *
 *   /palimg/logo.gif/pg01aaaaaa99cccccc   gradient: entries 0x01..0x99 from
 *                                         aaaaaa to cccccc
 *   /palimg/logo.gif/pt1c1c1c22dba1       tint towards 1c1c1c (dark 22dba1;
 *                                         optional, default 000000)
 *   /palimg/logo.gif/p0123456fffffff      replace entries: index (one hex
 *                                         digit) + colour, up to six
 *
 * As Perlbal's: only the first 2048 bytes of the file are looked at (a
 * GIF's global colour table, a PNG's PLTE chunk, whose CRC is recomputed);
 * a bad spec, or an image whose palette is not there, is a 404; the rest
 * of the file follows unchanged (sendfile), the response is the file's
 * usual 200 with its length. Files are opened beneath the docroot as httpd
 * opens them, on the disk worker pool. Other extensions are served as
 * they are. Range and If-Modified-Since are not honoured on these URLs. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/http.h"
#include "common/httpd.h"
#include "common/loop.h"
#include "common/work.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

#define PAL_PREFIX 2048

struct pal_spec {
    bool set[256];
    uint8_t rgb[256][3];
    bool tint;
    uint8_t tint_c[3], tint_dark[3];
    bool any;
};

struct pal_job {
    struct pb_client *cl; /* NULL once the client went away */
    struct core_loop *loop;
    char *docroot, *path, ext[16];
    struct pal_spec spec;
    int err; /* errno of open/stat/read */
    int fd;
    struct stat st;
    unsigned char head[PAL_PREFIX];
    size_t head_len;
};

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

/* Perlbal's spec grammar (lower-case hex only). 0, or 404. */
static int parse_spec(const char *s, size_t n, struct pal_spec *p)
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
static void alter(const struct pal_spec *p, unsigned char *table, size_t entries)
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

static bool gif_palette(const struct pal_spec *p, unsigned char *d, size_t len)
{
    if (len < 11)
        return false;
    size_t gct = (size_t)2 << (d[10] & 7);
    if (len < 13 + 3 * gct)
        return false;
    alter(p, d + 13, gct);
    return true;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static bool png_palette(const struct pal_spec *p, unsigned char *d, size_t len)
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
            alter(p, body, clen / 3);
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

/* ^/palimg/(.+)\.(\w+)(.*)$ with the rest "/p<spec>": the file's path
 * (allocated), its extension and the spec. */
static bool split_uri(const char *t, size_t len, char **path, char *ext, size_t extcap, const char **spec,
                      size_t *speclen)
{
    static const char pre[] = "/palimg/";
    if (len <= sizeof pre - 1 || memcmp(t, pre, sizeof pre - 1))
        return false;
    /* the last '.' followed by a word character (the greedy (.+)) */
    for (size_t i = len; i-- > sizeof pre;) {
        if (t[i] != '.' || i + 1 >= len || !(isalnum((unsigned char)t[i + 1]) || t[i + 1] == '_'))
            continue;
        size_t e = i + 1;
        while (e < len && (isalnum((unsigned char)t[e]) || t[e] == '_'))
            e++;
        if (e - i - 1 >= extcap || e + 2 >= len || t[e] != '/' || t[e + 1] != 'p')
            return false;
        memcpy(ext, t + i + 1, e - i - 1);
        ext[e - i - 1] = 0;
        *spec = t + e + 2;
        *speclen = len - e - 2;
        *path = strndup(t, e);
        return *path != NULL;
    }
    return false;
}

static void pal_free(struct pal_job *j)
{
    if (j->fd >= 0)
        close(j->fd);
    free(j->docroot);
    free(j->path);
    free(j);
}

static void pal_cancel(void *job) { ((struct pal_job *)job)->cl = NULL; }

/* on a disk worker: open beneath the docroot, stat, read the prefix */
static void pal_read(void *arg)
{
    struct pal_job *j = arg;
    int root = open(j->docroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        j->err = errno;
        return;
    }
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    j->fd = (int)syscall(SYS_openat2, root, j->path + 1, &how, sizeof how);
    close(root);
    if (j->fd < 0 || fstat(j->fd, &j->st) < 0 || !S_ISREG(j->st.st_mode)) {
        j->err = j->fd < 0 ? errno : EISDIR;
        return;
    }
    ssize_t n = pread(j->fd, j->head, sizeof j->head, 0);
    if (n < 0)
        j->err = errno;
    else
        j->head_len = (size_t)n;
}

static void pal_done(void *arg)
{
    struct pal_job *j = arg;
    struct pb_client *cl = j->cl;
    if (!cl) {
        pal_free(j);
        return;
    }
    cl->async_job = NULL;
    cl->async_cancel = NULL;
    conn_resume_read(cl->c);
    if (j->err) {
        pb_client_error(cl, j->err == ENOENT || j->err == ENOTDIR ? 404 : j->err == EXDEV ? 403 : 500, NULL);
        pal_free(j);
        return;
    }
    bool ok = true;
    if (j->spec.any && !strcasecmp(j->ext, "gif"))
        ok = gif_palette(&j->spec, j->head, j->head_len);
    else if (j->spec.any && !strcasecmp(j->ext, "png"))
        ok = png_palette(&j->spec, j->head, j->head_len);
    if (!ok) {
        pb_client_error(cl, 404, NULL);
        pal_free(j);
        return;
    }
    bool keep = pb_client_can_persist(cl) && (cl->h->body == HTTP_BODY_NONE || cl->h->body_done);
    char extra[96], date[40];
    http_date_format(j->st.st_mtime, date);
    snprintf(extra, sizeof extra, "Last-Modified: %s\r\n", date);
    pb_client_response_head(cl, 200, httpd_mime_type(j->path), (int64_t)j->st.st_size, keep, extra);
    if (cl->h->method != HTTP_M_HEAD) {
        evbuffer_add(httpd_tx(), j->head, j->head_len);
        int64_t rest = (int64_t)j->st.st_size - (int64_t)j->head_len;
        if (rest > 0 && httpd_tx_add_file(cl->h->tls, j->fd, (int64_t)j->head_len, rest) == 0)
            j->fd = -1; /* the output owns it now */
        else if (rest > 0) {
            evbuffer_drain(httpd_tx(), evbuffer_get_length(httpd_tx()));
            pb_client_error(cl, 500, "Cannot send the file");
            pal_free(j);
            return;
        }
    }
    pb_client_done(cl, keep);
    pal_free(j);
}

static enum pb_hook_result pal_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    if (svc->role != PB_ROLE_WEB_SERVER || !svc->docroot || (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD))
        return PB_HOOK_CONTINUE;
    struct pal_job *j = calloc(1, sizeof *j);
    if (!j)
        return PB_HOOK_CONTINUE;
    j->fd = -1;
    const char *spec;
    size_t sl;
    if (!split_uri(req->target, req->target_len, &j->path, j->ext, sizeof j->ext, &spec, &sl)) {
        pal_free(j);
        return PB_HOOK_CONTINUE; /* not a palimg URL: served as usual */
    }
    pb_client_set_responding(cl);
    if (parse_spec(spec, sl, &j->spec) || memmem(j->path, strlen(j->path), "/../", 4) ||
        !(j->docroot = strdup(svc->docroot))) {
        pal_free(j);
        pb_client_error(cl, 404, NULL);
        return PB_HOOK_HANDLED;
    }
    j->cl = cl;
    j->loop = cl->c->loop;
    pb_client_request_timeouts(cl, 0);
    conn_pause_read(cl->c);
    cl->async_job = j;
    cl->async_cancel = pal_cancel;
    if (pb_aio_on && pb_disk_pool && work_submit(pb_disk_pool, j->loop, pal_read, pal_done, j) == 0)
        return PB_HOOK_HANDLED; /* a disk thread reads the file's start */
    pal_read(j);                /* aio_mode none: on the loop, as Perlbal's */
    if (work_post(j->loop, pal_done, j) < 0) {
        cl->async_job = NULL;
        cl->async_cancel = NULL;
        pal_done(j);
    }
    return PB_HOOK_HANDLED;
}

const struct pb_plugin pb_plugin_palimg = { .name = "palimg", .start_request = pal_start };
