/* libmogile: the MogileFS client library (see libmogile.h).
 *
 * Tracker connections, deadlines and dead-tracker retry are common/client's,
 * and so is the storage I/O: one blocking HTTP/1.0 request per connection
 * (lm_http below) on common/client's connect, send and buffered reads,
 * with responses parsed by common/http. */
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

#include "common/client.h"
#include "common/http.h"
#include "mogilefs/mogilefs.h"

struct mog_client {
    struct client_server *srv; /* the trackers (common/client) */
    int nsrv;
    int cur; /* index of the connected tracker, -1 none */
    char *domain;
    struct mog_client_options o;
    char err[64];
    char errtext[512];
};

struct mog_client_res {
    struct mog_req req;
};

/* One request to a storage node: "http://host:port/path". status gets the
 * HTTP status; a GET 200's body (at most max_body bytes) goes to *body
 * (malloc'd, NUL-ended) when body is not NULL. 0, or -1 on a transport
 * failure or a body over max_body. */
static int lm_http(const char *method, const char *url, const void *data, size_t len, size_t max_body, int timeout_ms,
                   int *status, char **body, size_t *body_len)
{
    *status = -1;
    if (body)
        *body = NULL;
    if (strncmp(url, "http://", 7))
        return -1;
    const char *hp = url + 7, *path = strchr(hp, '/');
    if (!path || path == hp || (size_t)(path - hp) >= 300)
        return -1;
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%.*s", (int)(path - hp), hp);
    struct client_server *srv = NULL;
    char err[256];
    if (client_parse_servers(hostport, 80, false, &srv, err, sizeof err) != 1) {
        if (srv)
            client_servers_free(srv, 1);
        return -1;
    }
    uint64_t deadline = client_deadline(timeout_ms);
    int rc = -1;
    char head[2400];
    int hl = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n", method, path, hostport);
    if (data || !strcmp(method, "PUT"))
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "Content-Length: %zu\r\n", len);
    hl += snprintf(head + hl, sizeof head - (size_t)hl, "\r\n");
    enum http_method m = http_method_parse(method, strlen(method));
    if (hl >= (int)sizeof head || client_connect(srv, timeout_ms) != CLIENT_OK ||
        client_send_all(srv, head, (size_t)hl, deadline) != CLIENT_OK ||
        (len && client_send_all(srv, data, len, deadline) != CLIENT_OK))
        goto out;
    struct http_msg msg;
    int h;
    for (;;) {
        size_t have;
        const char *buf = client_buffered(srv, &have);
        h = have ? http_parse_response(buf, have, m, NULL, &msg) : 0;
        if (h != 0)
            break;
        if (client_read_more(srv, deadline) != CLIENT_OK)
            goto out;
    }
    if (h < 0)
        goto out;
    *status = msg.status;
    int64_t clen = msg.body == HTTP_BODY_LENGTH ? (int64_t)msg.content_length : -1;
    client_consume(srv, (size_t)h);
    if (!body || m != HTTP_M_GET || msg.status != 200) {
        rc = 0;
        goto out;
    }
    if (clen >= 0) {
        char *p;
        if ((uint64_t)clen > max_body || client_read_block(srv, (size_t)clen, deadline, &p) != CLIENT_OK)
            goto out;
        if (!(*body = malloc((size_t)clen + 1)))
            goto out;
        memcpy(*body, p, (size_t)clen);
        (*body)[clen] = '\0';
        *body_len = (size_t)clen;
        rc = 0;
        goto out;
    }
    /* No length: the body ends with the connection. */
    for (;;) {
        size_t have;
        client_buffered(srv, &have);
        if (have > max_body)
            goto out;
        int r = client_read_more(srv, deadline);
        if (r == CLIENT_CLOSED)
            break;
        if (r != CLIENT_OK)
            goto out;
    }
    size_t have;
    const char *p = client_buffered(srv, &have);
    if (have > max_body || !(*body = malloc(have + 1)))
        goto out;
    memcpy(*body, p, have);
    (*body)[have] = '\0';
    *body_len = have;
    rc = 0;
