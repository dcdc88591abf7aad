/* pb_client: the client side of every HTTP service — reading request heads
 * (bounded, with a deadline against slow senders), keep-alive and pipelining,
 * simple error responses, the selector (vhosts) hand-over, and the
 * management console connections.
 *
 * It never talks to backends or files itself: reverse_proxy requests go to
 * pb_proxy.c, web_server requests to pb_web.c. */
#include <arpa/inet.h>
#include <ctype.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "perlbal/pb_conn.h"
#include "perlbal/pb_plugin.h"

#define PB_MAX_HEAD 16384
#define PB_HEAD_DEADLINE_MS 30000
#define PB_WRITE_TIMEOUT_MS 120000
#define PB_MAX_PIPELINE_IN (256 * 1024)

static __thread struct http_msg scratch_req;
static __thread struct evbuffer *tx_client, *tx_backend;

struct evbuffer *pb_tx(void)
{
    if (!tx_client) tx_client = evbuffer_new();
    return tx_client;
}

struct evbuffer *pb_txb(void)
{
    if (!tx_backend) tx_backend = evbuffer_new();
    return tx_backend;
}

void pb_tx_thread_exit(void)
{
    if (tx_client) evbuffer_free(tx_client);
    if (tx_backend) evbuffer_free(tx_backend);
    tx_client = tx_backend = NULL;
}

void pb_send(struct core_conn *c, struct evbuffer *buf, bool tls)
{
    struct evbuffer *out = conn_out(c);
    if (!tls && c->fd >= 0 && evbuffer_get_length(out) == 0 && !conn_is_closing(c)) {
        while (evbuffer_get_length(buf) > 0)
            if (evbuffer_write(buf, c->fd) <= 0) break;
    }
    if (evbuffer_get_length(buf) > 0) evbuffer_add_buffer(out, buf);
}

void pb_client_flush(struct pb_client *cl)
{
    struct evbuffer *tx = pb_tx();
    if (evbuffer_get_length(tx) > 0) pb_send(cl->c, tx, cl->listen_svc->enable_ssl);
}
static __thread time_t date_cached_at;
static __thread char date_cached[HTTP_DATE_LEN + 1];

const char *pb_http_date_now(void)
{
    time_t now = time(NULL);
    if (now != date_cached_at) {
        date_cached_at = now;
        http_date_format(now, date_cached);
    }
    return date_cached;
}

static int client_on_read(struct core_conn *c);
static void client_on_drained(struct core_conn *c);
static void client_on_close(struct core_conn *c, enum conn_close_reason why);

/* The peer closed. A lingering conn (error answered, input drained) is
 * done; otherwise the core's default lets a response in flight go out. */
static bool client_on_eof(struct core_conn *c)
{
    struct pb_client *cl = c->data;
    return cl->lingering;
}

static const struct conn_ops client_ops = {
    .name = "pb_client",
    .on_eof = client_on_eof,
    .on_read = client_on_read,
    .on_drained = client_on_drained,
    .on_close = client_on_close,
};

static void client_reset_request(struct pb_client *cl);

static void client_idle_timeouts(struct pb_client *cl, bool between_requests)
{
    int secs = between_requests && cl->svc->persist_client_idle_timeout ? cl->svc->persist_client_idle_timeout
                                                                         : cl->svc->idle_timeout;
    conn_set_timeouts(cl->c, secs > 0 ? (uint32_t)secs * 1000 : 0, PB_WRITE_TIMEOUT_MS);
}

void pb_client_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen, bool reject)
{
    struct pb_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        close(fd);
        return;
    }
    cl->svc = cl->listen_svc = svc;
    cl->loop_index = loop->index;
    cl->prio = 1;
    cl->put_fd = -1;
    cl->put_dirfd = -1;
    cl->upload_fd = -1;
    if (svc->client_sndbuf_size) {
        int v = (int)svc->client_sndbuf_size;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    }
    struct core_conn *c;
    if (svc->enable_ssl && svc->tls_ctx) {
        struct bufferevent *bev = tls_accept_bev(svc->tls_ctx, loop->base, fd);
        if (!bev) {
            close(fd);
            free(cl);
            return;
        }
        c = conn_new_bev(loop, bev, sa, salen, &client_ops, cl);
    } else {
        c = conn_new(loop, fd, sa, salen, &client_ops, cl);
    }
    if (!c) {
        free(cl);
        return;
    }
    cl->c = c;
    conn_set_output_limit(c, svc->buffer_size ? svc->buffer_size : 256 * 1024);
    client_idle_timeouts(cl, false);
    if (reject) {
        cl->keep_alive = false;
        cl->state = CL_RESPONDING;
        pb_client_error(cl, 503, "Too many connections");
    }
}

