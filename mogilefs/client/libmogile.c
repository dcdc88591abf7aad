/* libmogile: the MogileFS client library (see libmogile.h).
 *
 * Tracker I/O is a blocking socket with deadlines; storage I/O goes through
 * mogilefs/httpc.c (blocking HTTP/1.0 with deadlines). move the tracker
 * connection handling to common/client when it lands. */
#include "mogilefs/client/libmogile.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mogilefs/mogilefs.h"

#define MAX_TRACKERS 16

struct tracker {
    char host[256];
    char port[8];
    int64_t dead_until;
};

struct mog_client {
    struct tracker t[MAX_TRACKERS];
    int nt;
    int fd;
    char *domain;
    struct mog_client_options o;
    char err[64];
    char errtext[256];
    char *rbuf;
    size_t rlen, rcap;
};

struct mog_client_res {
    struct mog_req req;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(struct mog_client *c, const char *code, const char *text)
{
    snprintf(c->err, sizeof c->err, "%s", code);
    snprintf(c->errtext, sizeof c->errtext, "%s", text ? text : code);
    return -1;
}

struct mog_client *mog_client_new(const char *trackers, const char *domain, const struct mog_client_options *opts)
{
    struct mog_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = -1;
    if (opts)
        c->o = *opts;
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = 1000;
    if (c->o.timeout_ms <= 0)
        c->o.timeout_ms = 3000;
    if (c->o.dead_retry_ms <= 0)
        c->o.dead_retry_ms = 5000;
    c->domain = domain ? strdup(domain) : NULL;
    const char *p = trackers;
    while (p && *p && c->nt < MAX_TRACKERS) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *colon = memrchr(p, ':', len);
        struct tracker *t = &c->t[c->nt];
        if (colon && (size_t)(colon - p) < sizeof t->host) {
            snprintf(t->host, sizeof t->host, "%.*s", (int)(colon - p), p);
            snprintf(t->port, sizeof t->port, "%.*s", (int)(len - (size_t)(colon - p) - 1), colon + 1);
        } else if (len < sizeof t->host) {
            snprintf(t->host, sizeof t->host, "%.*s", (int)len, p);
            snprintf(t->port, sizeof t->port, "7001");
        }
        if (t->host[0])
            c->nt++;
        p = comma ? comma + 1 : NULL;
    }
    if (c->nt == 0) {
        free(c->domain);
        free(c);
        return NULL;
    }
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    return c;
}

static void disconnect(struct mog_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rlen = 0;
}

void mog_client_free(struct mog_client *c)
{
    if (!c)
        return;
    disconnect(c);
    free(c->domain);
    free(c->rbuf);
    free(c);
}

const char *mog_client_error(const struct mog_client *c) { return c->err; }
const char *mog_client_error_text(const struct mog_client *c) { return c->errtext; }