out:
    client_close(srv);
    client_servers_free(srv, 1);
    return rc;
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
    c->cur = -1;
    if (opts)
        c->o = *opts;
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = 1000;
    if (c->o.timeout_ms <= 0)
        c->o.timeout_ms = 3000;
    if (c->o.dead_retry_ms <= 0)
        c->o.dead_retry_ms = 5000;
    char perr[128];
    c->nsrv = client_parse_servers(trackers ? trackers : "", MOG_DEFAULT_PORT, false, &c->srv, perr, sizeof perr);
    if (c->nsrv < 1) {
        free(c);
        return NULL;
    }
    c->domain = domain ? strdup(domain) : NULL;
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    return c;
}

static void disconnect(struct mog_client *c)
{
    if (c->cur >= 0)
        client_close(&c->srv[c->cur]);
    c->cur = -1;
}

void mog_client_free(struct mog_client *c)
{
    if (!c)
        return;
    disconnect(c);
    client_servers_free(c->srv, c->nsrv);
    free(c->domain);
    free(c);
}

const char *mog_client_error(const struct mog_client *c) { return c->err; }
const char *mog_client_error_text(const struct mog_client *c) { return c->errtext; }

/* Trackers in random order (as MogileFS::Backend), skipping dead ones
 * until their retry time; a failed one is dead for dead_retry_ms. */
static int ensure_connected(struct mog_client *c)
{
    if (c->cur >= 0)
        return 0;
    int order[64], n = c->nsrv < 64 ? c->nsrv : 64;
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(random() % (i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    const char *why = "no tracker reachable";
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            struct client_server *s = &c->srv[order[i]];
            if (pass == 1)
                s->dead = false; /* last resort: every tracker was dead */
            if (client_connect(s, c->o.connect_timeout_ms) == CLIENT_OK) {
                c->cur = order[i];
                return 0;
            }
            if (s->error[0])
                why = s->error;
            client_failed(s, 1, c->o.dead_retry_ms);
        }
    return fail(c, "connect", why);
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
    /* A connection that went stale gets one reconnect (another tracker). */
    int rc = -1;
    char *r = NULL;
    for (int attempt = 0; attempt < 2 && rc < 0; attempt++) {
        if (ensure_connected(c) < 0)
            break;
        struct client_server *s = &c->srv[c->cur];
        uint64_t deadline = client_deadline(c->o.timeout_ms);
        size_t rl;
        int st = client_send_all(s, line, len, deadline);
        if (st == CLIENT_OK)
            st = client_read_line(s, deadline, (size_t)MOG_MAX_LINE * 16, &r, &rl);
        if (st == CLIENT_OK) {
            client_ok(s);
            rc = 0;
            break;
        }
        fail(c, st == CLIENT_TIMEOUT ? "timeout" : "connection", client_strerror(st));
        client_failed(s, 1, c->o.dead_retry_ms);
        c->cur = -1;
    }
    free(line);
    if (rc < 0)
        return -1;
    if (!strncmp(r, "OK", 2) && (r[2] == ' ' || r[2] == '\0')) {
        struct mog_client_res *out = calloc(1, sizeof *out);
        if (!out)
            return fail(c, "nomem", NULL);
        const char *args = r + 2;
        while (*args == ' ')
            args++;
        size_t al = strlen(args);
        char *tmp = malloc(al + 3);
        if (!tmp) {
            free(out);
            return fail(c, "nomem", NULL);
        }
        /* Reuse the request parser: "x <args>". */
        int n = snprintf(tmp, al + 3, "x %s", args);
        enum mog_parse_status ps = mog_parse_request(tmp, (size_t)n, &out->req);
        free(tmp);
        if (ps != MOG_PARSE_OK) {
            free(out);
            return fail(c, "bad_reply", "unparsable reply");
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
        int st;
        int ok = lm_http("PUT", path, data, len, 0, c->o.timeout_ms * 10, &st, NULL, NULL) == 0 && st / 100 == 2;
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
            int st;
            char *b = NULL;
            size_t bl = 0;
            if (lm_http("GET", paths[i], NULL, 0, (size_t)1 << 40, c->o.timeout_ms * 10, &st, &b, &bl) == 0 &&
                st == 200) {
                *data = b;
                *len = bl;
                b = NULL;
                rc = 0;
            }
            free(b);
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
