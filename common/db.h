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
 * statement is reported to its caller only; the others commit — unless the
 * failure ended the whole transaction (SQLite's automatic rollback on a
 * full disk or I/O error, a MySQL deadlock or lost connection): then every
 * statement of the group that had run reports the rollback, and the ones
 * after it run in a new transaction. A request's
 * callback runs only after its transaction committed, so "done without
 * error" means durable (SQLite: WAL + synchronous=FULL; MySQL: whatever
 * innodb_flush_log_at_trx_commit the server runs with — 1 by default).
 *
 * Parameters are '?' placeholders bound from db_value (copied at submit, the
 * caller's buffers may go away). Results are text/blob cells.
 *
 * Threads: the workers are a common/work pool (one thread per connection);
 * results come back through the submitting loop's work mailbox.
 *
 * Also here, for every daemon alike:
 *  - DBI-style DSNs (db_config_dsn): the strings Perl's DBI takes, so the
 *    original daemons' config lines work unchanged;
 *  - atomic multi-statement transactions (db_txn): all commit or none;
 *  - connection affinity (db_pin + db_query_on / db_txn): requests made
 *    with one pin run in order on one connection, even with many workers;
 *  - a bound on queued requests (db_config.max_queued): past it db_query
 *    fails with errno EAGAIN and the `rejected` counter grows;
 *  - schema versions with migrations (db_migrate), applied at start-up;
 *  - operations whose later statements depend on earlier results (db_run):
 *    a callback runs on the worker thread with the connection's blocking
 *    statement API (db_conn_query), inside a savepoint of a group commit;
 *  - that blocking statement API on a connection of one's own
 *    (db_conn_open), for a program that runs its own database threads. */
#ifndef CORE_DB_H
#define CORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct core_loop;
struct db;
struct db_conn;

enum db_driver { DB_SQLITE = 1, DB_MYSQL = 2 };

struct db_config {
    enum db_driver driver;
    const char *path;   /* SQLite: database file (created if missing) */
    const char *host;   /* MySQL: host (NULL = localhost) */
    int port;           /* MySQL: 0 = 3306 */
    const char *socket; /* MySQL: unix socket path, or NULL */
    const char *user;
    const char *password;
    const char *database;
    int workers;           /* worker threads, each with its own connection; 0 = 1 */
    int max_batch;         /* most requests in one group commit; 0 = 1024 */
    int busy_timeout_ms;   /* SQLite: wait for locks this long; 0 = 5000 */
    size_t max_queued;     /* requests waiting at most; 0 = 100000 */
    int connect_timeout_s; /* MySQL: connect timeout; 0 = 10 */
    int io_timeout_s;      /* MySQL: read/write timeout per round trip; 0 = none */
    /* A database that cannot be reached at db_open is not an error: the
     * handle opens, err says why the first connection failed, and each
     * worker connects again when it next has work (a request then fails
     * with res->lost while the database stays down). */
    bool connect_later;
    /* Run on the worker's thread after every connect (at db_open, and after
     * a lost connection): session settings, schema. Returns 0, or -1 to
     * drop the connection (its message, via db_conn_error, is the reason). */
    int (*on_connect)(struct db_conn *c, void *arg);
    void *on_connect_arg;
    /* private: the strings db_config_dsn filled in; freed by db_config_clear */
    char *owned_;
};

/* Fill driver, path (SQLite) or database/host/port/socket (MySQL), and user
 * and password when the DSN names them, from a DBI-style DSN:
 *   DBI:SQLite:dbname=FILE   dbi:SQLite:FILE   (also db=, database=)
 *   DBI:mysql:database=D;host=H;port=P;mysql_socket=S   (also db=, dbname=,
 *     hostname=, user=, password=; DBI:mysql:D and DBI:mysql:D:H:P;
 *     DBI:MariaDB:... the same)
 * The "dbi:" prefix and the driver name are case-insensitive; a DBI
 * attribute list "dbi:SQLite(RaiseError=>1):F" is accepted and ignored, as
 * are mysql_* options we have no use for (mysql_enable_utf8...). Anything
 * else (unknown key, bad port, empty file name, missing database) is an
 * error naming what is wrong. Fields not named by the DSN are left as they
 * were, so user and password can come from their own settings. Pure
 * function (allocates the strings); returns 0 or -1 + err. */
int db_config_dsn(struct db_config *cfg, const char *dsn, char *err, size_t errlen);
/* Free what db_config_dsn allocated (safe on a config it never touched). */
void db_config_clear(struct db_config *cfg);

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
    int status; /* 0 ok, -1 error (message in error) */
    char error[256];
    uint64_t affected; /* rows changed by INSERT/UPDATE/DELETE */
    int64_t last_id;   /* last insert id */
    int ncols;
    size_t nrows;
    /* db_txn only: the index of the statement that failed (-1 if none) */
    int failed_stmt;
    /* status -1 because the connection was lost or could not be made (server
     * gone, SQLite file unopenable, disk full or I/O error): the database
     * may be down, try another */
    bool lost;
    /* private: cells row-major; per-statement results of a transaction */
    struct db_cell *cells;
    struct db_result **stmts;
    int nstmts;
};

