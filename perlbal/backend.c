/* backend: connections to a reverse_proxy's backends — the pool's
 * operations (connect, hand a ready backend to a waiting client, close,
 * how many bored ones to keep), verify_backend's OPTIONS probe, sending the
 * request, the response head (pass on, reproxy, retry a 500), streaming the
 * body to the client with back-pressure, and what a closed backend means
 * for its client (retry on another, 502, or cut).
 *
 * Model (as Perlbal): a client whose request head is complete either takes a
 * bored (idle, connected) backend at once or waits in its service's queue
 * (high / normal / low) while new backend connections are opened; the first
 * backend that becomes ready takes the first waiting client (common/pool).
 * Everything here runs on the client's loop; each loop has its own backends. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
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
#include "perlbal/accesslog.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static enum httpc_head_action be_on_head(struct httpc *hc, struct http_msg *resp);
static void be_on_body(struct httpc *hc, struct evbuffer *data);
static void be_on_done(struct httpc *hc, bool reusable);
static void be_on_connect(struct httpc *hc, bool ok);
static void be_on_close(struct httpc *hc, enum conn_close_reason why);
static void be_on_drained(struct httpc *hc);
static void spool_unlink_if_sent(struct pb_client *cl, struct httpc *hc);

static const struct httpc_ops backend_ops = {
    .on_connect = be_on_connect,
    .on_head = be_on_head,
    .on_body = be_on_body,
    .on_done = be_on_done,
    .on_drained = be_on_drained,
    .on_close = be_on_close,
};

static void assign(struct pb_backend *be, struct pb_client *cl);

/* ---- server_process: a backend that is a child program ----
 * As Perlbal's (alpha) server_process: each backend connection is a new
 * child running the program with a socket as its stdin and stdout; it
 * answers HTTP there. Children are reaped when they exit. */

#define REAP_MAX 256
static pthread_mutex_t reap_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t reap_pids[REAP_MAX];
static int nreap;

static void reap_later(pid_t pid)
{
    if (waitpid(pid, NULL, WNOHANG) == pid)
        return;
    pthread_mutex_lock(&reap_lock);
    if (nreap < REAP_MAX)
        reap_pids[nreap++] = pid;
    pthread_mutex_unlock(&reap_lock);
}

void pb_backend_reap(void)
{
    pthread_mutex_lock(&reap_lock);
    for (int i = 0; i < nreap;) {
        if (waitpid(reap_pids[i], NULL, WNOHANG) != 0)
            reap_pids[i] = reap_pids[--nreap];
        else
            i++;
    }
    pthread_mutex_unlock(&reap_lock);
}

static void process_ready(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pb_backend *be = arg;
    event_free(be->ready_ev);
    be->ready_ev = NULL;
    be_on_connect(be->hc, true);
}

static struct httpc *spawn_process(struct pb_backend *be, struct core_loop *loop)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0); /* dup2 clears close-on-exec */
    posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
    char *const argv[] = { be->svc->server_process, NULL };
    extern char **environ;
    pid_t pid;
    int rc = posix_spawn(&pid, be->svc->server_process, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (rc != 0) {
        log_warn("perlbal: server_process %s: %s", be->svc->server_process, strerror(rc));
        close(sv[0]);
        return NULL;
    }
    evutil_make_socket_nonblocking(sv[0]);
    struct httpc *hc = httpc_wrap(loop, sv[0], &backend_ops, be);
    if (!hc) {
        kill(pid, SIGTERM);
        reap_later(pid);
        return NULL;
    }
    be->pid = pid;
    /* "connected" on the next turn of the loop: the pool must not be called
     * back from inside its own connect */
    struct timeval now = { 0, 0 };
    be->ready_ev = evtimer_new(loop->base, process_ready, be);
    if (be->ready_ev)
        evtimer_add(be->ready_ev, &now);
    return hc;
}

