/* httpd: the server side of HTTP/1.1 connections, and file serving.
 *
 * A connection is driven by h_on_read: heads are parsed (pure, common/http)
 * while no request is in progress; while one is, input belongs to the body
 * (a PUT this file writes, or the daemon's on_input). Responses are built in
 * a per-thread scratch buffer and sent with one direct write when nothing
 * is queued.
 *
 * Disk work of GET/HEAD goes through one function, disk_run(): the job's
 * work() touches only the disk and the job (never the conn) and runs on a
 * common/work thread when the httpd_files has a pool (except for a hit in
 * the open-file cache: a file served within the last second); its done()
 * runs back on the loop. Without a pool both run in turn on the loop (Perlbal's
 * aio_mode "none"). A conn closed while its job is out is freed by the
 * job's return. A PUT's disk work runs in put jobs through the same
 * function (see "PUT"), and so does DELETE's. */
#include "common/httpd.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "common/work.h"

static __thread struct http_msg scratch_req;
static __thread char *head_copy;
static __thread struct evbuffer *tx1, *tx2, *txf;
static __thread time_t date_at;
static __thread char date_buf[HTTP_DATE_LEN + 1];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct evbuffer *httpd_tx(void)
{
    if (!tx1)
        tx1 = evbuffer_new();
    return tx1;
}

/* libevent decides when a file is added to a buffer whether it will go out
 * with sendfile(): only if that buffer is flagged as draining to a socket;
 * otherwise it maps the file and copies it. httpd_tx() is not flagged (its
 * bytes may end up in a TLS filter or be copied), so a plain connection's
 * file is added to txf (flagged), then moved whole into httpd_tx(): the
 * chain stays a sendfile chain, written by httpd_send or by the socket
 * bufferevent. txf is empty between calls: never shared by two conns. */
int httpd_tx_add_file(bool tls, int fd, int64_t offset, int64_t length)
{
    return httpd_add_file(httpd_tx(), tls, fd, offset, length);
}

int httpd_add_file(struct evbuffer *dst, bool tls, int fd, int64_t offset, int64_t length)
{
    /* (conn's io_uring path writes an output holding a file segment with
     * evbuffer_write, so the segment may be a sendfile one there too) */
    if (tls)
        return evbuffer_add_file(dst, fd, (ev_off_t)offset, (ev_off_t)length);
    if (!txf) {
        txf = evbuffer_new();
        if (!txf)
            return -1;
        evbuffer_set_flags(txf, EVBUFFER_FLAG_DRAINS_TO_FD);
    }
    if (evbuffer_add_file(txf, fd, (ev_off_t)offset, (ev_off_t)length) < 0)
        return -1; /* libevent closed nothing: fd is still the caller's */
    return evbuffer_add_buffer(dst, txf);
}

struct evbuffer *httpd_tx2(void)
{
    if (!tx2)
        tx2 = evbuffer_new();
    return tx2;
}

static void fcache_free(void);

void httpd_thread_exit(void)
{
    free(head_copy);
    head_copy = NULL;
    if (tx1)
        evbuffer_free(tx1);
    if (tx2)
        evbuffer_free(tx2);
    if (txf)
        evbuffer_free(txf);
    tx1 = tx2 = txf = NULL;
    fcache_free();
}

void httpd_send(struct core_conn *c, struct evbuffer *buf, bool tls)
{
    struct evbuffer *out = conn_out(c);
    /* With io_uring the loop's end-of-iteration batch sends it together
     * with the other conns' output: no writev of its own. */
    if (!tls && c->fd >= 0 && evbuffer_get_length(out) == 0 && !conn_is_closing(c) && !conn_io_batched(c)) {
        while (evbuffer_get_length(buf) > 0)
            if (evbuffer_write(buf, c->fd) <= 0)
                break;
    }
    if (evbuffer_get_length(buf) > 0)
        evbuffer_add_buffer(out, buf);
}

void httpd_flush(struct httpd_conn *h)
{
    struct evbuffer *tx = httpd_tx();
    if (evbuffer_get_length(tx) > 0)
        httpd_send(h->c, tx, h->tls);
}

const char *httpd_date_now(void)
{
    time_t now = time(NULL);
    if (now != date_at) {
        date_at = now;
        http_date_format(now, date_buf);
    }
    return date_buf;
}

/* ---- the connection ---- */

static int h_on_read(struct core_conn *c);
static void request_end(struct httpd_conn *h);
static void h_on_drained(struct core_conn *c);
static bool h_on_eof(struct core_conn *c);
static void h_on_close(struct core_conn *c, enum conn_close_reason why);
static void put_data(struct httpd_conn *h);
static void put_abort(struct httpd_conn *h);

static const struct conn_ops httpd_conn_ops = {
    .name = "httpd",
    .on_read = h_on_read,
    .on_drained = h_on_drained,
    .on_eof = h_on_eof,
    .on_close = h_on_close,
};

static void idle_timeouts(struct httpd_conn *h, bool between)
{
    uint32_t ms = between && h->keepalive_ms ? h->keepalive_ms : h->idle_ms;
    conn_set_timeouts(h->c, ms, HTTPD_WRITE_TIMEOUT_MS);
}

struct httpd_conn *httpd_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen,
                                void *tls_ctx, const struct httpd_ops *ops, void *data)
{
    struct httpd_conn *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        return NULL;
    }
    h->ops = ops;
    h->data = data;
    h->idle_ms = HTTPD_HEAD_DEADLINE_MS;
    h->persist = true;
    h->tls = tls_ctx != NULL;
    struct core_conn *c;
    if (tls_ctx) {
        struct bufferevent *bev = tls_accept_bev(tls_ctx, loop->base, fd);
        if (!bev) {
            close(fd);
            free(h);
            return NULL;
        }
        c = conn_new_bev(loop, bev, sa, salen, &httpd_conn_ops, h);
    } else {
        c = conn_new(loop, fd, sa, salen, &httpd_conn_ops, h);
    }
    if (!c) {
        free(h);
        return NULL;
    }
    h->c = c;
    conn_set_output_limit(c, 256 * 1024);
    idle_timeouts(h, false);
    return h;
}

bool httpd_can_persist(const struct httpd_conn *h) { return h->keep_alive && h->persist && !loop_stopping(); }

void httpd_request_timeouts(struct httpd_conn *h, size_t head_in_buffer)
{
    /* While the body is still coming, a silent client is cut off after
     * idle_ms (it may hold a backend); once it is all in, the client may
     * wait silently for as long as the answer takes. */
    size_t have = evbuffer_get_length(conn_in(h->c));
    have = have > head_in_buffer ? have - head_in_buffer : 0;
    bool all_in = h->body_done || (h->body == HTTP_BODY_LENGTH && have >= h->body_remaining);
    conn_set_timeouts(h->c, all_in ? 0 : h->idle_ms, HTTPD_WRITE_TIMEOUT_MS);
}

void httpd_response_head(struct httpd_conn *h, int status, const char *ctype, int64_t content_length, bool keep,
                         const char *extra)
{
    httpd_response_head_reason(h, status, http_reason(status), ctype, content_length, keep, extra);
}

void httpd_response_head_reason(struct httpd_conn *h, int status, const char *reason, const char *ctype,
                                int64_t content_length, bool keep, const char *extra)
{
    struct evbuffer *out = httpd_tx();
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\n", h->version_minor, status, reason, httpd_date_now());
    h->resp_status = status;
    h->resp_body = h->method == HTTP_M_HEAD || status == 204 || status == 304 ? 0 : content_length;
    if (h->server)
        evbuffer_add_printf(out, "Server: %s\r\n", h->server);
    if (ctype)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    if (content_length >= 0)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)content_length);
    if (extra)
        evbuffer_add(out, extra, strlen(extra));
    if (keep) {
        /* said on HTTP/1.1 too, as Perlbal does (clients and its tests look for it) */
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    } else {
        evbuffer_add(out, "Connection: close\r\n", 19);
    }
    evbuffer_add(out, "\r\n", 2);
    h->response_started = true;
}

void httpd_error(struct httpd_conn *h, int status, const char *msg)
{
    char body[512];
    int n = snprintf(body, sizeof body, "<h1>%d - %s</h1>\n%s", status, http_reason(status), msg ? msg : "");
    if (n >= (int)sizeof body)
        n = (int)sizeof body - 1;
    bool keep = status < 500 && status != 400 && status != 431 && status != 408 && status != 413 && status != 411 &&
                status != 501 && status != 505 && httpd_can_persist(h) && (h->body == HTTP_BODY_NONE || h->body_done);
    httpd_response_head(h, status, "text/html", n, keep, NULL);
    if (h->method != HTTP_M_HEAD)
        evbuffer_add(httpd_tx(), body, (size_t)n);
    if (keep || h->tls) {
        httpd_done(h, keep);
        return;
    }
    /* Lingering close: the client may still be sending (a header bomb, a
     * refused body). Closing with unread input would reset the connection
     * and could destroy the answer in flight, so read and discard until the
     * answer is out, then half-close and wait briefly for the peer. */
    request_end(h);
    httpd_flush(h);
    put_abort(h);
    h->in_request = true;
    h->lingering = true;
    h->keep_alive = false;
    h->head_pending = 0;
    evbuffer_drain(conn_in(h->c), evbuffer_get_length(conn_in(h->c)));
    conn_set_timeouts(h->c, 2000, 5000);
    if (evbuffer_get_length(conn_out(h->c)) == 0)
        h_on_drained(h->c);
}

static void request_end(struct httpd_conn *h)
{
    if (!h->req_active)
        return;
    h->req_active = false;
    if (h->ops->on_request_end)
        h->ops->on_request_end(h);
}