/* One statement of a transaction. */
struct db_stmt {
    const char *sql;
    const struct db_value *params;
    int nparams;
    int flags; /* DB_EXPECT_ONE ... */
};
#define DB_EXPECT_ONE                                                                                                  \
    0x1 /* must change exactly one row, else the whole                                                                 \
         * transaction rolls back (optimistic locks:                                                                   \
         * "UPDATE ... WHERE version = ?") */

/* Request flags. */
#define DB_GROUP 0x1 /* a write that may share a transaction (group commit) */
/* db_run only: in a group, fn runs without a SAVEPOINT of its own (what it
 * did before a failure may stand: it writes at most once, or its partial
 * work is harmless). */
#define DB_NO_SAVEPOINT 0x2
/* db_run only: run alone (not in a group), fn runs outside a transaction,
 * each statement committing by itself (fn writes at most once). */
#define DB_AUTOCOMMIT 0x4
/* Losing this request's work in a power cut is harmless (a lease that only
 * lets a job run again): on SQLite a group made only of such requests
 * commits without its fsync (synchronous=NORMAL); the next durable commit
 * syncs it too. Every other group commits with synchronous=FULL. */
#define DB_NO_FSYNC 0x8

/* A pin: requests made with the same pin run in submission order on one
 * worker's connection (read-then-write pairs, LAST_INSERT_ID, GET_LOCK).
 * 0 means "any worker". Pins are plain numbers: db_pin hands them out
 * round-robin and nothing needs freeing. No transaction stays open between
 * two requests: what must be atomic goes in one db_txn. */
typedef int db_pin_t;

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
 * called once every earlier request has finished (one worker only, or on a
 * pin). Returns 0, or -1 with errno EAGAIN (max_queued requests already
 * waiting: tell the client the server is busy), ESHUTDOWN (closing) or
 * ENOMEM; done is then never called. Thread-safe. */
int db_query(struct db *db, struct core_loop *loop, int flags, const char *sql, const struct db_value *params,
             int nparams, db_done_fn done, void *arg);

/* db_query on a pin (0 = any worker). Same returns. */
int db_query_on(struct db *db, db_pin_t pin, struct core_loop *loop, int flags, const char *sql,
                const struct db_value *params, int nparams, db_done_fn done, void *arg);
/* A worker pin for requests that must share one connection, in order. */
db_pin_t db_pin(struct db *db);

/* Run stmts[0..n) as one transaction: all commit, or none does. done gets
 * a result with status 0 (committed) or -1 (rolled back; error says which
 * statement and why, failed_stmt its index); db_result_stmt(res, k) is
 * statement k's own result (rows of a SELECT, last_id of an INSERT).
 * Statements and parameters are copied. Never merged into a group commit.
 * Returns as db_query (errno EAGAIN when the queue is full). */
int db_txn(struct db *db, db_pin_t pin, struct core_loop *loop, const struct db_stmt *stmts, int n, db_done_fn done,
           void *arg);
