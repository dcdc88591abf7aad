/* Unit tests for what common/db offers every daemon beyond plain queries:
 * DBI-style DSN parsing, the MySQL placeholder expansion, atomic
 * transactions (all or nothing, DB_EXPECT_ONE), pins (one connection, in
 * order, with several workers), the bound on queued requests, schema
 * migrations, and group commit never reporting success for a statement a
 * rollback undid (a full database: SQLite's max_page_count), the blocking
 * statement API's error classes (db_conn), and db_run operations sharing one
 * commit with a savepoint each, and so do db_txn_flags(DB_GROUP) ones; a
 * database down at start (connect_later) used once it is there, the
 * on_connect hook, an aborted operation rerun from its start, DB_NO_FSYNC. All over
 * SQLite; MariaDB runs these paths in the daemons' integration tests. */
#include "common/db.h"
#include "tests/unit/unit.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static struct db *open_path(const char *name, int workers, size_t max_queued)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct db_config cfg = { .driver = DB_SQLITE, .path = path, .workers = workers, .max_queued = max_queued };
    char err[256] = "";
    struct db *db = db_open(&cfg, err, sizeof err);
    if (!db)
        fprintf(stderr, "db_open: %s\n", err);
    return db;
}

/* ---- DSN ---- */

static void test_dsn_sqlite(void)
{
    char err[256];
    struct db_config c = { 0 };
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:SQLite:dbname=/var/lib/x.db", err, sizeof err), 0);
    CHECK_EQ_INT(c.driver, DB_SQLITE);
    CHECK_STR(c.path, "/var/lib/x.db");
    CHECK_EQ_INT(db_config_dsn(&c, "dbi:SQLite:/tmp/y.sqlite", err, sizeof err), 0);
    CHECK_STR(c.path, "/tmp/y.sqlite");
    CHECK_EQ_INT(db_config_dsn(&c, "dbi:sqlite:db=z.db", err, sizeof err), 0);
    CHECK_STR(c.path, "z.db");
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:SQLite(RaiseError=>1):database=a.db;sqlite_unicode=1", err, sizeof err), 0);
    CHECK_STR(c.path, "a.db");
    db_config_clear(&c);
    CHECK(c.path == NULL);
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:SQLite:", err, sizeof err), -1);
    CHECK(strstr(err, "no database file") != NULL);
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:SQLite:dbname=", err, sizeof err), -1);
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:SQLite:file=x", err, sizeof err), -1);
    CHECK(strstr(err, "unknown key") != NULL);
    CHECK_EQ_INT(db_config_dsn(&c, "SQLite:x.db", err, sizeof err), -1);
    CHECK(strstr(err, "DBI:") != NULL);
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:Pg:dbname=x", err, sizeof err), -1);
    CHECK(strstr(err, "unknown driver") != NULL);
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:SQLite(x:y", err, sizeof err), -1);
    CHECK_EQ_INT(db_config_dsn(&c, NULL, err, sizeof err), -1);
}

static void test_dsn_mysql(void)
{
    char err[256];
    struct db_config c = { .user = "u0", .password = "p0" };
    CHECK_EQ_INT(db_config_dsn(&c, "DBI:mysql:database=mogilefs;host=db1.example;port=3307;mysql_socket=/run/m.sock",
                               err, sizeof err),
                 0);
    CHECK_EQ_INT(c.driver, DB_MYSQL);
    CHECK_STR(c.database, "mogilefs");
    CHECK_STR(c.host, "db1.example");
    CHECK_EQ_INT(c.port, 3307);
    CHECK_STR(c.socket, "/run/m.sock");
    CHECK_STR(c.user, "u0"); /* not in the DSN: left alone */
    CHECK_STR(c.password, "p0");
    db_config_clear(&c);
    struct db_config d = { 0 };
    CHECK_EQ_INT(db_config_dsn(&d, "dbi:MySQL:theschwartz", err, sizeof err), 0);
    CHECK_STR(d.database, "theschwartz");
    CHECK(d.host == NULL);
    CHECK_EQ_INT(db_config_dsn(&d, "DBI:mysql:jobs:dbhost:3310", err, sizeof err), 0);
    CHECK_STR(d.database, "jobs");
    CHECK_STR(d.host, "dbhost");
    CHECK_EQ_INT(d.port, 3310);
    CHECK_EQ_INT(
        db_config_dsn(&d, "DBI:MariaDB:db=x;hostname=h;user=me;password=s;mysql_enable_utf8=1", err, sizeof err), 0);
    CHECK_STR(d.database, "x");
    CHECK_STR(d.host, "h");
    CHECK_STR(d.user, "me");
    CHECK_STR(d.password, "s");
    db_config_clear(&d);
    struct db_config e = { 0 };
    CHECK_EQ_INT(db_config_dsn(&e, "DBI:mysql:database=x;port=0", err, sizeof err), -1);
    CHECK(strstr(err, "port") != NULL);
    CHECK_EQ_INT(db_config_dsn(&e, "DBI:mysql:database=x;port=3306x", err, sizeof err), -1);
    CHECK_EQ_INT(db_config_dsn(&e, "DBI:mysql:database=x;port=65536", err, sizeof err), -1);
    CHECK_EQ_INT(db_config_dsn(&e, "DBI:mysql:database=x;colour=blue", err, sizeof err), -1);
    CHECK_EQ_INT(db_config_dsn(&e, "DBI:mysql:database=x;host", err, sizeof err), -1);
    CHECK_EQ_INT(db_config_dsn(&e, "DBI:mysql:x:h:99999", err, sizeof err), -1);
    CHECK(e.database == NULL); /* a failed parse changes nothing */
}

/* ---- placeholders ---- */

static void test_mysql_placeholder_expansion(void)
{
    char out[512];
    static const char bin[] = { 'a', 0, '\'', (char)0xff };
    struct db_value v[4] = {
        DB_INT64(-42), DB_TEXTN("it's \\ \"q\"\n\x1a", 12), DB_BLOBN(bin, sizeof bin), { .type = DB_NULL }
    };
    long n = db_expand_placeholders("INSERT INTO t VALUES (?, ?, ?, ?)", v, 4, out, sizeof out);
    CHECK(n > 0);
    CHECK_STR(out, "INSERT INTO t VALUES (-42, 'it\\'s \\\\ \\\"q\\\"\\n\\Z', X'610027ff', NULL)");
    CHECK_EQ_INT(n, (long)strlen(out));
    /* '?' inside quotes, backquotes and comments is not a placeholder */
    struct db_value one[1] = { DB_INT64(5) };
    n = db_expand_placeholders("SELECT '?', \"?\", `a?` /* ? */ FROM t WHERE x = ? -- ?\n", one, 1, out, sizeof out);
    CHECK_STR(out, "SELECT '?', \"?\", `a?` /* ? */ FROM t WHERE x = 5 -- ?\n");
    n = db_expand_placeholders("SELECT 'it\\'s ?' , ? # ?", one, 1, out, sizeof out);
    CHECK_STR(out, "SELECT 'it\\'s ?' , 5 # ?");
    /* empty text and empty blob are empty strings, not NULL */
    struct db_value empty[2] = { DB_TEXTN("", 0), DB_BLOBN("", 0) };
    CHECK(db_expand_placeholders("? ?", empty, 2, out, sizeof out) > 0);
    CHECK_STR(out, "'' ''");
    /* counts must match */
    CHECK_EQ_INT(db_expand_placeholders("SELECT ?, ?", one, 1, out, sizeof out), -1);
    CHECK_EQ_INT(db_expand_placeholders("SELECT 1", one, 1, out, sizeof out), -1);
    /* too small a buffer is refused, never overrun */
    CHECK_EQ_INT(db_expand_placeholders("SELECT ?", one, 1, out, 8), -1);
    CHECK(db_expand_bound("SELECT ?", one, 1) <= sizeof out);
}

/* ---- transactions ---- */

static void test_txn_all_or_nothing(void)
{
    struct db *db = open_path("txn.db", 2, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0))",
                                err, sizeof err),
                 0);
    CHECK_EQ_INT(
        db_exec_script(db, "INSERT INTO acct VALUES (1, 100); INSERT INTO acct VALUES (2, 0)", err, sizeof err), 0);
    /* a transfer: both rows or neither */
    struct db_value amt[1] = { DB_INT64(30) };
    struct db_stmt ok[] = {
        { "UPDATE acct SET bal = bal - ? WHERE id = 1", amt, 1, DB_EXPECT_ONE },
        { "UPDATE acct SET bal = bal + ? WHERE id = 2", amt, 1, DB_EXPECT_ONE },
        { "SELECT bal FROM acct ORDER BY id", NULL, 0, 0 },
    };
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_txn_sync(db, ok, 3, &r), 0);
    CHECK_EQ_INT(r->failed_stmt, -1);
    const struct db_result *sel = db_result_stmt(r, 2);
    CHECK(sel != NULL);
    CHECK_EQ_INT(db_cell_int(sel, 0, 0), 70);
    CHECK_EQ_INT(db_cell_int(sel, 1, 0), 30);
    CHECK_EQ_INT(db_result_stmt(r, 0)->affected, 1);
    CHECK(db_result_stmt(r, 3) == NULL);
    db_result_free(r);
    /* the second statement violates the CHECK: the first is undone */
    struct db_value big[1] = { DB_INT64(1000) };
    struct db_stmt bad[] = {
        { "UPDATE acct SET bal = bal + ? WHERE id = 1", big, 1, 0 },
        { "UPDATE acct SET bal = bal - ? WHERE id = 2", big, 1, 0 },
    };
    CHECK_EQ_INT(db_txn_sync(db, bad, 2, &r), -1);
    CHECK_EQ_INT(r->failed_stmt, 1);
    CHECK(strstr(r->error, "statement 2") != NULL);
    CHECK(strstr(r->error, "CHECK") != NULL);
    db_result_free(r);
    /* DB_EXPECT_ONE: an optimistic update that matches nothing aborts */
    struct db_stmt cas[] = {
        { "UPDATE acct SET bal = 0 WHERE id = 1", NULL, 0, 0 },
        { "UPDATE acct SET bal = 1 WHERE id = 99", NULL, 0, DB_EXPECT_ONE },
    };
    CHECK_EQ_INT(db_txn_sync(db, cas, 2, &r), -1);
    CHECK_EQ_INT(r->failed_stmt, 1);
    CHECK(strstr(r->error, "changed 0 rows, expected 1") != NULL);
    db_result_free(r);
    CHECK_EQ_INT(db_query_sync(db, "SELECT bal FROM acct ORDER BY id", NULL, 0, &r), 0);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), 70);
    CHECK_EQ_INT(db_cell_int(r, 1, 0), 30);
    db_result_free(r);
    struct db_counters c;
    db_get_counters(db, &c);
    CHECK_EQ_INT(c.rollbacks, 2);
    /* bad arguments */
    errno = 0;
    CHECK_EQ_INT(db_txn(db, 0, NULL, ok, 0, NULL, NULL), -1);
    CHECK_EQ_INT(errno, EINVAL);
    db_close(db);
}