void httpd_done(struct httpd_conn *h, bool keep)
{
    request_end(h);
    httpd_flush(h);
    /* Stopping: no next request. (The busy mark is left alone on a closing
     * conn: clearing it could free the conn under us while the daemon is
     * stopping; close-after-write does not wait for it.) */
    if (!keep || loop_stopping() || (h->body != HTTP_BODY_NONE && !h->body_done)) {
        /* an unread request body must not be taken for the next request */
        h->in_request = true;
        conn_close_after_write(h->c);
        return;
    }
    h->in_request = false;
    h->body = HTTP_BODY_NONE;
    h->body_done = true;
    h->response_started = false;
    h->expect_continue = h->sent_continue = false;
    h->head_started_ms = 0;
    conn_set_busy(h->c, false); /* not stopping, so this cannot free the conn */
    idle_timeouts(h, true);
    conn_resume_read(h->c);
    if (!h->in_dispatch)
        conn_kick(h->c);
}

void httpd_send_continue(struct httpd_conn *h)
{
    if (!h->expect_continue || h->sent_continue || h->body_done)
        return;
    h->sent_continue = true;
    evbuffer_add(httpd_tx(), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    httpd_flush(h);
}

void httpd_drop_head(struct httpd_conn *h)
{
    if (h->head_pending)
        evbuffer_drain(conn_in(h->c), h->head_pending);
    h->head_pending = 0;
}

static void start_request(struct httpd_conn *h, struct http_msg *req)
{
    h->c->requests++;
    h->in_request = true;
    h->method = req->method;
    h->version_minor = req->version_minor;
    h->keep_alive = req->keep_alive;
    h->body = req->body;
    h->body_remaining = req->body == HTTP_BODY_LENGTH ? req->content_length : 0;
    h->body_done = req->body == HTTP_BODY_NONE;
    if (req->body == HTTP_BODY_CHUNKED)
        http_chunked_init(&h->chunk, h->max_chunked_body);
    h->expect_continue = req->expect_continue;
    h->sent_continue = false;
    h->response_started = false;
    h->resp_status = 0;
    h->resp_body = -1;
    h->prefix_fn = NULL;
    h->head_started_ms = 0;
    h->head_pending = req->head_len;
    conn_set_busy(h->c, true);
    h->req_active = true;
    h->ops->on_request(h, req);
    if (conn_is_closing(h->c))
        return;
    httpd_drop_head(h);
    /* body bytes (or pipelined requests) that came with the head */
    if (h->in_request && !h->lingering && !h->put && h->ops->on_input && evbuffer_get_length(conn_in(h->c)) > 0)
        h->ops->on_input(h);
}

/* HTTP/1.0 with Transfer-Encoding: chunked. The parser refuses it (RFC 9112
 * 6.1: the framing of such a message is faulty); Perlbal accepts it, and
 * clients that stream uploads send it (PUT/POST with Expect: 100-continue).
 * RFC 9112 lets a server process it and then close the connection: parse a
 * copy of the head as HTTP/1.1 (every other framing rule still applies)
 * and, if chunked framing is all that was wrong, take the request as
 * HTTP/1.0 without keep-alive. The copy outlives the call (per thread). */

static int parse_http10_chunked(const char *buf, size_t len, const struct http_limits *lim, struct http_msg *req)
{
    const char *eol = memchr(buf, '\n', len < 8192 ? len : 8192);
    if (!eol)
        return -1;
    const char *v = eol > buf && eol[-1] == '\r' ? eol - 1 : eol;
    if (v - buf < 9 || memcmp(v - 8, "HTTP/1.0", 8) != 0)
        return -1;
    /* the end of the head: the empty line */
    const char *end = NULL;
    for (const char *p = eol; p && p + 1 < buf + len; p = memchr(p + 1, '\n', (size_t)(buf + len - p - 1))) {
        if (p[1] == '\n') {
            end = p + 1;
            break;
        }
        if (p + 2 < buf + len && p[1] == '\r' && p[2] == '\n') {
            end = p + 1;
            break;
        }
    }
    if (!end)
        return -1;
    /* HTTP/1.1 needs a Host: an HTTP/1.0 request may have none, so one is
     * added as the last header and taken out of the result again */
    static const char fake_host[] = "Host: -\r\n";
    size_t pre = (size_t)(end - buf), add = sizeof fake_host - 1;
    if (len + add > HTTPD_MAX_HEAD_LIMIT)
        return -1;
    if (!head_copy && !(head_copy = malloc(HTTPD_MAX_HEAD_LIMIT)))
        return -1;
    for (int with_host = 0; with_host < 2; with_host++) {
        size_t n = len;
        memcpy(head_copy, buf, pre);
        if (with_host) {
            memcpy(head_copy + pre, fake_host, add);
            memcpy(head_copy + pre + add, buf + pre, len - pre);
            n = len + add;
        } else {
            memcpy(head_copy + pre, buf + pre, len - pre);
        }
        head_copy[v - 1 - buf] = '1';
        int r = http_parse_request(head_copy, n, lim, req);
        if (r > 0 && req->body == HTTP_BODY_CHUNKED) {
            if (with_host) {
                if (req->host_index != req->nheaders - 1)
                    break; /* a Host was there after all */
                req->nheaders--;
                req->host_index = -1;
                r -= (int)add;
                req->head_len -= add;
            }
            req->version_minor = 0;
            req->keep_alive = false;
            return r;
        }
    }
    req->error = 400;
    req->version_minor = 0;
    return -1;
}

/* A Content-Length header whose value starts with '-' (for a clearer
 * error, as Perlbal words it). */
static bool negative_length(const char *buf, size_t len)
{
    static const char name[] = "\ncontent-length:";
    for (size_t i = 0; i + sizeof name < len; i++) {
        if (strncasecmp(buf + i, name, sizeof name - 1))
            continue;
        size_t j = i + sizeof name - 1;
        while (j < len && (buf[j] == ' ' || buf[j] == '\t'))
            j++;
        return j < len && buf[j] == '-';
    }
    return false;
}

bool httpd_range_inverted(const char *v, size_t len)
{
    /* "bytes=first-last" with last < first: Perlbal answers 416, the
     * parser ignores it (RFC 9110 lets it) */
    if (len < 6 || strncasecmp(v, "bytes=", 6))
        return false;
    const char *p = v + 6, *e = v + len;
    uint64_t a = 0, b = 0;
    int da = 0, db = 0;
    while (p < e && *p >= '0' && *p <= '9' && da < 19)
        a = a * 10 + (uint64_t)(*p++ - '0'), da++;
    if (p >= e || *p != '-')
        return false;
    p++;
    while (p < e && *p >= '0' && *p <= '9' && db < 19)
        b = b * 10 + (uint64_t)(*p++ - '0'), db++;
    return da && db && p == e && b < a;
}

static void read_heads(struct httpd_conn *h)
{
    struct evbuffer *in = conn_in(h->c);
    size_t max = h->max_head ? h->max_head : HTTPD_MAX_HEAD;
    if (max > HTTPD_MAX_HEAD_LIMIT)
        max = HTTPD_MAX_HEAD_LIMIT;
    h->in_dispatch = true;
    while (!h->in_request && !conn_is_closing(h->c)) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            break;
        size_t want = len < max ? len : max;
        const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
        struct http_limits lim = { .max_head = max, .max_headers = HTTP_MAX_HEADERS };
        struct http_msg *req = &scratch_req;
        int r = http_parse_request(buf, want, &lim, req);
        if (r == 0) {
            int64_t now = now_ms();
            if (!h->head_started_ms)
                h->head_started_ms = now;
            else if (now - h->head_started_ms > (h->idle_ms ? h->idle_ms : HTTPD_HEAD_DEADLINE_MS)) {
                h->in_request = true;
                h->version_minor = 0;
                h->keep_alive = false;
                h->method = HTTP_M_OTHER;
                h->body = HTTP_BODY_NONE;
                httpd_error(h, 408, NULL);
            }
            break;
        }
        if (r < 0 && req->error == 400 && (r = parse_http10_chunked(buf, want, &lim, req)) > 0) {
            /* served, then closed (below) */
        } else if (r < 0) {
            const char *msg =
                req->error == 400 && negative_length(buf, want) ? "Invalid request: Content-Length < 0" : NULL;
            evbuffer_drain(in, len);
            h->in_request = true;
            h->version_minor = req->version_minor;
            h->keep_alive = false;
            h->method = HTTP_M_OTHER;
            h->body = HTTP_BODY_NONE;
            httpd_error(h, req->error, msg);
            break;
        }
        start_request(h, req);
    }
    h->in_dispatch = false;
}

static int h_on_read(struct core_conn *c)
{
    struct httpd_conn *h = c->data;
    if (h->lingering) {
        evbuffer_drain(conn_in(c), evbuffer_get_length(conn_in(c)));
        return 0;
    }
    if (!h->in_request) {
        read_heads(h);
        return 0;
    }
    if (h->put) {
        put_data(h);
        return 0;
    }
    if (h->ops->on_input) {
        h->ops->on_input(h);
        return 0;
    }
    if (evbuffer_get_length(conn_in(c)) > HTTPD_MAX_PIPELINE_IN)
        conn_pause_read(c);
    return 0;
}

static void h_on_drained(struct core_conn *c)
{
    struct httpd_conn *h = c->data;
    if (h->lingering) {
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_WR);
        return;
    }
    if (h->ops->on_drained)
        h->ops->on_drained(h);
}

