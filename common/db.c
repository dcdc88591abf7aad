/* db: asynchronous SQL over SQLite and MariaDB/MySQL; see db.h.
 *
 * Owns the worker threads (each with its own connection), the request
 * queue, group commit, and the delivery of results back to event loops.
 * Hands work to threads: every query runs on a db worker thread, never on
 * the caller's loop (db_query_sync and db_exec_script excepted: they block
 * their caller and are for start-up, tools and tests).
 *
 * Delivery: finished requests go into a per-loop mailbox and one
 * loop_call() rings it; the loop runs every callback waiting there in one
 * go. Mailboxes live for the whole process (a doorbell still queued when the
 * loops stop must not point at freed memory); db_close() runs this handle's
 * undelivered callbacks on the caller's thread, which by then is the only
 * one left. */
#include "common/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <sqlite3.h>

#include "common/log.h"
#include "common/loop.h"

struct db_cell {
    char *p;
    size_t len;
    bool null;
};

struct db_req {
    struct db_req *next;
    struct db *db;
    int flags;
    char *sql;                   /* NULL = barrier */
    struct db_value *params;
    int nparams;
    struct core_loop *loop;
    db_done_fn done;
    void *arg;
    struct db_result *res;
    /* db_query_sync */
    pthread_mutex_t *sync_mu;
    pthread_cond_t *sync_cv;
    bool *sync_done;
};

#define STMT_CACHE 16

struct db_worker {
    struct db *db;
    pthread_t thread;
    bool started;
    sqlite3 *sq;
    struct {
        const char *sql;         /* key: the request's text (compared by value) */
        char *own;
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int cache_next;
    MYSQL *my;
    char *esc;                   /* MySQL parameter expansion buffer */
    size_t esc_cap;
};

struct db {
    enum db_driver driver;
    char *path, *host, *socket, *user, *password, *database;
    int port, max_batch, busy_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct db_req *head, *tail;
    size_t queued;
    bool closing;
    int nworkers;
    struct db_worker *w;
    _Atomic uint64_t n_requests, n_commits, n_errors;
};

/* ---- mailboxes ------------------------------------------------------------ */

struct mailbox {
    struct mailbox *next;
    struct core_loop *loop;
    pthread_mutex_t mu;
    struct db_req *head, *tail;
    bool rung;
};

static pthread_mutex_t mailboxes_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mailbox *mailboxes;  /* never freed: see the file comment */

static struct mailbox *mailbox_for(struct core_loop *loop)
{
    pthread_mutex_lock(&mailboxes_mu);
    struct mailbox *m;
    for (m = mailboxes; m; m = m->next)
        if (m->loop == loop)
            break;
    if (!m) {
        m = calloc(1, sizeof *m);
        if (m) {
            m->loop = loop;
            pthread_mutex_init(&m->mu, NULL);
            m->next = mailboxes;
            mailboxes = m;
        }
    }
    pthread_mutex_unlock(&mailboxes_mu);
    return m;
}

static void req_free(struct db_req *r)
{
    db_result_free(r->res);
    free(r->sql);
    free(r->params);
    free(r);
}

static void req_deliver(struct db_req *r)
{
    if (r->done)
        r->done(r->res, r->arg);
    req_free(r);
}

static void mailbox_run(void *arg)
{
    struct mailbox *m = arg;
    pthread_mutex_lock(&m->mu);
    struct db_req *r = m->head;
    m->head = m->tail = NULL;
    m->rung = false;
    pthread_mutex_unlock(&m->mu);
    while (r) {
        struct db_req *next = r->next;
        req_deliver(r);
        r = next;
    }
}

/* Post a chain of finished requests (all for one loop). */
static void mailbox_post(struct core_loop *loop, struct db_req *first, struct db_req *last)
{
    struct mailbox *m = mailbox_for(loop);
    if (!m) {
        /* cannot happen short of OOM; deliver here rather than lose them */
        for (struct db_req *r = first, *n; r; r = n) {
            n = r->next;
            req_deliver(r);
        }
        return;
    }
    pthread_mutex_lock(&m->mu);
    last->next = NULL;
    if (m->tail)
        m->tail->next = first;
    else
        m->head = first;
    m->tail = last;
    bool ring = !m->rung;
    m->rung = true;
    pthread_mutex_unlock(&m->mu);
    if (ring)
        loop_call(loop, mailbox_run, m);
}

/* ---- results ------------------------------------------------------------ */

struct result_builder {
    struct db_result *res;
    size_t cap;                  /* cells allocated */
    size_t fill;                 /* cells used */
};

static struct db_result *result_new(void)
{
    struct db_result *r = calloc(1, sizeof *r);
    if (!r)
        abort();
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
            abort();  /* nrows * ncols must stay equal to the cells filled */
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
    size_t n = res->nrows * (size_t)res->ncols;
    for (size_t i = 0; i < n; i++)
        free(res->cells[i].p);
    free(res->cells);
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
    const char *s = db_cell(res, row, col, NULL);
    return s ? strtoll(s, NULL, 10) : 0;
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
        free(w->cache[slot].own);
    }
    w->cache[slot].own = strdup(sql);
    w->cache[slot].sql = w->cache[slot].own;
    w->cache[slot].st = st;
    return st;
}