/* ---- pins ---- */

struct pin_tally {
    pthread_mutex_t mu;
    int order[200];
    int n, failed;
};

struct pin_arg {
    struct pin_tally *t;
    int i;
};

static void pin_cb(struct db_result *res, void *arg)
{
    struct pin_arg *a = arg;
    pthread_mutex_lock(&a->t->mu);
    if (res->status != 0) {
        a->t->failed++;
        fprintf(stderr, "pinned request %d: %s\n", a->i, res->error);
    }
    a->t->order[a->t->n++] = a->i;
    pthread_mutex_unlock(&a->t->mu);
    free(a);
}

static void test_pin_one_connection_in_order(void)
{
    struct db *db = open_path("pin.db", 3, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    db_pin_t p = db_pin(db);
    CHECK(p >= 1 && p <= 3);
    struct pin_tally t = { .mu = PTHREAD_MUTEX_INITIALIZER };
    /* A TEMP table exists on one connection only: every request on the pin
     * must find it, so they all ran on the connection that made it. */
    enum { N = 150 };
    for (int i = 0; i < N; i++) {
        struct pin_arg *a = malloc(sizeof *a);
        a->t = &t;
        a->i = i;
        struct db_value v[1] = { DB_INT64(i) };
        const char *sql = i == 0 ? "CREATE TEMP TABLE mine (v INTEGER)" : "INSERT INTO mine (v) VALUES (?)";
        CHECK_EQ_INT(db_query_on(db, p, NULL, i % 3 ? DB_GROUP : 0, sql, v, i == 0 ? 0 : 1, pin_cb, a), 0);
        /* unpinned traffic in between, on any worker */
        if (i % 10 == 0)
            db_query(db, NULL, 0, "SELECT 1", NULL, 0, NULL, NULL);
    }
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&t.mu);
        int n = t.n;
        pthread_mutex_unlock(&t.mu);
        if (n == N)
            break;
        usleep(5000);
    }
    CHECK_EQ_INT(t.n, N);
    CHECK_EQ_INT(t.failed, 0);
    for (int i = 0; i < t.n; i++)
        CHECK_EQ_INT(t.order[i], i);
    errno = 0;
    CHECK_EQ_INT(db_query_on(db, 4, NULL, 0, "SELECT 1", NULL, 0, NULL, NULL), -1);
    CHECK_EQ_INT(errno, EINVAL);
    db_close(db);
}

