/* session: a client connection of an HTTP service — the one driver of
 * perlbal's client state (enum pb_client_state). common/httpd owns the HTTP
 * side (heads, keep-alive, pipelining, bodies, errors); this file takes its
 * events: a request head (plugins, the selector's vhost choice, the
 * reverse_proxy request head for the backend, or the web_server), input
 * while a request is in progress (by state: body to a backend, upload
 * buffering, or held), the end of a request (per-request state reset), and
 * the close.
 *
 * It never talks to backends or files itself: reverse_proxy requests go to
 * proxy.c / backend.c, web_server requests to web.c. */
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
#include "perlbal/accesslog.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static void client_on_request(struct httpd_conn *h, struct http_msg *req);
static void client_on_input(struct httpd_conn *h);
static void client_on_request_end(struct httpd_conn *h);
static void client_on_drained(struct httpd_conn *h);
static void client_on_close(struct httpd_conn *h, enum conn_close_reason why);

static const struct httpd_ops client_ops = {
    .on_request = client_on_request,
    .on_input = client_on_input,
    .on_request_end = client_on_request_end,
    .on_drained = client_on_drained,
    .on_close = client_on_close,
};

/* ---- the client state machine ----
 * Every change of cl->state goes through here. The states (perlbal.h):
 *   READ_HEAD -> RESPONDING        a head arrived (dispatch decides further)
 *   RESPONDING -> WAIT_BACKEND     reverse_proxy: queued for a backend / held
 *   RESPONDING -> BUFFERING        buffer_uploads: body held before a backend
 *   BUFFERING -> WAIT_BACKEND      the body is in (or streams): ask the pool
 *   WAIT_BACKEND -> BACKEND        a backend took the request
 *   BACKEND -> WAIT_BACKEND        retry on another backend / 500 retry /
 *                                  X-REPROXY-SERVICE
 *   BACKEND -> REPROXY             X-REPROXY-URL / -FILE
 *   RESPONDING -> REPROXY          answered from the reproxy cache
 *   any -> RESPONDING              an answer of our own (error, file, 304)
 *   any -> READ_HEAD               the request ended (httpd's request_end)
 * client_on_input below is the one place input is routed by state. */
void pb_client_enter(struct pb_client *cl, enum pb_client_state next)
{
    static const unsigned ok[] = {
        [CL_READ_HEAD] = 1u << CL_RESPONDING,
        [CL_RESPONDING] = 1u << CL_WAIT_BACKEND | 1u << CL_BUFFERING | 1u << CL_REPROXY,
        [CL_BUFFERING] = 1u << CL_WAIT_BACKEND,
        [CL_WAIT_BACKEND] = 1u << CL_BACKEND | 1u << CL_WAIT_BACKEND,
        [CL_BACKEND] = 1u << CL_WAIT_BACKEND | 1u << CL_REPROXY,
        [CL_REPROXY] = 1u << CL_REPROXY,
    };
    if (next != CL_RESPONDING && next != CL_READ_HEAD && !(ok[cl->state] & (1u << next)))
        log_debug("client %llu: state %d -> %d", (unsigned long long)cl->c->id, (int)cl->state, (int)next);
    cl->state = next;
}

/* httpd's settings for the service now handling the client's request. */
static void client_apply_service(struct pb_client *cl)
{
    struct httpd_conn *h = cl->h;
    struct pb_service *svc = cl->svc;
    h->idle_ms = svc->idle_timeout > 0 ? (uint32_t)svc->idle_timeout * 1000 : 0;
    h->keepalive_ms = svc->persist_client_idle_timeout > 0 ? (uint32_t)svc->persist_client_idle_timeout * 1000 : 0;
    /* as Perlbal: behind a selector, the selector's persist_client decides */
    h->persist = cl->listen_svc->role == PB_ROLE_SELECTOR ? cl->listen_svc->persist_client : svc->persist_client;
    h->server = svc->server_tokens ? "Perlbal" : NULL;
    h->max_chunked_body = svc->max_chunked_request_size;
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
    cl->upload_fd = -1;
    if (svc->client_sndbuf_size) {
        int v = (int)svc->client_sndbuf_size;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    }
    struct httpd_conn *h =
        httpd_accept(loop, fd, sa, salen, svc->enable_ssl ? __atomic_load_n(&svc->tls_ctx, __ATOMIC_ACQUIRE) : NULL,
                     &client_ops, cl);
    if (!h) {
        free(cl);
        return;
    }
    cl->h = h;
    cl->c = h->c;
    client_apply_service(cl);
    conn_set_output_limit(cl->c, svc->buffer_size ? svc->buffer_size : 256 * 1024);
    conn_set_timeouts(cl->c, h->idle_ms, HTTPD_WRITE_TIMEOUT_MS);
    if (reject) {
        h->in_request = true;
        h->keep_alive = false;
        pb_client_enter(cl, CL_RESPONDING);
        httpd_error(h, 503, "Too many connections");
    }
}