/* The peer closed. A lingering conn (error answered, input drained) is
 * done, and so is one whose request body can now never be complete (the
 * client gave up mid-upload: close at once, so its state is freed);
 * otherwise the core's default lets a response in flight go out. */
static bool h_on_eof(struct core_conn *c)
{
    struct httpd_conn *h = c->data;
    if (h->lingering)
        return true;
    if (h->in_request && !h->body_done && h->body != HTTP_BODY_NONE) {
        size_t have = evbuffer_get_length(conn_in(c));
        if (h->body == HTTP_BODY_CHUNKED || have < h->body_remaining)
            return true;
    }
    return false;
}

static void h_on_close(struct core_conn *c, enum conn_close_reason why)
{
    struct httpd_conn *h = c->data;
    put_abort(h);
    request_end(h);
    if (h->ops->on_close)
        h->ops->on_close(h, why);
    if (h->job) { /* a disk job is out: it frees h when it comes back */
        h->dead = true;
        h->c = NULL;
        return;
    }
    free(h);
}

/* ---- request bodies ---- */

size_t httpd_body_available(struct httpd_conn *h)
{
    size_t n = evbuffer_get_length(conn_in(h->c));
    if (h->head_pending)
        n = n > h->head_pending ? n - h->head_pending : 0;
    if (h->body_done)
        return 0;
    if (h->body == HTTP_BODY_LENGTH && n > h->body_remaining)
        n = (size_t)h->body_remaining;
    return n;
}

enum httpd_body_result httpd_body_read(struct httpd_conn *h, struct evbuffer *dst, size_t max)
{
    httpd_drop_head(h);
    if (h->body_done)
        return HTTPD_BODY_DONE;
    struct evbuffer *in = conn_in(h->c);
    if (!max)
        max = SIZE_MAX;
    if (h->body == HTTP_BODY_LENGTH) {
        size_t n = evbuffer_get_length(in);
        if (n > h->body_remaining)
            n = (size_t)h->body_remaining;
        if (n > max)
            n = max;
        if (n)
            evbuffer_remove_buffer(in, dst, n);
        h->body_remaining -= n;
        if (h->body_remaining == 0)
            h->body_done = true;
        return h->body_done ? HTTPD_BODY_DONE : HTTPD_BODY_MORE;
    }
    if (h->body != HTTP_BODY_CHUNKED) {
        h->body_done = true;
        return HTTPD_BODY_DONE;
    }
    size_t moved = 0;
    while (evbuffer_get_length(in) > 0 && moved < max) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        const char *base = v.iov_base;
        size_t pos = 0;
        enum http_chunk_result r = HTTP_CHUNK_NEED_MORE;
        while (pos < v.iov_len && moved < max) {
            size_t cons, off, dl;
            /* never decode past max payload bytes: limit the input slice */
            size_t slice = v.iov_len - pos;
            r = http_chunked_step(&h->chunk, base + pos, slice, &cons, &off, &dl);
            if (r == HTTP_CHUNK_ERROR) {
                h->body_done = true;
                h->keep_alive = false;
                return HTTPD_BODY_ERROR;
            }
            if (r == HTTP_CHUNK_DATA)
                evbuffer_add(dst, base + pos + off, dl), moved += dl;
            pos += cons;
            if (r == HTTP_CHUNK_DONE || r == HTTP_CHUNK_NEED_MORE)
                break;
        }
        evbuffer_drain(in, pos);
        if (r == HTTP_CHUNK_DONE) {
            h->body_done = true;
            return HTTPD_BODY_DONE;
        }
        if (r == HTTP_CHUNK_NEED_MORE && pos == 0)
            break;
    }
    return HTTPD_BODY_MORE;
}

/* ---- file serving ---- */

/* Content types: the fixed table first (Perlbal's own answers, e.g. .js is
 * application/x-javascript as Perlbal serves it), then /etc/mime.types
 * (Debian's media-types; STACK_MIME_TYPES names another file), read once
 * at process start (a constructor: never on a loop), then text/plain as
 * Perlbal answers. Read-only after start. */
static const struct {
    const char *ext, *type;
} mime_builtin[] = {
    { "html", "text/html" },
    { "htm", "text/html" },
    { "txt", "text/plain" },
    { "css", "text/css" },
    { "js", "application/x-javascript" },
    { "json", "application/json" },
    { "xml", "text/xml" },
    { "png", "image/png" },
    { "jpg", "image/jpeg" },
    { "jpeg", "image/jpeg" },
    { "gif", "image/gif" },
    { "svg", "image/svg+xml" },
    { "ico", "image/x-icon" },
    { "bmp", "image/bmp" },
    { "pdf", "application/pdf" },
    { "zip", "application/zip" },
    { "gz", "application/x-gzip" },
    { "tgz", "application/x-gzip" },
    { "tar", "application/x-tar" },
    { "mp3", "audio/mpeg" },
    { "mp4", "video/mp4" },
    { "webm", "video/webm" },
    { "flv", "video/x-flv" },
    { "swf", "application/x-shockwave-flash" },
    { "woff", "font/woff" },
    { "woff2", "font/woff2" },
    { "wasm", "application/wasm" },
    { "bin", "application/octet-stream" },
};

#define MIME_MAX_EXT 32   /* longer extensions are skipped */
#define MIME_MAX_TYPE 128 /* longer types are skipped */
#define MIME_SLOTS 8192   /* open addressing, power of two */
#define MIME_MAX_FILE 1048576

struct mime_slot {
    char ext[MIME_MAX_EXT];
    const char *type; /* into mime_types_text */
};
static struct mime_slot *mime_table; /* NULL: the built-in table */
static char *mime_types_text;
static size_t mime_count;

static size_t mime_hash(const char *ext, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)tolower((unsigned char)ext[i])) * 16777619u;
    return h & (MIME_SLOTS - 1);
}

/* The slot for ext[0..len): the one holding it, or the empty one where it
 * would go; NULL when the table is full. */
static struct mime_slot *mime_slot(struct mime_slot *tab, const char *ext, size_t len)
{
    size_t i = mime_hash(ext, len);
    for (size_t n = 0; n < MIME_SLOTS; n++, i = (i + 1) & (MIME_SLOTS - 1)) {
        struct mime_slot *sl = &tab[i];
        if (!sl->type || (strlen(sl->ext) == len && !strncasecmp(sl->ext, ext, len)))
            return sl;
    }
    return NULL;
}

int httpd_mime_load(const char *path)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return -1;
    char *text = malloc(MIME_MAX_FILE + 1);
    size_t n = text ? fread(text, 1, MIME_MAX_FILE, fp) : 0;
    fclose(fp);
    struct mime_slot *tab = calloc(MIME_SLOTS, sizeof *tab);
    if (!text || !tab) {
        free(text);
        free(tab);
        return -1;
    }
    text[n] = '\0';
    size_t count = 0;
    /* "type ext ext ...", '#' comments; the first type named for an
     * extension wins; bounded: at most MIME_SLOTS * 3/4 extensions. */
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        char *type = strtok_r(line, " \t\r", &save);
        if (!type || strlen(type) >= MIME_MAX_TYPE || !strchr(type, '/'))
            continue;
        for (char *ext; (ext = strtok_r(NULL, " \t\r", &save));) {
            size_t len = strlen(ext);
            if (len >= MIME_MAX_EXT || count >= MIME_SLOTS * 3 / 4)
                continue;
            struct mime_slot *sl = mime_slot(tab, ext, len);
            if (sl && !sl->type) {
                memcpy(sl->ext, ext, len + 1);
                sl->type = type;
                count++;
            }
        }
    }
    if (count == 0) {
        free(text);
        free(tab);
        return -1;
    }
    free(mime_table);
    free(mime_types_text);
    mime_table = tab;
    mime_types_text = text;
    mime_count = count;
    return (int)count;
}

__attribute__((constructor)) static void mime_load_at_start(void)
{
    const char *path = getenv("STACK_MIME_TYPES");
    httpd_mime_load(path && *path ? path : "/etc/mime.types");
}

__attribute__((destructor)) static void mime_unload(void)
{
    free(mime_table);
    free(mime_types_text);
    mime_table = NULL;
    mime_types_text = NULL;
}

const char *httpd_mime_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (!dot || !dot[1])
        return "text/plain";
    const char *ext = dot + 1;
    size_t len = strlen(ext);
    for (size_t i = 0; i < sizeof mime_builtin / sizeof mime_builtin[0]; i++)
        if (!strcasecmp(ext, mime_builtin[i].ext))
            return mime_builtin[i].type;
    if (mime_table) {
        const struct mime_slot *sl = len < MIME_MAX_EXT ? mime_slot(mime_table, ext, len) : NULL;
        if (sl && sl->type)
            return sl->type;
    }
    return "text/plain";
}

static pthread_mutex_t root_lock = PTHREAD_MUTEX_INITIALIZER;

/* The docroot's O_PATH fd (opened on first use and again when the docroot
 * string is replaced; an old fd stays open, another loop may be using it). */
