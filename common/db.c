/* db: asynchronous SQL over SQLite and MariaDB/MySQL; see db.h.
 *
 * Owns the connections (one per worker thread), the request queues, group
 * commit, transactions, schema migrations and DSN parsing. The threads are
 * a common/work pool; results go back through the work mailboxes. Hands
 * work to threads: every query runs on a db worker thread, never on the
 * caller's loop (db_query_sync, db_txn_sync, db_exec_script and db_migrate
 * excepted: they block their caller and are for start-up, tools and tests).
 *
 * Queues: one shared queue for requests any worker may run, and one per
 * worker for pinned requests. A queue is drained by a "drain" job on the
 * work pool: it takes every request waiting (up to max_batch), runs them
 * (consecutive DB_GROUP writes in one transaction), delivers the results
 * and repeats until the queue is empty. At most one drain per worker runs
 * on the shared queue, and one per pinned queue, so one worker means
 * strict submission order. */
#include "common/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <sqlite3.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/num.h"
#include "common/work.h"

struct db_cell {
    char *p;
    size_t len;
    bool null;
};

struct req_stmt {
    char *sql;               /* NULL = barrier */
    struct db_value *params; /* one block: values, then their bytes */
    int nparams;
    int flags;
};

enum req_kind { REQ_QUERY, REQ_TXN, REQ_RUN };

struct db_req {
    struct db_req *next;
    struct work_msg msg; /* delivery to the loop */
    struct db *db;
    int flags;
    enum req_kind kind;
    struct req_stmt one;    /* REQ_QUERY */
    struct req_stmt *stmts; /* REQ_TXN */
    int nstmts;
    db_run_fn fn; /* REQ_RUN */
    void *fn_ctx;
    struct core_loop *loop;
    db_done_fn done;
    void *arg;
    struct db_result *res;
    enum db_err cls; /* REQ_RUN: the class of fn's last failed statement */
    /* the *_sync calls */
    pthread_mutex_t *sync_mu;
    pthread_cond_t *sync_cv;
    bool *sync_done;
};

struct req_queue {
    struct db_req *head, *tail;
};

#define STMT_CACHE 32

struct db_worker {
    struct db *db;
    int index;
    struct req_queue pinned;
    int drains; /* 0 or 1 drain job for `pinned` */
    sqlite3 *sq;
    struct {
        char *sql;
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int cache_next;
    MYSQL *my;
    char *esc; /* MySQL parameter expansion buffer */
    size_t esc_cap;
    bool sync_normal; /* SQLite: at synchronous=NORMAL for a DB_NO_FSYNC group */
    uint64_t epoch;   /* db_conn_epoch */
};

struct db {
    enum db_driver driver;
    char *path, *host, *socket, *user, *password, *database;
    int port, max_batch, busy_ms, connect_timeout, io_timeout;
    size_t max_queued;
    bool connect_later;
    int (*on_connect)(struct db_conn *c, void *arg);
    void *on_connect_arg;
    pthread_mutex_t mu;
    struct req_queue shared;
    int shared_drains; /* drain jobs running or queued for `shared` */
    size_t queued;
    bool closing;
    int nworkers;
    struct db_worker *w;
    struct work_pool *pool;
    _Atomic unsigned next_pin;
    _Atomic uint64_t n_requests, n_commits, n_errors, n_rejected, n_rollbacks, n_reruns, n_connects;
};

static int worker_connect(struct db_worker *w, char *err, size_t errlen);
static bool worker_connected(const struct db_worker *w) { return w->sq || w->my; }

/* ---- results ------------------------------------------------------------ */

struct result_builder {
    struct db_result *res;
    size_t cap;  /* cells allocated */
    size_t fill; /* cells used */
};

static struct db_result *result_new(void)
{
    struct db_result *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->failed_stmt = -1;
    return r;
}

static void result_error(struct db_result *r, const char *fmt, const char *msg)
{
    r->status = -1;
    snprintf(r->error, sizeof r->error, fmt, msg ? msg : "");
}

static int result_add_cell(struct result_builder *b, const void *p, size_t len, bool null)
{
    struct db_result *r = b->res;
    if (b->fill >= b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        struct db_cell *c = realloc(r->cells, cap * sizeof *c);
        if (!c)
            abort(); /* nrows * ncols must stay equal to the cells filled */
        r->cells = c;
        b->cap = cap;
    }
    struct db_cell *c = &r->cells[b->fill++];
    c->null = null;
    c->len = null ? 0 : len;
    c->p = NULL;
    if (!null) {
        c->p = malloc(len + 1);
        if (!c->p) {
            c->null = true;
            c->len = 0;
            return -1;
        }
        if (len)
            memcpy(c->p, p, len);
        c->p[len] = '\0';
    }
    return 0;
}

void db_result_free(struct db_result *res)
{
    if (!res)
        return;
    db_result_clear(res);
    free(res);
}

const char *db_cell(const struct db_result *res, size_t row, int col, size_t *len)
{
    if (!res || row >= res->nrows || col < 0 || col >= res->ncols)
        return NULL;
    const struct db_cell *c = &res->cells[row * (size_t)res->ncols + (size_t)col];
    if (c->null)
        return NULL;
    if (len)
        *len = c->len;
    return c->p;
}

int64_t db_cell_int(const struct db_result *res, size_t row, int col)
{
    size_t len = 0;
    const char *s = db_cell(res, row, col, &len);
    int64_t v = 0;
    if (s && parse_i64(s, len, INT64_MIN, INT64_MAX, &v) != NUM_OK)
        v = 0;
    return v;
}

const struct db_result *db_result_stmt(const struct db_result *res, int k)
{
    if (!res || k < 0 || k >= res->nstmts)
        return NULL;
    return res->stmts[k];
}

/* ---- SQLite ------------------------------------------------------------- */

static sqlite3_stmt *sq_prepare(struct db_worker *w, const char *sql, struct db_result *res)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (w->cache[i].st && strcmp(w->cache[i].sql, sql) == 0) {
            sqlite3_reset(w->cache[i].st);
            sqlite3_clear_bindings(w->cache[i].st);
            return w->cache[i].st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->sq, sql, -1, &st, NULL) != SQLITE_OK) {
        result_error(res, "%s", sqlite3_errmsg(w->sq));
        return NULL;
    }
    int slot = w->cache_next;
    w->cache_next = (w->cache_next + 1) % STMT_CACHE;
    if (w->cache[slot].st) {
        sqlite3_finalize(w->cache[slot].st);
        free(w->cache[slot].sql);
    }
    w->cache[slot].sql = strdup(sql);
    w->cache[slot].st = w->cache[slot].sql ? st : NULL;
    if (!w->cache[slot].sql) {
        sqlite3_finalize(st);
        result_error(res, "%s", "out of memory");
        return NULL;
    }
    return st;
}

