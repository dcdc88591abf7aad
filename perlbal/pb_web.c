/* pb_web: the web_server role — static files from a docroot with sendfile,
 * HEAD, Range, If-Modified-Since, MIME types, index files, directory
 * listings, PUT and DELETE when enabled.
 *
 * Paths are normalised by http_path_normalize (no '..' above the root, no
 * NUL), then every open, stat, mkdir, rename and unlink is resolved by the
 * kernel beneath the docroot (openat2 RESOLVE_BENEATH and *at() calls on
 * directory fds): a symlink cannot lead a read, a PUT or a DELETE out of it.
 * Disk calls (open/fstat/readdir, pread of files <= 32 KiB, PUT writes) run
 * on the loop, as Perlbal's non-AIO mode does: they assume a local disk and
 * a warm page cache; larger files go out with sendfile (evbuffer_add_file).
 * A per-loop open-file cache saves the open/close of hot files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/log.h"
#include "perlbal/pb_conn.h"
#include "perlbal/pb_plugin.h"

static const struct { const char *ext, *type; } mime_tab[] = {
    { "html", "text/html" }, { "htm", "text/html" }, { "txt", "text/plain" }, { "css", "text/css" },
    { "js", "application/x-javascript" }, { "json", "application/json" }, { "xml", "text/xml" },
    { "png", "image/png" }, { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" }, { "gif", "image/gif" },
    { "svg", "image/svg+xml" }, { "ico", "image/x-icon" }, { "bmp", "image/bmp" }, { "pdf", "application/pdf" },
    { "zip", "application/zip" }, { "gz", "application/x-gzip" }, { "tgz", "application/x-gzip" },
    { "tar", "application/x-tar" }, { "mp3", "audio/mpeg" }, { "mp4", "video/mp4" }, { "webm", "video/webm" },
    { "flv", "video/x-flv" }, { "swf", "application/x-shockwave-flash" }, { "woff", "font/woff" },
    { "woff2", "font/woff2" }, { "wasm", "application/wasm" }, { "bin", "application/octet-stream" },
};

const char *pb_mime_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof mime_tab / sizeof mime_tab[0]; i++)
            if (!strcasecmp(dot + 1, mime_tab[i].ext)) return mime_tab[i].type;
    return "text/plain";
}

/* Every file access is resolved by the kernel beneath the docroot
 * (openat2 RESOLVE_BENEATH): no "..", absolute symlink or symlink climbing
 * out of it is followed, in one system call and without a realpath walk. */
static int docroot_fd(struct pb_service *svc)
{
    const char *d = svc->docroot;
    int fd = atomic_load(&svc->docroot_fd);
    if (fd >= 0 && svc->docroot_fd_for == d) return fd;
    pthread_mutex_lock(&pb_lock);
    if (svc->docroot_fd < 0 || svc->docroot_fd_for != d) {
        int nfd = open(d, O_PATH | O_DIRECTORY | O_CLOEXEC);
        /* an old fd stays open: another loop may be using it (live SET docroot is rare) */
        if (nfd >= 0) {
            svc->docroot_fd_for = d;
            atomic_store(&svc->docroot_fd, nfd);
        }
    }
    fd = svc->docroot_fd;
    pthread_mutex_unlock(&pb_lock);
    return fd;
}

/* Open path (clean, absolute in URL space) beneath the docroot. -1 with
 * errno: EXDEV/ELOOP when it would escape. */
static int open_beneath(struct pb_service *svc, const char *path, int flags)
{
    int dfd = docroot_fd(svc);
    if (dfd < 0) return -1;
    const char *rel = path[0] == '/' ? path + 1 : path;
    if (!*rel) rel = ".";
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .mode = 0,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    return (int)syscall(SYS_openat2, dfd, rel, &how, sizeof how);
}

static int errno_status(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG: return 404;
    default: return 403; /* EACCES, EXDEV / ELOOP (escape), ... */
    }
}