void pb_client_request_timeouts(struct pb_client *cl, size_t head_in_buffer)
{
    /* While the request body is still coming, a silent client is cut off
     * after idle_timeout (it would hold a backend); once the request is all
     * in (read, or waiting in our input buffer), the client may wait
     * silently for as long as the answer takes. */
    size_t have = evbuffer_get_length(conn_in(cl->c));
    have = have > head_in_buffer ? have - head_in_buffer : 0;
    bool all_in = cl->body_done || (cl->body == HTTP_BODY_LENGTH && have >= cl->body_remaining);
    int secs = cl->svc->idle_timeout;
    conn_set_timeouts(cl->c, !all_in && secs > 0 ? (uint32_t)secs * 1000 : 0, PB_WRITE_TIMEOUT_MS);
}

bool pb_client_can_persist(struct pb_client *cl)
{
    return cl->keep_alive && cl->listen_svc->persist_client && cl->svc->persist_client && !loop_stopping();
}

void pb_client_response_head(struct pb_client *cl, int status, const char *ctype, int64_t content_length,
                             bool keep_alive, const char *extra)
{
    struct evbuffer *out = pb_tx();
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\n", cl->version_minor, status, http_reason(status),
                        pb_http_date_now());
    if (cl->svc->server_tokens) evbuffer_add(out, "Server: Perlbal\r\n", 17);
    if (ctype) evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    if (content_length >= 0) evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)content_length);
    if (extra) evbuffer_add(out, extra, strlen(extra));
    if (keep_alive) {
        if (cl->version_minor == 0) evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    } else {
        evbuffer_add(out, "Connection: close\r\n", 19);
    }
    evbuffer_add(out, "\r\n", 2);
    cl->response_started = true;
}

void pb_client_error(struct pb_client *cl, int status, const char *msg)
{
    char body[512];
    int n = snprintf(body, sizeof body, "<h1>%d - %s</h1>\n%s%s", status, http_reason(status), msg ? msg : "",
                     msg ? "\n" : "");
    bool keep = status < 500 && status != 400 && status != 431 && status != 408 && status != 413 &&
                status != 411 && status != 501 && status != 505 && pb_client_can_persist(cl) &&
                (cl->body == HTTP_BODY_NONE || cl->body_done);
    pb_client_response_head(cl, status, "text/html", n, keep, NULL);
    if (cl->method != HTTP_M_HEAD) evbuffer_add(pb_tx(), body, (size_t)n);
    if (keep) {
        pb_client_done(cl, true);
        return;
    }
    /* Lingering close: the client may still be sending (a header bomb, a
     * refused body). Closing with unread input would reset the connection
     * and could destroy the answer in flight, so read and discard until the
     * answer is out, then half-close and wait briefly for the peer. */
    if (cl->listen_svc->enable_ssl) {
        pb_client_done(cl, false);
        return;
    }
    pb_client_flush(cl);
    client_reset_request(cl);
    cl->state = CL_RESPONDING;
    cl->lingering = true;
    cl->keep_alive = false;
    evbuffer_drain(conn_in(cl->c), evbuffer_get_length(conn_in(cl->c)));
    conn_set_timeouts(cl->c, 2000, 5000);
    if (evbuffer_get_length(conn_out(cl->c)) == 0) client_on_drained(cl->c);
}

void pb_client_set_responding(struct pb_client *cl)
{
    cl->state = CL_RESPONDING;
}

static void client_release_active(struct pb_client *cl)
{
    if (cl->active_svc) {
        cl->active_svc->loops[cl->loop_index].active_clients--;
        cl->active_svc = NULL;
    }
}

static void client_reset_request(struct pb_client *cl)
{
    free(cl->target);
    cl->target = NULL;
    free(cl->cache_key);
    cl->cache_key = NULL;
    free(cl->range);
    cl->range = NULL;
    free(cl->rp_hdrs);
    cl->rp_hdrs = NULL;
    if (cl->req_head) evbuffer_drain(cl->req_head, evbuffer_get_length(cl->req_head));
    if (cl->upload_fd >= 0) close(cl->upload_fd);
    cl->upload_fd = -1;
}