static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = fd, .events = ev };
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static int connect_one(struct mog_client *c, struct tracker *t)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
    if (getaddrinfo(t->host, t->port, &hints, &ai) != 0 || !ai)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return -1;
    }
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (r < 0 && errno == EINPROGRESS) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (wait_fd(fd, POLLOUT, now_ms() + c->o.connect_timeout_ms) == 0 &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            r = 0;
    }
    if (r < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Trackers in random order, skipping ones that failed recently. */
static int ensure_connected(struct mog_client *c)
{
    if (c->fd >= 0)
        return 0;
    int order[MAX_TRACKERS];
    for (int i = 0; i < c->nt; i++)
        order[i] = i;
    for (int i = c->nt - 1; i > 0; i--) {
        int j = (int)(random() % (i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    int64_t now = now_ms();
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < c->nt; i++) {
            struct tracker *t = &c->t[order[i]];
            if (pass == 0 && t->dead_until > now)
                continue;
            int fd = connect_one(c, t);
            if (fd >= 0) {
                c->fd = fd;
                c->rlen = 0;
                return 0;
            }
            t->dead_until = now + c->o.dead_retry_ms;
        }
    return fail(c, "connect", "no tracker reachable");
}

static int send_all(struct mog_client *c, const char *p, size_t len)
{
    int64_t deadline = now_ms() + c->o.timeout_ms;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(c->fd, POLLOUT, deadline) < 0)
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* One reply line (without CRLF) into c->rbuf; returns its length or -1. */
static ssize_t read_line(struct mog_client *c)
{
    int64_t deadline = now_ms() + c->o.timeout_ms;
    c->rlen = 0;
    for (;;) {
        char *nl = c->rlen ? memchr(c->rbuf, '\n', c->rlen) : NULL;
        if (nl) {
            size_t l = (size_t)(nl - c->rbuf);
            if (l && c->rbuf[l - 1] == '\r')
                l--;
            c->rbuf[l] = '\0';
            return (ssize_t)l;
        }
        if (c->rlen + 4096 > c->rcap) {
            if (c->rcap >= (size_t)MOG_MAX_LINE * 16)
                return -1;
            size_t nc = c->rcap ? c->rcap * 2 : 8192;
            char *nb = realloc(c->rbuf, nc);
            if (!nb)
                return -1;
            c->rbuf = nb;
            c->rcap = nc;
        }
        if (wait_fd(c->fd, POLLIN, deadline) < 0)
            return -1;
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen - 1, 0);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            return -1;
        }
        c->rlen += (size_t)n;
    }
}

static void add_pair(char **buf, size_t *len, size_t *cap, const char *k, const char *v, bool *first)
{
    size_t need = *len + 3 * (strlen(k) + strlen(v)) + 4;
    if (need > *cap) {
        *cap = need * 2;
        *buf = realloc(*buf, *cap);
    }
    if (!*first)
        (*buf)[(*len)++] = '&';
    *first = false;
    *len += mog_url_encode(k, strlen(k), *buf + *len);
    (*buf)[(*len)++] = '=';
    *len += mog_url_encode(v, strlen(v), *buf + *len);
}

int mog_client_request(struct mog_client *c, const char *cmd, const char *const *kv, struct mog_client_res **res)
{
    *res = NULL;
    size_t cap = 256 + strlen(cmd), len = 0;
    char *line = malloc(cap);
    if (!line)
        return fail(c, "nomem", NULL);
    len = (size_t)snprintf(line, cap, "%s ", cmd);
    bool first = true, have_domain = false;
    for (int i = 0; kv && kv[i] && kv[i + 1]; i += 2) {
        if (!strcmp(kv[i], "domain"))
            have_domain = true;
        add_pair(&line, &len, &cap, kv[i], kv[i + 1], &first);
    }
    if (!have_domain && c->domain)
        add_pair(&line, &len, &cap, "domain", c->domain, &first);
    if (len + 3 > cap)
        line = realloc(line, len + 3);
    line[len++] = '\r';
    line[len++] = '\n';
    /* A connection that went stale gets one reconnect. */
    int rc = -1;
    for (int attempt = 0; attempt < 2 && rc < 0; attempt++) {
        if (ensure_connected(c) < 0)
            break;
        if (send_all(c, line, len) == 0 && read_line(c) >= 0) {
            rc = 0;
            break;
        }
        disconnect(c);
        fail(c, "timeout", "tracker did not answer");
    }
    free(line);
    if (rc < 0)
        return -1;
    const char *r = c->rbuf;
    if (!strncmp(r, "OK", 2) && (r[2] == ' ' || r[2] == '\0')) {
        struct mog_client_res *out = calloc(1, sizeof *out);
        if (!out)
            return fail(c, "nomem", NULL);
        const char *args = r + 2;
        while (*args == ' ')
            args++;
        char tmp[MOG_MAX_LINE];
        size_t al = strlen(args);
        if (al + 3 > sizeof tmp) {
            free(out);
            return fail(c, "reply_too_long", NULL);
        }
        /* Reuse the request parser: "x <args>". */
        int n = snprintf(tmp, sizeof tmp, "x %s", args);
        if (mog_parse_request(tmp, (size_t)n, &out->req) != MOG_PARSE_OK) {
            free(out);
            return fail(c, "bad_reply", r);
        }
        *res = out;
        return 0;
    }
    if (!strncmp(r, "ERR ", 4)) {
        char code[64] = "", text[256] = "";
        sscanf(r + 4, "%63s %255s", code, text);
        size_t tl = mog_url_decode(text, strlen(text), text);
        text[tl] = '\0';
        return fail(c, code, text);
    }
    disconnect(c);
    return fail(c, "bad_reply", r);
}

const char *mog_client_res_get(const struct mog_client_res *res, const char *key)
{
    return res ? mog_arg(&res->req, key) : NULL;
}

int mog_client_res_count(const struct mog_client_res *res) { return res ? res->req.nargs : 0; }
const char *mog_client_res_key(const struct mog_client_res *res, int i) { return res->req.key[i]; }
const char *mog_client_res_value(const struct mog_client_res *res, int i)
{
    return res->req.val[i] ? res->req.val[i] : "";
}

void mog_client_res_free(struct mog_client_res *res)
{
    if (!res)
        return;
    mog_req_free(&res->req);
    free(res);
}

/* ---- files --------------------------------------------------------------------------- */

int mog_client_store(struct mog_client *c, const char *key, const char *cls, const void *data, size_t len)
{
    char size[32];
    snprintf(size, sizeof size, "%zu", len);
    const char *kv[] = { "class", cls ? cls : "", "key", key, "fid", "0", "multi_dest", "1", "size", size, NULL };
    struct mog_client_res *res;
    if (mog_client_request(c, "create_open", kv, &res) < 0)
        return -1;
    const char *fid = mog_client_res_get(res, "fid");
    const char *cnt = mog_client_res_get(res, "dev_count");
    int n = cnt ? atoi(cnt) : 0, rc = -1;
    /* The first destination that takes the PUT is the one closed. */
    for (int i = 1; i <= n && rc < 0; i++) {
        char kd[32], kp[32];
        snprintf(kd, sizeof kd, "devid_%d", i);
        snprintf(kp, sizeof kp, "path_%d", i);
        const char *devid = mog_client_res_get(res, kd), *path = mog_client_res_get(res, kp);
        if (!devid || !path)
            continue;
        struct mog_http_res hr;
        int ok = mog_http("PUT", path, data, len, 0, c->o.timeout_ms * 10, &hr) == 0 && hr.status / 100 == 2;
        mog_http_res_free(&hr);
        if (!ok) {
            fail(c, "http", "PUT to storage node failed");
            continue;
        }
        const char *close_kv[] = { "fid", fid, "devid", devid, "size", size, "key", key, "path", path, NULL };
        struct mog_client_res *cr;
        if (mog_client_request(c, "create_close", close_kv, &cr) < 0)
            break;
        mog_client_res_free(cr);
        rc = 0;
    }
    if (n == 0)
        fail(c, "no_devices", "tracker gave no destination");
    mog_client_res_free(res);
    return rc;
}

int mog_client_store_file(struct mog_client *c, const char *key, const char *cls, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(c, "open", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        close(fd);
        return fail(c, "open", strerror(errno));
    }
    size_t len = (size_t)sb.st_size;
    void *p = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (len && p == MAP_FAILED)
        return fail(c, "mmap", strerror(errno));
    int rc = mog_client_store(c, key, cls, len ? p : "", len);
    if (len)
        munmap(p, len);
    return rc;
}

int mog_client_get_paths(struct mog_client *c, const char *key, int noverify, char **paths, int max)
{
    const char *kv[] = { "key", key, "noverify", noverify ? "1" : "0", NULL };
    struct mog_client_res *res;
    if (mog_client_request(c, "get_paths", kv, &res) < 0)
        return -1;
    const char *np = mog_client_res_get(res, "paths");
    int n = np ? atoi(np) : 0, out = 0;
    for (int i = 1; i <= n && out < max; i++) {
        char k[32];
        snprintf(k, sizeof k, "path%d", i);
        const char *v = mog_client_res_get(res, k);
        if (v)
            paths[out++] = strdup(v);
    }
    mog_client_res_free(res);
    return out;
}

int mog_client_fetch(struct mog_client *c, const char *key, void **data, size_t *len)
{
    char *paths[16];
    int n = mog_client_get_paths(c, key, 1, paths, 16);
    if (n < 0)
        return -1;
    int rc = fail(c, "no_paths", "no readable path");
    for (int i = 0; i < n; i++) {
        if (rc < 0) {
            struct mog_http_res hr;
            if (mog_http("GET", paths[i], NULL, 0, (size_t)1 << 40, c->o.timeout_ms * 10, &hr) == 0 &&
                hr.status == 200) {
                *data = hr.body;
                *len = hr.body_len;
                hr.body = NULL;
                rc = 0;
            }
            mog_http_res_free(&hr);
        }
        free(paths[i]);
    }
    return rc;
}

int mog_client_delete(struct mog_client *c, const char *key)
{
    const char *kv[] = { "key", key, NULL };
    struct mog_client_res *res;
    if (mog_client_request(c, "delete", kv, &res) < 0)
        return -1;
    mog_client_res_free(res);
    return 0;
}

int mog_client_rename(struct mog_client *c, const char *from, const char *to)
{
    const char *kv[] = { "from_key", from, "to_key", to, NULL };
    struct mog_client_res *res;
    if (mog_client_request(c, "rename", kv, &res) < 0)
        return -1;
    mog_client_res_free(res);
    return 0;
}

int mog_client_list_keys(struct mog_client *c, const char *prefix, const char *after, int limit, char **keys)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit > 0 && limit <= 1000 ? limit : 1000);
    const char *kv[] = { "prefix", prefix ? prefix : "", "limit", lim, after ? "after" : NULL, after, NULL };
    struct mog_client_res *res;
    if (mog_client_request(c, "list_keys", kv, &res) < 0)
        return strcmp(c->err, "none_match") ? -1 : 0;
    const char *kc = mog_client_res_get(res, "key_count");
    int n = kc ? atoi(kc) : 0, out = 0;
    for (int i = 1; i <= n && out < limit; i++) {
        char k[32];
        snprintf(k, sizeof k, "key_%d", i);
        const char *v = mog_client_res_get(res, k);
        if (v)
            keys[out++] = strdup(v);
    }
    mog_client_res_free(res);
    return out;
}
