/* conn: one connection over a libevent bufferevent.
 *
 * Owns the bufferevent, the idle and write timeouts, the output high-water
 * mark (reading pauses while a client doesn't read its replies), close after
 * write, and the connection counters. It knows nothing of protocols: the
 * daemon's conn_ops parse conn_in() and append replies to conn_out().
 *
 * A conn lives on one loop and is touched only from that loop's thread. */
#ifndef CORE_CONN_H
#define CORE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct bufferevent;
struct event;
struct evbuffer;
struct evbuffer_cb_entry;
struct core_loop;
struct core_conn;

enum conn_close_reason {
    CONN_CLOSE_LOCAL = 0, /* conn_close() or close after write */
    CONN_CLOSE_EOF,       /* peer closed */
    CONN_CLOSE_ERROR,     /* socket error / connect failed */
    CONN_CLOSE_TIMEOUT,   /* idle or write timeout */
    CONN_CLOSE_SHUTDOWN,  /* daemon stopping */
};

struct conn_ops {
    const char *name;
    /* New bytes are in conn_in(c). Consume what can be handled; leave a
     * partial request in place. Return 0 to go on, -1 to close at once. */
    int (*on_read)(struct core_conn *c);
    /* The output buffer went empty (optional): after the write that
     * emptied it, whichever wrote it (the write event, the end-of-iteration
     * write, or conn_write_now taking all of it at once). Always from the
     * loop, never inside the call that wrote. */
    void (*on_drained)(struct core_conn *c);
    /* Outgoing connect finished (conn_connect only); ok false = failed
     * (on_close follows). */
    void (*on_connect)(struct core_conn *c, bool ok);
    /* The peer closed its side (optional). Return true to close now
     * (pending output dropped), false for the default: replies already
     * queued, and those of a busy conn, still go out, then it closes. */
    bool (*on_eof)(struct core_conn *c);
    /* Called once, just before the conn is freed. Release c->data here. */
    void (*on_close)(struct core_conn *c, enum conn_close_reason why);
    /* The TLS handshake begun by conn_start_tls finished (optional); ok
     * false = failed (conn_error_str says why; on_close follows). */
    void (*on_tls)(struct core_conn *c, bool ok);
};

struct core_conn {
    struct core_loop *loop;
    struct bufferevent *bev;
    const struct conn_ops *ops;
    void *data; /* the daemon's per-connection state */
    int fd;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint64_t id; /* process-unique */
    uint64_t bytes_in;
    uint64_t requests; /* the daemon counts its requests here */
    double created;    /* wall time */
    /* private */
    uint32_t flags;
    uint32_t idle_ms, write_ms;
    size_t out_limit;
    size_t in_left;                    /* input left unconsumed after on_read */
    struct event *rev;                 /* own read event (plain sockets) */
    struct core_conn *next, *prev;     /* per-loop list */
    int last_error;                    /* errno of the last socket error */
    struct conn_dial *dial;            /* conn_connect_host: the addresses to try */
    struct event *defer;               /* deferred settle (conn_set_busy / close after write from outside) */
    struct event *wretry;              /* a sendfile write that found no room: try again shortly */
    uint32_t wstalls;                  /* such writes in a row without a byte sent */
    size_t wstall_left;                /* output length at the last one */
    struct core_conn *fnext, *fprev;   /* the loop's end-of-iteration I/O queue */
    struct evbuffer_cb_entry *out_cbe; /* plain sockets: output added -> written at the iteration's end */
};

/* Wrap an accepted (or otherwise connected) socket. Returns NULL on failure
 * (fd is closed). Reading starts at once. */
struct core_conn *conn_new(struct core_loop *loop, int fd, const struct sockaddr *peer, socklen_t peer_len,
                           const struct conn_ops *ops, void *data);
/* Wrap an existing bufferevent (e.g. OpenSSL). The conn owns it. */
struct core_conn *conn_new_bev(struct core_loop *loop, struct bufferevent *bev, const struct sockaddr *peer,
                               socklen_t peer_len, const struct conn_ops *ops, void *data);
/* Start a non-blocking outgoing connection; ops->on_connect reports.
 * Contract: a NULL return means nothing happened — no callback of ops was
 * or will be called, data is still the caller's (errno says why). A
 * non-NULL return means exactly one on_connect(ok) follows (unless the
 * caller closes it first), and on_close once at the end, as for any conn. */
struct core_conn *conn_connect(struct core_loop *loop, const struct sockaddr *sa, socklen_t salen,
                               const struct conn_ops *ops, void *data);
/* The same to a host name (or numeric address) and port, resolved without
 * blocking (evdns, one resolver per loop: /etc/hosts, resolv.conf, and the
 * hosts file named by $CORE_HOSTS_FILE if set), then connecting to each
 * address in turn until one answers (a refused or timed-out address moves
 * on to the next; the write timeout of conn_set_timeouts bounds each try).
 * A name that does not resolve, or no address answering, is one
 * on_connect(false) with conn_error_str saying why. Same contract. */
struct core_conn *conn_connect_host(struct core_loop *loop, const char *host, int port, const struct conn_ops *ops,
                                    void *data);
/* Why the last connect/handshake/socket error happened, for logs:
 * "Connection refused", "nodename nor servname provided...",
 * "certificate verify failed: hostname mismatch". */
const char *conn_error_str(struct core_conn *c, char *buf, size_t len);