static void sq_run(struct db_worker *w, const struct req_stmt *q, struct db_result *res)
{
    sqlite3_stmt *st = sq_prepare(w, q->sql, res);
    if (!st)
        return;
    if (sqlite3_bind_parameter_count(st) != q->nparams) {
        char m[96];
        snprintf(m, sizeof m, "%d placeholders, %d parameters", sqlite3_bind_parameter_count(st), q->nparams);
        result_error(res, "%s", m);
        return;
    }
    for (int i = 0; i < q->nparams; i++) {
        const struct db_value *v = &q->params[i];
        int rc;
        switch (v->type) {
        case DB_INT: rc = sqlite3_bind_int64(st, i + 1, v->i); break;
        case DB_TEXT: rc = sqlite3_bind_text(st, i + 1, v->p ? v->p : "", (int)v->len, SQLITE_STATIC); break;
        case DB_BLOB: rc = sqlite3_bind_blob(st, i + 1, v->p ? v->p : "", (int)v->len, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(st, i + 1); break;
        }
        if (rc != SQLITE_OK) {
            result_error(res, "bind: %s", sqlite3_errmsg(w->sq));
            return;
        }
    }
    struct result_builder b = { .res = res };
    res->ncols = sqlite3_column_count(st);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < res->ncols; c++) {
            int t = sqlite3_column_type(st, c);
            if (t == SQLITE_NULL)
                result_add_cell(&b, NULL, 0, true);
            else {
                const void *p =
                    t == SQLITE_BLOB ? sqlite3_column_blob(st, c) : (const void *)sqlite3_column_text(st, c);
                result_add_cell(&b, p, (size_t)sqlite3_column_bytes(st, c), false);
            }
        }
        res->nrows++;
    }
    if (rc != SQLITE_DONE) {
        result_error(res, "%s", sqlite3_errmsg(w->sq));
        sqlite3_reset(st);
        return;
    }
    res->affected = (uint64_t)sqlite3_changes(w->sq);
    res->last_id = sqlite3_last_insert_rowid(w->sq);
    sqlite3_reset(st);
}

static int sq_exec(struct db_worker *w, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(w->sq, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(w->sq));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int sq_connect(struct db_worker *w, char *err, size_t errlen)
{
    struct db *db = w->db;
    if (sqlite3_open_v2(db->path, &w->sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "sqlite %s: %s", db->path, w->sq ? sqlite3_errmsg(w->sq) : "cannot open");
        sqlite3_close(w->sq);
        w->sq = NULL;
        return -1;
    }
    sqlite3_busy_timeout(w->sq, db->busy_ms);
    /* WAL + synchronous=FULL: a commit is fsync'd before it returns. */
    if (sq_exec(w, "PRAGMA journal_mode=WAL", err, errlen) < 0 ||
        sq_exec(w, "PRAGMA synchronous=FULL", err, errlen) < 0) {
        sqlite3_close(w->sq);
        w->sq = NULL;
        return -1;
    }
    w->sync_normal = false;
    return 0;
}

/* ---- MySQL --------------------------------------------------------------- */

static MYSQL *my_try(struct db *db, const char *host, const char *database)
{
    MYSQL *my = mysql_init(NULL);
    if (!my)
        return NULL;
    unsigned int timeout = db->connect_timeout > 0 ? (unsigned)db->connect_timeout : 10;
    mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (db->io_timeout > 0) {
        unsigned int io = (unsigned)db->io_timeout;
        mysql_options(my, MYSQL_OPT_READ_TIMEOUT, &io);
        mysql_options(my, MYSQL_OPT_WRITE_TIMEOUT, &io);
    }
    /* found rows, as DBD::mysql: an UPDATE that matches a row counts it
     * even when the values were already there (DB_EXPECT_ONE relies on it) */
    /* on failure the caller reads mysql_errno, then closes */
    mysql_real_connect(my, host, db->user, db->password, database, (unsigned)db->port, db->socket, CLIENT_FOUND_ROWS);
    return my;
}

static int my_connect(struct db_worker *w, char *err, size_t errlen)
{
    struct db *db = w->db;
    const char *host = db->host && *db->host ? db->host : "localhost";
    w->my = my_try(db, host, db->database);
    if (!w->my) {
        snprintf(err, errlen, "mysql_init failed");
        return -1;
    }
    if (mysql_errno(w->my) == ER_BAD_DB_ERROR && db->database) {
        /* Create the database on first use. */
        mysql_close(w->my);
        w->my = my_try(db, host, NULL);
        if (w->my && mysql_errno(w->my) == 0) {
            char q[300];
            snprintf(q, sizeof q, "CREATE DATABASE IF NOT EXISTS `%s`", db->database);
            if (mysql_query(w->my, q) == 0)
                mysql_select_db(w->my, db->database);
        }
    }
    if (!w->my || mysql_errno(w->my) != 0) {
        snprintf(err, errlen, "mysql %s: %s", host, w->my ? mysql_error(w->my) : "mysql_init failed");
        if (w->my)
            mysql_close(w->my);
        w->my = NULL;
        return -1;
    }
    mysql_autocommit(w->my, 1);
    return 0;
}

static size_t my_escape(void *ctx, char *out, const char *s, size_t len)
{
    return mysql_real_escape_string(ctx, out, s, (unsigned long)len);
}

static bool my_lost_errno(unsigned e) { return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST; }

static void my_drop(struct db_worker *w)
{
    mysql_close(w->my);
    w->my = NULL;
}

static void my_run(struct db_worker *w, const struct req_stmt *q, struct db_result *res, bool may_retry)
{
    char err[256];
    if (!w->my && worker_connect(w, err, sizeof err) < 0) {
        result_error(res, "%s", err);
        res->lost = true;
        return;
    }
    size_t need = db_expand_bound(q->sql, q->params, q->nparams);
    if (need > w->esc_cap) {
        char *p = realloc(w->esc, need);
        if (!p) {
            result_error(res, "%s", "out of memory");
            return;
        }
        w->esc = p;
        w->esc_cap = need;
    }
    long len = db_expand_placeholders_with(q->sql, q->params, q->nparams, w->esc, w->esc_cap, my_escape, w->my);
    if (len < 0) {
        result_error(res, "%s", "number of placeholders and parameters differ");
        return;
    }
    if (mysql_real_query(w->my, w->esc, (unsigned long)len) != 0) {
        unsigned e = mysql_errno(w->my);
        result_error(res, "%s", mysql_error(w->my));
        if (my_lost_errno(e)) {
            my_drop(w);
            if (may_retry) {
                res->status = 0;
                res->error[0] = '\0';
                my_run(w, q, res, false);
            }
        }
        return;
    }
    MYSQL_RES *mr = mysql_store_result(w->my);
    if (!mr) {
        if (mysql_field_count(w->my) != 0) {
            result_error(res, "%s", mysql_error(w->my));
            return;
        }
        res->affected = (uint64_t)mysql_affected_rows(w->my);
        res->last_id = (int64_t)mysql_insert_id(w->my);
        return;
    }
    struct result_builder b = { .res = res };
    res->ncols = (int)mysql_num_fields(mr);
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(mr))) {
        unsigned long *lens = mysql_fetch_lengths(mr);
        for (int c = 0; c < res->ncols; c++)
            result_add_cell(&b, row[c], row[c] ? lens[c] : 0, row[c] == NULL);
        res->nrows++;
    }
    mysql_free_result(mr);
}

/* A statement without parameters or result; on a lost connection, retry
 * once on a new one when may_retry (nothing of a transaction is lost). */
static int my_simple(struct db_worker *w, const char *sql, bool may_retry)
{
    if (!w->my) {
        char err[256];
        if (worker_connect(w, err, sizeof err) < 0)
            return -1;
    }
    if (mysql_query(w->my, sql) != 0) {
        if (my_lost_errno(mysql_errno(w->my))) {
            my_drop(w);
            if (may_retry)
                return my_simple(w, sql, false);
        }
        return -1;
    }
    MYSQL_RES *mr = mysql_store_result(w->my);
    if (mr)
        mysql_free_result(mr);
    return 0;
}

/* ---- transactions ------------------------------------------------------------ */

/* BEGIN, connecting first if need be; false + err (err_class(w) says why:
 * DB_ELOST when there is no connection). */