void pb_client_done(struct pb_client *cl, bool keep_alive)
{
    if (cl->throttle_counted) pb_plugins_proxy_end(cl->svc, cl);
    pb_client_flush(cl);
    client_reset_request(cl);
    /* Stopping: no next request. (The busy mark is left alone on a closing
     * conn: clearing it could free the conn under us while the daemon is
     * stopping; close-after-write does not wait for it.) */
    if (!keep_alive || loop_stopping()) {
        cl->state = CL_RESPONDING;
        conn_close_after_write(cl->c);
        return;
    }
    /* A request body the handler did not read must not be taken for the
     * next request. */
    if (cl->body != HTTP_BODY_NONE && !cl->body_done) {
        cl->state = CL_RESPONDING;
        conn_close_after_write(cl->c);
        return;
    }
    cl->state = CL_READ_HEAD;
    cl->svc = cl->listen_svc;
    cl->body = HTTP_BODY_NONE;
    cl->response_started = false;
    cl->head_started_ms = 0;
    cl->retries = 0;
    cl->error_retries = 0;
    cl->prio = 1;
    /* not stopping, so this cannot free the conn */
    conn_set_busy(cl->c, false);
    client_idle_timeouts(cl, true);
    conn_resume_read(cl->c);
    if (!cl->in_dispatch) conn_kick(cl->c);
}

/* Priority from the high-priority cookie. */
static int request_priority(struct pb_service *svc, struct http_msg *req)
{
    if (!svc->high_priority_cookie || !*svc->high_priority_cookie) return 1;
    size_t len;
    const char *ck = http_header_value(req, "cookie", &len);
    if (!ck) return 1;
    size_t nl = strlen(svc->high_priority_cookie);
    for (size_t i = 0; i + nl < len; i++) {
        if ((i == 0 || ck[i - 1] == ' ' || ck[i - 1] == ';') && strncmp(ck + i, svc->high_priority_cookie, nl) == 0 &&
            ck[i + nl] == '=') {
            const char *v = ck + i + nl + 1;
            const char *ve = memchr(v, ';', len - (size_t)(v - ck));
            size_t vl = ve ? (size_t)(ve - v) : len - (size_t)(v - ck);
            const char *want = svc->high_priority_cookie_contents;
            if (!want || !*want) return 0;
            if (memmem(v, vl, want, strlen(want))) return 0;
        }
    }
    return 1;
}

/* Vhosts: literal host, "*.host", then peel labels ("*.site.com", "*.com"),
 * then "*". Returns the target service or NULL. */
static struct pb_service *vhost_select(struct pb_service *sel, struct http_msg *req)
{
    char host[256];
    size_t hl = 0;
    if (req->host_index >= 0) {
        const struct http_header *h = &req->headers[req->host_index];
        hl = h->value_len < sizeof host - 3 ? h->value_len : sizeof host - 3;
        for (size_t i = 0; i < hl; i++) host[i] = (char)tolower((unsigned char)h->value[i]);
    }
    host[hl] = 0;
    char *colon = strrchr(host, ':');
    if (colon && !strchr(host, ']')) *colon = 0;
    hl = strlen(host);
    if (hl && host[hl - 1] == '.') host[--hl] = 0;
    char wild[260];
    if (hl) snprintf(wild, sizeof wild, "*.%s", host);
    pthread_mutex_lock(&pb_lock);
    struct pb_service *found = NULL;
    /* literal */
    for (struct pb_vhost *v = sel->vhosts; v && hl && !found; v = v->next)
        if (!strcmp(v->pattern, host)) found = pb_service_find(v->target);
    if (!found && hl) {
        /* *.host, then peel */
        char *p = wild; /* "*.a.b.c" */
        for (;;) {
            for (struct pb_vhost *v = sel->vhosts; v && !found; v = v->next)
                if (!strcmp(v->pattern, p)) found = pb_service_find(v->target);
            if (found) break;
            char *dot = strchr(p + 2, '.');
            if (!dot) break;
            /* "*.b.c": move the "*" to just before the dot */
            p = dot - 1;
            *p = '*';
        }
    }
    if (!found)
        for (struct pb_vhost *v = sel->vhosts; v && !found; v = v->next)
            if (!strcmp(v->pattern, "*")) found = pb_service_find(v->target);
    pthread_mutex_unlock(&pb_lock);
    return found;
}

