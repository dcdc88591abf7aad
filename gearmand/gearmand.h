/* gearmand: the types and functions every gearmand file shares.
 *
 * Threads (-t N): each event loop owns its connections (reads, parses,
 * writes them); the job state (functions, jobs, workers, clients, the
 * counters, every gm_sess field but the conn's own buffers) is shared and
 * guarded by one mutex, gm_lock(). Every entry point into the state takes
 * it: a conn's read/close/drain callbacks, timers, db results, console
 * commands, stats. A loop never touches another loop's conn: replies for
 * a session owned by another loop are appended to its wbuf under the lock
 * and that loop is asked (once per batch, through the core's mailbox) to
 * write them; pausing, resuming, timeouts and busy marks go the same way
 * (gm_sess_apply). The reasons are in README.md ("Threading"). */
#ifndef GM_GEARMAND_H
#define GM_GEARMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>

#include "common/admin.h"
#include "common/list.h"
#include "gearmand/proto.h"

struct core_conn;
struct core_loop;
struct evbuffer;
struct event;
struct db;

#define GM_VERSION "1.1.20-gm1"
#define GM_MAX_TEXT_LINE 8192
#define GM_MAX_LOOPS 64 /* -t */

enum gm_prio { GM_PRIO_HIGH = 0, GM_PRIO_NORMAL = 1, GM_PRIO_LOW = 2 };

struct gm_func {
    struct gm_func *hnext;
    uint64_t hash;
    char *name;
    size_t len;
    struct list_node queue[3]; /* runnable jobs by priority */
    uint32_t queued[3];
    uint32_t total; /* every job of this function (queued, running, scheduled) */
    uint32_t running;
    uint32_t workers;           /* connections that CAN_DO it */
    uint32_t max_queue[3];      /* 0 = unlimited */
    bool pinned;                /* made by `create function`: kept until `drop function` */
    struct list_node sleepers;  /* gm_ability.sleep_link of sleeping workers */
    struct list_node abilities; /* gm_ability.f_link of every worker that can do it */
    struct list_node all_link;  /* server's function list, creation order */
};

struct gm_ability {
    struct gm_func *f;
    struct gm_sess *s;
    uint32_t timeout_ms;         /* CAN_DO_TIMEOUT; 0 = none */
    int idx;                     /* in s->abilities */
    struct list_node f_link;     /* f->abilities */
    struct list_node ready_link; /* s->ready while f has queued jobs */
    struct gm_ability *hnext;    /* s->abuckets chain */
    struct list_node sleep_link;
};

enum gm_job_state {
    GM_JOB_STORING, /* added, not yet runnable (its row is being stored) */
    GM_JOB_QUEUED,
    GM_JOB_RUNNING,
    GM_JOB_SCHEDULED, /* waiting for its time (EPOCH/SCHED) */
};

struct gm_store_req;
struct gm_timer;
struct gm_loop;

struct gm_job {
    struct gm_job *hnext_handle, *hnext_unique;
    uint64_t handle_hash, unique_hash;
    struct gm_func *f;
    char handle[GM_MAX_HANDLE + 1];
    size_t handle_len;
    char *unique; /* NUL-ended; "" = none */
    size_t unique_len;
    char *reducer; /* NULL = none */
    size_t reducer_len;
    char *data;
    size_t data_len;
    uint8_t prio;
    bool bg;
    bool ignore; /* every client went away while it ran */
    bool in_unique;
    bool unique_is_data; /* submitted with unique "-": coalesces by its data */
    enum gm_job_state state;
    struct list_node qlink;   /* f->queue[prio] when queued */
    struct gm_sess *worker;   /* when running */
    struct list_node wlink;   /* worker->running */
    struct list_node clients; /* gm_link.jlink */
    uint32_t client_count;
    uint32_t numerator, denominator;
    uint32_t retries;
    int64_t when;                   /* epoch seconds for scheduled jobs, 0 = now */
    struct gm_timer *timer;         /* schedule or CAN_DO_TIMEOUT */
    int64_t db_id;                  /* row in the persistent queue, 0 = none */
    struct gm_store_req *store_req; /* its INSERT in flight, or NULL */
};

/* A client waiting on a job. */
struct gm_link {
    struct gm_job *job;
    struct gm_sess *s;
    struct list_node jlink, slink;
};

/* A reply that must wait (for a durable write) and everything written after
 * it on the same connection. */
