/* storage: mogstored's connections — HTTP GET/HEAD/PUT/DELETE of files
 * under the docroot, WebDAV MOVE and partial PUTs (what MogileFS::Client's
 * edit_file sends), the side channel (size, MD5, SHA-1, watch) — and the
 * threads they hand disk work to. mogstored.c owns the settings, the usage
 * files and start-up; tests/fuzz/fuzz_mog_storage_session.c drives these
 * connections directly.
 *
 * HTTP is common/httpd: mogstored's own part is the checks MogileFS makes
 * before a PUT/DELETE, "/", MKCOL, MOVE and Content-Range PUTs; whole-file
 * GET/HEAD/PUT/DELETE are httpd's file serving (GET/HEAD disk work on the
 * disk pool). MOVE's rename and a partial PUT's writes and fsync run on
 * the loop, as httpd's own PUT does today. The side channel is
 * common/conn lines; whole-file digests run on digest threads. */
#include "mogilefs/mogilefs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/conn.h"
#include "common/daemon.h"
#include "common/http.h"
#include "common/httpd.h"
#include "common/work.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

#include "mogilefs/storage.h"

struct mog_st_cfg mog_st_cfg;
struct mog_st_state mog_st;

/* ---- HTTP: common/httpd ---------------------------------------------------------------------- */
/* What is mogstored's own here: the checks MogileFS makes before a PUT or
 * DELETE (the path is a storage path, the devN folder exists, a body is
 * declared), the "/" answer `mogadm check` probes, MKCOL refused as
 * Perlbal refuses it, and counters. Everything else — heads, keep-alive,
 * bodies, GET/HEAD with sendfile and Range, PUT into a temporary file with
 * Content-MD5 checked, fsync'd and renamed before the 200, DELETE — is
 * common/httpd's file serving. */

static struct httpd_files st_files;
static struct work_pool *st_disk;
static const char st_server[] = "mogstored/" MOG_VERSION;

/* The devN folder of a storage path exists (a PUT never creates it:
 * MogileFS's min_put_directory = 1). */
