/* pool: backend connection pools, protocol-agnostic.
 *
 * What it owns: the bookkeeping between requests that need a backend
 * connection and the connections themselves, on one loop —
 *  - idle (connected, free) members, most recently used first;
 *  - waiters queued by priority (POOL_PRIOS levels, 0 = highest), FIFO
 *    within a level (a retried request may go to the front);
 *  - connects in flight, opened as waiters need them plus connect_ahead
 *    spare ones, bounded by max_pending, and all members by max_members
 *    (then waiters queue until one is free: a router multiplexing many
 *    clients over few server connections);
 *  - nodes (backend addresses) with dead marking: a failed connect marks
 *    its node dead for dead_ms; pool_pick skips dead nodes, so they come
 *    back by themselves.
 *
 * What it must not do: open sockets or speak a protocol. The user's
 * pool_ops open a connection (HTTP, MySQL, ...), hand a ready member to a
 * waiter, answer a waiter that cannot be served, and close members the pool
 * does not want. The user embeds struct pool_member in its backend
 * connection and struct pool_waiter in its request (container_of style).
 *
 * Threading: a struct pool belongs to one loop and is touched only from
 * that loop's thread (one pool per loop per user: e.g. per service per
 * loop). Nodes are shared by every loop: their fields are atomics.
 *
 * Life of a member: ops->connect() starts it (pending); when it is connected
 * the user calls pool_ready() (a waiter gets it through ops->assign, or it
 * goes idle, or ops->close is asked to close it); after a request is done and
 * the connection is reusable, pool_ready() again; when its connection closes
 * for any reason, pool_gone() (from the close callback). pool_take_idle()
 * takes an idle one directly. */
#ifndef CORE_POOL_H
#define CORE_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define POOL_PRIOS 3        /* 0 high, 1 normal, 2 low */
#define POOL_DEAD_MS 2000   /* default time a node stays dead after a failed connect */
#define POOL_MAX_PENDING 64 /* default bound on connects in flight per pool */

/* A backend address, shared by every loop (all fields atomic after init). */
struct pool_node {
    char name[80]; /* canonical "ip:port", "[ipv6]:port" or "host:port" */
    struct sockaddr_storage sa;
    socklen_t salen;               /* 0 for a node given by name (host below) */
    char host[64];                 /* a DNS name (pool_node_init_host), resolved at each
                                    * connect (conn_connect_host); "" for an address */
    int port;                      /* the port, either way */
    _Atomic uint64_t used;         /* requests sent to it (the user counts) */
    _Atomic uint64_t connects;     /* connections opened (the user counts) */
    _Atomic uint64_t failures;     /* failed connects (pool_gone counts) and other failures */
    _Atomic int64_t dead_until_ms; /* skipped by pool_pick until then (monotonic ms) */
    _Atomic int64_t mark_until_ms; /* a second mark for the user (perlbal: no verify until) */
    _Atomic bool removed;          /* left its list: idle members to it are closed */
};

/* Parse "ip:port", "[v6]:port" or "ip" (default_port) into n (zeroed first);
 * n->name gets the canonical form. "localhost" means 127.0.0.1. Returns 0,
 * or -1 for anything else (no DNS here: see the README). */
int pool_node_init(struct pool_node *n, const char *spec, int default_port);
/* The same, and a host name ("db1.example.com:3306", letters, digits, '-'
 * and '.', at least one letter, < 64 bytes) is accepted too: n->host and
 * n->port are set, salen is 0, and the user connects by name without
 * blocking (conn_connect_host / httpc_connect_host), so a DNS change is
 * seen at the next connect. A numeric address fills sa as above. */
int pool_node_init_host(struct pool_node *n, const char *spec, int default_port);
/* Monotonic milliseconds (the clock of dead_until_ms). */
int64_t pool_now_ms(void);
/* Mark n dead for ms (a failure seen by the user outside a connect). */
void pool_node_dead(struct pool_node *n, int64_t ms);
bool pool_node_alive(const struct pool_node *n, int64_t now_ms);
/* A random live node of nodes[0..n), or NULL when all are dead. The caller
 * guards the array itself. */