struct gm_slot {
    struct gm_slot *next;
    struct evbuffer *buf;
    bool ready;
};

/* A connection's place in its request stream (session.c drives it). */
enum gm_sess_state {
    GM_SESS_WAIT = 0, /* nothing (or a partial request) buffered: wait for bytes */
    GM_SESS_NEXT,     /* a request finished: look at what comes next */
    GM_SESS_BIN,      /* a binary packet at the head of the input */
    GM_SESS_TEXT,     /* an admin text line at the head of the input */
    GM_SESS_HELD,     /* reading paused: too many durable replies pending */
    GM_SESS_CLOSING,  /* closing or closed: read nothing more */
};

struct gm_sess {
    struct core_conn *c;
    struct core_loop *loop;   /* the loop owning c: only it touches c */
    struct evbuffer *obuf;    /* owner loop only: wbuf's bytes on their way to c */
    size_t out_backlog;       /* c's unsent output after the last flush (atomic) */
    unsigned apply;           /* GM_APPLY_* waiting for the owner loop */
    enum gm_sess_state state; /* NULL once the connection closed */
    int refs;                 /* the conn + pending async work */
    int fd;
    char peer[64];
    struct gm_ability **abilities;
    int nabilities, cap_abilities;
    struct gm_ability **abuckets; /* abilities by function */
    size_t amask;
    struct list_node ready; /* abilities whose function has queued jobs, round-robin order */
    bool sleeping;
    bool exceptions;
    bool in_text;          /* last request was an admin text line */
    bool over_limit;       /* more than --max-client-output unread */
    struct evbuffer *wbuf; /* replies made during this event, flushed at its end (under the lock) */
    bool dirty;            /* on gm.dirty */
    struct gm_sess *dirty_next;
    bool throttled; /* a worker not read until its clients drain */
    char client_id[GM_MAX_CLIENT_ID + 1];
    struct list_node running;  /* jobs assigned to this worker */
    struct list_node links;    /* gm_link.slink */
    struct list_node all_link; /* server's session list */
    struct gm_slot *slot_head, *slot_tail;
    uint32_t held;    /* replies waiting for a durable write */
    bool held_paused; /* reading paused until they drain */
};

struct gm_settings {
    int port;
    char *listen;     /* -L address, NULL = all */
    int threads;      /* -t: event loops, each owning its connections */
    int job_retries;  /* -j: 0 = unlimited */
    char *queue_type; /* -q builtin|libsqlite3|mysql */
    char *sqlite_db;
    char *sqlite_table;
    char *mysql_host;
    int mysql_port;
    char *mysql_socket;
    char *mysql_user;
    char *mysql_password;
    char *mysql_db;
    char *mysql_table;
    char *import_sqlite_table; /* gearmand 1.1's queue tables taken over at start */
    char *import_mysql_table;
    char *handle_prefix;
    uint64_t max_packet;
    int max_conns;
    int backlog;
    char *verbose;
    int verbosity;         /* -v count: 1 = INFO, 2 = DEBUG with a line per request */
    char *log_file_compat; /* -l */
    int idle_timeout;
    int max_held;                   /* durable submits waiting per conn before it is paused */
    uint64_t max_jobs;              /* jobs in memory (all functions); 0 = unlimited */
    uint64_t max_job_bytes;         /* job data held in memory; 0 = unlimited */
    uint64_t max_functions;         /* function names known at once; 0 = unlimited */
    uint64_t metrics_max_functions; /* functions exported one by one to Prometheus; 0 = all */
    uint64_t max_client_output;     /* replies waiting for one client before it is dropped; 0 = unlimited */
    char *job_port_admin;           /* gearmand | read-only | off */
    int client_stall_timeout;       /* seconds a client over max_client_output may make no progress */
    bool round_robin;               /* -R: accepted; grabs are always round robin */
    int wakeup;                     /* -w: sleepers woken per job, 0 = all */
    bool exceptions;                /* --exceptions: every client gets WORK_EXCEPTION */
    bool ssl;                       /* --ssl: the job port is TLS only */
    char *ssl_cert, *ssl_key, *ssl_ca_file;
    bool keepalive;
    bool check_args;                                         /* --check-args: validate the settings, then exit */
    int keepalive_idle, keepalive_interval, keepalive_count; /* -1 = the system's */
};

