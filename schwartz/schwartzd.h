/* schwartzd: TheSchwartz as a daemon — shared types.
 *
 * Threads: every connection and all session state live on loop 0. Each
 * configured database has an op queue and store threads, each owning one
 * connection (store.c: one for SQLite, db-connections for MySQL); sessions
 * hand them sw_op requests and get them back on loop 0 when the transaction
 * holding them has committed. The only state shared between threads is the
 * op queue of each store (its mutex), its atomic counters and dead-until
 * time, and the retry policy table (policy_mu). Lock order: a store's mu,
 * then policy_mu (never both held today). */
#ifndef SW_SCHWARTZD_H
#define SW_SCHWARTZD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/stats.h"

#define SW_VERSION "1.0.0"
#define SW_DEFAULT_PORT 7003
#define SW_MAX_LINE 8192
#define SW_MAX_DBS 16
#define SW_MAX_FUNCS 64         /* functions in one grab */
#define SW_MAX_MANY 1000        /* jobs in one insert_many / replace_with */
#define SW_MAX_GRAB 1000        /* jobs in one grab */
#define SW_MAX_NAME 255         /* funcname, uniqkey, coalesce: VARCHAR(255) */
#define SW_MAX_REPLY (8u << 20) /* grab/list stop adding jobs past this many bytes (one job always fits) */

/* ---- protocol (proto_sw.c, pure) ------------------------------------------- */

enum sw_cmd {
    SW_CMD_INSERT = 1,
    SW_CMD_INSERT_MANY,
    SW_CMD_GRAB,
    SW_CMD_COMPLETED,
    SW_CMD_FAILED,
    SW_CMD_DECLINED,
    SW_CMD_REPLACE_WITH,
    SW_CMD_LIST,
    SW_CMD_INSPECT,
    SW_CMD_STATUS,
    SW_CMD_POLICY,
    SW_CMD_FUNCMAP,
    SW_CMD_QUEUES,
    SW_CMD_STATS,
    SW_CMD_VERSION,
    SW_CMD_QUIT,
    SW_CMD_GRAB_JOB,
    SW_CMD_TOUCH,
};

enum sw_err {
    SW_OK = 0,
    SW_E_UNKNOWN_COMMAND,
    SW_E_BAD_ARGS,
    SW_E_LINE_TOO_LONG,
    SW_E_ARG_TOO_BIG,
    SW_E_BAD_DATA,
    SW_E_NOT_FOUND,
    SW_E_DUPLICATE,
    SW_E_NO_DATABASE,
    SW_E_DB_ERROR,
    SW_E_FAULT,
};
const char *sw_err_code(enum sw_err e);

/* An optional integer: set says whether it was given. */
struct sw_opt_int {
    bool set;
    int64_t v;
};

/* One parsed request line. Strings point into the (writable) line. */
struct sw_req {
    enum sw_cmd cmd;
    const char *func; /* insert, list, policy, job lines */
    const char *handle;
    const char *funcs[SW_MAX_FUNCS]; /* grab */
    int nfuncs;
    uint64_t count; /* insert_many/replace_with N, grab MAX */
    uint64_t grab_for;
    uint64_t bytes; /* data block that follows (insert, job lines) */
    bool has_block;
    const char *uniqkey, *coalesce, *coalesce_prefix, *message;
    struct sw_opt_int priority, run_after, floor, exit_status, max_retries, retry_delay, keep, limit;
    bool prioritize, permanent;
};

/* Parse one line (without terminator; line[len] must be writable). job_line:
 * parse "FUNC BYTES [opts]" (the lines after insert_many / replace_with).
 * Returns SW_OK or an error with a short reason in why. */
enum sw_err sw_parse_line(char *line, size_t len, bool job_line, uint64_t max_arg, struct sw_req *out,
                          const char **why);
/* Strict decimal parse of s into [min, max]. 0 ok, -1 bad. */
int sw_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* ---- DSNs ------------------------------------------------------------------------ */

struct db_config;
/* A TheSchwartz DSN ("dbi:SQLite:dbname=F", "dbi:mysql:database=D;host=H;
 * port=P;mysql_socket=S") into cfg through common/db's db_config_dsn, and
 * a mysql DSN must name its database. 0, or -1 + err. Free with
 * db_config_clear. (proto_sw.c) */
int sw_dsn_config(const char *dsn, struct db_config *cfg, char *err, size_t errlen);

/* ---- jobs and ops (store.c) ---------------------------------------------------- */

struct sw_jobspec {
    char *func;
    unsigned char *arg;
    size_t arglen;
    char *uniqkey;
    char *coalesce;
    struct sw_opt_int priority, run_after;
};

