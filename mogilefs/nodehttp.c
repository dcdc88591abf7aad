/* nodehttp: the tracker's HTTP to storage nodes — HEAD size checks, usage
 * files, the monitor's test writes, DELETEs, and replication copies — on
 * common/httpc, on the tracker's node-HTTP event loop (loop 1).
 *
 * The query and job threads keep their straight-line code: mog_http and
 * mog_http_copy hand a request to that loop (loop_call) and wait on a
 * condition variable for the answer; everything on the network runs on the
 * loop, with httpc's connect/read/write timeouts (node_timeout-based) as
 * the deadlines. A copy streams the source's GET body into the
 * destination's PUT as it arrives, pausing the source while more than
 * NH_COPY_WINDOW bytes wait to go out, and digests it on the way.
 *
 * A request is shared by its waiter and the loop (two references); the
 * last one out frees it, so a waiter that gives up (the tracker stopping)
 * never leaves the loop pointing at freed memory. Never call these from
 * the loop itself. */
#include "mogilefs/mogilefs.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "common/http.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/loop.h"

#define NH_COPY_WINDOW (4u << 20) /* copy bytes queued to the destination before the source pauses */

static struct {
    struct core_loop *loop;
    atomic_bool down; /* the loop is gone: waiters stop waiting */
} NH;

struct nh_url {
    char host[256];
    int port;
    char path[2048];
};

struct nh_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    atomic_int refs;
    bool copy;
    /* a plain request */
    enum http_method method;
    char method_str[16];
    struct nh_url u;
    struct evbuffer *out; /* head + body, built by the waiter */
    size_t max_body;
    uint32_t timeout_ms;
    struct evbuffer *body; /* the response body (GET 200) */
    bool digest_only;      /* mog_http_md5: digest the body as it comes, keep none */
    uint64_t got;
    bool ok;
    struct mog_http_res res;
    /* a copy */
    struct nh_url du;
    struct httpc *src, *dst;
    int open; /* httpc connections not yet closed */
    uint64_t total, sent;
    bool src_done, dst_ok, dst_opened;
    bool src_closing, dst_closing;
    EVP_MD_CTX *md;
    unsigned char md5[16];
    char err[256];
};

static int parse_url(const char *url, struct nh_url *u)
{
    if (strncmp(url, "http://", 7))
        return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    if (!slash || strlen(slash) >= sizeof u->path)
        return -1;
    const char *colon = memchr(h, ':', (size_t)(slash - h));
    size_t hl = (size_t)((colon ? colon : slash) - h);
    if (hl == 0 || hl >= sizeof u->host)
        return -1;
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';
    u->port = 80;
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (end != slash || p <= 0 || p > 65535)
            return -1;
        u->port = (int)p;
    }
    snprintf(u->path, sizeof u->path, "%s", slash);
    return 0;
}

static struct nh_req *req_new(void)
{
    struct nh_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->refs, 2);
    r->res.status = -1;
    r->res.length = -1;
    r->out = evbuffer_new();
    r->body = evbuffer_new();
    if (!r->out || !r->body) {
        if (r->out)
            evbuffer_free(r->out);
        if (r->body)
            evbuffer_free(r->body);
        free(r);
        return NULL;
    }
    return r;
}