#define SMALL_FILE 32768

/* ---- open-file cache ----
 * Per loop, a small direct-mapped table of open regular files (as nginx's
 * open_file_cache): a hit saves the openat2 and the close. Each hit still
 * fstat()s the fd, so a file changed in place is served as it is now; a
 * file replaced by rename or deleted outside perlbal may be served from the
 * old inode for up to FCACHE_VALID_MS. PUT and DELETE through this service
 * invalidate the service's entries at once (generation counter). */
#define FCACHE_SLOTS 256
#define FCACHE_VALID_MS 1000
#define FCACHE_PATH 200

struct fcache_ent {
    struct pb_service *svc;
    const char *docroot;
    uint64_t gen;
    int64_t expires_ms;
    int fd;
    char path[FCACHE_PATH];
};
static struct fcache_ent *fcache_by_loop[PB_MAX_LOOPS];

static struct fcache_ent *fcache_slot(struct pb_client *cl, const char *path)
{
    if (strlen(path) >= FCACHE_PATH) return NULL;
    struct fcache_ent **tab = &fcache_by_loop[cl->loop_index];
    if (!*tab) {
        *tab = calloc(FCACHE_SLOTS, sizeof **tab);
        if (!*tab) return NULL;
        for (int i = 0; i < FCACHE_SLOTS; i++) (*tab)[i].fd = -1;
    }
    uint32_t h = 2166136261u ^ (uint32_t)(uintptr_t)cl->svc;
    for (const char *p = path; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    return &(*tab)[h % FCACHE_SLOTS];
}

/* A cached fd for path, or -1. */
static int fcache_get(struct pb_client *cl, const char *path, struct stat *st)
{
    struct fcache_ent *e = fcache_slot(cl, path);
    if (!e || e->fd < 0 || e->svc != cl->svc || e->docroot != cl->svc->docroot ||
        e->gen != atomic_load_explicit(&cl->svc->fcache_gen, memory_order_relaxed) || strcmp(e->path, path))
        return -1;
    if (pb_now_ms() >= e->expires_ms || fstat(e->fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(e->fd);
        e->fd = -1;
        return -1;
    }
    return e->fd;
}

static void fcache_put(struct pb_client *cl, const char *path, int fd)
{
    struct fcache_ent *e = fcache_slot(cl, path);
    if (!e) return;
    int nfd = dup(fd);
    if (nfd < 0) return;
    if (e->fd >= 0) close(e->fd);
    e->svc = cl->svc;
    e->docroot = cl->svc->docroot;
    e->gen = atomic_load_explicit(&cl->svc->fcache_gen, memory_order_relaxed);
    e->expires_ms = pb_now_ms() + FCACHE_VALID_MS;
    e->fd = nfd;
    memcpy(e->path, path, strlen(path) + 1); /* fits: fcache_slot checked the length */
}

static void fcache_invalidate(struct pb_service *svc)
{
    atomic_fetch_add(&svc->fcache_gen, 1);
}

/* fd: open regular file (owned: closed or handed to the output buffer),
 * unless cached (the cache owns it: only read from it or dup it). */
static void serve_file(struct pb_client *cl, int fd, bool cached, const char *name, struct stat *st,
                       const char *range, size_t range_len, const char *ims, size_t ims_len)
{
    bool keep = pb_client_can_persist(cl);
    char date[HTTP_DATE_LEN + 1], extra[256];
    http_date_format(st->st_mtime, date);
    time_t since;
    if (ims && http_date_parse(ims, ims_len, &since) == 0 && st->st_mtime <= since) {
        if (!cached) close(fd);
        snprintf(extra, sizeof extra, "Last-Modified: %s\r\n", date);
        pb_client_response_head(cl, 304, NULL, -1, keep, extra);
        pb_client_done(cl, keep);
        return;
    }
    uint64_t size = (uint64_t)st->st_size, first = 0, last = size ? size - 1 : 0;
    int status = 200;
    if (range) {
        enum http_range_result rr = http_parse_range(range, range_len, size, &first, &last);
        if (rr == HTTP_RANGE_UNSATISFIABLE) {
            if (!cached) close(fd);
            snprintf(extra, sizeof extra, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
            pb_client_response_head(cl, 416, "text/html", 0, keep, extra);
            pb_client_done(cl, keep);
            return;
        }
        if (rr == HTTP_RANGE_OK) status = 206;
    }
    uint64_t len = size ? last - first + 1 : 0;
    if (status == 206)
        snprintf(extra, sizeof extra, "Last-Modified: %s\r\nAccept-Ranges: bytes\r\nContent-Range: bytes %llu-%llu/%llu\r\n",
                 date, (unsigned long long)first, (unsigned long long)last, (unsigned long long)size);
    else
        snprintf(extra, sizeof extra, "Last-Modified: %s\r\nAccept-Ranges: bytes\r\n", date);
    if (cl->method != HTTP_M_HEAD && len > 0 && len <= SMALL_FILE) {
        /* small: read it (one writev for head and body beats writev + sendfile) */
        char buf[SMALL_FILE];
        ssize_t n = pread(fd, buf, (size_t)len, (off_t)first);
        if (!cached) close(fd);
        if (n != (ssize_t)len) {
            pb_client_error(cl, 500, "Read failed");
            return;
        }
        pb_client_response_head(cl, status, pb_mime_type(name), (int64_t)len, keep, extra);
        evbuffer_add(pb_tx(), buf, (size_t)len);
    } else {
        pb_client_response_head(cl, status, pb_mime_type(name), (int64_t)len, keep, extra);
        if (cl->method != HTTP_M_HEAD && len > 0) {
            int sfd = cached ? dup(fd) : fd; /* the output buffer closes what it is given */
            if (sfd < 0 || evbuffer_add_file(pb_tx(), sfd, (ev_off_t)first, (ev_off_t)len) < 0) {
                if (sfd >= 0) close(sfd);
                evbuffer_drain(pb_tx(), evbuffer_get_length(pb_tx())); /* the head was not sent yet */
                pb_client_error(cl, 500, "Cannot send the file");
                return;
            }
        } else if (!cached) {
            close(fd);
        }
    }
    if (cl->svc->nplugins) pb_plugins_file_sent(cl->svc, cl, false);
    pb_client_done(cl, keep);
}

static void html_escape(struct evbuffer *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': evbuffer_add(b, "&lt;", 4); break;
        case '>': evbuffer_add(b, "&gt;", 4); break;
        case '&': evbuffer_add(b, "&amp;", 5); break;
        case '"': evbuffer_add(b, "&quot;", 6); break;
        default: evbuffer_add(b, s, 1);
        }
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void dir_listing(struct pb_client *cl, int dfd, const char *path)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        pb_client_error(cl, 403, NULL);
        return;
    }
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        if (!strcmp(e->d_name, ".")) continue;
        struct stat st;
        bool dir = fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        size_t l = strlen(e->d_name);
        char *s = malloc(l + 2);
        if (!s) break;
        memcpy(s, e->d_name, l);
        s[l] = dir ? '/' : 0;
        s[l + 1] = 0;
        names[n++] = s;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], name_cmp);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<html><head><title>Directory Listing</title></head><body><h1>Directory Listing</h1><h2>");
    html_escape(b, path);
    evbuffer_add_printf(b, "</h2><pre>\n");
    for (int i = 0; i < n; i++) {
        evbuffer_add(b, "<a href=\"", 9);
        html_escape(b, names[i]);
        evbuffer_add(b, "\">", 2);
        html_escape(b, names[i]);
        evbuffer_add(b, "</a>\n", 5);
        free(names[i]);
    }
    evbuffer_add_printf(b, "</pre></body></html>\n");
    bool keep = pb_client_can_persist(cl);
    pb_client_response_head(cl, 200, "text/html", (int64_t)evbuffer_get_length(b), keep, NULL);
    if (cl->method != HTTP_M_HEAD) evbuffer_add_buffer(pb_tx(), b);
    evbuffer_free(b);
    pb_client_done(cl, keep);
}

