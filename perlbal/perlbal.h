/* perlbal.h: the objects of the perlbal daemon, shared by its files.
 *
 *   pools     named lists of backend nodes (POOL x ADD ip:port)
 *   services  a role (reverse_proxy, web_server, selector, management; echo
 *             with the EchoService plugin) with
 *             its parameters, listener and per-loop run-time state
 *
 * Services and pools are created and changed by the config file and the
 * management console. Everything a request path reads from a pool's node list
 * is read under pb_lock; per-loop state (idle backends, waiting clients) is
 * touched only by its own loop. */
#ifndef PERLBAL_H
#define PERLBAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <sys/types.h>

#include "common/http.h"
#include "common/httpd.h"
#include "common/pool.h"

#define PB_VERSION "1.80-c"
#define PB_MAX_LOOPS 64
#define PB_NAME_MAX 64
#define PB_UPLOAD_LISTENERS 8
#define PB_STATUS_SLOTS 500 /* status codes 100..599 counted per service */

struct core_conn;
struct core_loop;
struct core_listener;
struct evbuffer;
struct event;
struct pb_client;
struct pb_backend;
struct pb_plugin;

/* PB_ROLE_ECHO exists only once `LOAD EchoService` ran (plugins/echoservice.c). */
enum pb_role {
    PB_ROLE_NONE = 0,
    PB_ROLE_REVERSE_PROXY,
    PB_ROLE_WEB_SERVER,
    PB_ROLE_MANAGEMENT,
    PB_ROLE_SELECTOR,
    PB_ROLE_ECHO,
    PB_ROLE_UPLOAD_TRACKER, /* UDP upload progress reports (upload_status.c) */
};

struct pb_pool {
    char name[PB_NAME_MAX];
    struct pool_node **nodes;
    int nnodes, cap;
    char *nodefile;
    time_t nodefile_mtime;
    int use_count; /* services using it */
    struct pb_pool *next;
};

/* An IPv4 or IPv6 network ("10.0.0.0/8", "::1", "2001:db8::/32"). */
struct pb_net {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network byte order, masked */
    int bits;         /* prefix length */
};
/* Parse one network; 0 or -1. */
int pb_net_parse(const char *s, struct pb_net *out);
/* Is the peer inside the network? An IPv4-mapped IPv6 peer counts as IPv4. */
bool pb_net_match(const struct pb_net *n, const struct sockaddr_storage *peer);

struct pb_header_op {
    char *name;
    char *value; /* NULL for remove */
    struct pb_header_op *next;
};

struct pb_vhost {
    char *pattern;
    char *target;
    struct pb_vhost *next;
};

/* Per-loop, per-service state (only its loop touches it). */
struct pb_svc_loop {
    struct pool pool; /* backends: idle ones, waiting clients, connects in flight */
    struct pb_service *svc;
    int loop_index;
    int active_clients;
};