void pb_client_request_timeouts(struct pb_client *cl, size_t head_in_buffer)
{
    httpd_request_timeouts(cl->h, head_in_buffer);
}

bool pb_client_can_persist(struct pb_client *cl) { return httpd_can_persist(cl->h); }

const char *pb_client_ip(struct pb_client *cl, size_t *len)
{
    if (!cl->peer_ip_len) {
        const struct sockaddr_storage *p = &cl->c->peer;
        bool ok = false;
        if (p->ss_family == AF_INET)
            ok = inet_ntop(AF_INET, &((const struct sockaddr_in *)p)->sin_addr, cl->peer_ip, sizeof cl->peer_ip);
        else if (p->ss_family == AF_INET6)
            ok = inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)p)->sin6_addr, cl->peer_ip, sizeof cl->peer_ip);
        if (!ok)
            cl->peer_ip[0] = 0;
        cl->peer_ip_len = (uint8_t)strlen(cl->peer_ip);
    }
    *len = cl->peer_ip_len;
    return cl->peer_ip;
}

void pb_client_response_head(struct pb_client *cl, int status, const char *ctype, int64_t content_length,
                             bool keep_alive, const char *extra)
{
    cl->status = status;
    if (content_length >= 0) {
        cl->resp_bytes = (uint64_t)content_length;
        cl->resp_bytes_known = true;
    }
    httpd_response_head(cl->h, status, ctype, content_length, keep_alive, extra);
}

void pb_client_flush(struct pb_client *cl) { httpd_flush(cl->h); }

void pb_client_error(struct pb_client *cl, int status, const char *msg)
{
    cl->status = status;
    cl->resp_bytes_known = false; /* the page's size: from the head httpd writes */
    httpd_error(cl->h, status, msg);
}

void pb_client_set_responding(struct pb_client *cl) { pb_client_enter(cl, CL_RESPONDING); }

static void client_release_active(struct pb_client *cl)
{
    if (cl->active_svc) {
        cl->active_svc->loops[cl->loop_index].active_clients--;
        cl->active_svc = NULL;
    }
}

/* httpd: the request ended (answered, or failed): per-request state goes,
 * the next request starts with the listener's service. */
static void client_on_request_end(struct httpd_conn *h)
{
    struct pb_client *cl = h->data;
    pb_accesslog_request_end(cl);
    if (cl->throttle_counted)
        pb_plugins_proxy_end(cl->svc, cl);
    if (cl->target) /* the buffer stays for the next request */
        cl->target[0] = 0;
    free(cl->cache_key);
    cl->cache_key = NULL;
    free(cl->range);
    cl->range = NULL;
    free(cl->rp_hdrs);
    cl->rp_hdrs = NULL;
    if (cl->req_head)
        evbuffer_drain(cl->req_head, evbuffer_get_length(cl->req_head));
    pb_upload_purge(cl);
    pb_client_enter(cl, CL_READ_HEAD);
    cl->svc = cl->listen_svc;
    cl->retries = 0;
    cl->error_retries = 0;
    cl->prio = 1;
    cl->chunked_out = false;
    cl->reproxied_service = false;
    cl->flv_start = 0;
    cl->upload_session[0] = 0;
    client_apply_service(cl);
}

void pb_client_done(struct pb_client *cl, bool keep_alive) { httpd_done(cl->h, keep_alive); }