/* One complete request head is at the front of the input: hand it on. */
static void dispatch(struct pb_client *cl, struct http_msg *req)
{
    atomic_fetch_add_explicit(&pb_total_requests, 1, memory_order_relaxed);
    cl->c->requests++;
    cl->method = req->method;
    cl->version_minor = req->version_minor;
    cl->keep_alive = req->keep_alive;
    cl->body = req->body;
    cl->body_remaining = req->body == HTTP_BODY_LENGTH ? req->content_length : 0;
    cl->body_done = req->body == HTTP_BODY_NONE;
    cl->expect_continue = req->expect_continue;
    cl->sent_continue = false;
    cl->head_started_ms = 0;
    cl->target = strndup(req->target, req->target_len);
    struct pb_service *svc = cl->svc;
    /* plugins of a selector run before the vhost choice (Redirect,
     * AccessControl at the front door); an answered request's head is
     * consumed here, after the hooks have read it */
    if (svc->role == PB_ROLE_SELECTOR && svc->nplugins && pb_plugins_start_request(svc, cl, req) == PB_HOOK_HANDLED) {
        if (cl->state == CL_READ_HEAD || !cl->lingering) evbuffer_drain(conn_in(cl->c), req->head_len);
        return;
    }
    for (int hops = 0; svc->role == PB_ROLE_SELECTOR && hops < 4; hops++) {
        struct pb_service *t = vhost_select(svc, req);
        if (!t || t->role == PB_ROLE_SELECTOR || t->role == PB_ROLE_MANAGEMENT) {
            evbuffer_drain(conn_in(cl->c), req->head_len);
            cl->svc = svc;
            pb_client_error(cl, 404, "Not Found (no configured vhost)");
            return;
        }
        svc = t;
    }
    cl->svc = svc;
    atomic_fetch_add_explicit(&svc->requests, 1, memory_order_relaxed);
    if (svc->nplugins && svc->role != PB_ROLE_SELECTOR &&
        pb_plugins_start_request(svc, cl, req) == PB_HOOK_HANDLED) {
        if (cl->state == CL_READ_HEAD || !cl->lingering) evbuffer_drain(conn_in(cl->c), req->head_len);
        return;
    }
    pb_client_request_timeouts(cl, req->head_len);
    conn_set_busy(cl->c, true);
    switch (svc->role) {
    case PB_ROLE_REVERSE_PROXY: {
        /* high_priority_cookie raises; a plugin (AccessControl queue_low)
         * may already have lowered it */
        if (request_priority(svc, req) == 0) cl->prio = 0;
        if (svc->enable_reproxy) { /* a reproxied answer honours the client's Range */
            size_t rl;
            const char *rv = http_header_value(req, "range", &rl);
            if (rv && rl < 256) cl->range = strndup(rv, rl);
        }
        if (svc->reproxy_cache_maxsize > 0 && svc->enable_reproxy && req->body == HTTP_BODY_NONE &&
            (req->method == HTTP_M_GET || req->method == HTTP_M_HEAD)) {
            const struct http_header *hh = req->host_index >= 0 ? &req->headers[req->host_index] : NULL;
            if (asprintf(&cl->cache_key, "%.*s|%.*s", hh ? (int)hh->value_len : 0, hh ? hh->value : "",
                         (int)req->target_len, req->target) < 0)
                cl->cache_key = NULL;
            if (cl->cache_key && pb_proxy_from_cache(cl)) {
                evbuffer_drain(conn_in(cl->c), req->head_len);
                return;
            }
        }
        /* build the backend head now: req points into the input buffer */
        if (!cl->req_head) cl->req_head = evbuffer_new();
        struct evbuffer *h = cl->req_head;
        bool chunked = req->body == HTTP_BODY_CHUNKED;
        evbuffer_add(h, req->method_str, req->method_len);
        evbuffer_add(h, " ", 1);
        evbuffer_add(h, req->target, req->target_len);
        evbuffer_add(h, chunked ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
        bool trusted = pb_service_trusted(svc, &cl->c->peer);
        char ip[INET6_ADDRSTRLEN] = "";
        if (cl->c->peer.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&cl->c->peer)->sin_addr, ip, sizeof ip);
        else if (cl->c->peer.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&cl->c->peer)->sin6_addr, ip, sizeof ip);
        bool xff_done = false;
        for (int i = 0; i < req->nheaders; i++) {
            const struct http_header *hd = &req->headers[i];
#define IS(n) (hd->name_len == sizeof(n) - 1 && strncasecmp(hd->name, n, sizeof(n) - 1) == 0)
            if (IS("connection") || IS("keep-alive") || IS("proxy-connection") || IS("te") || IS("upgrade") ||
                IS("x-proxy-capabilities"))
                continue;
            bool removed = false;
            for (struct pb_header_op *op = svc->header_ops; op; op = op->next)
                if (!op->value && strlen(op->name) == hd->name_len && !strncasecmp(op->name, hd->name, hd->name_len))
                    removed = true;
            if (removed) continue;
            if (IS("x-forwarded-for")) {
                if (!trusted) continue;
                if (!svc->blind_proxy) {
                    evbuffer_add_printf(h, "X-Forwarded-For: %.*s, %s\r\n", (int)hd->value_len, hd->value, ip);
                    xff_done = true;
                    continue;
                }
            }
            if ((IS("x-host") || IS("x-forwarded-host")) && !trusted) continue;
#undef IS
            evbuffer_add(h, hd->name, hd->name_len);
            evbuffer_add(h, ": ", 2);
            evbuffer_add(h, hd->value, hd->value_len);
            evbuffer_add(h, "\r\n", 2);
        }
        if (!xff_done && (!trusted || !svc->blind_proxy)) {
            evbuffer_add(h, "X-Forwarded-For: ", 17);
            evbuffer_add(h, ip, strlen(ip));
            evbuffer_add(h, "\r\n", 2);
        }
        if (svc->enable_reproxy) evbuffer_add(h, "X-Proxy-Capabilities: reproxy-file\r\n", 36);
        for (struct pb_header_op *op = svc->header_ops; op; op = op->next)
            if (op->value) evbuffer_add_printf(h, "%s: %s\r\n", op->name, op->value);
        if (svc->persist_backend) evbuffer_add(h, "Connection: keep-alive\r\n\r\n", 26);
        else evbuffer_add(h, "Connection: close\r\n\r\n", 21);
        evbuffer_drain(conn_in(cl->c), req->head_len);
        if (req->body == HTTP_BODY_CHUNKED)
            http_chunked_init(&cl->chunk, svc->max_chunked_request_size);
        /* clients connected to this service (in flight or between
         * requests): how many bored backends are worth keeping */
        if (cl->active_svc != svc) {
            client_release_active(cl);
            cl->active_svc = svc;
            svc->loops[cl->loop_index].active_clients++;
        }
        if (svc->nplugins) {
            int64_t hold = pb_plugins_proxy_start(svc, cl);
            if (hold < 0) return; /* answered (denied) */
            if (hold > 0) {
                pb_proxy_hold(cl, hold);
                return;
            }
        }
        pb_proxy_start(cl);
        return;
    }
    case PB_ROLE_WEB_SERVER:
        pb_web_request(cl, req);
        return;
    default:
        evbuffer_drain(conn_in(cl->c), req->head_len);
        pb_client_error(cl, 404, "Service has no HTTP role");
        return;
    }
}