struct gm_counters {
    uint64_t jobs_submitted, jobs_completed, jobs_failed, jobs_coalesced, jobs_retried, jobs_timeout;
    uint64_t packets_in, errors_sent, noops_sent, grabs, no_jobs, queue_full, queue_paused;
    uint64_t functions_refused, clients_output_dropped, admin_refused, workers_throttled;
    uint64_t cross_loop_flushes; /* replies handed to another loop (one mailbox message each) */
};

struct gm_server {
    struct gm_settings cfg;
    struct gm_counters n;
    struct gm_func **fbuckets;
    size_t fmask, nfuncs;
    struct gm_job **hbuckets, **ubuckets;
    size_t jmask, njobs;
    uint64_t job_bytes; /* data of every job held */
    struct list_node funcs;
    struct list_node sessions;
    uint64_t handle_counter;
    char handle_prefix[40];
    uint64_t nsessions;
    pthread_mutex_t lock;  /* the job state (see the top of this file) */
    struct gm_loop *loops; /* per event loop: its dirty sessions */
    int nloops;
    struct db *db;      /* persistent queue, NULL = memory only */
    void *tls_ctx;      /* --ssl: the core tls module's SSL_CTX */
    bool shutting_down; /* refuse new jobs */
    bool stopping;      /* graceful stop under way */
};

extern struct gm_server gm;

/* session.c --------------------------------------------------------------- */
void *gm_xcalloc(size_t n, size_t size); /* aborts on out of memory */
/* The job-state lock; re-entrant on one thread (a conn callback may run
 * inside another one's bookkeeping on the same loop). */
void gm_lock(void);
void gm_unlock(void);
void gm_sessions_init(void);
void gm_sessions_free(void);
/* On loop `loop`'s thread, without the lock: write what its sessions were
 * given (by any loop) since the last flush. */
void gm_flush_loop(struct core_loop *loop);
/* Things only s's owner loop may do to its conn, done there (now if this
 * is that loop and it is safe, else through its mailbox). Lock held. */
#define GM_APPLY_READ 1u     /* pause or resume reading per held_paused/throttled */
#define GM_APPLY_TIMEOUTS 2u /* idle / stall timeouts per over_limit */
#define GM_APPLY_BUSY 4u     /* graceful stop: busy while work is in flight */
void gm_sess_apply(struct gm_sess *s, unsigned what);
struct gm_sess *gm_sess_new(struct core_conn *c);
void gm_sess_ref(struct gm_sess *s);
void gm_sess_unref(struct gm_sess *s);
/* Where replies go now: the conn's output, or the tail of pending slots.
 * NULL if the connection is gone. */
struct evbuffer *gm_sess_out(struct gm_sess *s);
/* Open a reply slot that later output queues behind. */
struct gm_slot *gm_sess_hold(struct gm_sess *s);
/* Mark a held slot ready (its bytes are final) and flush what can go. */
void gm_sess_release(struct gm_sess *s, struct gm_slot *slot);
/* During a graceful stop, keep a conn with work in flight open. */
void gm_sess_update_busy(struct gm_sess *s);
/* Graceful stop began: mark conns with work in flight busy. */
void gm_stopping(void);
/* Encode a response packet into out. */
void gm_send_buf(struct evbuffer *out, uint32_t cmd, int argc, const void *const *args, const size_t *lens);
void gm_send(struct gm_sess *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens);
void gm_send0(struct gm_sess *s, uint32_t cmd);
void gm_send1(struct gm_sess *s, uint32_t cmd, const void *a, size_t alen);
void gm_send_error(struct gm_sess *s, const char *code, const char *text);
/* The last argument shared from a refcounted copy instead of copied (a
 * WORK_DATA fanned out to many clients). */
struct gm_blob;
struct gm_blob *gm_blob_new(const void *data, size_t len); /* NULL on out of memory */
void gm_blob_unref(struct gm_blob *b);
void gm_send_shared(struct gm_sess *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens,
                    struct gm_blob *b);
/* Output backlog: true (and the stall timer armed) once s has more than
 * --max-client-output unread. */
bool gm_sess_over_limit(struct gm_sess *s);
/* Stop / resume reading a worker whose clients can't keep up. */
void gm_sess_throttle(struct gm_sess *s);
void gm_sess_unthrottle(struct gm_sess *s);
/* The protocol listener's callbacks. */
void gm_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void gm_reject(int fd, void *arg);

/* jobs.c ------------------------------------------------------------------ */
void gm_state_init(void);
void gm_state_free(void);
/* s's connection closed: drop its abilities, requeue the jobs it was
 * running, detach it from the jobs it waited on. */