static bool txn_begin(struct db_worker *w, char *err, size_t errlen)
{
    if (!worker_connected(w) && worker_connect(w, err, errlen) < 0)
        return false;
    if (w->db->driver == DB_SQLITE)
        return sq_exec(w, "BEGIN IMMEDIATE", err, errlen) == 0;
    if (my_simple(w, "START TRANSACTION", true) == 0)
        return true;
    snprintf(err, errlen, "%s", w->my ? mysql_error(w->my) : "connection lost");
    return false;
}

/* COMMIT or ROLLBACK; 0 or -1 with the reason in why. */
static int txn_end(struct db_worker *w, const char *sql, char *why, size_t whylen)
{
    if (w->db->driver == DB_SQLITE) {
        if (!w->sq) {
            snprintf(why, whylen, "no connection");
            return -1;
        }
        return sq_exec(w, sql, why, whylen);
    }
    if (my_simple(w, sql, false) == 0)
        return 0;
    snprintf(why, whylen, "%s", w->my ? mysql_error(w->my) : "connection lost");
    return -1;
}

/* After a failed statement inside a transaction: did the failure end the
 * transaction (everything before it undone)? SQLite rolls back by itself on
 * SQLITE_FULL, IOERR, NOMEM...; MySQL on a deadlock or a lost connection. */
static bool txn_gone(struct db_worker *w)
{
    if (w->db->driver == DB_SQLITE)
        return !w->sq || sqlite3_get_autocommit(w->sq) != 0;
    if (!w->my)
        return true;
    /* An error packet carries no server status: after a deadlock (InnoDB
     * rolls the whole transaction back) the status cached from the last OK
     * still says "in a transaction". The error itself tells. */
    unsigned e = mysql_errno(w->my);
    if (e == ER_LOCK_DEADLOCK || (e >= 2000 && e < 3000))
        return true;
    unsigned int status = 0;
    if (mariadb_get_infov(w->my, MARIADB_CONNECTION_SERVER_STATUS, &status) == 0)
        return !(status & SERVER_STATUS_IN_TRANS);
    return mysql_errno(w->my) == ER_LOCK_DEADLOCK;
}

/* ---- the blocking statement API (db_conn) ----------------------------------- */

static void run_stmt(struct db_worker *w, const struct req_stmt *q, struct db_result *res, bool in_txn);

struct db_conn {
    struct db_worker *w; /* the connection: a db worker's, or own_db's only worker */
    struct db *own_db;   /* db_conn_open: settings and the worker */
    bool lost;           /* db_conn_open: DB_ELOST seen, no more statements */
    enum db_err last;    /* the class of the last failure */
    uint64_t affected;
    int64_t last_id;
    char err[256];
    char fail[256]; /* db_run_fail's message */
};

/* The class of the error the last statement on w got. */
static enum db_err err_class(struct db_worker *w)
{
    if (w->db->driver == DB_SQLITE) {
        if (!w->sq)
            return DB_ELOST;
        int x = sqlite3_extended_errcode(w->sq);
        switch (x & 0xff) {
        case SQLITE_CONSTRAINT:
            return x == SQLITE_CONSTRAINT_UNIQUE || x == SQLITE_CONSTRAINT_PRIMARYKEY ? DB_EDUP : DB_EOTHER;
        case SQLITE_BUSY:
        case SQLITE_LOCKED: return DB_EABORT;
        case SQLITE_IOERR:
        case SQLITE_CORRUPT:
        case SQLITE_FULL:
        case SQLITE_CANTOPEN:
        case SQLITE_NOTADB:
        case SQLITE_READONLY: return DB_ELOST;
        default: return DB_EOTHER;
        }
    }
    if (!w->my)
        return DB_ELOST;
    unsigned e = mysql_errno(w->my);
    if (e == ER_DUP_ENTRY || e == ER_DUP_KEY)
        return DB_EDUP;
    if (e == ER_LOCK_DEADLOCK || e == ER_LOCK_WAIT_TIMEOUT)
        return DB_EABORT;
    if (e >= 2000 && e < 3000) /* client errors: server gone, lost, timed out */
        return DB_ELOST;
    if (e == ER_SERVER_SHUTDOWN || e == ER_QUERY_INTERRUPTED || e == ER_CON_COUNT_ERROR || e == ER_OUT_OF_RESOURCES)
        return DB_ELOST;
    return DB_EOTHER;
}

static enum db_err conn_failed(struct db_conn *c, enum db_err e)
{
    if (e == DB_ELOST && c->own_db)
        c->lost = true;
    c->last = e;
    return e;
}

static bool conn_usable(struct db_conn *c)
{
    if (c->lost || !worker_connected(c->w)) {
        snprintf(c->err, sizeof c->err, "database connection lost");
        c->lost = c->own_db != NULL;
        c->last = DB_ELOST;
        return false;
    }
    return true;
}

enum db_err db_conn_query(struct db_conn *c, const char *sql, const struct db_value *params, int nparams,
                          struct db_result *res)
{
    struct db_result tmp;
    if (!res)
        res = &tmp;
    memset(res, 0, sizeof *res);
    res->failed_stmt = -1;
    c->err[0] = '\0';
    if (!conn_usable(c)) {
        result_error(res, "%s", c->err);
        if (res == &tmp)
            db_result_clear(res);
        return DB_ELOST;
    }
    /* never reconnects: the statement may be part of a transaction */
    struct req_stmt q = { .sql = (char *)sql, .params = (struct db_value *)params, .nparams = nparams };
    run_stmt(c->w, &q, res, true);
    enum db_err e = DB_OK;
    if (res->status != 0) {
        snprintf(c->err, sizeof c->err, "%s", res->error);
        e = conn_failed(c, err_class(c->w));
    } else {
        c->affected = res->affected;
        c->last_id = res->last_id;
    }
    if (res == &tmp)
        db_result_clear(res);
    return e;
}

enum db_err db_conn_exec(struct db_conn *c, const char *sql)
{
    c->err[0] = '\0';
    if (!conn_usable(c))
        return DB_ELOST;
    struct db_worker *w = c->w;
    if (w->db->driver == DB_SQLITE) {
        if (sq_exec(w, sql, c->err, sizeof c->err) < 0)
            return conn_failed(c, err_class(w));
        return DB_OK;
    }
    if (mysql_query(w->my, sql) != 0) {
        snprintf(c->err, sizeof c->err, "%s", mysql_error(w->my));
        enum db_err e = err_class(w);
        if (my_lost_errno(mysql_errno(w->my)))
            my_drop(w);
        return conn_failed(c, e);
    }
    MYSQL_RES *mr = mysql_store_result(w->my);
    if (mr)
        mysql_free_result(mr);
    return DB_OK;
}

uint64_t db_conn_affected(const struct db_conn *c) { return c->affected; }
int64_t db_conn_last_id(const struct db_conn *c) { return c->last_id; }
const char *db_conn_error(const struct db_conn *c) { return c->err; }
enum db_driver db_conn_driver(const struct db_conn *c) { return c->w->db->driver; }
int db_conn_worker(const struct db_conn *c) { return c->own_db ? -1 : c->w->index; }
uint64_t db_conn_epoch(const struct db_conn *c) { return c->w->epoch; }
bool db_conn_in_txn(const struct db_conn *c) { return !txn_gone(c->w); }

/* Connect w (SQLite open or MySQL connect) and run the handle's on_connect
 * hook; on the worker's thread, or at db_open. */
static int worker_connect(struct db_worker *w, char *err, size_t errlen)
{
    struct db *db = w->db;
    int rc = db->driver == DB_SQLITE ? sq_connect(w, err, errlen) : my_connect(w, err, errlen);
    if (rc < 0)
        return -1;
    w->epoch++;
    if (db->on_connect) {
        struct db_conn c = { .w = w };
        if (db->on_connect(&c, db->on_connect_arg) < 0) {
            snprintf(err, errlen, "%s", c.err[0] ? c.err : "connection set-up failed");
            if (w->sq) {
                sqlite3_close(w->sq);
                w->sq = NULL;
            }
            if (w->my)
                my_drop(w);
            return -1;
        }
    }
    atomic_fetch_add(&db->n_connects, 1);
    return 0;
}

