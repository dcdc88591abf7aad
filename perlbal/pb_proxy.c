/* pb_proxy: the reverse_proxy role — backend connections, the free-backend
 * model with priority queues, verify_backend, dead-node marking and retry,
 * enable_error_retries (500s), response streaming with back-pressure,
 * reproxying (X-REPROXY-URL with fail-over and X-REPROXY-CACHE-FOR,
 * X-REPROXY-FILE via sendfile), buffered uploads, and holding a request on a
 * timer (Throttle).
 *
 * Model (as Perlbal): a client whose request head is complete either takes a
 * bored (idle, connected) backend at once or waits in its service's queue
 * (high / normal / low) while new backend connections are opened; the first
 * backend that becomes ready takes the first waiting client. Everything here
 * runs on the client's loop; each loop has its own backends. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/pb_conn.h"
#include "perlbal/pb_plugin.h"

#define BE_CONNECT_TIMEOUT_MS 5000
#define BE_READ_TIMEOUT_MS 120000
#define BE_WRITE_TIMEOUT_MS 60000
#define NODE_DEAD_MS 2000
#define NODE_NOVERIFY_MS 60000
#define MAX_PENDING_PER_LOOP 64
#define MAX_RETRIES 3

static enum httpc_head_action be_on_head(struct httpc *hc, struct http_msg *resp);
static void be_on_body(struct httpc *hc, struct evbuffer *data);
static void be_on_done(struct httpc *hc, bool reusable);
static void be_on_connect(struct httpc *hc, bool ok);
static void be_on_close(struct httpc *hc, enum conn_close_reason why);
static void be_on_drained(struct httpc *hc);

static const struct httpc_ops backend_ops = {
    .on_connect = be_on_connect,
    .on_head = be_on_head,
    .on_body = be_on_body,
    .on_done = be_on_done,
    .on_drained = be_on_drained,
    .on_close = be_on_close,
};

static struct pb_svc_loop *svl_of(struct pb_service *svc, int li) { return &svc->loops[li]; }

/* ---- the backend pool (common/pool): idle backends, waiting clients ---- */

#define BE_OF(x) ((struct pb_backend *)((char *)(x) - offsetof(struct pb_backend, m)))
#define CL_OF(x) ((struct pb_client *)((char *)(x) - offsetof(struct pb_client, w)))

static void assign(struct pb_backend *be, struct pb_client *cl);

static struct pool_member *pool_op_connect(struct pool *p)
{
    struct pb_svc_loop *l = p->data;
    struct pb_service *svc = l->svc;
    struct pool_node *node = svc->pool ? pb_pool_pick(svc->pool) : NULL;
    if (!node) return NULL;
    struct pb_backend *be = calloc(1, sizeof *be);
    if (!be) return NULL;
    be->svc = svc;
    be->loop_index = l->loop_index;
    be->m.node = node;
    be->state = BE_CONNECTING;
    struct httpc *hc = httpc_connect(loop_get(l->loop_index), (struct sockaddr *)&node->sa, node->salen,
                                     BE_CONNECT_TIMEOUT_MS, &backend_ops, be);
    if (!hc) {
        free(be);
        atomic_fetch_add_explicit(&node->failures, 1, memory_order_relaxed);
        pool_node_dead(node, NODE_DEAD_MS);
        return NULL;
    }
    be->hc = hc;
    be->c = hc->c;
    hc->read_ms = BE_READ_TIMEOUT_MS;
    hc->write_ms = BE_WRITE_TIMEOUT_MS;
    hc->raw_body = true; /* a chunked response goes to the client as it came (validated) */
    atomic_fetch_add_explicit(&node->connects, 1, memory_order_relaxed);
    return &be->m;
}

static void pool_op_assign(struct pool *p, struct pool_member *m, struct pool_waiter *w)
{
    (void)p;
    assign(BE_OF(m), CL_OF(w));
}

static void pool_op_fail(struct pool *p, struct pool_waiter *w)
{
    (void)p;
    pb_client_error(CL_OF(w), 503, "No backend available");
}

static void pool_op_close(struct pool *p, struct pool_member *m)
{
    (void)p;
    conn_close(BE_OF(m)->c);
}

/* Bored backends worth keeping: backend_persist_cache + connect_ahead, or
 * one per client connected to the service (in flight or between requests). */