struct pb_service {
    char name[PB_NAME_MAX];
    enum pb_role role;
    char *listen;
    struct core_listener *listener; /* common/listen, while enabled with a listen address */
    bool enabled;
    /* parameters (Perlbal names) */
    struct pb_pool *pool;
    bool persist_client, persist_backend, verify_backend, enable_reproxy, blind_proxy, always_trusted;
    bool enable_put, enable_delete, dirindexing, server_tokens, enable_ssl, buffer_uploads;
    bool enable_error_retries;
    int idle_timeout, persist_client_idle_timeout;
    int ssl_verify_mode; /* OpenSSL SSL_VERIFY_* bits (Perlbal's IO::Socket::SSL option) */
    int connect_ahead, backend_persist_cache, max_backend_uses, min_put_directory;
    int buffer_upload_threshold_time, buffer_upload_threshold_rate;
    uint64_t buffer_size, buffer_size_reproxy_url, buffer_backend_connect, max_put_size;
    uint64_t buffer_upload_threshold_size, max_chunked_request_size, client_sndbuf_size;
    int reproxy_cache_maxsize;
    struct pb_reproxy_cache *reproxy_cache; /* X-REPROXY-CACHE-FOR (reproxy.c) */
    char *docroot, *index_files, *verify_backend_path, *high_priority_cookie, *high_priority_cookie_contents;
    char *trusted_upstream_proxies, *buffer_uploads_path, *ssl_key_file, *ssl_cert_file, *ssl_cipher_list;
    char *ssl_ca_path, *error_retry_schedule;
    char *default_service; /* selector: where a request no selector plugin matched goes */
    /* upload_status_listeners (reverse_proxy) / the upload_tracker role's UDP socket */
    struct sockaddr_storage ul_addrs[PB_UPLOAD_LISTENERS];
    int n_ul;
    int ut_fd;
    struct event *ut_ev;
    char *server_process;          /* a backend program speaking HTTP on its stdin/stdout */
    struct pool_node process_node; /* the node its backends count against */
    /* parsed trusted_upstream_proxies */
    struct pb_net trusted[16];
    int ntrusted;
    struct pb_header_op *header_ops;
    struct pb_vhost *vhosts;
    char plugins[8][32]; /* names, as SET plugins gave them (lower case) */
    const struct pb_plugin *plugin_ptr[8];
    int nplugins;
    void *plugin_state;          /* plugin.h's per-service state */
    uint64_t max_content_length; /* MaxContentLength plugin */
    int echo_delay;              /* EchoService: seconds before a line is echoed */
    void *tls_ctx;               /* SSL_CTX when enable_ssl */
    struct httpd_files files;    /* web_server: docroot etc. mirrored from the parameters (web.c) */
    bool enable_md5, enable_concatenate_get;
    bool enable_atomic_put; /* beyond Perlbal: every PUT to a temporary name, renamed when complete */
    /* counters */
    _Atomic uint64_t requests;
    _Atomic uint64_t status_count[PB_STATUS_SLOTS]; /* answered requests by status - 100 (metrics) */
    _Atomic uint64_t body_bytes;                    /* response body bytes sent (metrics) */
    _Atomic bool no_backend_logged;                 /* the 503 "No backend available" was logged (once per outage) */
    struct pb_svc_loop loops[PB_MAX_LOOPS];
    struct pb_service *next;
};

/* the registry (service.c) */
extern pthread_mutex_t pb_lock;
extern struct pb_service *pb_services;
extern struct pb_pool *pb_pools;
extern double pb_start_time;
extern _Atomic uint64_t pb_total_requests;

struct pb_service *pb_service_find(const char *name);
struct pb_service *pb_service_create(const char *name);
struct pb_pool *pb_pool_find(const char *name);
struct pb_pool *pb_pool_create(const char *name);
int pb_pool_add(struct pb_pool *p, const char *ipport, char *err, size_t errlen);
int pb_pool_remove(struct pb_pool *p, const char *ipport, char *err, size_t errlen);
/* Pick a live node at random (copying its address). Returns NULL if none. */
struct pool_node *pb_pool_pick(struct pb_pool *p);
void pb_pool_check_nodefile(struct pb_pool *p);
int pb_service_set(struct pb_service *s, const char *key, const char *val, char *err, size_t errlen);
int pb_service_set_default(const char *key, const char *val, char *err, size_t errlen);
int pb_pool_set(struct pb_pool *p, const char *key, const char *val, char *err, size_t errlen);
int pb_service_enable(struct pb_service *s, char *err, size_t errlen);
int pb_service_disable(struct pb_service *s, char *err, size_t errlen);
bool pb_service_trusted(const struct pb_service *s, const struct sockaddr_storage *peer);
const char *pb_role_name(enum pb_role r);
/* Keep p allocated (and reachable) for the life of the process: for things
 * replaced live that another loop may still be reading. */
void pb_retire(void *p);
void pb_close_all_listeners(void);
/* A service's TLS server context (certificate, key, ciphers, client
 * certificates), NULL + err on failure. */
void *pb_tls_ctx_new(struct pb_service *s, char *err, size_t errlen);
/* SIGHUP: each TLS service re-reads its certificate and key; new
 * connections use the new context, a failure keeps the old one (logged). */
void pb_tls_reload(void);
int64_t pb_now_ms(void);

/* clients (session.c, admin.c) */
/* reject: over SERVER max_connections: answer 503 (with a lingering close,
 * so the client reads it) and take no request. */
void pb_client_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen, bool reject);
void pb_manage_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen);