/* Priority from the high-priority cookie. */
static int request_priority(struct pb_service *svc, struct http_msg *req)
{
    if (!svc->high_priority_cookie || !*svc->high_priority_cookie)
        return 1;
    size_t len;
    const char *ck = http_header_value(req, "cookie", &len);
    if (!ck)
        return 1;
    size_t nl = strlen(svc->high_priority_cookie);
    for (size_t i = 0; i + nl < len; i++) {
        if ((i == 0 || ck[i - 1] == ' ' || ck[i - 1] == ';') && strncmp(ck + i, svc->high_priority_cookie, nl) == 0 &&
            ck[i + nl] == '=') {
            const char *v = ck + i + nl + 1;
            const char *ve = memchr(v, ';', len - (size_t)(v - ck));
            size_t vl = ve ? (size_t)(ve - v) : len - (size_t)(v - ck);
            const char *want = svc->high_priority_cookie_contents;
            if (!want || !*want)
                return 0;
            if (memmem(v, vl, want, strlen(want)))
                return 0;
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
        for (size_t i = 0; i < hl; i++)
            host[i] = (char)tolower((unsigned char)h->value[i]);
    }
    host[hl] = 0;
    char *colon = strrchr(host, ':');
    if (colon && !strchr(host, ']'))
        *colon = 0;
    hl = strlen(host);
    if (hl && host[hl - 1] == '.')
        host[--hl] = 0;
    char wild[260];
    if (hl)
        snprintf(wild, sizeof wild, "*.%s", host);
    pthread_mutex_lock(&pb_lock);
    struct pb_service *found = NULL;
    /* literal */
    for (struct pb_vhost *v = sel->vhosts; v && hl && !found; v = v->next)
        if (!strcmp(v->pattern, host))
            found = pb_service_find(v->target);
    if (!found && hl) {
        /* *.host, then peel */
        char *p = wild; /* "*.a.b.c" */
        for (;;) {
            for (struct pb_vhost *v = sel->vhosts; v && !found; v = v->next)
                if (!strcmp(v->pattern, p))
                    found = pb_service_find(v->target);
            if (found)
                break;
            char *dot = strchr(p + 2, '.');
            if (!dot)
                break;
            /* "*.b.c": move the "*" to just before the dot */
            p = dot - 1;
            *p = '*';
        }
    }
    if (!found)
        for (struct pb_vhost *v = sel->vhosts; v && !found; v = v->next)
            if (!strcmp(v->pattern, "*"))
                found = pb_service_find(v->target);
    pthread_mutex_unlock(&pb_lock);
    return found;
}

void pb_hb_spill(struct pb_headbuf *b, const void *d, size_t n)
{
    pb_hb_flush(b);
    if (n <= sizeof b->buf) {
        memcpy(b->buf, d, n);
        b->len = n;
    } else {
        evbuffer_add(b->out, d, n);
    }
}

struct pb_service *pb_select_service(struct pb_service *sel, struct pb_client *cl, struct http_msg *req, int *status,
                                     char *msg, size_t msglen)
{
    struct pb_service *svc = sel;
    /* a selector may lead to another selector (as Perlbal), a few hops deep */
    for (int hops = 0; svc->role == PB_ROLE_SELECTOR; hops++) {
        bool hooked = false;
        *status = 0;
        struct pb_service *t = NULL;
        if (hops < 4) {
            t = svc->nplugins ? pb_plugins_select(svc, cl, req, &hooked, status, msg, msglen) : NULL;
            if (!hooked)
                t = vhost_select(svc, req);
            else if (!t && !*status && svc->default_service) {
                /* as Perlbal: what the selector plugin did not match goes to default_service */
                pthread_mutex_lock(&pb_lock);
                t = pb_service_find(svc->default_service);
                pthread_mutex_unlock(&pb_lock);
            }
        }
        if (!t) {
            cl->svc = svc;
            if (!*status) {
                *status = 404;
                snprintf(msg, msglen, "%s",
                         hooked ? "Not Found (no configured vpath)" : "Not Found (no configured vhost)");
            }
            return NULL;
        }
        if (t->role != PB_ROLE_SELECTOR && t->role != PB_ROLE_REVERSE_PROXY && t->role != PB_ROLE_WEB_SERVER) {
            /* as Perlbal: a vhost mapped to a management (or other) service is a server error */
            cl->svc = svc;
            *status = 500;
            snprintf(msg, msglen, "Vhost maps to a service that cannot take HTTP requests");
            return NULL;
        }
        svc = t;
    }
    return svc;
}

/* Bytes in the input after the first `used`, other than CR/LF (the stray
 * CRLF old browsers send after a POST body is tolerated, as by Perlbal). */
static bool extra_request_bytes(struct pb_client *cl, uint64_t used)
{
    struct evbuffer *in = conn_in(cl->c);
    size_t len = evbuffer_get_length(in);
    if (len <= used)
        return false;
    struct evbuffer_ptr pos;
    if (evbuffer_ptr_set(in, &pos, (size_t)used, EVBUFFER_PTR_SET) < 0)
        return false;
    char buf[64];
    size_t n = len - (size_t)used < sizeof buf ? len - (size_t)used : sizeof buf;
    if (evbuffer_copyout_from(in, &pos, buf, n) < 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (buf[i] != '\r' && buf[i] != '\n')
            return true;
    return false;
}

/* One complete request head is at the front of the input: hand it on. */
static void dispatch(struct pb_client *cl, struct http_msg *req)
{
    atomic_fetch_add_explicit(&pb_total_requests, 1, memory_order_relaxed);
    pb_accesslog_request_start(cl, req);
    /* the target outlives the head (logs, reproxy, plugins): copied into a
     * buffer the connection keeps, so a request costs no allocation */
    if (req->target_len + 1 > cl->target_cap) {
        size_t cap = req->target_len + 1 < 256 ? 256 : req->target_len + 1;
        char *t = realloc(cl->target, cap);
        if (t) {
            cl->target = t;
            cl->target_cap = cap;
        }
    }
    if (cl->target && req->target_len + 1 <= cl->target_cap) {
        memcpy(cl->target, req->target, req->target_len);
        cl->target[req->target_len] = 0;
    } else if (cl->target) {
        cl->target[0] = 0;
    }
    struct pb_service *svc = cl->svc;
    /* plugins of a selector run before the vhost choice (Redirect,
     * AccessControl at the front door); an answered request's head is
     * consumed here, after the hooks have read it */
    if (svc->role == PB_ROLE_SELECTOR && svc->nplugins && pb_plugins_start_request(svc, cl, req) == PB_HOOK_HANDLED) {
        httpd_drop_head(cl->h);
        return;
    }
    if (svc->role == PB_ROLE_SELECTOR) {
        int estatus;
        char emsg[160];
        struct pb_service *t = pb_select_service(svc, cl, req, &estatus, emsg, sizeof emsg);
        if (!t) {
            httpd_drop_head(cl->h);
            pb_client_error(cl, estatus, emsg);
            return;
        }
        svc = t;
    }
    pb_dispatch_service(cl, svc, req);
}

void pb_dispatch_service(struct pb_client *cl, struct pb_service *svc, struct http_msg *req)
{
    cl->svc = svc;
    client_apply_service(cl);
    /* the chosen service's bound on a chunked body (no body byte read yet) */
    if (req->body == HTTP_BODY_CHUNKED)
        http_chunked_init(&cl->h->chunk, svc->max_chunked_request_size);
    atomic_fetch_add_explicit(&svc->requests, 1, memory_order_relaxed);
    if (svc->nplugins && svc->role != PB_ROLE_SELECTOR && pb_plugins_start_request(svc, cl, req) == PB_HOOK_HANDLED) {
        httpd_drop_head(cl->h);
        return;
    }
    pb_client_request_timeouts(cl, req->head_len);
    conn_set_busy(cl->c, true);
    switch (svc->role) {
    case PB_ROLE_REVERSE_PROXY: {
        /* upload progress: /__upload_status is answered here */
        if (svc->n_ul && pb_upload_status_request(cl, req)) {
            httpd_drop_head(cl->h);
            return;
        }
        /* high_priority_cookie raises; a plugin (AccessControl queue_low)
         * may already have lowered it */
        if (request_priority(svc, req) == 0)
            cl->prio = 0;
        if (svc->enable_reproxy) { /* a reproxied answer honours the client's Range */
            size_t rl;
            const char *rv = http_header_value(req, "range", &rl);
            if (rv && rl < 256)
                cl->range = strndup(rv, rl);
        }
        if (svc->reproxy_cache_maxsize > 0 && svc->enable_reproxy && req->body == HTTP_BODY_NONE &&
            (req->method == HTTP_M_GET || req->method == HTTP_M_HEAD)) {
            const struct http_header *hh = req->host_index >= 0 ? &req->headers[req->host_index] : NULL;
            if (asprintf(&cl->cache_key, "%.*s|%.*s", hh ? (int)hh->value_len : 0, hh ? hh->value : "",
                         (int)req->target_len, req->target) < 0)
                cl->cache_key = NULL;
            size_t imsl = 0;
            const char *ims = http_header_value(req, "if-modified-since", &imsl);
            if (cl->cache_key && pb_proxy_from_cache(cl, ims, imsl)) {
                httpd_drop_head(cl->h);
                return;
            }
        }
        /* as Perlbal: bytes after a request whose client will not persist
         * are a request it may not send (answered 400, closed) */
        if (!httpd_can_persist(cl->h) && req->body != HTTP_BODY_CHUNKED &&
            extra_request_bytes(cl, req->head_len + (req->body == HTTP_BODY_LENGTH ? req->content_length : 0))) {
            httpd_drop_head(cl->h);
            pb_client_error(cl, 400, "Can't pipeline to HTTP/1.0");
            return;
        }
        /* build the backend head now: req points into the input buffer */
        if (!cl->req_head)
            cl->req_head = evbuffer_new();
        struct pb_headbuf hb_, *h = &hb_;
        hb_.out = cl->req_head;
        hb_.len = 0;
        bool chunked = req->body == HTTP_BODY_CHUNKED;
        pb_hb_add(h, req->method_str, req->method_len);
        pb_hb_add(h, " ", 1);
        pb_hb_add(h, req->target, req->target_len);
        pb_hb_add(h, chunked ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
        bool trusted = pb_service_trusted(svc, &cl->c->peer);
        size_t ipl;
        const char *ip = pb_client_ip(cl, &ipl);
        bool xff_done = false;
        for (int i = 0; i < req->nheaders; i++) {
            const struct http_header *hd = &req->headers[i];
#define IS(n) (hd->name_len == sizeof(n) - 1 && strncasecmp(hd->name, n, sizeof(n) - 1) == 0)
            /* hop-by-hop, and the body's framing: a chunked body is
             * re-encoded (no extensions, no trailers), so its coding
             * header is ours, not the client's */
            if (IS("connection") || IS("keep-alive") || IS("proxy-connection") || IS("te") || IS("upgrade") ||
                IS("x-proxy-capabilities") || IS("transfer-encoding") || IS("trailer") ||
                (chunked && svc->buffer_uploads && IS("expect")))
                continue;
            bool removed = svc->nplugins && pb_plugins_replace_header(svc, cl, hd->name, hd->name_len);
            for (struct pb_header_op *op = svc->header_ops; op; op = op->next)
                if (!op->value && strlen(op->name) == hd->name_len && !strncasecmp(op->name, hd->name, hd->name_len))
                    removed = true;
            if (removed)
                continue;
            if (IS("x-forwarded-for")) {
                if (!trusted)
                    continue;
                if (!svc->blind_proxy) {
                    pb_hb_add(h, "X-Forwarded-For: ", 17);
                    pb_hb_add(h, hd->value, hd->value_len);
                    pb_hb_add(h, ", ", 2);
                    pb_hb_add(h, ip, ipl);
                    pb_hb_add(h, "\r\n", 2);
                    xff_done = true;
                    continue;
                }
            }
            if ((IS("x-host") || IS("x-forwarded-host") || IS("x-forwarded-port") || IS("x-forwarded-proto")) &&
                !trusted)
                continue; /* only a trusted upstream may speak for the client */
#undef IS
            pb_hb_add(h, hd->name, hd->name_len);
            pb_hb_add(h, ": ", 2);
            pb_hb_add(h, hd->value, hd->value_len);
            pb_hb_add(h, "\r\n", 2);
        }
        if (!xff_done && (!trusted || !svc->blind_proxy)) {
            pb_hb_add(h, "X-Forwarded-For: ", 17);
            pb_hb_add(h, ip, ipl);
            pb_hb_add(h, "\r\n", 2);
        }
        if (svc->enable_reproxy)
            pb_hb_add(h, "X-Proxy-Capabilities: reproxy-file\r\n", 36);
        for (struct pb_header_op *op = svc->header_ops; op; op = op->next)
            if (op->value) {
                pb_hb_add(h, op->name, strlen(op->name));
                pb_hb_add(h, ": ", 2);
                pb_hb_add(h, op->value, strlen(op->value));
                pb_hb_add(h, "\r\n", 2);
            }
        /* a chunked body is spooled and sent with a Content-Length when
         * buffer_uploads is on (as Perlbal), else re-encoded as it streams */
        bool spool = chunked && svc->buffer_uploads;
        if (chunked && !spool)
            pb_hb_add(h, "Transfer-Encoding: chunked\r\n", 28);
        cl->chunked_out = chunked && !spool;
        if (svc->persist_backend)
            pb_hb_add(h, "Connection: keep-alive\r\n\r\n", 26);
        else
            pb_hb_add(h, "Connection: close\r\n\r\n", 21);
        pb_hb_flush(h);
        httpd_drop_head(cl->h);
        /* clients connected to this service (in flight or between
         * requests): how many bored backends are worth keeping */
        if (cl->active_svc != svc) {
            client_release_active(cl);
            cl->active_svc = svc;
            svc->loops[cl->loop_index].active_clients++;
        }
        if (svc->nplugins) {
            int64_t hold = pb_plugins_proxy_start(svc, cl);
            if (hold < 0)
                return; /* answered (denied) */
            if (hold == PB_HOLD_ASYNC) {
                pb_client_enter(cl, CL_WAIT_BACKEND);
                conn_pause_read(cl->c);
                return; /* pb_proxy_async_done() goes on */
            }
            if (hold > 0) {
                pb_proxy_hold(cl, hold);
                return;
            }
        }
        pb_proxy_start(cl);
        return;
    }
    case PB_ROLE_WEB_SERVER: pb_web_request(cl, req); return;
    default:
        httpd_drop_head(cl->h);
        pb_client_error(cl, 404, "Service has no HTTP role");
        return;
    }
}

/* httpd: a request head is complete. */
static void client_on_request(struct httpd_conn *h, struct http_msg *req)
{
    struct pb_client *cl = h->data;
    pb_client_enter(cl, CL_RESPONDING);
    dispatch(cl, req);
}

/* httpd: input while a request is in progress. */
static void client_on_input(struct httpd_conn *h)
{
    struct pb_client *cl = h->data;
    switch (cl->state) {
    case CL_WAIT_BACKEND:
    case CL_BACKEND:
        if (!h->body_done && cl->backend) {
            pb_proxy_body_ready(cl);
            return;
        }
        if (!h->body_done)
            pb_client_request_timeouts(cl, 0); /* body arriving while queued */
        break;
    case CL_BUFFERING: pb_proxy_buffer_data(cl); return;
    default: break;
    }
    /* bytes wait: the body for a backend still connecting, or a pipelined
     * request */
    if (evbuffer_get_length(conn_in(h->c)) > HTTPD_MAX_PIPELINE_IN)
        conn_pause_read(h->c);
}

static void client_on_drained(struct httpd_conn *h)
{
    struct pb_client *cl = h->data;
    /* the client caught up: let a paused backend or reproxy go on */
    if (cl->backend && cl->backend->c)
        conn_resume_read(cl->backend->c);
    if (cl->reproxy)
        pb_reproxy_resume(cl);
}

static void client_on_close(struct httpd_conn *h, enum conn_close_reason why)
{
    (void)why;
    struct pb_client *cl = h->data;
    pb_proxy_client_gone(cl);
    client_release_active(cl);
    pb_upload_purge(cl);
    if (cl->req_head)
        evbuffer_free(cl->req_head);
    free(cl->target);
    free(cl->cache_key);
    free(cl->range);
    free(cl->rp_hdrs);
    free(cl->log_req);
    free(cl);
}