/* db_txn with flags: DB_GROUP lets it share a group commit with the DB_GROUP
 * requests around it (one fsync), its statements inside a SAVEPOINT: still
 * all or none, and its failure undoes it alone. done hears status 0 only
 * once the group committed. Not for DDL (MySQL commits DDL at once). */
int db_txn_flags(struct db *db, db_pin_t pin, struct core_loop *loop, int flags, const struct db_stmt *stmts, int n,
                 db_done_fn done, void *arg);
/* The same, waiting (start-up, tools, tests). *res freed by the caller. */
int db_txn_sync(struct db *db, const struct db_stmt *stmts, int n, struct db_result **res);
const struct db_result *db_result_stmt(const struct db_result *res, int k);

/* Schema versions. A migration brings the schema of `component` from
 * version-1 to version; db_migrate runs, in order, every migration above
 * the version recorded in table db_schema_version, each in its own
 * transaction together with the bump of the recorded version (on MySQL,
 * DDL commits implicitly: the bump is the last statement there, and a
 * named lock keeps two processes from migrating at once). Versions must
 * be 1, 2, 3 ... in order. sql lists are NULL-terminated; sqlite/mysql,
 * when set, replace sql for that driver. Blocking: start-up only.
 * Returns the version now in place, or -1 + err (nothing of the failing
 * version applied). */
struct db_migration {
    int version;
    const char *const *sql;
    const char *const *sqlite;
    const char *const *mysql;
};
int db_migrate(struct db *db, const char *component, const struct db_migration *m, int n, char *err, size_t errlen);
/* The recorded version of component (0 = none), or -1 + err. */
int db_schema_version(struct db *db, const char *component, char *err, size_t errlen);

/* Expand '?' placeholders outside quotes and comments into SQL literals
 * (integers; 'escaped' text; X'hex' blobs; NULL), as the MySQL driver does
 * before sending a query. out has room for cap bytes. Returns the length
 * written (NUL-terminated), or -1 when the number of placeholders differs
 * from nparams or out is too small. Pure (backslash-escaping as MySQL does
 * with its default sql_mode; the driver uses the connection's own
 * escaping). Public for tests and tools. */
long db_expand_placeholders(const char *sql, const struct db_value *params, int nparams, char *out, size_t cap);
/* The same with the driver's escaping of text: escape writes the escaped
 * form of s[0..len) at out (at most 2*len bytes) and returns its length. */
typedef size_t (*db_escape_fn)(void *ctx, char *out, const char *s, size_t len);
long db_expand_placeholders_with(const char *sql, const struct db_value *params, int nparams, char *out, size_t cap,
                                 db_escape_fn escape, void *ctx);
/* Bytes db_expand_placeholders may need for this statement. */
size_t db_expand_bound(const char *sql, const struct db_value *params, int nparams);

/* The same, waiting for the result (start-up, tools and tests only: it
 * blocks the caller). *res must be freed with db_result_free. Returns
 * res->status. */
int db_query_sync(struct db *db, const char *sql, const struct db_value *params, int nparams, struct db_result **res);
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
    uint64_t rejected;  /* refused: max_queued reached */
    uint64_t rollbacks; /* transactions (db_txn or group) rolled back */
    uint64_t reruns;    /* transactions the database aborted (deadlock, busy) and run again */
    uint64_t connects;  /* connections made (db_open's and reconnects) */
};
void db_get_counters(struct db *db, struct db_counters *out);

/* ---- the blocking statement API ------------------------------------------
 * A connection's statements, run where the caller is (a db worker thread in
 * a db_run callback, or a thread of the caller's own with db_conn_open).
 * Every call blocks. Errors come in classes, so the caller knows what is
 * left of its transaction: */
enum db_err {
    DB_OK = 0,
    DB_EDUP,   /* a unique key was violated: the statement is undone, the transaction goes on */
    DB_ELOST,  /* the connection is unusable (server gone, disk full or I/O error on SQLite):
                * the transaction is gone; a db_conn_open connection must be closed and reopened */
    DB_EABORT, /* the server gave up the transaction (deadlock, lock wait timeout, SQLite busy):
                * roll back and run it again */
    DB_EOTHER, /* the statement failed (syntax, constraint...): the transaction goes on */
};
struct db_conn;