/* reverse proxy (reproxy.c) */
void pb_proxy_request(struct pb_client *cl);
void pb_proxy_client_gone(struct pb_client *cl);
/* Set up svc's backend pool on loop li (at creation); close its idle backends. */
void pb_proxy_init_loop(struct pb_service *svc, int li);
void pb_proxy_close_idle(struct pb_service *svc, int li);
void pb_web_sync(struct pb_service *svc);
/* SERVER aio_mode / aio_threads: on (1), off (0) or unchanged (-1); threads
 * or -1. The pool starts with the loops (perlbal.c); services re-synced. */
void pb_set_aio(int on, int threads);
extern struct work_pool *pb_disk_pool;
extern bool pb_aio_on;
extern int pb_aio_threads;
struct work_pool;
void pb_proxy_body_ready(struct pb_client *cl);

/* web server (web.c) */
void pb_web_request(struct pb_client *cl, struct http_msg *req);

/* management language (cmd_manage.c) */
struct pb_manage_ctx {
    char last_created[PB_NAME_MAX];
    bool verbose;
    bool in_config; /* running the config file (errors abort start) */
};
/* Run one line; output lines go to out ("\r\n" ended when crlf). Returns 0 on
 * success, -1 on error (an "ERROR: ..." line was written). */
int pb_manage_run(struct pb_manage_ctx *ctx, const char *line, size_t len, struct evbuffer *out, bool crlf);
int pb_manage_run_file(const char *path, char *err, size_t errlen);
void pb_manage_admin_fallback_init(void);

/* ---- connections: a client (one state machine, driven by session.c) and
 * a backend (backend.c) ---- */

/* reverse_proxy timing and bounds */
#define BE_CONNECT_TIMEOUT_MS 5000
#define BE_READ_TIMEOUT_MS 120000
#define BE_WRITE_TIMEOUT_MS 60000
#define NODE_DEAD_MS 2000
#define NODE_NOVERIFY_MS 60000
#define MAX_PENDING_PER_LOOP 64
#define MAX_RETRIES 3

static inline struct pb_svc_loop *svl_of(struct pb_service *svc, int li) { return &svc->loops[li]; }
#define BE_OF(x) ((struct pb_backend *)((char *)(x)-offsetof(struct pb_backend, m)))
#define CL_OF(x) ((struct pb_client *)((char *)(x)-offsetof(struct pb_client, w)))

enum pb_client_state {
    CL_READ_HEAD = 0, /* no request in progress (httpd reads the next head) */
    CL_WAIT_BACKEND,  /* queued for a free backend (or held on a timer) */
    CL_BACKEND,       /* request handed to a backend, response streaming */
    CL_REPROXY,       /* response coming from a reproxy URL or file */
    CL_RESPONDING,    /* a local response is being answered (web_server, errors) */
    CL_BUFFERING,     /* buffer_uploads: body held in memory / spooled to disk before a backend is asked */
};

struct pb_reproxy;

/* One client connection: the HTTP side is common/httpd's (h: request
 * framing, keep-alive, body, errors); this is perlbal's per-request state. */