static int pool_op_idle_keep(struct pool *p)
{
    struct pb_svc_loop *l = p->data;
    struct pb_service *svc = l->svc;
    if (!svc->persist_backend || loop_stopping()) return 0;
    int keep = svc->backend_persist_cache + svc->connect_ahead;
    return keep < l->active_clients ? l->active_clients : keep;
}

static bool pool_op_usable(struct pool *p, struct pool_member *m)
{
    (void)p;
    return !conn_is_closing(BE_OF(m)->c);
}

static const struct pool_ops pb_pool_ops = {
    .connect = pool_op_connect,
    .assign = pool_op_assign,
    .fail = pool_op_fail,
    .close = pool_op_close,
    .idle_keep = pool_op_idle_keep,
    .usable = pool_op_usable,
};

void pb_proxy_init_loop(struct pb_service *svc, int li)
{
    struct pb_svc_loop *l = svl_of(svc, li);
    pool_init(&l->pool, &pb_pool_ops, l);
    l->svc = svc;
    l->loop_index = li;
    l->pool.max_pending = MAX_PENDING_PER_LOOP;
    l->pool.dead_ms = NODE_DEAD_MS;
}

void pb_proxy_close_idle(struct pb_service *svc, int li)
{
    struct pool *p = &svl_of(svc, li)->pool;
    struct pool_member *m;
    while ((m = pool_take_idle(p))) conn_close(BE_OF(m)->c);
}

/* A connected (and verified) backend with no client. */
static void become_ready(struct pb_backend *be)
{
    struct pb_svc_loop *l = svl_of(be->svc, be->loop_index);
    l->pool.connect_ahead = be->svc->connect_ahead;
    l->pool.stopping = loop_stopping();
    be->state = BE_IDLE;
    /* the read timeout set at connect stays: a backend idle for
     * BE_READ_TIMEOUT_MS is closed (and not re-armed on every request) */
    conn_set_busy(be->c, false);
    pool_ready(&l->pool, &be->m);
}

void pb_proxy_request(struct pb_client *cl)
{
    struct pb_service *svc = cl->svc;
    if (!svc->pool) {
        pb_client_error(cl, 503, "No pool configured");
        return;
    }
    struct pb_svc_loop *l = svl_of(svc, cl->loop_index);
    l->pool.connect_ahead = svc->connect_ahead;
    l->pool.stopping = loop_stopping();
    cl->state = CL_WAIT_BACKEND;
    pool_request(&l->pool, &cl->w, cl->prio, cl->retries > 0);
}

static void assign(struct pb_backend *be, struct pb_client *cl)
{
    log_debug("assign client %llu -> backend %llu (%s) uses %d", (unsigned long long)cl->c->id,
              (unsigned long long)be->c->id, be->m.node->name, be->uses);
    be->client = cl;
    cl->backend = be;
    cl->state = CL_BACKEND;
    be->state = BE_WAIT_HEAD;
    conn_set_busy(be->c, true); /* a graceful stop waits for the response */
    be->uses++;
    be->discard_body = false;
    atomic_fetch_add_explicit(&be->m.node->used, 1, memory_order_relaxed);
    httpd_send_continue(cl->h);
    /* keep the head until the response starts, for a retry */
    size_t hl = evbuffer_get_length(cl->req_head);
    struct evbuffer *txb = httpd_tx2();
    if (cl->svc->nplugins) {
        /* plugins may add request headers: before the head's final CRLF */
        evbuffer_add(txb, evbuffer_pullup(cl->req_head, (ssize_t)hl), hl - 2);
        pb_plugins_backend_assigned(cl->svc, cl, txb);
        evbuffer_add(txb, "\r\n", 2);
    } else {
        evbuffer_add(txb, evbuffer_pullup(cl->req_head, (ssize_t)hl), hl);
    }
    if (cl->upload_fd >= 0 && cl->upload_size > 0) {
        /* a spooled upload: the body goes out of its file (a dup, so a
         * retry could send it again) */
        int fd = dup(cl->upload_fd);
        if (fd < 0 || evbuffer_add_file(txb, fd, 0, (ev_off_t)cl->upload_size) < 0) {
            if (fd >= 0) close(fd);
            evbuffer_drain(txb, evbuffer_get_length(txb));
            be->client = NULL;
            cl->backend = NULL;
            conn_close(be->c);
            pb_client_error(cl, 500, "Cannot read the buffered upload");
            return;
        }
    }
    httpc_request(be->hc, cl->h->method, txb);
    conn_resume_read(cl->c);
    if (!cl->h->body_done) pb_proxy_body_ready(cl);
}