static void req_unref(struct nh_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    evbuffer_free(r->out);
    evbuffer_free(r->body);
    if (r->md)
        EVP_MD_CTX_free(r->md);
    free(r->res.body);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* On the loop: the request is over; wake the waiter, drop the loop's ref. */
static void req_finish(struct nh_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->done = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

static const char *failure_text(const struct httpc *hc)
{
    switch (hc->failure) {
    case HTTPC_CONNECT_FAILED: return "connect failed";
    case HTTPC_BAD_RESPONSE: return "bad response";
    case HTTPC_UNEXPECTED: return "unexpected bytes";
    case HTTPC_OK: break;
    }
    return hc->state == HTTPC_WAIT_HEAD ? "no response" : "connection closed";
}

/* ---- one request ------------------------------------------------------------------------ */

static enum httpc_head_action one_head(struct httpc *hc, struct http_msg *resp)
{
    struct nh_req *r = hc->data;
    r->res.status = resp->status;
    size_t vl;
    const char *clv = http_header_value(resp, "Content-Length", &vl);
    if (clv)
        r->res.length = strtoll(clv, NULL, 10);
    if (r->method != HTTP_M_GET || resp->status != 200)
        return HTTPC_SKIP_BODY;
    if (r->digest_only) {
        r->md = EVP_MD_CTX_new();
        if (!r->md || !EVP_DigestInit_ex(r->md, EVP_md5(), NULL)) {
            snprintf(r->res.error, sizeof r->res.error, "out of memory");
            return HTTPC_CLOSE;
        }
        return HTTPC_READ_BODY;
    }
    if (r->res.length >= 0 && (uint64_t)r->res.length > r->max_body) {
        snprintf(r->res.error, sizeof r->res.error, "body too large");
        return HTTPC_CLOSE;
    }
    return HTTPC_READ_BODY;
}

static void one_body(struct httpc *hc, struct evbuffer *data)
{
    struct nh_req *r = hc->data;
    if (r->digest_only) {
        struct evbuffer_iovec v[8];
        int n;
        while ((n = evbuffer_peek(data, -1, NULL, v, 8)) > 0) {
            size_t took = 0;
            for (int i = 0; i < n && i < 8; i++) {
                EVP_DigestUpdate(r->md, v[i].iov_base, v[i].iov_len);
                took += v[i].iov_len;
            }
            r->got += took;
            evbuffer_drain(data, took);
        }
        return;
    }
    evbuffer_add_buffer(r->body, data);
    if (evbuffer_get_length(r->body) > r->max_body) {
        snprintf(r->res.error, sizeof r->res.error, "body too large");
        httpc_close(hc);
    }
}

static void one_done(struct httpc *hc, bool reusable)
{
    (void)reusable;
    struct nh_req *r = hc->data;
    if (!r->res.error[0]) {
        size_t n = evbuffer_get_length(r->body);
        if (r->digest_only && r->res.status == 200) {
            unsigned int dl = 0;
            unsigned char dig[EVP_MAX_MD_SIZE];
            if (r->res.length >= 0 && r->got != (uint64_t)r->res.length) {
                snprintf(r->res.error, sizeof r->res.error, "short body");
            } else if (r->md && EVP_DigestFinal_ex(r->md, dig, &dl)) {
                memcpy(r->md5, dig, 16);
                r->ok = true;
            }
        } else if (r->method == HTTP_M_GET && r->res.status == 200) {
            if (r->res.length >= 0 && n != (size_t)r->res.length) {
                snprintf(r->res.error, sizeof r->res.error, "short body");
            } else if ((r->res.body = malloc(n + 1)) != NULL) {
                evbuffer_remove(r->body, r->res.body, n);
                r->res.body[n] = '\0';
                r->res.body_len = n;
                r->ok = true;
            }
        } else {
            r->ok = true;
        }
    }
    httpc_close(hc);
}

static void one_close(struct httpc *hc, enum conn_close_reason why)
{
    (void)why;
    struct nh_req *r = hc->data;
    if (!r->ok && !r->res.error[0])
        snprintf(r->res.error, sizeof r->res.error, "%s %.64s:%d: %s", r->method_str, r->u.host, r->u.port,
                 failure_text(hc));
    req_finish(r);
}

static const struct httpc_ops one_ops = {
    .on_head = one_head,
    .on_body = one_body,
    .on_done = one_done,
    .on_close = one_close,
};

static struct httpc *connect_to(const struct nh_url *u, uint32_t timeout_ms, const struct httpc_ops *ops, void *data)
{
    struct httpc *hc = httpc_connect_host(NH.loop, u->host, u->port, timeout_ms, ops, data);
    if (hc) {
        hc->read_ms = timeout_ms;
        hc->write_ms = timeout_ms;
        if (hc->state != HTTPC_CONNECTING) /* connected at once: httpc applied none */
            conn_set_timeouts(hc->c, timeout_ms, timeout_ms);
    }
    return hc;
}

static void one_start(void *arg)
{
    struct nh_req *r = arg;
    struct httpc *hc = connect_to(&r->u, r->timeout_ms, &one_ops, r);
    if (!hc) {
        snprintf(r->res.error, sizeof r->res.error, "connect %.64s:%d failed", r->u.host, r->u.port);
        req_finish(r);
        return;
    }
    httpc_request(hc, r->method, r->out);
}

/* ---- a copy ------------------------------------------------------------------------------ */

/* Each side is closed once (a callback may end either). */
static void close_src(struct nh_req *r)
{
    if (r->src && !r->src_closing) {
        r->src_closing = true;
        httpc_close(r->src);
    }
}

static void close_dst(struct nh_req *r)
{
    if (r->dst && !r->dst_closing) {
        r->dst_closing = true;
        httpc_close(r->dst);
    }
}

/* The first error wins; both sides close. Head callbacks that call this
 * return HTTPC_SKIP_BODY: their conn is already closing. */
static void copy_fail(struct nh_req *r, const char *fmt, const char *what)
{
    if (!r->err[0])
        snprintf(r->err, sizeof r->err, fmt, what);
    close_src(r);
    close_dst(r);
}

static enum httpc_head_action dst_head(struct httpc *hc, struct http_msg *resp)
{
    struct nh_req *r = hc->data;
    if (resp->status < 200 || resp->status > 299 || !r->src_done) {
        char what[64];
        snprintf(what, sizeof what, "%d", resp->status);
        copy_fail(r, "dest answered %s", what);
        return HTTPC_SKIP_BODY;
    }
    r->dst_ok = true;
    return HTTPC_SKIP_BODY;
}

static void dst_done(struct httpc *hc, bool reusable)
{
    (void)reusable;
    close_dst(hc->data);
}

static void dst_drained(struct httpc *hc)
{
    struct nh_req *r = hc->data;
    if (r->src && !r->src_done)
        httpc_resume(r->src);
}

static void copy_closed(struct nh_req *r)
{
    if (--r->open == 0)
        req_finish(r);
}

static void dst_close(struct httpc *hc, enum conn_close_reason why)
{
    (void)why;
    struct nh_req *r = hc->data;
    r->dst = NULL;
    if (!r->dst_ok)
        copy_fail(r, "dest: %s", failure_text(hc));
    copy_closed(r);
}

static const struct httpc_ops dst_ops = {
    .on_head = dst_head,
    .on_done = dst_done,
    .on_drained = dst_drained,
    .on_close = dst_close,
};

static enum httpc_head_action src_head(struct httpc *hc, struct http_msg *resp)
{
    struct nh_req *r = hc->data;
    /* The PUT needs the length up front: a body of known length (an
     * empty file has none to read). */
    if (resp->status != 200 || (resp->body != HTTP_BODY_LENGTH && resp->body != HTTP_BODY_NONE)) {
        copy_fail(r, "source: %s", resp->status != 200 ? "bad status" : "no Content-Length");
        return HTTPC_SKIP_BODY;
    }
    r->total = resp->body == HTTP_BODY_LENGTH ? resp->content_length : 0;
    r->md = EVP_MD_CTX_new();
    if (!r->md || !EVP_DigestInit_ex(r->md, EVP_md5(), NULL)) {
        copy_fail(r, "%s", "out of memory");
        return HTTPC_SKIP_BODY;
    }
    r->dst = connect_to(&r->du, r->timeout_ms, &dst_ops, r);
    if (!r->dst) {
        copy_fail(r, "dest connect %.64s failed", r->du.host);
        return HTTPC_SKIP_BODY;
    }
    r->open++;
    r->dst_opened = true;
    struct evbuffer *head = evbuffer_new();
    if (!head) {
        copy_fail(r, "%s", "out of memory");
        return HTTPC_SKIP_BODY;
    }
    evbuffer_add_printf(head, "PUT %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\nContent-Length: %llu\r\n\r\n",
                        r->du.path, r->du.host, r->du.port, (unsigned long long)r->total);
    httpc_request(r->dst, HTTP_M_PUT, head);
    evbuffer_free(head);
    return HTTPC_READ_BODY;
}

static void src_body(struct httpc *hc, struct evbuffer *data)
{
    struct nh_req *r = hc->data;
    if (!r->dst)
        return;
    int n = evbuffer_peek(data, -1, NULL, NULL, 0);
    struct evbuffer_iovec stackv[16], *v = n <= 16 ? stackv : calloc((size_t)n, sizeof *v);
    if (!v) {
        copy_fail(r, "%s", "out of memory");
        return;
    }
    evbuffer_peek(data, -1, NULL, v, n);
    for (int i = 0; i < n; i++) {
        EVP_DigestUpdate(r->md, v[i].iov_base, v[i].iov_len);
        r->sent += v[i].iov_len;
    }
    if (v != stackv)
        free(v);
    httpc_send(r->dst, data);
    if (httpc_output_pending(r->dst) > NH_COPY_WINDOW)
        httpc_pause(hc);
}

static void src_done(struct httpc *hc, bool reusable)
{
    (void)reusable;
    struct nh_req *r = hc->data;
    r->src_done = true;
    unsigned int dl = 0;
    unsigned char dig[EVP_MAX_MD_SIZE];
    if (r->md && EVP_DigestFinal_ex(r->md, dig, &dl))
        memcpy(r->md5, dig, 16);
    if (r->sent != r->total)
        copy_fail(r, "%s", "source body short");
    close_src(r);
}

static void src_close(struct httpc *hc, enum conn_close_reason why)
{
    (void)why;
    struct nh_req *r = hc->data;
    r->src = NULL;
    if (!r->src_done)
        copy_fail(r, "source read failed: %s", failure_text(hc));
    copy_closed(r);
}

static const struct httpc_ops src_ops = {
    .on_head = src_head,
    .on_body = src_body,
    .on_done = src_done,
    .on_close = src_close,
};

static void copy_start(void *arg)
{
    struct nh_req *r = arg;
    r->src = connect_to(&r->u, r->timeout_ms, &src_ops, r);
    if (!r->src) {
        snprintf(r->err, sizeof r->err, "source connect %.64s:%d failed", r->u.host, r->u.port);
        req_finish(r);
        return;
    }
    r->open = 1;
    httpc_request(r->src, HTTP_M_GET, r->out);
}

/* ---- the waiting side ------------------------------------------------------------------- */

/* Hand r to the loop and wait for it (or for the loop to be gone). true
 * when it finished; the caller then reads r and unrefs it. */
static bool run(struct nh_req *r, void (*start)(void *))
{
    if (!NH.loop || atomic_load(&NH.down) || loop_stopping() || loop_call(NH.loop, start, r) < 0) {
        atomic_fetch_sub(&r->refs, 1); /* the loop never saw it */
        return false;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->done && !atomic_load(&NH.down)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    bool done = r->done;
    pthread_mutex_unlock(&r->mu);
    return done;
}

int mog_http_ex(const char *method, const char *url, const char *extra_headers, const void *body, size_t body_len,
                size_t max_body, int timeout_ms, struct mog_http_res *res)
{
    memset(res, 0, sizeof *res);
    res->status = -1;
    res->length = -1;
    struct nh_req *r = req_new();
    if (!r) {
        snprintf(res->error, sizeof res->error, "out of memory");
        return -1;
    }
    if (parse_url(url, &r->u) < 0) {
        snprintf(res->error, sizeof res->error, "bad url");
        atomic_store(&r->refs, 1);
        req_unref(r);
        return -1;
    }
    snprintf(r->method_str, sizeof r->method_str, "%s", method);
    r->method = http_method_parse(method, strlen(method));
    r->max_body = max_body;
    r->timeout_ms = timeout_ms > 0 ? (uint32_t)timeout_ms : 0;
    evbuffer_add_printf(r->out, "%s %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n", method, r->u.path, r->u.host,
                        r->u.port);
    if (body || r->method == HTTP_M_PUT)
        evbuffer_add_printf(r->out, "Content-Length: %zu\r\n", body_len);
    if (extra_headers)
        evbuffer_add(r->out, extra_headers, strlen(extra_headers));
    evbuffer_add(r->out, "\r\n", 2);
    if (body_len)
        evbuffer_add(r->out, body, body_len);
    if (!run(r, one_start)) {
        snprintf(res->error, sizeof res->error, "tracker stopping");
        req_unref(r);
        return -1;
    }
    *res = r->res;
    r->res.body = NULL; /* now the caller's */
    bool ok = r->ok;
    req_unref(r);
    return ok ? 0 : -1;
}

int mog_http(const char *method, const char *url, const void *body, size_t body_len, size_t max_body, int timeout_ms,
             struct mog_http_res *res)
{
    return mog_http_ex(method, url, NULL, body, body_len, max_body, timeout_ms, res);
}

void mog_http_res_free(struct mog_http_res *res)
{
    free(res->body);
    res->body = NULL;
}

int mog_http_md5(const char *url, int timeout_ms, unsigned char *md5, int64_t *length, int *status)
{
    struct nh_req *r = req_new();
    *status = -1;
    if (!r)
        return -1;
    if (parse_url(url, &r->u) < 0) {
        atomic_store(&r->refs, 1);
        req_unref(r);
        return -1;
    }
    snprintf(r->method_str, sizeof r->method_str, "GET");
    r->method = HTTP_M_GET;
    r->digest_only = true;
    r->timeout_ms = timeout_ms > 0 ? (uint32_t)timeout_ms : 0;
    evbuffer_add_printf(r->out, "GET %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", r->u.path, r->u.host,
                        r->u.port);
    if (!run(r, one_start)) {
        req_unref(r);
        return -1;
    }
    *status = r->res.status;
    bool ok = r->ok && r->res.status == 200;
    if (ok) {
        memcpy(md5, r->md5, 16);
        *length = (int64_t)r->got;
    }
    req_unref(r);
    return ok ? 0 : -1;
}

int mog_http_copy(const char *src_url, const char *dst_url, int timeout_ms, int64_t *length, unsigned char *md5,
                  char *err, size_t errlen)
{
    struct nh_req *r = req_new();
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->copy = true;
    if (parse_url(src_url, &r->u) < 0 || parse_url(dst_url, &r->du) < 0) {
        snprintf(err, errlen, "bad url");
        atomic_store(&r->refs, 1);
        req_unref(r);
        return -1;
    }
    /* The timeout bounds each step (connect, silence, a stalled write), so
     * a large file gets timeout_ms between bytes, not in all. */
    r->timeout_ms = timeout_ms > 0 ? (uint32_t)timeout_ms : 0;
    evbuffer_add_printf(r->out, "GET %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", r->u.path, r->u.host,
                        r->u.port);
    if (!run(r, copy_start)) {
        snprintf(err, errlen, "tracker stopping");
        req_unref(r);
        return -1;
    }
    int rc = -1;
    if (!r->err[0] && r->src_done && r->dst_ok) {
        *length = (int64_t)r->total;
        if (md5)
            memcpy(md5, r->md5, 16);
        rc = 0;
    } else {
        snprintf(err, errlen, "%s", r->err[0] ? r->err : "copy failed");
        if (r->dst_opened)
            *length = (int64_t)r->sent; /* the caller deletes what may have reached the destination */
    }
    req_unref(r);
    return rc;
}

void mog_nodehttp_start(struct core_loop *loop)
{
    NH.loop = loop;
    atomic_store(&NH.down, false);
}

void mog_nodehttp_stop(void) { atomic_store(&NH.down, true); }