static bool device_exists(const char *path, size_t len)
{
    const char *slash = memchr(path + 1, '/', len - 1);
    if (!slash)
        return false;
    char dir[4200];
    int n = snprintf(dir, sizeof dir, "%s%.*s", mog_st_cfg.docroot, (int)(slash - path), path);
    struct stat sb;
    return n > 0 && (size_t)n < sizeof dir && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* -vv: each request with the status chosen here; 0 = handed to httpd's
 * file serving, which picks the status (not known here). */
static __thread int st_status;
#define httpd_error(h, status, msg) (st_status = (status), httpd_error((h), (status), (msg)))
static void st_route(struct httpd_conn *h, struct http_msg *m);

/* mkdir -p of the folders above a docroot path (the docroot itself and
 * the devN folder exist). 0 or -1. */
static int make_parents(char *full, size_t root_len)
{
    for (char *p = full + root_len + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        int rc = mkdir(full, 0755);
        *p = '/';
        if (rc < 0 && errno != EEXIST)
            return -1;
    }
    return 0;
}

static void fsync_dir_of(const char *full)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", full);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---- the slow end of a MOVE or a partial PUT ----
 * What h->data holds during mogstored's own requests: a partial PUT being
 * written (ST_RPUT), or the fsyncs before the answer (ST_SYNC), which run
 * on the disk pool (HAND-OFF to common/work) so a slow disk does not hold
 * up the loop; the answer follows on the loop. */
enum st_data_kind { ST_RPUT = 1, ST_SYNC = 2 };

struct st_sync {
    enum st_data_kind kind;
    struct httpd_conn *h; /* NULL once the conn went away (then done frees) */
    int fd;               /* a file to fsync and close, or -1 */
    char dir[2][4200];    /* files whose folders to fsync ("" = none) */
    int status;           /* the answer when everything reached the disk */
    bool failed;
};

static void sync_work(void *arg)
{
    struct st_sync *sy = arg;
    if (sy->fd >= 0) {
        if (fsync(sy->fd) < 0)
            sy->failed = true;
        if (close(sy->fd) < 0)
            sy->failed = true;
        sy->fd = -1;
    }
    for (int i = 0; i < 2; i++)
        if (sy->dir[i][0])
            fsync_dir_of(sy->dir[i]);
}

static void sync_done(void *arg)
{
    struct st_sync *sy = arg;
    struct httpd_conn *h = sy->h;
    if (h) {
        h->data = NULL;
        /* Files changed behind httpd: its open-file cache must not serve
         * an old name or old bytes. */
        httpd_files_invalidate(&st_files);
        if (sy->failed) {
            stats_counter_add(&mog_st.errors, 1);
            h->keep_alive = false;
            httpd_error(h, 500, "Could not store the file");
        } else {
            bool keep = httpd_can_persist(h);
            httpd_response_head(h, sy->status, sy->status == 200 ? NULL : "text/plain", sy->status == 204 ? -1 : 0,
                                keep, NULL);
            httpd_done(h, keep);
        }
    }
    free(sy);
}

/* Hand sy to the disk pool (inline when there is none or it is full). */
static void sync_start(struct httpd_conn *h, struct st_sync *sy)
{
    sy->kind = ST_SYNC;
    sy->h = h;
    h->data = sy;
    if (st_disk && work_submit(st_disk, h->c->loop, sync_work, sync_done, sy) == 0)
        return;
    sync_work(sy);
    sync_done(sy);
}

static struct st_sync *sync_new(int fd, int status)
{
    struct st_sync *sy = calloc(1, sizeof *sy);
    if (sy) {
        sy->fd = fd;
        sy->status = status;
    }
    return sy;
}

/* WebDAV MOVE of one file to the Destination header's path (a full URL or
 * a path), as the DAV storage nodes MogileFS supports (nginx, lighttpd)
 * answer it; MogileFS::Client's edit_file renames a copy this way. Both
 * paths must be storage paths on existing devices; missing folders above
 * the destination are made; "Overwrite: F" refuses an existing target.
 * The rename runs on the loop (one metadata call, as httpd's PUT rename
 * did), the two folder fsyncs on the disk pool. 201 for a new name, 204
 * for a replaced one. */
static void st_move(struct httpd_conn *h, struct http_msg *m, const char *path, int pl)
{
    size_t dl = 0;
    const char *dest = http_header_value(m, "Destination", &dl);
    if (!dest || dl == 0 || dl >= 4096) {
        httpd_error(h, 400, "Destination required");
        return;
    }
    const char *dp = dest, *dend = dest + dl;
    const char *scheme = memmem(dest, dl, "://", 3);
    if (scheme) {
        dp = memchr(scheme + 3, '/', (size_t)(dend - (scheme + 3)));
        if (!dp) {
            httpd_error(h, 400, "Bad Destination");
            return;
        }
    }
    char dpath[4096];
    bool dslash = false;
    int dpl = http_path_normalize(dp, (size_t)(dend - dp), dpath, sizeof dpath, &dslash);
    if (dpl < 0 || dslash || !mog_storage_path_ok(dpath, (size_t)dpl) || !device_exists(dpath, (size_t)dpl)) {
        httpd_error(h, 400, "Bad Destination");
        return;
    }
    if (!device_exists(path, (size_t)pl)) {
        httpd_error(h, 404, "Base directory does not exist");
        return;
    }
    char src[4200], dst[4200];
    size_t rl = strlen(mog_st_cfg.docroot);
    snprintf(src, sizeof src, "%s%.*s", mog_st_cfg.docroot, pl, path);
    snprintf(dst, sizeof dst, "%s%.*s", mog_st_cfg.docroot, dpl, dpath);
    struct stat sb;
    if (stat(src, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        httpd_error(h, 404, "Not Found");
        return;
    }
    bool existed = stat(dst, &sb) == 0;
    size_t ol = 0;
    const char *ow = http_header_value(m, "Overwrite", &ol);
    if (existed && ow && ol == 1 && (*ow == 'F' || *ow == 'f')) {
        httpd_error(h, 412, "Destination exists");
        return;
    }
    if (make_parents(dst, rl) < 0 || rename(src, dst) < 0) {
        stats_counter_add(&mog_st.errors, 1);
        httpd_error(h, 500, "Rename failed");
        return;
    }
    httpd_files_invalidate(&st_files); /* the old name is gone now */
    struct st_sync *sy = sync_new(-1, existed ? 204 : 201);
    if (!sy) {
        httpd_error(h, 500, NULL);
        return;
    }
    snprintf(sy->dir[0], sizeof sy->dir[0], "%s", dst);
    snprintf(sy->dir[1], sizeof sy->dir[1], "%s", src);
    httpd_drop_head(h);
    httpd_request_timeouts(h, 0);
    sync_start(h, sy);
}

/* ---- partial PUT ----
 * "PUT" with "Content-Range: bytes S-E/..." (MogileFS::ClientHTTPFile's
 * writes after edit_file, as lighttpd takes them): the E-S+1 body bytes
 * are written at offset S of the file — made if missing, never truncated —
 * and fsync'd before the 200. The writes (to the page cache) run on the
 * loop; the fsync on the disk pool. */
struct st_rput {
    enum st_data_kind kind;
    int fd;
    uint64_t off;
    bool created;
    char full[4200];
};

static void rput_free(struct httpd_conn *h)
{
    struct st_rput *rp = h->data;
    if (!rp || rp->kind != ST_RPUT)
        return;
    h->data = NULL;
    if (rp->fd >= 0)
        close(rp->fd);
    free(rp);
}

static void rput_fail(struct httpd_conn *h, int status, const char *msg)
{
    rput_free(h);
    stats_counter_add(&mog_st.errors, 1);
    h->keep_alive = false;
    httpd_error(h, status, msg);
}

static void rput_pump(struct httpd_conn *h)
{
    struct st_rput *rp = h->data;
    if (!rp || rp->kind != ST_RPUT)
        return;
    struct evbuffer *chunk = httpd_tx2();
    for (;;) {
        enum httpd_body_result r = httpd_body_read(h, chunk, 256 * 1024);
        if (r == HTTPD_BODY_ERROR) {
            evbuffer_drain(chunk, evbuffer_get_length(chunk));
            rput_fail(h, 400, "Bad body");
            return;
        }
        size_t n = evbuffer_get_length(chunk);
        while (evbuffer_get_length(chunk) > 0) {
            struct evbuffer_iovec v;
            if (evbuffer_peek(chunk, -1, NULL, &v, 1) < 1)
                break;
            ssize_t w = pwrite(rp->fd, v.iov_base, v.iov_len, (off_t)rp->off);
            if (w <= 0) {
                evbuffer_drain(chunk, evbuffer_get_length(chunk));
                rput_fail(h, 500, "Write failed");
                return;
            }
            evbuffer_drain(chunk, (size_t)w);
            rp->off += (uint64_t)w;
        }
        if (r == HTTPD_BODY_DONE) {
            struct st_sync *sy = sync_new(rp->fd, 200);
            if (!sy) {
                rput_fail(h, 500, NULL);
                return;
            }
            rp->fd = -1; /* now the sync job's */
            if (rp->created)
                snprintf(sy->dir[0], sizeof sy->dir[0], "%s", rp->full);
            rput_free(h);
            sync_start(h, sy);
            return;
        }
        if (n == 0)
            return;
    }
}

static void st_range_put(struct httpd_conn *h, struct http_msg *m, const char *path, int pl)
{
    size_t vl;
    const char *v = http_header_value(m, "Content-Range", &vl);
    uint64_t start, end;
    if (!v || mog_content_range_parse(v, vl, &start, &end) < 0) {
        rput_fail(h, 400, "Bad Content-Range");
        return;
    }
    if (m->body != HTTP_BODY_LENGTH || m->content_length != end - start + 1) {
        rput_fail(h, 400, "Content-Length must match Content-Range");
        return;
    }
    if (mog_st_cfg.max_put && end + 1 > mog_st_cfg.max_put) {
        rput_fail(h, 413, NULL);
        return;
    }
    if (!device_exists(path, (size_t)pl)) {
        rput_fail(h, 404, "Base directory does not exist");
        return;
    }
    struct st_rput *rp = calloc(1, sizeof *rp);
    if (!rp) {
        rput_fail(h, 500, NULL);
        return;
    }
    rp->kind = ST_RPUT;
    rp->fd = -1;
    rp->off = start;
    snprintf(rp->full, sizeof rp->full, "%s%.*s", mog_st_cfg.docroot, pl, path);
    struct stat sb;
    rp->created = lstat(rp->full, &sb) < 0;
    if (!rp->created && !S_ISREG(sb.st_mode)) {
        free(rp);
        rput_fail(h, 403, NULL);
        return;
    }
    /* Writes start inside the file or at its end (the client's own seek
     * refuses to go past the end): no holes, no huge sparse files. */
    if (start > (rp->created ? 0 : (uint64_t)sb.st_size)) {
        free(rp);
        rput_fail(h, 416, "Content-Range starts past the end of the file");
        return;
    }
    h->data = rp;
    if (make_parents(rp->full, strlen(mog_st_cfg.docroot)) < 0 ||
        (rp->fd = open(rp->full, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0) {
        rput_fail(h, 500, "Could not open the file");
        return;
    }
    stats_counter_add(&mog_st.puts, 1);
    stats_counter_add(&mog_st.put_bytes, m->content_length);
    httpd_drop_head(h);
    httpd_request_timeouts(h, 0);
    httpd_send_continue(h);
    rput_pump(h);
}

static void st_on_input(struct httpd_conn *h) { rput_pump(h); }

/* The request or the conn ends: a partial PUT's state goes; a sync job
 * still out only forgets the conn (its done frees it). */
static void st_data_release(struct httpd_conn *h)
{
    enum st_data_kind *kind = h->data;
    if (!kind)
        return;
    if (*kind == ST_SYNC) {
        ((struct st_sync *)h->data)->h = NULL;
        h->data = NULL;
        return;
    }
    rput_free(h);
}

static void st_on_request_end(struct httpd_conn *h) { st_data_release(h); }

static void st_on_close(struct httpd_conn *h, enum conn_close_reason why)
{
    (void)why;
    st_data_release(h);
}

static void st_on_request(struct httpd_conn *h, struct http_msg *m)
{
    char who[80], req[300], res[64];
    int n = log_command_enabled() ? snprintf(req, sizeof req, "%.*s %.*s", (int)m->method_len, m->method_str,
                                             (int)(m->target_len > 256 ? 256 : m->target_len), m->target)
                                  : -1;
    st_status = 0;
    st_route(h, m);
    if (n > 0) {
        int rl = st_status || h->resp_status ? snprintf(res, sizeof res, "%d", st_status ? st_status : h->resp_status)
                                             : snprintf(res, sizeof res, "file handler");
        log_command(log_addr(&h->c->peer, who, sizeof who), req, (size_t)n, false, res, (size_t)rl);
    }
}

static void st_route(struct httpd_conn *h, struct http_msg *m)
{
    h->idle_ms = (uint32_t)mog_st_cfg.idle_timeout * 1000;
    char path[4096];
    bool slash = false;
    int pl = http_path_normalize(m->target, m->target_len, path, sizeof path, &slash);
    if (pl < 0) {
        stats_counter_add(&mog_st.errors, 1);
        httpd_error(h, 400, "Bad path");
        return;
    }
    switch (m->method) {
    case HTTP_M_GET:
    case HTTP_M_HEAD: {
        bool head = m->method == HTTP_M_HEAD;
        stats_counter_add(head ? &mog_st.heads : &mog_st.gets, 1);
        if (pl == 1) {
            /* The root answers so `mogadm check` sees the node up. */
            bool keep = httpd_can_persist(h);
            httpd_response_head(h, st_status = 200, "text/plain", 10, keep, NULL);
            if (!head)
                evbuffer_add(httpd_tx(), "mogstored\n", 10);
            httpd_done(h, keep);
            return;
        }
        break;
    }
    case HTTP_M_PUT:
    case HTTP_M_DELETE:
        if (slash || !mog_storage_path_ok(path, (size_t)pl)) {
            stats_counter_add(&mog_st.errors, 1);
            httpd_error(h, 400, "Invalid path");
            return;
        }
        if (m->method == HTTP_M_DELETE) {
            stats_counter_add(&mog_st.deletes, 1);
            break;
        }
        if (!device_exists(path, (size_t)pl)) {
            stats_counter_add(&mog_st.errors, 1);
            h->keep_alive = false; /* the body is not read */
            httpd_error(h, 404, "Base directory does not exist");
            return;
        }
        if (http_find_header(m, "Content-Range") >= 0) {
            st_range_put(h, m, path, pl);
            return;
        }
        stats_counter_add(&mog_st.puts, 1);
        if (m->body == HTTP_BODY_LENGTH)
            stats_counter_add(&mog_st.put_bytes, m->content_length);
        break;
    default:
        if (m->method_len == 4 && !memcmp(m->method_str, "MOVE", 4)) {
            if (slash || !mog_storage_path_ok(path, (size_t)pl)) {
                stats_counter_add(&mog_st.errors, 1);
                httpd_error(h, 400, "Invalid path");
                return;
            }
            if (m->body != HTTP_BODY_NONE) {
                h->keep_alive = false; /* the body is not read */
                httpd_error(h, 400, "MOVE takes no body");
                return;
            }
            stats_counter_add(&mog_st.moves, 1);
            st_move(h, m, path, pl);
            return;
        }
        /* MKCOL: 400, as Perlbal answers it; the tracker then relies on
         * PUT creating directories. */
        stats_counter_add(&mog_st.errors, 1);
        if (m->method_len == 5 && !memcmp(m->method_str, "MKCOL", 5)) {
            httpd_error(h, 400, "MKCOL not supported");
            return;
        }
        httpd_error(h, 405, NULL);
        return;
    }
    httpd_files_serve(h, m, &st_files);
}

static const struct httpd_ops st_http_ops = {
    .on_request = st_on_request,
    .on_input = st_on_input,
    .on_request_end = st_on_request_end,
    .on_close = st_on_close,
};

void mog_st_http_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct httpd_conn *h = httpd_accept(loop, fd, sa, salen, NULL, &st_http_ops, NULL);
    if (!h)
        return;
    h->server = st_server;
    h->persist = true;
    h->idle_ms = (uint32_t)mog_st_cfg.idle_timeout * 1000;
    /* libevent writes 16 KiB per callback by default: a 1 MiB sendfile
     * would take 64 trips through the loop. */
    bufferevent_set_max_single_write(h->c->bev, 4u << 20);
}

void mog_st_http_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}

/* Before the loops run: the file serving settings, and the disk pool
 * (GET/HEAD opens and stats) on n threads (0: on the loop, as the fuzz
 * target runs). */
void mog_st_sync_start(int n)
{
    st_files.docroot = mog_st_cfg.docroot;
    st_files.enable_put = st_files.enable_delete = true;
    st_files.min_put_directory = 1;
    st_files.put_fsync = true;
    st_files.put_ok_status = 200;
    st_files.dir_disabled_status = 403;
    st_files.max_put_size = mog_st_cfg.max_put;
    if (n > 0)
        st_disk = work_pool_new("mogstored-disk", n > 64 ? 64 : n, 65536);
    st_files.work = st_disk;
}

/* SIGHUP: live settings into the file serving. */
void mog_st_reload(void) { st_files.max_put_size = mog_st_cfg.max_put; }

void mog_st_sync_stop(void)
{
    if (st_disk)
        work_pool_free(st_disk);
    st_disk = NULL;
    st_files.work = NULL;
}

void mog_st_thread_exit(void) { httpd_thread_exit(); }

/* ---- side channel ------------------------------------------------------------------------------- */

struct side_sess {
    struct core_conn *c;
    bool running, closed;
    bool watching;      /* "watch": gets the utilization stream */
    bool in_done, gone; /* hash_done running / the conn was freed meanwhile */
    struct side_sess *wnext, *wprev;
    int loop_index; /* its loop: whose watch list */
};

/* ---- watch: per-device utilization, as mogstored's iostat stream --------------------------- */
/* Every second: for each devN folder, the block device holding it (stat's
 * st_dev), and from /proc/diskstats its time spent doing I/O since the last
 * tick, as a percentage. Sent to every watcher as "devN\t<util>\n" lines
 * and a "." line (what the tracker's IOStatWatcher reads). */

struct watch_dev {
    int devid;
    unsigned maj, min;
    uint64_t last_ticks;
    bool have_last;
};

/* Per loop (a watcher's conn belongs to its loop's thread): the
 * watchers, the 1 s timer and the last /proc/diskstats figures. */
#define WATCH_LOOPS 64
struct watch_state {
    struct side_sess *list;
    struct event *timer;
    struct watch_dev dev[256];
    int ndev;
    uint64_t last_ms;
};
static struct watch_state Wl[WATCH_LOOPS];

static void watch_remove(struct side_sess *s)
{
    if (!s->watching)
        return;
    struct watch_state *W = &Wl[s->loop_index];
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        W->list = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    s->watching = false;
}

static bool io_ticks(const char *stats, unsigned maj, unsigned min, uint64_t *ticks)
{
    const char *p = stats;
    while (p && *p) {
        unsigned a, b;
        unsigned long long f[11];
        char name[64];
        if (sscanf(p, " %u %u %63s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &a, &b, name, &f[0], &f[1],
                   &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9]) == 13 &&
            a == maj && b == min) {
            *ticks = f[9];
            return true;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

static void watch_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct watch_state *W = arg;
    if (!W->list)
        return; /* nobody listens: no work */
    static char stats[65536];
    int sfd = open("/proc/diskstats", O_RDONLY | O_CLOEXEC);
    ssize_t n = sfd >= 0 ? read(sfd, stats, sizeof stats - 1) : -1;
    if (sfd >= 0)
        close(sfd);
    stats[n > 0 ? n : 0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t elapsed = W->last_ms ? now - W->last_ms : 0;
    W->last_ms = now;
    /* The devices present now (folders come and go). */
    DIR *d = opendir(mog_st_cfg.docroot);
    struct watch_dev cur[256];
    int nc = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && nc < 256) {
        if (strncmp(e->d_name, "dev", 3) || !e->d_name[3] ||
            strspn(e->d_name + 3, "0123456789") != strlen(e->d_name + 3))
            continue;
        char path[4200];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", mog_st_cfg.docroot, e->d_name);
        if (stat(path, &sb) < 0)
            continue;
        cur[nc] = (struct watch_dev){ .devid = atoi(e->d_name + 3), .maj = major(sb.st_dev), .min = minor(sb.st_dev) };
        for (int i = 0; i < W->ndev; i++)
            if (W->dev[i].devid == cur[nc].devid && W->dev[i].maj == cur[nc].maj && W->dev[i].min == cur[nc].min) {
                cur[nc].last_ticks = W->dev[i].last_ticks;
                cur[nc].have_last = W->dev[i].have_last;
            }
        nc++;
    }
    if (d)
        closedir(d);
    struct evbuffer *out = evbuffer_new();
    for (int i = 0; i < nc; i++) {
        uint64_t t;
        double util = 0;
        if (io_ticks(stats, cur[i].maj, cur[i].min, &t)) {
            if (cur[i].have_last && elapsed > 0 && t >= cur[i].last_ticks)
                util = 100.0 * (double)(t - cur[i].last_ticks) / (double)elapsed;
            cur[i].last_ticks = t;
            cur[i].have_last = true;
        }
        if (util > 100)
            util = 100;
        evbuffer_add_printf(out, "dev%d\t%.2f\n", cur[i].devid, util);
    }
    evbuffer_add(out, ".\n", 2);
    memcpy(W->dev, cur, sizeof cur[0] * (size_t)nc);
    W->ndev = nc;
    size_t len = evbuffer_get_length(out);
    const unsigned char *bytes = evbuffer_pullup(out, (ev_ssize_t)len);
    for (struct side_sess *w = W->list; w; w = w->wnext)
        if (w->c && !conn_is_closing(w->c) && evbuffer_get_length(conn_out(w->c)) < (1u << 20))
            evbuffer_add(conn_out(w->c), bytes, len); /* a watcher that does not read misses lines */
    evbuffer_free(out);
}

/* On each loop's own thread, as it starts / ends. */
void mog_st_watch_start(struct core_loop *loop)
{
    if (loop->index >= WATCH_LOOPS)
        return;
    struct watch_state *W = &Wl[loop->index];
    W->timer = event_new(loop->base, -1, EV_PERSIST, watch_tick, W);
    struct timeval tv = { 1, 0 };
    if (W->timer)
        event_add(W->timer, &tv);
}

void mog_st_watch_stop(struct core_loop *loop)
{
    if (loop->index >= WATCH_LOOPS)
        return;
    struct watch_state *W = &Wl[loop->index];
    if (W->timer)
        event_free(W->timer);
    W->timer = NULL;
}

struct hash_job {
    struct side_sess *s;
    struct core_loop *loop;
    char uri[1024];
    bool sha1;
    char reply[1200];
};

static void hash_done(void *arg)
{
    struct hash_job *j = arg;
    struct side_sess *s = j->s;
    mog_st.hash_jobs--;
    if (s->closed) {
        free(s);
        free(j);
        return;
    }
    s->running = false;
    struct core_conn *c = s->c;
    char who[80];
    if (log_command_enabled())
        log_command(log_addr(&c->peer, who, sizeof who), j->sha1 ? "SHA1" : "MD5", j->sha1 ? 4 : 3, false, j->reply,
                    strlen(j->reply));
    evbuffer_add(conn_out(c), j->reply, strlen(j->reply));
    free(j);
    /* As sync_done: on_close only marks s gone while this runs. */
    s->in_done = true;
    conn_resume_read(c);
    conn_kick(c);
    if (!s->gone && !s->running)
        conn_set_busy(c, false);
    s->in_done = false;
    if (s->gone)
        free(s);
}

/* Thread: digest a whole file without blocking the loop. */
static void *hash_thread(void *arg)
{
    struct hash_job *j = arg;
    char full[4200];
    snprintf(full, sizeof full, "%s%s", mog_st_cfg.docroot, j->uri);
    const char *name = j->sha1 ? "SHA-1" : "MD5";
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(j->reply, sizeof j->reply, "%s %s=-1\r\n", j->uri, name);
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, j->sha1 ? EVP_sha1() : EVP_md5(), NULL);
        char buf[65536];
        ssize_t n;
        off_t off = 0;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            EVP_DigestUpdate(ctx, buf, (size_t)n);
            off += n;
        }
        unsigned char dig[EVP_MAX_MD_SIZE];
        unsigned int dl = 0;
        EVP_DigestFinal_ex(ctx, dig, &dl);
        EVP_MD_CTX_free(ctx);
        close(fd);
        if (n < 0) {
            snprintf(j->reply, sizeof j->reply, "ERR read %s at %lld failed\r\n", j->uri, (long long)off);
        } else {
            char hex[2 * EVP_MAX_MD_SIZE + 1];
            for (unsigned i = 0; i < dl; i++)
                snprintf(hex + 2 * i, 3, "%02x", dig[i]);
            snprintf(j->reply, sizeof j->reply, "%s %s=%s\r\n", j->uri, name, hex);
        }
    }
    if (loop_call(j->loop, hash_done, j) < 0)
        free(j);
    return NULL;
}