static void sq_run(struct db_worker *w, struct db_req *r)
{
    struct db_result *res = r->res;
    sqlite3_stmt *st = sq_prepare(w, r->sql, res);
    if (!st)
        return;
    for (int i = 0; i < r->nparams; i++) {
        const struct db_value *v = &r->params[i];
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
                const void *p = t == SQLITE_BLOB ? sqlite3_column_blob(st, c) : (const void *)sqlite3_column_text(st, c);
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
        return -1;
    }
    sqlite3_busy_timeout(w->sq, db->busy_ms);
    /* WAL + synchronous=FULL: a commit is fsync'd before it returns. */
    if (sq_exec(w, "PRAGMA journal_mode=WAL", err, errlen) < 0 ||
        sq_exec(w, "PRAGMA synchronous=FULL", err, errlen) < 0)
        return -1;
    return 0;
}

/* ---- MySQL --------------------------------------------------------------- */

static int my_connect(struct db_worker *w, char *err, size_t errlen)
{
    struct db *db = w->db;
    w->my = mysql_init(NULL);
    if (!w->my) {
        snprintf(err, errlen, "mysql_init failed");
        return -1;
    }
    unsigned int timeout = 10;
    mysql_options(w->my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    const char *host = db->host && *db->host ? db->host : "localhost";
    if (!mysql_real_connect(w->my, host, db->user, db->password, db->database, (unsigned)db->port, db->socket, 0)) {
        if (mysql_errno(w->my) == ER_BAD_DB_ERROR && db->database) {
            /* Create the database on first use. */
            mysql_close(w->my);
            w->my = mysql_init(NULL);
            mysql_options(w->my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
            if (mysql_real_connect(w->my, host, db->user, db->password, NULL, (unsigned)db->port, db->socket, 0)) {
                char q[300];
                snprintf(q, sizeof q, "CREATE DATABASE IF NOT EXISTS `%s`", db->database);
                if (mysql_query(w->my, q) == 0 && mysql_select_db(w->my, db->database) == 0)
                    goto connected;
            }
        }
        snprintf(err, errlen, "mysql %s: %s", host, mysql_error(w->my));
        mysql_close(w->my);
        w->my = NULL;
        return -1;
    }
connected:
    mysql_autocommit(w->my, 1);
    return 0;
}

/* Expand '?' placeholders (outside quotes) into escaped literals. */
static int my_expand(struct db_worker *w, struct db_req *r, size_t *outlen)
{
    size_t need = strlen(r->sql) + 1;
    for (int i = 0; i < r->nparams; i++)
        need += r->params[i].len * 2 + 32;
    if (need > w->esc_cap) {
        char *p = realloc(w->esc, need);
        if (!p)
            return -1;
        w->esc = p;
        w->esc_cap = need;
    }
    char *o = w->esc;
    int pi = 0;
    char quote = 0;
    for (const char *s = r->sql; *s; s++) {
        if (quote) {
            *o++ = *s;
            if (*s == '\\' && s[1])
                *o++ = *++s;
            else if (*s == quote)
                quote = 0;
            continue;
        }
        if (*s == '\'' || *s == '"' || *s == '`') {
            quote = *s;
            *o++ = *s;
            continue;
        }
        if (*s != '?' || pi >= r->nparams) {
            *o++ = *s;
            continue;
        }
        const struct db_value *v = &r->params[pi++];
        switch (v->type) {
        case DB_INT: o += sprintf(o, "%lld", (long long)v->i); break;
        case DB_TEXT:
        case DB_BLOB:
            if (v->type == DB_BLOB && v->len) {
                /* hex literal: binary-safe whatever the connection charset */
                static const char hex[] = "0123456789abcdef";
                *o++ = 'X';
                *o++ = '\'';
                const unsigned char *b = v->p;
                for (size_t k = 0; k < v->len; k++) {
                    *o++ = hex[b[k] >> 4];
                    *o++ = hex[b[k] & 15];
                }
                *o++ = '\'';
            } else {
                *o++ = '\'';
                o += mysql_real_escape_string(w->my, o, v->p ? v->p : "", (unsigned long)v->len);
                *o++ = '\'';
            }
            break;
        default: memcpy(o, "NULL", 4); o += 4; break;
        }
    }
    *o = '\0';
    *outlen = (size_t)(o - w->esc);
    return 0;
}

static bool my_lost(struct db_worker *w)
{
    unsigned e = mysql_errno(w->my);
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST;
}

static void my_run(struct db_worker *w, struct db_req *r, bool may_retry)
{
    struct db_result *res = r->res;
    char err[256];
    if (!w->my && my_connect(w, err, sizeof err) < 0) {
        result_error(res, "%s", err);
        return;
    }
    size_t len;
    if (my_expand(w, r, &len) < 0) {
        result_error(res, "%s", "out of memory");
        return;
    }
    if (mysql_real_query(w->my, w->esc, (unsigned long)len) != 0) {
        if (my_lost(w) && may_retry) {
            mysql_close(w->my);
            w->my = NULL;
            my_run(w, r, false);
            return;
        }
        result_error(res, "%s", mysql_error(w->my));
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

static int my_simple(struct db_worker *w, const char *sql)
{
    if (!w->my) {
        char err[256];
        if (my_connect(w, err, sizeof err) < 0)
            return -1;
    }
    if (mysql_query(w->my, sql) != 0) {
        if (my_lost(w)) {
            mysql_close(w->my);
            w->my = NULL;
        }
        return -1;
    }
    MYSQL_RES *mr = mysql_store_result(w->my);
    if (mr)
        mysql_free_result(mr);
    return 0;
}

/* ---- the worker ------------------------------------------------------------ */

static void run_one(struct db_worker *w, struct db_req *r, bool in_txn)
{
    r->res = result_new();
    if (!r->sql)
        return;  /* barrier */
    if (w->db->driver == DB_SQLITE)
        sq_run(w, r);
    else
        my_run(w, r, !in_txn);
    atomic_fetch_add(&w->db->n_requests, 1);
    if (r->res->status != 0)
        atomic_fetch_add(&w->db->n_errors, 1);
}

static int txn(struct db_worker *w, const char *sql)
{
    if (w->db->driver == DB_SQLITE) {
        char err[256];
        return sq_exec(w, sql, err, sizeof err);
    }
    return my_simple(w, sql);
}

/* Run requests [first, end): consecutive DB_GROUP writes share a
 * transaction; the rest run on their own. */
static void run_batch(struct db_worker *w, struct db_req *first)
{
    struct db_req *r = first;
    while (r) {
        if (!(r->flags & DB_GROUP) || !r->sql || !r->next || !(r->next->flags & DB_GROUP) || !r->next->sql) {
            run_one(w, r, false);
            if (r->sql && (r->flags & DB_GROUP))
                atomic_fetch_add(&w->db->n_commits, 1);
            r = r->next;
            continue;
        }
        struct db_req *g = r, *end = r;
        while (end && (end->flags & DB_GROUP) && end->sql)
            end = end->next;
        bool began = txn(w, w->db->driver == DB_SQLITE ? "BEGIN IMMEDIATE" : "START TRANSACTION") == 0;
        for (r = g; r != end; r = r->next)
            run_one(w, r, began);
        if (began) {
            if (txn(w, "COMMIT") != 0) {
                const char *why = w->db->driver == DB_SQLITE ? sqlite3_errmsg(w->sq)
                                                             : (w->my ? mysql_error(w->my) : "connection lost");
                for (r = g; r != end; r = r->next)
                    if (r->res->status == 0)
                        result_error(r->res, "commit failed: %s", why);
                txn(w, "ROLLBACK");
            } else
                atomic_fetch_add(&w->db->n_commits, 1);
        }
        r = end;
    }
}

static void deliver_batch(struct db_req *first)
{
    /* Group by loop (usually all one loop) to ring each mailbox once. */
    while (first) {
        struct core_loop *loop = first->loop;
        struct db_req *same = NULL, *same_tail = NULL, *rest = NULL, *rest_tail = NULL;
        for (struct db_req *r = first, *n; r; r = n) {
            n = r->next;
            r->next = NULL;
            if (r->sync_mu) {
                pthread_mutex_lock(r->sync_mu);
                *r->sync_done = true;
                pthread_cond_signal(r->sync_cv);
                pthread_mutex_unlock(r->sync_mu);
                continue;
            }
            if (r->loop == loop) {
                if (same_tail)
                    same_tail->next = r;
                else
                    same = r;
                same_tail = r;
            } else {
                if (rest_tail)
                    rest_tail->next = r;
                else
                    rest = r;
                rest_tail = r;
            }
        }
        if (same) {
            if (loop)
                mailbox_post(loop, same, same_tail);
            else
                for (struct db_req *r = same, *n; r; r = n) {
                    n = r->next;
                    req_deliver(r);
                }
        }
        first = rest;
    }
}

static void *worker_main(void *arg)
{
    struct db_worker *w = arg;
    struct db *db = w->db;
    pthread_mutex_lock(&db->mu);
    for (;;) {
        while (!db->head && !db->closing)
            pthread_cond_wait(&db->cv, &db->mu);
        if (!db->head)
            break;
        struct db_req *first = db->head, *last = first;
        int n = 1;
        while (last->next && n < db->max_batch) {
            last = last->next;
            n++;
        }
        db->head = last->next;
        if (!db->head)
            db->tail = NULL;
        last->next = NULL;
        db->queued -= (size_t)n;
        pthread_mutex_unlock(&db->mu);
        run_batch(w, first);
        deliver_batch(first);
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* ---- public ------------------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void worker_close(struct db_worker *w)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (w->cache[i].st) {
            sqlite3_finalize(w->cache[i].st);
            free(w->cache[i].own);
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
    pthread_cond_destroy(&db->cv);
    free(db);
}

struct db *db_open(const struct db_config *cfg, char *err, size_t errlen)
{
    if (cfg->driver != DB_SQLITE && cfg->driver != DB_MYSQL) {
        snprintf(err, errlen, "unknown db driver");
        return NULL;
    }
    if (cfg->driver == DB_SQLITE && (!cfg->path || !*cfg->path)) {
        snprintf(err, errlen, "sqlite needs a database path");
        return NULL;
    }
    if (cfg->driver == DB_MYSQL)
        mysql_library_init(0, NULL, NULL);  /* idempotent; not thread-safe, hence here */
    struct db *db = calloc(1, sizeof *db);
    if (!db) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
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
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    db->nworkers = cfg->workers > 0 ? cfg->workers : 1;
    db->w = calloc((size_t)db->nworkers, sizeof *db->w);
    if (!db->w) {
        db->nworkers = 0;
        db_free(db);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < db->nworkers; i++) {
        struct db_worker *w = &db->w[i];
        w->db = db;
        int rc = db->driver == DB_SQLITE ? sq_connect(w, err, errlen) : my_connect(w, err, errlen);
        if (rc < 0) {
            db_free(db);
            return NULL;
        }
    }
    for (int i = 0; i < db->nworkers; i++) {
        if (pthread_create(&db->w[i].thread, NULL, worker_main, &db->w[i]) != 0) {
            snprintf(err, errlen, "pthread_create: %s", strerror(errno));
            db_close(db);
            return NULL;
        }
        db->w[i].started = true;
    }
    return db;
}

enum db_driver db_get_driver(const struct db *db) { return db->driver; }

static struct db_req *req_new(struct db *db, struct core_loop *loop, int flags, const char *sql,
                              const struct db_value *params, int nparams, db_done_fn done, void *arg)
{
    size_t blob = 0;
    for (int i = 0; i < nparams; i++)
        if (params[i].type == DB_TEXT || params[i].type == DB_BLOB)
            blob += params[i].len + 1;
    struct db_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->db = db;
    r->flags = flags;
    r->loop = loop;
    r->done = done;
    r->arg = arg;
    r->nparams = nparams;
    if (sql && !(r->sql = strdup(sql))) {
        free(r);
        return NULL;
    }
    if (nparams > 0) {
        /* one block: the values, then their bytes */
        r->params = malloc((size_t)nparams * sizeof *r->params + blob);
        if (!r->params) {
            free(r->sql);
            free(r);
            return NULL;
        }
        char *p = (char *)(r->params + nparams);
        for (int i = 0; i < nparams; i++) {
            r->params[i] = params[i];
            if ((params[i].type == DB_TEXT || params[i].type == DB_BLOB)) {
                if (params[i].len)
                    memcpy(p, params[i].p, params[i].len);
                p[params[i].len] = '\0';
                r->params[i].p = p;
                p += params[i].len + 1;
            }
        }
    }
    return r;
}

static int enqueue(struct db *db, struct db_req *r)
{
    pthread_mutex_lock(&db->mu);
    if (db->closing) {
        pthread_mutex_unlock(&db->mu);
        return -1;
    }
    if (db->tail)
        db->tail->next = r;
    else
        db->head = r;
    db->tail = r;
    db->queued++;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
    return 0;
}

int db_query(struct db *db, struct core_loop *loop, int flags, const char *sql, const struct db_value *params,
             int nparams, db_done_fn done, void *arg)
{
    struct db_req *r = req_new(db, loop, flags, sql, params, nparams, done, arg);
    if (!r)
        return -1;
    if (enqueue(db, r) < 0) {
        req_free(r);
        return -1;
    }
    return 0;
}

int db_query_sync(struct db *db, const char *sql, const struct db_value *params, int nparams,
                  struct db_result **res)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    bool done = false;
    struct db_req *r = req_new(db, NULL, 0, sql, params, nparams, NULL, NULL);
    if (!r) {
        *res = NULL;
        return -1;
    }
    r->sync_mu = &mu;
    r->sync_cv = &cv;
    r->sync_done = &done;
    if (enqueue(db, r) < 0) {
        req_free(r);
        *res = NULL;
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
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    for (int i = 0; i < db->nworkers; i++)
        if (db->w[i].started)
            pthread_join(db->w[i].thread, NULL);
    /* Callbacks of this handle still in a mailbox run here: their loops
     * have stopped (db_close is for after loop_run). */
    pthread_mutex_lock(&mailboxes_mu);
    for (struct mailbox *m = mailboxes; m; m = m->next) {
        pthread_mutex_lock(&m->mu);
        struct db_req *mine = NULL, **tailp = &mine, *keep = NULL, **keept = &keep;
        for (struct db_req *r = m->head, *n; r; r = n) {
            n = r->next;
            r->next = NULL;
            if (r->db == db) {
                *tailp = r;
                tailp = &r->next;
            } else {
                *keept = r;
                keept = &r->next;
            }
        }
        m->head = keep;
        m->tail = NULL;
        for (struct db_req *r = keep; r; r = r->next)
            m->tail = r;
        pthread_mutex_unlock(&m->mu);
        for (struct db_req *r = mine, *n; r; r = n) {
            n = r->next;
            req_deliver(r);
        }
    }
    pthread_mutex_unlock(&mailboxes_mu);
    db_free(db);
}

void db_get_counters(struct db *db, struct db_counters *out)
{
    out->requests = atomic_load(&db->n_requests);
    out->commits = atomic_load(&db->n_commits);
    out->errors = atomic_load(&db->n_errors);
    pthread_mutex_lock(&db->mu);
    out->queued = db->queued;
    pthread_mutex_unlock(&db->mu);
}