void db_run_fail(struct db_conn *c, const char *why) { snprintf(c->fail, sizeof c->fail, "%s", why ? why : ""); }

void db_result_clear(struct db_result *res)
{
    if (!res)
        return;
    size_t n = res->nrows * (size_t)res->ncols;
    for (size_t i = 0; i < n; i++)
        free(res->cells[i].p);
    free(res->cells);
    for (int k = 0; k < res->nstmts; k++)
        db_result_free(res->stmts[k]);
    free(res->stmts);
    memset(res, 0, sizeof *res);
    res->failed_stmt = -1;
}

/* ---- the worker ------------------------------------------------------------ */

static void run_stmt(struct db_worker *w, const struct req_stmt *q, struct db_result *res, bool in_txn)
{
    if (w->db->driver == DB_SQLITE) {
        char err[256];
        if (!w->sq && worker_connect(w, err, sizeof err) < 0) {
            result_error(res, "%s", err);
            res->lost = true;
            return;
        }
        sq_run(w, q, res);
    } else
        my_run(w, q, res, !in_txn);
}

static void run_fn(struct db_worker *w, struct db_req *r, bool savepoint);
static void run_fn_txn(struct db_worker *w, struct db_req *r);

static void run_txn(struct db_worker *w, struct db_req *r, bool savepoint);

/* The class of the failure r's result reports, right after r ran on w. */
static enum db_err req_class(struct db_worker *w, const struct db_req *r)
{
    return r->kind == REQ_RUN ? r->cls : err_class(w);
}

/* r fails without running: why, and whether the connection is the cause. */
static void fail_req(struct db_worker *w, struct db_req *r, const char *why, bool lost)
{
    db_result_free(r->res);
    r->res = result_new();
    atomic_fetch_add(&w->db->n_requests, 1);
    atomic_fetch_add(&w->db->n_errors, 1);
    result_error(r->res, "%s", why);
    r->res->lost = lost;
    r->cls = lost ? DB_ELOST : DB_EOTHER;
}

static void run_one(struct db_worker *w, struct db_req *r, bool in_txn)
{
    if (r->kind == REQ_RUN) {
        if (in_txn)
            run_fn(w, r, !(r->flags & DB_NO_SAVEPOINT));
        else
            run_fn_txn(w, r);
        return;
    }
    if (r->kind == REQ_TXN) {
        run_txn(w, r, in_txn);
        return;
    }
    db_result_free(r->res);
    r->res = result_new();
    if (!r->one.sql)
        return; /* barrier */
    run_stmt(w, &r->one, r->res, in_txn);
    atomic_fetch_add(&w->db->n_requests, 1);
    if (r->res->status != 0) {
        atomic_fetch_add(&w->db->n_errors, 1);
        if (err_class(w) == DB_ELOST)
            r->res->lost = true;
    }
}

static void fail_ran(struct db_req *from, struct db_req *to, const char *fmt, const char *why, bool lost)
{
    for (struct db_req *r = from; r != to; r = r->next)
        if (r->res && r->res->status == 0) {
            result_error(r->res, fmt, why);
            r->res->lost = lost;
            atomic_fetch_add(&r->db->n_errors, 1);
        }
}

/* Before a rerun: the results of [from, to) are dropped. */
static void reset_results(struct db_req *from, struct db_req *to)
{
    for (struct db_req *r = from; r != to; r = r->next) {
        db_result_free(r->res);
        r->res = NULL;
    }
}

/* A db_txn: in a transaction of its own, or (savepoint) inside a group's
 * transaction, undone alone when one of its statements fails. */
static void run_txn(struct db_worker *w, struct db_req *r, bool savepoint)
{
    struct db *db = w->db;
    struct db_result *top = r->res = result_new();
    atomic_fetch_add(&db->n_requests, 1);
    top->stmts = calloc((size_t)r->nstmts, sizeof *top->stmts);
    if (!top->stmts) {
        result_error(top, "%s", "out of memory");
        atomic_fetch_add(&db->n_errors, 1);
        return;
    }
    top->nstmts = r->nstmts;
    if (savepoint) {
        struct db_conn c = { .w = w };
        if (db_conn_exec(&c, "SAVEPOINT db_txn") != DB_OK) {
            result_error(top, "savepoint: %.200s", c.err);
            atomic_fetch_add(&db->n_errors, 1);
            return;
        }
    } else {
        char err[256];
        if (!txn_begin(w, err, sizeof err)) {
            result_error(top, "begin failed: %.200s", err);
            top->lost = err_class(w) == DB_ELOST;
            atomic_fetch_add(&db->n_errors, 1);
            return;
        }
    }
    char why[200];
    for (int k = 0; k < r->nstmts; k++) {
        struct db_result *sub = top->stmts[k] = result_new();
        run_stmt(w, &r->stmts[k], sub, true);
        if (sub->status == 0 && (r->stmts[k].flags & DB_EXPECT_ONE) && sub->affected != 1) {
            char m[96];
            snprintf(m, sizeof m, "changed %llu rows, expected 1", (unsigned long long)sub->affected);
            result_error(sub, "%s", m);
        }
        if (sub->status != 0) {
            top->status = -1;
            top->failed_stmt = k;
            snprintf(top->error, sizeof top->error, "statement %d: %.200s", k + 1, sub->error);
            if (!savepoint)
                txn_end(w, "ROLLBACK", why, sizeof why);
            else if (!txn_gone(w)) {
                struct db_conn c = { .w = w };
                if (db_conn_exec(&c, "ROLLBACK TO SAVEPOINT db_txn") == DB_OK)
                    db_conn_exec(&c, "RELEASE SAVEPOINT db_txn");
            }
            atomic_fetch_add(&db->n_rollbacks, 1);
            atomic_fetch_add(&db->n_errors, 1);
            return;
        }
    }
    if (savepoint) {
        /* committed (or failed) with the group */
        struct db_conn c = { .w = w };
        if (db_conn_exec(&c, "RELEASE SAVEPOINT db_txn") != DB_OK) {
            result_error(top, "release savepoint: %.200s", c.err);
            atomic_fetch_add(&db->n_errors, 1);
        }
        return;
    }
    if (txn_end(w, "COMMIT", why, sizeof why) != 0) {
        result_error(top, "commit failed: %s", why);
        txn_end(w, "ROLLBACK", why, sizeof why);
        atomic_fetch_add(&db->n_rollbacks, 1);
        atomic_fetch_add(&db->n_errors, 1);
        return;
    }
    atomic_fetch_add(&db->n_commits, 1);
}

/* A db_run callback on w's connection; with savepoint, inside the group's
 * transaction, its work undone alone when it fails. r->cls says why. */
