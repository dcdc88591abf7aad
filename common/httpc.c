/* httpc: the client side of HTTP/1.1 connections. One driver (hc_on_read)
 * walks the states of httpc.h; the body pump moves bytes from the socket's
 * input to a per-thread scratch buffer handed to on_body (chains move, no
 * copy, for Content-Length and close-delimited bodies). */
#include "common/httpc.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"

static __thread struct http_msg scratch_resp;
static __thread struct evbuffer *scratch_body;

static int hc_on_read(struct core_conn *c);
static void hc_on_connect(struct core_conn *c, bool ok);
static bool hc_on_eof(struct core_conn *c);
static void hc_on_drained(struct core_conn *c);
static void hc_on_close(struct core_conn *c, enum conn_close_reason why);

static const struct conn_ops httpc_conn_ops = {
    .name = "httpc",
    .on_read = hc_on_read,
    .on_connect = hc_on_connect,
    .on_eof = hc_on_eof,
    .on_drained = hc_on_drained,
    .on_close = hc_on_close,
};

static struct httpc *connect_any(struct core_loop *loop, const struct sockaddr *sa, socklen_t salen, const char *host,
                                 int port, uint32_t connect_ms, const struct httpc_ops *ops, void *data)
{
    struct httpc *hc = calloc(1, sizeof *hc);
    if (!hc)
        return NULL;
    hc->ops = ops;
    hc->data = data;
    hc->in_connect = true;
    struct core_conn *c = host ? conn_connect_host(loop, host, port, &httpc_conn_ops, hc)
                               : conn_connect(loop, sa, salen, &httpc_conn_ops, hc);
    hc->in_connect = false;
    if (!c) {
        /* whether or not the core ran on_close, hc_on_close left hc alone
         * while in_connect was set */
        free(hc);
        return NULL;
    }
    hc->c = c;
    conn_set_timeouts(c, 0, connect_ms);
    return hc;
}

struct httpc *httpc_connect(struct core_loop *loop, const struct sockaddr *sa, socklen_t salen, uint32_t connect_ms,
                            const struct httpc_ops *ops, void *data)
{
    return connect_any(loop, sa, salen, NULL, 0, connect_ms, ops, data);
}

struct httpc *httpc_connect_host(struct core_loop *loop, const char *host, int port, uint32_t connect_ms,
                                 const struct httpc_ops *ops, void *data)
{
    return connect_any(loop, NULL, 0, host, port, connect_ms, ops, data);
}

struct httpc *httpc_wrap(struct core_loop *loop, int fd, const struct httpc_ops *ops, void *data)
{
    struct httpc *hc = calloc(1, sizeof *hc);
    if (!hc) {
        close(fd);
        return NULL;
    }
    hc->ops = ops;
    hc->data = data;
    hc->state = HTTPC_IDLE;
    hc->in_connect = true; /* a failure inside conn_new calls nothing of ours */
    struct core_conn *c = conn_new(loop, fd, NULL, 0, &httpc_conn_ops, hc);
    hc->in_connect = false;
    if (!c) {
        free(hc);
        return NULL;
    }
    hc->c = c;
    return hc;
}

void httpc_request(struct httpc *hc, enum http_method method, struct evbuffer *req)
{
    hc->req_method = method;
    hc->state = HTTPC_WAIT_HEAD;
    hc->status = 0;
    hc->skip_body = false;
    hc->requests++;
    conn_set_busy(hc->c, true);
    conn_write_now(hc->c, req);
}

void httpc_send(struct httpc *hc, struct evbuffer *bytes) { conn_write_now(hc->c, bytes); }

void httpc_pause(struct httpc *hc) { conn_pause_read(hc->c); }

void httpc_resume(struct httpc *hc) { conn_resume_read(hc->c); }

void httpc_close(struct httpc *hc) { conn_close(hc->c); }

void httpc_thread_exit(void)
{
    if (scratch_body)
        evbuffer_free(scratch_body);
    scratch_body = NULL;
}

size_t httpc_output_pending(struct httpc *hc) { return evbuffer_get_length(conn_out(hc->c)); }

static void hc_on_connect(struct core_conn *c, bool ok)
{
    struct httpc *hc = c->data;
    if (!ok) {
        hc->failure = HTTPC_CONNECT_FAILED;
    } else {
        if (hc->state == HTTPC_CONNECTING)
            hc->state = HTTPC_IDLE;
        conn_set_timeouts(c, hc->read_ms, hc->write_ms);
    }
    if (hc->in_connect)
        return;
    if (hc->ops->on_connect)
        hc->ops->on_connect(hc, ok);
}

/* Move what the input has of the body to on_body. Returns 1 when the body
 * is complete, 0 for more, -1 on a framing error. */