static int read_heads(struct pb_client *cl)
{
    struct evbuffer *in = conn_in(cl->c);
    cl->in_dispatch = true;
    while (cl->state == CL_READ_HEAD && !conn_is_closing(cl->c)) {
        size_t len = evbuffer_get_length(in);
        if (len == 0) break;
        size_t want = len < PB_MAX_HEAD ? len : PB_MAX_HEAD;
        const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
        struct http_limits lim = { .max_head = PB_MAX_HEAD, .max_headers = HTTP_MAX_HEADERS };
        struct http_msg *req = &scratch_req;
        int r = http_parse_request(buf, want, &lim, req);
        if (r == 0) {
            int64_t now = pb_now_ms();
            if (!cl->head_started_ms) cl->head_started_ms = now;
            else if (now - cl->head_started_ms > (cl->svc->idle_timeout > 0 ? cl->svc->idle_timeout * 1000 : PB_HEAD_DEADLINE_MS)) {
                cl->version_minor = 0;
                cl->keep_alive = false;
                pb_client_error(cl, 408, NULL);
            }
            break;
        }
        if (r < 0) {
            evbuffer_drain(in, len);
            cl->version_minor = req->version_minor;
            cl->keep_alive = false;
            cl->method = HTTP_M_OTHER;
            cl->body = HTTP_BODY_NONE;
            pb_client_error(cl, req->error, NULL);
            break;
        }
        dispatch(cl, req);
    }
    cl->in_dispatch = false;
    return 0;
}