static void do_get(struct pb_client *cl, const char *path, bool trailing, const char *range, size_t range_len,
                   const char *ims, size_t ims_len)
{
    struct stat st;
    int cfd = trailing ? -1 : fcache_get(cl, path, &st);
    if (cfd >= 0) {
        serve_file(cl, cfd, true, path, &st, range, range_len, ims, ims_len);
        return;
    }
    int fd = open_beneath(cl->svc, path, O_RDONLY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        pb_client_error(cl, errno_status(e), NULL);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        if (!trailing) {
            bool keep = pb_client_can_persist(cl);
            char extra[PATH_MAX + 32];
            snprintf(extra, sizeof extra, "Location: %s/\r\n", path);
            pb_client_response_head(cl, 301, "text/html", 0, keep, extra);
            pb_client_done(cl, keep);
            return;
        }
        /* index files, in order of preference */
        const char *list = cl->svc->index_files ? cl->svc->index_files : "index.html";
        char item[256];
        const char *p = list;
        while (*p) {
            while (*p == ',' || *p == ' ') p++;
            size_t l = strcspn(p, ", ");
            if (!l) break;
            if (l < sizeof item) {
                memcpy(item, p, l);
                item[l] = 0;
                char f[PATH_MAX];
                struct stat fst;
                if (!strchr(item, '/') &&
                    (size_t)snprintf(f, sizeof f, "%s%s%s", path, strcmp(path, "/") ? "/" : "", item) < sizeof f) {
                    int ifd = open_beneath(cl->svc, f, O_RDONLY | O_NONBLOCK);
                    if (ifd >= 0 && fstat(ifd, &fst) == 0 && S_ISREG(fst.st_mode)) {
                        serve_file(cl, ifd, false, f, &fst, range, range_len, ims, ims_len);
                        return;
                    }
                    if (ifd >= 0) close(ifd);
                }
            }
            p += l;
        }
        if (!cl->svc->dirindexing) {
            pb_client_error(cl, 403, "Directory listing disabled");
            return;
        }
        int dfd = open_beneath(cl->svc, path, O_RDONLY | O_DIRECTORY);
        if (dfd < 0) {
            pb_client_error(cl, errno_status(errno), NULL);
            return;
        }
        dir_listing(cl, dfd, path);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        pb_client_error(cl, 403, NULL);
        return;
    }
    fcache_put(cl, path, fd);
    serve_file(cl, fd, false, path, &st, range, range_len, ims, ims_len);
}