static int root_fd(struct httpd_files *f)
{
    const char *d = f->docroot;
    int fd = atomic_load(&f->root_fd_plus1) - 1;
    if (fd >= 0 && __atomic_load_n(&f->root_fd_for, __ATOMIC_ACQUIRE) == d)
        return fd;
    if (!d)
        return -1;
    pthread_mutex_lock(&root_lock);
    if (atomic_load(&f->root_fd_plus1) == 0 || f->root_fd_for != d) {
        int nfd = open(d, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (nfd >= 0) {
            atomic_store(&f->root_fd_plus1, nfd + 1);
            __atomic_store_n(&f->root_fd_for, d, __ATOMIC_RELEASE);
        }
    }
    fd = atomic_load(&f->root_fd_plus1) - 1;
    pthread_mutex_unlock(&root_lock);
    return fd;
}

/* Open path (clean, absolute in URL space) beneath the docroot. -1 with
 * errno: EXDEV/ELOOP when it would escape. */
static int open_beneath(struct httpd_files *f, const char *path, int flags)
{
    int dfd = root_fd(f);
    if (dfd < 0)
        return -1;
    const char *rel = path[0] == '/' ? path + 1 : path;
    if (!*rel)
        rel = ".";
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
                            .mode = 0,
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

void httpd_files_invalidate(struct httpd_files *f) { atomic_fetch_add(&f->gen, 1); }

/* ---- the disk hand-off ----
 * Every blocking disk call of the file server runs in a job's work(); the
 * result is used by its done() on the loop. */
struct disk_job {
    void (*work)(struct disk_job *j);                       /* on a worker: disk only */
    void (*done)(struct httpd_conn *h, struct disk_job *j); /* on the loop: answer */
    void (*release)(struct disk_job *j);                    /* free the job */
    struct httpd_conn *h;
};

static void job_work(void *arg)
{
    struct disk_job *j = arg;
    j->work(j);
}

static void job_done(void *arg)
{
    struct disk_job *j = arg;
    struct httpd_conn *h = j->h;
    h->job = NULL;
    if (h->dead) {
        free(h); /* closed while the job was out: nobody is waiting */
    } else {
        j->done(h, j);
    }
    j->release(j);
}

static void disk_run(struct httpd_conn *h, struct httpd_files *f, struct disk_job *j, bool hot)
{
    j->h = h;
    /* HAND-OFF to common/work: the blocking part runs on a worker thread,
     * unless it is hot (a file of the open-file cache, served within the
     * last second: its pages are in memory, and two thread hops would cost
     * more than the read) */
    if (!hot && f->work && work_submit(f->work, h->c->loop, job_work, job_done, j) == 0) {
        h->job = j;
        return;
    }
    j->work(j);
    j->done(h, j);
    j->release(j);
}

/* ---- open-file cache ----
 * Per loop thread, a small direct-mapped table of open regular files (as
 * nginx's open_file_cache): a hit saves the openat2 and the close. Each hit
 * still fstat()s the fd, so a file changed in place is served as it is now;
 * a file replaced by rename or deleted behind httpd may be served from the
 * old inode for up to FCACHE_VALID_MS. PUT and DELETE through httpd
 * invalidate at once (generation counter). */
#define FCACHE_SLOTS 256
#define FCACHE_VALID_MS 1000
#define FCACHE_PATH 200
#define SMALL_FILE 32768

struct fcache_ent {
    struct httpd_files *f;
    const char *docroot;
    uint64_t gen;
    int64_t expires_ms;
    int fd;
    char path[FCACHE_PATH];
};
static __thread struct fcache_ent *fcache;

static void fcache_free(void)
{
    if (!fcache)
        return;
    for (int i = 0; i < FCACHE_SLOTS; i++)
        if (fcache[i].fd >= 0)
            close(fcache[i].fd);
    free(fcache);
    fcache = NULL;
}

static struct fcache_ent *fcache_slot(struct httpd_files *f, const char *path)
{
    if (strlen(path) >= FCACHE_PATH)
        return NULL;
    if (!fcache) {
        fcache = calloc(FCACHE_SLOTS, sizeof *fcache);
        if (!fcache)
            return NULL;
        for (int i = 0; i < FCACHE_SLOTS; i++)
            fcache[i].fd = -1;
    }
    uint32_t hv = 2166136261u ^ (uint32_t)(uintptr_t)f;
    for (const char *p = path; *p; p++)
        hv = (hv ^ (uint8_t)*p) * 16777619u;
    return &fcache[hv % FCACHE_SLOTS];
}

static int fcache_get(struct httpd_files *f, const char *path)
{
    struct fcache_ent *e = fcache_slot(f, path);
    if (!e || e->fd < 0 || e->f != f || e->docroot != f->docroot ||
        e->gen != atomic_load_explicit(&f->gen, memory_order_relaxed) || strcmp(e->path, path))
        return -1;
    if (now_ms() >= e->expires_ms) {
        close(e->fd);
        e->fd = -1;
        return -1;
    }
    return e->fd;
}

static void fcache_put(struct httpd_files *f, const char *path, int fd)
{
    struct fcache_ent *e = fcache_slot(f, path);
    if (!e)
        return;
    int nfd = dup(fd);
    if (nfd < 0)
        return;
    if (e->fd >= 0)
        close(e->fd);
    e->f = f;
    e->docroot = f->docroot;
    e->gen = atomic_load_explicit(&f->gen, memory_order_relaxed);
    e->expires_ms = now_ms() + FCACHE_VALID_MS;
    e->fd = nfd;
    memcpy(e->path, path, strlen(path) + 1); /* fits: fcache_slot checked the length */
}

/* ---- GET / HEAD ---- */

enum get_kind { GET_ERROR, GET_FILE, GET_NOT_MODIFIED, GET_RANGE_BAD, GET_REDIRECT, GET_LISTING };

struct get_job {
    struct disk_job j;
    struct httpd_files *f;
    bool head, trailing;
    int cached_fd;       /* from the open-file cache (not ours unless own_cached), or -1 */
    bool own_cached;     /* cached_fd is a dup the job closes */
    char path[PATH_MAX]; /* in: request path; out: the file sent (index) */
    char range[128], ims[64];
    bool has_range, has_ims;
    /* out */
    enum get_kind kind;
    int status;
    const char *msg;
    int fd;      /* ours: to send with sendfile, or -1 */
    bool opened; /* fd was opened by the job (cache it) */
    struct stat st;
    uint64_t first, len;
    char *small; /* the bytes of a small file, read here */
    struct evbuffer *listing;
    bool missing; /* the file does not exist (poststat) */
    /* h->prefix_fn's, copied in; out: the file's first bytes as it left them */
    int (*prefix_fn)(const char *ctx, const char *path, unsigned char *buf, size_t len);
    char prefix_ctx[HTTPD_PREFIX_CTX];
    unsigned char *prefix;
    size_t prefix_len;
};

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

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

#define LISTING_MAX 4096

static struct evbuffer *dir_listing(int dfd, const char *path)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return NULL;
    }
    char **names = calloc(LISTING_MAX, sizeof *names);
    int n = 0;
    struct dirent *e;
    while (names && (e = readdir(d)) && n < LISTING_MAX) {
        if (!strcmp(e->d_name, "."))
            continue;
        struct stat st;
        bool dir = fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        size_t l = strlen(e->d_name);
        char *s = malloc(l + 2);
        if (!s)
            break;
        memcpy(s, e->d_name, l);
        s[l] = dir ? '/' : 0;
        s[l + 1] = 0;
        names[n++] = s;
    }
    closedir(d);
    if (!names)
        return NULL;
    qsort(names, (size_t)n, sizeof names[0], name_cmp);
    struct evbuffer *b = evbuffer_new();
    if (b) {
        evbuffer_add_printf(b,
                            "<html><head><title>Directory Listing</title></head><body><h1>Directory Listing</h1><h2>");
        html_escape(b, path);
        evbuffer_add_printf(b, "</h2><pre>\n");
    }
    for (int i = 0; i < n; i++) {
        if (b) {
            evbuffer_add(b, "<a href=\"", 9);
            html_escape(b, names[i]);
            evbuffer_add(b, "\">", 2);
            html_escape(b, names[i]);
            evbuffer_add(b, "</a>\n", 5);
        }
        free(names[i]);
    }
    free(names);
    if (b)
        evbuffer_add_printf(b, "</pre></body></html>\n");
    return b;
}

/* Decide the answer for an open regular file (fd, st) and read a small one. */
static void get_file_answer(struct get_job *g, int fd, bool ours)
{
    time_t since;
    g->kind = GET_FILE;
    if (g->has_ims && http_date_parse(g->ims, strlen(g->ims), &since) == 0 && g->st.st_mtime <= since) {
        g->kind = GET_NOT_MODIFIED;
    } else {
        uint64_t size = (uint64_t)g->st.st_size, first = 0, last = size ? size - 1 : 0;
        g->status = 200;
        if (g->has_range) {
            enum http_range_result rr = http_parse_range(g->range, strlen(g->range), size, &first, &last);
            if (rr == HTTP_RANGE_UNSATISFIABLE || httpd_range_inverted(g->range, strlen(g->range)))
                g->kind = GET_RANGE_BAD;
            if (rr == HTTP_RANGE_OK)
                g->status = 206;
        }
        g->first = first;
        g->len = size ? last - first + 1 : 0;
        if (g->kind == GET_FILE && !g->head && g->len > 0 && g->prefix_fn) {
            /* the daemon's filter on the file's first bytes */
            g->prefix = malloc(HTTPD_PREFIX_MAX);
            ssize_t n = g->prefix ? pread(fd, g->prefix, HTTPD_PREFIX_MAX, 0) : -1;
            int rc = n < 0 ? 500 : g->prefix_fn(g->prefix_ctx, g->path, g->prefix, (size_t)n);
            g->prefix_len = n > 0 ? (size_t)n : 0;
            if (rc) {
                g->kind = GET_ERROR;
                g->status = rc;
                g->msg = n < 0 ? "Read failed" : NULL;
            }
        }
        if (g->kind == GET_FILE && !g->head && g->len > 0 && g->len <= SMALL_FILE) {
            /* small: read it (one writev for head and body beats writev + sendfile) */
            g->small = malloc((size_t)g->len);
            if (!g->small || pread(fd, g->small, (size_t)g->len, (off_t)first) != (ssize_t)g->len) {
                free(g->small);
                g->small = NULL;
                g->kind = GET_ERROR;
                g->status = 500;
                g->msg = "Read failed";
            } else if (g->prefix && g->first < g->prefix_len) { /* the filtered bytes over the read */
                size_t k = g->prefix_len - (size_t)g->first;
                memcpy(g->small, g->prefix + g->first, k < g->len ? k : (size_t)g->len);
            }
        }
    }
    g->fd = ours ? fd : -1; /* the job's own fd is closed when the job ends */
}