/* Open one connection of one's own with the settings of cfg (workers,
 * max_batch and max_queued unused). SQLite: WAL, synchronous=FULL, the busy
 * timeout; MySQL: autocommit on, CLIENT_FOUND_ROWS (an UPDATE counts the
 * rows it matched, as SQLite does), connect/io timeouts. It never
 * reconnects by itself: after DB_ELOST every call fails with DB_ELOST.
 * Returns NULL + err. */
struct db_conn *db_conn_open(const struct db_config *cfg, char *err, size_t errlen);
void db_conn_close(struct db_conn *c);
enum db_driver db_conn_driver(const struct db_conn *c);
/* Which worker's connection this is (0 .. workers-1; -1 for db_conn_open's):
 * a db_run callback keeps per-connection state (caches, prepared ids) in an
 * array indexed by it, touched only by that worker's thread. */
int db_conn_worker(const struct db_conn *c);
/* Grows whenever this connection was (re)made or a transaction or savepoint
 * on it was rolled back: a db_run callback that caches what the database
 * holds (ids it looked up or inserted) drops its cache when this changed. */
uint64_t db_conn_epoch(const struct db_conn *c);
/* True inside BEGIN ... COMMIT (a group, or fn's own transaction), false
 * in autocommit (DB_AUTOCOMMIT). */
bool db_conn_in_txn(const struct db_conn *c);
/* One statement with '?' parameters. res (may be NULL) is filled with the
 * result set (caller's storage: release with db_result_clear, even after an
 * error). The parameters are used in place, not copied. */
enum db_err db_conn_query(struct db_conn *c, const char *sql, const struct db_value *params, int nparams,
                          struct db_result *res);
/* A statement without parameters or rows (BEGIN, COMMIT, PRAGMA, DDL). */
enum db_err db_conn_exec(struct db_conn *c, const char *sql);
/* Of the last successful statement: rows changed (matched, on MySQL too),
 * the id it inserted; of the last failed one: its message. */
uint64_t db_conn_affected(const struct db_conn *c);
int64_t db_conn_last_id(const struct db_conn *c);
const char *db_conn_error(const struct db_conn *c);
/* Free the cells of a result the caller owns (db_conn_query's); the struct
 * itself stays (zeroed). */
void db_result_clear(struct db_result *res);

/* ---- operations on the worker thread ---------------------------------------
 * fn runs on a db worker thread with that worker's connection and returns
 * 0 (keep its work) or -1 (undo it; say why with db_run_fail). With DB_GROUP,
 * consecutive such requests (and DB_GROUP db_query statements) share one
 * transaction and one commit, each db_run inside its own SAVEPOINT: one that
 * fails is rolled back to its savepoint alone and the others commit. Without
 * DB_GROUP it runs in a transaction of its own. done then gets status 0 only
 * once the transaction committed, or -1 with the reason (fn's, or the
 * rollback's when a failure ended the whole transaction: DB_ELOST/DB_EABORT
 * in any member fails every member that had run). What fn computed for the
 * loop, it leaves in ctx (done's arg may be the same pointer). fn must not
 * run BEGIN, COMMIT or ROLLBACK itself.
 * Reruns: when the database aborts the transaction (deadlock, lock wait
 * timeout, SQLite busy: DB_EABORT), the whole group is rolled back and run
 * again, up to 3 times, so fn may run more than once for one request: it
 * must start from its ctx's initial state each time (reset its output).
 * Returns as db_query. */
typedef int (*db_run_fn)(struct db_conn *c, void *ctx);
int db_run(struct db *db, db_pin_t pin, struct core_loop *loop, int flags, db_run_fn fn, void *ctx, db_done_fn done,
           void *arg);
/* In fn: the message done will see (status -1). */
void db_run_fail(struct db_conn *c, const char *why);

#endif