static int pump(struct httpc *hc)
{
    struct evbuffer *in = conn_in(hc->c);
    if (!scratch_body)
        scratch_body = evbuffer_new();
    struct evbuffer *out = scratch_body;
    int done = 0;
    switch (hc->body) {
    case HTTP_BODY_NONE: return 1;
    case HTTP_BODY_LENGTH: {
        size_t n = evbuffer_get_length(in);
        if (n > hc->remaining)
            n = (size_t)hc->remaining;
        evbuffer_remove_buffer(in, out, n);
        hc->remaining -= n;
        done = hc->remaining == 0;
        break;
    }
    case HTTP_BODY_CHUNKED:
        while (evbuffer_get_length(in) > 0 && !done) {
            struct evbuffer_iovec v;
            if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
                break;
            const char *base = v.iov_base;
            size_t pos = 0;
            while (pos < v.iov_len) {
                size_t cons, off, dl;
                enum http_chunk_result r = http_chunked_step(&hc->chunk, base + pos, v.iov_len - pos, &cons, &off, &dl);
                if (r == HTTP_CHUNK_ERROR) {
                    evbuffer_drain(out, evbuffer_get_length(out));
                    return -1;
                }
                if (r == HTTP_CHUNK_DATA && !hc->raw_body)
                    evbuffer_add(out, base + pos + off, dl);
                pos += cons;
                if (r == HTTP_CHUNK_DONE) {
                    done = 1;
                    break;
                }
                if (r == HTTP_CHUNK_NEED_MORE)
                    break;
            }
            if (hc->raw_body)
                evbuffer_remove_buffer(in, out, pos);
            else
                evbuffer_drain(in, pos);
        }
        break;
    case HTTP_BODY_CLOSE: evbuffer_add_buffer(out, in); break;
    }
    if (evbuffer_get_length(out) > 0) {
        if (!hc->skip_body && hc->ops->on_body)
            hc->ops->on_body(hc, out);
        evbuffer_drain(out, evbuffer_get_length(out));
    }
    return done;
}

static void finish(struct httpc *hc)
{
    bool reusable = hc->keep_alive && hc->body != HTTP_BODY_CLOSE && evbuffer_get_length(conn_in(hc->c)) == 0;
    hc->state = HTTPC_IDLE;
    conn_set_busy(hc->c, false);
    hc->ops->on_done(hc, reusable);
}

static int hc_on_read(struct core_conn *c)
{
    struct httpc *hc = c->data;
    struct evbuffer *in = conn_in(c);
    while (!conn_is_closing(c)) {
        switch (hc->state) {
        case HTTPC_CONNECTING:
        case HTTPC_IDLE:
            /* bytes nobody asked for: the connection is not usable */
            if (evbuffer_get_length(in) == 0)
                return 0;
            hc->failure = HTTPC_UNEXPECTED;
            return -1;
        case HTTPC_WAIT_HEAD: {
            size_t len = evbuffer_get_length(in);
            if (len == 0)
                return 0;
            size_t max = hc->max_head ? hc->max_head : HTTP_DEFAULT_MAX_HEAD;
            size_t want = len < max ? len : max;
            const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
            struct http_limits lim = { .max_head = max };
            struct http_msg *resp = &scratch_resp;
            int r = http_parse_response(buf, want, hc->req_method, &lim, resp);
            if (r == 0)
                return 0;
            if (r < 0) {
                hc->failure = HTTPC_BAD_RESPONSE;
                return -1;
            }
            if (resp->status >= 100 && resp->status < 200) { /* interim: skip */
                evbuffer_drain(in, resp->head_len);
                continue;
            }
            hc->status = resp->status;
            hc->body = resp->body;
            hc->remaining = resp->body == HTTP_BODY_LENGTH ? resp->content_length : 0;
            hc->keep_alive = resp->keep_alive;
            if (resp->body == HTTP_BODY_CHUNKED)
                http_chunked_init(&hc->chunk, 0);
            hc->state = HTTPC_BODY;
            size_t head_len = resp->head_len;
            enum httpc_head_action a = hc->ops->on_head(hc, resp);
            if (a == HTTPC_CLOSE)
                return -1;
            if (conn_is_closing(c))
                return 0;
            evbuffer_drain(in, head_len);
            hc->skip_body = a == HTTPC_SKIP_BODY;
            break;
        }
        case HTTPC_BODY: {
            int r = pump(hc);
            if (r < 0) {
                hc->failure = HTTPC_BAD_RESPONSE;
                return -1;
            }
            if (r == 0 || conn_is_closing(c))
                return 0;
            finish(hc);
            break;
        }
        }
    }
    return 0;
}

/* The server closed: a body delimited by the close is complete; anything
 * else in flight ends in on_close (the user sees the state). */
static bool hc_on_eof(struct core_conn *c)
{
    struct httpc *hc = c->data;
    if (hc->state == HTTPC_BODY && hc->body == HTTP_BODY_CLOSE) {
        pump(hc);
        hc->keep_alive = false;
        finish(hc);
    }
    return true;
}

static void hc_on_drained(struct core_conn *c)
{
    struct httpc *hc = c->data;
    if (hc->ops->on_drained)
        hc->ops->on_drained(hc);
}

static void hc_on_close(struct core_conn *c, enum conn_close_reason why)
{
    struct httpc *hc = c->data;
    if (hc->in_connect)
        return; /* httpc_connect returns NULL and frees hc */
    if (hc->state == HTTPC_CONNECTING && hc->failure == HTTPC_OK)
        hc->failure = HTTPC_CONNECT_FAILED;
    if (hc->ops->on_close)
        hc->ops->on_close(hc, why);
    free(hc);
}
