/* Unit tests for common/db over SQLite: parameters and blobs, NULL cells,
 * ordered execution on one worker, group commit (many DB_GROUP writes share
 * a transaction, each still gets its own result), a failing statement
 * inside a group, barriers, and durability across close/reopen.
 * MariaDB is exercised by the gearmand integration tests (conftest's
 * private server). */
#include "common/db.h"
#include "tests/unit/unit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64], path[128];

static struct db *open_db(void)
{
    struct db_config cfg = { .driver = DB_SQLITE, .path = path };
    char err[256] = "";
    struct db *db = db_open(&cfg, err, sizeof err);
    if (!db)
        fprintf(stderr, "db_open: %s\n", err);
    return db;
}

static void test_open_errors(void)
{
    char err[256] = "";
    struct db_config none = { .driver = DB_SQLITE };
    CHECK(db_open(&none, err, sizeof err) == NULL);
    CHECK(strstr(err, "path") != NULL);
    struct db_config bad = { .driver = DB_SQLITE, .path = "/nonexistent-dir/x/y.db" };
    CHECK(db_open(&bad, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

static void test_sync_params_and_blobs(void)
{
    struct db *db = open_db();
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "DROP TABLE IF EXISTS t; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, s TEXT)",
                                err, sizeof err),
                 0);
    static const char blob[] = { 'a', 0, 'b', 0, (char)0xff };
    struct db_value v[3] = { DB_INT64(7), DB_BLOBN(blob, sizeof blob), { .type = DB_NULL } };
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "INSERT INTO t (id, b, s) VALUES (?, ?, ?)", v, 3, &r), 0);
    CHECK_EQ_INT(r->affected, 1);
    CHECK_EQ_INT(r->last_id, 7);
    db_result_free(r);
    CHECK_EQ_INT(db_query_sync(db, "SELECT id, b, s FROM t", NULL, 0, &r), 0);
    CHECK_EQ_INT(r->nrows, 1);
    CHECK_EQ_INT(r->ncols, 3);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), 7);
    size_t len = 0;
    const char *b = db_cell(r, 0, 1, &len);
    CHECK(b != NULL);
    CHECK_EQ_INT(len, sizeof blob);
    if (b)
        CHECK_MEM(b, blob, sizeof blob);
    CHECK(db_cell(r, 0, 2, &len) == NULL); /* SQL NULL */
    CHECK(db_cell(r, 1, 0, &len) == NULL); /* out of range */
    CHECK(db_cell(r, 0, 3, &len) == NULL);
    db_result_free(r);
    /* an error is a value with a message */
    CHECK_EQ_INT(db_query_sync(db, "SELECT * FROM no_such_table", NULL, 0, &r), -1);
    CHECK(strstr(r->error, "no_such_table") != NULL);
    db_result_free(r);
    db_close(db);
}

struct tally {
    pthread_mutex_t mu;
    int ok, failed, barrier_seen_ok;
    int order[600];
    int n;
};

static void count_cb(struct db_result *res, void *arg)
{
    struct tally *t = arg;
    pthread_mutex_lock(&t->mu);
    if (res->status == 0)
        t->ok++;
    else
        t->failed++;
    pthread_mutex_unlock(&t->mu);
}

struct ordered {
    struct tally *t;
    int i;
};

static void order_cb(struct db_result *res, void *arg)
{
    struct ordered *o = arg;
    (void)res;
    pthread_mutex_lock(&o->t->mu);
    if (o->t->n < 600)
        o->t->order[o->t->n++] = o->i;
    pthread_mutex_unlock(&o->t->mu);
    free(o);
}

static void barrier_cb(struct db_result *res, void *arg)
{
    struct tally *t = arg;
    (void)res;
    pthread_mutex_lock(&t->mu);
    t->barrier_seen_ok = t->ok;
    pthread_mutex_unlock(&t->mu);
}

static void test_group_commit_and_order(void)
{
    struct db *db = open_db();
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(
        db_exec_script(db, "DROP TABLE IF EXISTS g; CREATE TABLE g (id INTEGER PRIMARY KEY, v TEXT)", err, sizeof err),
        0);
    struct db_counters before;
    db_get_counters(db, &before);
    struct tally t = { .mu = PTHREAD_MUTEX_INITIALIZER };
    enum { N = 500 };
    for (int i = 1; i <= N; i++) {
        struct db_value v[2] = { DB_INT64(i), DB_TEXTN("row", 3) };
        CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO g (id, v) VALUES (?, ?)", v, 2, count_cb, &t), 0);
        if (i == 250) {
            /* a duplicate key inside the group fails alone */
            struct db_value d[2] = { DB_INT64(1), DB_TEXTN("dup", 3) };
            CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO g (id, v) VALUES (?, ?)", d, 2, count_cb, &t), 0);
        }
    }
    CHECK_EQ_INT(db_query(db, NULL, 0, NULL, NULL, 0, barrier_cb, &t), 0);
    /* ordered: deletes after inserts see them */
    for (int i = 0; i < 10; i++) {
        struct ordered *o = malloc(sizeof *o);
        o->t = &t;
        o->i = i;
        struct db_value v[1] = { DB_INT64(i + 1) };
        db_query(db, NULL, DB_GROUP, "DELETE FROM g WHERE id = ?", v, 1, order_cb, o);
    }
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT COUNT(*) FROM g", NULL, 0, &r), 0);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), N - 10);
    db_result_free(r);
    /* callbacks (on the db thread: no loop given) may trail the sync reply */
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&t.mu);
        int done = t.n;
        pthread_mutex_unlock(&t.mu);
        if (done == 10)
            break;
        usleep(10000);
    }
    CHECK_EQ_INT(t.ok, N);
    CHECK_EQ_INT(t.failed, 1);
    CHECK_EQ_INT(t.barrier_seen_ok, N); /* the barrier ran after every earlier write */
    CHECK_EQ_INT(t.n, 10);
    for (int i = 0; i < t.n; i++)
        CHECK_EQ_INT(t.order[i], i);
    struct db_counters after;
    db_get_counters(db, &after);
    CHECK(after.requests - before.requests >= N + 11);
    /* group commit: far fewer transactions than writes */
    CHECK(after.commits - before.commits < (N + 11) / 2);
    CHECK_EQ_INT(after.errors - before.errors, 1);
    db_close(db);
}

static void test_durable_across_reopen(void)
{
    struct db *db = open_db();
    CHECK(db != NULL);
    if (!db)
        return;
    struct tally t = { .mu = PTHREAD_MUTEX_INITIALIZER };
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE IF NOT EXISTS d (id INTEGER PRIMARY KEY)", err, sizeof err), 0);
    for (int i = 0; i < 20; i++) {
        struct db_value v[1] = { DB_INT64(i) };
        db_query(db, NULL, DB_GROUP, "INSERT INTO d (id) VALUES (?)", v, 1, count_cb, &t);
    }
    db_close(db); /* runs what is queued */
    CHECK_EQ_INT(t.ok, 20);
    db = open_db();
    CHECK(db != NULL);
    if (!db)
        return;
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT COUNT(*) FROM d", NULL, 0, &r), 0);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), 20);
    db_result_free(r);
    /* closing refuses new work */
    db_close(db);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_db.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/t.db", dir);
    RUN(test_open_errors);
    RUN(test_sync_params_and_blobs);
    RUN(test_group_commit_and_order);
    RUN(test_durable_across_reopen);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_done();
}