static void run_fn(struct db_worker *w, struct db_req *r, bool savepoint)
{
    struct db *db = w->db;
    db_result_free(r->res);
    r->res = result_new();
    r->cls = DB_OK;
    atomic_fetch_add(&db->n_requests, 1);
    struct db_conn c = { .w = w };
    if (savepoint && db_conn_exec(&c, "SAVEPOINT db_run") != DB_OK) {
        result_error(r->res, "savepoint: %.200s", c.err);
        goto failed;
    }
    if (r->fn(&c, r->fn_ctx) == 0) {
        r->cls = c.last; /* a failure fn chose to live with (the group checks the transaction) */
        if (savepoint && !txn_gone(w) && db_conn_exec(&c, "RELEASE SAVEPOINT db_run") != DB_OK) {
            result_error(r->res, "release savepoint: %.200s", c.err);
            goto failed;
        }
        return;
    }
    result_error(r->res, "%s", c.fail[0] ? c.fail : c.err[0] ? c.err : "operation failed");
    if (savepoint && !txn_gone(w)) {
        struct db_conn u = { .w = w };
        if (db_conn_exec(&u, "ROLLBACK TO SAVEPOINT db_run") == DB_OK)
            db_conn_exec(&u, "RELEASE SAVEPOINT db_run");
        w->epoch++;
    }
failed:
    r->cls = c.last;
    r->res->lost = c.last == DB_ELOST;
    atomic_fetch_add(&db->n_errors, 1);
}

/* A db_run callback alone: in a transaction of its own (or, with
 * DB_AUTOCOMMIT, in none); rerun when the database aborted it. */
static void run_fn_txn(struct db_worker *w, struct db_req *r)
{
    struct db *db = w->db;
    char why[256], ignore[256];
    for (int attempt = 0;; attempt++) {
        if (r->flags & DB_AUTOCOMMIT) {
            if (!worker_connected(w) && worker_connect(w, why, sizeof why) < 0) {
                fail_req(w, r, why, true);
                return;
            }
            run_fn(w, r, false);
            if (r->res->status == 0)
                atomic_fetch_add(&db->n_commits, 1);
        } else if (!txn_begin(w, why, sizeof why)) {
            enum db_err cls = err_class(w);
            char m[300];
            snprintf(m, sizeof m, "begin failed: %s", why);
            fail_req(w, r, m, cls == DB_ELOST);
            r->cls = cls;
        } else {
            run_fn(w, r, false);
            if (r->res->status != 0) {
                txn_end(w, "ROLLBACK", ignore, sizeof ignore);
                atomic_fetch_add(&db->n_rollbacks, 1);
                w->epoch++;
            } else if (txn_end(w, "COMMIT", why, sizeof why) != 0) {
                r->cls = err_class(w);
                result_error(r->res, "commit failed: %.200s", why);
                r->res->lost = r->cls == DB_ELOST;
                txn_end(w, "ROLLBACK", ignore, sizeof ignore);
                atomic_fetch_add(&db->n_rollbacks, 1);
                atomic_fetch_add(&db->n_errors, 1);
                w->epoch++;
            } else {
                atomic_fetch_add(&db->n_commits, 1);
                return;
            }
        }
        if (r->res->status == 0 || r->cls != DB_EABORT || attempt == 3)
            return;
        atomic_fetch_add(&db->n_reruns, 1);
    }
}

/* Requests [g, end) are DB_GROUP requests: run them in as few transactions
 * as possible. A failure that ends the transaction fails every request of
 * it that had run, and the rest go on in a new one; unless the database
 * aborted it (deadlock, busy): then the transaction is run again from its
 * first request, up to 3 times. */
static void run_group(struct db_worker *w, struct db_req *g, struct db_req *end)
{
    struct db *db = w->db;
    struct db_req *r = g;
    char why[256], ignore[256];
    int reruns = 0;
    while (r != end) {
        if (!txn_begin(w, why, sizeof why)) {
            if (!worker_connected(w)) {
                /* the database is down: every request hears it now */
                for (; r != end; r = r->next)
                    fail_req(w, r, why, true);
                return;
            }
            /* no transaction to be had: each request commits on its own */
            for (; r != end; r = r->next) {
                run_one(w, r, false);
                if (r->kind == REQ_QUERY)
                    atomic_fetch_add(&db->n_commits, 1);
            }
            return;
        }
        struct db_req *start = r;
        bool gone = false;
        for (; r != end; r = r->next) {
            run_one(w, r, true);
            /* a failure may have ended the transaction (and an operation
             * may have carried on past one): then none of it stands */
            if ((r->res->status != 0 || r->kind == REQ_RUN) && txn_gone(w)) {
                gone = true;
                break;
            }
        }
        struct db_req *upto = gone ? r->next : end;
        enum db_err cls;
        if (gone) {
            cls = req_class(w, r);
            snprintf(why, sizeof why, "%.199s", r->res->error[0] ? r->res->error : "the transaction ended");
        } else if (txn_end(w, "COMMIT", why, sizeof why) != 0)
            cls = err_class(w);
        else {
            atomic_fetch_add(&db->n_commits, 1);
            continue;
        }
        txn_end(w, "ROLLBACK", ignore, sizeof ignore); /* after a gone one: harmless */
        atomic_fetch_add(&db->n_rollbacks, 1);
        w->epoch++;
        if (cls == DB_EABORT && reruns < 3) {
            reruns++;
            atomic_fetch_add(&db->n_reruns, 1);
            reset_results(start, upto);
            r = start;
            continue;
        }
        if (gone) {
            fail_ran(start, r->next, "rolled back: %.200s", why, cls == DB_ELOST);
            r = r->next;
        } else
            fail_ran(start, end, "commit failed: %.200s", why, cls == DB_ELOST);
    }
}

/* SQLite: synchronous=NORMAL for a unit made only of DB_NO_FSYNC requests,
 * FULL for any other. False when FULL could not be set: nothing durable
 * may run then. */
