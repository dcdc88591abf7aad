/* listen: TCP and unix listening sockets and the max-connections gate.
 *
 * A TCP listener opens one socket per loop with SO_REUSEPORT, so the kernel
 * spreads new connections over the loops and accept() needs no hand-over.
 * SO_REUSEPORT stays inside the process: a port another process holds is
 * refused ("Address already in use"), as memcached and nginx do, unless
 * the caller opts in to sharing (listen_opts.reuseport).
 * A unix-socket listener is accepted on loop 0 and, when there are several
 * loops, handed round-robin to the others. Its path is replaced only if it
 * is a stale socket (nobody answers); a live socket or any other file
 * there is an error. Closing removes the socket file if it is still ours.
 *
 * Listeners open and close at any time, from any thread: the sockets are
 * bound at once (errors come back from listen_open), then each is watched
 * by its own loop.
 *
 * Out of file descriptors (EMFILE/ENFILE), a listening socket closes its
 * spare descriptor (one /dev/null per socket, held from the start),
 * accepts the waiting connection and closes it at once (after reading
 * what the client already sent, so that it sees a close, not a reset), so
 * the client is told at once instead of hanging in the backlog, then
 * opens the spare again. Without a spare (it could not be had back, or ENOBUFS /
 * ENOMEM) it stops accepting for 100 ms instead of spinning.
 * listen_fd_exhausted() counts the accepts that failed so (memcached's
 * accept_fd_exhausted in the stats); the log says so at most once a
 * minute.
 *
 * The gate: once conn_total_current() reaches the limit, new connections are
 * accepted, given to the reject callback (to send the protocol's "too many
 * connections" error), and closed. */
#ifndef CORE_LISTEN_H
#define CORE_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct core_loop;
struct core_listener;

/* Called on the loop that owns the new fd. The callee owns fd. */
typedef void (*listen_accept_fn)(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
/* Called on a rejected fd before it is closed; write a short error with send(). */
typedef void (*listen_reject_fn)(int fd, void *arg);

struct listen_opts {
    int backlog;           /* 0 = 1024 */
    bool single_loop;      /* accept on loop 0 only (no reuseport fan-out) */
    int unix_mask;         /* permissions for a unix socket, 0 = 0700 */
    bool is_admin;         /* console listeners skip the max-connections gate */
    bool loopback_default; /* a spec without a host ("11211", ":11211") binds
                            * 127.0.0.1, not every interface (consoles, metrics) */
    bool reuseport;        /* share the port with other processes (opt-in) */
};

/* spec: "host:port", "[v6]:port", "*:port", ":port", "port", or
 * "unix:/path" or "/path" (unix socket). default_port is used if the spec has
 * no port. Returns NULL with a message in err. Call after loop_init(),
 * before or while the loops run (a host name is resolved with a blocking
 * lookup: use numeric addresses at run time). */
struct core_listener *listen_open(const char *spec, int default_port, const struct listen_opts *opts,
                                  listen_accept_fn on_accept, listen_reject_fn on_reject, void *arg, char *err,
                                  size_t errlen);
/* The port actually bound (for "port 0"), 0 for unix sockets. */
int listen_port(const struct core_listener *l);
/* What it is bound to: "127.0.0.1:11211", "[::]:80", "unix:/run/x.sock". */
const char *listen_addr_str(const struct core_listener *l, char *buf, size_t len);
/* Stop accepting on l and free it (on its loops, soon after the call; do
 * not use l afterwards). Thread-safe; safe inside its own accept callback. */
void listen_close(struct core_listener *l);
/* Close every listener (graceful stop). Thread-safe. */
void listen_close_all(void);
/* One listening socket, as listen_foreach shows it. A TCP listener has one
 * socket per loop (the same address on each), a unix one a single socket. */
struct listen_info {
    const struct core_listener *l;
    int fd;
    int loop;                   /* index of the loop that accepts on it */
    bool is_unix;               /* else TCP (IPv4 or IPv6) */
    bool is_admin;              /* a console/metrics listener (listen_opts.is_admin) */
    listen_accept_fn on_accept; /* as given to listen_open: tells a daemon's own */
    void *arg;                  /* protocol listeners from the core's */
    char addr[128];             /* listen_addr_str: "127.0.0.1:11211", "unix:/run/x.sock" */
};
/* Call fn for every listening socket open now (memcached's `stats conns`),
 * from any thread. fn runs under the listeners' lock: it must not open or
 * close listeners. Returns how many sockets were shown. */
int listen_foreach(void (*fn)(const struct listen_info *li, void *arg), void *arg);
/* Accepts that failed for want of descriptors (or kernel memory). */
uint64_t listen_fd_exhausted(void);

/* 0 = unlimited. */
void listen_set_max_conns(uint64_t max);
uint64_t listen_max_conns(void);
uint64_t listen_rejected_conns(void);

/* Parse "host:port" etc. as above. Returns 0 or -1 with err. */
int listen_parse_addr(const char *spec, int default_port, struct sockaddr_storage *ss, socklen_t *len, char *err,
                      size_t errlen);

#endif
