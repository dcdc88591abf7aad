/* store: the durable store for background jobs (gearmand 1.1's "persistent
 * queue"), on the core db module (SQLite or MariaDB/MySQL).
 *
 * A background job is inserted before its JOB_CREATED goes out: the reply
 * is held in the session's reply slot until the db thread reports the
 * transaction committed (fsync'd), and a new background job becomes
 * runnable only then, so no worker runs a job whose submitter may yet hear
 * QUEUE_ERROR. Background submits coalesced onto a job whose INSERT is in
 * flight wait for the same outcome. Inserts and deletes are DB_GROUP
 * requests, so everything that arrives while one commit is in flight shares
 * the next commit (group commit). A job's delete is queued behind its
 * insert on the same (single, ordered) db worker.
 * At start-up every stored row is replayed into memory before the listener
 * opens. Nothing here blocks the loop except that start-up replay. */
#include "gearmand/gearmand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/db.h"
#include "common/log.h"
#include "common/loop.h"

static char sql_insert[256], sql_delete[128];
static int64_t next_id;

/* One INSERT in flight and everyone waiting for its outcome: the submitter
 * that caused it and every background submit coalesced onto the job while
 * it was in flight. All of them hear the same answer, and only after the
 * commit (or the failure) is known. The job may go away first (a foreground
 * job that gained a background submitter can finish meanwhile): then job is
 * NULL and the waiters still get their answer. */
struct gm_store_req {
    struct gm_job *job;
    struct waiter *waiters;
    size_t hlen;
    char handle[GM_MAX_HANDLE + 1];
};

struct waiter {
    struct waiter *next;
    struct gm_sess *s;
    struct gm_slot *slot;
};

static bool table_name_ok(const char *t)
{
    if (!t || !*t || strlen(t) > 64)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static int replay(const char *table)
{
    char sql[256];
    struct db_result *r = NULL;
    snprintf(sql, sizeof sql, "SELECT COALESCE(MAX(id), 0) FROM %s", table);
    if (db_query_sync(gm.db, sql, NULL, 0, &r) != 0) {
        log_error("gearmand: queue: %s", r ? r->error : "query failed");
        db_result_free(r);
        return -1;
    }
    next_id = db_cell_int(r, 0, 0);
    db_result_free(r);
    snprintf(sql, sizeof sql,
             "SELECT id, unique_key, function_name, priority, data, when_to_run, reducer FROM %s ORDER BY id", table);
    if (db_query_sync(gm.db, sql, NULL, 0, &r) != 0) {
        log_error("gearmand: queue: %s", r ? r->error : "query failed");
        db_result_free(r);
        return -1;
    }
    size_t restored = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        size_t ulen = 0, flen = 0, dlen = 0, rlen = 0;
        const char *u = db_cell(r, i, 1, &ulen), *fn = db_cell(r, i, 2, &flen);
        const char *d = db_cell(r, i, 4, &dlen), *red = db_cell(r, i, 6, &rlen);
        int64_t prio = db_cell_int(r, i, 3);
        if (!fn || flen == 0 || flen > GM_MAX_FUNCTION || prio < 0 || prio > 2)
            continue;
        struct gm_func *f = gm_func_get(fn, flen);
        struct gm_job *j = gm_job_add(f, u ? u : "", u ? ulen : 0, d ? d : "", d ? dlen : 0, (int)prio, true,
                                      db_cell_int(r, i, 5), red, rlen);
        if (!j)
            break;
        j->db_id = db_cell_int(r, i, 0);
        gm_job_start(j);
        restored++;
    }
    db_result_free(r);
    log_info("gearmand: queue: replayed %zu background job%s", restored, restored == 1 ? "" : "s");
    return 0;
}

static int sync_exec(const char *sql, const struct db_value *v, int n, struct db_result **out)
{
    struct db_result *r = NULL;
    int rc = db_query_sync(gm.db, sql, v, n, &r);
    if (rc != 0)
        log_error("gearmand: queue: %s: %s", sql, r ? r->error : "query failed");
    if (out)
        *out = r;
    else
        db_result_free(r);
    return rc;
}

/* Take over the rows of a queue table written by gearmand 1.1 (its
 * libsqlite3 and MySQL modules share the columns unique_key, function_name,
 * priority, data, when_to_run) into ours, in one transaction: a crash
 * half-way leaves them where they were. Runs before replay, at start-up. */