static bool sq_sync_for(struct db_worker *w, struct db_req *from, struct db_req *to)
{
    if (w->db->driver != DB_SQLITE || !w->sq)
        return true; /* a new connection starts at FULL */
    bool lazy = true;
    for (struct db_req *r = from; r != to && lazy; r = r->next)
        lazy = (r->flags & DB_NO_FSYNC) != 0;
    if (lazy == w->sync_normal)
        return true;
    char err[256];
    if (sq_exec(w, lazy ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", err, sizeof err) < 0)
        return lazy; /* still at FULL: safe for a lazy unit */
    w->sync_normal = lazy;
    return true;
}

static bool groupable(const struct db_req *r)
{
    return r && (r->flags & DB_GROUP) && ((r->kind == REQ_QUERY && r->one.sql) || r->kind != REQ_QUERY);
}

static void run_batch(struct db_worker *w, struct db_req *first)
{
    struct db_req *r = first;
    while (r) {
        struct db_req *end = r->next;
        if (groupable(r) && groupable(r->next)) {
            end = r;
            while (groupable(end))
                end = end->next;
        }
        if (!sq_sync_for(w, r, end)) {
            for (; r != end; r = r->next)
                fail_req(w, r, "cannot set synchronous=FULL: nothing durable can run", false);
            continue;
        }
        if (end != r->next)
            run_group(w, r, end);
        else {
            run_one(w, r, false);
            if (r->kind == REQ_QUERY && r->one.sql && (r->flags & DB_GROUP))
                atomic_fetch_add(&w->db->n_commits, 1);
        }
        r = end;
    }
}

static void req_free(struct db_req *r)
{
    db_result_free(r->res);
    free(r->one.sql);
    free(r->one.params);
    for (int k = 0; k < r->nstmts; k++) {
        free(r->stmts[k].sql);
        free(r->stmts[k].params);
    }
    free(r->stmts);
    free(r);
}

static void req_deliver(struct db_req *r)
{
    if (r->done)
        r->done(r->res, r->arg);
    req_free(r);
}

static void req_msg_run(struct work_msg *msg)
{
    req_deliver((struct db_req *)((char *)msg - offsetof(struct db_req, msg)));
}

/* Results go back to their loops one chain per loop (a batch usually
 * serves one or two): one mailbox post and at most one wake-up each,
 * where a post per request could wake a loop that keeps up once per
 * request (measured: about one more context switch per schwartz job). */
#define DELIVER_LOOPS 8
static void deliver_batch(struct db_req *first)
{
    struct {
        struct core_loop *loop;
        struct work_msg *head, *tail;
    } to[DELIVER_LOOPS];
    int nto = 0;
    for (struct db_req *r = first, *n; r; r = n) {
        n = r->next;
        r->next = NULL;
        if (r->sync_mu) {
            /* the waiter frees r: touch nothing after the signal */
            pthread_mutex_lock(r->sync_mu);
            *r->sync_done = true;
            pthread_cond_signal(r->sync_cv);
            pthread_mutex_unlock(r->sync_mu);
        } else if (r->loop) {
            r->msg.run = req_msg_run;
            r->msg.owner = r->db;
            r->msg.next = NULL;
            int k = 0;
            while (k < nto && to[k].loop != r->loop)
                k++;
            if (k == nto && nto == DELIVER_LOOPS) {
                work_post_msg(r->loop, &r->msg); /* more loops than slots: this one alone */
                continue;
            }
            if (k == nto) {
                to[nto].loop = r->loop;
                to[nto].head = NULL;
                nto++;
            }
            if (to[k].head)
                to[k].tail->next = &r->msg;
            else
                to[k].head = &r->msg;
            to[k].tail = &r->msg;
        } else
            req_deliver(r);
    }
    for (int k = 0; k < nto; k++)
        work_post_msgs(to[k].loop, to[k].head, to[k].tail);
}

/* Drain q on worker w until it is empty. Runs on a pool thread. */
static void drain(struct db_worker *w, struct req_queue *q, int *drains)
{
    struct db *db = w->db;
    pthread_mutex_lock(&db->mu);
    for (;;) {
        struct db_req *first = q->head, *last = first;
        if (!first) {
            (*drains)--;
            break;
        }
        int n = 1;
        while (last->next && n < db->max_batch) {
            last = last->next;
            n++;
        }
        q->head = last->next;
        if (!q->head)
            q->tail = NULL;
        last->next = NULL;
        db->queued -= (size_t)n;
        pthread_mutex_unlock(&db->mu);
        run_batch(w, first);
        deliver_batch(first);
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
}

static void drain_shared(void *arg)
{
    struct db *db = arg;
    int i = work_thread_index();
    drain(&db->w[i >= 0 ? i : 0], &db->shared, &db->shared_drains);
}

static void drain_pinned(void *arg)
{
    struct db_worker *w = arg;
    drain(w, &w->pinned, &w->drains);
}

/* ---- public ------------------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void worker_close(struct db_worker *w)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (w->cache[i].st) {
            sqlite3_finalize(w->cache[i].st);
            free(w->cache[i].sql);
        }
    if (w->sq)
        sqlite3_close(w->sq);
    if (w->my)
        mysql_close(w->my);
    free(w->esc);
}

static void db_free(struct db *db)
{
    for (int i = 0; i < db->nworkers; i++)
        worker_close(&db->w[i]);
    free(db->w);
    free(db->path);
    free(db->host);
    free(db->socket);
    free(db->user);
    free(db->password);
    free(db->database);
    pthread_mutex_destroy(&db->mu);
    free(db);
}

/* mysql_library_init is not thread-safe: once per process, whoever comes first */
static pthread_once_t my_lib_once = PTHREAD_ONCE_INIT;
static void my_lib_init(void) { mysql_library_init(0, NULL, NULL); }

static void db_settings(struct db *db, const struct db_config *cfg)
{
    db->driver = cfg->driver;
    db->path = dup_or_null(cfg->path);
    db->host = dup_or_null(cfg->host);
    db->socket = dup_or_null(cfg->socket);
    db->user = dup_or_null(cfg->user);
    db->password = dup_or_null(cfg->password);
    db->database = dup_or_null(cfg->database);
    db->port = cfg->port > 0 ? cfg->port : (cfg->driver == DB_MYSQL ? 3306 : 0);
    db->max_batch = cfg->max_batch > 0 ? cfg->max_batch : 1024;
    db->busy_ms = cfg->busy_timeout_ms > 0 ? cfg->busy_timeout_ms : 5000;
    db->max_queued = cfg->max_queued > 0 ? cfg->max_queued : 100000;
    db->connect_timeout = cfg->connect_timeout_s;
    db->io_timeout = cfg->io_timeout_s;
    pthread_mutex_init(&db->mu, NULL);
}

static int config_check(const struct db_config *cfg, char *err, size_t errlen)
{
    if (cfg->driver != DB_SQLITE && cfg->driver != DB_MYSQL) {
        snprintf(err, errlen, "unknown db driver");
        return -1;
    }
    if (cfg->driver == DB_SQLITE && (!cfg->path || !*cfg->path)) {
        snprintf(err, errlen, "sqlite needs a database path");
        return -1;
    }
    return 0;
}

struct db_conn *db_conn_open(const struct db_config *cfg, char *err, size_t errlen)
{
    if (config_check(cfg, err, errlen) < 0)
        return NULL;
    struct db_conn *c = calloc(1, sizeof *c);
    struct db *db = calloc(1, sizeof *db);
    struct db_worker *w = calloc(1, sizeof *w);
    if (!c || !db || !w) {
        free(c);
        free(db);
        free(w);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->driver == DB_MYSQL)
        pthread_once(&my_lib_once, my_lib_init);
    db_settings(db, cfg);
    db->nworkers = 1;
    db->w = w;
    w->db = db;
    c->own_db = db;
    c->w = w;
    int rc = db->driver == DB_SQLITE ? sq_connect(w, err, errlen) : my_connect(w, err, errlen);
    if (rc < 0) {
        db_conn_close(c);
        return NULL;
    }
    return c;
}

void db_conn_close(struct db_conn *c)
{
    if (!c)
        return;
    if (c->own_db)
        db_free(c->own_db);
    free(c);
}

struct db *db_open(const struct db_config *cfg, char *err, size_t errlen)
{
    if (config_check(cfg, err, errlen) < 0)
        return NULL;
    if (cfg->driver == DB_MYSQL)
        pthread_once(&my_lib_once, my_lib_init);
    struct db *db = calloc(1, sizeof *db);
    if (!db) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    db_settings(db, cfg);
    db->connect_later = cfg->connect_later;
    db->on_connect = cfg->on_connect;
    db->on_connect_arg = cfg->on_connect_arg;
    db->nworkers = cfg->workers > 0 ? cfg->workers : 1;
    db->w = calloc((size_t)db->nworkers, sizeof *db->w);
    if (!db->w) {
        db->nworkers = 0;
        db_free(db);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* Connect every worker here, blocking: start-up only. A connection is
     * then used by its pool thread alone. With connect_later, a database
     * that is down is tried again by each worker when it has work. */
    if (errlen)
        err[0] = '\0';
    for (int i = 0; i < db->nworkers; i++) {
        struct db_worker *w = &db->w[i];
        w->db = db;
        w->index = i;
    }
    for (int i = 0; i < db->nworkers; i++) {
        if (worker_connect(&db->w[i], err, errlen) < 0) {
            if (db->connect_later)
                break; /* the others would fail alike */
            db_free(db);
            return NULL;
        }
    }
    db->pool = work_pool_new("db", db->nworkers, 0);
    if (!db->pool) {
        snprintf(err, errlen, "cannot start db threads: %s", strerror(errno));
        db_free(db);
        return NULL;
    }
    return db;
}

enum db_driver db_get_driver(const struct db *db) { return db->driver; }

db_pin_t db_pin(struct db *db) { return (db_pin_t)(atomic_fetch_add(&db->next_pin, 1) % (unsigned)db->nworkers) + 1; }

/* Copy one statement (text and parameter bytes) into q. */
static int stmt_copy(struct req_stmt *q, const char *sql, const struct db_value *params, int nparams, int flags)
{
    q->nparams = nparams;
    q->flags = flags;
    if (sql && !(q->sql = strdup(sql)))
        return -1;
    if (nparams > 0) {
        size_t blob = 0;
        for (int i = 0; i < nparams; i++)
            if (params[i].type == DB_TEXT || params[i].type == DB_BLOB)
                blob += params[i].len + 1;
        q->params = malloc((size_t)nparams * sizeof *q->params + blob);
        if (!q->params)
            return -1;
        char *p = (char *)(q->params + nparams);
        for (int i = 0; i < nparams; i++) {
            q->params[i] = params[i];
            if (params[i].type == DB_TEXT || params[i].type == DB_BLOB) {
                if (params[i].len)
                    memcpy(p, params[i].p, params[i].len);
                p[params[i].len] = '\0';
                q->params[i].p = p;
                p += params[i].len + 1;
            }
        }
    }
    return 0;
}

static struct db_req *req_new(struct db *db, struct core_loop *loop, int flags, db_done_fn done, void *arg)
{
    struct db_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->db = db;
    r->flags = flags;
    r->loop = loop;
    r->done = done;
    r->arg = arg;
    return r;
}

static struct db_req *req_query(struct db *db, struct core_loop *loop, int flags, const char *sql,
                                const struct db_value *params, int nparams, db_done_fn done, void *arg)
{
    struct db_req *r = req_new(db, loop, flags, done, arg);
    if (r && stmt_copy(&r->one, sql, params, nparams, 0) < 0) {
        req_free(r);
        r = NULL;
    }
    return r;
}

static struct db_req *req_txn(struct db *db, struct core_loop *loop, int flags, const struct db_stmt *stmts, int n,
                              db_done_fn done, void *arg)
{
    if (n < 1 || n > 10000)
        return NULL;
    struct db_req *r = req_new(db, loop, flags, done, arg);
    if (!r)
        return NULL;
    r->kind = REQ_TXN;
    r->stmts = calloc((size_t)n, sizeof *r->stmts);
    if (!r->stmts) {
        req_free(r);
        return NULL;
    }
    r->nstmts = n;
    for (int k = 0; k < n; k++)
        if (!stmts[k].sql ||
            stmt_copy(&r->stmts[k], stmts[k].sql, stmts[k].params, stmts[k].nparams, stmts[k].flags) < 0) {
            req_free(r);
            return NULL;
        }
    return r;
}

static int enqueue(struct db *db, db_pin_t pin, struct db_req *r)
{
    if (pin < 0 || pin > db->nworkers) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&db->mu);
    if (db->closing || db->queued >= db->max_queued) {
        int e = db->closing ? ESHUTDOWN : EAGAIN;
        if (!db->closing)
            atomic_fetch_add(&db->n_rejected, 1);
        pthread_mutex_unlock(&db->mu);
        errno = e;
        return -1;
    }
    struct req_queue *q;
    int rc = 0;
    if (pin > 0) {
        struct db_worker *w = &db->w[pin - 1];
        q = &w->pinned;
        if (w->drains == 0 && (rc = work_submit_to(db->pool, pin - 1, NULL, drain_pinned, NULL, w)) == 0)
            w->drains = 1;
    } else {
        q = &db->shared;
        /* the drain runs only after we unlock, and finds r queued */
        if (db->shared_drains < db->nworkers && (rc = work_submit(db->pool, NULL, drain_shared, NULL, db)) == 0)
            db->shared_drains++;
    }
    if (rc < 0 && (pin > 0 ? db->w[pin - 1].drains == 0 : db->shared_drains == 0)) {
        /* no drain running to pick it up */
        int e = errno;
        pthread_mutex_unlock(&db->mu);
        errno = e;
        return -1;
    }
    r->next = NULL;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    db->queued++;
    pthread_mutex_unlock(&db->mu);
    return 0;
}

static int submit(struct db *db, db_pin_t pin, struct db_req *r)
{
    if (!r) {
        errno = ENOMEM;
        return -1;
    }
    if (enqueue(db, pin, r) < 0) {
        int e = errno;
        req_free(r);
        errno = e;
        return -1;
    }
    return 0;
}

int db_query_on(struct db *db, db_pin_t pin, struct core_loop *loop, int flags, const char *sql,
                const struct db_value *params, int nparams, db_done_fn done, void *arg)
{
    return submit(db, pin, req_query(db, loop, flags, sql, params, nparams, done, arg));
}

int db_query(struct db *db, struct core_loop *loop, int flags, const char *sql, const struct db_value *params,
             int nparams, db_done_fn done, void *arg)
{
    return db_query_on(db, 0, loop, flags, sql, params, nparams, done, arg);
}

int db_run(struct db *db, db_pin_t pin, struct core_loop *loop, int flags, db_run_fn fn, void *ctx, db_done_fn done,
           void *arg)
{
    if (!fn) {
        errno = EINVAL;
        return -1;
    }
    struct db_req *r = req_new(db, loop, flags, done, arg);
    if (r) {
        r->kind = REQ_RUN;
        r->fn = fn;
        r->fn_ctx = ctx;
    }
    return submit(db, pin, r);
}

int db_txn_flags(struct db *db, db_pin_t pin, struct core_loop *loop, int flags, const struct db_stmt *stmts, int n,
                 db_done_fn done, void *arg)
{
    if (n < 1 || !stmts) {
        errno = EINVAL;
        return -1;
    }
    return submit(db, pin, req_txn(db, loop, flags & DB_GROUP, stmts, n, done, arg));
}

int db_txn(struct db *db, db_pin_t pin, struct core_loop *loop, const struct db_stmt *stmts, int n, db_done_fn done,
           void *arg)
{
    if (n < 1 || !stmts) {
        errno = EINVAL;
        return -1;
    }
    return submit(db, pin, req_txn(db, loop, 0, stmts, n, done, arg));
}

/* Submit r and wait for it (blocks the caller). */
static int wait_for(struct db *db, db_pin_t pin, struct db_req *r, struct db_result **res)
{
    *res = NULL;
    if (!r)
        return -1;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    bool done = false;
    r->sync_mu = &mu;
    r->sync_cv = &cv;
    r->sync_done = &done;
    if (enqueue(db, pin, r) < 0) {
        req_free(r);
        return -1;
    }
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    *res = r->res;
    r->res = NULL;
    req_free(r);
    pthread_mutex_destroy(&mu);
    pthread_cond_destroy(&cv);
    return (*res)->status;
}

static int query_sync_on(struct db *db, db_pin_t pin, const char *sql, const struct db_value *params, int nparams,
                         struct db_result **res)
{
    return wait_for(db, pin, req_query(db, NULL, 0, sql, params, nparams, NULL, NULL), res);
}

int db_query_sync(struct db *db, const char *sql, const struct db_value *params, int nparams, struct db_result **res)
{
    return query_sync_on(db, 0, sql, params, nparams, res);
}

static int txn_sync_on(struct db *db, db_pin_t pin, const struct db_stmt *stmts, int n, struct db_result **res)
{
    return wait_for(db, pin, req_txn(db, NULL, 0, stmts, n, NULL, NULL), res);
}

int db_txn_sync(struct db *db, const struct db_stmt *stmts, int n, struct db_result **res)
{
    return txn_sync_on(db, 0, stmts, n, res);
}

int db_exec_script(struct db *db, const char *script, char *err, size_t errlen)
{
    char *copy = strdup(script);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *stmt = strtok_r(copy, ";", &save); stmt; stmt = strtok_r(NULL, ";", &save)) {
        while (*stmt == ' ' || *stmt == '\n' || *stmt == '\t' || *stmt == '\r')
            stmt++;
        if (!*stmt)
            continue;
        struct db_result *res = NULL;
        if (db_query_sync(db, stmt, NULL, 0, &res) != 0) {
            snprintf(err, errlen, "%s", res ? res->error : "query failed");
            rc = -1;
        }
        db_result_free(res);
        if (rc)
            break;
    }
    free(copy);
    return rc;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&db->mu);
    db->closing = true;
    pthread_mutex_unlock(&db->mu);
    /* runs every drain still queued, so every request queued runs */
    work_pool_free(db->pool);
    /* Callbacks of this handle still in a mailbox run here: their loops
     * have stopped (db_close is for after loop_run). */
    work_mailbox_flush(db);
    db_free(db);
}

void db_get_counters(struct db *db, struct db_counters *out)
{
    out->requests = atomic_load(&db->n_requests);
    out->commits = atomic_load(&db->n_commits);
    out->errors = atomic_load(&db->n_errors);
    out->rejected = atomic_load(&db->n_rejected);
    out->rollbacks = atomic_load(&db->n_rollbacks);
    out->reruns = atomic_load(&db->n_reruns);
    out->connects = atomic_load(&db->n_connects);
    pthread_mutex_lock(&db->mu);
    out->queued = db->queued;
    pthread_mutex_unlock(&db->mu);
}

/* ---- schema versions ------------------------------------------------------------ */

static int version_read(struct db *db, db_pin_t pin, const char *component, char *err, size_t errlen)
{
    struct db_value v[1] = { DB_TEXTN(component, strlen(component)) };
    struct db_result *r = NULL;
    int rc = query_sync_on(db, pin, "SELECT version FROM db_schema_version WHERE component = ?", v, 1, &r);
    int version = -1;
    if (rc == 0)
        version = r->nrows ? (int)db_cell_int(r, 0, 0) : 0;
    else
        snprintf(err, errlen, "reading schema version: %s", r ? r->error : "db closing");
    db_result_free(r);
    return version;
}

static int version_table(struct db *db, db_pin_t pin, const char *component, char *err, size_t errlen)
{
    bool my = db->driver == DB_MYSQL;
    const char *create = my ? "CREATE TABLE IF NOT EXISTS db_schema_version (component VARCHAR(64) NOT NULL PRIMARY "
                              "KEY, version INT NOT NULL) ENGINE=InnoDB"
                            : "CREATE TABLE IF NOT EXISTS db_schema_version (component TEXT NOT NULL PRIMARY KEY, "
                              "version INTEGER NOT NULL)";
    const char *seed = my ? "INSERT IGNORE INTO db_schema_version (component, version) VALUES (?, 0)"
                          : "INSERT OR IGNORE INTO db_schema_version (component, version) VALUES (?, 0)";
    struct db_value v[1] = { DB_TEXTN(component, strlen(component)) };
    struct db_result *r = NULL;
    int rc = query_sync_on(db, pin, create, NULL, 0, &r);
    if (rc == 0) {
        db_result_free(r);
        r = NULL;
        rc = query_sync_on(db, pin, seed, v, 1, &r);
    }
    if (rc != 0)
        snprintf(err, errlen, "schema version table: %s", r ? r->error : "db closing");
    db_result_free(r);
    return rc;
}

int db_schema_version(struct db *db, const char *component, char *err, size_t errlen)
{
    if (version_table(db, 0, component, err, errlen) != 0)
        return -1;
    return version_read(db, 0, component, err, errlen);
}

static int migrate_locked(struct db *db, db_pin_t pin, const char *component, const struct db_migration *m, int n,
                          char *err, size_t errlen)
{
    bool my = db->driver == DB_MYSQL;
    if (version_table(db, pin, component, err, errlen) != 0)
        return -1;
    int have = version_read(db, pin, component, err, errlen);
    for (int tries = 0; have >= 0 && tries < 100; tries++) {
        const struct db_migration *next = NULL;
        for (int i = 0; i < n; i++)
            if (m[i].version > have && (!next || m[i].version < next->version))
                next = &m[i];
        if (!next)
            return have;
        if (next->version != have + 1) {
            snprintf(err, errlen, "%s: schema version %d in place, next migration is %d (must be %d)", component, have,
                     next->version, have + 1);
            return -1;
        }
        const char *const *sql = my && next->mysql ? next->mysql : !my && next->sqlite ? next->sqlite : next->sql;
        int ns = 0;
        while (sql && sql[ns])
            ns++;
        struct db_stmt *st = calloc((size_t)ns + 1, sizeof *st);
        if (!st) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        struct db_value bump[3] = { DB_INT64(next->version), DB_TEXTN(component, strlen(component)), DB_INT64(have) };
        struct db_stmt b = { "UPDATE db_schema_version SET version = ? WHERE component = ? AND version = ?", bump, 3,
                             DB_EXPECT_ONE };
        /* SQLite: the bump first, so a second process that raced us stops
         * at once (its BEGIN IMMEDIATE waited for our commit). MySQL: last,
         * since DDL commits implicitly; the named lock serialises us. */
        int bi = my ? ns : 0;
        st[bi] = b;
        for (int k = 0; k < ns; k++)
            st[my ? k : k + 1] = (struct db_stmt){ .sql = sql[k] };
        struct db_result *r = NULL;
        int rc = txn_sync_on(db, pin, st, ns + 1, &r);
        free(st);
        if (rc != 0) {
            bool raced = r && r->failed_stmt == bi && db_result_stmt(r, bi) && db_result_stmt(r, bi)->status != 0 &&
                         strstr(db_result_stmt(r, bi)->error, "expected 1");
            if (!raced) {
                snprintf(err, errlen, "%s: migration to version %d: %s", component, next->version,
                         r ? r->error : "db closing");
                db_result_free(r);
                return -1;
            }
            db_result_free(r);
            have = version_read(db, pin, component, err, errlen);
            continue;
        }
        db_result_free(r);
        log_info("db: %s schema migrated to version %d", component, next->version);
        have = next->version;
    }
    if (have >= 0)
        snprintf(err, errlen, "%s: migrations did not settle", component);
    return -1;
}

int db_migrate(struct db *db, const char *component, const struct db_migration *m, int n, char *err, size_t errlen)
{
    if (!component || !*component || strlen(component) > 64) {
        snprintf(err, errlen, "migration needs a component name of 1..64 bytes");
        return -1;
    }
    db_pin_t pin = db_pin(db); /* one connection: the MySQL named lock is per connection */
    bool my = db->driver == DB_MYSQL;
    char lock[96];
    snprintf(lock, sizeof lock, "db_schema_%s", component);
    struct db_value lv[1] = { DB_TEXTN(lock, strlen(lock)) };
    if (my) {
        struct db_result *r = NULL;
        int rc = query_sync_on(db, pin, "SELECT GET_LOCK(?, 60)", lv, 1, &r);
        if (rc != 0 || db_cell_int(r, 0, 0) != 1) {
            snprintf(err, errlen, "%s: cannot take the migration lock: %s", component,
                     rc != 0 && r ? r->error : "timed out");
            db_result_free(r);
            return -1;
        }
        db_result_free(r);
    }
    int v = migrate_locked(db, pin, component, m, n, err, errlen);
    if (my) {
        struct db_result *r = NULL;
        query_sync_on(db, pin, "SELECT RELEASE_LOCK(?)", lv, 1, &r);
        db_result_free(r);
    }
    return v;
}