/* Split path into its directory (opened beneath the docroot) and last
 * name. Creates missing directories below min_levels when create is set.
 * Returns the directory fd or -1 (errno). */
static int open_parent(struct pb_service *svc, const char *path, bool create, int min_levels, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash + 1;
    if (slash == path) return open_beneath(svc, "/", O_PATH | O_DIRECTORY);
    char dir[PATH_MAX];
    size_t dl = (size_t)(slash - path);
    if (dl >= sizeof dir) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, dl);
    dir[dl] = 0;
    int fd = open_beneath(svc, dir, O_PATH | O_DIRECTORY);
    if (fd >= 0 || errno != ENOENT || !create) return fd;
    /* walk down, creating what is missing (each step resolved beneath) */
    int level = 0;
    char prefix[PATH_MAX];
    for (const char *p = path + 1; (p = strchr(p, '/')); p++) {
        level++;
        size_t pl = (size_t)(p - path);
        memcpy(prefix, path, pl);
        prefix[pl] = 0;
        int f = open_beneath(svc, prefix, O_PATH | O_DIRECTORY);
        if (f >= 0) {
            close(f);
            continue;
        }
        if (errno != ENOENT || level <= min_levels) return -1;
        const char *name;
        int parent = open_parent(svc, prefix, false, 0, &name);
        if (parent < 0) return -1;
        int r = mkdirat(parent, name, 0755);
        int e = errno;
        close(parent);
        if (r < 0 && e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    return open_beneath(svc, dir, O_PATH | O_DIRECTORY);
}

static void put_close_dir(struct pb_client *cl)
{
    if (cl->put_dirfd >= 0) close(cl->put_dirfd);
    cl->put_dirfd = -1;
    free(cl->put_tmp);
    free(cl->put_path);
    cl->put_tmp = cl->put_path = NULL;
}

static void put_finish(struct pb_client *cl)
{
    int rc = 0;
    if (cl->put_fd >= 0) {
        rc = close(cl->put_fd);
        cl->put_fd = -1;
    }
    if (rc == 0 && renameat(cl->put_dirfd, cl->put_tmp, cl->put_dirfd, cl->put_path) == 0) {
        fcache_invalidate(cl->svc);
        bool existed = cl->put_existed;
        put_close_dir(cl);
        cl->state = CL_RESPONDING;
        bool keep = pb_client_can_persist(cl);
        pb_client_response_head(cl, existed ? 204 : 201, NULL, existed ? -1 : 0, keep, NULL);
        pb_client_done(cl, keep);
        return;
    }
    pb_web_put_abort(cl);
    cl->state = CL_RESPONDING;
    pb_client_error(cl, 500, "Could not store the file");
}

void pb_web_put_abort(struct pb_client *cl)
{
    if (cl->put_fd >= 0) close(cl->put_fd);
    cl->put_fd = -1;
    if (cl->put_tmp && cl->put_dirfd >= 0) unlinkat(cl->put_dirfd, cl->put_tmp, 0);
    put_close_dir(cl);
}

void pb_web_put_data(struct pb_client *cl)
{
    struct evbuffer *in = conn_in(cl->c);
    while (cl->body_remaining > 0 && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        size_t n = v.iov_len < cl->body_remaining ? v.iov_len : (size_t)cl->body_remaining;
        ssize_t w = write(cl->put_fd, v.iov_base, n);
        if (w <= 0) {
            pb_web_put_abort(cl);
            cl->state = CL_RESPONDING;
            cl->keep_alive = false;
            pb_client_error(cl, 500, "Write failed");
            return;
        }
        evbuffer_drain(in, (size_t)w);
        cl->body_remaining -= (uint64_t)w;
    }
    if (cl->body_remaining == 0) {
        cl->body_done = true;
        put_finish(cl);
    }
}

static void do_put(struct pb_client *cl, struct http_msg *req, const char *path, bool trailing)
{
    struct pb_service *svc = cl->svc;
    if (!svc->enable_put) {
        pb_client_error(cl, 403, "PUT disabled");
        return;
    }
    if (req->body == HTTP_BODY_CHUNKED) {
        cl->keep_alive = false;
        pb_client_error(cl, 411, NULL);
        return;
    }
    if (svc->max_put_size && req->content_length > svc->max_put_size) {
        cl->keep_alive = false;
        pb_client_error(cl, 413, NULL);
        return;
    }
    if (trailing || !strcmp(path, "/")) {
        pb_client_error(cl, 403, NULL);
        return;
    }
    const char *base;
    int dfd = open_parent(svc, path, true, svc->min_put_directory, &base);
    if (dfd < 0) {
        cl->keep_alive = false;
        pb_client_error(cl, 403, "Parent directory missing");
        return;
    }
    char tmp[NAME_MAX + 1];
    if ((size_t)snprintf(tmp, sizeof tmp, ".%.200s.pbtmp.%llu", base, (unsigned long long)cl->c->id) >= sizeof tmp) {
        close(dfd);
        pb_client_error(cl, 414, NULL);
        return;
    }
    struct stat st;
    cl->put_existed = fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (cl->put_existed && !S_ISREG(st.st_mode)) {
        close(dfd);
        cl->keep_alive = false;
        pb_client_error(cl, 403, NULL);
        return;
    }
    cl->put_fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (cl->put_fd < 0) {
        close(dfd);
        cl->keep_alive = false;
        pb_client_error(cl, 500, "Cannot create file");
        return;
    }
    cl->put_dirfd = dfd;
    cl->put_tmp = strdup(tmp);
    cl->put_path = strdup(base);
    cl->state = CL_PUT_BODY;
    if (cl->expect_continue) {
        evbuffer_add(pb_tx(), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        pb_client_flush(cl);
    }
    pb_web_put_data(cl);
}

static void do_delete(struct pb_client *cl, const char *path)
{
    if (!cl->svc->enable_delete) {
        pb_client_error(cl, 403, "DELETE disabled");
        return;
    }
    const char *base;
    int dfd = strcmp(path, "/") ? open_parent(cl->svc, path, false, 0, &base) : -1;
    struct stat st;
    if (dfd < 0 || fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int e = dfd < 0 && !strcmp(path, "/") ? EACCES : errno;
        if (dfd >= 0) close(dfd);
        pb_client_error(cl, errno_status(e), NULL);
        return;
    }
    int r = S_ISREG(st.st_mode) ? unlinkat(dfd, base, 0) : -1;
    if (r == 0) fcache_invalidate(cl->svc);
    close(dfd);
    if (r < 0) {
        pb_client_error(cl, 403, NULL);
        return;
    }
    bool keep = pb_client_can_persist(cl);
    pb_client_response_head(cl, 204, NULL, -1, keep, NULL);
    pb_client_done(cl, keep);
}

void pb_web_request(struct pb_client *cl, struct http_msg *req)
{
    struct pb_service *svc = cl->svc;
    struct evbuffer *in = conn_in(cl->c);
    char path[PATH_MAX];
    bool trailing = false;
    int pl = http_path_normalize(req->target, req->target_len, path, sizeof path - 256, &trailing);
    if (pl >= 0 && svc->nplugins) pb_plugins_serve_path(svc, path, sizeof path - 256);
    /* copy what we need before the head is drained */
    char range[128] = "", ims[64] = "";
    size_t rl = 0, il = 0;
    const char *rv = http_header_value(req, "range", &rl);
    const char *iv = http_header_value(req, "if-modified-since", &il);
    if (rv && rl < sizeof range) memcpy(range, rv, rl);
    else rv = NULL;
    if (iv && il < sizeof ims) memcpy(ims, iv, il);
    else iv = NULL;
    enum http_method m = req->method;
    bool put = m == HTTP_M_PUT;
    if (put && pl >= 0 && svc->docroot) {
        /* do_put only looks at the framing, which outlives the drain */
        struct http_msg copy_framing = { 0 };
        copy_framing.body = req->body;
        copy_framing.content_length = req->content_length;
        evbuffer_drain(in, req->head_len);
        do_put(cl, &copy_framing, path, trailing);
        return;
    }
    evbuffer_drain(in, req->head_len);
    if (pl < 0) {
        pb_client_error(cl, 400, "Bad path");
        return;
    }
    if (!svc->docroot) {
        pb_client_error(cl, 500, "No docroot configured");
        return;
    }
    switch (m) {
    case HTTP_M_GET:
    case HTTP_M_HEAD:
        do_get(cl, path, trailing, rv ? range : NULL, rl, iv ? ims : NULL, il);
        return;
    case HTTP_M_DELETE:
        do_delete(cl, path);
        return;
    default:
        pb_client_error(cl, 405, NULL);
        return;
    }
}