/* ---- buffered uploads ----
 *
 * As Perlbal: up to buffer_backend_connect bytes of the body are held in
 * memory with no backend asked for. Then the thresholds decide: a body
 * larger than buffer_upload_threshold_size, or arriving slower than
 * buffer_upload_threshold_rate bytes/s, or expected to take longer than
 * buffer_upload_threshold_time seconds, is spooled to an unlinked file in
 * buffer_uploads_path and sent to a backend only once complete; otherwise
 * the request goes on at once and the body streams. A body that arrives
 * whole before the decision is sent from memory. The file writes run on the
 * loop (local disk, like web_server PUT). */

static void upload_fail(struct pb_client *cl, int status, const char *msg)
{
    if (cl->upload_fd >= 0) close(cl->upload_fd);
    cl->upload_fd = -1;
    cl->h->keep_alive = false;
    cl->state = CL_RESPONDING;
    pb_client_error(cl, status, msg);
}

static int upload_open(struct pb_client *cl)
{
    const char *dir = cl->svc->buffer_uploads_path && *cl->svc->buffer_uploads_path ? cl->svc->buffer_uploads_path
                                                                                      : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/perlbal-upload-XXXXXX", dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        log_warn("perlbal: buffer_uploads_path %s: %s", dir, strerror(errno));
        return -1;
    }
    unlink(path);
    cl->upload_fd = fd;
    cl->upload_size = 0;
    return 0;
}

