/* plugins/lazycdn.c: Perlbal's LazyCDN plugin — a web_server that sends
 * what it does not have (or has only in an older version) to another
 * service, e.g. a reverse_proxy to the origin:
 *
 *   LOAD LazyCDN
 *   CREATE SERVICE cdn
 *     SET role = web_server
 *     SET docroot = /var/cache/cdn
 *     SET plugins = LazyCDN
 *     SET fallback_service = origin            (a reverse_proxy or web_server)
 *     SET fallback_udp_ping_addr = 10.0.0.5:9999   (optional: the URI in a datagram)
 *
 * As Perlbal's: a GET/HEAD for a file missing under the docroot goes to
 * fallback_service; so does one whose URI carries `v=N` with N newer than
 * the file's mtime, when the answer would be a plain 200 (not a 304, a 206
 * or a 416). Each fallback sends the request URI to fallback_udp_ping_addr
 * when set. The stat runs on the disk worker pool (SERVER aio_mode), the
 * request waiting with the client's reading stopped. Concatenated GETs
 * ("/dir/??a,b,c" with enable_concatenate_get) as Perlbal's concat hooks:
 * one of the files missing goes to fallback_service; all there, a `v=N`
 * newer than the newest of them does too, unless the answer is a 304; a
 * request the web_server refuses anyway (no trailing slash before "??",
 * too many or bogus names, the base not a directory) is left to it. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/http.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/work.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/proto_upload.h"

struct lazy_job {
    struct pb_client *cl; /* NULL once the client went away */
    struct core_loop *loop;
    char *head; /* a copy of the request head */
    size_t head_len;
    char *docroot, *path;
    /* the stat's answer */
    int err; /* 0: found; else errno */
    struct stat st;
    /* a concatenated GET: path is the base directory, names the files
     * beneath it, NUL-separated */
    bool concat;
    int n;
    char *names;
    bool base_dir, missing; /* out */
    time_t newest;          /* out: the newest file's mtime */
};

static void lazy_free(struct lazy_job *j)
{
    free(j->head);
    free(j->docroot);
    free(j->path);
    free(j->names);
    free(j);
}

/* The stat, beneath the docroot as httpd resolves paths (no "..", no
 * symlink out). Runs on a disk worker (or the loop without one). */
static int stat_beneath(int root, const char *rel, struct stat *st)
{
    while (*rel == '/')
        rel++;
    int fd;
    if (!*rel) {
        fd = dup(root);
    } else {
        struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
        fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
    }
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        if (fstat(fd, st) < 0)
            err = errno;
        close(fd);
    }
    return err;
}

static void lazy_stat(void *arg)
{
    struct lazy_job *j = arg;
    int root = open(j->docroot, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        j->err = errno;
        return;
    }
    j->err = stat_beneath(root, j->path, &j->st);
    if (j->concat) {
        j->base_dir = !j->err && S_ISDIR(j->st.st_mode);
        const char *name = j->names;
        for (int i = 0; j->base_dir && i < j->n; i++, name += strlen(name) + 1) {
            struct stat st;
            if (stat_beneath(root, name, &st) || !S_ISREG(st.st_mode)) {
                j->missing = true; /* concat_get_poststat_file_missing */
                break;
            }
            if (st.st_mtime > j->newest)
                j->newest = st.st_mtime;
        }
    }
    close(root);
}

/* Perlbal's 304 for a concatenated GET: If-Modified-Since is the newest
 * file's date string exactly (an IE "; length=N" cut off). */
static bool concat_not_modified(struct http_msg *m, time_t newest)
{
    size_t l;
    const char *ims = http_header_value(m, "if-modified-since", &l);
    if (!ims)
        return false;
    const char *semi = memchr(ims, ';', l);
    if (semi)
        l = (size_t)(semi - ims);
    while (l && ims[l - 1] == ' ')
        l--;
    char date[64];
    http_date_format(newest, date);
    return strlen(date) == l && !strncmp(date, ims, l);
}

/* "/base/??a,b?x": the base directory and the files' clean paths, as the
 * web_server reads them (common/httpd's concat); false when the
 * web_server would refuse it anyway (it answers then). */