/* STARTTLS: upgrade a live plain connection to TLS in place (XMPP, SMTP
 * style). ssl_ctx is from tls_server_ctx_new (server = true) or
 * tls_client_ctx_new (server = false; server_name is sent as SNI and, when
 * the context verifies, checked against the certificate). Call it from
 * on_read right after consuming the command that starts TLS: bytes already
 * received behind that command are the peer's first TLS bytes and are fed
 * to the handshake; replies already queued (the "proceed") go out in
 * plain text before the first TLS byte. From then on conn_in/conn_out
 * carry plaintext as before and on_tls reports the handshake. Returns 0,
 * or -1 (already TLS, still connecting, or out of memory: the conn is
 * unchanged). */
int conn_start_tls(struct core_conn *c, void *ssl_ctx, bool server, const char *server_name);
/* True once the conn runs over TLS (accepted TLS or after conn_start_tls). */
bool conn_is_tls(const struct core_conn *c);
/* The OpenSSL handle (SSL *) of a TLS conn, for what the core does not
 * wrap (tls-unique channel binding, peer certificate, ALPN); NULL for a
 * plain conn. Valid until the conn is freed; do not free it. */
struct ssl_st *conn_ssl(const struct core_conn *c);

static inline struct evbuffer *conn_in(struct core_conn *c);
static inline struct evbuffer *conn_out(struct core_conn *c);

/* When a conn may be freed.
 *
 * Inside one of its own ops callbacks (on_read, on_drained, on_connect,
 * on_eof, on_tls) a conn is never freed: conn_close and friends only mark
 * it, and it goes when the callback returns.
 *
 * Outside them — a timer, a loop_call, a work_post/work_submit completion,
 * another conn's callback — only conn_close() frees at once (on_close runs
 * before it returns: do not touch c after it). conn_set_busy(c, false) and
 * conn_close_after_write(c) never free under their caller: whatever closing
 * they lead to happens from the loop after the caller returns, so the
 * pattern
 *
 *     evbuffer_add(conn_out(c), reply, n);   // in a work completion
 *     conn_set_busy(c, false);
 *     c->requests++;                          // c is still valid here
 *
 * is safe. The caller's own state must stay valid until on_close. */

/* Free now: pending output is dropped. Safe to call from inside on_read
 * (the free is deferred until on_read returns). */
void conn_close(struct core_conn *c);
/* Stop reading; free once the output buffer has been written (busy or not).
 * After the peer's EOF the core closes the same way on its own, except that
 * it also waits for a busy conn to become idle, so later replies still go.
 * Never frees under its caller (see above). */
void conn_close_after_write(struct core_conn *c);
/* Milliseconds; 0 = none. Idle: nothing read for that long. Write: output
 * pending and not moving for that long. */
void conn_set_timeouts(struct core_conn *c, uint32_t idle_ms, uint32_t write_ms);
/* Pause reading while output exceeds bytes (0 = no limit); resumes at half. */
void conn_set_output_limit(struct core_conn *c, size_t bytes);
void conn_pause_read(struct core_conn *c);
void conn_resume_read(struct core_conn *c);
/* Re-run on_read on data already buffered (after resuming a paused conn). */
void conn_kick(struct core_conn *c);
/* Append src (emptied) to the output; when nothing is queued yet on a plain
 * socket, writev() it first and queue only what the kernel did not take,
 * saving the write-event round trip. Returns the bytes written directly.
 * When that write took everything, on_drained follows from the loop after
 * the caller returns (never inside this call).
 * With io_uring on (STACK_IO_URING=1) it only queues: the loop's batch
 * sends it at the end of the iteration with the other conns' output.
 *
 * Output on a plain socket (appended with conn_write_now or straight to
 * conn_out) is written at the end of the loop iteration that produced it,
 * one write per conn (or one io_uring batch for all of them); only what
 * the kernel does not take waits for the socket's write event. */
size_t conn_write_now(struct core_conn *c, struct evbuffer *src);
/* True when this conn's output is sent by its loop's io_uring batch at the
 * end of the iteration (STACK_IO_URING=1, plain socket): a daemon that
 * writes flat replies with its own send() should append them to
 * conn_out() instead, so they join the batch. */
bool conn_io_batched(const struct core_conn *c);
/* This loop's io_uring batches so far (io_uring_enter calls) and the
 * socket operations they carried; both 0 when the loop has no ring. */
void conn_loop_io_counters(const struct core_loop *loop, uint64_t *batches, uint64_t *ops);
/* A busy conn has a request in flight with no bytes buffered (e.g. waiting on a
 * worker); a graceful stop waits for it instead of closing it as idle.
 * Clearing it may lead to a close (after EOF, close after write, graceful
 * stop): that happens from the loop, never under the caller (see above). */
void conn_set_busy(struct core_conn *c, bool busy);
bool conn_is_closing(const struct core_conn *c);
/* "1.2.3.4:5678", "[::1]:80", "unix". */
const char *conn_peer_str(const struct core_conn *c, char *buf, size_t len);

/* Counters (all loops). */
uint64_t conn_total_current(void);
uint64_t conn_total_accepted(void);
/* Connections on one loop (used by the graceful stop). */
uint64_t conn_loop_current(const struct core_loop *loop);
/* Graceful stop on this loop: close idle conns now; others close after
 * their output drains and they are no longer busy. */
void conn_shutdown_loop(struct core_loop *loop);
/* Free every conn on this loop at once (end of grace period). */
void conn_close_all_on_loop(struct core_loop *loop);
/* Release the loop's resolver (loop_free, after the conns are gone). */
void conn_loop_cleanup(struct core_loop *loop);

/* Inline accessors. */
#include <event2/bufferevent.h>
static inline struct evbuffer *conn_in(struct core_conn *c) { return bufferevent_get_input(c->bev); }
static inline struct evbuffer *conn_out(struct core_conn *c) { return bufferevent_get_output(c->bev); }

#endif
