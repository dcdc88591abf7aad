/* pb_conn.h: client and backend connection state, shared by pb_client.c
 * (reading requests), pb_proxy.c (backends, reproxy) and pb_web.c (files).
 * A client is one explicit state machine (enum pb_client_state); a backend
 * another (enum pb_backend_state). */
#ifndef PB_CONN_H
#define PB_CONN_H

#include "perlbal/pb.h"

enum pb_client_state {
    CL_READ_HEAD = 0,     /* waiting for (the rest of) a request head */
    CL_WAIT_BACKEND,      /* queued for a free backend */
    CL_BACKEND,           /* request handed to a backend, response streaming */
    CL_REPROXY,           /* response coming from a reproxy URL or file */
    CL_RESPONDING,        /* a local response is queued; next request may follow */
    CL_PUT_BODY,          /* web_server PUT: body going to a file */
    CL_BUFFERING,         /* buffer_uploads: body held in memory / spooled to disk before a backend is asked */
};

struct pb_reproxy;

struct pb_client {
    struct core_conn *c;
    struct pb_service *svc;           /* service handling the current request */
    struct pb_service *listen_svc;    /* service whose listener accepted it */
    int loop_index;
    enum pb_client_state state;
    struct pb_backend *backend;
    struct evbuffer *req_head;        /* head rewritten for the backend */
    enum http_method method;
    int version_minor;
    bool keep_alive;                  /* the client asked to persist */
    bool in_dispatch;                 /* inside the request loop (no recursion) */
    struct pb_service *active_svc;    /* counted in its active_clients */
    bool sent_continue;
    bool expect_continue;
    enum http_body body;              /* request body framing */
    uint64_t body_remaining;
    struct http_chunked chunk;
    bool body_done;
    int prio;                         /* 0 high, 1 normal, 2 low */
    bool queued;
    struct pb_client *qnext, *qprev;
    int retries;
    bool response_started;            /* response bytes reached the client */
    int64_t head_started_ms;          /* slowloris guard */
    int64_t queued_ms;
    struct pb_reproxy *reproxy;
    char *target;                     /* request-target (for logs / reproxy) */
    int put_fd;                       /* PUT: temp file being written */
    int put_dirfd;                    /* PUT: its directory (names below are relative to it) */
    char *put_tmp, *put_path;
    bool put_existed;
    bool lingering;                   /* error sent: drain input, then close */
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
    struct core_conn *c;
    struct pb_service *svc;
    int loop_index;
    struct pb_node *node;
    enum pb_backend_state state;
    struct pb_client *client;
    int uses;
    bool reusable;                    /* response allows keep-alive */
    bool discard_body;                /* reproxy: body is not for the client */
    bool counted_pending;
    bool verifying;                   /* the OPTIONS probe is in flight */
    bool verify_ok;                   /* its answer kept the connection open */
    bool in_idle_list;                /* linked on its service loop's idle list */
    enum http_method req_method;
    enum http_body resp_body;
    uint64_t resp_remaining;
    struct http_chunked chunk;
    struct pb_backend *next, *prev;   /* idle list */
};

/* pb_client.c */
/* Per-thread scratch buffers: responses are built in pb_tx() and sent with
 * pb_client_flush(); bytes for a backend go through pb_txb() and pb_send().
 * pb_send() writes straight to the socket when nothing is queued, so a
 * small response costs one writev and no poll registration; what the
 * kernel does not take is queued on the conn as usual. Both scratch buffers
 * are empty whenever control returns to the loop. */
struct evbuffer *pb_tx(void);
struct evbuffer *pb_txb(void);
void pb_send(struct core_conn *c, struct evbuffer *buf, bool tls);
/* Free the calling loop thread's scratch buffers (at its exit). */
void pb_tx_thread_exit(void);
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
const char *pb_http_date_now(void);

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
const char *pb_mime_type(const char *path);
void pb_web_put_data(struct pb_client *cl);
void pb_web_put_abort(struct pb_client *cl);

#endif