enum sw_op_kind {
    SW_OP_INSERT = 1, /* jobs[0..njobs) in one transaction -> ids */
    SW_OP_GRAB,
    SW_OP_COMPLETED,
    SW_OP_FAILED,
    SW_OP_DECLINED,
    SW_OP_REPLACE,
    SW_OP_LIST,
    SW_OP_INSPECT,
    SW_OP_STATUS,
    SW_OP_FUNCMAP,
    SW_OP_QUEUES,
    SW_OP_GRAB_JOB, /* one job by handle, if nobody holds it (TheSchwartz's grab_and_work_on) */
    SW_OP_TOUCH,    /* extend a lease that has not run out */
};

struct sw_qrow {
    char *func;
    uint64_t ready, running, failed;
};

struct evbuffer;
struct sw_store;

struct sw_op {
    enum sw_op_kind kind;
    struct sw_op *next;             /* store queue */
    struct sw_store *store;         /* where it ran */
    void (*done)(struct sw_op *op); /* on loop 0 */
    void *ctx;
    /* input */
    struct sw_jobspec *jobs;
    int njobs;
    uint64_t jobid;
    char **funcs;
    int nfuncs;
    int max;
    int64_t grab_for;
    char *coalesce, *coalesce_prefix, *message;
    struct sw_opt_int floor, exit_status, max_retries, retry_delay, keep, run_after, limit;
    bool prioritize, permanent;
    /* output */
    enum sw_err err;
    char errmsg[200];
    bool db_dead;         /* the store is down: try another */
    uint64_t *ids;        /* new jobids, njobs of them */
    int nfound;           /* grab/list: jobs rendered into out */
    bool retried;         /* failed: released for a retry */
    struct evbuffer *out; /* reply text rendered by the store thread */
    struct sw_qrow *qrows;
    int nq;
    uint64_t t_start_us;
};

struct sw_store_counters {
    uint64_t ops, commits, rollbacks, errors, reconnects, retries;
};

/* Open store threads for each DSN (connect lazily, create schema on first
 * connect). Returns 0 or -1 (logged). */
int sw_stores_open(char **dsns, int n, const char *user, const char *pass);
void sw_stores_close(void);
int sw_store_count(void);
struct sw_store *sw_store_get(int i);
/* The store whose handle prefix matches hash (32 hex), or NULL. */
struct sw_store *sw_store_by_hash(const char *hash, size_t len);
const char *sw_store_hash(const struct sw_store *s);
const char *sw_store_dsn(const struct sw_store *s);
int sw_store_index(const struct sw_store *s);
bool sw_store_alive(const struct sw_store *s);
void sw_store_get_counters(const struct sw_store *s, struct sw_store_counters *out);
uint64_t sw_store_queued(const struct sw_store *s);
/* Queue op on the store (thread-safe); op->done runs on loop 0. */
void sw_store_submit(struct sw_store *s, struct sw_op *op);
/* Live DB order for this call: indexes of stores, live first, shuffled. */
int sw_store_order(int *order);

struct sw_op *sw_op_new(enum sw_op_kind kind);
void sw_op_free(struct sw_op *op);
void sw_jobspec_clear(struct sw_jobspec *j);

/* Retry policy per function (policy.c inside store.c). */
struct sw_policy {
    int64_t max_retries, retry_delay, keep_exit_status_for;
};
void sw_policy_set(const char *func, const struct sw_policy *p);
bool sw_policy_get(const char *func, struct sw_policy *out);
int sw_policy_parse(const char *spec, char *err, size_t errlen); /* "FUNC k=v ..." */

/* ---- daemon-wide state (schwartzd.c) ------------------------------------------ */

struct sw_config {
    char *listen;
    char *db_user;
    char *db_pass;
    int batch_size;
    uint64_t max_arg;
    int retry_seconds;
    int max_conns;
    int idle_timeout;
    int group_max;
    int db_connections; /* connections (threads) per MySQL database */
    int queue_refresh;
    char *test_fault; /* fault point for tests: "replace_with" */
};

struct sw_counters {
    struct stats_counter inserts, grabs, grabbed, completed, failed, retried, declined, replaced, errors_sent,
        db_failovers, duplicates;
};

struct sw_state {
    struct sw_config cfg;
    struct sw_counters n;
    struct stats_hist insert_latency;
    uint64_t sessions;
    /* cached queue counts for the console and metrics (refreshed by timer) */
    struct sw_qrow *queues;
    int nqueues;
};
extern struct sw_state sw;

/* session.c */
struct core_conn;
struct core_loop;
void sw_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void sw_sessions_admin_workers(struct evbuffer *out);

/* cmd_sw.c */
struct sw_sess;
void sw_cmd_dispatch(struct sw_sess *s, struct sw_req *r, struct sw_jobspec *jobs, int njobs);
void sw_queues_refresh_start(void);
void sw_queues_refresh_stop(void);
void sw_queues_merge(struct sw_qrow **into, int *n, const struct sw_qrow *rows, int nrows);

/* admin.c */
#include "common/admin.h"
extern const struct admin_cmd sw_admin_cmds[];

#endif