static void get_release(struct disk_job *j)
{
    struct get_job *g = (struct get_job *)j;
    if (g->fd >= 0)
        close(g->fd);
    if (g->own_cached && g->cached_fd >= 0)
        close(g->cached_fd);
    free(g->small);
    free(g->prefix);
    if (g->listing)
        evbuffer_free(g->listing);
    free(g);
}

static void get_work(struct disk_job *j)
{
    struct get_job *g = (struct get_job *)j;
    int fd = g->cached_fd;
    g->fd = -1;
    if (fd >= 0) {
        if (fstat(fd, &g->st) == 0 && S_ISREG(g->st.st_mode)) {
            get_file_answer(g, fd, false);
            return;
        }
        fd = -1;
        g->cached_fd = -1; /* replaced under us: open afresh */
    }
    fd = open_beneath(g->f, g->path, O_RDONLY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &g->st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        g->kind = GET_ERROR;
        g->status = errno_status(e);
        g->missing = e == ENOENT || e == ENOTDIR;
        return;
    }
    if (S_ISDIR(g->st.st_mode)) {
        close(fd);
        if (!g->trailing) {
            g->kind = GET_REDIRECT;
            return;
        }
        /* index files, in order of preference */
        const char *p = g->f->index_files ? g->f->index_files : "index.html";
        char item[256];
        while (*p) {
            while (*p == ',' || *p == ' ')
                p++;
            size_t l = strcspn(p, ", ");
            if (!l)
                break;
            if (l < sizeof item) {
                memcpy(item, p, l);
                item[l] = 0;
                char fp[PATH_MAX];
                if (!strchr(item, '/') && (size_t)snprintf(fp, sizeof fp, "%s%s%s", g->path,
                                                           strcmp(g->path, "/") ? "/" : "", item) < sizeof fp) {
                    int ifd = open_beneath(g->f, fp, O_RDONLY | O_NONBLOCK);
                    if (ifd >= 0 && fstat(ifd, &g->st) == 0 && S_ISREG(g->st.st_mode)) {
                        memcpy(g->path, fp, strlen(fp) + 1);
                        g->opened = false; /* not cached under the directory's name */
                        get_file_answer(g, ifd, true);
                        return;
                    }
                    if (ifd >= 0)
                        close(ifd);
                }
            }
            p += l;
        }
        if (!g->f->dirindexing) {
            g->kind = GET_ERROR;
            g->status = g->f->dir_disabled_status ? g->f->dir_disabled_status : 403;
            g->msg = "Directory listing disabled";
            return;
        }
        int dfd = open_beneath(g->f, g->path, O_RDONLY | O_DIRECTORY);
        if (dfd < 0) {
            g->kind = GET_ERROR;
            g->status = errno_status(errno);
            return;
        }
        g->listing = dir_listing(dfd, g->path);
        g->kind = g->listing ? GET_LISTING : GET_ERROR;
        g->status = 500;
        return;
    }
    if (!S_ISREG(g->st.st_mode)) {
        close(fd);
        g->kind = GET_ERROR;
        g->status = 403;
        return;
    }
    g->opened = true;
    get_file_answer(g, fd, true);
}

static void get_done(struct httpd_conn *h, struct disk_job *j)
{
    struct get_job *g = (struct get_job *)j;
    struct httpd_files *f = g->f;
    bool keep = httpd_can_persist(h);
    char date[HTTP_DATE_LEN + 1], extra[PATH_MAX + 256];
    if (g->opened && g->fd >= 0 && !g->trailing)
        fcache_put(f, g->path, g->fd);
    if (f->poststat) {
        int what = g->kind == GET_ERROR && g->missing        ? HTTPD_POSTSTAT_MISSING
                   : g->kind == GET_FILE && g->status == 200 ? HTTPD_POSTSTAT_SEND
                                                             : 0;
        if (what && f->poststat(f->hook_arg, h, what, (int64_t)g->st.st_mtime))
            return; /* taken: the daemon answers */
    }
    switch (g->kind) {
    case GET_ERROR: httpd_error(h, g->status, g->msg); break;
    case GET_REDIRECT:
        snprintf(extra, sizeof extra, "Location: %s/\r\n", g->path);
        httpd_response_head(h, 301, "text/html", 0, keep, extra);
        httpd_done(h, keep);
        break;
    case GET_LISTING:
        httpd_response_head(h, 200, "text/html", (int64_t)evbuffer_get_length(g->listing), keep, NULL);
        if (!g->head)
            evbuffer_add_buffer(httpd_tx(), g->listing);
        httpd_done(h, keep);
        break;
    case GET_NOT_MODIFIED:
        http_date_format(g->st.st_mtime, date);
        snprintf(extra, sizeof extra, "Last-Modified: %s\r\n", date);
        httpd_response_head(h, 304, NULL, -1, keep, extra);
        httpd_done(h, keep);
        break;
    case GET_RANGE_BAD:
        snprintf(extra, sizeof extra, "Content-Range: bytes */%llu\r\n", (unsigned long long)g->st.st_size);
        httpd_response_head(h, 416, "text/html", 0, keep, extra);
        httpd_done(h, keep);
        break;
    case GET_FILE: {
        http_date_format(g->st.st_mtime, date);
        size_t el = (size_t)snprintf(extra, sizeof extra, "Last-Modified: %s\r\nAccept-Ranges: bytes\r\n", date);
        if (g->status == 206)
            snprintf(extra + el, sizeof extra - el, "Content-Range: bytes %llu-%llu/%llu\r\n",
                     (unsigned long long)g->first, (unsigned long long)(g->first + g->len - 1),
                     (unsigned long long)g->st.st_size);
        httpd_response_head(h, g->status, httpd_mime_type(g->path), (int64_t)g->len, keep, extra);
        if (g->small) {
            evbuffer_add(httpd_tx(), g->small, (size_t)g->len);
        } else if (!g->head && g->len > 0) {
            uint64_t first = g->first, len = g->len;
            if (g->prefix && first < g->prefix_len) { /* the filtered bytes, then the file */
                size_t k = g->prefix_len - (size_t)first;
                if (k > len)
                    k = (size_t)len;
                evbuffer_add(httpd_tx(), g->prefix + first, k);
                first += k;
                len -= k;
            }
            /* the output buffer closes the fd it is given: a dup of a cached one */
            int sfd = len == 0 ? -1 : g->fd >= 0 ? dup(g->fd) : g->cached_fd >= 0 ? dup(g->cached_fd) : -1;
            if (len > 0 && (sfd < 0 || httpd_tx_add_file(h->tls, sfd, (int64_t)first, (int64_t)len) < 0)) {
                if (sfd >= 0)
                    close(sfd);
                evbuffer_drain(httpd_tx(), evbuffer_get_length(httpd_tx())); /* the head was not sent yet */
                httpd_error(h, 500, "Cannot send the file");
                break;
            }
        }
        if (f->file_sent)
            f->file_sent(f->hook_arg, h);
        httpd_done(h, keep);
        break;
    }
    }
}

/* ---- PUT ---- */

struct httpd_put {
    int fd;    /* the temporary file */
    int dirfd; /* its directory (names below are relative to it) */
    char *tmp, *name;
    bool existed;
    EVP_MD_CTX *md5; /* when the request carries Content-MD5 */
    char want_md5[64];
    bool md5_checked;
    uint64_t written;
    uint64_t max;
    struct httpd_files *f;
    struct evbuffer *chunk; /* body bytes on their way to the file */
    uint64_t conn_id;       /* names the temporary file */
    struct core_loop *loop; /* the conn's */
    int refs;               /* the conn's (while h->put is this) + the job's */
    bool job_out;           /* a put job is out: one at a time */
    bool paused;            /* we paused the conn's reading */
    int refuse_status;      /* put_refuse: the answer after the cleanup */
    char refuse_msg[256];
    bool body_done;     /* the whole body is in chunk or on disk */
    bool stepping;      /* put_step is on the stack */
    bool remove_target; /* written in place and refused (the client hears an
                         * error): the partial file goes. A client that just
                         * leaves keeps what arrived, as Perlbal. */
};

/* Split path into its directory (opened beneath the docroot) and last
 * name. Creates missing directories below min_levels when create is set.
 * Returns the directory fd or -1 (errno). */
