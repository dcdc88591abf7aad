/* reproxy: X-REPROXY-URL (a list of URLs tried in order, read with
 * common/httpc), X-REPROXY-FILE (sent with sendfile) and the
 * X-REPROXY-CACHE-FOR cache, answering the client with the backend's own
 * headers and the status, length and range of what is sent. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

/* ---- X-REPROXY-CACHE-FOR ----
 * As Perlbal: a backend answering X-REPROXY-URL with X-REPROXY-CACHE-FOR: N
 * lets perlbal reproxy the same Host + URI for N seconds without asking a
 * backend. At most reproxy_cache_maxsize entries per service, in a
 * direct-mapped table (a colliding entry replaces the older one); shared by
 * the loops under its own lock. */
struct rc_entry {
    char *key;
    char *urls;
    char *hdrs; /* the backend's headers for the client */
    bool has_ctype, has_lm;
    int64_t expected;
    int64_t expires_ms;
};

struct pb_reproxy_cache {
    pthread_mutex_t lock;
    int size;
    struct rc_entry *e;
    _Atomic uint64_t hits;
};

static uint32_t rc_hash(const char *k)
{
    uint32_t h = 2166136261u;
    for (; *k; k++)
        h = (h ^ (uint8_t)*k) * 16777619u;
    return h;
}

