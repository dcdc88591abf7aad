/* httpc: one HTTP/1.1 client connection over conn_connect.
 *
 * What it owns: the outgoing connection (connect with a timeout), sending a
 * request (head and body bytes, direct write when nothing is queued), the
 * response head (parsed by common/http, bounded; 1xx interim answers
 * skipped), and the response body — Content-Length, chunked (validated by
 * the decoder) or until close — streamed to the user as it arrives, with
 * back-pressure by pausing the socket. Several requests may go one after
 * another on a connection the response left reusable (keep-alive).
 *
 * What it must not do: choose backends, retry, or know what the response
 * is for. The user's ops decide (perlbal's proxy and reproxy, mogilefsd's
 * replication and monitoring).
 *
 * Threading: an httpc lives on one loop and is touched only from its
 * thread. All callbacks run on that loop.
 *
 * Sequence:
 *     hc = httpc_connect(loop, sa, salen, 5000, &ops, me);   // NULL: failed now, nothing was called
 *     ... ops.on_connect(hc, true)
 *     httpc_request(hc, HTTP_M_GET, head);                    // head: "GET / HTTP/1.1\r\n...\r\n"
 *     ... ops.on_head(hc, resp) -> HTTPC_READ_BODY
 *     ... ops.on_body(hc, bytes)* -> ops.on_done(hc, reusable)
 *     httpc_request(...) again if reusable, or httpc_close(hc)
 *     ... ops.on_close(hc, why) once, then hc is freed
 */
#ifndef CORE_HTTPC_H
#define CORE_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/conn.h"
#include "common/http.h"

struct core_loop;
struct evbuffer;
struct httpc;

enum httpc_state {
    HTTPC_CONNECTING = 0,
    HTTPC_IDLE,      /* connected, no request in flight */
    HTTPC_WAIT_HEAD, /* request sent, waiting for the response head */
    HTTPC_BODY,      /* response body arriving */
};

enum httpc_failure {
    HTTPC_OK = 0,
    HTTPC_CONNECT_FAILED, /* connect refused / timed out */
    HTTPC_BAD_RESPONSE,   /* malformed head or chunked coding, head over max_head */
    HTTPC_UNEXPECTED,     /* bytes arrived with no request in flight */
};

/* on_head's answer. */
enum httpc_head_action {
    HTTPC_READ_BODY = 0, /* stream the body to on_body */
    HTTPC_SKIP_BODY = 1, /* read and discard it (on_done still follows) */
    HTTPC_CLOSE = -1,    /* close the connection now */
};

struct httpc_ops {
    /* The connect finished (optional). ok false: on_close follows. */
    void (*on_connect)(struct httpc *hc, bool ok);
    /* A final response head (status >= 200). resp points into the input
     * and is valid only during the call; hc->status/body/keep_alive are set. */
    enum httpc_head_action (*on_head)(struct httpc *hc, struct http_msg *resp);
    /* Body bytes in data (take them: evbuffer_add_buffer / remove; what is
     * left is dropped). Decoded payload, or the bytes as framed on the wire
     * when hc->raw_body is set. */
    void (*on_body)(struct httpc *hc, struct evbuffer *data);
    /* The response is complete. reusable: the connection may carry another
     * request (keep-alive, framing known, nothing extra buffered). Call
     * httpc_request or httpc_close (or keep it idle). */
    void (*on_done)(struct httpc *hc, bool reusable);
    /* The output buffer went empty (optional): more request body may go. */
    void (*on_drained)(struct httpc *hc);
    /* Called once, just before hc is freed (not for a NULL httpc_connect).
     * hc->state and hc->failure tell what was in progress. */
    void (*on_close)(struct httpc *hc, enum conn_close_reason why);
};

struct httpc {
    struct core_conn *c;
    void *data; /* the user's */
    const struct httpc_ops *ops;
    enum httpc_state state;
    enum httpc_failure failure;
    /* settings */
    uint32_t read_ms, write_ms; /* timeouts once connected (0 = none) */
    size_t max_head;            /* 0 = HTTP_DEFAULT_MAX_HEAD */
    bool raw_body;              /* on_body gets chunk framing as received */
    /* the response in progress */
    enum http_method req_method;
    int status;
    enum http_body body;
    uint64_t remaining; /* Content-Length bytes still to come */
    bool keep_alive;    /* the response allows reuse */
    bool skip_body;
    uint64_t requests; /* sent on this connection */
    /* private */
    struct http_chunked chunk;
    bool in_connect;
};

/* Start connecting; connect_ms bounds the connect (0 = none). Returns NULL
 * if it could not start or failed at once: then no callback was called and
 * there is nothing to free. Bytes may be sent before the connect finishes. */
struct httpc *httpc_connect(struct core_loop *loop, const struct sockaddr *sa, socklen_t salen, uint32_t connect_ms,
                            const struct httpc_ops *ops, void *data);
/* The same to a host name (or numeric address) and port, resolved without
 * blocking (common/conn's evdns); a name that does not resolve is a failed
 * connect (on_connect(false)). */
struct httpc *httpc_connect_host(struct core_loop *loop, const char *host, int port, uint32_t connect_ms,
                                 const struct httpc_ops *ops, void *data);
/* An httpc over an already connected socket (a socketpair to a child
 * process, say); the callee owns fd. State HTTPC_IDLE at once (on_connect is
 * not called). NULL on failure (fd closed, nothing called). Set read_ms /
 * write_ms and call conn_set_timeouts(hc->c, ...) yourself if wanted. */
struct httpc *httpc_wrap(struct core_loop *loop, int fd, const struct httpc_ops *ops, void *data);
/* Send a request head (and any body bytes) from req (emptied) and expect
 * its response. method: the request's (HEAD and CONNECT change framing). */
void httpc_request(struct httpc *hc, enum http_method method, struct evbuffer *req);
/* More request body bytes (emptied). */
void httpc_send(struct httpc *hc, struct evbuffer *bytes);
/* Back-pressure: stop / resume reading the response. */
void httpc_pause(struct httpc *hc);
void httpc_resume(struct httpc *hc);
/* Close now (pending output dropped); on_close follows (deferred if inside
 * a callback). */
void httpc_close(struct httpc *hc);
/* Free the calling thread's scratch buffer (at loop thread exit). */
void httpc_thread_exit(void);
/* Bytes queued towards the server. */
size_t httpc_output_pending(struct httpc *hc);

#endif