static int client_on_read(struct core_conn *c)
{
    struct pb_client *cl = c->data;
    if (cl->lingering) {
        evbuffer_drain(conn_in(c), evbuffer_get_length(conn_in(c)));
        return 0;
    }
    switch (cl->state) {
    case CL_READ_HEAD:
        return read_heads(cl);
    case CL_WAIT_BACKEND:
    case CL_BACKEND:
        if (!cl->body_done && cl->backend) {
            pb_proxy_body_ready(cl);
            return 0;
        }
        if (!cl->body_done) pb_client_request_timeouts(cl, 0); /* body arriving while queued */
        /* bytes wait: the body for a backend still connecting, or a
         * pipelined request */
        /* fall through */
    case CL_BUFFERING:
        if (cl->state == CL_BUFFERING) {
            pb_proxy_buffer_data(cl);
            return 0;
        }
        /* fall through */
    case CL_PUT_BODY:
        if (cl->state == CL_PUT_BODY) {
            pb_web_put_data(cl);
            return 0;
        }
        /* fall through */
    case CL_REPROXY:
    case CL_RESPONDING:
        if (evbuffer_get_length(conn_in(c)) > PB_MAX_PIPELINE_IN) conn_pause_read(c);
        return 0;
    }
    return 0;
}

static void client_on_drained(struct core_conn *c)
{
    struct pb_client *cl = c->data;
    if (cl->lingering) {
        shutdown(c->fd, SHUT_WR);
        return;
    }
    /* the client caught up: let a paused backend or reproxy go on */
    if (cl->backend && cl->backend->c) conn_resume_read(cl->backend->c);
    if (cl->reproxy) pb_reproxy_resume(cl);
}

static void client_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct pb_client *cl = c->data;
    pb_proxy_client_gone(cl);
    if (cl->throttle_counted) pb_plugins_proxy_end(cl->svc, cl);
    pb_web_put_abort(cl);
    client_release_active(cl);
    if (cl->upload_fd >= 0) close(cl->upload_fd);
    if (cl->req_head) evbuffer_free(cl->req_head);
    free(cl->target);
    free(cl->cache_key);
    free(cl->range);
    free(cl->rp_hdrs);
    free(cl);
}

/* ---- management console connections ---- */

struct pb_mgmt {
    struct pb_manage_ctx ctx;
};

static int mgmt_on_read(struct core_conn *c)
{
    struct pb_mgmt *m = c->data;
    for (;;) {
        size_t ll, consumed;
        enum line_status st;
        char *line = line_peek(conn_in(c), 4096, &ll, &consumed, &st);
        if (st == LINE_NEED_MORE) return 0;
        if (st == LINE_TOO_LONG) {
            evbuffer_add_printf(conn_out(c), "ERROR: line too long\r\n");
            conn_close_after_write(c);
            return 0;
        }
        line[ll] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!strncasecmp(p, "quit", 4) || !strncasecmp(p, "exit", 4)) {
            evbuffer_drain(conn_in(c), consumed);
            conn_close_after_write(c);
            return 0;
        }
        pb_manage_run(&m->ctx, line, ll, conn_out(c), true);
        evbuffer_drain(conn_in(c), consumed);
        if (conn_is_closing(c)) return 0;
    }
}

static void mgmt_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    free(c->data);
}

static const struct conn_ops mgmt_ops = {
    .name = "pb_manage",
    .on_read = mgmt_on_read,
    .on_close = mgmt_on_close,
};

void pb_manage_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen)
{
    (void)svc;
    struct pb_mgmt *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return;
    }
    m->ctx.verbose = true;
    if (!conn_new(loop, fd, sa, salen, &mgmt_ops, m)) free(m);
}