void gm_jobs_forget_sess(struct gm_sess *s);
/* s's backlog drained: let the workers it held back go on. */
void gm_jobs_client_drained(struct gm_sess *s);
int64_t gm_now_epoch(void);

struct gm_func *gm_func_find(const char *name, size_t len);
/* Find or create; NULL if creating would pass --max-functions. */
struct gm_func *gm_func_get(const char *name, size_t len);
/* Free f if nothing refers to it any more. */
void gm_func_release(struct gm_func *f);
/* Remove a function with no jobs and no workers. */
void gm_func_drop(struct gm_func *f);
struct gm_job *gm_job_find(const char *handle, size_t len);
/* By unique key, of function f (NULL = any function). */
struct gm_job *gm_unique_find(struct gm_func *f, const char *u, size_t len);
/* A job of f submitted with unique "-" and this workload. */
struct gm_job *gm_unique_find_dash(struct gm_func *f, const char *data, size_t len);
/* Its row could not be stored: go on for foreground clients, or drop it. */
void gm_job_store_failed(struct gm_job *j);
/* Admin "cancel job": only a job not running. 0 ok, -1 unknown/running. */
int gm_job_cancel(struct gm_job *j);
/* Add a job (used by replay from the durable store too). */
struct gm_job *gm_job_add(struct gm_func *f, const char *unique, size_t ulen, const char *data, size_t dlen, int prio,
                          bool bg, int64_t when, const char *reducer, size_t rlen);
/* Make a job runnable now or at its time. */
void gm_job_start(struct gm_job *j);
/* Client s waits on j. */
void gm_job_attach(struct gm_job *j, struct gm_sess *s);
/* Send a packet to every client waiting on j. */
void gm_job_forward(struct gm_job *j, uint32_t cmd, int argc, const void *const *args, const size_t *lens);
/* Remove a job from every structure and free it. */
void gm_job_free(struct gm_job *j);
/* Tell its clients WORK_FAIL, then free it. */
void gm_job_fail(struct gm_job *j);
/* A worker takes j (found by gm_worker_take_job through ability a). */
void gm_job_assign(struct gm_job *j, struct gm_sess *s, struct gm_ability *a);

struct gm_ability *gm_ability_find(struct gm_sess *s, struct gm_func *f, int *idx);
void gm_ability_add(struct gm_sess *s, const char *name, size_t len, uint32_t timeout_ms);
void gm_ability_remove(struct gm_sess *s, int i);
bool gm_worker_has_runnable(struct gm_sess *s);
/* The next job for worker s: highest priority first, round robin over its
 * functions. NULL if none. */
struct gm_job *gm_worker_take_job(struct gm_sess *s, struct gm_ability **ab);
/* PRE_SLEEP: false if a job it can do is already queued (wake it now). */
bool gm_worker_sleep(struct gm_sess *s);
void gm_worker_unsleep(struct gm_sess *s);

/* cmd_bin.c --------------------------------------------------------------- */
/* One parsed binary packet from s. Returns 0, or -1 to close the conn. */
int gm_handle_packet(struct gm_sess *s, const struct gm_packet *p);

/* cmd_text.c ---------------------------------------------------------------- */
/* One admin text line from the protocol port (writable, NUL at len). */
int gm_text_line(struct gm_sess *s, char *line, size_t len);
/* Run a classified gearmand command into out. false if it is not one. */
bool gm_text_run(struct evbuffer *out, const struct gm_text *t, int ntok, char **tok);
void gm_text_unknown(struct evbuffer *out, const char *word);

/* admin.c ------------------------------------------------------------------- */
extern const struct admin_cmd gm_admin_cmds[];
void gm_admin_install(void);

/* store.c ----------------------------------------------------------------- */
/* Open the configured store and replay stored jobs. 0 or -1 (logged). */
int gm_store_open(void);
void gm_store_close(void);
/* Store a background job for submitter s (or, if its INSERT is already in
 * flight, wait for that): s gets JOB_CREATED once the row committed, or
 * ERROR QUEUE_ERROR; a job not yet runnable (GM_JOB_STORING) starts then. */
void gm_store_job(struct gm_job *j, struct gm_sess *s);
/* The job goes away: its in-flight INSERT no longer points at it. */
void gm_store_forget(struct gm_job *j);
/* A stored job finished (or was dropped). */
void gm_store_done(struct gm_job *j);

#endif