static int import_gearmand(const char *ours, const char *theirs, bool sqlite)
{
    if (!theirs || !*theirs || !strcmp(ours, theirs))
        return 0;
    struct db_value name[1] = { DB_TEXTN(theirs, strlen(theirs)) };
    struct db_result *r = NULL;
    const char *exists = sqlite ? "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
                                : "SELECT table_name FROM information_schema.tables "
                                  "WHERE table_schema = DATABASE() AND table_name = ?";
    if (sync_exec(exists, name, 1, &r) != 0) {
        db_result_free(r);
        return -1;
    }
    bool found = r->nrows > 0;
    db_result_free(r);
    if (!found)
        return 0;
    char sql[512];
    if (sync_exec(sqlite ? "BEGIN IMMEDIATE" : "START TRANSACTION", NULL, 0, NULL) != 0)
        return -1;
    snprintf(sql, sizeof sql, "SELECT unique_key, function_name, priority, data, when_to_run FROM %s", theirs);
    if (sync_exec(sql, NULL, 0, &r) != 0) {
        db_result_free(r);
        sync_exec("ROLLBACK", NULL, 0, NULL);
        return -1;
    }
    snprintf(sql, sizeof sql, "SELECT COALESCE(MAX(id), 0) FROM %s", ours);
    struct db_result *m = NULL;
    int rc = sync_exec(sql, NULL, 0, &m);
    int64_t id = rc == 0 ? db_cell_int(m, 0, 0) : 0;
    db_result_free(m);
    size_t n = 0;
    for (size_t i = 0; rc == 0 && i < r->nrows; i++) {
        size_t ulen = 0, flen = 0, dlen = 0;
        const char *u = db_cell(r, i, 0, &ulen), *f = db_cell(r, i, 1, &flen), *d = db_cell(r, i, 3, &dlen);
        int64_t prio = db_cell_int(r, i, 2);
        if (!f || flen == 0 || flen > GM_MAX_FUNCTION || ulen > GM_MAX_UNIQUE) {
            log_warn("gearmand: queue: skipping a gearmand row with a bad function or unique key");
            continue;
        }
        struct db_value v[7] = {
            DB_INT64(++id),
            DB_BLOBN(u ? u : "", u ? ulen : 0),
            DB_BLOBN(f, flen),
            DB_INT64(prio < 0 || prio > 2 ? GM_PRIO_NORMAL : prio),
            DB_BLOBN(d ? d : "", d ? dlen : 0),
            DB_INT64(db_cell_int(r, i, 4)),
            { .type = DB_NULL },
        };
        rc = sync_exec(sql_insert, v, 7, NULL);
        n++;
    }
    db_result_free(r);
    snprintf(sql, sizeof sql, "DELETE FROM %s", theirs);
    if (rc == 0)
        rc = sync_exec(sql, NULL, 0, NULL);
    if (rc == 0)
        rc = sync_exec("COMMIT", NULL, 0, NULL);
    if (rc != 0) {
        sync_exec("ROLLBACK", NULL, 0, NULL);
        return -1;
    }
    if (n)
        log_info("gearmand: queue: took over %zu job%s from gearmand's table %s", n, n == 1 ? "" : "s", theirs);
    return 0;
}

int gm_store_open(void)
{
    const char *type = gm.cfg.queue_type ? gm.cfg.queue_type : "builtin";
    struct db_config dc = { 0 };
    const char *table;
    if (!strcasecmp(type, "builtin") || !*type)
        return 0;
    if (!strcasecmp(type, "libsqlite3") || !strcasecmp(type, "sqlite") || !strcasecmp(type, "sqlite3")) {
        if (!gm.cfg.sqlite_db || !*gm.cfg.sqlite_db) {
            log_error("gearmand: -q libsqlite3 needs --libsqlite3-db FILE");
            return -1;
        }
        dc.driver = DB_SQLITE;
        dc.path = gm.cfg.sqlite_db;
        table = gm.cfg.sqlite_table;
    } else if (!strcasecmp(type, "mysql")) {
        dc.driver = DB_MYSQL;
        dc.host = gm.cfg.mysql_host;
        dc.port = gm.cfg.mysql_port;
        dc.socket = gm.cfg.mysql_socket && *gm.cfg.mysql_socket ? gm.cfg.mysql_socket : NULL;
        dc.user = gm.cfg.mysql_user;
        dc.password = gm.cfg.mysql_password;
        dc.database = gm.cfg.mysql_db;
        table = gm.cfg.mysql_table;
    } else {
        log_error("gearmand: unknown queue type '%s' (builtin, libsqlite3, mysql)", type);
        return -1;
    }
    if (!table_name_ok(table)) {
        log_error("gearmand: bad queue table name '%s'", table ? table : "");
        return -1;
    }
    char err[256];
    dc.workers = 1; /* one ordered worker: a job's delete always follows its insert */
    gm.db = db_open(&dc, err, sizeof err);
    if (!gm.db) {
        log_error("gearmand: queue: %s", err);
        return -1;
    }
    char ddl[512];
    if (dc.driver == DB_SQLITE)
        snprintf(ddl, sizeof ddl,
                 "CREATE TABLE IF NOT EXISTS %s (id INTEGER PRIMARY KEY, unique_key BLOB, function_name BLOB, "
                 "priority INTEGER, data BLOB, when_to_run INTEGER, reducer BLOB)",
                 table);
    else
        snprintf(ddl, sizeof ddl,
                 "CREATE TABLE IF NOT EXISTS %s (id BIGINT PRIMARY KEY, unique_key VARBINARY(64), "
                 "function_name VARBINARY(512), priority INT, data LONGBLOB, when_to_run BIGINT, "
                 "reducer VARBINARY(512)) ENGINE=InnoDB",
                 table);
    if (db_exec_script(gm.db, ddl, err, sizeof err) < 0) {
        log_error("gearmand: queue: %s", err);
        return -1;
    }
    snprintf(sql_insert, sizeof sql_insert,
             "INSERT INTO %s (id, unique_key, function_name, priority, data, when_to_run, reducer) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)",
             table);
    snprintf(sql_delete, sizeof sql_delete, "DELETE FROM %s WHERE id = ?", table);
    const char *theirs = dc.driver == DB_SQLITE ? gm.cfg.import_sqlite_table : gm.cfg.import_mysql_table;
    if (theirs && *theirs && !table_name_ok(theirs)) {
        log_error("gearmand: bad table name '%s'", theirs);
        return -1;
    }
    if (import_gearmand(table, theirs, dc.driver == DB_SQLITE) < 0)
        return -1;
    return replay(table);
}