struct pb_client {
    struct httpd_conn *h;
    struct core_conn *c;           /* h->c */
    struct pb_service *svc;        /* service handling the current request */
    struct pb_service *listen_svc; /* service whose listener accepted it */
    int loop_index;
    enum pb_client_state state;
    struct pb_backend *backend;
    struct evbuffer *req_head;     /* head rewritten for the backend */
    char peer_ip[46];              /* the peer's address as text, once per connection (pb_client_ip) */
    uint8_t peer_ip_len;           /* 0: not made yet */
    struct pb_service *active_svc; /* counted in its active_clients */
    int prio;                      /* 0 high, 1 normal, 2 low */
    struct pool_waiter w;          /* queued for a backend */
    int retries;
    struct pb_reproxy *reproxy;
    char *target;           /* request-target (for logs / reproxy) */
    size_t target_cap;      /* its buffer's size (kept across requests) */
    bool chunked_out;       /* the body goes to the backend re-chunked */
    bool reproxied_service; /* sent on by X-REPROXY-SERVICE already */
    /* buffer_uploads */
    int upload_fd;             /* spooled body (a file in buffer_uploads_path), -1 if none */
    char *upload_path;         /* its name: removed when the request ends */
    const char *upload_reason; /* "size", "rate", "time" or "chunked" */
    uint64_t upload_size;
    int64_t upload_started_ms;
    int64_t plugin_t0_ms;            /* Stats: when a backend was assigned */
    char *cache_key;                 /* "host|uri" when the service has a reproxy cache */
    char *range;                     /* the client's Range header (enable_reproxy) */
    char *rp_hdrs;                   /* reproxy: the backend's own header lines, kept for the client */
    bool rp_has_ctype, rp_has_lm;    /* ... and whether they hold Content-Type / Last-Modified */
    int error_retries;               /* enable_error_retries: 500s retried so far */
    struct event *retry_ev;          /* the delay before the next one (also Throttle's hold) */
    bool throttle_counted;           /* Throttle counts this request as in flight */
    bool held;                       /* retry_ev is a Throttle hold, not a 500 retry */
    void *async_job;                 /* a plugin's PB_HOLD_ASYNC work in flight (plugin.h) */
    void (*async_cancel)(void *job); /* the client went away: the job must forget it */
    /* what the access log and the metrics say of the request (accesslog.c) */
    int status;                   /* the answer's status, once perlbal knows it (0: httpd's own answer) */
    uint64_t resp_bytes;          /* its body bytes */
    bool resp_bytes_known;        /* ... if known */
    char *log_req;                /* the request's half of the access log line */
    uint64_t t0_us;               /* when the head arrived (for %D) */
    uint64_t flv_start;           /* FlvStreaming: the request's start= offset (0: none) */
    char upload_session[52];      /* client_up_sess of an upload being watched ("" = none) */
    uint64_t upload_total;        /* its Content-Length */
    int64_t upload_started_s;     /* when it started (epoch s) */
    int64_t upload_last_packet_s; /* the last progress datagram (once a second) */
};

enum pb_backend_state {
    BE_CONNECTING = 0,
    BE_VERIFYING, /* OPTIONS sent, waiting for its answer */
    BE_IDLE,      /* bored: connected, no client */
    BE_WAIT_HEAD, /* request sent, waiting for the response head */
    BE_BODY,      /* streaming the response body to the client */
};

struct pb_backend {
    struct httpc *hc;    /* the HTTP client connection (common/httpc) */
    struct core_conn *c; /* hc->c */
    struct pb_service *svc;
    int loop_index;
    struct pool_member m; /* m.node: the backend's address */
    enum pb_backend_state state;
    struct pb_client *client;
    int uses;
    bool reusable;     /* response allows keep-alive */
    bool discard_body; /* reproxy: body is not for the client */
    bool verifying;    /* the OPTIONS probe is in flight */
    bool verify_ok;    /* its answer kept the connection open */
    bool connect_failed;
    pid_t pid;              /* server_process: the child, 0 otherwise */
    struct event *ready_ev; /* server_process: "connected" on the next loop turn */
};

/* A head being written (the request head for a backend, the response head
 * for a client): pieces gather in a buffer on the stack and reach the
 * evbuffer in one add instead of four per header line (the proxy's hot
 * path); what does not fit spills into the evbuffer as it comes. */
struct pb_headbuf {
    struct evbuffer *out;
    size_t len;
    char buf[4096];
};
void pb_hb_spill(struct pb_headbuf *b, const void *d, size_t n);
static inline void pb_hb_add(struct pb_headbuf *b, const void *d, size_t n)
{
    if (b->len + n <= sizeof b->buf) {
        memcpy(b->buf + b->len, d, n);
        b->len += n;
    } else {
        pb_hb_spill(b, d, n);
    }
}
static inline void pb_hb_flush(struct pb_headbuf *b)
{
    if (b->len)
        evbuffer_add(b->out, b->buf, b->len);
    b->len = 0;
}

/* session.c: the per-request ends of perlbal's state around httpd's */
/* The one way cl->state changes (the transitions are listed in session.c). */
void pb_client_enter(struct pb_client *cl, enum pb_client_state next);
void pb_client_flush(struct pb_client *cl);
void pb_client_error(struct pb_client *cl, int status, const char *msg);
/* The response to the current request is complete in the client's output. */
void pb_client_done(struct pb_client *cl, bool keep_alive);
/* Write a response head with standard headers (Date, Server, Connection). */
void pb_client_response_head(struct pb_client *cl, int status, const char *ctype, int64_t content_length,
                             bool keep_alive, const char *extra);
