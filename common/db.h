/* db: one asynchronous API over SQLite (the embedded default) and
 * MariaDB/MySQL (mysqlclient from libmariadb).
 *
 * Queries run on the handle's worker thread(s), never on an event loop; the
 * result comes back to the calling loop with loop_call(). Each worker owns
 * one connection. With one worker (the default) requests run strictly in
 * the order they were submitted, so a later request also sees the effects
 * of every earlier one (gearmand relies on this: insert, then delete).
 *
 * Group commit: consecutive requests flagged DB_GROUP that are waiting when
 * the worker picks up work run inside one transaction and share one commit
 * (one fsync for SQLite). Each still gets its own result: a failing
 * statement is reported to its caller only; the others commit. A request's
 * callback runs only after its transaction committed, so "done without
 * error" means durable (SQLite: WAL + synchronous=FULL; MySQL: whatever
 * innodb_flush_log_at_trx_commit the server runs with — 1 by default).
 *
 * Parameters are '?' placeholders bound from db_value (copied at submit, the
 * caller's buffers may go away). Results are text/blob cells. */
#ifndef CORE_DB_H
#define CORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct core_loop;
struct db;

enum db_driver { DB_SQLITE = 1, DB_MYSQL = 2 };

struct db_config {
    enum db_driver driver;
    const char *path;          /* SQLite: database file (created if missing) */
    const char *host;          /* MySQL: host (NULL = localhost) */
    int port;                  /* MySQL: 0 = 3306 */
    const char *socket;        /* MySQL: unix socket path, or NULL */
    const char *user;
    const char *password;
    const char *database;
    int workers;               /* worker threads, each with its own connection; 0 = 1 */
    int max_batch;             /* most requests in one group commit; 0 = 1024 */
    int busy_timeout_ms;       /* SQLite: wait for locks this long; 0 = 5000 */
};

enum db_type { DB_NULL = 0, DB_INT, DB_TEXT, DB_BLOB };

struct db_value {
    enum db_type type;
    int64_t i;
    const void *p;
    size_t len;
};

#define DB_INT64(v) ((struct db_value){ .type = DB_INT, .i = (int64_t)(v) })
#define DB_TEXTN(s, n) ((struct db_value){ .type = DB_TEXT, .p = (s), .len = (n) })
#define DB_BLOBN(s, n) ((struct db_value){ .type = DB_BLOB, .p = (s), .len = (n) })

struct db_result {
    int status;                /* 0 ok, -1 error (message in error) */
    char error[256];
    uint64_t affected;         /* rows changed by INSERT/UPDATE/DELETE */
    int64_t last_id;           /* last insert id */
    int ncols;
    size_t nrows;
    /* private: cells row-major */
    struct db_cell *cells;
};

/* Request flags. */
#define DB_GROUP 0x1           /* a write that may share a transaction (group commit) */

/* Called on the loop given to db_query (or on the db thread if loop was
 * NULL). The result is freed when the callback returns. */
typedef void (*db_done_fn)(struct db_result *res, void *arg);

/* Open the handle: connects every worker (blocking; call at start-up, not
 * from a running loop). SQLite files get WAL mode and synchronous=FULL.
 * Returns NULL with a message in err. */
struct db *db_open(const struct db_config *cfg, char *err, size_t errlen);
/* Run everything queued, stop the workers, close the connections. Callbacks
 * of requests still queued run (on the db thread if their loop is gone). */
void db_close(struct db *db);
enum db_driver db_get_driver(const struct db *db);

/* Queue one statement. sql NULL is a barrier: nothing is run, done is
 * called once every earlier request has finished (one worker only).
 * Returns 0, or -1 if the handle is closing. Thread-safe. */
int db_query(struct db *db, struct core_loop *loop, int flags, const char *sql,
             const struct db_value *params, int nparams, db_done_fn done, void *arg);

/* The same, waiting for the result (start-up, tools and tests only: it
 * blocks the caller). *res must be freed with db_result_free. Returns
 * res->status. */
int db_query_sync(struct db *db, const char *sql, const struct db_value *params, int nparams,
                  struct db_result **res);
/* Run several ';'-separated statements without parameters (schema set-up).
 * Statements must not contain ';' inside literals. Returns 0 or -1 + err. */
int db_exec_script(struct db *db, const char *script, char *err, size_t errlen);

void db_result_free(struct db_result *res);
/* Cell text (NUL-ended for convenience; *len without it), NULL for SQL NULL
 * or out of range. */
const char *db_cell(const struct db_result *res, size_t row, int col, size_t *len);
/* Cell as an integer (0 for NULL / not a number). */
int64_t db_cell_int(const struct db_result *res, size_t row, int col);

/* Counters for stats: requests done, transactions committed (group commits
 * count once), requests waiting now. */
struct db_counters {
    uint64_t requests;
    uint64_t commits;
    uint64_t errors;
    uint64_t queued;
};
void db_get_counters(struct db *db, struct db_counters *out);

#endif
