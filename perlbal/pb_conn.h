/* pb_conn.h: client and backend connection state, shared by pb_client.c
 * (reading requests), pb_proxy.c (backends, reproxy) and pb_web.c (files).
 * A client is one explicit state machine (enum pb_client_state); a backend
 * another (enum pb_backend_state). */
#ifndef PB_CONN_H
#define PB_CONN_H

#include "perlbal/pb.h"

enum pb_client_state {
    CL_READ_HEAD = 0,     /* no request in progress (httpd reads the next head) */
    CL_WAIT_BACKEND,      /* queued for a free backend (or held on a timer) */
    CL_BACKEND,           /* request handed to a backend, response streaming */
    CL_REPROXY,           /* response coming from a reproxy URL or file */
    CL_RESPONDING,        /* a local response is being answered (web_server, errors) */
    CL_BUFFERING,         /* buffer_uploads: body held in memory / spooled to disk before a backend is asked */
};

struct pb_reproxy;

/* One client connection: the HTTP side is common/httpd's (h: request
 * framing, keep-alive, body, errors); this is perlbal's per-request state. */
struct pb_client {
    struct httpd_conn *h;
    struct core_conn *c;              /* h->c */
    struct pb_service *svc;           /* service handling the current request */
    struct pb_service *listen_svc;    /* service whose listener accepted it */
    int loop_index;
    enum pb_client_state state;
    struct pb_backend *backend;
    struct evbuffer *req_head;        /* head rewritten for the backend */
    struct pb_service *active_svc;    /* counted in its active_clients */
    int prio;                         /* 0 high, 1 normal, 2 low */
    struct pool_waiter w;             /* queued for a backend */
    int retries;
    struct pb_reproxy *reproxy;
    char *target;                     /* request-target (for logs / reproxy) */
    bool chunked_out;                 /* the body goes to the backend re-chunked */
    /* buffer_uploads */
    int upload_fd;                    /* spooled body (unlinked temp file), -1 if none */
    uint64_t upload_size;
    int64_t upload_started_ms;
    int64_t plugin_t0_ms;             /* Stats: when a backend was assigned */
    char *cache_key;                  /* "host|uri" when the service has a reproxy cache */
    char *range;                      /* the client's Range header (enable_reproxy) */
    char *rp_hdrs;                    /* reproxy: the backend's own header lines, kept for the client */
    bool rp_has_ctype, rp_has_lm;     /* ... and whether they hold Content-Type / Last-Modified */
    int error_retries;                /* enable_error_retries: 500s retried so far */
    struct event *retry_ev;           /* the delay before the next one (also Throttle's hold) */
    bool throttle_counted;            /* Throttle counts this request as in flight */
    bool held;                        /* retry_ev is a Throttle hold, not a 500 retry */
};

enum pb_backend_state {
    BE_CONNECTING = 0,
    BE_VERIFYING,         /* OPTIONS sent, waiting for its answer */
    BE_IDLE,              /* bored: connected, no client */
    BE_WAIT_HEAD,         /* request sent, waiting for the response head */
    BE_BODY,              /* streaming the response body to the client */
};

struct pb_backend {
    struct httpc *hc;                 /* the HTTP client connection (common/httpc) */
    struct core_conn *c;              /* hc->c */
    struct pb_service *svc;
    int loop_index;
    struct pool_member m;             /* m.node: the backend's address */
    enum pb_backend_state state;
    struct pb_client *client;
    int uses;
    bool reusable;                    /* response allows keep-alive */
    bool discard_body;                /* reproxy: body is not for the client */
    bool verifying;                   /* the OPTIONS probe is in flight */
    bool verify_ok;                   /* its answer kept the connection open */
    bool connect_failed;
};

/* pb_client.c: the per-request ends of perlbal's state around httpd's */
void pb_client_flush(struct pb_client *cl);
void pb_client_error(struct pb_client *cl, int status, const char *msg);
/* The response to the current request is complete in the client's output. */
void pb_client_done(struct pb_client *cl, bool keep_alive);
/* Write a response head with standard headers (Date, Server, Connection). */
void pb_client_response_head(struct pb_client *cl, int status, const char *ctype, int64_t content_length,
                             bool keep_alive, const char *extra);
bool pb_client_can_persist(struct pb_client *cl);
/* Timeouts while a request is in flight (idle_timeout until its body is in). */
void pb_client_request_timeouts(struct pb_client *cl, size_t head_in_buffer);
void pb_client_set_responding(struct pb_client *cl);

/* pb_proxy.c */
/* The backend's header lines to keep were saved in cl->rp_hdrs. */
void pb_proxy_reproxy_file(struct pb_client *cl, const char *path, int64_t expected);
void pb_proxy_reproxy_urls(struct pb_client *cl, const char *urls, int64_t expected);
/* the client drained its output: let a paused reproxy source go on */
void pb_reproxy_resume(struct pb_client *cl);
void pb_reproxy_free(struct pb_client *cl);
void pb_proxy_loop_tick(struct pb_service *svc, int loop_index);
/* buffer_uploads: start holding the request body (dispatch) / more body bytes arrived */
void pb_proxy_buffer_start(struct pb_client *cl);
/* The request head is ready for the reverse proxy: buffer the upload or ask
 * for a backend. pb_proxy_hold() does it after ms (Throttle), reading paused. */
void pb_proxy_start(struct pb_client *cl);
void pb_proxy_hold(struct pb_client *cl, int64_t ms);
void pb_proxy_buffer_data(struct pb_client *cl);
/* X-REPROXY-CACHE-FOR: answer from the service's reproxy cache. True if it
 * took the request (cl->cache_key must be set). */
bool pb_proxy_from_cache(struct pb_client *cl);
uint64_t pb_proxy_cache_hits(struct pb_service *svc);

/* pb_web.c */
/* Mirror svc's web_server parameters into svc->files (after a SET). */
void pb_web_sync(struct pb_service *svc);

#endif