static struct pb_reproxy_cache *rc_get(struct pb_service *svc, bool create)
{
    struct pb_reproxy_cache *rc = __atomic_load_n(&svc->reproxy_cache, __ATOMIC_ACQUIRE);
    if (rc || !create)
        return rc;
    pthread_mutex_lock(&pb_lock);
    rc = svc->reproxy_cache;
    if (!rc && svc->reproxy_cache_maxsize > 0 && (rc = calloc(1, sizeof *rc))) {
        rc->size = svc->reproxy_cache_maxsize;
        rc->e = calloc((size_t)rc->size, sizeof *rc->e);
        pthread_mutex_init(&rc->lock, NULL);
        if (!rc->e) {
            free(rc);
            rc = NULL;
        } else {
            __atomic_store_n(&svc->reproxy_cache, rc, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&pb_lock);
    return rc;
}

void pb_reproxy_cache_store(struct pb_service *svc, struct pb_client *cl, const char *urls, size_t ul, int64_t expected,
                            long secs)
{
    const char *key = cl->cache_key;
    if (secs <= 0 || svc->reproxy_cache_maxsize <= 0)
        return;
    struct pb_reproxy_cache *rc = rc_get(svc, true);
    if (!rc)
        return;
    char *k = strdup(key), *u = strndup(urls, ul), *h = strdup(cl->rp_hdrs ? cl->rp_hdrs : "");
    if (!k || !u || !h) {
        free(k);
        free(u);
        free(h);
        return;
    }
    pthread_mutex_lock(&rc->lock);
    struct rc_entry *e = &rc->e[rc_hash(key) % (uint32_t)rc->size];
    free(e->key);
    free(e->urls);
    free(e->hdrs);
    e->key = k;
    e->urls = u;
    e->hdrs = h;
    e->has_ctype = cl->rp_has_ctype;
    e->has_lm = cl->rp_has_lm;
    e->expected = expected;
    e->expires_ms = pb_now_ms() + (int64_t)secs * 1000;
    pthread_mutex_unlock(&rc->lock);
}

/* The value of a header line in a block of "Name: value\r\n" lines. */
static const char *hdr_line_value(const char *hdrs, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = hdrs; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            *len = eol ? (size_t)(eol - v) : strlen(v);
            return v;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

bool pb_proxy_from_cache(struct pb_client *cl, const char *ims, size_t ims_len)
{
    struct pb_reproxy_cache *rc = rc_get(cl->svc, false);
    if (!rc)
        return false;
    char *urls = NULL;
    int64_t expected = -1;
    pthread_mutex_lock(&rc->lock);
    struct rc_entry *e = &rc->e[rc_hash(cl->cache_key) % (uint32_t)rc->size];
    if (e->key && !strcmp(e->key, cl->cache_key)) {
        if (pb_now_ms() < e->expires_ms) {
            urls = strdup(e->urls);
            expected = e->expected;
            free(cl->rp_hdrs);
            cl->rp_hdrs = strdup(e->hdrs);
            cl->rp_has_ctype = e->has_ctype;
            cl->rp_has_lm = e->has_lm;
        } else {
            free(e->key);
            free(e->urls);
            free(e->hdrs);
            e->key = e->urls = e->hdrs = NULL;
        }
    }
    pthread_mutex_unlock(&rc->lock);
    if (!urls)
        return false;
    atomic_fetch_add_explicit(&rc->hits, 1, memory_order_relaxed);
    /* as Perlbal: If-Modified-Since equal to the cached Last-Modified (an
     * IE "; length=N" suffix aside) is answered 304 without a reproxy */
    size_t lml;
    const char *lm = ims && cl->rp_hdrs ? hdr_line_value(cl->rp_hdrs, "last-modified", &lml) : NULL;
    if (lm) {
        const char *semi = memchr(ims, ';', ims_len);
        size_t il = semi ? (size_t)(semi - ims) : ims_len;
        while (il > 0 && ims[il - 1] == ' ')
            il--;
        if (il == lml && !memcmp(ims, lm, il)) {
            free(urls);
            bool keep = pb_client_can_persist(cl);
            pb_client_enter(cl, CL_RESPONDING);
            pb_client_response_head(cl, 304, NULL, 0, keep, NULL);
            pb_client_done(cl, keep);
            return true;
        }
    }
    pb_client_enter(cl, CL_REPROXY);
    pb_proxy_reproxy_urls(cl, urls, expected);
    free(urls);
    return true;
}

uint64_t pb_proxy_cache_hits(struct pb_service *svc)
{
    struct pb_reproxy_cache *rc = rc_get(svc, false);
    return rc ? atomic_load(&rc->hits) : 0;
}

/* Response head from the backend: reproxy or pass on. */
/* As Perlbal: the client of a reproxied response gets the backend's own
 * headers (Content-Type, Cache-Control, Set-Cookie, ...) with the length,
 * range and status of what is actually sent. */
void pb_reproxy_keep_headers(struct pb_client *cl, struct http_msg *resp)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    cl->rp_has_ctype = cl->rp_has_lm = false;
    for (int i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
#define IS(n) (h->name_len == sizeof(n) - 1 && strncasecmp(h->name, n, sizeof(n) - 1) == 0)
        if (IS("connection") || IS("keep-alive") || IS("content-length") || IS("transfer-encoding") ||
            IS("content-range") || IS("accept-ranges") || (h->name_len > 10 && !strncasecmp(h->name, "x-reproxy-", 10)))
            continue;
        if (IS("content-type"))
            cl->rp_has_ctype = true;
        if (IS("last-modified"))
            cl->rp_has_lm = true;
#undef IS
        evbuffer_add(b, h->name, h->name_len);
        evbuffer_add(b, ": ", 2);
        evbuffer_add(b, h->value, h->value_len);
        evbuffer_add(b, "\r\n", 2);
    }
    free(cl->rp_hdrs);
    size_t n = evbuffer_get_length(b);
    cl->rp_hdrs = malloc(n + 1);
    if (cl->rp_hdrs) {
        evbuffer_remove(b, cl->rp_hdrs, n);
        cl->rp_hdrs[n] = 0;
    }
    evbuffer_free(b);
}

/* The head of a reproxied response: status, the backend's headers, then
 * ours (extra), Content-Length and Connection. */
static void reproxy_head(struct pb_client *cl, int status, int64_t content_length, const char *extra, bool keep)
{
    struct evbuffer *out = httpd_tx();
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\n", cl->h->version_minor, status, http_reason(status));
    if (cl->rp_hdrs && *cl->rp_hdrs)
        evbuffer_add(out, cl->rp_hdrs, strlen(cl->rp_hdrs));
    else
        evbuffer_add_printf(out, "Date: %s\r\n%s", httpd_date_now(),
                            cl->svc->server_tokens ? "Server: Perlbal\r\n" : "");
    if (extra)
        evbuffer_add(out, extra, strlen(extra));
    if (content_length >= 0)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)content_length);
    if (!keep)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (cl->h->version_minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
    cl->h->response_started = true;
}

/* ---- reproxy ---- */

enum rp_state { RP_CONNECTING, RP_HEAD, RP_BODY };

struct pb_reproxy {
    struct pb_client *cl;
    char *urls; /* the whole list */
    char *next; /* next URL to try */
    int64_t expected;
    struct httpc *hc; /* the source being read (common/httpc) */
    enum rp_state state;
};

static enum httpc_head_action rp_on_head(struct httpc *hc, struct http_msg *resp);
static void rp_on_body(struct httpc *hc, struct evbuffer *data);
static void rp_on_done(struct httpc *hc, bool reusable);
static void rp_on_close(struct httpc *hc, enum conn_close_reason why);
static const struct httpc_ops reproxy_ops = {
    .on_head = rp_on_head,
    .on_body = rp_on_body,
    .on_done = rp_on_done,
    .on_close = rp_on_close,
};
static void rp_try_next(struct pb_reproxy *rp);

static void rp_detach_conn(struct pb_reproxy *rp)
{
    if (rp->hc) {
        rp->hc->data = NULL;
        httpc_close(rp->hc);
        rp->hc = NULL;
    }
}

void pb_reproxy_free(struct pb_client *cl)
{
    struct pb_reproxy *rp = cl->reproxy;
    if (!rp)
        return;
    cl->reproxy = NULL;
    rp_detach_conn(rp);
    free(rp->urls);
    free(rp);
}

void pb_reproxy_resume(struct pb_client *cl)
{
    if (cl->reproxy && cl->reproxy->hc)
        httpc_resume(cl->reproxy->hc);
}

static void rp_finish(struct pb_reproxy *rp, bool keep)
{
    struct pb_client *cl = rp->cl;
    pb_reproxy_free(cl);
    pb_client_done(cl, keep);
}

/* "http://host:port/path" -> address + path. Host: an IPv4 address,
 * "[IPv6]", "localhost" or a DNS name (resolved at connect, without
 * blocking). hostport gets "host:port" as written (for the Host header). */
static int parse_url(const char *url, size_t len, struct pool_node *addr, char *hostport, size_t hplen, char *path,
                     size_t pathlen)
{
    if (len < 8 || strncasecmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *e = url + len;
    const char *slash = memchr(h, '/', (size_t)(e - h));
    const char *he = slash ? slash : e;
    size_t hl = (size_t)(he - h);
    if (hl == 0 || hl >= hplen)
        return -1;
    memcpy(hostport, h, hl);
    hostport[hl] = 0;
    if (pool_node_init_host(addr, hostport, 80) < 0)
        return -1;
    size_t pl = slash ? (size_t)(e - slash) : 1;
    if (pl >= pathlen)
        return -1;
    if (slash)
        memcpy(path, slash, pl);
    else
        path[0] = '/';
    path[pl] = 0;
    return 0;
}

static void rp_try_next(struct pb_reproxy *rp)
{
    rp_detach_conn(rp);
    while (rp->next && *rp->next) {
        char *u = rp->next;
        while (*u == ' ')
            u++;
        if (!*u)
            break;
        char *sp = strchr(u, ' ');
        size_t ul = sp ? (size_t)(sp - u) : strlen(u);
        rp->next = sp ? sp + 1 : u + ul;
        struct pool_node addr;
        char host[256], path[4096];
        if (parse_url(u, ul, &addr, host, sizeof host, path, sizeof path) < 0)
            continue;
        rp->state = RP_CONNECTING;
        struct core_loop *loop = loop_get(rp->cl->loop_index);
        struct httpc *hc =
            addr.host[0]
                ? httpc_connect_host(loop, addr.host, addr.port, BE_CONNECT_TIMEOUT_MS, &reproxy_ops, rp)
                : httpc_connect(loop, (struct sockaddr *)&addr.sa, addr.salen, BE_CONNECT_TIMEOUT_MS, &reproxy_ops, rp);
        if (!hc)
            continue;
        rp->hc = hc;
        hc->read_ms = BE_READ_TIMEOUT_MS;
        hc->write_ms = BE_CONNECT_TIMEOUT_MS;
        struct evbuffer *b = httpd_tx2();
        evbuffer_add_printf(b, "GET %s HTTP/1.0\r\nHost: %s\r\n%s%s%sConnection: close\r\n\r\n", path, host,
                            rp->cl->range ? "Range: " : "", rp->cl->range ? rp->cl->range : "",
                            rp->cl->range ? "\r\n" : "");
        httpc_request(hc, HTTP_M_GET, b);
        return;
    }
    struct pb_client *cl = rp->cl;
    pb_reproxy_free(cl);
    pb_client_error(cl, 503, "Reproxy failed");
}

void pb_proxy_reproxy_urls(struct pb_client *cl, const char *urls, int64_t expected)
{
    struct pb_reproxy *rp = calloc(1, sizeof *rp);
    if (!rp) {
        pb_client_error(cl, 500, NULL);
        return;
    }
    rp->cl = cl;
    rp->urls = strdup(urls);
    rp->next = rp->urls;
    rp->expected = expected;
    cl->reproxy = rp;
    rp_try_next(rp);
}

static enum httpc_head_action rp_on_head(struct httpc *hc, struct http_msg *resp)
{
    struct pb_reproxy *rp = hc->data;
    if (!rp)
        return HTTPC_CLOSE;
    struct pb_client *cl = rp->cl;
    /* 200, or 206/416 for a Range; anything else (or a size other than
     * X-REPROXY-EXPECTED-SIZE) moves on to the next URL */
    bool ok_status = resp->status == 200 || resp->status == 206 || resp->status == 416;
    if (!ok_status || resp->body == HTTP_BODY_CHUNKED ||
        (rp->expected >= 0 && resp->status == 200 && resp->body == HTTP_BODY_LENGTH &&
         (int64_t)resp->content_length != rp->expected)) {
        rp_try_next(rp);
        return HTTPC_CLOSE;
    }
    bool keep = pb_client_can_persist(cl) && resp->body != HTTP_BODY_CLOSE;
    cl->h->keep_alive = keep;
    char extra[512] = "";
    size_t el = 0, vl;
    const char *v;
    if (!cl->rp_has_ctype && (v = http_header_value(resp, "content-type", &vl)))
        el += (size_t)snprintf(extra + el, sizeof extra - el, "Content-Type: %.*s\r\n", (int)(vl < 128 ? vl : 128), v);
    if (!cl->rp_has_lm && (v = http_header_value(resp, "last-modified", &vl)) && el < sizeof extra)
        el += (size_t)snprintf(extra + el, sizeof extra - el, "Last-Modified: %.*s\r\n", (int)(vl < 64 ? vl : 64), v);
    if ((v = http_header_value(resp, "content-range", &vl)) && el < sizeof extra)
        el += (size_t)snprintf(extra + el, sizeof extra - el, "Content-Range: %.*s\r\n", (int)(vl < 96 ? vl : 96), v);
    if ((v = http_header_value(resp, "accept-ranges", &vl)) && el < sizeof extra)
        snprintf(extra + el, sizeof extra - el, "Accept-Ranges: %.*s\r\n", (int)(vl < 32 ? vl : 32), v);
    reproxy_head(cl, resp->status,
                 resp->body == HTTP_BODY_LENGTH ? (int64_t)resp->content_length
                 : resp->body == HTTP_BODY_NONE ? 0
                                                : -1,
                 extra, keep);
    rp->state = RP_BODY;
    if (cl->h->method == HTTP_M_HEAD || resp->body == HTTP_BODY_NONE) {
        rp_finish(rp, keep);
        return HTTPC_CLOSE;
    }
    pb_client_flush(cl);
    return HTTPC_READ_BODY;
}

static void rp_on_body(struct httpc *hc, struct evbuffer *data)
{
    struct pb_reproxy *rp = hc->data;
    if (!rp)
        return;
    struct pb_client *cl = rp->cl;
    evbuffer_add_buffer(httpd_tx(), data);
    pb_client_flush(cl);
    uint64_t limit = cl->svc->buffer_size_reproxy_url ? cl->svc->buffer_size_reproxy_url : 50 * 1024;
    if (evbuffer_get_length(conn_out(cl->c)) > limit)
        httpc_pause(hc);
}

static void rp_on_done(struct httpc *hc, bool reusable)
{
    (void)reusable;
    struct pb_reproxy *rp = hc->data;
    if (!rp)
        return;
    rp_finish(rp, rp->cl->h->keep_alive);
}

static void rp_on_close(struct httpc *hc, enum conn_close_reason why)
{
    (void)why;
    struct pb_reproxy *rp = hc->data;
    if (!rp)
        return;
    rp->hc = NULL;
    struct pb_client *cl = rp->cl;
    if (rp->state == RP_BODY) { /* cut off mid-body: the client cannot get a whole answer */
        pb_reproxy_free(cl);
        conn_close(cl->c);
        return;
    }
    rp_try_next(rp);
}

void pb_proxy_reproxy_file(struct pb_client *cl, const char *path, int64_t expected)
{
    /* open/fstat run on the loop: they are metadata calls on local disk
     * (Perlbal does them through AIO); the bytes go out with sendfile. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0 ||
        (expected >= 0 && st.st_size != expected)) {
        if (fd >= 0)
            close(fd);
        pb_client_error(cl, 404, NULL);
        return;
    }
    bool keep = pb_client_can_persist(cl);
    uint64_t size = (uint64_t)st.st_size, first = 0, last = size - 1;
    int status = 200;
    char extra[512];
    size_t el = 0;
    if (cl->range) {
        enum http_range_result rr = http_parse_range(cl->range, strlen(cl->range), size, &first, &last);
        if (rr == HTTP_RANGE_UNSATISFIABLE || rr == HTTP_RANGE_INVERTED) { /* both 416, as Perlbal */
            close(fd);
            snprintf(extra, sizeof extra, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
            reproxy_head(cl, 416, 0, extra, keep);
            pb_client_done(cl, keep);
            return;
        }
        if (rr == HTTP_RANGE_OK)
            status = 206;
    }
    el += (size_t)snprintf(extra + el, sizeof extra - el, "Accept-Ranges: bytes\r\n");
    if (status == 206)
        el += (size_t)snprintf(extra + el, sizeof extra - el, "Content-Range: bytes %llu-%llu/%llu\r\n",
                               (unsigned long long)first, (unsigned long long)last, (unsigned long long)size);
    if (!cl->rp_has_ctype)
        el += (size_t)snprintf(extra + el, sizeof extra - el, "Content-Type: %s\r\n", httpd_mime_type(path));
    if (!cl->rp_has_lm) {
        char date[HTTP_DATE_LEN + 1];
        http_date_format(st.st_mtime, date);
        snprintf(extra + el, sizeof extra - el, "Last-Modified: %s\r\n", date);
    }
    uint64_t len = last - first + 1;
    reproxy_head(cl, status, (int64_t)len, extra, keep);
    if (cl->svc->nplugins)
        pb_plugins_file_sent(cl->svc, cl, true);
    if (cl->h->method == HTTP_M_HEAD || len == 0) {
        close(fd);
    } else if (httpd_tx_add_file(cl->h->tls, fd, (int64_t)first, (int64_t)len) < 0) { /* sendfile */
        close(fd);
        evbuffer_drain(httpd_tx(), evbuffer_get_length(httpd_tx())); /* the head was not sent yet */
        pb_client_error(cl, 500, "Cannot send the file");
        return;
    }
    pb_client_done(cl, keep);
}
