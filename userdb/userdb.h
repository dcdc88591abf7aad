/* userdb: shared types of userdbd, the user-cluster MySQL-protocol router.
 *
 * The daemon runs on one event loop (see README "Threading"): sessions,
 * backend connections, pools, the topology and the directory cache are all
 * touched from that loop's thread only, so nothing here is locked. */
#ifndef UD_USERDB_H
#define UD_USERDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "common/pool.h"
#include "userdb/proto_mysql.h"

struct evbuffer;
struct core_loop;
#define UD_VERSION "0.1.0"
/* Sent to clients: the global server's own version (drivers branch on
 * "MariaDB" in it) with "-userdb" appended; this until it is known. */
#define UD_SERVER_VERSION "10.11.0-MariaDB-userdb"
extern char ud_server_version[96];
#define UD_DEFAULT_PORT 7010
#define UD_MAX_CLUSTERS 32
#define UD_MAX_REPLICAS 16
#define UD_MAX_DEFAULTS 64
#define UD_MAX_USER_TABLES 64
#define UD_MAX_ROUTE_REFRESHES 8 /* directory re-asks for one write that kept waiting */
/* Connections per server beyond pool_max that only userdbd's own queries
 * (directory, counters, lag) may open, so clients pinning every pooled
 * connection can't starve the directory. */
#define UD_INTERNAL_RESERVE 2

/* conn_set_timeouts(c, 0, ..) does not take an idle timeout off a live
 * conn (the core re-adds its read event with a NULL timeout, which libevent
 * treats as "keep the old one"), so "no idle timeout" is asked for as one
 * too long to matter (24 days). Reported to the core's owner. */
#define UD_FOREVER_MS 0x7fffffffu
#define UD_IDLE_MS(ms) ((ms) ? (uint32_t)(ms) : UD_FOREVER_MS)

struct core_conn;
struct ud_backend;
struct ud_sess;

/* ---- topology (topology.c) ------------------------------------------------- */

/* DBI-style DSN: DBI:mysql:database=D;host=H;port=P or ;mysql_socket=S,
 * plus ;weight=W for replicas. */
struct ud_dsn {
    char host[256];
    int port;
    char socket[256];
    char database[65];
    int weight;
};
int ud_dsn_parse(const char *s, struct ud_dsn *out, char *err, size_t errlen);

enum ud_role { UD_ROLE_GLOBAL = 0, UD_ROLE_MASTER, UD_ROLE_REPLICA };

/* Someone waiting for a backend connection of one server. ready() gets a
 * connection lent to it, or NULL and a reason. */
struct ud_waiter {
    struct pool_waiter pw; /* in its server's pool */
    struct ud_server *server;
    bool internal; /* userdbd's own query: front of the queue, may use the reserve */
    void (*ready)(struct ud_waiter *w, struct ud_backend *b, const char *err);
};

struct ud_server {
    char name[32]; /* "global", "c1a", "c1b", "c1r0" ... */
    char dsn_text[512];
    struct ud_dsn dsn;
    enum ud_role role;
    int cluster;
    int weight, cw; /* smooth weighted round robin */
    bool retired;   /* gone from the config: no new leases */
    /* health: a failed connect marks node dead (ud_server_dead) */
    int lag;            /* replicas: seconds behind, -1 unknown/stopped */
    uint64_t lag_at_ms; /* when lag was measured */
    bool lag_checking;
    /* pool (common/pool, this loop's): pool.nmembers connections, pool.nidle
     * idle, pool.pending connecting, pool.nwaiting waiting */
    struct pool pool;
    struct pool_node node; /* only its name, counters and dead mark are used */
    /* counters */
    uint64_t n_routed, n_leases, n_connects, n_connect_fail, n_waits, n_wait_full;
    struct ud_server *next_all;
    struct sockaddr_storage *addr;
    unsigned addr_len;
};

struct ud_cluster {
    int id;
    struct ud_server *master[2]; /* a, b */
    int nmasters;
    int active; /* 0 = a, 1 = b */
    struct ud_server *replica[UD_MAX_REPLICAS];
    int nreplicas;
    bool readonly;
};

struct ud_user_table {
    char table[65];
    char column[65];
};

struct ud_topology {
    struct ud_server *global;
    struct ud_cluster cluster[UD_MAX_CLUSTERS + 1]; /* by id; used when nmasters > 0 */
    int def_cluster[UD_MAX_DEFAULTS], def_weight[UD_MAX_DEFAULTS], def_cw[UD_MAX_DEFAULTS];
    int ndefaults;
};

/* Build the topology from the staged settings (start-up and reload);
 * returns 0 or -1 with err (the running topology is kept then). */
int ud_topology_apply(char *err, size_t errlen);
struct ud_cluster *ud_cluster_get(int id);
/* Choose for a cluster (0 = global): the active master, or for reads a
 * fresh live replica by weight (else the master). */
struct ud_server *ud_pick_server(int cluster, bool read);
/* Weighted choice among default_clusters for a new user; 0 if none. */
int ud_pick_default_cluster(void);
void ud_topology_free(void);
/* "1:a,2:b" from the global clusterstate table: set the active sides. */
void ud_apply_cluster_state(const char *s, unsigned gen);
/* Flip a pair: memory now, the global database after; 0 or -1. */
int ud_flip(int cluster);
extern unsigned ud_state_gen;

/* ---- backends and pools (backend.c) ---------------------------------------- */

enum ud_bstate { UB_CONNECTING = 0, UB_HANDSHAKE, UB_AUTH, UB_IDLE, UB_SYNC, UB_FORWARD, UB_INTERNAL };