static bool concat_names(struct lazy_job *j, const char *t, size_t tl, const char *qq)
{
    if (qq == t || qq[-1] != '/')
        return false;
    char base[PATH_MAX];
    bool tr;
    if (http_path_normalize(t, (size_t)(qq - t), base, sizeof base, &tr) < 0 || !(j->path = strdup(base)))
        return false;
    const char *list = qq + 2, *end = t + tl;
    const char *q = memchr(list, '?', (size_t)(end - list));
    if (q)
        end = q;
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return false;
    bool ok = true;
    for (const char *p = list; p < end && ok;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        char raw[PATH_MAX], clean[PATH_MAX];
        int rl = snprintf(raw, sizeof raw, "%s/%.*s", base, (int)(e - p), p);
        if (j->n == 100 || (e - p >= 3 && !memcmp(p, "../", 3)) || memmem(p, (size_t)(e - p), "/../", 4) ||
            rl >= (int)sizeof raw || http_path_normalize(raw, (size_t)rl, clean, sizeof clean, &tr) < 0)
            ok = false;
        else
            evbuffer_add(b, clean, strlen(clean) + 1);
        j->n++;
        p = comma ? comma + 1 : end;
    }
    size_t bl = evbuffer_get_length(b);
    if (ok && j->n > 0 && (j->names = malloc(bl)))
        evbuffer_remove(b, j->names, bl);
    else
        ok = false;
    evbuffer_free(b);
    j->concat = ok;
    return ok;
}

static void lazy_cancel(void *job) { ((struct lazy_job *)job)->cl = NULL; }

/* Would the file's answer be a plain 200 (where Perlbal runs its
 * pre-send hook)? Not for a matching If-Modified-Since or a Range that
 * gives 206/416. */
static bool plain_200(struct http_msg *m, const struct stat *st)
{
    size_t l;
    const char *ims = http_header_value(m, "if-modified-since", &l);
    if (ims) {
        char date[64];
        http_date_format(st->st_mtime, date);
        if (strlen(date) == l && !strncmp(date, ims, l))
            return false;
    }
    const char *rg = http_header_value(m, "range", &l);
    if (rg && S_ISREG(st->st_mode)) {
        uint64_t a, b;
        if (http_parse_range(rg, l, (uint64_t)st->st_size, &a, &b) != HTTP_RANGE_IGNORE)
            return false;
    }
    return true;
}

static void lazy_ping(struct pb_service *svc, const char *uri, size_t len)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || !st->lazy_ping_set)
        return;
    static __thread int fd = -1;
    if (fd < 0)
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        (void)sendto(fd, uri, len, MSG_DONTWAIT, (struct sockaddr *)&st->lazy_ping, sizeof(struct sockaddr_in));
}

static void lazy_done(void *arg)
{
    struct lazy_job *j = arg;
    struct pb_client *cl = j->cl;
    if (!cl) {
        lazy_free(j);
        return;
    }
    cl->async_job = NULL;
    cl->async_cancel = NULL;
    conn_resume_read(cl->c);
    struct pb_service *svc = cl->svc;
    struct http_msg *m = malloc(sizeof *m);
    struct http_limits lim = { 0 };
    if (!m || http_parse_request(j->head, j->head_len, &lim, m) <= 0) {
        free(m);
        pb_client_error(cl, 500, "Cannot re-read the request");
        lazy_free(j);
        return;
    }
    bool fallback = false;
    if (j->concat) {
        if (j->base_dir && j->missing) {
            fallback = true;
        } else if (j->base_dir && !concat_not_modified(m, j->newest)) {
            long long v = pb_uri_version(m->target, m->target_len);
            fallback = v && v > (long long)j->newest;
        }
    } else if (j->err == ENOENT || j->err == ENOTDIR) {
        fallback = true; /* static_get_poststat_file_missing */
    } else if (!j->err) {
        long long v = pb_uri_version(m->target, m->target_len);
        fallback = v && v > (long long)j->st.st_mtime && plain_200(m, &j->st); /* ..._pre_send */
    }
    struct plug_state *st = pb_plugin_state(svc);
    char name[64] = "";
    if (st) {
        pthread_mutex_lock(&pb_plugin_lock);
        snprintf(name, sizeof name, "%s", st->lazy_fallback);
        pthread_mutex_unlock(&pb_plugin_lock);
    }
    pthread_mutex_lock(&pb_lock);
    struct pb_service *t = fallback && name[0] ? pb_service_find(name) : NULL;
    pthread_mutex_unlock(&pb_lock);
    if (t && (t->role == PB_ROLE_REVERSE_PROXY || t->role == PB_ROLE_WEB_SERVER) && t != svc) {
        lazy_ping(svc, m->target, m->target_len);
        pb_dispatch_service(cl, t, m);
    } else {
        pb_web_request(cl, m); /* served here (or httpd's own error) */
    }
    free(m);
    lazy_free(j);
}