void pb_proxy_buffer_start(struct pb_client *cl)
{
    cl->state = CL_BUFFERING;
    cl->upload_started_ms = pb_now_ms();
    cl->upload_size = cl->h->body_remaining;
    /* a slow sender is now our problem, not a backend's: keep a deadline */
    int secs = cl->svc->idle_timeout;
    conn_set_timeouts(cl->c, secs > 0 ? (uint32_t)secs * 1000 : 0, BE_WRITE_TIMEOUT_MS);
    if (cl->h->expect_continue && !cl->h->sent_continue) {
        evbuffer_add(httpd_tx(), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        pb_client_flush(cl);
        cl->h->sent_continue = true;
    }
    pb_proxy_buffer_data(cl);
}

void pb_proxy_buffer_data(struct pb_client *cl)
{
    struct pb_service *svc = cl->svc;
    struct evbuffer *in = conn_in(cl->c);
    if (cl->upload_fd < 0) {
        uint64_t have = evbuffer_get_length(in);
        if (have > cl->h->body_remaining) have = cl->h->body_remaining;
        bool complete = have == cl->h->body_remaining;
        uint64_t total = cl->upload_size;
        uint64_t hold = svc->buffer_backend_connect ? svc->buffer_backend_connect : 100 * 1024;
        bool disk = svc->buffer_upload_threshold_size && total > svc->buffer_upload_threshold_size;
        if (!disk && !complete) {
            if (have < hold) return; /* keep holding */
            int64_t el = pb_now_ms() - cl->upload_started_ms;
            double rate = el > 0 ? (double)have * 1000.0 / (double)el : 1e18;
            if (svc->buffer_upload_threshold_rate && rate < svc->buffer_upload_threshold_rate) disk = true;
            if (svc->buffer_upload_threshold_time && (double)total / rate > svc->buffer_upload_threshold_time)
                disk = true;
        }
        if (!disk) {
            /* straight on: the body streams to the backend as usual */
            pb_client_request_timeouts(cl, 0);
            cl->upload_size = 0;
            pb_proxy_request(cl);
            return;
        }
        if (upload_open(cl) < 0) {
            upload_fail(cl, 503, "Cannot buffer the upload");
            return;
        }
        cl->upload_size = total;
    }
    while (cl->h->body_remaining > 0 && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        size_t n = v.iov_len < cl->h->body_remaining ? v.iov_len : (size_t)cl->h->body_remaining;
        ssize_t w = write(cl->upload_fd, v.iov_base, n);
        if (w <= 0) {
            log_warn("perlbal: writing a buffered upload: %s", w < 0 ? strerror(errno) : "short write");
            upload_fail(cl, 503, "Cannot buffer the upload");
            return;
        }
        evbuffer_drain(in, (size_t)w);
        cl->h->body_remaining -= (uint64_t)w;
    }
    if (cl->h->body_remaining > 0) return;
    cl->h->body_done = true;
    pb_client_request_timeouts(cl, 0);
    pb_proxy_request(cl);
}

/* Move request body bytes from the client to its backend. A chunked body
 * is decoded by httpd and re-encoded here canonically ("<hex>\r\n" sizes,
 * no extensions, no trailers), so a backend that frames chunked coding
 * differently from our parser cannot be desynchronised (smuggling). */
void pb_proxy_body_ready(struct pb_client *cl)
{
    struct pb_backend *be = cl->backend;
    if (!be || cl->h->body_done) return;
    struct evbuffer *out = httpd_tx2();
    enum httpd_body_result r;
    if (cl->chunked_out) {
        struct evbuffer *payload = evbuffer_new();
        if (!payload) return;
        r = httpd_body_read(cl->h, payload, 0);
        size_t n = evbuffer_get_length(payload);
        if (n > 0 && r != HTTPD_BODY_ERROR) {
            char hdr[24];
            size_t hl = http_chunk_header(hdr, n);
            evbuffer_add(out, hdr, hl);
            evbuffer_add_buffer(out, payload);
            evbuffer_add(out, "\r\n", 2);
        }
        evbuffer_free(payload);
        if (r == HTTPD_BODY_DONE) evbuffer_add(out, "0\r\n\r\n", 5);
    } else {
        r = httpd_body_read(cl->h, out, 0);
    }
    if (r == HTTPD_BODY_ERROR) {
        evbuffer_drain(out, evbuffer_get_length(out));
        /* a broken body: the backend conn cannot be reused */
        be->reusable = false;
        cl->h->keep_alive = false;
        cl->backend = NULL;
        be->client = NULL;
        conn_close(be->c);
        pb_client_error(cl, 400, "Bad chunked body");
        return;
    }
    if (cl->h->body_done) pb_client_request_timeouts(cl, 0);
    httpc_send(be->hc, out);
    uint64_t limit = cl->svc->buffer_size ? cl->svc->buffer_size : 256 * 1024;
    if (evbuffer_get_length(conn_out(be->c)) > limit) conn_pause_read(cl->c);
}

static void be_on_drained(struct httpc *hc)
{
    struct pb_backend *be = hc->data;
    if (be->client && !be->client->h->body_done) {
        conn_resume_read(be->client->c);
        pb_proxy_body_ready(be->client);
    }
}

static void be_on_connect(struct httpc *hc, bool ok)
{
    struct pb_backend *be = hc->data;
    if (!ok) {
        be->connect_failed = true; /* on_close follows: pool_gone marks the node dead */
        return;
    }
    if (be->svc->verify_backend && atomic_load(&be->m.node->mark_until_ms) < pb_now_ms()) {
        be->state = BE_VERIFYING;
        be->verifying = true;
        struct evbuffer *b = httpd_tx2();
        evbuffer_add_printf(b, "OPTIONS %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                            be->svc->verify_backend_path ? be->svc->verify_backend_path : "*");
        httpc_request(hc, HTTP_M_OPTIONS, b);
        return;
    }
    become_ready(be);
}

/* The response (to a client) is complete. */
static void response_finished(struct pb_backend *be, bool reusable, bool client_keep)
{
    struct pb_client *cl = be->client;
    log_debug("backend %llu done, client %llu keep %d", (unsigned long long)be->c->id,
              cl ? (unsigned long long)cl->c->id : 0ULL, (int)client_keep);
    if (cl) {
        cl->backend = NULL;
        be->client = NULL;
    }
    bool reuse = reusable && be->reusable && !loop_stopping() &&
                 (be->svc->max_backend_uses == 0 || be->uses < be->svc->max_backend_uses);
    if (reuse) become_ready(be);
    else conn_close(be->c);
    if (cl) pb_client_done(cl, client_keep);
}

static bool client_keep_for(struct pb_backend *be, struct http_msg *resp)
{
    return be->client && pb_client_can_persist(be->client) && resp->body != HTTP_BODY_CLOSE;
}

static const char *find_value(struct http_msg *m, const char *name, size_t *len)
{
    return http_header_value(m, name, len);
}

/* Body bytes for the client, streamed with back-pressure. */
static void be_on_body(struct httpc *hc, struct evbuffer *data)
{
    struct pb_backend *be = hc->data;
    struct pb_client *cl = be->client;
    if (!cl || be->discard_body) return;
    evbuffer_add_buffer(httpd_tx(), data);
    pb_client_flush(cl);
    uint64_t limit = be->svc->buffer_size ? be->svc->buffer_size : 256 * 1024;
    if (evbuffer_get_length(conn_out(cl->c)) > limit) httpc_pause(hc);
}

static void be_on_done(struct httpc *hc, bool reusable)
{
    struct pb_backend *be = hc->data;
    if (be->verifying) {
        /* As Perlbal: a backend that answers OPTIONS and keeps the
         * connection is bound to a live application process; one that
         * closes it (no keep-alive) fails, and its node is not verified
         * again for a minute (see "noverify"). */
        be->verifying = false;
        if (!be->verify_ok || !reusable) {
            atomic_store(&be->m.node->mark_until_ms, pb_now_ms() + NODE_NOVERIFY_MS);
            conn_close(be->c);
            return;
        }
        become_ready(be);
        return;
    }
    bool keep = be->client ? be->client->h->keep_alive : false;
    response_finished(be, reusable, keep);
}

/* ---- X-REPROXY-CACHE-FOR ----
 * As Perlbal: a backend answering X-REPROXY-URL with X-REPROXY-CACHE-FOR: N
 * lets perlbal reproxy the same Host + URI for N seconds without asking a
 * backend. At most reproxy_cache_maxsize entries per service, in a
 * direct-mapped table (a colliding entry replaces the older one); shared by
 * the loops under its own lock. */
struct rc_entry {
    char *key;
    char *urls;
    char *hdrs;                     /* the backend's headers for the client */
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
    for (; *k; k++) h = (h ^ (uint8_t)*k) * 16777619u;
    return h;
}

static struct pb_reproxy_cache *rc_get(struct pb_service *svc, bool create)
{
    struct pb_reproxy_cache *rc = __atomic_load_n(&svc->reproxy_cache, __ATOMIC_ACQUIRE);
    if (rc || !create) return rc;
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

static void cache_store(struct pb_service *svc, struct pb_client *cl, const char *urls, size_t ul, int64_t expected,
                        long secs)
{
    const char *key = cl->cache_key;
    if (secs <= 0 || svc->reproxy_cache_maxsize <= 0) return;
    struct pb_reproxy_cache *rc = rc_get(svc, true);
    if (!rc) return;
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

bool pb_proxy_from_cache(struct pb_client *cl)
{
    struct pb_reproxy_cache *rc = rc_get(cl->svc, false);
    if (!rc) return false;
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
    if (!urls) return false;
    atomic_fetch_add_explicit(&rc->hits, 1, memory_order_relaxed);
    cl->state = CL_REPROXY;
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
static void keep_reproxy_headers(struct pb_client *cl, struct http_msg *resp)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) return;
    cl->rp_has_ctype = cl->rp_has_lm = false;
    for (int i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
#define IS(n) (h->name_len == sizeof(n) - 1 && strncasecmp(h->name, n, sizeof(n) - 1) == 0)
        if (IS("connection") || IS("keep-alive") || IS("content-length") || IS("transfer-encoding") ||
            IS("content-range") || IS("accept-ranges") || (h->name_len > 10 && !strncasecmp(h->name, "x-reproxy-", 10)))
            continue;
        if (IS("content-type")) cl->rp_has_ctype = true;
        if (IS("last-modified")) cl->rp_has_lm = true;
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
    if (cl->rp_hdrs && *cl->rp_hdrs) evbuffer_add(out, cl->rp_hdrs, strlen(cl->rp_hdrs));
    else evbuffer_add_printf(out, "Date: %s\r\n%s", httpd_date_now(), cl->svc->server_tokens ? "Server: Perlbal\r\n" : "");
    if (extra) evbuffer_add(out, extra, strlen(extra));
    if (content_length >= 0) evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)content_length);
    if (!keep) evbuffer_add(out, "Connection: close\r\n", 19);
    else if (cl->h->version_minor == 0) evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
    cl->h->response_started = true;
}

/* enable_error_retries: the delay (seconds) before retry number n, from
 * error_retry_schedule ("0,.25,.50,1"); -1 when the schedule is used up. */
static double retry_delay(const char *schedule, int n)
{
    const char *p = schedule ? schedule : "";
    for (int i = 0; *p; i++) {
        char *end;
        double d = strtod(p, &end);
        if (end == p) return -1;
        if (i == n) return d < 0 ? 0 : d;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return -1;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pb_client *cl = arg;
    if (cl->held) {
        cl->held = false;
        conn_resume_read(cl->c);
        pb_proxy_start(cl);
        return;
    }
    pb_proxy_request(cl);
}

void pb_proxy_start(struct pb_client *cl)
{
    if (cl->svc->buffer_uploads && cl->h->body == HTTP_BODY_LENGTH && cl->h->body_remaining > 0) {
        pb_proxy_buffer_start(cl);
        return;
    }
    pb_proxy_request(cl);
}

void pb_proxy_hold(struct pb_client *cl, int64_t ms)
{
    if (!cl->retry_ev && !(cl->retry_ev = evtimer_new(loop_get(cl->loop_index)->base, retry_cb, cl))) {
        pb_proxy_start(cl);
        return;
    }
    cl->held = true;
    cl->state = CL_WAIT_BACKEND;
    conn_pause_read(cl->c);
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evtimer_add(cl->retry_ev, &tv);
}

/* A GET/HEAD answered 500: as Perlbal's enable_error_retries, send it to a
 * backend again after the scheduled delay. True if the retry is scheduled
 * (the caller drops this backend connection). */
static bool retry_after_500(struct pb_backend *be, struct pb_client *cl, struct http_msg *resp)
{
    if (!be->svc->enable_error_retries || resp->status != 500 || cl->h->body != HTTP_BODY_NONE ||
        (cl->h->method != HTTP_M_GET && cl->h->method != HTTP_M_HEAD))
        return false;
    double d = retry_delay(be->svc->error_retry_schedule, cl->error_retries);
    if (d < 0) return false;
    if (!cl->retry_ev && !(cl->retry_ev = evtimer_new(loop_get(cl->loop_index)->base, retry_cb, cl))) return false;
    cl->error_retries++;
    be->client = NULL;
    cl->backend = NULL;
    cl->state = CL_WAIT_BACKEND;
    struct timeval tv = { (time_t)d, (suseconds_t)((d - (double)(time_t)d) * 1e6) };
    evtimer_add(cl->retry_ev, &tv);
    return true;
}

/* Response head from the backend: reproxy, retry (a 500) or pass on. */
static enum httpc_head_action be_on_head(struct httpc *hc, struct http_msg *resp)
{
    struct pb_backend *be = hc->data;
    struct pb_client *cl = be->client;
    be->reusable = resp->keep_alive && be->svc->persist_backend;
    be->state = BE_BODY;
    if (!cl) { /* verify (OPTIONS) answer: discard its body */
        be->verify_ok = resp->keep_alive;
        be->discard_body = true;
        return HTTPC_SKIP_BODY;
    }
    if (be->svc->nplugins) pb_plugins_response_head(be->svc, cl, resp->status);
    size_t fl = 0, ul = 0, el = 0, tl = 0;
    const char *file = be->svc->enable_reproxy ? find_value(resp, "x-reproxy-file", &fl) : NULL;
    const char *urls = be->svc->enable_reproxy ? find_value(resp, "x-reproxy-url", &ul) : NULL;
    if (file || urls) {
        const char *exp = find_value(resp, "x-reproxy-expected-size", &el);
        int64_t expected = exp ? strtoll(exp, NULL, 10) : -1;
        keep_reproxy_headers(cl, resp);
        size_t cfl;
        const char *cache_for = urls && cl->cache_key ? find_value(resp, "x-reproxy-cache-for", &cfl) : NULL;
        if (cache_for) cache_store(be->svc, cl, urls, ul, expected, strtol(cache_for, NULL, 10));
        char *f = file ? strndup(file, fl) : NULL;
        char *u = urls ? strndup(urls, ul) : NULL;
        (void)tl;
        be->discard_body = true;
        be->client = NULL;
        cl->backend = NULL;
        cl->state = CL_REPROXY;
        if (f) pb_proxy_reproxy_file(cl, f, expected);
        else pb_proxy_reproxy_urls(cl, u, expected);
        free(f);
        free(u);
        return HTTPC_SKIP_BODY;
    }
    if (retry_after_500(be, cl, resp)) return HTTPC_CLOSE;
    bool keep = client_keep_for(be, resp);
    struct evbuffer *out = httpd_tx();
    /* status line without printf: this is the per-request hot path */
    char sl[16] = "HTTP/1.0 000 ";
    sl[7] = (char)('0' + (cl->h->version_minor ? 1 : 0));
    sl[9] = (char)('0' + resp->status / 100 % 10);
    sl[10] = (char)('0' + resp->status / 10 % 10);
    sl[11] = (char)('0' + resp->status % 10);
    evbuffer_add(out, sl, 13);
    if (resp->reason_len) evbuffer_add(out, resp->reason, resp->reason_len);
    evbuffer_add(out, "\r\n", 2);
    for (int i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
#define IS(n) (h->name_len == sizeof(n) - 1 && strncasecmp(h->name, n, sizeof(n) - 1) == 0)
        if (IS("connection") || IS("keep-alive")) continue;
#undef IS
        evbuffer_add(out, h->name, h->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (!keep) evbuffer_add(out, "Connection: close\r\n\r\n", 21);
    else if (cl->h->version_minor == 0) evbuffer_add(out, "Connection: keep-alive\r\n\r\n", 26);
    else evbuffer_add(out, "\r\n", 2);
    cl->h->response_started = true;
    cl->h->keep_alive = keep;
    /* the head waits in the scratch buffer only when the whole body is
     * already here (it then goes out with the body in one write) */
    size_t have = evbuffer_get_length(conn_in(hc->c)) - resp->head_len;
    if (!(resp->body == HTTP_BODY_NONE || (resp->body == HTTP_BODY_LENGTH && have >= resp->content_length) ||
          cl->h->method == HTTP_M_HEAD))
        pb_client_flush(cl);
    return HTTPC_READ_BODY;
}

static void be_on_close(struct httpc *hc, enum conn_close_reason why)
{
    struct pb_backend *be = hc->data;
    struct pb_service *svc = be->svc;
    int li = be->loop_index;
    struct pb_svc_loop *l = svl_of(svc, li);
    struct pb_client *cl = be->client;
    log_debug("backend %llu (%s) closed why %d state %d client %llu", be->c ? (unsigned long long)be->c->id : 0ULL,
              be->m.node->name, (int)why, (int)be->state, cl ? (unsigned long long)cl->c->id : 0ULL);
    if (cl) {
        cl->backend = NULL;
        be->client = NULL;
        if (hc->failure == HTTPC_BAD_RESPONSE && !cl->h->response_started) {
            pb_client_error(cl, 502, "Bad response from backend");
        } else if (!cl->h->response_started && cl->h->body == HTTP_BODY_NONE && cl->retries < MAX_RETRIES &&
                   (cl->h->method == HTTP_M_GET || cl->h->method == HTTP_M_HEAD) && be->state == BE_WAIT_HEAD) {
            /* nothing reached the client yet and the request can be sent
             * again: try another backend */
            atomic_fetch_add_explicit(&be->m.node->failures, 1, memory_order_relaxed);
            if (be->uses <= 1) atomic_store(&be->m.node->dead_until_ms, pb_now_ms() + NODE_DEAD_MS);
            cl->retries++;
            pb_proxy_request(cl);
        } else if (!cl->h->response_started) {
            pb_client_error(cl, 502, "Backend closed the connection");
        } else {
            conn_close(cl->c);
        }
    }
    l->pool.stopping = loop_stopping();
    pool_gone(&l->pool, &be->m, be->connect_failed);
    free(be);
}

void pb_proxy_client_gone(struct pb_client *cl)
{
    pool_cancel(&svl_of(cl->svc, cl->loop_index)->pool, &cl->w);
    if (cl->retry_ev) {
        event_free(cl->retry_ev);
        cl->retry_ev = NULL;
    }
    struct pb_backend *be = cl->backend;
    if (be) {
        cl->backend = NULL;
        be->client = NULL;
        conn_close(be->c);
    }
    if (cl->reproxy) {
        pb_reproxy_free(cl);
    }
}

void pb_proxy_loop_tick(struct pb_service *svc, int li)
{
    struct pb_svc_loop *l = svl_of(svc, li);
    l->pool.connect_ahead = svc->connect_ahead;
    l->pool.stopping = loop_stopping();
    if (l->pool.nwaiting > 0) pool_kick(&l->pool);
}

/* ---- reproxy ---- */

enum rp_state { RP_CONNECTING, RP_HEAD, RP_BODY };

struct pb_reproxy {
    struct pb_client *cl;
    char *urls;          /* the whole list */
    char *next;          /* next URL to try */
    int64_t expected;
    struct httpc *hc;    /* the source being read (common/httpc) */
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
    if (!rp) return;
    cl->reproxy = NULL;
    rp_detach_conn(rp);
    free(rp->urls);
    free(rp);
}

void pb_reproxy_resume(struct pb_client *cl)
{
    if (cl->reproxy && cl->reproxy->hc) httpc_resume(cl->reproxy->hc);
}

static void rp_finish(struct pb_reproxy *rp, bool keep)
{
    struct pb_client *cl = rp->cl;
    pb_reproxy_free(cl);
    pb_client_done(cl, keep);
}

/* "http://host:port/path" -> address + path. Host: an IPv4 address,
 * "[IPv6]" or "localhost" (no DNS on the loop). hostport gets "host:port"
 * as written (for the Host header). */
static int parse_url(const char *url, size_t len, struct pool_node *addr, char *hostport, size_t hplen, char *path,
                     size_t pathlen)
{
    if (len < 8 || strncasecmp(url, "http://", 7) != 0) return -1;
    const char *h = url + 7, *e = url + len;
    const char *slash = memchr(h, '/', (size_t)(e - h));
    const char *he = slash ? slash : e;
    size_t hl = (size_t)(he - h);
    if (hl == 0 || hl >= hplen) return -1;
    memcpy(hostport, h, hl);
    hostport[hl] = 0;
    if (pool_node_init(addr, hostport, 80) < 0) return -1;
    size_t pl = slash ? (size_t)(e - slash) : 1;
    if (pl >= pathlen) return -1;
    if (slash) memcpy(path, slash, pl);
    else path[0] = '/';
    path[pl] = 0;
    return 0;
}

static void rp_try_next(struct pb_reproxy *rp)
{
    rp_detach_conn(rp);
    while (rp->next && *rp->next) {
        char *u = rp->next;
        while (*u == ' ') u++;
        if (!*u) break;
        char *sp = strchr(u, ' ');
        size_t ul = sp ? (size_t)(sp - u) : strlen(u);
        rp->next = sp ? sp + 1 : u + ul;
        struct pool_node addr;
        char host[256], path[4096];
        if (parse_url(u, ul, &addr, host, sizeof host, path, sizeof path) < 0) continue;
        rp->state = RP_CONNECTING;
        struct httpc *hc = httpc_connect(loop_get(rp->cl->loop_index), (struct sockaddr *)&addr.sa, addr.salen,
                                         BE_CONNECT_TIMEOUT_MS, &reproxy_ops, rp);
        if (!hc) continue;
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
    if (!rp) return HTTPC_CLOSE;
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
                 : resp->body == HTTP_BODY_NONE ? 0 : -1,
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
    if (!rp) return;
    struct pb_client *cl = rp->cl;
    evbuffer_add_buffer(httpd_tx(), data);
    pb_client_flush(cl);
    uint64_t limit = cl->svc->buffer_size_reproxy_url ? cl->svc->buffer_size_reproxy_url : 50 * 1024;
    if (evbuffer_get_length(conn_out(cl->c)) > limit) httpc_pause(hc);
}

static void rp_on_done(struct httpc *hc, bool reusable)
{
    (void)reusable;
    struct pb_reproxy *rp = hc->data;
    if (!rp) return;
    rp_finish(rp, rp->cl->h->keep_alive);
}

static void rp_on_close(struct httpc *hc, enum conn_close_reason why)
{
    (void)why;
    struct pb_reproxy *rp = hc->data;
    if (!rp) return;
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
        if (fd >= 0) close(fd);
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
        if (rr == HTTP_RANGE_UNSATISFIABLE) {
            close(fd);
            snprintf(extra, sizeof extra, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
            reproxy_head(cl, 416, 0, extra, keep);
            pb_client_done(cl, keep);
            return;
        }
        if (rr == HTTP_RANGE_OK) status = 206;
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
    if (cl->svc->nplugins) pb_plugins_file_sent(cl->svc, cl, true);
    if (cl->h->method != HTTP_M_HEAD) evbuffer_add_file(httpd_tx(), fd, (ev_off_t)first, (ev_off_t)len);
    else close(fd);
    pb_client_done(cl, keep);
}