static int open_parent(struct httpd_files *f, const char *path, bool create, int min_levels, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash + 1;
    if (slash == path)
        return open_beneath(f, "/", O_PATH | O_DIRECTORY);
    char dir[PATH_MAX];
    size_t dl = (size_t)(slash - path);
    if (dl >= sizeof dir) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, dl);
    dir[dl] = 0;
    int fd = open_beneath(f, dir, O_PATH | O_DIRECTORY);
    if (fd >= 0 || errno != ENOENT || !create)
        return fd;
    /* walk down, creating what is missing (each step resolved beneath) */
    int level = 0;
    char prefix[PATH_MAX];
    for (const char *p = path + 1; (p = strchr(p, '/')); p++) {
        level++;
        size_t pl = (size_t)(p - path);
        memcpy(prefix, path, pl);
        prefix[pl] = 0;
        int d = open_beneath(f, prefix, O_PATH | O_DIRECTORY);
        if (d >= 0) {
            close(d);
            continue;
        }
        if (errno != ENOENT || level <= min_levels)
            return -1;
        const char *name;
        int parent = open_parent(f, prefix, false, 0, &name);
        if (parent < 0)
            return -1;
        int r = mkdirat(parent, name, 0755);
        int e = errno;
        close(parent);
        if (r < 0 && e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    return open_beneath(f, dir, O_PATH | O_DIRECTORY);
}

/* A PUT's disk work (the directory walk with mkdir, the temporary file's
 * open, every write, fsync + rename + the directory's fsync, the unlink of
 * an abandoned file) runs in put jobs through disk_run: on the files' work
 * pool when there is one. One job at a time per PUT; while it is out the
 * body waits in the conn's input (reading pauses past PUT_MAX_BUFFERED).
 * The conn and a job out each hold a reference: a PUT abandoned while its
 * job is out is discarded when the job is back. */
#define PUT_CHUNK (256 * 1024)
#define PUT_MAX_BUFFERED (1024 * 1024)

/* PUT_CLEANUP: a PUT refused on the loop (size, chunking, Content-MD5):
 * its files go before the answer does. */
enum put_stage { PUT_OPEN, PUT_WRITE, PUT_FINISH, PUT_CLEANUP };

struct put_job {
    struct disk_job base;
    struct httpd_put *p;
    enum put_stage stage;
    /* PUT_OPEN in */
    char *path;
    /* out */
    int status; /* PUT_OPEN / PUT_FINISH failure: the answer; 0 = done */
    const char *msg;
    int err;               /* PUT_WRITE: errno of a failed write, -1 for a short one */
    char cleanup_msg[256]; /* PUT_CLEANUP: the answer's text */
};

static void put_close_files(struct httpd_put *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    if (p->tmp && p->dirfd >= 0)
        unlinkat(p->dirfd, p->tmp, 0);
    else if (p->remove_target && p->name && p->dirfd >= 0)
        unlinkat(p->dirfd, p->name, 0);
    if (p->dirfd >= 0)
        close(p->dirfd);
    p->dirfd = -1;
}

static void put_struct_free(struct httpd_put *p)
{
    if (p->md5)
        EVP_MD_CTX_free(p->md5);
    if (p->chunk)
        evbuffer_free(p->chunk);
    free(p->tmp);
    free(p->name);
    free(p);
}

static void put_job_work(struct disk_job *dj);
static void put_job_done(struct httpd_conn *h, struct disk_job *dj);
static void put_job_release(struct disk_job *dj);

static void discard_work(void *arg) { put_close_files(arg); }
static void discard_done(void *arg) { put_struct_free(arg); }

/* The files of an abandoned PUT: closed and its temporary file removed,
 * on the pool (HAND-OFF to common/work) when there is one. */
static void put_discard(struct httpd_put *p, struct core_loop *loop)
{
    if (p->fd < 0 && p->dirfd < 0) {
        put_struct_free(p);
        return;
    }
    /* HAND-OFF to common/work: close + unlink on a worker */
    if (p->f->work && loop && work_submit(p->f->work, loop, discard_work, discard_done, p) == 0)
        return;
    put_close_files(p); /* no pool (or it refused): here */
    put_struct_free(p);
}

static void put_unref(struct httpd_put *p)
{
    if (--p->refs == 0)
        put_discard(p, p->loop);
}

static void put_abort(struct httpd_conn *h)
{
    struct httpd_put *p = h->put;
    if (!p)
        return;
    h->put = NULL;
    put_unref(p);
}

static void put_fail(struct httpd_conn *h, int status, const char *msg)
{
    put_abort(h);
    h->keep_alive = false;
    httpd_error(h, status, msg);
}

/* base64 of an MD5 digest, without "=" padding (as Perlbal compares). */
static void md5_b64(EVP_MD_CTX *ctx, char *out, size_t outlen)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(ctx, d, &dl);
    unsigned char b[64];
    int n = EVP_EncodeBlock(b, d, (int)dl);
    while (n > 0 && b[n - 1] == '=')
        n--;
    snprintf(out, outlen, "%.*s", n, (char *)b);
}

/* fsync a directory given by an O_PATH fd (the rename in it is durable). */
static int dir_fsync(int pathfd)
{
    int d = openat(pathfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0)
        return -1;
    int r = fsync(d);
    close(d);
    return r;
}

/* PUT_OPEN on a worker: as Perlbal, at least min_put_directory directories
 * in the path, the first that many existing; deeper ones created; then the
 * temporary file beside the target. */