void gm_store_close(void)
{
    if (gm.db) {
        db_close(gm.db);
        gm.db = NULL;
    }
}

static void waiter_add(struct gm_store_req *r, struct gm_sess *s)
{
    struct waiter *w = gm_xcalloc(1, sizeof *w);
    w->s = s;
    w->slot = gm_sess_hold(s);
    gm_sess_ref(s);
    w->next = r->waiters;
    r->waiters = w;
}

/* Answer every waiter: JOB_CREATED, or ERROR QUEUE_ERROR. */
static void req_answer(struct gm_store_req *r, bool ok, const char *error)
{
    while (r->waiters) {
        struct waiter *w = r->waiters;
        r->waiters = w->next;
        if (ok) {
            const void *args[1] = { r->handle };
            size_t lens[1] = { r->hlen };
            gm_send_buf(w->slot->buf, GM_JOB_CREATED, 1, args, lens);
        } else {
            const void *args[2] = { "QUEUE_ERROR", error };
            size_t lens[2] = { 11, strlen(error) };
            gm.n.errors_sent++;
            gm_send_buf(w->slot->buf, GM_ERROR, 2, args, lens);
        }
        gm_sess_release(w->s, w->slot);
        gm_sess_unref(w->s);
        free(w);
    }
}

/* The INSERT's outcome is known (committed, or failed and rolled back). */
static void req_finish(struct gm_store_req *r, bool ok, const char *error)
{
    struct gm_job *j = r->job;
    if (!j) {
        /* The job finished (or was cancelled) while its row was in flight:
         * its work is done, nothing to lose. */
        req_answer(r, true, NULL);
        free(r);
        return;
    }
    j->store_req = NULL;
    req_answer(r, ok, error);
    free(r);
    if (ok) {
        if (j->state == GM_JOB_STORING)
            gm_job_start(j); /* runnable only now that it is durable */
        return;
    }
    gm_job_store_failed(j);
}

static void stored_cb(struct db_result *res, void *arg)
{
    struct gm_store_req *r = arg;
    gm_lock();
    if (res->status != 0) {
        log_warn("gearmand: queue: storing %s failed: %s", r->handle, res->error);
        req_finish(r, false, "Could not store the job in the persistent queue");
    } else
        req_finish(r, true, NULL);
    gm_unlock();
}

void gm_store_job(struct gm_job *j, struct gm_sess *s)
{
    if (j->store_req) {
        /* Its INSERT is in flight: wait for the same outcome. */
        waiter_add(j->store_req, s);
        return;
    }
    struct gm_store_req *r = gm_xcalloc(1, sizeof *r);
    r->job = j;
    r->hlen = j->handle_len;
    memcpy(r->handle, j->handle, j->handle_len + 1);
    waiter_add(r, s);
    j->store_req = r;
    j->db_id = ++next_id;
    struct db_value v[7] = {
        DB_INT64(j->db_id),
        DB_BLOBN(j->unique, j->unique_len),
        DB_BLOBN(j->f->name, j->f->len),
        DB_INT64(j->prio),
        DB_BLOBN(j->data, j->data_len),
        DB_INT64(j->when),
        j->reducer ? DB_BLOBN(j->reducer, j->reducer_len) : (struct db_value){ .type = DB_NULL },
    };
    if (j->unique_is_data)
        v[1] = DB_BLOBN("-", 1);
    /* The answer comes back on the submitter's loop (its reply flushes
     * there without a hop); any loop would do, it takes the lock. */
    struct core_loop *home = loop_current() ? loop_current() : loop_get(0);
    if (db_query(gm.db, home, DB_GROUP, sql_insert, v, 7, stored_cb, r) < 0)
        req_finish(r, false, "Persistent queue is closing");
}

void gm_store_forget(struct gm_job *j)
{
    if (j->store_req) {
        j->store_req->job = NULL;
        j->store_req = NULL;
    }
}

void gm_store_done(struct gm_job *j)
{
    if (!gm.db || !j->db_id)
        return;
    struct db_value v[1] = { DB_INT64(j->db_id) };
    j->db_id = 0;
    db_query(gm.db, loop_get(0), DB_GROUP, sql_delete, v, 1, NULL, NULL);
}