bool pb_client_can_persist(struct pb_client *cl);
/* The client's address as text ("" for neither IPv4 nor IPv6), made once
 * per connection (inet_ntop formats with sprintf: not per request). */
const char *pb_client_ip(struct pb_client *cl, size_t *len);
/* Timeouts while a request is in flight (idle_timeout until its body is in). */
void pb_client_request_timeouts(struct pb_client *cl, size_t head_in_buffer);
void pb_client_set_responding(struct pb_client *cl);
/* A selector's choice for req (vhosts or a selector plugin, chains of up to
 * 4 selectors): a reverse_proxy or web_server, or NULL with the error to
 * answer in *status / msg. */
struct pb_service *pb_select_service(struct pb_service *sel, struct pb_client *cl, struct http_msg *req, int *status,
                                     char *msg, size_t msglen);
/* Hand req to svc (a reverse_proxy or web_server): its plugins, then its
 * role. req may be a parsed copy of the head (LazyCDN's fallback). */
void pb_dispatch_service(struct pb_client *cl, struct pb_service *svc, struct http_msg *req);

/* proxy.c, backend.c, reproxy.c, upload.c */
/* The backend's header lines to keep were saved in cl->rp_hdrs. */
void pb_proxy_reproxy_file(struct pb_client *cl, const char *path, int64_t expected);
void pb_proxy_reproxy_urls(struct pb_client *cl, const char *urls, int64_t expected);
/* the client drained its output: let a paused reproxy source go on */
void pb_reproxy_resume(struct pb_client *cl);
void pb_reproxy_free(struct pb_client *cl);
void pb_proxy_loop_tick(struct pb_service *svc, int loop_index);
/* server_process children that exited: reaped (from the 1 s tick). */
void pb_backend_reap(void);
/* buffer_uploads: start holding the request body (dispatch) / more body bytes arrived */
void pb_proxy_buffer_start(struct pb_client *cl);
/* The request head is ready for the reverse proxy: buffer the upload or ask
 * for a backend. pb_proxy_hold() does it after ms (Throttle), reading paused. */
void pb_proxy_start(struct pb_client *cl);
void pb_proxy_hold(struct pb_client *cl, int64_t ms);
void pb_proxy_buffer_data(struct pb_client *cl);
/* Close and remove the request's spool file, if any. */
void pb_upload_purge(struct pb_client *cl);
/* X-REPROXY-CACHE-FOR: answer from the service's reproxy cache. True if it
 * took the request (cl->cache_key must be set); ims: the request's
 * If-Modified-Since (304 when it equals the cached Last-Modified). */
bool pb_proxy_from_cache(struct pb_client *cl, const char *ims, size_t ims_len);
/* enable_error_retries: a GET/HEAD answered with status 500 is sent to a
 * backend again after the scheduled delay. True if scheduled (the client
 * has left its backend; the caller drops that connection). */
bool pb_proxy_retry_500(struct pb_client *cl, int status);
/* reproxy.c: keep the backend's header lines for the reproxied answer;
 * remember its X-REPROXY-URL answer for X-REPROXY-CACHE-FOR seconds. */
void pb_reproxy_keep_headers(struct pb_client *cl, struct http_msg *resp);
void pb_reproxy_cache_store(struct pb_service *svc, struct pb_client *cl, const char *urls, size_t ul, int64_t expected,
                            long secs);
uint64_t pb_proxy_cache_hits(struct pb_service *svc);

/* upload_status.c: the upload_tracker role and upload_status_listeners */
int pb_upload_tracker_open(struct pb_service *s, char *err, size_t errlen);
void pb_upload_tracker_close(struct pb_service *s);
int pb_upload_status_set_listeners(struct pb_service *s, const char *val, char *err, size_t errlen);
/* reverse_proxy with listeners: true when it answered /__upload_status
 * itself; else it may have marked the request's upload for progress. */
bool pb_upload_status_request(struct pb_client *cl, struct http_msg *req);
void pb_upload_status_progress(struct pb_client *cl, uint64_t done);

/* web.c */
/* The request ended (its answer still in httpd_tx()): Perlbal's wording of a 201. */
/* Mirror svc's web_server parameters into svc->files (after a SET). */
void pb_web_sync(struct pb_service *svc);

#endif