static void put_open_work(struct put_job *j)
{
    struct httpd_put *p = j->p;
    struct httpd_files *f = p->f;
    const char *path = j->path;
    if (f->min_put_directory > 0) {
        int levels = -1;
        const char *cut = NULL;
        for (const char *q = path; (q = strchr(q, '/')); q++)
            if (++levels == f->min_put_directory)
                cut = q;
        if (levels < f->min_put_directory || !cut) {
            j->status = 400;
            j->msg = "Does not meet minimum directory requirement";
            return;
        }
        char basedir[PATH_MAX];
        snprintf(basedir, sizeof basedir, "%.*s", (int)(cut - path), path);
        int d = open_beneath(f, basedir, O_PATH | O_DIRECTORY);
        if (d < 0) {
            j->status = 404;
            j->msg = "Base directory does not exist";
            return;
        }
        close(d);
    }
    const char *base;
    p->dirfd = open_parent(f, path, true, f->min_put_directory, &base);
    if (p->dirfd < 0) {
        j->status = 403;
        j->msg = "Parent directory missing";
        return;
    }
    char tmp[NAME_MAX + 1];
    if ((size_t)snprintf(tmp, sizeof tmp, ".%.200s.pbtmp.%llu", base, (unsigned long long)p->conn_id) >= sizeof tmp) {
        j->status = 414;
        return;
    }
    struct stat st;
    p->existed = fstatat(p->dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (p->existed && !S_ISREG(st.st_mode)) {
        j->status = 403;
        return;
    }
    p->name = strdup(base);
    if (!p->name) {
        j->status = 500;
        return;
    }
    if (f->put_in_place && !p->md5) {
        /* as Perlbal without Content-MD5: the target itself, truncated */
        p->fd = openat(p->dirfd, base, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (p->fd < 0) {
            j->status = 500;
            j->msg = "Cannot create file";
        }
        return;
    }
    p->tmp = strdup(tmp);
    if (!p->tmp) {
        j->status = 500;
        return;
    }
    p->fd = openat(p->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (p->fd < 0) {
        free(p->tmp); /* not ours to unlink */
        p->tmp = NULL;
        j->status = 500;
        j->msg = "Cannot create file";
    }
}

/* Every put job that fails cleans up where it ran, before the answer. */
static void put_open_work_or_clean(struct put_job *j)
{
    put_open_work(j);
    if (j->status)
        put_close_files(j->p);
}

/* PUT_WRITE on a worker: the chunk, whole, into the temporary file. */
static void put_write_work(struct put_job *j)
{
    struct httpd_put *p = j->p;
    while (evbuffer_get_length(p->chunk) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(p->chunk, -1, NULL, &v, 1) < 1)
            break;
        if (p->md5)
            EVP_DigestUpdate(p->md5, v.iov_base, v.iov_len);
        ssize_t w = write(p->fd, v.iov_base, v.iov_len);
        if (w < 0 && errno == EINTR)
            w = write(p->fd, v.iov_base, v.iov_len);
        if (w <= 0 || (size_t)w < v.iov_len) {
            /* a short write would put the digest out of step: give up */
            j->err = w < 0 ? errno : -1;
            evbuffer_drain(p->chunk, evbuffer_get_length(p->chunk));
            p->remove_target = true;
            put_close_files(p); /* the partial file goes before the answer */
            return;
        }
        evbuffer_drain(p->chunk, (size_t)w);
        p->written += (uint64_t)w;
    }
}

/* PUT_FINISH on a worker: durable (fsync when asked), then in place. */
static void put_finish_work(struct put_job *j)
{
    struct httpd_put *p = j->p;
    int rc = p->f->put_fsync ? fsync(p->fd) : 0;
    if (close(p->fd) < 0)
        rc = -1;
    p->fd = -1;
    if (rc == 0 && !p->tmp) { /* written in place: the entry exists since the open */
        if (!p->f->put_fsync || dir_fsync(p->dirfd) == 0)
            return;
    } else if (rc == 0 && renameat(p->dirfd, p->tmp, p->dirfd, p->name) == 0) {
        free(p->tmp); /* renamed: nothing to unlink any more */
        p->tmp = NULL;
        if (!p->f->put_fsync || dir_fsync(p->dirfd) == 0)
            return;
    }
    put_close_files(p); /* the temporary file goes before the client hears */
    j->status = 500;
    j->msg = "Could not store the file";
}

static void put_job_work(struct disk_job *dj)
{
    struct put_job *j = (struct put_job *)dj;
    switch (j->stage) {
    case PUT_OPEN: put_open_work_or_clean(j); break;
    case PUT_WRITE: put_write_work(j); break;
    case PUT_FINISH: put_finish_work(j); break;
    case PUT_CLEANUP: put_close_files(j->p); break;
    }
}

static void put_job_release(struct disk_job *dj)
{
    struct put_job *j = (struct put_job *)dj;
    put_unref(j->p);
    free(j->path);
    free(j);
}

static void put_step(struct httpd_conn *h);
static void put_launch(struct httpd_conn *h, enum put_stage stage, char *path);

/* Refuse the PUT (status, msg) once its files are gone: on the pool, so the
 * client never sees the answer before the temporary file is removed. */
static void put_refuse(struct httpd_conn *h, int status, const char *msg)
{
    struct httpd_put *p = h->put;
    if (p->fd < 0 && p->dirfd < 0) {
        put_fail(h, status, msg);
        return;
    }
    p->refuse_status = status;
    p->remove_target = true;
    snprintf(p->refuse_msg, sizeof p->refuse_msg, "%s", msg ? msg : "");
    put_launch(h, PUT_CLEANUP, NULL);
}

/* Start a put job (disk_run: on the pool, or here when there is none). */
static void put_launch(struct httpd_conn *h, enum put_stage stage, char *path)
{
    struct httpd_put *p = h->put;
    struct put_job *j = calloc(1, sizeof *j);
    if (!j) {
        free(path);
        put_fail(h, 500, NULL);
        return;
    }
    j->p = p;
    j->stage = stage;
    j->path = path;
    if (stage == PUT_CLEANUP) {
        j->status = p->refuse_status;
        snprintf(j->cleanup_msg, sizeof j->cleanup_msg, "%s", p->refuse_msg);
    }
    j->base.work = put_job_work;
    j->base.done = put_job_done;
    j->base.release = put_job_release;
    p->job_out = true;
    p->refs++;
    disk_run(h, p->f, &j->base, false);
}

static void put_answer(struct httpd_conn *h, struct httpd_put *p)
{
    httpd_files_invalidate(p->f);
    int status = p->f->put_ok_status ? p->f->put_ok_status : p->existed ? 204 : 201;
    if (p->md5_checked && p->f->put_md5_ok_status)
        status = p->f->put_md5_ok_status;
    const char *reason = http_reason(status);
    if (p->md5_checked && p->f->put_md5_ok_reason)
        reason = p->f->put_md5_ok_reason;
    bool with_body = p->f->put_status_body && status != 204;
    h->put = NULL;
    put_unref(p); /* the job's release frees it (nothing on disk to undo) */
    bool keep = httpd_can_persist(h);
    if (with_body) {
        char body[128];
        int n = *reason ? snprintf(body, sizeof body, "<h1>%d - %.80s</h1>\n", status, reason)
                        : snprintf(body, sizeof body, "<h1>%d</h1>\n", status);
        httpd_response_head_reason(h, status, reason, "text/html", n, keep, NULL);
        evbuffer_add(httpd_tx(), body, (size_t)n);
    } else {
        httpd_response_head_reason(h, status, reason, NULL, status == 204 ? -1 : 0, keep, NULL);
    }
    httpd_done(h, keep);
}

/* On the loop, once a put job is back (or ran here). */
static void put_job_done(struct httpd_conn *h, struct disk_job *dj)
{
    struct put_job *j = (struct put_job *)dj;
    struct httpd_put *p = j->p;
    if (h->put != p)
        return; /* abandoned meanwhile: the job's release discards it */
    p->job_out = false;
    switch (j->stage) {
    case PUT_OPEN:
        if (j->status) {
            put_fail(h, j->status, j->msg);
            return;
        }
        if (!p->tmp)
            httpd_files_invalidate(p->f); /* the file changes under its name from now on */
        httpd_drop_head(h);
        httpd_send_continue(h);
        httpd_request_timeouts(h, 0);
        break;
    case PUT_WRITE:
        if (j->err) {
            put_fail(h, 500, j->err < 0 ? "Short write" : "Write failed");
            return;
        }
        break;
    case PUT_FINISH:
        if (j->status) {
            put_fail(h, j->status, j->msg);
            return;
        }
        put_answer(h, p);
        return;
    case PUT_CLEANUP: put_fail(h, j->status, j->cleanup_msg[0] ? j->cleanup_msg : NULL); return;
    }
    if (!p->stepping)
        put_step(h); /* came back from the pool: go on with the body */
}

/* Move the body along: read what has come (up to PUT_CHUNK) and hand it to
 * a write job; once all is written, the finishing job. Runs until a job is
 * out on the pool or the body needs more bytes. */
static void put_step(struct httpd_conn *h)
{
    struct httpd_put *p = h->put;
    p->stepping = true;
    while (h->put == p && !p->job_out) {
        if (!p->body_done) {
            enum httpd_body_result r = httpd_body_read(h, p->chunk, PUT_CHUNK);
            if (r == HTTPD_BODY_ERROR) {
                put_refuse(h, 400, "Bad chunked body");
                break;
            }
            p->body_done = r == HTTPD_BODY_DONE;
            size_t n = evbuffer_get_length(p->chunk);
            if (p->max && p->written + n > p->max) {
                put_refuse(h, 413, NULL);
                break;
            }
            if (n > 0) {
                if (p->paused) {
                    p->paused = false;
                    conn_resume_read(h->c);
                }
                put_launch(h, PUT_WRITE, NULL);
                continue;
            }
            if (!p->body_done)
                break; /* wait for more of the body */
        }
        if (p->md5) {
            char got[64];
            md5_b64(p->md5, got, sizeof got);
            EVP_MD_CTX_free(p->md5);
            p->md5 = NULL;
            p->md5_checked = true;
            if (strcmp(got, p->want_md5)) {
                char msg[256];
                snprintf(msg, sizeof msg, "Content-MD5 mismatch, expected: %s actual: %s", p->want_md5, got);
                put_refuse(h, 400, msg);
                break;
            }
        }
        put_launch(h, PUT_FINISH, NULL);
        break;
    }
    if (h->put == p)
        p->stepping = false;
}

/* Body bytes came (h_on_read): go on, or let them wait while a job is out
 * (reading pauses past PUT_MAX_BUFFERED: the client waits with them). */
static void put_data(struct httpd_conn *h)
{
    struct httpd_put *p = h->put;
    if (p->job_out) {
        if (evbuffer_get_length(conn_in(h->c)) > PUT_MAX_BUFFERED && !p->paused) {
            p->paused = true;
            conn_pause_read(h->c);
        }
        return;
    }
    put_step(h);
}

static void do_put(struct httpd_conn *h, struct http_msg *req, struct httpd_files *f, const char *path, bool trailing)
{
    if (!f->enable_put) {
        httpd_error(h, 403, "PUT disabled");
        return;
    }
    if (f->max_put_size && req->body == HTTP_BODY_LENGTH && req->content_length > f->max_put_size) {
        h->keep_alive = false;
        httpd_error(h, 413, NULL);
        return;
    }
    if (trailing || !strcmp(path, "/")) {
        httpd_error(h, 403, NULL);
        return;
    }
    size_t ml;
    const char *mv = http_header_value(req, "content-md5", &ml);
    struct httpd_put *p = calloc(1, sizeof *p);
    char *pathcopy = strdup(path);
    if (p)
        p->chunk = evbuffer_new();
    if (!p || !pathcopy || !p->chunk) {
        if (p && p->chunk)
            evbuffer_free(p->chunk);
        free(p);
        free(pathcopy);
        httpd_error(h, 500, NULL);
        return;
    }
    p->fd = p->dirfd = -1;
    p->refs = 1; /* h->put's */
    p->f = f;
    p->max = f->max_put_size;
    p->conn_id = h->c->id;
    p->loop = h->c->loop;
    if (mv && ml > 0 && !f->skip_md5_check) {
        while (ml > 0 && (mv[ml - 1] == '=' || mv[ml - 1] == ' '))
            ml--;
        snprintf(p->want_md5, sizeof p->want_md5, "%.*s", (int)(ml < 60 ? ml : 60), mv);
        p->md5 = EVP_MD_CTX_new();
        if (!p->md5 || EVP_DigestInit_ex(p->md5, EVP_md5(), NULL) != 1) {
            put_struct_free(p);
            free(pathcopy);
            httpd_error(h, 500, NULL);
            return;
        }
    }
    h->put = p;
    /* the directory walk, mkdir, fstatat and the open: a put job; the body
     * waits until it is back (no 100-continue before the file is there) */
    put_launch(h, PUT_OPEN, pathcopy);
}

/* ---- DELETE ---- */

struct delete_job {
    struct disk_job j;
    struct httpd_files *f;
    char *path;
    int status; /* out: 204, or the error's */
};

/* On a worker: the file, if it is a regular one, unlinked. */
static void delete_work(struct disk_job *dj)
{
    struct delete_job *d = (struct delete_job *)dj;
    const char *base;
    int dfd = strcmp(d->path, "/") ? open_parent(d->f, d->path, false, 0, &base) : -1;
    struct stat st;
    if (dfd < 0 || fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int e = dfd < 0 && !strcmp(d->path, "/") ? EACCES : errno;
        if (dfd >= 0)
            close(dfd);
        d->status = errno_status(e);
        return;
    }
    int r = S_ISREG(st.st_mode) ? unlinkat(dfd, base, 0) : -1;
    if (r == 0)
        httpd_files_invalidate(d->f);
    close(dfd);
    d->status = r == 0 ? 204 : 403;
}

static void delete_done(struct httpd_conn *h, struct disk_job *dj)
{
    struct delete_job *d = (struct delete_job *)dj;
    if (d->status != 204) {
        httpd_error(h, d->status, NULL);
        return;
    }
    bool keep = httpd_can_persist(h);
    httpd_response_head(h, 204, NULL, -1, keep, NULL);
    httpd_done(h, keep);
}

static void delete_release(struct disk_job *dj)
{
    struct delete_job *d = (struct delete_job *)dj;
    free(d->path);
    free(d);
}

static void do_delete(struct httpd_conn *h, struct httpd_files *f, const char *path)
{
    if (!f->enable_delete) {
        httpd_error(h, 403, "DELETE disabled");
        return;
    }
    struct delete_job *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(path))) {
        free(d);
        httpd_error(h, 500, NULL);
        return;
    }
    d->f = f;
    d->j.work = delete_work;
    d->j.done = delete_done;
    d->j.release = delete_release;
    /* the directory open, fstatat and unlinkat: a disk job */
    disk_run(h, f, &d->j, false);
}