struct ud_iq;

struct ud_backend {
    struct core_conn *c;
    struct ud_server *srv;
    struct pool_member m; /* in srv->pool */
    enum ud_bstate state;
    bool failed;           /* the connect or login failed */
    struct ud_sess *owner; /* the session it is lent to */
    struct ud_iq *iq;      /* or the internal query using it */
    char db[65];
    int autocommit;
    int multi; /* CLIENT_MULTI_STATEMENTS on (1) or off (0) */
    struct ud_resp resp;
    bool relayed;        /* bytes of this reply already went to the client */
    bool paused;         /* reading paused: the client is not reading */
    int sync_steps;      /* internal commands in flight before the client's */
    uint8_t pending_cmd; /* the client's command waiting behind the sync */
    uint32_t thread_id;  /* the server's id for this connection (for KILL) */
};

/* Lend w a connection of srv (now, or later through w->ready). */
void ud_pool_lease(struct ud_server *srv, struct ud_waiter *w);
/* Stop waiting (session closed). */
void ud_pool_cancel(struct ud_waiter *w);
/* Give a lent connection back: it goes to the next waiter or the idle list. */
void ud_pool_release(struct ud_backend *b);
/* Close a lent connection (its state can't be reused). */
void ud_backend_discard(struct ud_backend *b);
/* Bring the connection to (db, autocommit), then write the command packet
 * (whole, header included) held in cmd and relay its reply to b->owner. */
void ud_backend_forward(struct ud_backend *b, const char *db, int autocommit, int multi, struct evbuffer *cmd,
                        uint8_t command);
/* Resume relaying after the client's output drained. */
void ud_backend_resume(struct ud_backend *b);
void ud_pool_close_idle(struct ud_server *srv);
/* Set up a new server's pool; apply pool_max/dead_retry to it (reload). */
void ud_server_pool_init(struct ud_server *srv);
void ud_server_pool_settings(struct ud_server *srv);
/* A connect to it failed within dead_retry seconds. */
bool ud_server_dead(struct ud_server *srv);
/* Gone from the config: no new leases, waiters and idle connections go. */
void ud_server_retire(struct ud_server *srv);

/* An internal query on some server: result of at most one row. */
struct ud_iq {
    struct ud_waiter w;
    char sql[1024];
    void (*done)(struct ud_iq *q);
    void *arg;
    /* result */
    bool error;
    uint16_t err_code;
    char err[256];
    uint64_t affected, insert_id;
    int ncols, nrows;
    char *col[64];
    char *val[64]; /* first row; NULL = SQL NULL */
    struct ud_backend *b;
};
/* Run sql (copied) on srv; done(q) runs on the loop; q is freed after it. */
int ud_iq_run(struct ud_server *srv, const char *sql, void (*done)(struct ud_iq *q), void *arg);
/* The first row's value of a named column, or NULL. */
const char *ud_iq_value(const struct ud_iq *q, const char *col);

/* ---- sessions (session.c) ---------------------------------------------------- */

void ud_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void ud_reject(int fd, void *arg);
/* Called by backend.c. */
void ud_sess_reply_done(struct ud_sess *s, struct ud_backend *b, bool error);
void ud_sess_backend_lost(struct ud_sess *s, struct ud_backend *b);
struct core_conn *ud_sess_conn(struct ud_sess *s);
void ud_sess_send_error(struct ud_sess *s, uint8_t seq, uint16_t code, const char *state, const char *msg);

/* ---- directory (directory.c) ------------------------------------------------- */

struct ud_dir_entry {
    uint32_t userid;
    int cluster; /* 0 = no such user */
    bool readonly;
    uint64_t expires_ms;
};

/* Look a user up (cache, else the global database); cb runs with the entry
 * (cluster 0 = no such user) or an error text. */
typedef void (*ud_dir_fn)(void *arg, const struct ud_dir_entry *e, const char *err);
void ud_dir_lookup(uint32_t userid, ud_dir_fn cb, void *arg);
void ud_dir_invalidate(uint32_t userid);
void ud_dir_clear(void);
size_t ud_dir_size(void);
/* Blocking schema creation at start-up (libmariadb). */
int ud_dir_create_schema(char *err, size_t errlen);
extern const char ud_dir_schema[];

/* ---- settings and counters (userdbd.c) ---------------------------------------- */

struct ud_settings {
    char *listen;
    char *client_user;
    char *backend_user;
    int max_lag;
    int pool_max;
    int max_waiters;
    double directory_ttl;
    double dead_retry;
    int connect_timeout_ms;
    uint64_t max_packet;
    int max_conns;
    int idle_timeout;
    int login_timeout;
    int dir_cache_max;
};
extern struct ud_settings ud_cfg;
/* Secrets are kept apart from the settings table so that `show settings`
 * never prints them. */
extern char *ud_client_password;
extern char *ud_backend_password;

struct ud_counters {
    uint64_t sessions, sessions_total, auth_failures;
    uint64_t queries, queries_hinted, queries_read, queries_write, queries_replica;
    uint64_t errors_sent, readonly_refused, route_refreshes, protocol_errors, pinned_sessions;
    uint64_t users_created, counters_issued, dir_hits, dir_misses;
    uint64_t backend_lost;
};
extern struct ud_counters ud_n;
extern struct ud_topology *ud_topo;
extern struct ud_server *ud_all_servers;
extern struct ud_user_table ud_user_tables[UD_MAX_USER_TABLES];
extern int ud_nuser_tables;

uint64_t ud_now_ms(void);
void ud_admin_install(void);
int ud_reload(char *err, size_t errlen);

#endif
