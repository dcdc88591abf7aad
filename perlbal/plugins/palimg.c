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
 * As Perlbal's: the URL's "/p<spec>" is cut off and the image is served by
 * the web_server as any file (its 200, Last-Modified, If-Modified-Since
 * 304, Range 206/416, HEAD); for a GET the first 2048 bytes pass through
 * the palette change on the disk worker (common/httpd's prefix_fn: a GIF's
 * global colour table, a PNG's PLTE chunk, whose CRC is recomputed) and the
 * rest follows by sendfile. A bad spec, or an image whose palette is not
 * within those bytes, is a 404. Other extensions are served as they are. A
 * Range is cut from the changed image. */
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

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/http.h"
#include "common/httpd.h"
#include "common/loop.h"
#include "common/work.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/proto_upload.h"

/* ^/palimg/(.+)\.(\w+)(.*)$ with the rest "/p<spec>": where the file's
 * path ends (the "/p" starts), its extension and the spec. */
static bool split_uri(const char *t, size_t len, size_t *path_len, char *ext, size_t extcap, const char **spec,
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
        *path_len = e;
        return true;
    }
    return false;
}

/* httpd's prefix_fn, on the disk worker: ctx is "<ext>\0<spec>\0" (an
 * empty ext: the spec did not fit, so it is bad). */
static int pal_prefix(const char *ctx, const char *path, unsigned char *buf, size_t len)
{
    (void)path;
    const char *spec = ctx + strlen(ctx) + 1;
    struct pb_pal_spec ps;
    if (!ctx[0] || pb_pal_parse_spec(spec, strlen(spec), &ps))
        return 404;
    bool ok = true;
    if (ps.any && !strcasecmp(ctx, "gif"))
        ok = pb_pal_gif(&ps, buf, len);
    else if (ps.any && !strcasecmp(ctx, "png"))
        ok = pb_pal_png(&ps, buf, len);
    return ok ? 0 : 404;
}

/* A palimg URL: the request gets the filter (the spec copied with it). */
static enum pb_hook_result pal_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    if (svc->role != PB_ROLE_WEB_SERVER || (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD))
        return PB_HOOK_CONTINUE;
    const char *q = memchr(req->target, '?', req->target_len);
    size_t tl = q ? (size_t)(q - req->target) : req->target_len;
    char ext[16];
    const char *spec;
    size_t pl, sl;
    if (!split_uri(req->target, tl, &pl, ext, sizeof ext, &spec, &sl))
        return PB_HOOK_CONTINUE;
    struct httpd_conn *h = cl->h;
    size_t el = strlen(ext);
    memset(h->prefix_ctx, 0, sizeof h->prefix_ctx);
    if (el + 1 + sl + 1 <= sizeof h->prefix_ctx) {
        memcpy(h->prefix_ctx, ext, el);
        memcpy(h->prefix_ctx + el + 1, spec, sl);
    } /* else: too long to be a spec; the empty ext says so */
    h->prefix_fn = pal_prefix;
    return PB_HOOK_CONTINUE; /* served by the web_server, the spec cut off (pal_path) */
}

/* The file's path without "/p<spec>" (Perlbal's start_serve_request). */
static void pal_path(struct pb_service *svc, char *path, size_t cap)
{
    (void)svc;
    (void)cap;
    char ext[16];
    const char *spec;
    size_t pl, sl;
    if (split_uri(path, strlen(path), &pl, ext, sizeof ext, &spec, &sl))
        path[pl] = 0;
}

const struct pb_plugin pb_plugin_palimg = { .name = "palimg", .start_request = pal_start, .serve_path = pal_path };
