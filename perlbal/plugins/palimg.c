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

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/http.h"
#include "common/httpd.h"
#include "common/loop.h"
#include "common/work.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/proto_upload.h"

#define PAL_PREFIX 2048

struct pal_job {
    struct pb_client *cl; /* NULL once the client went away */
    struct core_loop *loop;
    char *docroot, *path, ext[16];
    struct pb_pal_spec spec;
    int err; /* errno of open/stat/read */
    int fd;
    struct stat st;
    unsigned char head[PAL_PREFIX];
    size_t head_len;
};

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
        ok = pb_pal_gif(&j->spec, j->head, j->head_len);
    else if (j->spec.any && !strcasecmp(j->ext, "png"))
        ok = pb_pal_png(&j->spec, j->head, j->head_len);
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
    if (pb_pal_parse_spec(spec, sl, &j->spec) || memmem(j->path, strlen(j->path), "/../", 4) ||
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