static enum pb_hook_result lazy_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || svc->role != PB_ROLE_WEB_SERVER || (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD) ||
        !svc->docroot)
        return PB_HOOK_CONTINUE;
    const char *qq = memmem(req->target, req->target_len, "??", 2);
    if (qq && !svc->enable_concatenate_get)
        return PB_HOOK_CONTINUE; /* the web_server's 403 */
    pthread_mutex_lock(&pb_plugin_lock);
    bool on = st->lazy_fallback[0] != 0;
    pthread_mutex_unlock(&pb_plugin_lock);
    if (!on)
        return PB_HOOK_CONTINUE;
    struct lazy_job *j = calloc(1, sizeof *j);
    const char *q = memchr(req->target, '?', req->target_len);
    size_t pl = q ? (size_t)(q - req->target) : req->target_len;
    if (!j || !(j->head = malloc(req->head_len)) || !(j->docroot = strdup(svc->docroot)) ||
        (qq ? !concat_names(j, req->target, req->target_len, qq) : !(j->path = strndup(req->target, pl)))) {
        if (j)
            lazy_free(j);
        return PB_HOOK_CONTINUE; /* served as usual */
    }
    if (evbuffer_copyout(conn_in(cl->c), j->head, req->head_len) != (ev_ssize_t)req->head_len) {
        lazy_free(j);
        return PB_HOOK_CONTINUE;
    }
    j->head_len = req->head_len;
    j->cl = cl;
    j->loop = cl->c->loop;
    /* the head is consumed by the caller; the request waits for the stat */
    pb_client_set_responding(cl);
    pb_client_request_timeouts(cl, 0);
    conn_pause_read(cl->c);
    if (pb_aio_on && pb_disk_pool) {
        cl->async_job = j;
        cl->async_cancel = lazy_cancel;
        if (work_submit(pb_disk_pool, j->loop, lazy_stat, lazy_done, j) == 0) /* a disk thread stats */
            return PB_HOOK_HANDLED;
        cl->async_job = NULL;
        cl->async_cancel = NULL;
    }
    lazy_stat(j); /* aio_mode none: on the loop, as Perlbal's */
    /* answer after the caller consumed the head */
    cl->async_job = j;
    cl->async_cancel = lazy_cancel;
    if (work_post(j->loop, lazy_done, j) < 0) {
        cl->async_job = NULL;
        lazy_done(j);
    }
    return PB_HOOK_HANDLED;
}

static int lazy_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (svc->role != PB_ROLE_WEB_SERVER) {
        snprintf(err, errlen, "Can't set %s on a service of role '%s'", key, pb_role_name(svc->role));
        return -1;
    }
    if (!strcmp(key, "fallback_service")) {
        pthread_mutex_lock(&pb_plugin_lock);
        snprintf(st->lazy_fallback, sizeof st->lazy_fallback, "%s", val);
        pthread_mutex_unlock(&pb_plugin_lock);
        return 0;
    }
    if (!strcmp(key, "fallback_udp_ping_addr")) {
        unsigned a, b, c, d, port;
        char tail;
        if (sscanf(val, "%u.%u.%u.%u:%u%c", &a, &b, &c, &d, &port, &tail) != 5 || a > 255 || b > 255 || c > 255 ||
            d > 255 || port > 65535) {
            snprintf(err, errlen, "Expecting IP:port of form a.b.c.d:port.");
            return -1;
        }
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        sin.sin_addr.s_addr = htonl(a << 24 | b << 16 | c << 8 | d);
        pthread_mutex_lock(&pb_plugin_lock);
        memcpy(&st->lazy_ping, &sin, sizeof sin);
        st->lazy_ping_set = true;
        pthread_mutex_unlock(&pb_plugin_lock);
        return 0;
    }
    snprintf(err, errlen, "Unknown LazyCDN parameter '%s'", key);
    return -1;
}

static const char *const lazy_tunables[] = { "fallback_service", "fallback_udp_ping_addr", NULL };
const struct pb_plugin pb_plugin_lazycdn = {
    .name = "lazycdn", .start_request = lazy_start, .set_param = lazy_set, .tunables = lazy_tunables
};