static void side_drive(struct side_sess *s)
{
    struct evbuffer *in = conn_in(s->c), *out = conn_out(s->c);
    while (!s->running && !conn_is_closing(s->c) && evbuffer_get_length(in) > 0) {
        size_t len, consumed;
        enum line_status ls;
        char *line = line_peek(in, 4096, &len, &consumed, &ls);
        if (ls == LINE_NEED_MORE)
            return;
        if (ls == LINE_TOO_LONG) {
            evbuffer_add_printf(out, "ERROR: line too long\r\n");
            conn_close_after_write(s->c);
            return;
        }
        stats_counter_add(&mog_st.side_cmds, 1);
        size_t out_before = evbuffer_get_length(out);
        char *uri;
        size_t ul;
        enum mog_side_cmd k = mog_side_parse(line, len, &uri, &ul);
        if (k == MOG_SIDE_DOTDOT) {
            evbuffer_add_printf(out, "ERROR: uri invalid (contains ..)\r\n");
        } else if (k == MOG_SIDE_SIZE) {
            char full[4200];
            snprintf(full, sizeof full, "%s%.*s", mog_st_cfg.docroot, (int)ul, uri);
            struct stat sb;
            if (stat(full, &sb) == 0 && S_ISREG(sb.st_mode))
                evbuffer_add_printf(out, "%.*s %lld\r\n", (int)ul, uri, (long long)sb.st_size);
            else
                evbuffer_add_printf(out, "%.*s -1\r\n", (int)ul, uri);
        } else if (k == MOG_SIDE_MD5 || k == MOG_SIDE_SHA1) {
            if (mog_st.hash_jobs >= mog_st_cfg.max_hash_jobs || ul >= sizeof((struct hash_job *)0)->uri) {
                evbuffer_add_printf(out, "ERR busy %.*s\r\n", (int)(ul > 1000 ? 1000 : ul), uri);
            } else {
                struct hash_job *j = calloc(1, sizeof *j);
                pthread_t t;
                if (j) {
                    j->s = s;
                    j->loop = s->c->loop;
                    j->sha1 = k == MOG_SIDE_SHA1;
                    memcpy(j->uri, uri, ul);
                    mog_st.hash_jobs++;
                    pthread_attr_t at;
                    pthread_attr_init(&at);
                    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
                    if (pthread_create(&t, &at, hash_thread, j) == 0) {
                        s->running = true;
                        conn_set_busy(s->c, true);
                        conn_pause_read(s->c);
                    } else {
                        mog_st.hash_jobs--;
                        free(j);
                        evbuffer_add_printf(out, "ERR busy\r\n");
                    }
                    pthread_attr_destroy(&at);
                }
            }
        } else if (k == MOG_SIDE_WATCH) {
            if (!s->watching && s->loop_index < WATCH_LOOPS) {
                struct watch_state *W = &Wl[s->loop_index];
                s->watching = true;
                s->wprev = NULL;
                s->wnext = W->list;
                if (W->list)
                    W->list->wprev = s;
                W->list = s;
            }
        } else if (k == MOG_SIDE_BAD) {
            evbuffer_add_printf(out, "ERROR: bad command\r\n");
        } else {
            size_t wl = 0;
            while (wl < len && line[wl] != ' ')
                wl++;
            evbuffer_add_printf(out, "ERROR: unknown command: %.*s\r\n", (int)(wl > 64 ? 64 : wl), line);
        }
        if (log_command_enabled() && !s->running) { /* a digest is logged when it is done */
            char who[80];
            char res[128];
            size_t rl = line_copy_at(out, out_before, res, sizeof res);
            log_command(log_addr(&s->c->peer, who, sizeof who), line, len, false, res, rl);
        }
        evbuffer_drain(in, consumed);
    }
}

static int side_on_read(struct core_conn *c)
{
    side_drive(c->data);
    return 0;
}

static void side_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct side_sess *s = c->data;
    c->data = NULL;
    if (!s)
        return;
    watch_remove(s);
    s->c = NULL;
    if (s->in_done) {
        s->gone = true; /* hash_done frees it */
        return;
    }
    if (s->running)
        s->closed = true; /* hash_done frees it */
    else
        free(s);
}

static const struct conn_ops side_ops = { .name = "mogstored-side",
                                          .on_read = side_on_read,
                                          .on_close = side_on_close };

void mog_st_side_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct side_sess *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &side_ops, s);
    if (!c) {
        free(s);
        return;
    }
    s->c = c;
    s->loop_index = loop->index;
    conn_set_output_limit(c, 1u << 20);
}