struct pool_node *pool_pick(struct pool_node *const *nodes, int n);

struct pool;

struct pool_member {        /* embed in the backend connection */
    struct pool_node *node; /* set by ops->connect */
    /* private */
    struct pool_member *next, *prev;
    bool idle, pending, counted;
};

struct pool_waiter {  /* embed in the request */
    int prio;         /* read-only while queued */
    int64_t since_ms; /* when it was queued */
    /* private */
    struct pool_waiter *next, *prev;
    bool queued;
};

struct pool_ops {
    /* Start one new connection (choose a node: pool_pick on your list).
     * Return its member (m->node set), or NULL if none can be started now.
     * Must not call back into the pool synchronously. */
    struct pool_member *(*connect)(struct pool *p);
    /* m (ready) now serves w; both have left the pool's lists. */
    void (*assign)(struct pool *p, struct pool_member *m, struct pool_waiter *w);
    /* Nothing can serve w (no member idle or connecting, no node could be
     * tried): w has left the queue; answer it (e.g. 503). */
    void (*fail)(struct pool *p, struct pool_waiter *w);
    /* Close m (the pool does not keep it); pool_gone follows from the
     * user's close callback, or may be called from inside this. */
    void (*close)(struct pool *p, struct pool_member *m);
    /* Optional: how many idle members to keep now (default: connect_ahead,
     * at least 1). Return 0 to keep none. */
    int (*idle_keep)(struct pool *p);
    /* Optional: is this idle member still usable (e.g. its socket is not
     * closing)? Unusable ones are skipped by pool_take_idle. */
    bool (*usable)(struct pool *p, struct pool_member *m);
};

struct pool {
    const struct pool_ops *ops;
    void *data; /* the user's */
    /* settings (change any time) */
    int connect_ahead; /* spare connections to keep opening */
    int max_pending;   /* 0 = POOL_MAX_PENDING */
    int dead_ms;       /* 0 = POOL_DEAD_MS */
    int max_members;   /* bound on members (connecting + idle + in use); 0 = none.
                        * At the bound no connect starts and waiters wait for
                        * a member to come back (pool_ready) instead of failing */
    bool stopping;     /* set while the daemon stops: no new connects, no idle kept */
    /* state (read-only for the user) */
    int nidle, pending, nwaiting;
    int nmembers; /* started by ops->connect and not yet gone */
    int qlen[POOL_PRIOS];
    /* private */
    struct pool_member *idle;
    struct pool_waiter *head[POOL_PRIOS], *tail[POOL_PRIOS];
};

void pool_init(struct pool *p, const struct pool_ops *ops, void *data);
/* w wants a member: an idle one is assigned at once (ops->assign, before
 * this returns) unless higher-or-equal priority waiters are queued; else w
 * is queued (at the front of its level when front) and connects start. A
 * prio 0 waiter may take an idle member even with others queued. */
void pool_request(struct pool *p, struct pool_waiter *w, int prio, bool front);
/* Remove w from the queue (no-op if not queued). */
void pool_cancel(struct pool *p, struct pool_waiter *w);
bool pool_queued(const struct pool_waiter *w);
/* How long the oldest waiter of level prio has waited (0 if none). */
int64_t pool_queue_age_ms(const struct pool *p, int prio, int64_t now_ms);
/* First waiter (highest priority, oldest) or NULL. */
struct pool_waiter *pool_first_waiter(struct pool *p);
/* m is connected and free: the first waiter gets it, or it is kept idle,
 * or closed (node removed, enough idle, stopping). */
void pool_ready(struct pool *p, struct pool_member *m);
/* Take an idle usable member (leaves the idle list) or NULL. */
struct pool_member *pool_take_idle(struct pool *p);
/* m's connection closed (call once, from its close callback). failed:
 * the connect itself failed (its node is marked dead and counted). Opens
 * new connects if waiters remain; fails them when nothing can be tried. */
void pool_gone(struct pool *p, struct pool_member *m, bool failed);
/* Open connects for waiters (e.g. once a second, after nodes came back). */
void pool_kick(struct pool *p);
/* Fail every waiter (ops->fail) and close every idle member. */
void pool_drain(struct pool *p);

#endif