static struct pool_member *pool_op_connect(struct pool *p)
{
    struct pb_svc_loop *l = p->data;
    struct pb_service *svc = l->svc;
    if (svc->server_process && *svc->server_process) {
        struct pb_backend *be = calloc(1, sizeof *be);
        if (!be)
            return NULL;
        be->svc = svc;
        be->loop_index = l->loop_index;
        if (!svc->process_node.name[0])
            snprintf(svc->process_node.name, sizeof svc->process_node.name, "process");
        be->m.node = &svc->process_node;
        be->state = BE_CONNECTING;
        struct httpc *hc = spawn_process(be, loop_get(l->loop_index));
        if (!hc) {
            free(be);
            return NULL;
        }
        be->hc = hc;
        be->c = hc->c;
        hc->read_ms = BE_READ_TIMEOUT_MS;
        hc->write_ms = BE_WRITE_TIMEOUT_MS;
        hc->raw_body = true;
        conn_set_timeouts(hc->c, BE_READ_TIMEOUT_MS, BE_WRITE_TIMEOUT_MS);
        atomic_fetch_add_explicit(&svc->process_node.connects, 1, memory_order_relaxed);
        return &be->m;
    }
    struct pool_node *node = svc->pool ? pb_pool_pick(svc->pool) : NULL;
    if (!node)
        return NULL;
    struct pb_backend *be = calloc(1, sizeof *be);
    if (!be)
        return NULL;
    be->svc = svc;
    be->loop_index = l->loop_index;
    be->m.node = node;
    be->state = BE_CONNECTING;
    /* a node given by name is resolved now, on the loop without blocking
     * (a name that does not resolve fails like a refused connect) */
    struct httpc *hc = node->host[0] ? httpc_connect_host(loop_get(l->loop_index), node->host, node->port,
                                                          BE_CONNECT_TIMEOUT_MS, &backend_ops, be)
                                     : httpc_connect(loop_get(l->loop_index), (struct sockaddr *)&node->sa, node->salen,
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
    struct pb_client *cl = CL_OF(w);
    /* an outage is logged once, not once per request it fails */
    if (!atomic_exchange(&cl->svc->no_backend_logged, true))
        log_warn("perlbal: service %s: no backend available (every node of pool %s is down or refusing); answering "
                 "503 until one answers",
                 cl->svc->name, cl->svc->pool ? cl->svc->pool->name : "-");
    pb_client_error(cl, 503, "No backend available");
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
    if (!svc->persist_backend || loop_stopping())
        return 0;
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
    while ((m = pool_take_idle(p)))
        conn_close(BE_OF(m)->c);
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

/* PERLBAL_DEBUG_BUFFERED_UPLOADS in the environment (read once at start, as
 * Perlbal's test suite sets it) */
static bool debug_upload_reason(void)
{
    static int on = -1;
    if (on < 0)
        on = getenv("PERLBAL_DEBUG_BUFFERED_UPLOADS") != NULL;
    return on;
}

static void assign(struct pb_backend *be, struct pb_client *cl)
{
    log_debug("assign client %llu -> backend %llu (%s) uses %d", (unsigned long long)cl->c->id,
              (unsigned long long)be->c->id, be->m.node->name, be->uses);
    be->client = cl;
    cl->backend = be;
    if (atomic_load_explicit(&cl->svc->no_backend_logged, memory_order_relaxed)) {
        atomic_store(&cl->svc->no_backend_logged, false);
        log_info("perlbal: service %s: backends answer again", cl->svc->name);
    }
    pb_client_enter(cl, CL_BACKEND);
    be->state = BE_WAIT_HEAD;
    conn_set_busy(be->c, true); /* a graceful stop waits for the response */
    be->uses++;
    be->discard_body = false;
    atomic_fetch_add_explicit(&be->m.node->used, 1, memory_order_relaxed);
    httpd_send_continue(cl->h);
    /* keep the head until the response starts, for a retry */
    size_t hl = evbuffer_get_length(cl->req_head);
    struct evbuffer *txb = httpd_tx2();
    bool spooled_chunked = cl->h->body == HTTP_BODY_CHUNKED && cl->upload_fd >= 0;
    if (cl->svc->nplugins || cl->upload_reason) {
        /* headers added here go before the head's final CRLF */
        evbuffer_add(txb, evbuffer_pullup(cl->req_head, (ssize_t)hl), hl - 2);
        if (cl->svc->nplugins)
            pb_plugins_backend_assigned(cl->svc, cl, txb);
        if (spooled_chunked)
            evbuffer_add_printf(txb, "Content-Length: %llu\r\n", (unsigned long long)cl->upload_size);
        if (cl->upload_reason && debug_upload_reason())
            evbuffer_add_printf(txb, "X-PERLBAL-BUFFERED-UPLOAD-REASON: %s\r\n", cl->upload_reason);
        evbuffer_add(txb, "\r\n", 2);
    } else {
        evbuffer_add(txb, evbuffer_pullup(cl->req_head, (ssize_t)hl), hl);
    }
    if (cl->upload_fd >= 0 && cl->upload_size > 0) {
        /* a spooled upload: the body goes out of its file (a dup, so a
         * retry could send it again) */
        int fd = dup(cl->upload_fd);
        if (fd < 0 || httpd_add_file(txb, false, fd, 0, (int64_t)cl->upload_size) < 0) { /* sendfile */
            if (fd >= 0)
                close(fd);
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
    if (!cl->h->body_done)
        pb_proxy_body_ready(cl);
}

/* As Perlbal: a buffered upload's file goes as soon as the whole request
 * is with the backend, not when the response is done (the open descriptor
 * stays for a retry; pb_upload_purge closes it). Checked when the
 * backend's output drains (common/conn says so after a direct write too). */
static void spool_unlink_if_sent(struct pb_client *cl, struct httpc *hc)
{
    if (!cl || !cl->upload_path || !cl->h->body_done || evbuffer_get_length(conn_out(hc->c)) > 0)
        return;
    unlink(cl->upload_path); /* disk call on the loop, as upload.c's */
    free(cl->upload_path);
    cl->upload_path = NULL;
}

static void be_on_drained(struct httpc *hc)
{
    struct pb_backend *be = hc->data;
    spool_unlink_if_sent(be->client, hc);
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
    if (reuse)
        become_ready(be);
    else
        conn_close(be->c);
    if (cl)
        pb_client_done(cl, client_keep);
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
    if (!cl || be->discard_body)
        return;
    cl->resp_bytes += evbuffer_get_length(data);
    evbuffer_add_buffer(httpd_tx(), data);
    pb_client_flush(cl);
    uint64_t limit = be->svc->buffer_size ? be->svc->buffer_size : 256 * 1024;
    if (evbuffer_get_length(conn_out(cl->c)) > limit)
        httpc_pause(hc);
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
    if (be->svc->nplugins)
        pb_plugins_response_head(be->svc, cl, resp->status);
    size_t fl = 0, ul = 0, el = 0, tl = 0;
    const char *file = be->svc->enable_reproxy ? find_value(resp, "x-reproxy-file", &fl) : NULL;
    const char *urls = be->svc->enable_reproxy ? find_value(resp, "x-reproxy-url", &ul) : NULL;
    if (file || urls) {
        const char *exp = find_value(resp, "x-reproxy-expected-size", &el);
        int64_t expected = exp ? strtoll(exp, NULL, 10) : -1;
        pb_reproxy_keep_headers(cl, resp);
        size_t cfl;
        const char *cache_for = urls && cl->cache_key ? find_value(resp, "x-reproxy-cache-for", &cfl) : NULL;
        if (cache_for)
            pb_reproxy_cache_store(be->svc, cl, urls, ul, expected, strtol(cache_for, NULL, 10));
        char *f = file ? strndup(file, fl) : NULL;
        char *u = urls ? strndup(urls, ul) : NULL;
        (void)tl;
        be->discard_body = true;
        be->client = NULL;
        cl->backend = NULL;
        pb_client_enter(cl, CL_REPROXY);
        if (f)
            pb_proxy_reproxy_file(cl, f, expected);
        else
            pb_proxy_reproxy_urls(cl, u, expected);
        free(f);
        free(u);
        return HTTPC_SKIP_BODY;
    }
    size_t svl;
    const char *sv = be->svc->enable_reproxy ? find_value(resp, "x-reproxy-service", &svl) : NULL;
    if (sv) {
        /* X-REPROXY-SERVICE (as Perlbal): the same request goes to another
         * service, whose answer the client gets: a reverse_proxy asks its
         * backends, a web_server serves it from its docroot; a management
         * or echo service is Perlbal's 500 "Can't map to service type".
         * Only for requests without a body (the body is gone). */
        char name[PB_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)(svl < sizeof name ? svl : sizeof name - 1), sv);
        pthread_mutex_lock(&pb_lock);
        struct pb_service *t = pb_service_find(name);
        pthread_mutex_unlock(&pb_lock);
        be->discard_body = true;
        be->client = NULL;
        cl->backend = NULL;
        if (t && (t->role == PB_ROLE_MANAGEMENT || t->role == PB_ROLE_ECHO) && !cl->reproxied_service) {
            char msg[64];
            snprintf(msg, sizeof msg, "Can't map to service type %s", pb_role_name(t->role));
            pb_client_error(cl, 500, msg);
            return HTTPC_SKIP_BODY;
        }
        /* a body can go to a second backend only when it was spooled to
         * disk (buffer_uploads): a streamed one went to the first */
        bool body_ok = cl->h->body == HTTP_BODY_NONE || (cl->upload_fd >= 0 && cl->h->body_done);
        struct http_msg *m = NULL;
        if (t && (t->role == PB_ROLE_SELECTOR || t->role == PB_ROLE_WEB_SERVER) && !cl->reproxied_service) {
            /* the request as it was (the backend head keeps the client's
             * method, target, Host, Range and If-Modified-Since) */
            size_t hl = evbuffer_get_length(cl->req_head);
            const char *hb = (const char *)evbuffer_pullup(cl->req_head, (ssize_t)hl);
            struct http_limits lim = { 0 };
            m = malloc(sizeof *m);
            if (!m || !hb || http_parse_request(hb, hl, &lim, m) <= 0) {
                free(m);
                pb_client_error(cl, 500, "Cannot re-read the request");
                return HTTPC_SKIP_BODY;
            }
        }
        if (m && t->role == PB_ROLE_SELECTOR) {
            /* as Perlbal's adopt_base_client: the selector chooses again */
            int st;
            char msg[160];
            struct pb_service *t2 = pb_select_service(t, cl, m, &st, msg, sizeof msg);
            if (!t2) {
                free(m);
                pb_client_error(cl, st, msg);
                return HTTPC_SKIP_BODY;
            }
            t = t2;
        }
        /* a web_server answers from its docroot whatever became of the
         * body (Perl Perlbal's web_server: GET/HEAD served, POST 400, as
         * measured side by side); only a PUT needs the body it lost */
        if (m && t->role == PB_ROLE_WEB_SERVER &&
            (cl->h->body == HTTP_BODY_NONE || (cl->h->body_done && cl->h->method != HTTP_M_PUT))) {
            cl->reproxied_service = true;
            cl->svc = t;
            pb_web_request(cl, m);
            free(m);
            return HTTPC_SKIP_BODY;
        }
        free(m);
        bool body_lost = t && !cl->reproxied_service &&
                         ((t->role == PB_ROLE_REVERSE_PROXY && !body_ok) ||
                          (t->role == PB_ROLE_WEB_SERVER && cl->h->body != HTTP_BODY_NONE));
        if (body_lost) {
            /* Perl Perlbal sends the head on with its Content-Length and
             * waits for a body that already went to the first backend: the
             * client hangs, or its next pipelined request becomes that
             * body (measured). Refused instead, before a backend is asked. */
            pb_client_error(cl, 500, "X-REPROXY-SERVICE: the request body already went to the first backend");
            return HTTPC_SKIP_BODY;
        }
        if (!t || t->role != PB_ROLE_REVERSE_PROXY || !body_ok || cl->reproxied_service) {
            pb_client_error(cl, 404, "Vhost twiddling not configured for requested pair.");
            return HTTPC_SKIP_BODY;
        }
        cl->reproxied_service = true; /* once: no ping-pong between services */
        cl->svc = t;
        cl->retries = 0;
        pb_proxy_request(cl);
        return HTTPC_SKIP_BODY;
    }
    if (pb_proxy_retry_500(cl, resp->status))
        return HTTPC_CLOSE;
    bool keep = client_keep_for(be, resp);
    struct pb_resp_edit edit = { .status = resp->status };
    bool edited = false;
    if (be->svc->nplugins) {
        pb_plugins_modify_response(be->svc, cl, resp, &edit);
        edited = edit.status != resp->status || edit.reason || edit.drop[0] || edit.ctype || edit.length_delta ||
                 edit.prepend_len;
    }
    int status = edit.status;
    cl->status = status;
    cl->resp_bytes = 0;
    cl->resp_bytes_known = true; /* counted as the body streams (be_on_body) */
    struct pb_headbuf hb_, *out = &hb_;
    hb_.out = httpd_tx();
    hb_.len = 0;
    /* status line without printf: this is the per-request hot path */
    char sl[16] = "HTTP/1.0 000 ";
    sl[7] = (char)('0' + (cl->h->version_minor ? 1 : 0));
    sl[9] = (char)('0' + status / 100 % 10);
    sl[10] = (char)('0' + status / 10 % 10);
    sl[11] = (char)('0' + status % 10);
    pb_hb_add(out, sl, 13);
    if (edit.reason)
        pb_hb_add(out, edit.reason, strlen(edit.reason));
    else if (resp->reason_len)
        pb_hb_add(out, resp->reason, resp->reason_len);
    pb_hb_add(out, "\r\n", 2);
    for (int i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
#define IS(n) (h->name_len == sizeof(n) - 1 && strncasecmp(h->name, n, sizeof(n) - 1) == 0)
        if (IS("connection") || IS("keep-alive"))
            continue;
        if (edited) {
            bool drop = false;
            for (int d = 0; d < 4 && edit.drop[d]; d++)
                drop |= strlen(edit.drop[d]) == h->name_len && !strncasecmp(edit.drop[d], h->name, h->name_len);
            if (drop)
                continue;
            if (edit.ctype && IS("content-type")) {
                pb_hb_add(out, "Content-Type: ", 14);
                pb_hb_add(out, edit.ctype, strlen(edit.ctype));
                pb_hb_add(out, "\r\n", 2);
                edit.ctype = NULL; /* said */
                continue;
            }
            if (edit.length_delta && IS("content-length")) {
                char clen[48];
                int cn = snprintf(clen, sizeof clen, "Content-Length: %llu\r\n",
                                  (unsigned long long)((int64_t)resp->content_length + edit.length_delta));
                pb_hb_add(out, clen, (size_t)cn);
                continue;
            }
        }
#undef IS
        pb_hb_add(out, h->name, h->name_len);
        pb_hb_add(out, ": ", 2);
        pb_hb_add(out, h->value, h->value_len);
        pb_hb_add(out, "\r\n", 2);
    }
    if (edit.ctype) { /* the backend sent none */
        pb_hb_add(out, "Content-Type: ", 14);
        pb_hb_add(out, edit.ctype, strlen(edit.ctype));
        pb_hb_add(out, "\r\n", 2);
    }
    if (!keep)
        pb_hb_add(out, "Connection: close\r\n\r\n", 21);
    else if (cl->h->version_minor == 0)
        pb_hb_add(out, "Connection: keep-alive\r\n\r\n", 26);
    else
        pb_hb_add(out, "\r\n", 2);
    if (edit.prepend_len && cl->h->method != HTTP_M_HEAD) {
        pb_hb_add(out, edit.prepend, edit.prepend_len);
        cl->resp_bytes += edit.prepend_len;
    }
    pb_hb_flush(out);
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
            if (be->uses <= 1)
                atomic_store(&be->m.node->dead_until_ms, pb_now_ms() + NODE_DEAD_MS);
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
    if (be->pid > 0)
        reap_later(be->pid);
    if (be->ready_ev)
        event_free(be->ready_ev); /* closed before its first turn */
    free(be);
}