/* ---- the queue bound ---- */

static atomic_int bound_done;

static void bound_cb(struct db_result *res, void *arg)
{
    (void)res;
    (void)arg;
    atomic_fetch_add(&bound_done, 1);
}

static void test_queue_bound(void)
{
    struct db *db = open_path("bound.db", 1, 4);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE b (v INTEGER)", err, sizeof err), 0);
    /* hold the write lock from outside, so the worker waits on its first write */
    char path[128];
    snprintf(path, sizeof path, "%s/bound.db", dir);
    sqlite3 *other = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &other), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ_INT(db_query(db, NULL, 0, "INSERT INTO b VALUES (0)", NULL, 0, bound_cb, NULL), 0);
    struct db_counters c;
    for (int i = 0; i < 500; i++) { /* until the worker has taken it */
        db_get_counters(db, &c);
        if (c.queued == 0)
            break;
        usleep(2000);
    }
    CHECK_EQ_INT(c.queued, 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO b VALUES (1)", NULL, 0, bound_cb, NULL), 0);
    errno = 0;
    CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO b VALUES (1)", NULL, 0, bound_cb, NULL), -1);
    CHECK_EQ_INT(errno, EAGAIN);
    struct db_value one[1] = { DB_INT64(1) };
    struct db_stmt st[1] = { { "INSERT INTO b VALUES (?)", one, 1, 0 } };
    CHECK_EQ_INT(db_txn(db, 0, NULL, st, 1, bound_cb, NULL), -1);
    CHECK_EQ_INT(errno, EAGAIN);
    db_get_counters(db, &c);
    CHECK_EQ_INT(c.rejected, 2);
    CHECK_EQ_INT(c.queued, 4);
    CHECK_EQ_INT(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    db_close(db); /* runs what is queued */
    CHECK_EQ_INT(atomic_load(&bound_done), 5);
    /* closed: refused with ESHUTDOWN is covered by db_close's contract; a
     * fresh handle accepts again */
}

/* ---- migrations ---- */

static const char *const m1[] = { "CREATE TABLE file (fid INTEGER PRIMARY KEY, dkey TEXT)", NULL };
static const char *const m2[] = { "CREATE INDEX file_dkey ON file (dkey)", "INSERT INTO file VALUES (1, 'seed')",
                                  NULL };
static const char *const m3[] = { "ALTER TABLE file ADD COLUMN length INTEGER", NULL };
static const char *const m4_bad[] = { "CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL", NULL };

static void test_migrations(void)
{
    struct db *db = open_path("mig.db", 2, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256] = "";
    CHECK_EQ_INT(db_schema_version(db, "mogilefs", err, sizeof err), 0);
    struct db_migration two[] = { { 2, m2, NULL, NULL }, { 1, m1, NULL, NULL } }; /* any order in the table */
    CHECK_EQ_INT(db_migrate(db, "mogilefs", two, 2, err, sizeof err), 2);
    CHECK_EQ_INT(db_schema_version(db, "mogilefs", err, sizeof err), 2);
    /* again: nothing to do (the seed row would collide if it ran twice) */
    CHECK_EQ_INT(db_migrate(db, "mogilefs", two, 2, err, sizeof err), 2);
    /* another component in the same database has its own version */
    CHECK_EQ_INT(db_schema_version(db, "schwartz", err, sizeof err), 0);
    db_close(db);
    /* a newer binary adds version 3; a broken version 4 applies nothing */
    db = open_path("mig.db", 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    struct db_migration four[] = { { 1, m1, NULL, NULL },
                                   { 2, m2, NULL, NULL },
                                   { 3, NULL, m3, (const char *const[]){ "x", NULL } },
                                   { 4, m4_bad, NULL, NULL } };
    CHECK_EQ_INT(db_migrate(db, "mogilefs", four, 4, err, sizeof err), -1);
    CHECK(strstr(err, "version 4") != NULL);
    CHECK_EQ_INT(db_schema_version(db, "mogilefs", err, sizeof err), 3);
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT fid, dkey, length FROM file", NULL, 0, &r), 0); /* v3's column */
    CHECK_EQ_INT(r->nrows, 1);
    db_result_free(r);
    CHECK_EQ_INT(db_query_sync(db, "SELECT * FROM extra", NULL, 0, &r), -1); /* v4 left nothing */
    db_result_free(r);
    /* a gap is refused */
    struct db_migration gap[] = { { 5, m1, NULL, NULL } };
    CHECK_EQ_INT(db_migrate(db, "mogilefs", gap, 1, err, sizeof err), -1);
    CHECK(strstr(err, "must be 4") != NULL);
    db_close(db);
}

/* ---- group commit vs. a full database ---- */

struct full_arg {
    int id;
    int status;
    bool called;
};

static void full_cb(struct db_result *res, void *arg)
{
    struct full_arg *a = arg;
    a->status = res->status;
    a->called = true;
}

static void test_group_never_reports_undone_writes(void)
{
    struct db *db = open_path("full.db", 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE f (id INTEGER PRIMARY KEY, data BLOB)", err, sizeof err), 0);
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "PRAGMA page_count", NULL, 0, &r), 0);
    int64_t pages = db_cell_int(r, 0, 0);
    db_result_free(r);
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA max_page_count = %lld", (long long)pages + 40);
    CHECK_EQ_INT(db_query_sync(db, pragma, NULL, 0, &r), 0); /* one worker: its connection */
    db_result_free(r);
    /* Hold the write lock so the writes pile up and run as one group. */
    char path[128];
    snprintf(path, sizeof path, "%s/full.db", dir);
    sqlite3 *other = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &other), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ_INT(db_query(db, NULL, 0, "SELECT COUNT(*) FROM f", NULL, 0, NULL, NULL), 0);
    enum { N = 60 };
    static struct full_arg args[N];
    static char blob[8192];
    memset(blob, 'x', sizeof blob);
    usleep(50000); /* not a correctness wait: lets the SELECT occupy the worker first */
    for (int i = 0; i < N; i++) {
        args[i].id = i + 1;
        struct db_value v[2] = { DB_INT64(i + 1), DB_BLOBN(blob, sizeof blob) };
        CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO f (id, data) VALUES (?, ?)", v, 2, full_cb, &args[i]),
                     0);
    }
    CHECK_EQ_INT(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    CHECK_EQ_INT(db_query_sync(db, "SELECT id FROM f ORDER BY id", NULL, 0, &r), 0);
    bool present[N + 1] = { false };
    for (size_t i = 0; i < r->nrows; i++) {
        int64_t id = db_cell_int(r, i, 0);
        if (id >= 1 && id <= N)
            present[id] = true;
    }
    db_result_free(r);
    int ok = 0, failed = 0, lies = 0, lost_silently = 0;
    for (int i = 0; i < N; i++) {
        CHECK(args[i].called);
        if (args[i].status == 0) {
            ok++;
            if (!present[i + 1])
                lies++; /* reported durable, not there */
        } else {
            failed++;
            if (present[i + 1])
                lost_silently++; /* reported failed, yet committed */
        }
    }
    CHECK(ok > 0);     /* the database took some */
    CHECK(failed > 0); /* and refused the rest: it is full */
    CHECK_EQ_INT(lies, 0);
    CHECK_EQ_INT(lost_silently, 0);
    db_close(db);
}