/* ---- GET /dir/??a,b,c (Perlbal's enable_concatenate_get) ---- */

#define CONCAT_MAX 100

struct concat_job {
    struct disk_job j;
    struct httpd_files *f;
    bool head;
    char base[PATH_MAX];
    int n;
    char *names[CONCAT_MAX]; /* clean paths of the files */
    char ims[64];
    bool has_ims;
    /* out */
    int status;
    const char *msg;
    int fds[CONCAT_MAX];
    uint64_t total;
    time_t newest;
    const char *mime;
    bool missing; /* a file does not exist (poststat) */
};

static void concat_work(struct disk_job *j)
{
    struct concat_job *c = (struct concat_job *)j;
    struct stat st;
    int dfd = open_beneath(c->f, c->base, O_RDONLY | O_DIRECTORY);
    if (dfd < 0 || fstat(dfd, &st) < 0 || !S_ISDIR(st.st_mode)) {
        if (dfd >= 0)
            close(dfd);
        c->status = 404;
        c->msg = "Base directory not a directory";
        return;
    }
    close(dfd);
    for (int i = 0; i < c->n; i++) {
        int fd = open_beneath(c->f, c->names[i], O_RDONLY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            if (fd >= 0)
                close(fd);
            c->status = 404;
            c->msg = "One or more file does not exist";
            c->missing = true;
            return;
        }
        c->fds[i] = fd;
        c->total += (uint64_t)st.st_size;
        if (st.st_mtime > c->newest)
            c->newest = st.st_mtime;
        const char *slash = strrchr(c->names[i], '/');
        if (!c->mime && strchr(slash ? slash : c->names[i], '.')) {
            const char *m = httpd_mime_type(c->names[i]);
            if (strcmp(m, "text/plain") || strstr(c->names[i], ".txt"))
                c->mime = m;
        }
    }
    c->status = 200;
}

static void concat_done(struct httpd_conn *h, struct disk_job *j)
{
    struct concat_job *c = (struct concat_job *)j;
    struct httpd_files *f = c->f;
    if (c->status != 200) {
        if (c->missing && f->poststat && f->poststat(f->hook_arg, h, HTTPD_POSTSTAT_MISSING, 0))
            return; /* taken: the daemon answers */
        httpd_error(h, c->status, c->msg);
        return;
    }
    bool keep = httpd_can_persist(h);
    char lm[HTTP_DATE_LEN + 1], extra[128];
    http_date_format(c->newest, lm);
    snprintf(extra, sizeof extra, "Last-Modified: %s\r\n", lm);
    const char *mime = c->mime ? c->mime : "text/plain";
    if (c->has_ims) { /* as Perlbal: the exact date string (an IE "; length=N" aside) */
        char *semi = strchr(c->ims, ';');
        if (semi)
            *semi = 0;
        size_t il = strlen(c->ims);
        while (il && c->ims[il - 1] == ' ')
            c->ims[--il] = 0;
        if (!strcmp(c->ims, lm)) {
            httpd_response_head(h, 304, mime, -1, keep, extra);
            httpd_done(h, keep);
            return;
        }
    }
    if (f->poststat && f->poststat(f->hook_arg, h, HTTPD_POSTSTAT_SEND, (int64_t)c->newest))
        return; /* taken: the daemon answers */
    httpd_response_head(h, 200, mime, (int64_t)c->total, keep, extra);
    if (!c->head) {
        for (int i = 0; i < c->n; i++) {
            struct stat st;
            if (fstat(c->fds[i], &st) < 0 || st.st_size == 0)
                continue;
            if (httpd_tx_add_file(h->tls, c->fds[i], 0, (int64_t)st.st_size) == 0)
                c->fds[i] = -1; /* the buffer owns it */
        }
    }
    httpd_done(h, keep);
}

static void concat_release(struct disk_job *j)
{
    struct concat_job *c = (struct concat_job *)j;
    for (int i = 0; i < c->n; i++) {
        if (c->fds[i] >= 0)
            close(c->fds[i]);
        free(c->names[i]);
    }
    free(c);
}

/* target: "/base/??a,b/c?cachebuster". Answers it (errors as Perlbal). */
static void serve_concat(struct httpd_conn *h, struct http_msg *req, struct httpd_files *f, const char *qq)
{
    const char *t = req->target;
    if (!f->concat_get) {
        httpd_error(h, 403, "Multiple file serving isn't enabled");
        return;
    }
    if (qq == t || qq[-1] != '/') {
        httpd_error(h, 500,
                    "Base directory (before ?"
                    "?) must end in slash.");
        return;
    }
    struct concat_job *c = calloc(1, sizeof *c);
    if (!c) {
        httpd_error(h, 500, NULL);
        return;
    }
    c->j.work = concat_work;
    c->j.done = concat_done;
    c->j.release = concat_release;
    c->f = f;
    c->head = req->method == HTTP_M_HEAD;
    bool trailing;
    if (http_path_normalize(t, (size_t)(qq - t), c->base, sizeof c->base, &trailing) < 0) {
        concat_release(&c->j);
        httpd_error(h, 400, "Bad path");
        return;
    }
    const char *list = qq + 2, *end = t + req->target_len;
    const char *q = memchr(list, '?', (size_t)(end - list)); /* a cache buster after the list */
    if (q)
        end = q;
    const char *p = list;
    int status = 0;
    const char *msg = NULL;
    while (p < end && !status) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (c->n == CONCAT_MAX) {
            status = 403;
            msg = "Too many files requested";
            break;
        }
        char raw[PATH_MAX], clean[PATH_MAX];
        int rl = snprintf(raw, sizeof raw, "%s/%.*s", c->base, (int)(e - p), p);
        bool tr;
        if ((e - p >= 3 && !memcmp(p, "../", 3)) || memmem(p, (size_t)(e - p), "/../", 4) || rl >= (int)sizeof raw ||
            http_path_normalize(raw, (size_t)rl, clean, sizeof clean, &tr) < 0) {
            status = 403;
            msg = "Bogus filenames";
            break;
        }
        c->fds[c->n] = -1;
        c->names[c->n++] = strdup(clean);
        p = comma ? comma + 1 : end;
    }
    if (status || c->n == 0) {
        concat_release(&c->j);
        httpd_error(h, status ? status : 404, msg ? msg : "One or more file does not exist");
        return;
    }
    size_t il;
    const char *iv = http_header_value(req, "if-modified-since", &il);
    if (iv && il < sizeof c->ims) {
        memcpy(c->ims, iv, il);
        c->has_ims = true;
    }
    httpd_drop_head(h);
    disk_run(h, f, &c->j, false);
}

void httpd_files_serve(struct httpd_conn *h, struct http_msg *req, struct httpd_files *f)
{
    if ((req->method == HTTP_M_GET || req->method == HTTP_M_HEAD) && f->docroot) {
        const char *qq = memmem(req->target, req->target_len, "??", 2);
        if (qq) {
            serve_concat(h, req, f, qq);
            return;
        }
    }
    char path[PATH_MAX];
    bool trailing = false;
    int pl = http_path_normalize(req->target, req->target_len, path, sizeof path - 256, &trailing);
    if (pl >= 0 && f->rewrite_path)
        f->rewrite_path(f->hook_arg, h, path, sizeof path - 256);
    if (pl < 0) {
        httpd_error(h, 400, "Bad path");
        return;
    }
    if (!f->docroot) {
        httpd_error(h, 500, "No docroot configured");
        return;
    }
    switch (req->method) {
    case HTTP_M_PUT: do_put(h, req, f, path, trailing); return;
    case HTTP_M_GET:
    case HTTP_M_HEAD: {
        struct get_job *g = calloc(1, sizeof *g);
        if (!g) {
            httpd_error(h, 500, NULL);
            return;
        }
        g->j.work = get_work;
        g->j.done = get_done;
        g->f = f;
        g->head = req->method == HTTP_M_HEAD;
        g->trailing = trailing;
        g->fd = -1;
        memcpy(g->path, path, (size_t)pl + 1);
        size_t rl, il;
        const char *rv = http_header_value(req, "range", &rl);
        const char *iv = http_header_value(req, "if-modified-since", &il);
        if (rv && rl < sizeof g->range) {
            memcpy(g->range, rv, rl);
            g->has_range = true;
        }
        if (iv && il < sizeof g->ims) {
            memcpy(g->ims, iv, il);
            g->has_ims = true;
        }
        g->prefix_fn = h->prefix_fn;
        if (g->prefix_fn)
            memcpy(g->prefix_ctx, h->prefix_ctx, sizeof g->prefix_ctx);
        g->cached_fd = trailing ? -1 : fcache_get(f, path);
        g->j.release = get_release;
        httpd_drop_head(h);
        disk_run(h, f, &g->j, g->cached_fd >= 0);
        return;
    }
    case HTTP_M_DELETE:
        httpd_drop_head(h);
        do_delete(h, f, path);
        return;
    default: httpd_error(h, f->bad_method_status ? f->bad_method_status : 405, NULL); return;
    }
}