/* ---- the blocking statement API and db_run ---- */

static void test_conn_error_classes(void)
{
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/conn.db", dir);
    struct db_config cfg = { .driver = DB_SQLITE, .path = path, .busy_timeout_ms = 50 };
    struct db_conn *c = db_conn_open(&cfg, err, sizeof err);
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_EQ_INT(db_conn_driver(c), DB_SQLITE);
    CHECK_EQ_INT(db_conn_worker(c), -1); /* a connection of one's own */
    CHECK_EQ_INT(db_conn_exec(c, "CREATE TABLE u (id INTEGER PRIMARY KEY, k TEXT UNIQUE, b BLOB)"), DB_OK);
    CHECK_EQ_INT(db_conn_exec(c, "BEGIN"), DB_OK);
    static const char blob[] = { 0, '\r', '\n', (char)0xff };
    struct db_value a[2] = { DB_TEXTN("a", 1), DB_BLOBN(blob, sizeof blob) };
    CHECK_EQ_INT(db_conn_query(c, "INSERT INTO u (k, b) VALUES (?, ?)", a, 2, NULL), DB_OK);
    CHECK_EQ_INT(db_conn_affected(c), 1);
    CHECK_EQ_INT(db_conn_last_id(c), 1);
    /* a duplicate is undone alone: the transaction goes on */
    CHECK_EQ_INT(db_conn_query(c, "INSERT INTO u (k, b) VALUES (?, ?)", a, 2, NULL), DB_EDUP);
    CHECK(strstr(db_conn_error(c), "UNIQUE") != NULL);
    struct db_value b[2] = { DB_TEXTN("b", 1), { .type = DB_NULL } };
    CHECK_EQ_INT(db_conn_query(c, "INSERT INTO u (k, b) VALUES (?, ?)", b, 2, NULL), DB_OK);
    struct db_result rows;
    CHECK_EQ_INT(db_conn_query(c, "SELECT nosuchcolumn FROM u", NULL, 0, &rows), DB_EOTHER);
    CHECK_EQ_INT(rows.status, -1);
    db_result_clear(&rows);
    CHECK_EQ_INT(db_conn_exec(c, "COMMIT"), DB_OK);
    CHECK_EQ_INT(db_conn_query(c, "SELECT k, b FROM u ORDER BY id", NULL, 0, &rows), DB_OK);
    CHECK_EQ_INT(rows.nrows, 2);
    size_t len = 0;
    const char *v = db_cell(&rows, 0, 1, &len);
    CHECK_EQ_INT(len, sizeof blob);
    if (v && len == sizeof blob)
        CHECK_MEM(v, blob, sizeof blob);
    CHECK_STR(db_cell(&rows, 1, 0, NULL), "b");
    CHECK(db_cell(&rows, 1, 1, NULL) == NULL);
    db_result_clear(&rows);
    CHECK_EQ_INT(rows.nrows, 0);
    /* another connection holds the write lock: busy is "abort, run it again" */
    sqlite3 *other = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &other), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct db_value x[2] = { DB_TEXTN("x", 1), { .type = DB_NULL } };
    CHECK_EQ_INT(db_conn_query(c, "INSERT INTO u (k, b) VALUES (?, ?)", x, 2, NULL), DB_EABORT);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    CHECK_EQ_INT(db_conn_query(c, "INSERT INTO u (k, b) VALUES (?, ?)", x, 2, NULL), DB_OK);
    db_conn_close(c);
    /* an unopenable file is an error at open */
    struct db_config bad = { .driver = DB_SQLITE, .path = "/nonexistent-dir/x/y.db" };
    CHECK(db_conn_open(&bad, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open, entered;
};

static int gate_fn(struct db_conn *c, void *ctx)
{
    (void)c;
    struct gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

/* One operation: read the largest v, insert the next one (a later
 * statement depending on an earlier result); op `fail_at` inserts, then
 * fails after its insert, which must be undone alone. */
struct seq_op {
    int n, fail_at;
    int64_t got; /* the value it inserted */
    int worker;  /* db_conn_worker in the callback */
    int status;
    char error[256];
    atomic_int *done;
};

static int seq_fn(struct db_conn *c, void *ctx)
{
    struct seq_op *o = ctx;
    o->worker = db_conn_worker(c);
    struct db_result r;
    if (db_conn_query(c, "SELECT COALESCE(MAX(v), 0) FROM seq", NULL, 0, &r) != DB_OK) {
        db_result_clear(&r);
        return -1;
    }
    o->got = db_cell_int(&r, 0, 0) + 1;
    db_result_clear(&r);
    struct db_value v[1] = { DB_INT64(o->got) };
    if (db_conn_query(c, "INSERT INTO seq (v) VALUES (?)", v, 1, NULL) != DB_OK)
        return -1;
    if (o->n == o->fail_at) {
        db_run_fail(c, "op failed on purpose");
        return -1;
    }
    return 0;
}

static void seq_done(struct db_result *res, void *arg)
{
    struct seq_op *o = arg;
    o->status = res->status;
    snprintf(o->error, sizeof o->error, "%s", res->error);
    atomic_fetch_add(o->done, 1);
}

/* Hold db's only worker in gate_fn, so what is submitted next waits behind
 * it and runs as one batch once the gate opens. */
static void gate_hold(struct db *db, struct gate *g, struct seq_op *op)
{
    CHECK_EQ_INT(db_run(db, 0, NULL, 0, gate_fn, g, seq_done, op), 0);
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void wait_done(atomic_int *done, int n)
{
    for (int i = 0; i < 1000 && atomic_load(done) < n; i++)
        usleep(5000);
}

static void test_run_savepoints_share_a_commit(void)
{
    struct db *db = open_path("run.db", 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE seq (v INTEGER PRIMARY KEY)", err, sizeof err), 0);
    /* hold the only worker so the operations queue up behind it */
    struct gate g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    atomic_int done = 0;
    struct seq_op gate_op = { .n = -1, .fail_at = -2, .done = &done };
    gate_hold(db, &g, &gate_op);
    struct db_counters before;
    db_get_counters(db, &before);
    enum { N = 20 };
    struct seq_op ops[N];
    for (int i = 0; i < N; i++) {
        ops[i] = (struct seq_op){ .n = i, .fail_at = 7, .done = &done, .worker = -5 };
        CHECK_EQ_INT(db_run(db, 0, NULL, DB_GROUP, seq_fn, &ops[i], seq_done, &ops[i]), 0);
    }
    gate_open(&g);
    wait_done(&done, N + 1);
    CHECK_EQ_INT(atomic_load(&done), N + 1);
    CHECK_EQ_INT(gate_op.status, 0);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(ops[i].status, i == 7 ? -1 : 0);
        /* each saw the ones before it, and not the failed one's insert */
        CHECK_EQ_INT(ops[i].got, i <= 7 ? i + 1 : i);
        CHECK_EQ_INT(ops[i].worker, 0); /* the only worker */
    }
    CHECK_STR(ops[7].error, "op failed on purpose");
    struct db_counters after;
    db_get_counters(db, &after);
    CHECK_EQ_INT(after.commits - before.commits, 2); /* the gate's own, then one for all N */
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT COUNT(*), MAX(v) FROM seq", NULL, 0, &r), 0);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), N - 1);
    CHECK_EQ_INT(db_cell_int(r, 0, 1), N - 1);
    db_result_free(r);
    /* without DB_GROUP a failing operation keeps nothing either */
    atomic_store(&done, 0);
    struct seq_op alone = { .n = 0, .fail_at = 0, .done = &done };
    CHECK_EQ_INT(db_run(db, 0, NULL, 0, seq_fn, &alone, seq_done, &alone), 0);
    wait_done(&done, 1);
    CHECK_EQ_INT(alone.status, -1);
    CHECK_EQ_INT(db_query_sync(db, "SELECT COUNT(*) FROM seq", NULL, 0, &r), 0);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), N - 1);
    db_result_free(r);
    db_close(db);
}

static void test_txn_shares_the_group_commit(void)
{
    struct db *db = open_path("txng.db", 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(
        db_exec_script(db, "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)", err, sizeof err), 0);
    CHECK_EQ_INT(
        db_exec_script(db, "INSERT INTO acct VALUES (1, 100); INSERT INTO acct VALUES (2, 0)", err, sizeof err), 0);
    struct gate g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    atomic_int done = 0;
    struct seq_op gate_op = { .done = &done }, good = { .done = &done }, bad = { .done = &done },
                  plain = { .done = &done };
    gate_hold(db, &g, &gate_op);
    struct db_counters before;
    db_get_counters(db, &before);
    /* a transfer that works, one whose second statement matches nothing
     * (undone alone, its first statement too), and a plain grouped insert */
    struct db_value amt[2] = { DB_INT64(30), DB_INT64(1) }, to[2] = { DB_INT64(30), DB_INT64(2) },
                    nobody[2] = { DB_INT64(30), DB_INT64(99) };
    struct db_stmt ok[2] = { { "UPDATE acct SET bal = bal - ? WHERE id = ?", amt, 2, DB_EXPECT_ONE },
                             { "UPDATE acct SET bal = bal + ? WHERE id = ?", to, 2, DB_EXPECT_ONE } };
    struct db_stmt ko[2] = { { "UPDATE acct SET bal = bal - ? WHERE id = ?", amt, 2, DB_EXPECT_ONE },
                             { "UPDATE acct SET bal = bal + ? WHERE id = ?", nobody, 2, DB_EXPECT_ONE } };
    CHECK_EQ_INT(db_txn_flags(db, 0, NULL, DB_GROUP, ok, 2, seq_done, &good), 0);
    CHECK_EQ_INT(db_txn_flags(db, 0, NULL, DB_GROUP, ko, 2, seq_done, &bad), 0);
    struct db_value row[2] = { DB_INT64(3), DB_INT64(5) };
    CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO acct VALUES (?, ?)", row, 2, seq_done, &plain), 0);
    gate_open(&g);
    wait_done(&done, 4);
    CHECK_EQ_INT(atomic_load(&done), 4);
    CHECK_EQ_INT(good.status, 0);
    CHECK_EQ_INT(bad.status, -1);
    CHECK(strstr(bad.error, "statement 2") != NULL);
    CHECK_EQ_INT(plain.status, 0);
    struct db_counters after;
    db_get_counters(db, &after);
    CHECK_EQ_INT(after.commits - before.commits, 2); /* the gate's, then one for the three */
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT id, bal FROM acct ORDER BY id", NULL, 0, &r), 0);
    CHECK_EQ_INT(r->nrows, 3);
    CHECK_EQ_INT(db_cell_int(r, 0, 1), 70);
    CHECK_EQ_INT(db_cell_int(r, 1, 1), 30);
    CHECK_EQ_INT(db_cell_int(r, 2, 1), 5);
    db_result_free(r);
    db_close(db);
}

/* ---- a database down at start, the on_connect hook, reruns, lazy sync ---- */

struct wait1 {
    atomic_int done;
    int status;
    bool lost;
    char error[256];
};

static void wait1_cb(struct db_result *res, void *arg)
{
    struct wait1 *w = arg;
    w->status = res->status;
    w->lost = res->lost;
    snprintf(w->error, sizeof w->error, "%s", res->error);
    atomic_store(&w->done, 1);
}

/* db_run on db, waiting for its callback (run on the db thread). */
static void run_wait(struct db *db, int flags, db_run_fn fn, void *ctx, struct wait1 *w)
{
    memset(w, 0, sizeof *w);
    CHECK_EQ_INT(db_run(db, 0, NULL, flags, fn, ctx, wait1_cb, w), 0);
    for (int i = 0; i < 2000 && !atomic_load(&w->done); i++)
        usleep(5000);
    CHECK(atomic_load(&w->done));
}

static atomic_int hook_calls;

static int hook_make_schema(struct db_conn *c, void *arg)
{
    CHECK(arg == (void *)&hook_calls);
    atomic_fetch_add(&hook_calls, 1);
    return db_conn_exec(c, "CREATE TABLE IF NOT EXISTS t (v INTEGER)") == DB_OK ? 0 : -1;
}

struct ins_op {
    int calls;
    uint64_t epoch;
    bool in_txn;
    int64_t sync;     /* PRAGMA synchronous seen inside */
    sqlite3 *release; /* another connection's lock, released after the first call */
};

static int ins_fn(struct db_conn *c, void *ctx)
{
    struct ins_op *o = ctx;
    o->calls++;
    o->epoch = db_conn_epoch(c);
    o->in_txn = db_conn_in_txn(c);
    struct db_result r;
    if (db_conn_query(c, "PRAGMA synchronous", NULL, 0, &r) == DB_OK && r.nrows)
        o->sync = db_cell_int(&r, 0, 0);
    db_result_clear(&r);
    enum db_err e = db_conn_query(c, "INSERT INTO t (v) VALUES (1)", NULL, 0, NULL);
    if (e != DB_OK && o->release) {
        sqlite3_exec(o->release, "COMMIT", NULL, NULL, NULL);
        o->release = NULL;
    }
    return e == DB_OK ? 0 : -1;
}

static void test_down_at_start_then_used(void)
{
    char sub[128], path[160];
    snprintf(sub, sizeof sub, "%s/later", dir);
    snprintf(path, sizeof path, "%s/jobs.db", sub);
    struct db_config cfg = { .driver = DB_SQLITE,
                             .path = path,
                             .connect_later = true,
                             .on_connect = hook_make_schema,
                             .on_connect_arg = &hook_calls };
    char err[256] = "";
    struct db *db = db_open(&cfg, err, sizeof err);
    CHECK(db != NULL); /* its directory does not exist yet */
    if (!db)
        return;
    CHECK(err[0] != '\0');
    CHECK_EQ_INT(atomic_load(&hook_calls), 0);
    struct ins_op op = { 0 };
    struct wait1 w;
    run_wait(db, DB_GROUP, ins_fn, &op, &w);
    CHECK_EQ_INT(w.status, -1);
    CHECK(w.lost); /* the database is down: try another */
    CHECK_EQ_INT(op.calls, 0);
    /* without connect_later the same database refuses to open */
    struct db_config strict = { .driver = DB_SQLITE, .path = path };
    CHECK(db_open(&strict, err, sizeof err) == NULL);
    CHECK_EQ_INT(mkdir(sub, 0700), 0);
    run_wait(db, DB_GROUP, ins_fn, &op, &w);
    CHECK_EQ_INT(w.status, 0);
    CHECK_EQ_INT(op.calls, 1);
    CHECK_EQ_INT(atomic_load(&hook_calls), 1); /* the schema came from the hook */
    CHECK(op.epoch >= 1);
    CHECK(op.in_txn);
    struct db_counters c;
    db_get_counters(db, &c);
    CHECK_EQ_INT(c.connects, 1);
    db_close(db);
}

/* A statement the database aborts (SQLite busy: another connection holds
 * the write lock) makes db run the operation again from its start. */
static void test_aborted_run_is_rerun(void)
{
    char path[160];
    snprintf(path, sizeof path, "%s/rerun.db", dir);
    struct db_config cfg = { .driver = DB_SQLITE, .path = path, .busy_timeout_ms = 20 };
    char err[256] = "";
    struct db *db = db_open(&cfg, err, sizeof err);
    CHECK(db != NULL);
    if (!db)
        return;
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE t (v INTEGER)", err, sizeof err), 0);
    sqlite3 *other = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &other), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct db_counters before, after;
    db_get_counters(db, &before);
    /* the lock stays: 1 run + 3 reruns, then the abort is reported */
    struct ins_op op = { 0 };
    struct wait1 w;
    run_wait(db, DB_AUTOCOMMIT, ins_fn, &op, &w);
    CHECK_EQ_INT(w.status, -1);
    CHECK(!w.lost);
    CHECK_EQ_INT(op.calls, 4);
    CHECK(!op.in_txn);
    db_get_counters(db, &after);
    CHECK_EQ_INT(after.reruns - before.reruns, 3);
    /* a transaction that cannot begin is retried the same way */
    struct ins_op op2 = { 0 };
    run_wait(db, 0, ins_fn, &op2, &w);
    CHECK_EQ_INT(w.status, -1);
    CHECK(strstr(w.error, "begin failed") != NULL);
    CHECK_EQ_INT(op2.calls, 0);
    db_get_counters(db, &before);
    CHECK_EQ_INT(before.reruns - after.reruns, 3);
    /* the lock goes after the first try: the rerun succeeds, once */
    struct ins_op op3 = { .release = other };
    run_wait(db, DB_AUTOCOMMIT, ins_fn, &op3, &w);
    CHECK_EQ_INT(w.status, 0);
    CHECK_EQ_INT(op3.calls, 2);
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT COUNT(*) FROM t", NULL, 0, &r), 0);
    CHECK_EQ_INT(db_cell_int(r, 0, 0), 1);
    db_result_free(r);
    sqlite3_close(other);
    db_close(db);
}

/* DB_NO_FSYNC: alone, such a request commits at synchronous=NORMAL (1);
 * any other at FULL (2). */
static void test_no_fsync_only_for_flagged(void)
{
    struct db *db = open_path("lazy.db", 1, 0);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE t (v INTEGER)", err, sizeof err), 0);
    struct ins_op lazy = { 0 }, durable = { 0 }, lazy2 = { 0 };
    struct wait1 w;
    run_wait(db, DB_GROUP | DB_NO_FSYNC, ins_fn, &lazy, &w);
    CHECK_EQ_INT(w.status, 0);
    CHECK_EQ_INT(lazy.sync, 1);
    run_wait(db, DB_GROUP, ins_fn, &durable, &w);
    CHECK_EQ_INT(w.status, 0);
    CHECK_EQ_INT(durable.sync, 2);
    run_wait(db, DB_NO_FSYNC, ins_fn, &lazy2, &w);
    CHECK_EQ_INT(lazy2.sync, 1);
    db_close(db);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_db_kit.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_dsn_sqlite);
    RUN(test_dsn_mysql);
    RUN(test_mysql_placeholder_expansion);
    RUN(test_txn_all_or_nothing);
    RUN(test_pin_one_connection_in_order);
    RUN(test_queue_bound);
    RUN(test_migrations);
    RUN(test_group_never_reports_undone_writes);
    RUN(test_conn_error_classes);
    RUN(test_run_savepoints_share_a_commit);
    RUN(test_txn_shares_the_group_commit);
    RUN(test_down_at_start_then_used);
    RUN(test_aborted_run_is_rerun);
    RUN(test_no_fsync_only_for_flagged);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_done();
}
